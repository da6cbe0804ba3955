//! The recall of a parked call, in virtual time: ringing the parker at the deadline, the
//! fallback when nobody answers, and a retrieve that wins over the ringing recall.

use orbit_sip::Method;
use orbit_state::{EndReason, Event};

use super::park::{carol_invite, ok_to, parked, parked_slots, CAROL};
use super::*;

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
