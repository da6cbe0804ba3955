//! The call model without sockets, in virtual time: messages are fed to the sans-I/O core and
//! its output inspected; timers are driven by stepping `now` from deadline to deadline.
//!
//! This file is the harness the tests share (the configuration, `Net`, which carries
//! messages and drives time, and request builders); the tests are in `tests/`, one file per
//! feature.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use orbit_sip::message::{Limits, Message, Name};
use orbit_sip::transport::{Flow, Proto};

use crate::config::*;
use crate::media::Leg;
use crate::Edge;

/// The wall clock at the start of every test (2027-01-15).
const WALL_MS: u64 = 1_800_000_000_000;
const EDGE: &str = "127.0.0.1:5060";
const ALICE: &str = "127.0.0.1:6001";
const BOB1: &str = "127.0.0.1:7001";
const BOB2: &str = "127.0.0.1:7002";

fn config() -> EdgeConfig {
    let mut extensions = BTreeMap::new();
    for n in 1001..=1003 {
        extensions.insert(
            n.to_string(),
            Extension {
                password: Some(format!("pw{n}")),
                ..Default::default()
            },
        );
    }
    EdgeConfig {
        site: "t".into(),
        name: None,
        state_dir: None,
        drain_secs: 60,
        sip: SipConfig {
            listen: EDGE.parse().unwrap(),
            tls_listen: None,
            tls_cert: None,
            tls_key: None,
            advertise: None,
            t1_ms: 500,
        },
        media: MediaConfig {
            ip: "127.0.0.1".parse().unwrap(),
            port_min: 40000,
            port_max: 40999,
            timeout_secs: 60,
            idle_close_secs: 10,
            parked_timeout_secs: None,
        },
        tenant: TenantConfig {
            domain: "orbit.test".into(),
            realm: None,
            any_host: false,
            extensions,
            lots: vec![Default::default()],
            features: Default::default(),
            pickup_groups: vec![],
            directed_pickup: Default::default(),
        },
        auth: AuthConfig {
            algorithms: vec!["MD5".into()],
            // Alice's address is trusted, so INVITEs need no digest in most tests.
            trusted: vec!["127.0.0.1".into()],
            ..AuthConfig::default()
        },
        limits: LimitsConfig::default(),
        registry: None,
        admin: None,
        trunk: None,
    }
}

struct Net {
    edge: Edge,
    now: Instant,
    media: relay_log::RelayLog,
    /// Messages the edge sent, per destination, not yet taken.
    inbox: HashMap<SocketAddr, Vec<Message>>,
}

fn flow(addr: &str) -> Flow {
    Flow {
        proto: Proto::Udp,
        addr: addr.parse().unwrap(),
        conn: 0,
    }
}

impl Net {
    fn new() -> Net {
        Self::with(config())
    }

    fn with(cfg: EdgeConfig) -> Net {
        let now = Instant::now();
        let mut local = HashMap::new();
        local.insert(Proto::Udp, EDGE.parse().unwrap());
        let edge = Edge::new(Arc::new(cfg), local, crate::Start::seeded(now, WALL_MS, 1));
        Net {
            edge,
            now,
            media: Default::default(),
            inbox: HashMap::new(),
        }
    }

    fn collect(&mut self) {
        self.media.apply(self.edge.take_media());
        let out: Vec<_> = self.edge.drain().collect();
        for t in out {
            let m = orbit_sip::parse(t.bytes, &Limits::default()).expect("edge sends valid SIP");
            self.inbox.entry(t.flow.addr).or_default().push(m);
        }
    }

    fn send(&mut self, from: &str, text: &str) {
        let text = text.replace('\n', "\r\n");
        self.edge
            .on_message(self.now, flow(from), Bytes::from(text.into_bytes()));
        self.collect();
    }

    fn send_msg(&mut self, from: &str, bytes: Bytes) {
        self.edge.on_message(self.now, flow(from), bytes);
        self.collect();
    }

    /// Step virtual time by `d`, firing every timer on the way at its own deadline.
    fn advance(&mut self, d: Duration) {
        let until = self.now + d;
        while let Some(t) = self.edge.next_timeout() {
            if t > until {
                break;
            }
            self.now = self.now.max(t);
            self.edge.on_timeout(self.now);
            self.collect();
            // The driver reports silent calls every second (the housekeeping timer's pace).
            for ev in self.media.silence() {
                self.edge.on_media_event(self.now, ev);
                self.collect();
            }
        }
        self.now = until;
    }

    fn take(&mut self, to: &str) -> Vec<Message> {
        self.inbox
            .remove(&to.parse::<SocketAddr>().unwrap())
            .unwrap_or_default()
    }

    /// The single message sent to `to` that is not a 100 Trying.
    fn one(&mut self, to: &str) -> Message {
        let v: Vec<_> = self
            .take(to)
            .into_iter()
            .filter(|m| m.code() != 100)
            .collect();
        assert_eq!(
            v.len(),
            1,
            "expected one message to {to}, got {:?}",
            v.iter()
                .map(|m| m.head_text().lines().next().unwrap_or("").to_string())
                .collect::<Vec<_>>()
        );
        v.into_iter().next().unwrap()
    }

    fn register(&mut self, ext: &str, from: &str) {
        let req = |cseq: u32, auth: &str| {
            format!(
                "REGISTER sip:orbit.test SIP/2.0\nVia: SIP/2.0/UDP {from};branch=z9hG4bKreg{ext}{cseq}{}\nMax-Forwards: 70\nFrom: <sip:{ext}@orbit.test>;tag=r{ext}\nTo: <sip:{ext}@orbit.test>\nCall-ID: reg-{ext}-{from}\nCSeq: {cseq} REGISTER\nContact: <sip:{ext}@{from}>\n{auth}Expires: 600\nContent-Length: 0\n\n",
                from.replace([':', '.'], "")
            )
        };
        self.send(from, &req(1, ""));
        let ch = self.one(from);
        assert_eq!(ch.code(), 401);
        let creds = crate::auth::Credentials {
            user: ext,
            password: &format!("pw{ext}"),
            method: "REGISTER",
            uri: "sip:orbit.test",
            nc: 1,
            cnonce: "abc",
        };
        let www = ch.header(Name::WwwAuthenticate).unwrap();
        let auth = format!(
            "Authorization: {}\n",
            crate::auth::answer(www, &creds).unwrap()
        );
        self.send(from, &req(2, &auth));
        assert_eq!(self.one(from).code(), 200);
    }
}

const SDP_A: &str = "v=0\no=a 1 1 IN IP4 10.1.1.1\ns=-\nc=IN IP4 10.1.1.1\nt=0 0\nm=audio 4000 RTP/AVP 0 101\na=rtpmap:0 PCMU/8000\n";
const SDP_B: &str = "v=0\no=b 1 1 IN IP4 10.2.2.2\ns=-\nc=IN IP4 10.2.2.2\nt=0 0\nm=audio 5000 RTP/AVP 0\na=rtpmap:0 PCMU/8000\n";

fn invite(to: &str, branch: &str, extra: &str) -> String {
    let body = SDP_A.replace('\n', "\r\n");
    format!(
        "INVITE sip:{to}@orbit.test SIP/2.0\nVia: SIP/2.0/UDP {ALICE};branch=z9hG4bK{branch};rport\nMax-Forwards: 70\nFrom: \"Alice\" <sip:1001@orbit.test>;tag=alice\nTo: <sip:{to}@orbit.test>\nCall-ID: call-{branch}\nCSeq: 1 INVITE\nContact: <sip:1001@{ALICE}>\n{extra}Content-Type: application/sdp\nContent-Length: {}\n\n{}",
        body.len(),
        SDP_A
    )
}

/// A response from a callee to a request the edge sent it.
fn answer(req: &Message, code: u16, tag: &str, sdp: Option<&str>, contact: &str) -> Bytes {
    let mut w = orbit_sip::Writer::response(code, orbit_sip::reason_phrase(code));
    for v in req.values(Name::Via) {
        w.header("Via", v);
    }
    w.header("From", req.header(Name::From).unwrap());
    let to = req.header(Name::To).unwrap();
    if req.to_tag().is_some() || code == 100 {
        w.header("To", to);
    } else {
        w.header("To", &format!("{to};tag={tag}"));
    }
    w.header("Call-ID", req.call_id());
    w.header("CSeq", req.header(Name::CSeq).unwrap());
    w.header("Contact", &format!("<sip:1002@{contact}>"));
    match sdp {
        Some(s) => w.finish(Some("application/sdp"), s.replace('\n', "\r\n").as_bytes()),
        None => w.finish(None, b""),
    }
}

/// An in-dialog request from Alice, built from the 2xx she got.
fn alice_in_dialog(
    ok: &Message,
    method: &str,
    cseq: u32,
    branch: &str,
    body: Option<&str>,
) -> String {
    let target = ok
        .header(Name::Contact)
        .unwrap()
        .trim_matches(['<', '>'])
        .to_string();
    // `Net::send` turns \n into \r\n: count the body as it will be sent.
    let (ct, b, len) = match body {
        Some(b) => (
            "Content-Type: application/sdp\n".to_string(),
            b.to_string(),
            b.replace('\n', "\r\n").len(),
        ),
        None => (String::new(), String::new(), 0),
    };
    format!(
        "{method} {target} SIP/2.0\nVia: SIP/2.0/UDP {ALICE};branch=z9hG4bK{branch};rport\nMax-Forwards: 70\nFrom: {}\nTo: {}\nCall-ID: {}\nCSeq: {cseq} {method}\n{ct}Content-Length: {}\n\n{b}",
        ok.header(Name::From).unwrap(),
        ok.header(Name::To).unwrap(),
        ok.call_id(),
        len
    )
}

/// Alice calls 1002 (registered at BOB1) and Bob answers; returns the 200 Alice got and the
/// INVITE Bob got.
fn answered_call(net: &mut Net) -> (Message, Message) {
    net.register("1002", BOB1);
    net.send(ALICE, &invite("1002", "c1", ""));
    let trying = net.take(ALICE);
    assert_eq!(trying.len(), 1);
    assert_eq!(trying[0].code(), 100);
    let inv = net.one(BOB1);
    net.send_msg(BOB1, answer(&inv, 180, "bob", None, BOB1));
    assert_eq!(net.one(ALICE).code(), 180);
    net.send_msg(BOB1, answer(&inv, 200, "bob", Some(SDP_B), BOB1));
    let ok = net.one(ALICE);
    assert_eq!(ok.code(), 200);
    (ok, inv)
}

fn body(m: &Message) -> String {
    String::from_utf8(m.body.to_vec()).unwrap()
}

fn options(branch: &str, extra: &str) -> String {
    format!("OPTIONS sip:orbit.test SIP/2.0\nVia: SIP/2.0/UDP {ALICE};branch=z9hG4bK{branch}\nMax-Forwards: 70\nFrom: <sip:1001@orbit.test>;tag=o\nTo: <sip:orbit.test>\nCall-ID: {branch}\nCSeq: 1 OPTIONS\n{extra}Content-Length: 0\n\n")
}

mod attended_park;
mod calls;
mod drain;
mod early_answers;
mod lamps;
mod lease;
mod moving;
mod one_touch_park;
mod operator;
mod park;
mod pickup;
mod pickup_sites;
mod recall;
mod registry;
mod relay_log;
mod security;
mod trunk;
