//! RFC 4475 torture messages (ours, written after the RFC's descriptions by
//! `tests/torture/generate.py`): the parser accepts every valid one and refuses every invalid one.

use std::path::Path;

use bytes::Bytes;
use orbit_sip::{parse, Limits, ParseError};

fn cases() -> Vec<(String, bool, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/torture");
    let manifest = std::fs::read_to_string(dir.join("EXPECTED")).unwrap();
    manifest
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let mut it = l.split_whitespace();
            let name = it.next().unwrap().to_string();
            let ok = it.next().unwrap() == "ok";
            let data = std::fs::read(dir.join(format!("{name}.sip"))).unwrap();
            (name, ok, data)
        })
        .collect()
}

#[test]
fn valid_messages_parse_and_invalid_ones_are_refused() {
    let cases = cases();
    assert!(cases.len() >= 45, "torture corpus missing");
    let mut wrong = vec![];
    for (name, ok, data) in &cases {
        let r = parse(Bytes::copy_from_slice(data), &Limits::default());
        if r.is_ok() != *ok {
            wrong.push(format!(
                "{name}: expected {}, got {:?}",
                if *ok { "ok" } else { "error" },
                r.err()
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn unknown_version_is_its_own_error() {
    let data = cases().into_iter().find(|c| c.0 == "badvers").unwrap().2;
    assert_eq!(
        parse(Bytes::from(data), &Limits::default()).unwrap_err(),
        ParseError::Version
    );
}

#[test]
fn valid_torture_details_survive_parsing() {
    let get = |n: &str| {
        let d = cases().into_iter().find(|c| c.0 == n).unwrap().2;
        parse(Bytes::from(d), &Limits::default()).unwrap()
    };
    let w = get("wsinv");
    assert_eq!(w.cseq.seq, 9);
    assert_eq!(w.from_tag(), Some("98asjd8"));
    assert_eq!(w.to_tag(), Some("1918181833n"));
    assert_eq!(w.max_forwards(), Some(68));
    assert_eq!(w.values(orbit_sip::Name::Via).count(), 3);
    let d = get("dblreq");
    assert!(
        d.body.is_empty(),
        "trailing octets after Content-Length are ignored"
    );
    let s = get("semiuri");
    assert_eq!(s.uri().unwrap().user(), Some("user;par=u%40example.net"));
    let i = get("intmeth");
    assert_eq!(
        i.method().as_str(),
        "!interesting-Method0123456789_*+`.%indeed'~"
    );
}

/// Inputs that once crashed a fuzz target: each must parse or fail, never panic.
#[test]
fn fuzz_regressions_do_not_panic() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-regressions");
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let data = std::fs::read(e.unwrap().path()).unwrap();
        let _ = parse(Bytes::from(data.clone()), &Limits::default());
        let mut f = orbit_sip::transport::Framer::new(4096);
        f.push(&data);
        while !matches!(f.next_frame(), orbit_sip::transport::Frame::Need) {}
        n += 1;
    }
    assert!(n >= 1);
}
