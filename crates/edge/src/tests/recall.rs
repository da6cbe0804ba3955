//! The recall of a parked call, in virtual time: ringing the parker at the deadline, the
//! fallback when nobody answers, and a retrieve that wins over the ringing recall.

use orbit_sip::Method;
use orbit_state::{Command, EndReason, Event};

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
    assert!(
        matches!(&ev[..], [Event::Expired(_), Event::Claimed { by, .. }] if by.ends_with("/1003")),
        "the retriever's claim, in this edge's name"
    );
}

/// The parker answers its recall, and the claim's outcome never comes (the leader was lost):
/// Bob's 200 is held unACKed until the watch shows whether the claim committed.
struct Unsure {
    net: Net,
    reg: super::registry::Registry,
    claim: Command,
    recall: Message,
    /// Alice's 200 for the call parked (for her BYE).
    alice_ok: Message,
}

fn recall_answered_with_its_outcome_lost() -> Unsure {
    let mut net = super::registry::registry_net();
    let mut reg = super::registry::Registry::default();
    reg.serve(&mut net);
    let (alice_ok, _) = super::park::park_by_bob(&mut net, "700");
    reg.serve(&mut net);
    net.take(BOB1);
    let (recall, claim) = bob_answers_the_recall(&mut net, &mut reg);
    let unavailable = crate::orbit::OrbitError::Unavailable("timed out".into());
    net.edge
        .on_orbit_outcome(net.now, claim.token, 0, Err(unavailable));
    net.collect();
    // Bob's phone resends its 200 meanwhile: still nothing on the recall's dialog.
    net.advance(Duration::from_millis(500));
    net.send_msg(BOB1, answer(&recall, 200, "bobr", Some(SDP_B), BOB1));
    assert!(
        on_recall(&mut net, &recall).is_empty(),
        "neither ACKed nor hung up yet"
    );
    Unsure {
        net,
        reg,
        claim: claim.cmd,
        recall,
        alice_ok,
    }
}

/// The park's deadline comes, the recall rings Bob and he answers: his recall INVITE, and the
/// claim his answer proposed (not answered yet).
fn bob_answers_the_recall(
    net: &mut Net,
    reg: &mut super::registry::Registry,
) -> (Message, crate::orbit::Proposal) {
    let first = reg.parked();
    reg.feed(net, first.deadline, Command::Expire { park: first.id });
    reg.serve(net);
    let recall = net
        .take(BOB1)
        .into_iter()
        .find(|m| *m.method() == Method::Invite)
        .expect("the recall rings Bob");
    net.send_msg(BOB1, answer(&recall, 180, "bobr", None, BOB1));
    net.send_msg(BOB1, answer(&recall, 200, "bobr", Some(SDP_B), BOB1));
    let claim = net
        .edge
        .take_proposals()
        .into_iter()
        .find(|p| matches!(p.cmd, Command::Claim { .. }))
        .expect("the recall's claim");
    (recall, claim)
}

/// What Bob's phone got on the recall's dialog (not the park's retransmitted requests).
fn on_recall(net: &mut Net, recall: &Message) -> Vec<Method> {
    net.take(BOB1)
        .iter()
        .filter(|m| m.call_id() == recall.call_id())
        .map(|m| m.method().clone())
        .collect()
}

/// The long chaos run's finding: a recall answer whose claim's outcome never came was hung
/// up at once, though the claim had been committed; the call, claimed by nobody who would
/// fetch it, went back to its slot 10 s later and was recalled a second time, 18 s late.
#[test]
fn a_recall_answer_whose_claim_commits_unseen_is_answered_when_the_watch_shows_it() {
    let Unsure {
        mut net,
        mut reg,
        claim,
        recall,
        ..
    } = recall_answered_with_its_outcome_lost();
    net.advance(Duration::from_secs(1));
    let at = net.edge.now_ms(net.now);
    reg.feed(&mut net, at, claim);
    assert_eq!(
        on_recall(&mut net, &recall),
        vec![Method::Ack],
        "answered, not hung up"
    );
    assert!(net.media.take_feeds().contains(&"bridge A".to_string()));
    reg.serve(&mut net);
    assert!(parked_slots(&net).is_empty());
    // Nothing is parked again, and nothing rings again.
    net.advance(Duration::from_secs(200));
    reg.serve(&mut net);
    assert!(net.take(BOB1).iter().all(|m| *m.method() != Method::Invite));
    assert!(parked_slots(&net).is_empty());
    assert!(
        on_recall(&mut net, &recall).is_empty(),
        "Bob still has Alice"
    );
}

/// Not shown within the wait: Bob's phone is hung up; when the claim shows after all,
/// nobody will come for the call, and it goes back to its slot at once.
#[test]
fn a_recall_answer_whose_claim_is_not_shown_in_time_is_hung_up_and_the_call_put_back_when_it_is() {
    let Unsure {
        mut net,
        mut reg,
        claim,
        recall,
        ..
    } = recall_answered_with_its_outcome_lost();
    net.advance(Duration::from_secs(3));
    let mut got = on_recall(&mut net, &recall);
    got.dedup(); // the BYE resent
    assert_eq!(got, vec![Method::Ack, Method::Bye]);
    assert!(net.edge.take_proposals().is_empty());
    let at = net.edge.now_ms(net.now);
    reg.feed(&mut net, at, claim);
    let props = net.edge.take_proposals();
    assert!(
        props.iter().any(|p| matches!(
            p.cmd,
            Command::Park {
                slot: Some(701),
                ..
            }
        )),
        "parked again at once: {:?}",
        props.iter().map(|p| &p.cmd).collect::<Vec<_>>()
    );
}

/// The simulation's finding: the parked caller hung up while the answer waited; Bob's phone
/// was left in a call with nobody (its 200 never ACKed nor ended).
#[test]
fn a_recall_answer_held_unsure_is_hung_up_when_the_parked_caller_hangs_up() {
    let Unsure {
        mut net,
        recall,
        alice_ok,
        ..
    } = recall_answered_with_its_outcome_lost();
    net.send(ALICE, &alice_in_dialog(&alice_ok, "BYE", 2, "bye1", None));
    let mut got = on_recall(&mut net, &recall);
    got.dedup();
    assert_eq!(got, vec![Method::Ack, Method::Bye]);
}

/// The second long chaos run's finding: the watch showed the recall answer's claim committed
/// before the claim's outcome was lost; the claim was taken for one a trunk INVITE would
/// fetch, and the call parked again 10 s later and recalled 17 s late. Bob has the call.
#[test]
fn a_recall_answer_whose_claim_shows_before_its_outcome_is_lost_is_answered() {
    let (mut net, mut reg) = super::registry::parked_by_bob();
    let (recall, claim) = bob_answers_the_recall(&mut net, &mut reg);
    let at = net.edge.now_ms(net.now);
    reg.feed(&mut net, at, claim.cmd.clone());
    let unavailable = crate::orbit::OrbitError::Unavailable("timed out".into());
    net.edge
        .on_orbit_outcome(net.now, claim.token, 0, Err(unavailable));
    net.collect();
    assert_eq!(on_recall(&mut net, &recall), vec![Method::Ack], "answered");
    net.advance(Duration::from_secs(30));
    reg.serve(&mut net);
    assert!(on_recall(&mut net, &recall).is_empty(), "Bob keeps Alice");
    assert!(parked_slots(&net).is_empty(), "not parked again");
}
