//! What an operator changes through the registry reaches the edge in virtual time: a parked
//! call sent to an extension rings it (and, unanswered, rings the parker); pickup groups set
//! or deleted there decide who may pick up here.

use orbit_sip::Method;
use orbit_state::{Command, PickupGroup};

use super::lamps::{lamp_notifies, subscribe};
use super::park::CAROL;
use super::registry::{parked_by_bob, registry_net, Registry};
use super::*;

const DESK: &str = "127.0.0.1:7301";

fn invites(net: &mut Net, to: &str) -> Vec<Message> {
    net.take(to)
        .into_iter()
        .filter(|m| m.method() == &Method::Invite)
        .collect()
}

#[test]
fn a_parked_call_an_operator_sends_rings_that_desk_then_unanswered_the_parker() {
    let (mut net, mut reg) = parked_by_bob();
    net.register("1003", DESK);
    reg.serve(&mut net);
    let p = reg.parked();
    let at = net.edge.now_ms(net.now);
    let send = Command::Send {
        park: p.id,
        to: "1003".into(),
    };
    reg.feed(&mut net, at, send);
    let ring = invites(&mut net, DESK);
    assert_eq!(ring.len(), 1, "1003 is rung with the parked call");
    assert!(
        ring[0].head_text().contains("Recall 701:"),
        "{}",
        ring[0].head_text()
    );
    assert!(invites(&mut net, BOB1).is_empty(), "not the parker yet");
    // 1003 rings out its recall time: the parker is rung next, and the registry told so.
    net.advance(Duration::from_secs(21));
    reg.serve(&mut net);
    let to_bob = invites(&mut net, BOB1);
    assert!(!to_bob.is_empty(), "then the parker");
    let branches: std::collections::BTreeSet<_> = to_bob
        .iter()
        .map(|m| m.header(Name::Via).map(str::to_string))
        .collect();
    assert_eq!(branches.len(), 1, "one INVITE (and its retransmissions)");
    let now = reg.orbit.parked(p.id).expect("still parked");
    assert!(matches!(
        now.phase,
        orbit_state::Phase::Recalling {
            stage: orbit_state::RecallStage::Parker,
            ..
        }
    ));
    assert_eq!(now.sent_to, None);
}

#[test]
fn a_parked_call_sent_to_a_desk_that_answers_is_bridged_and_its_slot_freed() {
    let (mut net, mut reg) = parked_by_bob();
    net.register("1003", DESK);
    reg.serve(&mut net);
    let p = reg.parked();
    net.take(ALICE);
    let at = net.edge.now_ms(net.now);
    let send = Command::Send {
        park: p.id,
        to: "1003".into(),
    };
    reg.feed(&mut net, at, send);
    let ring = invites(&mut net, DESK).pop().expect("1003 rung");
    net.send_msg(DESK, answer(&ring, 200, "desk", Some(SDP_B), DESK));
    reg.serve(&mut net);
    assert!(
        net.edge.orbit().in_slot("orbit.test", p.slot).is_none(),
        "claimed by the desk that answered"
    );
    assert!(matches!(
        reg.events.last(),
        Some(orbit_state::Event::Claimed { by, .. }) if by == "1003"
    ));
}

#[test]
fn pickup_groups_an_operator_sets_in_the_registry_decide_who_may_pick_up_here() {
    let mut net = registry_net();
    let mut reg = Registry::default();
    reg.serve(&mut net);
    // The config has no groups: 1003 may not take 1002's calls.
    assert!(!net.edge.pickup_rules.may_take("1003", "1002"));
    let at = net.edge.now_ms(net.now);
    let group = PickupGroup {
        tenant: "orbit.test".into(),
        name: "desks".into(),
        members: ["1002", "1003"].map(String::from).into(),
    };
    reg.feed(&mut net, at, Command::SetPickupGroup(group));
    assert!(net.edge.pickup_rules.may_take("1003", "1002"));
    assert!(net.edge.pickup_rules.pickable("1002"));
    // 1003 watches 1002's lamp now that the group lets it.
    net.send(
        CAROL,
        &subscribe("1002", "lamp1", 1, None, "Expires: 600\n"),
    );
    let states: Vec<String> = lamp_notifies(&mut net).into_iter().map(|n| n.0).collect();
    assert!(
        !states.is_empty() && states.iter().all(|s| s.starts_with("active")),
        "{states:?}"
    );
    // The edge restarting seeds its config again: the operator's group stays.
    let seed = net.edge.cfg.tenant_seed();
    reg.feed(&mut net, at, seed);
    assert!(net.edge.pickup_rules.may_take("1003", "1002"));
    let delete = Command::DeletePickupGroup {
        tenant: "orbit.test".into(),
        name: "desks".into(),
    };
    reg.feed(&mut net, at, delete);
    assert!(!net.edge.pickup_rules.may_take("1003", "1002"));
    assert!(!net.edge.pickup_rules.pickable("1002"));
    // The lamp it may no longer watch ends, saying why.
    let states: Vec<String> = lamp_notifies(&mut net).into_iter().map(|n| n.0).collect();
    assert_eq!(states, ["terminated;reason=rejected"]);
}
