//! The edge's request handling: arbitrary datagrams fed to the sans-I/O core, with timers run,
//! must never panic. The edge runs as it does in production across sites: on the registry
//! (played here by the real orbit state, answering every proposal and feeding the watch), with
//! the inter-site trunk configured, and digest auth required of every source but one. The
//! first byte of each message picks where it comes from: the trusted phone, an untrusted
//! phone, the trunk peer, or a stranger.
#![no_main]
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use orbit_edge::config::*;
use orbit_sip::transport::{Flow, Proto};

fn edge(now: Instant) -> orbit_edge::Edge {
    let mut extensions = BTreeMap::new();
    for n in ["1001", "1002"] {
        extensions.insert(
            n.to_string(),
            Extension { password: Some(format!("pw{n}")), ..Default::default() },
        );
    }
    let cfg = EdgeConfig {
        site: "fuzz".into(),
        name: None,
        state_dir: None,
        drain_secs: 60,
        sip: SipConfig {
            listen: "127.0.0.1:5060".parse().unwrap(),
            tls_listen: None,
            tls_cert: None,
            tls_key: None,
            advertise: None,
            t1_ms: 500,
        },
        media: MediaConfig {
            ip: "127.0.0.1".parse().unwrap(),
            port_min: 20000,
            port_max: 20999,
            timeout_secs: 60,
            idle_close_secs: 10,
            parked_timeout_secs: None,
        },
        tenant: TenantConfig {
            domain: "orbit.test".into(),
            realm: None,
            any_host: true,
            extensions,
            lots: vec![Default::default()],
            features: Default::default(),
            pickup_groups: vec![],
            directed_pickup: Default::default(),
        },
        auth: AuthConfig { trusted: vec!["127.0.0.1/32".into()], ..AuthConfig::default() },
        limits: LimitsConfig::default(),
        registry: None,
        admin: None,
        trunk: Some(TrunkConfig {
            secret: "fuzzing-trunk-secret-0123456789".into(),
            peers: vec![TrunkPeer {
                site: "peer".into(),
                name: None,
                addr: "127.0.0.3:5060".parse().unwrap(),
            }],
            max_skew_secs: 30,
        }),
    };
    let mut local = HashMap::new();
    local.insert(Proto::Udp, cfg.sip.listen);
    orbit_edge::Edge::new(
        Arc::new(cfg),
        local,
        orbit_edge::Start::seeded(now, 1_800_000_000_000, 1),
    )
    .with_registry(now, Duration::from_secs(15))
}

/// Order every proposal with the real state, as the registry would: the watch first, then the
/// answers.
fn serve(e: &mut orbit_edge::Edge, reg: &mut orbit_state::Orbit, index: &mut u64, at: u64, now: Instant) {
    for _ in 0..16 {
        let props = e.take_proposals();
        if props.is_empty() {
            return;
        }
        let mut done = vec![];
        let mut answers = vec![];
        for p in props {
            let r = reg.apply(at, &p.cmd);
            if r.is_ok() {
                done.push(p.cmd.clone());
            }
            answers.push((p.token, r));
        }
        if !done.is_empty() {
            *index += 1;
            e.on_orbit_watch(now, *index, at, done);
        }
        for (token, r) in answers {
            e.on_orbit_outcome(now, token, *index, r.map_err(Into::into));
        }
        let _ = e.drain().count();
        let _ = e.take_media();
    }
}

const SOURCES: [&str; 4] = ["127.0.0.1:6000", "127.0.0.2:6000", "127.0.0.3:5060", "10.9.9.9:5060"];

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let mut e = edge(now);
    let (mut reg, mut index) = (orbit_state::Orbit::new(), 0u64);
    let at = 1_800_000_000_000;
    serve(&mut e, &mut reg, &mut index, at, now);
    // Several messages per input, split at a separator byte; the first byte picks the source.
    for (i, chunk) in data.split(|&b| b == 0xff).take(8).enumerate() {
        let (src, msg) = match chunk.split_first() {
            Some((&b, rest)) if b < 4 => (SOURCES[b as usize], rest),
            _ => (SOURCES[0], chunk),
        };
        let flow = Flow { proto: Proto::Udp, addr: src.parse().unwrap(), conn: 0 };
        let t = now + Duration::from_millis(i as u64);
        e.on_message(t, flow, bytes::Bytes::copy_from_slice(msg));
        let _ = e.drain().count();
        let _ = e.take_media();
        serve(&mut e, &mut reg, &mut index, at + i as u64, t);
    }
    let mut t = now;
    for _ in 0..64 {
        match e.next_timeout() {
            Some(d) if d < now + Duration::from_secs(300) => {
                t = t.max(d);
                e.on_timeout(t);
                let _ = e.drain().count();
                let _ = e.take_media();
            }
            _ => break,
        }
    }
});
