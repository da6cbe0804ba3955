//! Call park by REFER, in virtual time: blind park onto music, retrieve by dialling the
//! slot, refused parks that keep the call, and a parked caller hanging up or going silent.
//! Also the park helpers the other park files (and `registry`, `trunk`, `security`) share.

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

/// Bob sends `refer`; asserts the edge's first answer is the 202 and returns all Bob then got,
/// with the NOTIFY among it.
pub(super) fn refer_accepted(net: &mut Net, refer: &str) -> (Vec<Message>, Message) {
    net.send(BOB1, refer);
    let to_bob = net.take(BOB1);
    assert_eq!(to_bob[0].code(), 202);
    let notify = to_bob
        .iter()
        .find(|m| *m.method() == Method::Notify)
        .unwrap()
        .clone();
    (to_bob, notify)
}

pub(super) fn parked_slots(net: &Net) -> Vec<u32> {
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
    assert!(
        matches!(&events[..], [Event::Parked(_), Event::Claimed { by, .. }] if by.ends_with("/1003"))
    );
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
    let (_, notify) = refer_accepted(&mut net, &refer);
    assert_eq!(body(&notify), "SIP/2.0 503 Parking Lot Full\r\n");
    net.send_msg(BOB1, ok_to(&notify));
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
    let (_, n) = refer_accepted(&mut net, &refer(4, "701"));
    assert_eq!(body(&n), "SIP/2.0 486 Slot Taken\r\n");
    net.send_msg(BOB1, ok_to(&n));
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

/// Timers due together fire in one go (a loaded driver gets to them late): a parked call that
/// one of them ended is gone before the next, its park deadline, is looked at. The park ends
/// as the call did, and is neither expired nor recalled.
#[test]
fn a_parked_call_ended_by_a_timer_is_not_expired_by_the_deadline_due_with_it() {
    let mut net = Net::new();
    park_by_bob(&mut net, "700");
    net.take(BOB1);
    net.edge.take_orbit_events();
    // Silent for longer than a park can last: BYE to Alice, who never answers it.
    net.media.set_idle(Duration::from_secs(171));
    net.advance(Duration::from_secs(2));
    net.media.set_idle(Duration::ZERO);
    assert!(net.take(ALICE).iter().all(|m| *m.method() == Method::Bye));
    assert_eq!(
        parked_slots(&net),
        vec![701],
        "parked until the BYE is done"
    );
    // The BYE times out (Timer F, 32 s) and the 90 s deadline passes, handled in one batch.
    let later = net.now + Duration::from_secs(100);
    net.edge.on_timeout(later);
    net.now = later;
    net.collect();
    let ev = net.edge.take_orbit_events();
    assert!(
        !ev.iter().any(|e| matches!(e, Event::Expired(_))),
        "expired after its call ended: {ev:?}"
    );
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
    assert!(
        net.take(BOB1).iter().all(|m| *m.method() != Method::Invite),
        "no recall"
    );
}

/// Park Alice, let Bob's leg go, and return Alice's 200.
pub(super) fn parked(net: &mut Net) -> Message {
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
