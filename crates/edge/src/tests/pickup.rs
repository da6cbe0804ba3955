//! Call pickup on one site, in virtual time: group and directed pickup, who may pick up what,
//! a lamp key's Replaces, the callee's answer against a pickup, extension lamps, recalls.
//! With the registry and another site: `pickup_sites.rs`.

use orbit_sip::Method;
use orbit_state::Event;

use super::park::CAROL;
use super::*;

/// 1001, 1002 and 1003 in one pickup group.
pub(super) fn grouped() -> EdgeConfig {
    let mut cfg = config();
    cfg.tenant.pickup_groups = vec![PickupGroup {
        name: "desks".into(),
        members: vec!["1001".into(), "1002".into(), "1003".into()],
    }];
    cfg
}

/// Carol (1003) dials `dialled` with an offer of her own.
pub(super) fn carol_dials(dialled: &str, branch: &str, extra: &str) -> String {
    let sdp = SDP_B.replace("10.2.2.2", "10.3.3.3");
    let body = sdp.replace('\n', "\r\n");
    format!(
        "INVITE sip:{dialled}@orbit.test SIP/2.0\nVia: SIP/2.0/UDP {CAROL};branch=z9hG4bK{branch};rport\nMax-Forwards: 70\nFrom: \"Carol\" <sip:1003@orbit.test>;tag=carol\nTo: <sip:{dialled}@orbit.test>\nCall-ID: pick-{branch}\nCSeq: 1 INVITE\nContact: <sip:1003@{CAROL}>\n{extra}Content-Type: application/sdp\nContent-Length: {}\n\n{sdp}",
        body.len()
    )
}

/// Alice calls 1002 (registered at BOB1), whose phone rings (180); returns the INVITE Bob got.
pub(super) fn ringing_bob(net: &mut Net) -> Message {
    net.register("1002", BOB1);
    net.send(ALICE, &invite("1002", "r1", ""));
    let inv = net.one(BOB1);
    net.send_msg(BOB1, answer(&inv, 180, "bob", None, BOB1));
    assert_eq!(net.one(ALICE).code(), 180);
    inv
}

/// As [`ringing_bob`], and rung long enough to be recorded for pickup.
pub(super) fn recorded_bob(net: &mut Net) -> Message {
    let inv = ringing_bob(net);
    net.advance(crate::pickup::RECORD_AFTER);
    inv
}

/// The final answers (not 100, not 180) sent to `to`.
pub(super) fn finals(net: &mut Net, to: &str) -> Vec<Message> {
    net.take(to)
        .into_iter()
        .filter(|m| m.is_request() || m.code() >= 200)
        .collect()
}

#[test]
fn group_pickup_answers_the_caller_cancels_the_phones_with_a_reason_and_bridges_the_picker() {
    let mut net = Net::with(grouped());
    let inv = recorded_bob(&mut net);
    assert_eq!(net.edge.orbit().rings_of("orbit.test").len(), 1);

    net.send(CAROL, &carol_dials("*8", "p1", ""));
    // Bob's phone stops ringing, told the call was completed elsewhere (not a missed call).
    let cancel = net.one(BOB1);
    assert_eq!(*cancel.method(), Method::Cancel);
    assert_eq!(
        cancel.header_other("Reason").map(str::trim),
        Some("SIP;cause=200;text=\"Call completed elsewhere\"")
    );
    // Carol is connected to Alice and told who she is; Alice is answered by Carol.
    let ok = net.one(CAROL);
    assert_eq!(ok.code(), 200);
    assert_eq!(
        ok.header_other("P-Asserted-Identity").map(str::trim),
        Some("\"Alice\" <sip:1001@orbit.test>")
    );
    // The one codec both offered; no telephone-events, which Carol did not offer.
    assert!(
        body(&ok).contains(&format!(
            "m=audio {} RTP/AVP 0\r\n",
            net.media.port(0, Leg::B)
        )),
        "{}",
        body(&ok)
    );
    let to_alice = net.one(ALICE);
    assert_eq!(to_alice.code(), 200);
    assert_eq!(
        to_alice.header_other("P-Asserted-Identity").map(str::trim),
        Some("<sip:1003@orbit.test>")
    );
    assert!(body(&to_alice).contains(&format!("m=audio {} RTP/AVP 0", net.media.port(0, Leg::A))));
    // The relay sends to Carol now (her offer), not to Bob.
    assert!(net
        .media
        .remotes()
        .contains(&(Leg::B, Some("10.3.3.3:5000".parse().unwrap()))));
    assert!(net.edge.orbit().rings_of("orbit.test").is_empty());
    assert_eq!(net.edge.stats().pickups, 1);

    // Bob's phone confirms the CANCEL with 487: acknowledged, nothing else happens.
    net.send_msg(BOB1, answer(&inv, 487, "bob", None, BOB1));
    let ack = net.one(BOB1);
    assert_eq!(*ack.method(), Method::Ack);
    // Both ACK; Carol hangs up and Alice gets the BYE.
    net.send(ALICE, &alice_in_dialog(&to_alice, "ACK", 1, "a-ack", None));
    let carol_ack = carol_in_dialog(&ok, "ACK", 1, "c-ack");
    net.send(CAROL, &carol_ack);
    assert!(net.take(ALICE).is_empty() && net.take(CAROL).is_empty());
    net.advance(Duration::from_secs(5));
    assert!(
        net.take(ALICE).is_empty() && net.take(CAROL).is_empty(),
        "both 200s were acknowledged: none is resent"
    );
    net.send(CAROL, &carol_in_dialog(&ok, "BYE", 2, "c-bye"));
    assert_eq!(net.one(CAROL).code(), 200);
    let bye = net.one(ALICE);
    assert_eq!(*bye.method(), Method::Bye);
    net.send_msg(ALICE, answer(&bye, 200, "x", None, ALICE));
    assert_eq!(net.edge.active_calls(), 0);
}

/// An in-dialog request from Carol, built from the 2xx she got.
fn carol_in_dialog(ok: &Message, method: &str, cseq: u32, branch: &str) -> String {
    alice_in_dialog(ok, method, cseq, branch, None).replace(ALICE, CAROL)
}

#[test]
fn our_200s_are_resent_to_caller_and_picker_until_each_acks() {
    let mut net = Net::with(grouped());
    recorded_bob(&mut net);
    net.send(CAROL, &carol_dials("*8", "p1", ""));
    net.take(BOB1);
    let ok = net.one(CAROL);
    let to_alice = net.one(ALICE);
    net.send(ALICE, &alice_in_dialog(&to_alice, "ACK", 1, "a-ack", None));
    net.advance(Duration::from_millis(1600));
    // Alice acknowledged hers; Carol's is resent at T1, 2·T1.
    assert!(net.take(ALICE).is_empty());
    assert_eq!(
        net.take(CAROL).iter().filter(|m| m.code() == 200).count(),
        2
    );
    net.send(CAROL, &carol_in_dialog(&ok, "ACK", 1, "c-ack"));
    net.advance(Duration::from_secs(10));
    assert!(net.take(CAROL).is_empty());
    assert_eq!(net.edge.active_calls(), 1);
}

#[test]
fn nothing_to_pick_up_is_404_and_a_call_rung_less_than_half_a_second_is_not_yet_pickable() {
    let mut net = Net::with(grouped());
    net.send(CAROL, &carol_dials("*8", "p0", ""));
    let r = net.one(CAROL);
    assert_eq!((r.code(), r.reason()), (404, "Nothing To Pick Up"));
    ringing_bob(&mut net);
    net.send(CAROL, &carol_dials("*8", "p1", ""));
    let r = net.one(CAROL);
    assert_eq!((r.code(), r.reason()), (404, "Nothing To Pick Up"));
    assert!(net.take(BOB1).is_empty(), "Bob's phone rings on");
    net.advance(crate::pickup::RECORD_AFTER);
    net.take(CAROL); // the 404s resent: Carol never ACKed them
    net.send(CAROL, &carol_dials("*8", "p2", ""));
    assert_eq!(net.one(CAROL).code(), 200);
}

#[test]
fn pickup_is_refused_to_whoever_is_not_in_the_group_unless_the_tenant_allows_anyone() {
    let mut cfg = grouped();
    cfg.tenant.pickup_groups[0].members = vec!["1001".into(), "1002".into()];
    let mut net = Net::with(cfg.clone());
    recorded_bob(&mut net);
    for (dialled, reason) in [
        ("*8", "Not In A Pickup Group"),
        ("*81002", "Not In Your Pickup Group"),
        ("**1002", "Not In Your Pickup Group"),
    ] {
        net.send(CAROL, &carol_dials(dialled, dialled, ""));
        let r = net.one(CAROL);
        assert_eq!((r.code(), r.reason()), (403, reason), "{dialled}");
    }
    net.send(CAROL, &carol_dials("*89999", "nobody", ""));
    let r = net.one(CAROL);
    assert_eq!((r.code(), r.reason()), (404, "No Such Extension"));
    assert!(net.take(BOB1).is_empty(), "Bob's phone rings on");

    cfg.tenant.directed_pickup = DirectedPickup::Anyone;
    let mut net = Net::with(cfg);
    recorded_bob(&mut net);
    net.send(CAROL, &carol_dials("**1002", "d1", ""));
    assert_eq!(net.one(CAROL).code(), 200);
}

#[test]
fn directed_pickup_takes_the_call_ringing_that_extension_only() {
    let mut net = Net::with(grouped());
    recorded_bob(&mut net);
    net.send(CAROL, &carol_dials("*81001", "d0", ""));
    let r = net.one(CAROL);
    assert_eq!((r.code(), r.reason()), (404, "Nothing To Pick Up"));
    net.send(CAROL, &carol_dials("*81002", "d1", ""));
    assert_eq!(net.one(CAROL).code(), 200);
    assert_eq!(*net.one(BOB1).method(), Method::Cancel);
}

#[test]
fn calls_to_extensions_nobody_may_pick_up_are_not_recorded() {
    let mut net = Net::new();
    ringing_bob(&mut net);
    net.advance(Duration::from_secs(2));
    assert!(net.edge.orbit().rings_of("orbit.test").is_empty());
}

#[test]
fn a_ring_is_a_call_in_progress_once_answered_and_ends_with_it_or_when_the_caller_cancels() {
    let mut net = Net::with(grouped());
    let inv = recorded_bob(&mut net);
    net.send_msg(BOB1, answer(&inv, 200, "bob", Some(SDP_B), BOB1));
    let ok = net.one(ALICE);
    assert_eq!(ok.code(), 200);
    // Answered: recorded as the call in progress (lamps show it), which nobody can pick up.
    let rings = net.edge.orbit().rings_of("orbit.test");
    assert!(
        rings.len() == 1 && rings[0].answered_at.is_some(),
        "{rings:?}"
    );
    net.send(CAROL, &carol_dials("*8", "late", ""));
    let r = net.one(CAROL);
    assert_eq!((r.code(), r.reason()), (404, "Nothing To Pick Up"));
    // Over when the call is.
    net.send(ALICE, &alice_in_dialog(&ok, "ACK", 1, "ack", None));
    net.send(ALICE, &alice_in_dialog(&ok, "BYE", 2, "bye", None));
    let bye = net
        .take(BOB1)
        .into_iter()
        .find(|m| *m.method() == Method::Bye)
        .unwrap();
    net.send_msg(BOB1, answer(&bye, 200, "bob", None, BOB1));
    assert!(net.edge.orbit().rings_of("orbit.test").is_empty());

    let mut net = Net::with(grouped());
    recorded_bob(&mut net);
    let cancel = format!(
        "CANCEL sip:1002@orbit.test SIP/2.0\nVia: SIP/2.0/UDP {ALICE};branch=z9hG4bKr1;rport\nMax-Forwards: 70\nFrom: \"Alice\" <sip:1001@orbit.test>;tag=alice\nTo: <sip:1002@orbit.test>\nCall-ID: call-r1\nCSeq: 1 CANCEL\nContent-Length: 0\n\n"
    );
    net.send(ALICE, &cancel);
    let c = net.one(BOB1);
    assert_eq!(*c.method(), Method::Cancel);
    assert!(
        c.header_other("Reason").is_none(),
        "a caller's cancel is no pickup"
    );
    assert!(net.edge.orbit().rings_of("orbit.test").is_empty());
}

#[test]
fn a_lamp_key_replaces_names_the_ringing_dialog_and_early_only_of_nothing_is_481() {
    let mut net = Net::with(grouped());
    recorded_bob(&mut net);
    let ring = net.edge.orbit().rings_of("orbit.test")[0].clone();
    assert_eq!(ring.call.call_id, "call-r1");
    assert_eq!(ring.call.remote_tag, "alice");

    let wrong = "Replaces: nope;to-tag=x;from-tag=y;early-only\n";
    net.send(CAROL, &carol_dials("1002", "l0", wrong));
    let r = net.one(CAROL);
    assert_eq!((r.code(), r.reason()), (481, "No Such Ringing Call"));

    let replaces = format!(
        "Replaces: {};to-tag={};from-tag={};early-only\n",
        ring.call.call_id, ring.call.local_tag, ring.call.remote_tag
    );
    net.send(CAROL, &carol_dials("1002", "l1", &replaces));
    assert_eq!(net.one(CAROL).code(), 200);
    assert_eq!(net.one(ALICE).code(), 200);
    // A second press of the key: the call is no longer ringing.
    net.send(CAROL, &carol_dials("1002", "l2", &replaces));
    let r = net.one(CAROL);
    assert_eq!((r.code(), r.reason()), (481, "Call No Longer Ringing"));
}

#[test]
fn a_callee_answering_after_a_pickup_is_hung_up_and_the_caller_keeps_the_picker() {
    let mut net = Net::with(grouped());
    let inv = recorded_bob(&mut net);
    net.send(CAROL, &carol_dials("*8", "p1", ""));
    net.take(BOB1);
    assert_eq!(net.one(CAROL).code(), 200);
    assert_eq!(net.one(ALICE).code(), 200);
    // Bob's phone answered as the CANCEL crossed it.
    net.send_msg(BOB1, answer(&inv, 200, "bob", Some(SDP_B), BOB1));
    let to_bob: Vec<_> = net.take(BOB1).iter().map(|m| m.method().clone()).collect();
    assert_eq!(to_bob, [Method::Ack, Method::Bye]);
    assert!(
        finals(&mut net, ALICE).is_empty(),
        "Alice hears of none of it"
    );
    assert_eq!(net.edge.active_calls(), 1);
}

// ---------------------------------------------------------------- extension lamps

/// The value of attribute `name` in the first dialog of a dialog-info document.
fn attr(doc: &str, name: &str) -> String {
    let pat = format!(" {name}=\"");
    let start = doc
        .find(&pat)
        .unwrap_or_else(|| panic!("no {name} in {doc}"))
        + pat.len();
    doc[start..].split('"').next().unwrap().to_string()
}

#[test]
fn an_extension_lamp_flashes_with_the_ringing_call_and_its_replaces_picks_it_up() {
    use super::lamps::{lamp_notifies, subscribe};
    let mut net = Net::with(grouped());
    net.send(CAROL, &subscribe("1002", "s1", 1, None, "Expires: 600\n"));
    let first = lamp_notifies(&mut net);
    assert_eq!(first.len(), 1);
    assert!(!first[0].1.contains("<dialog "), "idle: {}", first[0].1);

    recorded_bob(&mut net);
    let lit = lamp_notifies(&mut net);
    assert_eq!(lit.len(), 1, "{lit:?}");
    let doc = &lit[0].1;
    assert!(doc.contains("<state>early</state>"), "{doc}");
    assert!(
        doc.contains("display=\"Alice\">sip:1001@orbit.test"),
        "{doc}"
    );
    assert_eq!(attr(doc, "call-id"), "call-r1");

    // The lamp key: an INVITE whose Replaces is made of what the NOTIFY showed.
    let replaces = format!(
        "Replaces: {};to-tag={};from-tag={};early-only\n",
        attr(doc, "call-id"),
        attr(doc, "local-tag"),
        attr(doc, "remote-tag")
    );
    net.send(CAROL, &carol_dials("1002", "key", &replaces));
    let msgs = net.take(CAROL);
    assert!(msgs.iter().any(|m| m.code() == 200), "picked up");
    for n in msgs.iter().filter(|m| *m.method() == Method::Notify) {
        net.send_msg(CAROL, super::park::ok_to(n));
    }
    let dark = msgs
        .iter()
        .filter(|m| *m.method() == Method::Notify)
        .map(body)
        .collect::<Vec<_>>();
    assert_eq!(dark.len(), 1, "{dark:?}");
    assert!(dark[0].contains("<state>terminated</state>"), "{}", dark[0]);
}

#[test]
fn an_extension_lamp_is_refused_to_whoever_may_not_pick_its_calls_up() {
    use super::lamps::subscribe;
    let mut cfg = grouped();
    cfg.tenant.pickup_groups[0].members = vec!["1001".into(), "1002".into()];
    let mut net = Net::with(cfg);
    net.send(CAROL, &subscribe("1002", "s1", 1, None, "Expires: 600\n"));
    let r = net.one(CAROL);
    assert_eq!((r.code(), r.reason()), (403, "Not In Your Pickup Group"));
    // Its own lamp, anyone may watch.
    net.send(CAROL, &subscribe("1003", "s2", 1, None, "Expires: 600\n"));
    assert!(net.take(CAROL).iter().any(|m| m.code() == 200));
}

// ---------------------------------------------------------------- recalls

#[test]
fn a_recall_ringing_the_parker_is_picked_up_by_a_colleague_and_leaves_its_slot() {
    let mut net = Net::with(grouped());
    let _ok = super::park::parked(&mut net);
    net.take(ALICE);
    net.advance(Duration::from_secs(90));
    let inv = net.one(BOB1);
    assert_eq!(
        *inv.method(),
        Method::Invite,
        "the recall rings Bob, the parker"
    );
    net.send_msg(BOB1, answer(&inv, 180, "bobr", None, BOB1));
    let rings = net.edge.orbit().rings_of("orbit.test");
    assert_eq!(rings.len(), 1);
    assert_eq!(rings[0].ext, "1002");
    net.edge.take_orbit_events();

    net.send(CAROL, &carol_dials("*8", "p1", ""));
    let ok = net.one(CAROL);
    assert_eq!(ok.code(), 200);
    assert!(
        ok.header_other("P-Asserted-Identity")
            .unwrap()
            .contains("701: Alice"),
        "{:?}",
        ok.header_other("P-Asserted-Identity")
    );
    let cancel = net.one(BOB1);
    assert_eq!(*cancel.method(), Method::Cancel);
    assert!(cancel.header_other("Reason").unwrap().contains("cause=200"));
    assert!(
        super::park::parked_slots(&net).is_empty(),
        "the slot is free"
    );
    assert!(net.edge.orbit().rings_of("orbit.test").is_empty());
    let events = net.edge.take_orbit_events();
    assert!(
        events.iter().any(|e| matches!(
            e,
            Event::PickedUp { parked: Some(p), by, .. } if p.slot == 701 && by == "t/1003"
        )),
        "{events:?}"
    );
    // Bob answers the recall as it is cancelled: too late, he is hung up.
    net.send_msg(BOB1, answer(&inv, 200, "bobr", Some(SDP_B), BOB1));
    let to_bob: Vec<_> = net.take(BOB1).iter().map(|m| m.method().clone()).collect();
    assert_eq!(to_bob, [Method::Ack, Method::Bye]);
}

#[test]
fn a_recall_answered_by_the_parker_can_no_longer_be_picked_up() {
    let mut net = Net::with(grouped());
    let _ok = super::park::parked(&mut net);
    net.take(ALICE);
    net.advance(Duration::from_secs(90));
    let inv = net.one(BOB1);
    net.send_msg(BOB1, answer(&inv, 180, "bobr", None, BOB1));
    net.send_msg(BOB1, answer(&inv, 200, "bobr", Some(SDP_B), BOB1));
    assert!(net.edge.orbit().rings_of("orbit.test").is_empty());
    net.send(CAROL, &carol_dials("*8", "p1", ""));
    let r = net.one(CAROL);
    assert_eq!((r.code(), r.reason()), (404, "Nothing To Pick Up"));
}

#[test]
fn an_answered_call_stops_showing_on_the_callees_lamp_once_parked() {
    let mut net = Net::with(grouped());
    let inv = recorded_bob(&mut net);
    net.send_msg(BOB1, answer(&inv, 200, "bob", Some(SDP_B), BOB1));
    let ok = net.one(ALICE);
    net.send(ALICE, &alice_in_dialog(&ok, "ACK", 1, "ack1", None));
    assert_eq!(net.edge.orbit().rings_of("orbit.test").len(), 1);
    let refer_to = "Refer-To: <sip:700@orbit.test>\nReferred-By: <sip:1002@orbit.test>\n";
    net.send(
        BOB1,
        &super::park::bob_in_dialog(&inv, "REFER", 2, "refer1", refer_to, None),
    );
    assert_eq!(super::park::parked_slots(&net), vec![701]);
    assert!(net.edge.orbit().rings_of("orbit.test").is_empty());
}

#[test]
fn a_stranger_who_dials_a_pickup_code_or_sends_a_replaces_is_challenged_and_takes_nothing() {
    const STRANGER: &str = "127.0.0.2:6001";
    let mut net = Net::with(grouped());
    recorded_bob(&mut net);
    let ring = net.edge.orbit().rings_of("orbit.test")[0].clone();
    let replaces = format!(
        "Replaces: {};to-tag={};from-tag={};early-only\n",
        ring.call.call_id, ring.call.local_tag, ring.call.remote_tag
    );
    for (dialled, extra) in [("*8", ""), ("*81002", ""), ("1002", replaces.as_str())] {
        let req = carol_dials(dialled, &format!("s{dialled}"), extra).replace(CAROL, STRANGER);
        net.send(STRANGER, &req);
        assert_eq!(net.one(STRANGER).code(), 407, "{dialled}");
    }
    assert!(net.take(BOB1).is_empty(), "Bob's phone rings on");
    assert!(net.take(ALICE).is_empty());
    assert_eq!(net.edge.orbit().rings_of("orbit.test").len(), 1);
}

// ------------------------------------------------ lamps of calls made, and calls answered at once

/// Alice's call to Bob, answered at once (no half second rung); then hung up by Alice.
fn alice_calls_bob_answered_at_once(net: &mut Net) -> Vec<(String, String)> {
    use super::lamps::lamp_notifies;
    net.register("1002", BOB1);
    net.send(ALICE, &invite("1002", "q1", ""));
    let inv = net.one(BOB1);
    let mut seen = lamp_notifies(net);
    net.send_msg(BOB1, answer(&inv, 200, "bob", Some(SDP_B), BOB1));
    let ok = net
        .take(ALICE)
        .into_iter()
        .find(|m| m.code() == 200)
        .expect("answered");
    seen.extend(lamp_notifies(net));
    net.send(ALICE, &alice_in_dialog(&ok, "ACK", 1, "ack", None));
    net.send(ALICE, &alice_in_dialog(&ok, "BYE", 2, "bye", None));
    let bye = net
        .take(BOB1)
        .into_iter()
        .find(|m| *m.method() == Method::Bye)
        .expect("BYE to Bob");
    net.send_msg(BOB1, answer(&bye, 200, "bob", None, BOB1));
    seen.extend(lamp_notifies(net));
    seen
}

/// The dialog states and directions a lamp showed, in order, NOTIFYs without a dialog left out.
fn lamp_states(seen: &[(String, String)]) -> Vec<(String, String)> {
    seen.iter()
        .filter(|(_, doc)| doc.contains("<dialog "))
        .map(|(_, doc)| {
            let state = doc
                .split("<state>")
                .nth(1)
                .unwrap()
                .split('<')
                .next()
                .unwrap();
            (state.to_string(), attr(doc, "direction"))
        })
        .collect()
}

#[test]
fn a_lamp_shows_the_calls_its_extension_makes_and_calls_to_it_answered_at_once() {
    use super::lamps::{lamp_notifies, subscribe};
    let mut net = Net::with(grouped());
    // Carol watches Alice (1001): Alice's call to Bob shows as one she makes.
    net.send(CAROL, &subscribe("1001", "s1", 1, None, "Expires: 600\n"));
    lamp_notifies(&mut net);
    let seen = alice_calls_bob_answered_at_once(&mut net);
    let shown = lamp_states(&seen);
    let initiator = |s: &str| (s.to_string(), "initiator".to_string());
    assert_eq!(
        shown,
        vec![
            initiator("early"),
            initiator("confirmed"),
            initiator("terminated")
        ],
        "{seen:?}"
    );
    let early = &seen.iter().find(|(_, d)| d.contains("<dialog ")).unwrap().1;
    assert!(early.contains(">sip:1002@orbit.test</identity>"), "{early}");
    assert_eq!(attr(early, "call-id"), "call-q1");
    assert!(net.edge.orbit().rings_of("orbit.test").is_empty());

    // Carol watches Bob (1002) instead: the call to him, answered before half a second, shows.
    let mut net = Net::with(grouped());
    net.send(CAROL, &subscribe("1002", "s1", 1, None, "Expires: 600\n"));
    lamp_notifies(&mut net);
    let seen = alice_calls_bob_answered_at_once(&mut net);
    let recipient = |s: &str| (s.to_string(), "recipient".to_string());
    assert_eq!(
        lamp_states(&seen),
        vec![
            recipient("early"),
            recipient("confirmed"),
            recipient("terminated")
        ],
        "{seen:?}"
    );
    assert!(net.edge.orbit().rings_of("orbit.test").is_empty());
}

#[test]
fn calls_of_extensions_no_lamp_watches_cost_the_log_nothing_and_a_lamp_gone_stops_the_records() {
    use super::lamps::{lamp_notifies, subscribe};
    let mut net = Net::with(grouped());
    net.send(CAROL, &subscribe("1001", "s1", 1, None, "Expires: 600\n"));
    let to_tag = net
        .take(CAROL)
        .into_iter()
        .find(|m| m.code() == 200)
        .and_then(|m| m.to_tag().map(str::to_string))
        .expect("subscribed");
    assert!(net
        .edge
        .orbit()
        .watched("orbit.test", "1001", net.edge.now_ms(net.now)));
    net.send(
        CAROL,
        &subscribe("1001", "s2", 2, Some(&to_tag), "Expires: 0\n"),
    );
    lamp_notifies(&mut net);
    assert!(
        !net.edge
            .orbit()
            .watched("orbit.test", "1001", net.edge.now_ms(net.now)),
        "the watch ends with the last lamp"
    );
    // Neither the call Alice makes nor Bob's, answered at once, is recorded: no command at all.
    let before = net.edge.orbit().clone();
    net.register("1002", BOB1);
    net.send(ALICE, &invite("1002", "q1", ""));
    let inv = net.one(BOB1);
    assert_eq!(net.edge.orbit().rings_of("orbit.test").len(), 0);
    net.send_msg(BOB1, answer(&inv, 200, "bob", Some(SDP_B), BOB1));
    assert_eq!(net.one(ALICE).code(), 200);
    net.advance(Duration::from_secs(2));
    assert_eq!(
        serde_json::to_string(net.edge.orbit()).unwrap(),
        serde_json::to_string(&before).unwrap(),
        "the orbit state did not change"
    );
}
