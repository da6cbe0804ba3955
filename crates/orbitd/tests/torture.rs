//! RFC 4475 torture messages sent to the real daemon, inside a network namespace that has only
//! `lo`: valid requests are answered (never 400), invalid ones get 400 (505 for an unknown
//! version), responses that match nothing are dropped, and the daemon keeps working.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

fn status_of(d: &[u8]) -> Option<u16> {
    let s = std::str::from_utf8(d).ok()?;
    s.strip_prefix("SIP/2.0 ")?.get(..3)?.parse().ok()
}

#[test]
fn torture_messages_get_the_answers_rfc_4475_asks_for() {
    let ns = NetNs::new("torture");
    assert_eq!(ns.interfaces(), vec!["lo".to_string()]);
    let mut d = Daemon::start_with(Options {
        netns: Some(ns.name.clone()),
        extra: "trusted = [\"127.0.0.1\"]".into(),
        ..Options::default()
    });
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sip/tests/torture");
    let manifest = std::fs::read_to_string(dir.join("EXPECTED")).unwrap();
    let mut wrong = vec![];
    let mut n = 0;
    for line in manifest
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let mut it = line.split_whitespace();
        let (name, _parse, want) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
        let data = std::fs::read(dir.join(format!("{name}.sip"))).unwrap();
        // A fresh socket per message, so late retransmissions of earlier answers cannot mix in.
        let sock = ns.udp();
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        sock.send_to(&data, d.sip).unwrap();
        let mut got = vec![];
        let t0 = Instant::now();
        let mut buf = [0u8; 65536];
        while t0.elapsed() < Duration::from_millis(300) {
            if let Ok((len, _)) = sock.recv_from(&mut buf) {
                got.push(status_of(&buf[..len]));
            }
        }
        // Distinct answers (an INVITE's 4xx is retransmitted until ACKed; that is one answer).
        got.dedup();
        let ok = match want {
            "none" => got.is_empty(),
            code => got == vec![Some(code.parse::<u16>().unwrap())],
        };
        if !ok {
            wrong.push(format!("{name}: want {want}, got {got:?}"));
        }
        n += 1;
    }
    assert!(n >= 45);
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // Still alive and answering.
    let sock = ns.udp();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let opt = "OPTIONS sip:orbit.local SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKalive\r\nMax-Forwards: 70\r\nFrom: <sip:t@orbit.local>;tag=1\r\nTo: <sip:orbit.local>\r\nCall-ID: alive\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
    sock.send_to(opt.as_bytes(), d.sip).unwrap();
    let mut buf = [0u8; 4096];
    let (len, _) = sock
        .recv_from(&mut buf)
        .expect("daemon answers after the torture run");
    assert_eq!(status_of(&buf[..len]), Some(200));
    let st = d.interrupt();
    assert!(st.success(), "daemon exit {st:?}");
}
