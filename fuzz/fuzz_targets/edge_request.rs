//! The edge's request handling: arbitrary datagrams (and a valid REGISTER/INVITE prefix
//! mutated by the fuzzer) fed to the sans-I/O core, with timers run, must never panic.
#![no_main]
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use orbit_edge::config::*;
use orbit_edge::media::FakeMedia;
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
        },
        auth: AuthConfig { trusted: vec!["127.0.0.1".into()], ..AuthConfig::default() },
        limits: LimitsConfig::default(),
        registry: None,
        trunk: None,
    };
    let mut local = HashMap::new();
    local.insert(Proto::Udp, cfg.sip.listen);
    orbit_edge::Edge::new(
        Arc::new(cfg),
        local,
        Box::new(FakeMedia::default()),
        orbit_edge::Start::seeded(now, 1_800_000_000_000, 1),
    )
}

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let mut e = edge(now);
    let flow = Flow { proto: Proto::Udp, addr: "127.0.0.1:6000".parse().unwrap(), conn: 0 };
    // Several messages per input, split at a separator byte sequence.
    for (i, chunk) in data.split(|&b| b == 0xff).take(8).enumerate() {
        e.on_message(now + Duration::from_millis(i as u64), flow, bytes::Bytes::copy_from_slice(chunk));
        let _ = e.drain().count();
    }
    let mut t = now;
    for _ in 0..64 {
        match e.next_timeout() {
            Some(d) if d < now + Duration::from_secs(300) => {
                t = t.max(d);
                e.on_timeout(t);
                let _ = e.drain().count();
            }
            _ => break,
        }
    }
});
