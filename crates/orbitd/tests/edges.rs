//! Several edges at one site (issue 11): each its own process, identity and lease; phones of
//! the site on either; parks, lamps, retrieves and calls across them as across sites; and a
//! second process with an identity that is held is kept out.

mod common;

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
