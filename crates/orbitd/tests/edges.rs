//! Several edges at one site (issue 11): each its own process, identity and lease; phones of
//! the site on either; parks, lamps, retrieves and calls across them as across sites; and a
//! second process with an identity that is held is kept out.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::Duration;

use common::*;

/// A lamp key at `site` on `resource`, as `ext`.
fn lamp(site: &Daemon, resource: &str, ext: &str) -> RunningSipp {
    Sipp::new(site, "uac_lamp.xml")
        .args(["-s", resource, "-au", ext, "-ap", &format!("pw{ext}")])
        .key("caller", ext)
        .spawn()
}

#[test]
fn a_call_parked_at_one_edge_of_a_site_lights_and_is_retrieved_at_its_other_edge() {
    let mut s = Sites::start(&lot(90, 20));
    // Site A's second edge: a process of its own, configured with no peers and named in no
    // other edge's config: it finds them, and they find it, through the leases.
    let a2 = s.add_edge(0, "edge-2");
    let slot = lamp(&s.site[a2], "701", "1005");
    slot.wait_log("notify_v0", Duration::from_secs(10));
    let (alice, alice_media, alice_relay) = park_at_a(&s);
    // The lamp on the other edge lights with the call parked at the first.
    let cid = slot.wait_log("parked_call_id", Duration::from_secs(10));
    assert!(!cid.is_empty());

    // 1003 at the second edge dials 701.
    let media = RtpPeer::bind();
    let dana = Sipp::new(&s.site[a2], "uac_call.xml")
        .args(["-s", "701", "-au", "1003", "-ap", "pw1003", "-d", "2500"])
        .key("caller", "1003")
        .key("rtpport", &media.port().to_string())
        .spawn();
    let dana_relay = relay(dana.wait_log("relay_port", Duration::from_secs(10)));
    let (lo, hi) = s.site[a2].rtp;
    assert!(
        (lo..=hi).contains(&dana_relay.port()),
        "1003 talks to its own edge's relay ({dana_relay})"
    );
    std::thread::sleep(Duration::from_millis(100));
    // caller ⇄ relay of edge 1 ⇄ relay of edge 2 ⇄ 1003, both ways.
    assert_bridged(
        (&alice_media, alice_relay),
        (&media, dana_relay),
        50,
        Duration::from_millis(400),
    );
    let d = dana.wait();
    assert!(d.ok(), "retriever: {}", d.errors);
    assert!(alice.wait().ok());
    let r = slot.wait();
    assert!(r.ok(), "lamp: {}", r.errors);
    assert!(
        s.log(a2).contains("retrieving over the trunk"),
        "{}",
        s.log(a2)
    );
    assert!(s.log(0).contains("retrieved"), "{}", s.log(0));
}

#[test]
fn a_phone_on_one_edge_of_a_site_calls_a_phone_registered_at_its_other_edge() {
    let mut s = Sites::start(&lot(90, 20));
    let a2 = s.add_edge(0, "edge-2");
    // 1004 registers with the second edge (a load balancer put it there); 1001 calls it
    // through the first.
    let bob_media = RtpPeer::bind();
    let bob = s.site[a2]
        .phone("1004", "uas_answer.xml", &bob_media)
        .args(["-d", "0"])
        .spawn();
    s.wait_log(
        a2,
        "committed event=1004 registered at site-a/edge-2",
        Duration::from_secs(10),
    );
    // Committed; the first edge's watch shows it a moment later.
    std::thread::sleep(Duration::from_millis(300));
    let alice_media = RtpPeer::bind();
    let alice = Sipp::new(&s.site[0], "uac_call.xml")
        .args(["-s", "1004", "-au", "1001", "-ap", "pw1001", "-d", "2500"])
        .key("caller", "1001")
        .key("rtpport", &alice_media.port().to_string())
        .spawn();
    let alice_relay = relay(alice.wait_log("relay_port", Duration::from_secs(10)));
    let bob_relay = relay(bob.wait_log("relay_port", Duration::from_secs(10)));
    assert!((s.site[0].rtp.0..=s.site[0].rtp.1).contains(&alice_relay.port()));
    assert!((s.site[a2].rtp.0..=s.site[a2].rtp.1).contains(&bob_relay.port()));
    std::thread::sleep(Duration::from_millis(100));
    assert_bridged(
        (&alice_media, alice_relay),
        (&bob_media, bob_relay),
        50,
        Duration::from_millis(400),
    );
    assert!(
        s.log(0).contains("trunk=Some(\"site-a/edge-2\")"),
        "{}",
        s.log(0)
    );
    let a = alice.wait();
    assert!(a.ok(), "caller: {}", a.errors);
    let b = bob.wait();
    assert!(b.ok(), "callee: {}", b.errors);
}

#[test]
fn a_second_process_configured_with_a_held_identity_is_refused_and_takes_nothing() {
    let mut s = Sites::start(&lot(90, 20));
    let a2 = s.add_edge(0, "edge-2");
    // A call parked at site-a/edge-2.
    let media = RtpPeer::bind();
    let alice = alice(&s.site[a2], &media);
    let bob = bob_parks(&s.site[a2]);
    assert!(bob.wait().ok());
    s.wait_log(a2, "committed event=park", Duration::from_secs(10));
    // A second deployment with the same identity (and a certificate for it) comes up: the
    // registry refuses its lease while the first holds one.
    let twin = s.twin_edge(a2);
    s.wait_log(
        twin,
        "another process holds this edge's identity",
        Duration::from_secs(20),
    );
    assert!(
        !s.log(twin).contains("committed event=lease"),
        "{}",
        s.log(twin)
    );
    // The first keeps its lease and its call: a retrieve at site C gets it, after more than a
    // renewal period of the twin trying.
    std::thread::sleep(Duration::from_secs(6));
    let carol = Sipp::new(&s.site[2], "uac_call.xml")
        .args(["-s", "701", "-au", "3001", "-ap", "pw3001", "-d", "300"])
        .key("caller", "3001")
        .key("rtpport", &RtpPeer::bind().port().to_string())
        .run();
    assert!(carol.ok(), "retrieve: {}", carol.errors);
    assert!(alice.wait().ok());
    assert!(
        !s.log(1).contains("site-a/edge-2 restarted"),
        "{}",
        s.log(1)
    );
}

/// An OPTIONS probe, as a load balancer sends one: the answer's head.
fn probe(edge: SocketAddr) -> String {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let me = sock.local_addr().unwrap();
    let branch = format!("z9hG4bKprobe{}", me.port());
    let req = format!(
        "OPTIONS sip:{edge} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch={branch}\r\nMax-Forwards: 70\r\nFrom: <sip:lb@{me}>;tag=lb\r\nTo: <sip:{edge}>\r\nCall-ID: {branch}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    );
    sock.send_to(req.as_bytes(), edge).unwrap();
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).expect("an answer to OPTIONS");
    String::from_utf8_lossy(&buf[..n]).into()
}

/// `orbitctl` at site A's node with the admin's certificate: (exit code, stdout, stderr).
fn orbitctl(s: &Sites, args: &[&str]) -> (i32, String, String) {
    orbitctl_at(s.grpc[0], &s.admin_tls, args)
}

/// The edges `cluster status` lists, and whether each drains.
fn edges(s: &Sites) -> Vec<(String, bool)> {
    let (code, out, err) = orbitctl(s, &["cluster", "status", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["draining"].as_bool().unwrap(),
            )
        })
        .collect()
}

/// A call up through edge `i`: 1004 registered there answers 1001 calling through it for
/// `ms`; the two phones.
fn call_through(s: &Sites, i: usize, ms: u64) -> (RunningSipp, RunningSipp) {
    let bob_media = RtpPeer::bind();
    let bob = s.site[i]
        .phone("1004", "uas_answer.xml", &bob_media)
        .args(["-d", "0"])
        .spawn();
    let alice_media = RtpPeer::bind();
    let alice = Sipp::new(&s.site[i], "uac_call.xml")
        .args([
            "-s",
            "1004",
            "-au",
            "1001",
            "-ap",
            "pw1001",
            "-d",
            &ms.to_string(),
        ])
        .key("caller", "1001")
        .key("rtpport", &alice_media.port().to_string())
        .spawn();
    alice.wait_log("relay_port", Duration::from_secs(10));
    (alice, bob)
}

#[test]
fn an_edge_drained_with_orbitctl_takes_nothing_new_lets_its_call_end_and_leaves() {
    let mut s = Sites::start(&lot(90, 20));
    let a2 = s.add_edge(0, "edge-2");
    assert!(probe(s.site[a2].sip).starts_with("SIP/2.0 200"));
    let (alice, bob) = call_through(&s, a2, 3000);
    // Strangers first: a reader may not drain, an edge nobody runs is not found.
    let reader = s.reader_tls("viewer");
    let (code, _, err) = orbitctl_at(s.grpc[0], &reader, &["edge", "drain", "site-a/edge-2"]);
    assert_eq!(code, 4, "{err}");
    let (code, _, err) = orbitctl(&s, &["edge", "drain", "site-z"]);
    assert_eq!(code, 5, "{err}");
    let (code, _, err) = orbitctl(&s, &["edge", "drain", "Site A"]);
    assert_eq!(code, 5, "{err}");
    assert!(!edges(&s).iter().any(|(_, d)| *d));

    let (code, out, err) = orbitctl(&s, &["edge", "drain", "site-a/edge-2"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("site-a/edge-2 draining"), "{out}");
    s.wait_log(a2, "draining: taking no new calls", Duration::from_secs(5));
    // A load balancer's probe takes it out; the site's other edge still answers.
    let head = probe(s.site[a2].sip);
    assert!(head.starts_with("SIP/2.0 503"), "{head}");
    assert!(head.contains("Retry-After: 10"), "{head}");
    assert!(probe(s.site[0].sip).starts_with("SIP/2.0 200"));
    assert!(edges(&s).contains(&("site-a/edge-2".to_string(), true)));
    // A new call there is turned away; the one up goes on to its end.
    let turned = Sipp::new(&s.site[a2], "uac_call.xml")
        .args(["-s", "1005", "-au", "1002", "-ap", "pw1002", "-d", "100"])
        .key("caller", "1002")
        .key("rtpport", &RtpPeer::bind().port().to_string())
        .run();
    assert!(!turned.ok(), "a new call through a draining edge");
    assert!(
        turned.logs.contains("503") || turned.errors.contains("503"),
        "{}",
        turned.logs
    );
    let a = alice.wait();
    assert!(a.ok(), "the call up: {}", a.errors);
    assert!(bob.wait().ok());
    // Then it leaves the registry and exits by itself.
    let st = s.wait_exit(a2, Duration::from_secs(10));
    assert!(st.success(), "{st:?}");
    assert!(
        s.log(a2).contains("drained: lease released"),
        "{}",
        s.log(a2)
    );
    let names: Vec<String> = edges(&s).into_iter().map(|(e, _)| e).collect();
    assert_eq!(names, SITE_NAMES, "the drained edge is gone at once");
}

#[test]
fn sigterm_drains_an_edge_and_the_registry_shows_it_draining_until_it_leaves() {
    let mut s = Sites::start(&lot(90, 20));
    let a2 = s.add_edge(0, "edge-2");
    let (alice, bob) = call_through(&s, a2, 3000);
    // A rolling upgrade's SIGTERM (Kubernetes, systemd).
    s.signal(a2, "TERM");
    s.wait_log(a2, "draining: taking no new calls", Duration::from_secs(5));
    let t0 = std::time::Instant::now();
    while !edges(&s).contains(&("site-a/edge-2".to_string(), true)) {
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", edges(&s));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(probe(s.site[a2].sip).starts_with("SIP/2.0 503"));
    let a = alice.wait();
    assert!(a.ok(), "the call up: {}", a.errors);
    assert!(bob.wait().ok());
    let st = s.wait_exit(a2, Duration::from_secs(10));
    assert!(st.success(), "{st:?}");
    let names: Vec<String> = edges(&s).into_iter().map(|(e, _)| e).collect();
    assert_eq!(names, SITE_NAMES);
}

/// The longest silence between packets in `got`, and the ports they came from, in order of
/// first arrival.
fn gaps_and_sources(got: &[(std::time::Instant, SocketAddr, Vec<u8>)]) -> (Duration, Vec<u16>) {
    let mut longest = Duration::ZERO;
    let mut sources: Vec<u16> = vec![];
    for w in got.windows(2) {
        longest = longest.max(w[1].0 - w[0].0);
    }
    for (_, from, _) in got {
        if sources.last() != Some(&from.port()) {
            sources.push(from.port());
        }
    }
    (longest, sources)
}

#[test]
fn a_drained_edge_hands_its_five_parked_calls_to_the_other_edge_with_no_gap_in_their_music() {
    let mut s = Sites::start(&lot(90, 20));
    let a2 = s.add_edge(0, "edge-2");
    let pairs = [
        ("1001", "1006"),
        ("1002", "1007"),
        ("1003", "1008"),
        ("1004", "1009"),
        ("1005", "1010"),
    ];
    let parked: Vec<_> = pairs
        .iter()
        .map(|(p, by)| parked_at(&s.site[a2], p, by))
        .collect();
    let (lo2, hi2) = s.site[a2].rtp;
    for (_, _, r) in &parked {
        assert!((lo2..=hi2).contains(&r.port()), "parked at edge 2: {r}");
    }
    // Each parked party listens to its music from before the drain to after it.
    let listening: Vec<_> = parked
        .iter()
        .map(|(_, media, _)| {
            let m = media.clone_socket();
            std::thread::spawn(move || m.listen(Duration::from_secs(5)))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1000));
    s.signal(a2, "TERM");
    let st = s.wait_exit(a2, Duration::from_secs(10));
    assert!(st.success(), "{st:?}");
    let (lo1, hi1) = s.site[0].rtp;
    for ((phone, _, _), l) in parked.iter().zip(listening) {
        let got = l.join().unwrap();
        let (longest, sources) = gaps_and_sources(&got);
        eprintln!("parked party: longest gap {longest:?}, music from ports {sources:?}");
        assert!(got.len() > 150, "music throughout: {} packets", got.len());
        assert!(
            longest <= Duration::from_millis(200),
            "a gap of {longest:?} in the parked party's music"
        );
        // From edge 2's relay, then from edge 1's, and not back.
        let last = *sources.last().unwrap();
        assert!(
            (lo1..=hi1).contains(&last),
            "music now from edge 1: {sources:?}"
        );
        assert!((lo2..=hi2).contains(&sources[0]), "{sources:?}");
        let moved = relay(phone.wait_log("moved_port", Duration::from_secs(1)));
        assert_eq!(
            moved.port(),
            last,
            "the re-INVITE named the relay the music comes from"
        );
    }
    // The slots are as they were; each is retrieved from site C, through edge 1's relay.
    for (i, (phone, media, _)) in parked.into_iter().enumerate() {
        let slot = (701 + i).to_string();
        let carol_media = RtpPeer::bind();
        let carol = Sipp::new(&s.site[2], "uac_call.xml")
            .args(["-s", &slot, "-au", "3001", "-ap", "pw3001", "-d", "1500"])
            .key("caller", "3001")
            .key("rtpport", &carol_media.port().to_string())
            .spawn();
        let carol_relay = relay(carol.wait_log("relay_port", Duration::from_secs(10)));
        let moved = relay(phone.wait_log("moved_port", Duration::from_secs(1)));
        std::thread::sleep(Duration::from_millis(100));
        assert_bridged(
            (&media, moved),
            (&carol_media, carol_relay),
            30,
            Duration::from_millis(300),
        );
        let c = carol.wait();
        assert!(c.ok(), "retrieve of {slot}: {}", c.errors);
        let p = phone.wait();
        assert!(p.ok(), "parked party of {slot}: {}\n{}", p.errors, p.logs);
    }
}

#[test]
fn a_retrieve_racing_the_drain_of_the_edge_holding_the_call_has_exactly_one_winner() {
    // The retrieve's claim and the drain's move are ordered by the log: whichever comes first,
    // the retriever has the call and nobody else does (no music from a second relay, no call
    // left in a slot).
    for head_start_ms in [0u64, 40, 150] {
        let mut s = Sites::start(&lot(90, 20));
        let a2 = s.add_edge(0, "edge-2");
        let (phone, media, first_relay) = parked_at(&s.site[a2], "1001", "1006");
        let carol_media = RtpPeer::bind();
        let carol = Sipp::new(&s.site[2], "uac_call.xml")
            .args(["-s", "701", "-au", "3001", "-ap", "pw3001", "-d", "2000"])
            .key("caller", "3001")
            .key("rtpport", &carol_media.port().to_string())
            .spawn();
        std::thread::sleep(Duration::from_millis(head_start_ms));
        s.signal(a2, "TERM");
        let carol_relay = relay(carol.wait_log("relay_port", Duration::from_secs(10)));
        std::thread::sleep(Duration::from_millis(300));
        // Where the parked party's media goes now: the relay its re-INVITE named, if the move
        // won; else the one it had.
        let moved = phone.logs().contains("moved_port=");
        let party_relay = if moved {
            relay(phone.wait_log("moved_port", Duration::from_secs(1)))
        } else {
            first_relay
        };
        assert_bridged(
            (&media, party_relay),
            (&carol_media, carol_relay),
            30,
            Duration::from_millis(300),
        );
        let c = carol.wait();
        assert!(c.ok(), "retriever ({head_start_ms} ms): {}", c.errors);
        let p = phone.wait();
        assert!(p.ok(), "parked party: {}", p.errors);
        let st = s.wait_exit(a2, Duration::from_secs(15));
        assert!(st.success(), "{st:?}");
        // Nothing left parked anywhere.
        let (code, out, err) = orbitctl(&s, &["parked", "list", "--json"]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(out.trim(), "[]", "{out}");
        eprintln!("head start {head_start_ms} ms: moved first: {moved}");
    }
}

/// `orbitctl --json <args>` at `endpoint` with `tls` flags.
fn json_ctl(endpoint: SocketAddr, tls: &[String], args: &[&str]) -> (i32, String, String) {
    orbitctl_at(endpoint, tls, &[&["--json"], args].concat())
}

#[test]
fn an_edges_admin_listener_shows_its_calls_and_phones_hangs_up_and_is_not_ready_while_draining() {
    let mut s = Sites::start(&lot(90, 20));
    let a2 = s.add_edge(0, "edge-2");
    let at = s.admin[a2];
    let admin = s.admin_tls.clone();
    // Ready once it holds its lease (health follows within half a second).
    let t0 = std::time::Instant::now();
    while json_ctl(at, &admin, &["health"]).0 != 0 {
        assert!(t0.elapsed() < Duration::from_secs(5), "never ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    // 1004 at edge 2 answers 1001, who waits for the end of the call.
    let bob_media = RtpPeer::bind();
    let bob = s.site[a2]
        .phone("1004", "uas_answer.xml", &bob_media)
        .args(["-d", "0"])
        .spawn();
    let alice = Sipp::new(&s.site[a2], "uac_call_wait_bye.xml")
        .args(["-s", "1004", "-au", "1001", "-ap", "pw1001"])
        .key("caller", "1001")
        .key("rtpport", &RtpPeer::bind().port().to_string())
        .spawn();
    alice.wait_log("relay_port", Duration::from_secs(10));
    let (code, out, err) = json_ctl(at, &admin, &["registrations", "--ext", "1004"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["edge"], "site-a/edge-2");
    assert_eq!(v["registrations"][0]["ext"], "1004", "{out}");
    assert_eq!(v["registrations"][0]["transport"], "udp", "{out}");
    let (code, out, err) = json_ctl(at, &admin, &["calls", "list"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let call = &v["calls"][0];
    assert_eq!(
        (
            call["caller"].as_str(),
            call["callee"].as_str(),
            call["state"].as_str()
        ),
        (Some("1001"), Some("1004"), Some("up")),
        "{out}"
    );
    let id = call["id"].as_u64().unwrap().to_string();
    // A reader sees them, and may not hang up; nobody without a certificate gets in.
    let reader_tls = s.reader_tls("viewer");
    assert_eq!(json_ctl(at, &reader_tls, &["calls", "list"]).0, 0);
    assert_eq!(json_ctl(at, &reader_tls, &["calls", "hangup", &id]).0, 4);
    let no_cert = ["--ca".to_string(), reader_tls[1].clone()];
    let out = Command::new(env!("CARGO_BIN_EXE_orbitctl"))
        .args([
            "--endpoint",
            &at.to_string(),
            "--timeout",
            "5",
            "calls",
            "list",
        ])
        .env("ORBIT_CA", &no_cert[1])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0), "no certificate: refused");
    // An admin hangs it up: both phones get BYE (their scenarios end with it).
    let (code, _, err) = json_ctl(at, &admin, &["calls", "hangup", &id]);
    assert_eq!(code, 0, "{err}");
    let a = alice.wait();
    assert!(a.ok(), "caller: {}", a.errors);
    assert!(bob.wait().ok());
    assert_eq!(json_ctl(at, &admin, &["calls", "hangup", &id]).0, 5);

    // Draining with a call up: not ready (a readiness probe takes it out) until it leaves.
    let bob = s.site[a2]
        .phone("1004", "uas_answer.xml", &bob_media)
        .args(["-d", "0"])
        .spawn();
    let alice = Sipp::new(&s.site[a2], "uac_call_wait_bye.xml")
        .args(["-s", "1004", "-au", "1001", "-ap", "pw1001"])
        .key("caller", "1001")
        .key("rtpport", &RtpPeer::bind().port().to_string())
        .spawn();
    alice.wait_log("relay_port", Duration::from_secs(10));
    let (code, _, err) = orbitctl(&s, &["edge", "drain", "site-a/edge-2"]);
    assert_eq!(code, 0, "{err}");
    let t0 = std::time::Instant::now();
    loop {
        let (code, out, _) = json_ctl(at, &admin, &["health"]);
        if code == 6 {
            assert!(out.contains("false"), "{out}");
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "still serving: {out}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, out, _) = json_ctl(at, &admin, &["calls", "list"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let id = v["calls"][0]["id"].as_u64().unwrap().to_string();
    assert_eq!(json_ctl(at, &admin, &["calls", "hangup", &id]).0, 0);
    assert!(alice.wait().ok());
    assert!(bob.wait().ok());
    assert!(s.wait_exit(a2, Duration::from_secs(10)).success());
}
