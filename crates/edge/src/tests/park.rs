//! Call park in virtual time: REFER to park, retrieve, recall, fallback, lamps.

use orbit_sip::Method;
use orbit_state::{EndReason, Event};

use super::*;

pub(super) const CAROL: &str = "127.0.0.1:8001";

/// An in-dialog request from Bob (the callee), built from the INVITE he got.
pub(super) fn bob_in_dialog(
    inv: &Message,
    method: &str,
    cseq: u32,
    branch: &str,
    extra: &str,
    body: Option<(&str, &str)>,
) -> String {
    let target = inv
        .header(Name::Contact)
        .unwrap()
        .trim_matches(['<', '>'])
        .to_string();
    let (ct, b, len) = match body {
        Some((ct, b)) => (
            format!("Content-Type: {ct}\n"),
            b.to_string(),
            b.replace('\n', "\r\n").len(),
        ),
        None => (String::new(), String::new(), 0),
    };
    format!(
        "{method} {target} SIP/2.0\nVia: SIP/2.0/UDP {BOB1};branch=z9hG4bK{branch};rport\nMax-Forwards: 70\nFrom: {};tag=bob\nTo: {}\nCall-ID: {}\nCSeq: {cseq} {method}\n{extra}{ct}Content-Length: {len}\n\n{b}",
        inv.header(Name::To).unwrap(),
        inv.header(Name::From).unwrap(),
        inv.call_id(),
    )
}

/// Bob's REFER (in the call `inv` set up) to the park extension, with Replaces naming the
/// dialog (`call_id`, `to_tag`, `from_tag`): the step that completes an attended park.
pub(super) fn refer_replacing(
    inv: &Message,
    call_id: &str,
    to_tag: &str,
    from_tag: &str,
) -> String {
    let replaces = format!("{call_id}%3Bto-tag%3D{to_tag}%3Bfrom-tag%3D{from_tag}");
    bob_in_dialog(
        inv,
        "REFER",
        2,
        "refer1",
        &format!("Refer-To: <sip:700@orbit.test?Replaces={replaces}>\n"),
        None,
    )
}

/// A 200 to a request the edge sent.
pub(super) fn ok_to(req: &Message) -> Bytes {
    answer(req, 200, "x", None, "127.0.0.1:1")
}

/// Alice calls Bob, Bob answers, Alice ACKs; Bob then REFERs Alice to `target`.
/// Returns (Alice's 200, Bob's INVITE) after the REFER's 202.
pub(super) fn park_by_bob(net: &mut Net, target: &str) -> (Message, Message) {
    let (ok, inv) = answered_call(net);
    net.send(ALICE, &alice_in_dialog(&ok, "ACK", 1, "ack1", None));
    net.take(BOB1);
    net.media.take_feeds();
    let refer_to =
        format!("Refer-To: <sip:{target}@orbit.test>\nReferred-By: <sip:1002@orbit.test>\n");
    net.send(
        BOB1,
        &bob_in_dialog(&inv, "REFER", 2, "refer1", &refer_to, None),
    );
    (ok, inv)
}

fn parked_slots(net: &Net) -> Vec<u32> {
    net.edge.orbit().all_parked().map(|p| p.slot).collect()
}

pub(super) fn carol_invite(slot: &str, branch: &str) -> String {
    let sdp = SDP_B.replace("10.2.2.2", "10.3.3.3");
    let body = sdp.replace('\n', "\r\n");
    format!(
        "INVITE sip:{slot}@orbit.test SIP/2.0\nVia: SIP/2.0/UDP {CAROL};branch=z9hG4bK{branch};rport\nMax-Forwards: 70\nFrom: \"Carol\" <sip:1003@orbit.test>;tag=carol\nTo: <sip:{slot}@orbit.test>\nCall-ID: call-{branch}\nCSeq: 1 INVITE\nContact: <sip:1003@{CAROL}>\nContent-Type: application/sdp\nContent-Length: {}\n\n{sdp}",
        body.len()
    )
}

#[test]
fn blind_park_plays_music_tells_the_parker_and_retrieve_bridges() {
    let mut net = Net::new();
    net.register("1003", CAROL);
    let (ok, _inv) = park_by_bob(&mut net, "700");
    // Bob: 202, then a NOTIFY with the final sipfrag, and a MESSAGE with the slot.
    let to_bob = net.take(BOB1);
    let codes: Vec<u16> = to_bob
        .iter()
        .filter(|m| !m.is_request())
        .map(|m| m.code())
        .collect();
    assert_eq!(codes, vec![202]);
    let notify = to_bob
        .iter()
        .find(|m| *m.method() == Method::Notify)
        .expect("NOTIFY");
    assert_eq!(body(notify), "SIP/2.0 200 OK\r\n");
    assert!(notify.header(Name::Event).unwrap().starts_with("refer"));
    assert!(notify
        .header_other("Subscription-State")
        .unwrap()
        .starts_with("terminated"));
    let msg = to_bob
        .iter()
        .find(|m| *m.method() == Method::Message)
        .expect("MESSAGE");
    assert_eq!(body(msg), "Parked on 701");
    assert!(msg.header(Name::To).unwrap().contains("1002@"));
    // Alice stays, on music from the same relay port, in her codec; Bob's leg is vacated.
    assert!(
        net.take(ALICE).is_empty(),
        "no re-INVITE to the parked caller"
    );
    assert_eq!(
        net.media.take_feeds(),
        vec!["play A music PCMU 16000ms", "vacate B"]
    );
    assert_eq!(parked_slots(&net), vec![701]);
    // Bob's NOTIFY answered: the edge ends his leg.
    net.send_msg(BOB1, ok_to(notify));
    let bye = net.one(BOB1);
    assert_eq!(*bye.method(), Method::Bye);
    net.send_msg(BOB1, ok_to(&bye));
    assert_eq!(net.edge.active_calls(), 1);

    // Carol dials 701: answered by the edge with the relay's free leg, music off.
    net.send(CAROL, &carol_invite("701", "r1"));
    let ok_c = net.one(CAROL);
    assert_eq!(ok_c.code(), 200);
    assert!(
        body(&ok_c).contains(&format!("m=audio {} RTP/AVP 0", net.media.port(0, Leg::B))),
        "{}",
        body(&ok_c)
    );
    assert!(ok_c
        .header_other("P-Asserted-Identity")
        .unwrap()
        .starts_with("\"701: Alice\""));
    assert_eq!(
        net.media.take_feeds(),
        vec!["vacate B", "bridge A", "bridge B"]
    );
    assert!(net
        .media
        .remotes()
        .contains(&(crate::media::Leg::B, Some("10.3.3.3:5000".parse().unwrap()))));
    assert!(parked_slots(&net).is_empty());
    // The 2xx is resent until Carol ACKs.
    net.advance(Duration::from_millis(600));
    assert_eq!(net.one(CAROL).code(), 200);
    net.send(CAROL, &format!(
        "ACK sip:1001@{EDGE} SIP/2.0\nVia: SIP/2.0/UDP {CAROL};branch=z9hG4bKack9\nMax-Forwards: 70\nFrom: \"Carol\" <sip:1003@orbit.test>;tag=carol\nTo: {}\nCall-ID: call-r1\nCSeq: 1 ACK\nContent-Length: 0\n\n",
        ok_c.header(Name::To).unwrap()
    ));
    net.advance(Duration::from_secs(2));
    assert!(
        net.take(CAROL).is_empty(),
        "2xx no longer resent after the ACK"
    );
    // Alice hangs up: Carol gets the BYE.
    net.send(ALICE, &alice_in_dialog(&ok, "BYE", 2, "bye1", None));
    assert_eq!(net.one(ALICE).code(), 200);
    let bye = net.one(CAROL);
    assert_eq!(*bye.method(), Method::Bye);
    assert_eq!(bye.call_id(), "call-r1");
    let events = net.edge.take_orbit_events();
    assert!(matches!(&events[..], [Event::Parked(_), Event::Claimed { by, .. }] if by == "1003"));
}

#[test]
fn empty_slot_and_refused_parks_keep_the_call() {
    let mut net = Net::new();
    net.register("1003", CAROL);
    net.send(CAROL, &carol_invite("702", "e1"));
    let r = net.one(CAROL);
    assert_eq!((r.code(), r.reason()), (404, "Nobody Parked On 702"));

    // Park into 703 explicitly, then a second call asks for 703 too: 486 in the sipfrag.
    let (ok, inv) = park_by_bob(&mut net, "703");
    assert_eq!(parked_slots(&net), vec![703]);
    net.take(BOB1);
    let _ = (ok, inv);
    let mut cfg = config();
    cfg.tenant.lots[0].slots = "701-701".into();
    let mut net = Net::with(cfg);
    let (ok, inv) = park_by_bob(&mut net, "700");
    assert_eq!(parked_slots(&net), vec![701]);
    net.take(BOB1);
    // A second call, parked into the full lot: 503 in the sipfrag, and the call stays whole.
    net.register("1003", CAROL);
    let alice2 = invite("1002", "c2", "").replace("tag=alice", "tag=alice2");
    net.send(ALICE, &alice2);
    net.take(ALICE);
    let inv2 = net.one(BOB1);
    net.send_msg(BOB1, answer(&inv2, 200, "bob", Some(SDP_B), BOB1));
    let ok2 = net.one(ALICE);
    net.send(ALICE, &alice_in_dialog(&ok2, "ACK", 1, "ack2", None));
    net.take(BOB1);
    net.media.take_feeds();
    let refer = bob_in_dialog(
        &inv2,
        "REFER",
        2,
        "refer2",
        "Refer-To: <sip:700@orbit.test>\n",
        None,
    );
    net.send(BOB1, &refer);
    let to_bob = net.take(BOB1);
    assert_eq!(to_bob[0].code(), 202);
    let notify = to_bob
        .iter()
        .find(|m| *m.method() == Method::Notify)
        .unwrap();
    assert_eq!(body(notify), "SIP/2.0 503 Parking Lot Full\r\n");
    net.send_msg(BOB1, ok_to(notify));
    assert!(net.take(BOB1).is_empty(), "no BYE after a refused park");
    assert!(
        net.media.take_feeds().is_empty(),
        "no music after a refused park"
    );
    // Still a call: Alice's re-INVITE reaches Bob, and Bob's answer reaches Alice.
    net.send(
        ALICE,
        &alice_in_dialog(&ok2, "INVITE", 2, "reinv2", Some(SDP_A)),
    );
    let reinv = net.one(BOB1);
    assert_eq!(*reinv.method(), Method::Invite);
    net.send_msg(BOB1, answer(&reinv, 200, "bob", Some(SDP_B), BOB1));
    assert_eq!(net.one(ALICE).code(), 200);
    net.send(ALICE, &alice_in_dialog(&ok2, "ACK", 2, "reack2", None));
    assert_eq!(*net.one(BOB1).method(), Method::Ack);
    // A REFER while a re-INVITE is in progress waits its turn: 491.
    net.send(
        ALICE,
        &alice_in_dialog(&ok2, "INVITE", 3, "reinv3", Some(SDP_A)),
    );
    let reinv = net.one(BOB1);
    let refer = |cseq: u32, target: &str| {
        bob_in_dialog(
            &inv2,
            "REFER",
            cseq,
            &format!("refer{cseq}"),
            &format!("Refer-To: <sip:{target}@orbit.test>\n"),
            None,
        )
    };
    net.send(BOB1, &refer(3, "701"));
    assert_eq!(net.one(BOB1).code(), 491);
    net.send_msg(BOB1, answer(&reinv, 200, "bob", Some(SDP_B), BOB1));
    net.take(ALICE);
    net.send(ALICE, &alice_in_dialog(&ok2, "ACK", 3, "reack3", None));
    net.take(BOB1);
    // A taken slot asked for by number: 486, and the call stays.
    net.send(BOB1, &refer(4, "701"));
    let to_bob = net.take(BOB1);
    assert_eq!(to_bob[0].code(), 202);
    let n = to_bob
        .iter()
        .find(|m| *m.method() == Method::Notify)
        .unwrap();
    assert_eq!(body(n), "SIP/2.0 486 Slot Taken\r\n");
    net.send_msg(BOB1, ok_to(n));
    let _ = (ok, inv);
    // A REFER elsewhere than park is refused, the call kept.
    let refer = bob_in_dialog(
        &inv2,
        "REFER",
        5,
        "refer5",
        "Refer-To: <sip:1001@orbit.test>\n",
        None,
    );
    net.send(BOB1, &refer);
    assert_eq!(net.one(BOB1).code(), 403);
}

#[test]
fn parked_caller_hanging_up_frees_the_slot_at_once() {
    let mut net = Net::new();
    let (ok, _inv) = park_by_bob(&mut net, "700");
    net.take(BOB1);
    net.advance(Duration::from_secs(10));
    net.send(ALICE, &alice_in_dialog(&ok, "BYE", 2, "bye1", None));
    assert_eq!(net.one(ALICE).code(), 200);
    assert!(parked_slots(&net).is_empty());
    assert_eq!(net.edge.active_calls(), 0);
    assert_eq!(net.media.open_sessions(), 0);
    let ev = net.edge.take_orbit_events();
    assert!(matches!(
        ev.last(),
        Some(Event::Ended {
            reason: EndReason::HungUp,
            ..
        })
    ));
    // No recall later.
    net.advance(Duration::from_secs(120));
    assert!(net.take(BOB1).iter().all(|m| *m.method() != Method::Invite));
}

#[test]
fn a_silent_parked_caller_is_not_hung_up_by_the_ordinary_media_timeout() {
    let mut net = Net::new();
    let (_ok, _inv) = park_by_bob(&mut net, "700");
    net.take(BOB1);
    net.edge.take_orbit_events();
    // Alice's phone sends nothing while it listens to the music: past the 60 s media timeout
    // the park holds (the recall at 90 s must still ring Bob).
    net.media.set_idle(Duration::from_secs(61));
    net.advance(Duration::from_secs(2));
    assert_eq!(parked_slots(&net), vec![701]);
    assert!(net.take(ALICE).is_empty(), "no BYE to the parked caller");
    // Silent for longer than a park can last (90 s parking, 20 s recall, 60 s margin): the
    // phone is gone, and the park ends saying so.
    net.media.set_idle(Duration::from_secs(171));
    net.advance(Duration::from_secs(2));
    let byes = net.take(ALICE);
    assert!(
        byes.iter().all(|m| *m.method() == Method::Bye),
        "BYE (and its retransmission)"
    );
    net.send_msg(ALICE, ok_to(&byes[0]));
    assert!(parked_slots(&net).is_empty());
    let ev = net.edge.take_orbit_events();
    assert!(
        matches!(
            ev.last(),
            Some(Event::Ended {
                reason: EndReason::NoMedia,
                ..
            })
        ),
        "{ev:?}"
    );
}

/// Park Alice, let Bob's leg go, and return Alice's 200.
fn parked(net: &mut Net) -> Message {
    let (ok, _) = park_by_bob(net, "700");
    let to_bob = net.take(BOB1);
    let notify = to_bob
        .iter()
        .find(|m| *m.method() == Method::Notify)
        .unwrap()
        .clone();
    let message = to_bob
        .iter()
        .find(|m| *m.method() == Method::Message)
        .unwrap()
        .clone();
    net.send_msg(BOB1, ok_to(&message));
    net.send_msg(BOB1, ok_to(&notify));
    let bye = net.one(BOB1);
    net.send_msg(BOB1, ok_to(&bye));
    net.media.take_feeds();
    net.edge.take_orbit_events();
    ok
}

#[test]
fn recall_rings_the_parker_at_the_deadline_and_not_before() {
    let mut net = Net::new();
    let _ok = parked(&mut net);
    net.advance(Duration::from_millis(89_999));
    assert!(net.take(BOB1).is_empty(), "recalled early");
    net.advance(Duration::from_millis(1));
    let inv = net.one(BOB1);
    assert_eq!(*inv.method(), Method::Invite);
    assert!(
        inv.header(Name::From)
            .unwrap()
            .starts_with("\"Recall 701: Alice\""),
        "{}",
        inv.header(Name::From).unwrap()
    );
    assert!(body(&inv).contains(&format!("m=audio {} RTP/AVP 0", net.media.port(0, Leg::B))));
    assert!(matches!(
        &net.edge.take_orbit_events()[..],
        [Event::Expired(_)]
    ));
    // Still parked while it rings.
    assert_eq!(parked_slots(&net), vec![701]);
    net.send_msg(BOB1, answer(&inv, 180, "bobr", None, BOB1));
    net.send_msg(BOB1, answer(&inv, 200, "bobr", Some(SDP_B), BOB1));
    let ack = net.one(BOB1);
    assert_eq!(*ack.method(), Method::Ack);
    assert_eq!(ack.to_tag(), Some("bobr"));
    assert_eq!(net.media.take_feeds(), vec!["vacate B", "bridge A"]);
    assert!(parked_slots(&net).is_empty());
    assert!(
        matches!(&net.edge.take_orbit_events()[..], [Event::Claimed { by, .. }] if by == "1002")
    );
    // Exactly once: nothing more later.
    net.advance(Duration::from_secs(200));
    assert!(net.take(BOB1).iter().all(|m| *m.method() != Method::Invite));
}

#[test]
fn unanswered_recall_falls_back_then_hangs_up() {
    let mut cfg = config();
    cfg.tenant.lots[0].fallback = Some("1003".into());
    let mut net = Net::with(cfg);
    net.register("1003", CAROL);
    let _ok = parked(&mut net);
    net.advance(Duration::from_secs(90));
    let inv = net.one(BOB1);
    net.send_msg(BOB1, answer(&inv, 180, "bobr", None, BOB1));
    net.advance(Duration::from_millis(19_999));
    assert!(net.take(CAROL).is_empty(), "fallback rang early");
    net.advance(Duration::from_millis(1));
    // Bob's phone is cancelled, Carol's rings.
    let cancel = net.one(BOB1);
    assert_eq!(*cancel.method(), Method::Cancel);
    let inv_c = net.one(CAROL);
    assert!(inv_c
        .header(Name::From)
        .unwrap()
        .starts_with("\"Recall 701: Alice\""));
    net.send_msg(BOB1, ok_to(&cancel));
    net.send_msg(BOB1, answer(&inv, 487, "bobr", None, BOB1));
    // Carol is busy: nobody is left, Alice is hung up.
    net.send_msg(CAROL, answer(&inv_c, 486, "carol", None, CAROL));
    let bye = net.one(ALICE);
    assert_eq!(*bye.method(), Method::Bye);
    let ev = net.edge.take_orbit_events();
    assert!(
        matches!(
            &ev[..],
            [
                Event::Expired(_),
                Event::RecallStage(_),
                Event::Ended {
                    reason: EndReason::Abandoned,
                    ..
                }
            ]
        ),
        "{ev:?}"
    );
    net.send_msg(ALICE, ok_to(&bye));
    assert_eq!(net.edge.active_calls(), 0);
    assert!(parked_slots(&net).is_empty());

    // Without a fallback, the parker not answering hangs up at once after the ring time.
    let mut net = Net::new();
    let _ok = parked(&mut net);
    net.advance(Duration::from_secs(90));
    let inv = net.one(BOB1);
    net.send_msg(BOB1, answer(&inv, 180, "bobr", None, BOB1));
    net.advance(Duration::from_secs(20));
    assert!(net.take(ALICE).iter().any(|m| *m.method() == Method::Bye));
}

#[test]
fn retrieve_during_recall_wins_and_stops_the_ringing() {
    let mut net = Net::new();
    net.register("1003", CAROL);
    let _ok = parked(&mut net);
    net.advance(Duration::from_secs(90));
    let inv = net.one(BOB1);
    net.send_msg(BOB1, answer(&inv, 180, "bobr", None, BOB1));
    net.send(CAROL, &carol_invite("701", "r2"));
    assert_eq!(net.one(CAROL).code(), 200);
    let cancel = net.one(BOB1);
    assert_eq!(*cancel.method(), Method::Cancel);
    // Bob answers anyway, too late: his call is taken and hung up, Carol keeps Alice.
    net.send_msg(BOB1, answer(&inv, 200, "bobr", Some(SDP_B), BOB1));
    let to_bob = net.take(BOB1);
    let methods: Vec<_> = to_bob
        .iter()
        .filter(|m| m.is_request())
        .map(|m| m.method().clone())
        .collect();
    assert_eq!(methods, vec![Method::Ack, Method::Bye]);
    assert!(net.take(ALICE).is_empty());
    let ev = net.edge.take_orbit_events();
    assert!(matches!(&ev[..], [Event::Expired(_), Event::Claimed { by, .. }] if by == "1003"));
}

fn subscribe(user: &str, branch: &str, cseq: u32, to_tag: Option<&str>, extra: &str) -> String {
    let to = match to_tag {
        Some(t) => format!("<sip:{user}@orbit.test>;tag={t}"),
        None => format!("<sip:{user}@orbit.test>"),
    };
    format!(
        "SUBSCRIBE sip:{user}@orbit.test SIP/2.0\nVia: SIP/2.0/UDP {CAROL};branch=z9hG4bK{branch};rport\nMax-Forwards: 70\nFrom: <sip:1003@orbit.test>;tag=lamp{user}\nTo: {to}\nCall-ID: lamp-{user}\nCSeq: {cseq} SUBSCRIBE\nContact: <sip:1003@{CAROL}>\nEvent: dialog\nAccept: application/dialog-info+xml\n{extra}Content-Length: 0\n\n"
    )
}

/// The NOTIFYs sent to Carol, answered, as (version, body).
fn lamp_notifies(net: &mut Net) -> Vec<(String, String)> {
    let msgs = net.take(CAROL);
    let mut out = vec![];
    let mut seen = std::collections::HashSet::new();
    // Retransmissions (same CSeq) count once.
    for m in msgs.iter().filter(|m| {
        *m.method() == Method::Notify && seen.insert((m.call_id().to_string(), m.cseq.seq))
    }) {
        let b = body(m);
        let v = b
            .split("dialog-info\" version=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .to_string();
        out.push((
            m.header_other("Subscription-State").unwrap().to_string(),
            format!("v{v} {b}"),
        ));
        net.send_msg(CAROL, ok_to(m));
    }
    out
}

#[test]
fn lamps_follow_the_slot_and_the_lot() {
    let mut net = Net::new();
    net.register("1003", CAROL);
    net.send(CAROL, &subscribe("701", "s1", 1, None, "Expires: 600\n"));
    let msgs = net.take(CAROL);
    let ok = msgs
        .iter()
        .find(|m| m.code() == 200)
        .expect("200 to SUBSCRIBE");
    assert_eq!(ok.header(Name::Expires), Some("600"));
    let tag = ok.to_tag().unwrap().to_string();
    let n = msgs
        .iter()
        .find(|m| *m.method() == Method::Notify)
        .expect("first NOTIFY");
    assert!(body(n).contains("version=\"0\" state=\"full\" entity=\"sip:701@orbit.test\""));
    assert!(!body(n).contains("<dialog "), "free slot: no dialog");
    assert!(n
        .header_other("Subscription-State")
        .unwrap()
        .starts_with("active;expires=60"));
    net.send_msg(CAROL, ok_to(n));
    // The whole lot too.
    net.send(CAROL, &subscribe("700", "s2", 1, None, ""));
    let msgs = net.take(CAROL);
    let lot_tag = msgs
        .iter()
        .find(|m| m.code() == 200)
        .unwrap()
        .to_tag()
        .unwrap()
        .to_string();
    let first = msgs.iter().find(|m| *m.method() == Method::Notify).unwrap();
    assert!(body(first).contains("entity=\"sip:700@orbit.test\""));
    net.send_msg(CAROL, ok_to(first));

    let ok_a = parked(&mut net);
    let n = lamp_notifies(&mut net);
    assert_eq!(n.len(), 2, "slot and lot watchers told");
    for (_, b) in &n {
        assert!(b.starts_with("v1 "), "{b}");
        assert!(b.contains("<state>confirmed</state>"));
        assert!(b.contains("call-id=\"call-c1\""), "{b}");
        assert!(b.contains("remote-tag=\"alice\""));
        assert!(b.contains("<identity display=\"Alice\">sip:1001@orbit.test</identity>"));
    }
    // Refresh: a NOTIFY with the state again. Too short: 423.
    net.send(
        CAROL,
        &subscribe("701", "s3", 2, Some(&tag), "Expires: 30\n"),
    );
    assert_eq!(net.one(CAROL).code(), 423);
    net.send(
        CAROL,
        &subscribe("701", "s4", 3, Some(&tag), "Expires: 120\n"),
    );
    let n = lamp_notifies(&mut net);
    assert_eq!(n.len(), 1);
    assert!(n[0].1.starts_with("v2 ") && n[0].1.contains("<dialog "));
    // Alice hangs up: the lamps go out.
    net.send(ALICE, &alice_in_dialog(&ok_a, "BYE", 2, "bye1", None));
    let n = lamp_notifies(&mut net);
    assert_eq!(n.len(), 2);
    assert!(n.iter().all(|(_, b)| !b.contains("<dialog ")));
    // Un-subscribe the lot: final NOTIFY; the slot subscription expires on its own.
    net.send(
        CAROL,
        &subscribe("700", "s5", 2, Some(&lot_tag), "Expires: 0\n"),
    );
    let n = lamp_notifies(&mut net);
    assert_eq!(n.len(), 1);
    assert!(n[0].0.starts_with("terminated"));
    net.advance(Duration::from_secs(121));
    let n = lamp_notifies(&mut net);
    assert_eq!(n.len(), 1, "{n:?}");
    assert_eq!(n[0].0, "terminated;reason=timeout");
    assert_eq!(net.edge.lamp_subscriptions(), 0);
    // Other packages and unknown resources.
    net.send(
        CAROL,
        &subscribe("701", "s6", 1, None, "")
            .replace("Event: dialog", "Event: presence")
            .replace("lamp-701", "lamp-x"),
    );
    assert_eq!(net.one(CAROL).code(), 489);
    net.send(CAROL, &subscribe("799", "s7", 1, None, ""));
    assert_eq!(net.one(CAROL).code(), 404);
}

/// An INVITE from Bob's phone (BOB1) to `to`, with SDP.
fn bob_invite(to: &str, branch: &str) -> String {
    let body = SDP_B.replace('\n', "\r\n");
    format!(
        "INVITE sip:{to}@orbit.test SIP/2.0\nVia: SIP/2.0/UDP {BOB1};branch=z9hG4bK{branch};rport\nMax-Forwards: 70\nFrom: <sip:1002@orbit.test>;tag=bobc{branch}\nTo: <sip:{to}@orbit.test>\nCall-ID: consult-{branch}\nCSeq: 1 INVITE\nContact: <sip:1002@{BOB1}>\nContent-Type: application/sdp\nContent-Length: {}\n\n{SDP_B}",
        body.len()
    )
}

#[test]
fn attended_park_speaks_the_slot_then_replaces_parks_the_caller_there() {
    let mut net = Net::new();
    let (ok, inv) = answered_call(&mut net);
    net.send(ALICE, &alice_in_dialog(&ok, "ACK", 1, "ack1", None));
    net.take(BOB1);
    net.media.take_feeds();
    // Bob calls 700: answered by the edge, which speaks "parked on 7 0 1".
    net.send(BOB1, &bob_invite("700", "k1"));
    let ok_k = net.one(BOB1);
    assert_eq!(ok_k.code(), 200);
    assert!(
        body(&ok_k).contains(&format!("m=audio {} RTP/AVP 0", net.media.port(1, Leg::A))),
        "{}",
        body(&ok_k)
    );
    let feeds = net.media.take_feeds();
    assert_eq!(feeds.len(), 1);
    assert!(feeds[0].starts_with("play A prompt PCMU "), "{feeds:?}");
    assert!(
        parked_slots(&net).is_empty(),
        "nothing parked before the REFER"
    );
    // A second attended park meanwhile is promised the next slot, not the same one.
    net.send(ALICE, &bob_invite("700", "k2").replace(BOB1, ALICE));
    let ok2 = net.one(ALICE);
    assert_eq!(ok2.code(), 200);
    net.media.take_feeds();
    // Bob completes: REFER on the call with Alice, Replaces naming his call to 700.
    let refer = refer_replacing(&inv, "consult-k1", ok_k.to_tag().unwrap(), "bobck1");
    net.send(BOB1, &refer);
    let to_bob = net.take(BOB1);
    assert_eq!(to_bob[0].code(), 202);
    let notify = to_bob
        .iter()
        .find(|m| *m.method() == Method::Notify)
        .unwrap();
    assert_eq!(body(notify), "SIP/2.0 200 OK\r\n");
    // The consultation call is ended by the edge.
    assert!(to_bob
        .iter()
        .any(|m| *m.method() == Method::Bye && m.call_id() == "consult-k1"));
    assert_eq!(parked_slots(&net), vec![701]);
    let p = net.edge.orbit().in_slot("orbit.test", 701).unwrap();
    assert_eq!(p.call.caller_uri, "sip:1001@orbit.test");
    // The other consultation, left alone, ends after its hold time and frees slot 702.
    net.advance(Duration::from_secs(61));
    assert!(net
        .take(ALICE)
        .iter()
        .any(|m| *m.method() == Method::Bye && m.call_id() == "consult-k2"));
}

fn info_digit(ok: &Message, cseq: u32, digit: char) -> String {
    let body = format!("Signal={digit}\nDuration=160\n");
    alice_in_dialog(ok, "INFO", cseq, &format!("info{cseq}"), Some(&body)).replace(
        "Content-Type: application/sdp",
        "Content-Type: application/dtmf-relay",
    )
}

#[test]
fn one_touch_park_by_dtmf_parks_the_other_party_and_speaks_the_slot() {
    let mut net = Net::new();
    let (ok, _inv) = answered_call(&mut net);
    net.send(ALICE, &alice_in_dialog(&ok, "ACK", 1, "ack1", None));
    net.take(BOB1);
    net.media.take_feeds();
    // Alice presses * 6 8: each INFO answered; Bob is parked, Alice hears the slot.
    for (i, d) in ['*', '6', '8'].into_iter().enumerate() {
        net.send(ALICE, &info_digit(&ok, 2 + i as u32, d));
        let to_bob = net.take(BOB1);
        for m in to_bob.iter().filter(|m| *m.method() == Method::Info) {
            net.send_msg(BOB1, ok_to(m));
        }
        assert!(net.take(ALICE).iter().any(|m| m.code() == 200));
    }
    assert_eq!(parked_slots(&net), vec![701]);
    let feeds = net.media.take_feeds();
    assert_eq!(feeds[0], "play B music PCMU 16000ms");
    assert!(feeds[1].starts_with("play A prompt PCMU "), "{feeds:?}");
    let p = net.edge.orbit().in_slot("orbit.test", 701).unwrap().clone();
    assert_eq!(
        (p.call.parker.as_str(), p.call.caller_uri.as_str()),
        ("1001", "sip:1002@orbit.test")
    );
    // After the prompt, Alice's leg ends; Bob stays parked.
    net.advance(Duration::from_secs(4));
    assert!(net.take(ALICE).iter().any(|m| *m.method() == Method::Bye));
    assert!(net.take(BOB1).iter().all(|m| *m.method() != Method::Bye));
    assert_eq!(parked_slots(&net), vec![701]);
}

#[test]
fn what_park_keeps_for_a_call_goes_with_the_call() {
    let mut net = Net::new();
    let (ok, _inv) = answered_call(&mut net);
    net.send(ALICE, &alice_in_dialog(&ok, "ACK", 1, "ack1", None));
    net.take(BOB1);
    // Half the park code, then Alice hangs up: the digits kept for her call go too.
    for (i, d) in ['*', '6'].into_iter().enumerate() {
        net.send(ALICE, &info_digit(&ok, 2 + i as u32, d));
        for m in net
            .take(BOB1)
            .iter()
            .filter(|m| *m.method() == Method::Info)
        {
            net.send_msg(BOB1, ok_to(m));
        }
    }
    assert_eq!(net.edge.park.digits.len(), 1);
    net.send(ALICE, &alice_in_dialog(&ok, "BYE", 4, "bye1", None));
    let bye = net.one(BOB1);
    net.send_msg(BOB1, ok_to(&bye));
    assert_eq!(net.edge.active_calls(), 0);
    // A call to the park extension that announced a slot, hung up before any REFER.
    net.send(BOB1, &bob_invite("700", "k1"));
    assert_eq!(net.one(BOB1).code(), 200);
    assert_eq!(net.edge.park.consults.len(), 1);
    // Its hold for the REFER runs out (Bob never ACKed: the 200 was resent meanwhile): the
    // edge hangs up, Bob's phone answers the BYE.
    net.advance(crate::park::CONSULT_HOLD);
    let to_bob = net.take(BOB1);
    let bye = to_bob.iter().find(|m| *m.method() == Method::Bye).unwrap();
    net.send_msg(BOB1, ok_to(bye));
    assert_eq!(net.edge.active_calls(), 0);
    let p = &net.edge.park;
    assert!(
        p.digits.is_empty() && p.consults.is_empty() && p.announced.is_empty(),
        "digits {:?}, consults {}, announced {:?}",
        p.digits.keys(),
        p.consults.len(),
        p.announced
    );
}

#[test]
fn one_touch_park_into_a_full_lot_keeps_the_call() {
    let mut cfg = config();
    cfg.tenant.lots[0].slots = "701-701".into();
    let mut net = Net::with(cfg);
    let _first = parked(&mut net);
    let alice2 = invite("1002", "c2", "").replace("tag=alice", "tag=alice2");
    net.send(ALICE, &alice2);
    net.take(ALICE);
    let inv2 = net.one(BOB1);
    net.send_msg(BOB1, answer(&inv2, 200, "bob2", Some(SDP_B), BOB1));
    let ok2 = net.one(ALICE);
    net.send(ALICE, &alice_in_dialog(&ok2, "ACK", 1, "ack2", None));
    net.take(BOB1);
    net.media.take_feeds();
    for (i, d) in ['*', '6', '8'].into_iter().enumerate() {
        net.send(ALICE, &info_digit(&ok2, 2 + i as u32, d));
        for m in net
            .take(BOB1)
            .iter()
            .filter(|m| *m.method() == Method::Info)
        {
            net.send_msg(BOB1, ok_to(m));
        }
        net.take(ALICE);
    }
    let feeds = net.media.take_feeds();
    assert_eq!(feeds.len(), 1, "{feeds:?}");
    assert!(feeds[0].starts_with("play A prompt PCMU "));
    net.advance(Duration::from_secs(4));
    assert_eq!(net.media.take_feeds(), vec!["bridge A"]);
    assert!(net.take(ALICE).iter().all(|m| *m.method() != Method::Bye));
    assert_eq!(net.edge.active_calls(), 2);
}

#[test]
fn attended_park_completed_from_the_consultation_call() {
    let mut net = Net::new();
    let (ok, inv) = answered_call(&mut net);
    net.send(ALICE, &alice_in_dialog(&ok, "ACK", 1, "ack1", None));
    net.take(BOB1);
    net.send(BOB1, &bob_invite("700", "k1"));
    let ok_k = net.one(BOB1);
    // Bob's phone REFERs on the call to 700, naming its dialog with the edge for Alice's call.
    let edge_tag = inv.from_tag().unwrap();
    // RFC 3261 hvalue: the @ of the Call-ID is escaped.
    let replaces = format!(
        "{}%3Bto-tag%3D{edge_tag}%3Bfrom-tag%3Dbob",
        inv.call_id().replace('@', "%40")
    );
    let target = ok_k
        .header(Name::Contact)
        .unwrap()
        .trim_matches(['<', '>'])
        .to_string();
    let refer = format!(
        "REFER {target} SIP/2.0\nVia: SIP/2.0/UDP {BOB1};branch=z9hG4bKrk1;rport\nMax-Forwards: 70\nFrom: <sip:1002@orbit.test>;tag=bobck1\nTo: {}\nCall-ID: consult-k1\nCSeq: 2 REFER\nRefer-To: <sip:1001@orbit.test?Replaces={replaces}>\nContent-Length: 0\n\n",
        ok_k.header(Name::To).unwrap()
    );
    net.send(BOB1, &refer);
    let to_bob = net.take(BOB1);
    assert_eq!(to_bob[0].code(), 202, "{}", to_bob[0].head_text());
    let methods: Vec<_> = to_bob
        .iter()
        .filter(|m| m.is_request())
        .map(|m| (m.method().clone(), m.call_id().to_string()))
        .collect();
    // NOTIFY on the consultation, BYE for Bob's leg of Alice's call, BYE for the consultation.
    assert!(
        methods.contains(&(Method::Notify, "consult-k1".into())),
        "{methods:?}"
    );
    assert!(
        methods.contains(&(Method::Bye, inv.call_id().into())),
        "{methods:?}"
    );
    assert!(
        methods.contains(&(Method::Bye, "consult-k1".into())),
        "{methods:?}"
    );
    assert_eq!(parked_slots(&net), vec![701]);
    assert!(net.take(ALICE).is_empty(), "Alice just hears music");
}

#[test]
fn retrieve_while_the_presser_hears_the_slot_ends_the_presser_once() {
    let mut net = Net::new();
    net.register("1003", CAROL);
    let (ok, _inv) = answered_call(&mut net);
    net.send(ALICE, &alice_in_dialog(&ok, "ACK", 1, "ack1", None));
    net.take(BOB1);
    for (i, d) in ['*', '6', '8'].into_iter().enumerate() {
        net.send(ALICE, &info_digit(&ok, 2 + i as u32, d));
        for m in net
            .take(BOB1)
            .iter()
            .filter(|m| *m.method() == Method::Info)
        {
            net.send_msg(BOB1, ok_to(m));
        }
    }
    net.take(ALICE);
    // Carol takes Bob back while Alice still hears "parked on 701": Alice's leg ends now.
    net.send(CAROL, &carol_invite("701", "r3"));
    assert_eq!(net.one(CAROL).code(), 200);
    let byes: Vec<_> = net
        .take(ALICE)
        .into_iter()
        .filter(|m| *m.method() == Method::Bye)
        .collect();
    assert_eq!(byes.len(), 1);
    net.send_msg(ALICE, ok_to(&byes[0]));
    // The prompt's end finds her gone: no second BYE.
    net.advance(Duration::from_secs(5));
    assert!(net.take(ALICE).iter().all(|m| *m.method() != Method::Bye));
}
