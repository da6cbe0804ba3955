//! A park and a claim of it committed in one log entry, heard of in an order the edge does not
//! expect: the claim (from the watch, or from this edge's own retriever's answer) before the
//! answer to the park's proposal. Found by the edge simulation and the skew chaos run.

use orbit_state::{Command, Event};

use super::park::{carol_invite, park_by_bob, CAROL};
use super::registry::{registry_net, trunk_claim_at, Registry, PEER};
use super::*;

/// The simulation's finding: the watch brought this edge's park and site B's claim of it (one
/// entry) before the answer to the park's proposal came. The claim was ignored (no call held
/// that park yet), site B's INVITE refused, and the call left on music in no slot. The claim
/// is kept for the call being parked, and the INVITE that came before the answer waits for it.
#[test]
fn a_park_claimed_before_its_answer_came_is_handed_over_when_it_comes() {
    for invite_first in [true, false] {
        let mut net = registry_net();
        let mut reg = Registry::default();
        reg.serve(&mut net);
        park_by_bob(&mut net, "700");
        net.take(BOB1);
        let at = net.edge.now_ms(net.now);
        let props = net.edge.take_proposals();
        let answers: Vec<_> = props
            .iter()
            .map(|p| (p.token, reg.orbit.apply(at, &p.cmd)))
            .collect();
        let Some(Ok(Event::Parked(p))) = answers
            .iter()
            .map(|(_, r)| r)
            .find(|r| matches!(r, Ok(Event::Parked(_))))
        else {
            panic!("a park proposed")
        };
        let p = p.clone();
        let claim = Command::Claim {
            tenant: "orbit.test".into(),
            slot: p.slot,
            park: None,
            by: "site-b/3001".into(),
        };
        reg.orbit.apply(at, &claim).unwrap();
        reg.index += 1;
        let cmds: Vec<Command> = props.iter().map(|x| x.cmd.clone()).collect();
        net.edge
            .on_orbit_watch(net.now, reg.index, at, [cmds, vec![claim]].concat());
        net.collect();
        if invite_first {
            net.send(PEER, &trunk_claim_at(&net, p.id, reg.index, "early"));
            let codes: Vec<u16> = net.take(PEER).iter().map(|m| m.code()).collect();
            assert_eq!(codes, vec![100], "held until this edge's park is answered");
        }
        for (token, r) in answers {
            net.edge
                .on_orbit_outcome(net.now, token, reg.index, r.map_err(Into::into));
        }
        net.collect();
        if !invite_first {
            net.send(PEER, &trunk_claim_at(&net, p.id, reg.index, "late"));
        }
        let codes: Vec<u16> = net.take(PEER).iter().map(|m| m.code()).collect();
        assert!(
            codes.contains(&200),
            "invite first: {invite_first}: {codes:?}"
        );
    }
}

/// The skew chaos run's finding: a retriever here claimed a slot in the same entry as this
/// edge's park into it, and the claim's answer came before the park's. The call was not known
/// as parked yet: 404 to the retriever, the call claimed and left on music until the fetch
/// wait put it back 10 s later (recalled that late). The retrieve now waits for the park's
/// answer and takes the call then.
#[test]
fn a_retrieve_here_that_claims_a_park_before_its_answer_came_gets_the_call_when_it_does() {
    let mut net = registry_net();
    let mut reg = Registry::default();
    reg.serve(&mut net);
    park_by_bob(&mut net, "700");
    net.take(BOB1);
    let at = net.edge.now_ms(net.now);
    let parks: Vec<_> = net
        .edge
        .take_proposals()
        .into_iter()
        .map(|p| {
            let r = reg.orbit.apply(at, &p.cmd);
            (p.token, r)
        })
        .collect();
    net.send(CAROL, &carol_invite("701", "early"));
    let claim = net
        .edge
        .take_proposals()
        .into_iter()
        .find(|p| matches!(p.cmd, Command::Claim { .. }))
        .expect("a claim");
    let won = reg.orbit.apply(at, &claim.cmd);
    assert!(matches!(won, Ok(Event::Claimed { .. })), "{won:?}");
    reg.index += 1;
    net.edge
        .on_orbit_outcome(net.now, claim.token, reg.index, won.map_err(Into::into));
    net.collect();
    let codes: Vec<u16> = net.take(CAROL).iter().map(|m| m.code()).collect();
    assert!(
        codes.iter().all(|c| *c < 200),
        "no final answer yet: {codes:?}"
    );
    for (token, r) in parks {
        net.edge
            .on_orbit_outcome(net.now, token, reg.index, r.map_err(Into::into));
    }
    net.collect();
    let ok = net
        .take(CAROL)
        .into_iter()
        .find(|m| m.code() == 200)
        .expect("200 for the retrieve");
    assert!(ok
        .header_other("P-Asserted-Identity")
        .unwrap()
        .contains("701: Alice"));
}
