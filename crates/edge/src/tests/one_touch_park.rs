//! One-touch park by DTMF (*68 by INFO): parking the other party, a full lot, a retrieve
//! while the presser hears the slot, and what park keeps for a call (digits typed, slots
//! announced) going with the call.

use orbit_sip::Method;

use super::attended_park::bob_invite;
use super::park::{carol_invite, ok_to, parked, parked_slots, CAROL};
use super::*;

fn info_digit(ok: &Message, cseq: u32, digit: char) -> String {
    let body = format!("Signal={digit}\nDuration=160\n");
    alice_in_dialog(ok, "INFO", cseq, &format!("info{cseq}"), Some(&body)).replace(
        "Content-Type: application/sdp",
        "Content-Type: application/dtmf-relay",
    )
}

/// Alice presses `digits` by INFO in the call `ok` set up (CSeq 2 on), each INFO relayed to
/// Bob answered by him; returns what Alice got after each digit.
fn press_by_info(net: &mut Net, ok: &Message, digits: &str) -> Vec<Vec<Message>> {
    let mut to_alice = Vec::new();
    for (i, d) in digits.chars().enumerate() {
        net.send(ALICE, &info_digit(ok, 2 + i as u32, d));
        for m in net
            .take(BOB1)
            .iter()
            .filter(|m| *m.method() == Method::Info)
        {
            net.send_msg(BOB1, ok_to(m));
        }
        to_alice.push(net.take(ALICE));
    }
    to_alice
}

#[test]
fn one_touch_park_by_dtmf_parks_the_other_party_and_speaks_the_slot() {
    let mut net = Net::new();
    let (ok, _inv) = answered_call(&mut net);
    net.send(ALICE, &alice_in_dialog(&ok, "ACK", 1, "ack1", None));
    net.take(BOB1);
    net.media.take_feeds();
    // Alice presses * 6 8: each INFO answered; Bob is parked, Alice hears the slot.
    for to_alice in press_by_info(&mut net, &ok, "*68") {
        assert!(to_alice.iter().any(|m| m.code() == 200));
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
    press_by_info(&mut net, &ok, "*6");
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
    press_by_info(&mut net, &ok2, "*68");
    let feeds = net.media.take_feeds();
    assert_eq!(feeds.len(), 1, "{feeds:?}");
    assert!(feeds[0].starts_with("play A prompt PCMU "));
    net.advance(Duration::from_secs(4));
    assert_eq!(net.media.take_feeds(), vec!["bridge A"]);
    assert!(net.take(ALICE).iter().all(|m| *m.method() != Method::Bye));
    assert_eq!(net.edge.active_calls(), 2);
}

#[test]
fn retrieve_while_the_presser_hears_the_slot_ends_the_presser_once() {
    let mut net = Net::new();
    net.register("1003", CAROL);
    let (ok, _inv) = answered_call(&mut net);
    net.send(ALICE, &alice_in_dialog(&ok, "ACK", 1, "ack1", None));
    net.take(BOB1);
    press_by_info(&mut net, &ok, "*68");
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
