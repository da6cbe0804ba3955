//! Call pickup with the registry played as in `registry.rs`, and another site: a picker here
//! taking a call ringing at site B and site B's picker taking one ringing here over the trunk;
//! the callee's answer ordered by the log against a pickup, and what happens when the picker
//! never comes or the ring is lost; recalls picked up at another site.

use orbit_sip::Method;
use orbit_state::{Command, Event, RingCall, Ringing};

use super::park::CAROL;
use super::pickup::{carol_dials, finals, grouped, recorded_bob};
use super::registry::{registry_net_with, trunk_invite, Registry, PEER, SECRET};
use super::*;

/// The registry harness with 1001-1003 in one pickup group.
fn registry_grouped() -> (Net, Registry) {
    let mut net = registry_net_with(grouped());
    let mut reg = Registry::default();
    reg.serve(&mut net);
    (net, reg)
}

/// Site B's trunk INVITE for its picker 3001, claiming ring `ring` of `ext`.
fn trunk_pick(net: &Net, ring: u64, ext: &str, branch: &str) -> String {
    trunk_pick_at(net, ring, 0, ext, branch)
}

/// The same, naming the log index `at` the pickup was committed at.
fn trunk_pick_at(net: &Net, ring: u64, at: u64, ext: &str, branch: &str) -> String {
    let claim = crate::trunk::Claim::Ring(ring, at);
    trunk_invite(net, claim, ext, "Carol B", SECRET, branch)
}

/// A call to 1002 of `tenant` ringing at site B (call-id `<id>`, tags `<id>-l`, `<id>-r`),
/// committed and fed to this edge's watch.
fn ringing_at_site_b(net: &mut Net, reg: &mut Registry, tenant: &str, id: &str) -> Ringing {
    let at = net.edge.now_ms(net.now);
    let call = RingCall {
        caller_uri: format!("sip:5550000@{tenant}"),
        caller_display: None,
        edge: "site-b".into(),
        call_id: id.into(),
        local_tag: format!("{id}-l"),
        remote_tag: format!("{id}-r"),
        park: None,
        called: None,
    };
    let cmd = Command::Ring {
        tenant: tenant.into(),
        ext: "1002".into(),
        call,
    };
    match reg.feed(net, at, cmd) {
        Event::Ringing(r) => r,
        e => panic!("{e:?}"),
    }
}

/// Alice's call to 1002 ringing here, its ring recorded in the registry; returns Bob's INVITE
/// and the ring.
fn recorded_ring(net: &mut Net, reg: &mut Registry) -> (Message, u64) {
    let inv = recorded_bob(net);
    reg.serve(net);
    let ring = match reg.events.last() {
        Some(Event::Ringing(r)) => r.id,
        other => panic!("expected the ring recorded, got {other:?}"),
    };
    (inv, ring)
}

fn pickup_by(by: &str, ring: Option<u64>) -> Command {
    Command::Pickup {
        tenant: "orbit.test".into(),
        exts: vec!["1002".into()],
        ring,
        by: by.into(),
    }
}

#[test]
fn a_picker_at_another_site_fetches_the_ringing_call_over_the_trunk_once_the_watch_shows_its_pickup(
) {
    let (mut net, mut reg) = registry_grouped();
    let (_inv, ring) = recorded_ring(&mut net, &mut reg);
    // Site B's INVITE comes before this edge's watch shows the pickup, committed entries
    // ahead of what the watch has brought (this site cut off from the registry): it waits
    // for as long as the replica is short of it.
    let at = reg.index + 10;
    net.send(PEER, &trunk_pick_at(&net, ring, at, "1002", "t1"));
    for _ in 0..5 {
        net.advance(Duration::from_secs(1));
        reg.serve(&mut net);
        assert!(finals(&mut net, PEER).is_empty());
    }
    assert!(
        net.take(BOB1).is_empty(),
        "Bob's phone rings on until it is decided"
    );
    let at = net.edge.now_ms(net.now);
    reg.feed(&mut net, at, pickup_by("site-b/3001", None));
    let cancel = net.one(BOB1);
    assert_eq!(*cancel.method(), Method::Cancel);
    assert!(cancel.header_other("Reason").unwrap().contains("cause=200"));
    let ok = net.one(PEER);
    assert_eq!(ok.code(), 200);
    assert_eq!(
        ok.header_other("P-Asserted-Identity").map(str::trim),
        Some("\"Alice\" <sip:1001@orbit.test>")
    );
    let to_alice = net.one(ALICE);
    assert_eq!(
        to_alice.header_other("P-Asserted-Identity").map(str::trim),
        Some("\"Carol B\" <sip:3001@orbit.test>")
    );
}

#[test]
fn a_trunk_pickup_by_someone_the_registry_did_not_choose_is_refused() {
    let (mut net, mut reg) = registry_grouped();
    let (_inv, ring) = recorded_ring(&mut net, &mut reg);
    let at = net.edge.now_ms(net.now);
    reg.feed(&mut net, at, pickup_by("site-b/3002", None));
    net.send(PEER, &trunk_pick(&net, ring, "1002", "t1"));
    let r = net.one(PEER);
    assert_eq!((r.code(), r.reason()), (403, "Not The Picker"));
    // A pickup nobody committed: refused once the wait is over, and the call rings on.
    let (mut net, mut reg) = registry_grouped();
    let (_inv, ring) = recorded_ring(&mut net, &mut reg);
    net.send(PEER, &trunk_pick(&net, ring, "1002", "t2"));
    net.advance(Duration::from_secs(3));
    let r = finals(&mut net, PEER);
    assert_eq!((r[0].code(), r[0].reason()), (404, "Pickup Not Committed"));
    assert!(net.take(BOB1).iter().all(|m| *m.method() != Method::Cancel));
}

#[test]
fn a_call_picked_up_elsewhere_and_never_fetched_is_recorded_again_and_rings_on() {
    let (mut net, mut reg) = registry_grouped();
    let (_inv, _ring) = recorded_ring(&mut net, &mut reg);
    let at = net.edge.now_ms(net.now);
    reg.feed(&mut net, at, pickup_by("site-b/3001", None));
    assert!(reg.orbit.rings_of("orbit.test").is_empty());
    net.advance(Duration::from_secs(11));
    reg.serve(&mut net);
    assert_eq!(reg.orbit.rings_of("orbit.test").len(), 1, "recorded again");
    assert!(net.take(BOB1).iter().all(|m| *m.method() != Method::Cancel));
}

#[test]
fn the_callees_answer_waits_for_the_log_and_loses_to_a_pickup_committed_first() {
    let (mut net, mut reg) = registry_grouped();
    let (inv, ring) = recorded_ring(&mut net, &mut reg);
    // Bob answers: held until the log has ordered it.
    net.send_msg(BOB1, answer(&inv, 200, "bob", Some(SDP_B), BOB1));
    assert!(finals(&mut net, ALICE).is_empty());
    // Site B's pickup reached the log first: Bob's answer waits for the picker.
    let at = net.edge.now_ms(net.now);
    reg.feed(&mut net, at, pickup_by("site-b/3001", Some(ring)));
    reg.serve(&mut net);
    assert!(net.take(BOB1).is_empty());
    assert!(finals(&mut net, ALICE).is_empty());
    // The picker gets the call; Bob's phone is answered and hung up.
    net.send(PEER, &trunk_pick(&net, ring, "1002", "t1"));
    assert_eq!(net.one(PEER).code(), 200);
    assert_eq!(net.one(ALICE).code(), 200);
    let to_bob: Vec<_> = net.take(BOB1).iter().map(|m| m.method().clone()).collect();
    assert!(
        to_bob.starts_with(&[Method::Ack, Method::Bye]),
        "{to_bob:?}"
    );

    // Without a pickup the answer goes through once its RingAnswered commits.
    let (mut net, mut reg) = registry_grouped();
    let (inv, _ring) = recorded_ring(&mut net, &mut reg);
    net.send_msg(BOB1, answer(&inv, 200, "bob", Some(SDP_B), BOB1));
    assert!(finals(&mut net, ALICE).is_empty());
    reg.serve(&mut net);
    assert!(matches!(reg.events.last(), Some(Event::RingAnswered(_))));
    assert_eq!(net.one(ALICE).code(), 200);
}

#[test]
fn a_callees_answer_that_lost_to_a_pickup_goes_through_when_the_picker_never_comes() {
    let (mut net, mut reg) = registry_grouped();
    let (inv, ring) = recorded_ring(&mut net, &mut reg);
    let at = net.edge.now_ms(net.now);
    reg.feed(&mut net, at, pickup_by("site-b/3001", Some(ring)));
    net.send_msg(BOB1, answer(&inv, 200, "bob", Some(SDP_B), BOB1));
    reg.serve(&mut net);
    assert!(finals(&mut net, ALICE).is_empty());
    net.advance(Duration::from_secs(11));
    let ok = finals(&mut net, ALICE);
    assert!(
        !ok.is_empty() && ok.iter().all(|m| m.code() == 200),
        "Alice gets Bob after all (her 200 resent until she ACKs)"
    );
    assert!(net.take(BOB1).iter().all(|m| *m.method() != Method::Bye));
    // The picker's INVITE, late, finds nothing.
    net.send(PEER, &trunk_pick(&net, ring, "1002", "late"));
    let r = finals(&mut net, PEER);
    assert_eq!(
        (r[0].code(), r[0].reason()),
        (481, "Call No Longer Ringing")
    );
}

#[test]
fn a_callees_answer_goes_through_when_its_ring_was_lost_with_the_lease() {
    let (mut net, mut reg) = registry_grouped();
    let (inv, _ring) = recorded_ring(&mut net, &mut reg);
    // The registry drops this edge's rings (its lease lapsed) before Bob answers.
    let at = net.edge.now_ms(net.now) + 60_000;
    let lapse = Command::LeaseLapse {
        edge: "site-a".into(),
    };
    reg.feed(&mut net, at, lapse);
    net.send_msg(BOB1, answer(&inv, 200, "bob", Some(SDP_B), BOB1));
    reg.serve(&mut net);
    let ok = finals(&mut net, ALICE);
    assert_eq!(ok.len(), 1, "Alice gets Bob: {:?}", reg.events.last());
    assert_eq!(ok[0].code(), 200);
}

#[test]
fn a_picker_here_takes_a_call_ringing_at_another_site_over_the_trunk() {
    let (mut net, mut reg) = registry_grouped();
    let r = ringing_at_site_b(&mut net, &mut reg, "orbit.test", "b-call");
    net.send(CAROL, &carol_dials("*8", "p1", ""));
    reg.serve(&mut net);
    assert!(matches!(reg.events.last(), Some(Event::PickedUp { by, .. }) if by == "site-a/1003"));
    let trunk = net.one(PEER);
    assert_eq!(trunk.method(), &Method::Invite);
    assert_eq!(
        trunk.header_other("X-Orbit-Claim").map(str::trim),
        Some(format!("ring-{}", r.id).as_str())
    );
    assert_eq!(
        trunk.header_other("X-Orbit-Claim-Index").map(str::trim),
        Some(reg.index.to_string().as_str()),
        "the log index the pickup was committed at"
    );
    assert!(trunk.uri().unwrap().to_string().starts_with("sip:1002@"));
    // A second picker finds nothing.
    net.send(CAROL, &carol_dials("*8", "p2", ""));
    reg.serve(&mut net);
    let r = finals(&mut net, CAROL);
    assert_eq!((r[0].code(), r[0].reason()), (404, "Nothing To Pick Up"));
}

#[test]
fn a_replaces_naming_a_call_ringing_for_another_tenant_is_refused() {
    let (mut net, mut reg) = registry_grouped();
    ringing_at_site_b(&mut net, &mut reg, "other.test", "their-call");
    let replaces = "Replaces: their-call;to-tag=their-call-l;from-tag=their-call-r;early-only\n";
    net.send(CAROL, &carol_dials("1002", "x", replaces));
    let r = finals(&mut net, CAROL);
    assert_eq!((r[0].code(), r[0].reason()), (403, "Not Your Tenant"));
    assert!(
        net.edge.take_proposals().is_empty(),
        "nothing asked of the log"
    );
}

#[test]
fn a_call_that_ends_while_its_answer_is_ordered_leaves_no_record_behind() {
    let (mut net, mut reg) = registry_grouped();
    let (inv, _ring) = recorded_ring(&mut net, &mut reg);
    // Bob answers (held while RingAnswered is ordered) and Alice cancels meanwhile.
    net.send_msg(BOB1, answer(&inv, 200, "bob", Some(SDP_B), BOB1));
    let cancel = format!(
        "CANCEL sip:1002@orbit.test SIP/2.0\nVia: SIP/2.0/UDP {ALICE};branch=z9hG4bKr1;rport\nMax-Forwards: 70\nFrom: \"Alice\" <sip:1001@orbit.test>;tag=alice\nTo: <sip:1002@orbit.test>\nCall-ID: call-r1\nCSeq: 1 CANCEL\nContent-Length: 0\n\n"
    );
    net.send(ALICE, &cancel);
    reg.serve(&mut net);
    assert!(
        reg.orbit.rings_of("orbit.test").is_empty(),
        "{:?}",
        reg.orbit.rings_of("orbit.test")
    );
    // Bob's answer, too late, is taken and hung up.
    let to_bob: Vec<_> = net.take(BOB1).iter().map(|m| m.method().clone()).collect();
    assert!(to_bob.contains(&Method::Bye), "{to_bob:?}");
}

#[test]
fn a_recall_picked_up_at_another_site_stops_ringing_at_once_and_its_stage_never_times_out() {
    // Its stage would time out (5 s, no fallback: the caller hung up) before the picker's site
    // gives up fetching it (10 s).
    let mut cfg = grouped();
    cfg.tenant.lots[0].recall_ring_secs = 5;
    let mut net = registry_net_with(cfg);
    let mut reg = Registry::default();
    reg.serve(&mut net);
    super::park::park_by_bob(&mut net, "700");
    reg.serve(&mut net);
    net.take(BOB1);
    net.take(ALICE);
    // The deadline (the leader's timer fires it): the recall rings Bob, the parker.
    let first = reg.parked();
    reg.feed(&mut net, first.deadline, Command::Expire { park: first.id });
    reg.serve(&mut net);
    let inv = net
        .take(BOB1)
        .into_iter()
        .find(|m| *m.method() == Method::Invite)
        .expect("the recall rings Bob");
    net.send_msg(BOB1, answer(&inv, 180, "bobr", None, BOB1));
    reg.serve(&mut net);
    let ring = reg.orbit.rings_of("orbit.test")[0].id;
    let at = net.edge.now_ms(net.now);
    reg.feed(&mut net, at, pickup_by("site-b/3001", Some(ring)));
    let cancel = net.one(BOB1);
    assert_eq!(*cancel.method(), Method::Cancel);
    assert!(cancel.header_other("Reason").unwrap().contains("cause=200"));
    // The recall's ring time passes while the picker's INVITE is on its way: the parked
    // caller is not hung up.
    net.advance(Duration::from_secs(9));
    reg.serve(&mut net);
    assert!(
        net.take(ALICE).iter().all(|m| *m.method() != Method::Bye),
        "the parked caller was hung up"
    );
}

#[test]
fn a_stranger_cannot_claim_a_ring_over_the_trunk_by_altering_or_copying_a_signed_invite() {
    let (mut net, mut reg) = registry_grouped();
    let (_inv, ring) = recorded_ring(&mut net, &mut reg);
    let at = net.edge.now_ms(net.now);
    reg.feed(&mut net, at, pickup_by("site-b/3001", Some(ring)));
    // Site B's INVITE for another ring, its claim changed to this one: the signature fails.
    let altered = trunk_pick(&net, ring + 1, "1002", "t1").replace(
        &format!("X-Orbit-Claim: ring-{}", ring + 1),
        &format!("X-Orbit-Claim: ring-{ring}"),
    );
    net.send(PEER, &altered);
    let r = finals(&mut net, PEER);
    assert_eq!((r[0].code(), r[0].reason()), (403, "Bad Trunk Signature"));
    // The right INVITE, copied and sent from another address than site B's edge: refused too.
    let stranger = "127.0.0.2:6001";
    net.send(stranger, &trunk_pick(&net, ring, "1002", "t2"));
    assert_eq!(net.one(stranger).code(), 403);
    // Nobody got the call: Bob's phone rings on, Alice has no answer.
    assert!(net.take(BOB1).iter().all(|m| *m.method() != Method::Cancel));
    assert!(finals(&mut net, ALICE).is_empty());
}

// ------------------------------------------------------ lamps watched from another site

/// Site B says one of its lamps watches `ext` for a minute.
fn watched_from_site_b(net: &mut Net, reg: &mut Registry, ext: &str) {
    let at = net.edge.now_ms(net.now);
    let watch = Command::Watch {
        tenant: "orbit.test".into(),
        ext: ext.into(),
        edge: "site-b".into(),
        until: at + 60_000,
    };
    reg.feed(net, at, watch);
}

/// Alice calls Bob here, who answers at once; Alice hangs up. The registry serves throughout.
fn call_answered_at_once(net: &mut Net, reg: &mut Registry) {
    net.register("1002", BOB1);
    net.send(ALICE, &invite("1002", "q1", ""));
    reg.serve(net);
    let inv = net.one(BOB1);
    net.send_msg(BOB1, answer(&inv, 200, "bob", Some(SDP_B), BOB1));
    reg.serve(net);
    let ok = finals(net, ALICE).remove(0);
    assert_eq!(ok.code(), 200);
    net.send(ALICE, &alice_in_dialog(&ok, "ACK", 1, "ack", None));
    net.send(ALICE, &alice_in_dialog(&ok, "BYE", 2, "bye", None));
    let bye = net
        .take(BOB1)
        .into_iter()
        .find(|m| *m.method() == Method::Bye)
        .expect("BYE to Bob");
    net.send_msg(BOB1, answer(&bye, 200, "bob", None, BOB1));
    reg.serve(net);
}

/// The ring events the registry committed, as (kind, extension, outgoing).
fn ring_events(reg: &Registry) -> Vec<(&'static str, String, bool)> {
    reg.events
        .iter()
        .filter_map(|e| match e {
            Event::Ringing(r) => Some(("ringing", r)),
            Event::RingAnswered(r) => Some(("answered", r)),
            Event::RingEnded { ringing } => Some(("ended", ringing)),
            _ => None,
        })
        .map(|(k, r)| (k, r.ext.clone(), r.call.outgoing()))
        .collect()
}

#[test]
fn calls_of_an_extension_another_site_watches_are_recorded_from_the_first_ring_both_ways() {
    let (mut net, mut reg) = registry_grouped();
    watched_from_site_b(&mut net, &mut reg, "1001");
    watched_from_site_b(&mut net, &mut reg, "1002");
    call_answered_at_once(&mut net, &mut reg);
    let out = |k| (k, "1001".to_string(), true);
    let to = |k| (k, "1002".to_string(), false);
    let mut seen = ring_events(&reg);
    // The two records' commands interleave; each goes ringing, answered, ended.
    seen.sort_by_key(|(_, ext, _)| ext.clone());
    assert_eq!(
        seen,
        vec![
            out("ringing"),
            out("answered"),
            out("ended"),
            to("ringing"),
            to("answered"),
            to("ended")
        ],
        "{:?}",
        reg.events
    );
    let made = reg
        .events
        .iter()
        .find_map(|e| match e {
            Event::Ringing(r) if r.call.outgoing() => Some(r.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(made.call.called.as_deref(), Some("sip:1002@orbit.test"));
    assert_eq!(
        made.call.local_tag, "alice",
        "the extension's own tag, local"
    );
    assert!(reg.orbit.rings_of("orbit.test").is_empty());
}

#[test]
fn a_watch_lost_with_the_watching_sites_lease_records_nothing_more() {
    let (mut net, mut reg) = registry_grouped();
    watched_from_site_b(&mut net, &mut reg, "1001");
    let at = net.edge.now_ms(net.now);
    reg.feed(
        &mut net,
        at,
        Command::Lease {
            edge: "site-b".into(),
            ttl_ms: 1_000,
            incarnation: 1,
            replaces: 0,
            sip: None,
            load: Default::default(),
        },
    );
    reg.feed(
        &mut net,
        at + 2_000,
        Command::LeaseLapse {
            edge: "site-b".into(),
        },
    );
    call_answered_at_once(&mut net, &mut reg);
    assert_eq!(ring_events(&reg), vec![], "{:?}", reg.events);
}

#[test]
fn this_edges_lamps_are_watched_again_after_its_lease_lapsed() {
    use super::lamps::subscribe;
    let (mut net, mut reg) = registry_grouped();
    net.send(CAROL, &subscribe("1001", "s1", 1, None, "Expires: 600\n"));
    reg.serve(&mut net);
    let now = |net: &Net| net.edge.now_ms(net.now);
    assert!(reg.orbit.watched("orbit.test", "1001", now(&net)));
    let at = now(&net) + 60_000;
    reg.feed(
        &mut net,
        at,
        Command::LeaseLapse {
            edge: "site-a".into(),
        },
    );
    assert!(!reg.orbit.watched("orbit.test", "1001", now(&net)));
    reg.serve(&mut net);
    assert!(
        reg.orbit.watched("orbit.test", "1001", now(&net)),
        "the lamp's watch said again"
    );
}
