//! Attended park: the parker calls the park extension, hears the slot, then completes with a
//! REFER with Replaces (from the call with the caller or from the consultation call).

use orbit_sip::Method;

use super::park::{parked_slots, refer_accepted, refer_replacing};
use super::*;

/// An INVITE from Bob's phone (BOB1) to `to`, with SDP.
pub(super) fn bob_invite(to: &str, branch: &str) -> String {
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
    let (to_bob, notify) = refer_accepted(&mut net, &refer);
    assert_eq!(body(&notify), "SIP/2.0 200 OK\r\n");
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
