//! The edge on the registry, in virtual time: the test plays the registry with the real orbit
//! state machine (it orders the edge's proposals, answers them, and feeds the applied entries
//! back as the watch stream would), so that what is checked is the edge's two-phase flows, its
//! replica and its lease. The registry harness is here; handing a call over between sites
//! over the trunk is tested in `trunk.rs`.

use orbit_state::{Command, Event, Orbit};

use super::park::{carol_invite, park_by_bob, CAROL};
use super::*;

pub(super) const PEER: &str = "127.0.0.1:9100";
/// Site C's edge, a second trunk peer.
pub(super) const PEER_C: &str = "127.0.0.1:9200";
pub(super) const SECRET: &str = "virtual-time-trunk-secret";

pub(super) fn registry_net() -> Net {
    registry_net_with(config())
}

/// The registry harness over `cfg`, as site A with site B as its trunk peer.
pub(super) fn registry_net_with(mut cfg: EdgeConfig) -> Net {
    cfg.site = "site-a".into();
    cfg.trunk = Some(TrunkConfig {
        secret: SECRET.into(),
        peers: vec![
            TrunkPeer {
                site: "site-b".into(),
                name: None,
                addr: PEER.parse().unwrap(),
            },
            TrunkPeer {
                site: "site-c".into(),
                name: None,
                addr: PEER_C.parse().unwrap(),
            },
        ],
        max_skew_secs: 30,
    });
    let now = Instant::now();
    let mut local = HashMap::new();
    local.insert(Proto::Udp, EDGE.parse().unwrap());
    let edge = Edge::new(
        Arc::new(cfg),
        local,
        crate::Start::seeded(now, super::WALL_MS, 2),
    )
    .with_registry(now, Duration::from_secs(15));
    Net {
        edge,
        now,
        media: Default::default(),
        inbox: HashMap::new(),
    }
}

/// The registry, played by the test with the real state machine.
#[derive(Default)]
pub(super) struct Registry {
    pub(super) orbit: Orbit,
    pub(super) index: u64,
    /// Events committed, in order.
    pub(super) events: Vec<Event>,
}

impl Registry {
    /// Order, apply and answer every proposal the edge has made, all that are waiting in one
    /// entry (as the leader batches them); feed the entry back as the watch stream, then the
    /// answers.
    pub(super) fn serve(&mut self, net: &mut Net) {
        loop {
            let props = net.edge.take_proposals();
            if props.is_empty() {
                break;
            }
            let at = net.edge.now_ms(net.now);
            let mut done = vec![];
            let mut answers = vec![];
            for p in props {
                let r = self.orbit.apply(at, &p.cmd);
                if let Ok(ev) = &r {
                    self.events.push(ev.clone());
                    done.push(p.cmd.clone());
                }
                answers.push((p.token, r));
            }
            if !done.is_empty() {
                self.index += 1;
                net.edge.on_orbit_watch(net.now, self.index, at, done);
            }
            for (token, r) in answers {
                net.edge
                    .on_orbit_outcome(net.now, token, self.index, r.map_err(Into::into));
            }
            net.collect();
        }
    }

    /// Apply `cmd` at `at` as if another site had proposed it, and feed it to the edge's watch.
    pub(super) fn feed(&mut self, net: &mut Net, at: orbit_state::Millis, cmd: Command) -> Event {
        let ev = self.orbit.apply(at, &cmd).expect("applies");
        self.events.push(ev.clone());
        self.index += 1;
        net.edge.on_orbit_watch(net.now, self.index, at, vec![cmd]);
        net.collect();
        ev
    }

    pub(super) fn parked(&self) -> orbit_state::Parked {
        self.events
            .iter()
            .rev()
            .find_map(|e| match e {
                Event::Parked(p) => Some(p.clone()),
                _ => None,
            })
            .expect("a park")
    }
}

/// The registry harness, served once, with `call` parked in `slot` (the lot's first free one
/// if `None`), committed and fed to this edge's watch; returns the park's event too.
pub(super) fn registry_with_a_park(
    slot: Option<u32>,
    call: orbit_state::CallInfo,
) -> (Net, Registry, Event) {
    let mut net = registry_net();
    let mut reg = Registry::default();
    reg.serve(&mut net);
    let at = net.edge.now_ms(net.now);
    let park = Command::Park {
        lot: reg.orbit.lots().next().unwrap().key(),
        slot,
        call,
    };
    let ev = reg.feed(&mut net, at, park);
    (net, reg, ev)
}

/// The record of a call parked by 2002, held by `edge`.
pub(super) fn call_info(edge: &str, call_id: &str, codec: &str) -> orbit_state::CallInfo {
    orbit_state::CallInfo {
        caller_uri: "sip:5551234@pstn".into(),
        caller_display: None,
        parker: "2002".into(),
        edge: edge.into(),
        call_id: call_id.into(),
        local_tag: format!("{call_id}-l"),
        remote_tag: format!("{call_id}-r"),
        codec: Some(codec.into()),
        trace: None,
    }
}

/// A trunk INVITE from site B claiming `park` in slot 701 for 3001, signed with `secret`,
/// naming no log index (as an edge from before claims named theirs).
pub(super) fn trunk_claim(net: &Net, park: u64, secret: &str, branch: &str) -> String {
    let claim = crate::trunk::Claim::Park(park, 0);
    trunk_invite(net, claim, "701", "Carol", secret, branch)
}

/// A trunk INVITE from site B claiming `park` in slot 701 for 3001, committed at log `at`.
pub(super) fn trunk_claim_at(net: &Net, park: u64, at: u64, branch: &str) -> String {
    let claim = crate::trunk::Claim::Park(park, at);
    trunk_invite(net, claim, "701", "Carol", SECRET, branch)
}

/// A trunk INVITE from site B to `user`, with `claim`, for 3001 (shown as `display`), signed
/// with `secret`.
pub(super) fn trunk_invite(
    net: &Net,
    claim: crate::trunk::Claim,
    user: &str,
    display: &str,
    secret: &str,
    branch: &str,
) -> String {
    trunk_invite_from(("site-b", PEER), net, claim, user, display, secret, branch)
}

/// A trunk INVITE as [`trunk_invite`], from `site` at `peer`.
pub(super) fn trunk_invite_from(
    (site, peer): (&str, &str),
    net: &Net,
    claim: crate::trunk::Claim,
    user: &str,
    display: &str,
    secret: &str,
    branch: &str,
) -> String {
    let ts = net.edge.now_ms(net.now) / 1000;
    let call_id = format!("trunk-{branch}");
    let from = format!("\"{display}\" <sip:3001@orbit.test>;tag=tb");
    let sdp = SDP_B.replace("10.2.2.2", "10.9.9.9");
    let body = sdp.replace('\n', "\r\n");
    let sig = crate::trunk::Signed {
        site,
        to_site: "site-a",
        ts,
        method: "INVITE",
        call_id: &call_id,
        from: &from,
        user,
        claim: Some(claim),
        body: body.as_bytes(),
    }
    .sign(secret);
    format!(
        "INVITE sip:{user}@orbit.test SIP/2.0\nVia: SIP/2.0/UDP {peer};branch=z9hG4bK{branch};rport\nMax-Forwards: 70\nFrom: {from}\nTo: <sip:{user}@orbit.test>\nCall-ID: {call_id}\nCSeq: 1 INVITE\nContact: <sip:3001@{peer}>\nX-Orbit-Trunk: {site};{ts};{sig}\nX-Orbit-Claim: {}{}\nContent-Type: application/sdp\nContent-Length: {}\n\n{sdp}",
        claim.text(),
        match claim.at() {
            0 => String::new(),
            at => format!("\nX-Orbit-Claim-Index: {at}"),
        },
        body.len()
    )
}

/// Alice's call parked by Bob at this edge, committed; Bob's phone's messages taken.
pub(super) fn parked_by_bob() -> (Net, Registry) {
    let mut net = registry_net();
    let mut reg = Registry::default();
    reg.serve(&mut net);
    park_by_bob(&mut net, "700");
    reg.serve(&mut net);
    net.take(BOB1);
    (net, reg)
}

/// What site B orders when its retriever (2001) claims `p` (by id, or whatever is in its slot)
/// and cancels: the claim, then `p`'s call parked again in its slot.
pub(super) fn claim_and_put_back(p: &orbit_state::Parked, park: Option<u64>) -> [Command; 2] {
    let claim = Command::Claim {
        tenant: "orbit.test".into(),
        slot: p.slot,
        park,
        by: "2001".into(),
    };
    let repark = Command::Park {
        lot: p.lot.clone(),
        slot: Some(p.slot),
        call: p.call.clone(),
    };
    [claim, repark]
}

/// Site B's claim of `p` for 3001, committed and fed to this edge's watch.
pub(super) fn claim_by_site_b(net: &mut Net, reg: &mut Registry, p: &orbit_state::Parked) {
    let at = net.edge.now_ms(net.now);
    let claim = Command::Claim {
        tenant: "orbit.test".into(),
        slot: p.slot,
        park: Some(p.id),
        by: "3001".into(),
    };
    reg.feed(net, at, claim);
}

#[test]
fn a_park_continues_when_its_commit_comes_and_claims_need_a_lease_that_holds() {
    let mut net = registry_net();
    let mut reg = Registry::default();
    // At start the edge proposes its lots, its tenant (extensions, pickup groups) and its
    // lease.
    reg.serve(&mut net);
    assert!(matches!(
        reg.events[..],
        [
            Event::LotSet(_),
            Event::PickupGroupsSet { .. },
            Event::LeaseGranted { .. }
        ]
    ));

    // Bob transfers Alice to 700: 202 at once, but the outcome waits for the commit.
    park_by_bob(&mut net, "700");
    let to_bob = net.take(BOB1);
    assert_eq!(to_bob.len(), 1, "only the 202 before the commit");
    assert_eq!(to_bob[0].code(), 202);
    // Waiting: the park, and 1002's location from its registration.
    assert_eq!(net.edge.proposals_in_flight(), 2);
    assert!(
        net.edge.orbit().all_parked().next().is_none(),
        "nothing parked yet"
    );
    reg.serve(&mut net);
    let notify = net
        .take(BOB1)
        .into_iter()
        .find(|m| m.method() == &orbit_sip::Method::Notify)
        .expect("NOTIFY after the commit");
    assert!(String::from_utf8_lossy(&notify.body).contains("200 OK"));
    // The replica has it from the watch stream, with the registry's deadline.
    let p = reg.parked();
    assert_eq!(net.edge.orbit().in_slot("orbit.test", 701), Some(&p));

    // A forged claim is refused.
    net.send(
        PEER,
        &trunk_claim(&net, p.id, "not-the-secret-at-all", "forged"),
    );
    let r = net.one(PEER);
    assert_eq!((r.code(), r.reason()), (403, "Bad Trunk Signature"));

    // The edge's lease renewals go unanswered (the registry is unreachable) past the lease:
    // it can no longer know its calls are its own, and refuses to hand one over.
    net.advance(Duration::from_secs(16));
    assert!(
        net.edge.proposals_in_flight() >= 3,
        "renewals were proposed"
    );
    net.take(PEER); // the 403's retransmissions (nobody ACKs them here)
    net.send(PEER, &trunk_claim(&net, p.id, SECRET, "late"));
    let r = net.one(PEER);
    assert_eq!((r.code(), r.reason()), (410, "Park Lease Lapsed"));

    // The registry is back: the renewals commit, and site B's claim gets the call.
    reg.serve(&mut net);
    net.take(PEER);
    claim_by_site_b(&mut net, &mut reg, &p);
    net.send(PEER, &trunk_claim(&net, p.id, SECRET, "claim"));
    let ok = net.one(PEER);
    assert_eq!(ok.code(), 200, "{}", ok.head_text());
    assert!(ok
        .header_other("P-Asserted-Identity")
        .unwrap()
        .contains("701: Alice"));
}

#[test]
fn a_commit_for_a_call_that_hung_up_meanwhile_is_undone() {
    let mut net = registry_net();
    let mut reg = Registry::default();
    reg.serve(&mut net);
    let (ok, _) = park_by_bob(&mut net, "700");
    net.take(BOB1);
    // Alice hangs up before the park commits.
    net.send(ALICE, &super::alice_in_dialog(&ok, "BYE", 2, "bye1", None));
    reg.serve(&mut net);
    // The park committed, then the edge ended it again: the slot is free everywhere.
    assert!(matches!(
        reg.events[reg.events.len() - 2..],
        [
            Event::Parked(_),
            Event::Ended {
                reason: orbit_state::EndReason::HungUp,
                ..
            }
        ]
    ));
    assert!(reg.orbit.all_parked().next().is_none());
    assert!(net.edge.orbit().all_parked().next().is_none());
}

/// `msg` with one more header.
pub(super) fn with_header(msg: Bytes, name: &str, value: &str) -> Bytes {
    let text = String::from_utf8(msg.to_vec()).unwrap();
    let (first, rest) = text.split_once("\r\n").unwrap();
    Bytes::from(format!("{first}\r\n{name}: {value}\r\n{rest}"))
}

/// Carol's CANCEL of `carol_invite(slot, branch)`.
fn carol_cancel(slot: &str, branch: &str) -> String {
    format!(
        "CANCEL sip:{slot}@orbit.test SIP/2.0\nVia: SIP/2.0/UDP {CAROL};branch=z9hG4bK{branch};rport\nMax-Forwards: 70\nFrom: \"Carol\" <sip:1003@orbit.test>;tag=carol\nTo: <sip:{slot}@orbit.test>\nCall-ID: call-{branch}\nCSeq: 1 CANCEL\nContent-Length: 0\n\n"
    )
}

#[test]
fn a_retriever_who_cancels_while_its_claim_is_ordered_leaves_the_call_in_its_slot() {
    let (mut net, mut reg) = parked_by_bob();
    let first = reg.parked();
    assert_eq!(first.slot, 701);

    // Carol dials 701; the claim goes to the registry, and she cancels before it commits.
    net.send(CAROL, &carol_invite("701", "c1"));
    let trying: Vec<u16> = net.take(CAROL).iter().map(|m| m.code()).collect();
    assert_eq!(trying, vec![100]);
    net.send(CAROL, &carol_cancel("701", "c1"));
    let r = net.one(CAROL);
    assert_eq!((r.code(), r.method()), (200, &orbit_sip::Method::Cancel));
    reg.serve(&mut net);
    // Her INVITE ends with 487, never a 200 she would have to hang up.
    let to_carol = net.take(CAROL);
    let codes: Vec<u16> = to_carol.iter().map(|m| m.code()).collect();
    assert_eq!(codes, vec![487], "{to_carol:?}");
    // The claim won, then the call went back into 701 as a new park, held here as before.
    let n = reg.events.len();
    assert!(
        matches!(&reg.events[n - 2], Event::Claimed { parked, .. } if parked.id == first.id),
        "{:?}",
        &reg.events[n - 2..]
    );
    let again = reg.parked();
    assert!(again.id != first.id);
    assert_eq!((again.slot, &again.call), (701, &first.call));
    assert_eq!(net.edge.orbit().in_slot("orbit.test", 701), Some(&again));
    assert!(net.take(ALICE).is_empty(), "Alice's leg untouched: no BYE");

    // Carol dials 701 again and gets Alice.
    carol_retrieves_alice(&mut net, &mut reg, "c2");
    assert!(reg.orbit.all_parked().next().is_none());
}

/// Site B claimed a call held here, then its retriever cancelled and B parked the call again:
/// this edge, still holding it, takes the new park as its own.
#[test]
fn a_call_put_back_by_another_site_after_a_cancelled_retrieve_is_still_held_here() {
    let (mut net, mut reg) = parked_by_bob();
    let first = reg.parked();
    let at = net.edge.now_ms(net.now);
    for cmd in claim_and_put_back(&first, None) {
        reg.feed(&mut net, at, cmd);
    }
    let again = net.edge.orbit().in_slot("orbit.test", 701).unwrap().clone();
    assert!(again.id != first.id);
    assert!(net.take(ALICE).is_empty(), "Alice's leg untouched");
    carol_retrieves_alice(&mut net, &mut reg, "c3");
}

/// Carol dials 701 and is answered with the parked Alice.
pub(super) fn carol_retrieves_alice(net: &mut Net, reg: &mut Registry, branch: &str) {
    net.send(CAROL, &carol_invite("701", branch));
    reg.serve(net);
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

/// A park recorded as held here that no call here holds (its call hung up between a claim and
/// a re-park) is ended when it expires, instead of keeping its slot for ever.
#[test]
fn an_expired_park_that_no_call_here_holds_is_ended() {
    let (mut net, mut reg, ev) =
        registry_with_a_park(Some(705), call_info("site-a", "gone", "PCMU"));
    let Event::Parked(p) = ev else {
        panic!("parked")
    };
    reg.feed(&mut net, p.deadline, Command::Expire { park: p.id });
    reg.serve(&mut net);
    assert!(matches!(
        reg.events.last(),
        Some(Event::Ended {
            reason: orbit_state::EndReason::Lost,
            ..
        })
    ));
    assert!(reg.orbit.in_slot("orbit.test", 705).is_none());
    assert!(net.edge.orbit().in_slot("orbit.test", 705).is_none());
}

#[test]
fn a_recall_ringing_for_a_park_that_was_put_back_stops() {
    let (mut net, mut reg) = parked_by_bob();
    let first = reg.parked();
    // The deadline: the recall rings Bob, the parker.
    reg.feed(&mut net, first.deadline, Command::Expire { park: first.id });
    reg.serve(&mut net);
    // (Bob's phone still had the transferor's leg, ended first.)
    let recall = net
        .take(BOB1)
        .into_iter()
        .find(|m| m.method() == &orbit_sip::Method::Invite)
        .expect("the recall rings Bob");
    net.send_msg(BOB1, answer(&recall, 180, "bobr", None, BOB1));
    // Meanwhile a retriever at site B claimed it, cancelled, and site B put the call back: a
    // new park with a deadline of its own. The recall for the old one stops.
    let at = first.deadline + 1_000;
    for cmd in claim_and_put_back(&first, None) {
        reg.feed(&mut net, at, cmd);
    }
    reg.serve(&mut net);
    let to_bob = net.take(BOB1);
    assert!(
        to_bob
            .iter()
            .any(|m| m.method() == &orbit_sip::Method::Cancel),
        "the recall's INVITE is cancelled: {:?}",
        to_bob
            .iter()
            .map(|m| m.head_text().lines().next().unwrap_or("").to_string())
            .collect::<Vec<_>>()
    );
    // Bob answering anyway does not take the call: it is parked again, not recalling.
    net.send_msg(BOB1, answer(&recall, 200, "bobr", Some(SDP_B), BOB1));
    reg.serve(&mut net);
    assert!(net.edge.orbit().in_slot("orbit.test", 701).is_some());
    assert!(
        net.take(ALICE).is_empty(),
        "Alice is not bridged to the stale recall"
    );
}

#[test]
fn an_expiry_a_lagging_watch_brings_after_this_edges_own_claim_and_re_park_rings_no_recall() {
    let (mut net, mut reg) = parked_by_bob();
    let first = reg.parked();
    // The leader expires the park; this edge's watch lags and does not show it yet.
    let mut lagging: Vec<(u64, orbit_state::Millis, Vec<Command>)> = vec![];
    let expire = Command::Expire { park: first.id };
    reg.orbit.apply(first.deadline, &expire).unwrap();
    reg.index += 1;
    lagging.push((reg.index, first.deadline, vec![expire]));
    // Carol's retrieve claims it and she cancels: the call goes back to 701 as a new park. The
    // answers to this edge's proposals come; its watch still lags.
    net.send(CAROL, &carol_invite("701", "c1"));
    net.send(CAROL, &carol_cancel("701", "c1"));
    let at = first.deadline + 10;
    loop {
        let props = net.edge.take_proposals();
        if props.is_empty() {
            break;
        }
        for p in props {
            let r = reg.orbit.apply(at, &p.cmd);
            if r.is_ok() {
                reg.index += 1;
                lagging.push((reg.index, at, vec![p.cmd.clone()]));
            }
            net.edge
                .on_orbit_outcome(net.now, p.token, reg.index, r.map_err(Into::into));
            net.collect();
        }
    }
    net.take(BOB1);
    // The watch catches up: the expiry, the claim, the new park, in order.
    for (index, at, cmds) in lagging {
        net.edge.on_orbit_watch(net.now, index, at, cmds);
        net.collect();
    }
    let to_bob = net.take(BOB1);
    assert!(
        to_bob
            .iter()
            .all(|m| m.method() != &orbit_sip::Method::Invite),
        "a recall rang for a park already claimed and parked again: {:?}",
        to_bob
            .iter()
            .map(|m| m.head_text().lines().next().unwrap_or("").to_string())
            .collect::<Vec<_>>()
    );
    let again = net.edge.orbit().in_slot("orbit.test", 701).cloned();
    assert!(again.is_some_and(|p| p.id != first.id), "parked again");
}

/// An admin's lot in the registry whose slots or park extension are extensions of this edge's
/// config takes none of their calls: a call to 1002 rings 1002, a SUBSCRIBE to 1003 watches
/// the extension.
#[test]
fn a_registry_lot_over_this_edges_extensions_takes_none_of_their_calls() {
    let mut net = registry_net();
    let mut reg = Registry::default();
    reg.serve(&mut net);
    let at = net.edge.now_ms(net.now);
    let clash = orbit_state::LotConfig {
        tenant: "orbit.test".into(),
        park_ext: "1003".into(),
        first_slot: 1001,
        last_slot: 1002,
        parking_ms: 60_000,
        recall_ring_ms: 20_000,
        fallback: None,
        choice: Default::default(),
    };
    reg.feed(&mut net, at, Command::SetLot(clash));
    assert!(net.edge.orbit().lot_of("orbit.test", 1002).is_some());
    net.register("1002", BOB1);
    net.send(ALICE, &invite("1002", "x1", ""));
    let inv = net.one(BOB1);
    assert_eq!(
        inv.method(),
        &orbit_sip::Method::Invite,
        "1002 rings, no retrieve"
    );
    net.send(
        CAROL,
        &super::lamps::subscribe("1003", "s1", 1, None, "Expires: 600\n"),
    );
    let notify = net
        .take(CAROL)
        .into_iter()
        .find(|m| *m.method() == orbit_sip::Method::Notify)
        .expect("a NOTIFY");
    assert!(
        body(&notify).contains("entity=\"sip:1003@orbit.test\""),
        "{}",
        body(&notify)
    );
    assert!(!body(&notify).contains("park-"), "{}", body(&notify));
}

/// An operator's hang-up (the admin API's `End` with reason `Operator`) reaches the edge holding
/// the parked call as its watch shows it: the parked caller gets BYE and the call is gone.
#[test]
fn an_operators_hang_up_of_a_park_held_here_sends_the_parked_caller_bye() {
    let (mut net, mut reg) = parked_by_bob();
    let p = reg.parked();
    net.take(ALICE);
    let at = net.edge.now_ms(net.now);
    let end = Command::End {
        park: p.id,
        reason: orbit_state::EndReason::Operator,
    };
    reg.feed(&mut net, at, end);
    let bye = net
        .take(ALICE)
        .into_iter()
        .find(|m| *m.method() == orbit_sip::Method::Bye)
        .expect("BYE to the parked caller");
    net.send_msg(ALICE, answer(&bye, 200, "alice", None, ALICE));
    reg.serve(&mut net);
    assert_eq!(net.edge.active_calls(), 0);
}
