//! Handing a parked call over between sites, in virtual time with the registry played as in
//! `registry.rs`: fetching a call held elsewhere over the signed trunk, trunk claims refused
//! (from elsewhere, tampered, replayed, not yet committed) or waiting for the watch, claims
//! whose fetch never comes or is cancelled, and identities asserted from a trunk's address.

use orbit_state::{Command, Event};

use super::park::{carol_invite, CAROL};
use super::registry::{
    call_info, carol_retrieves_alice, claim_and_put_back, claim_by_site_b, parked_by_bob,
    registry_net, registry_with_a_park, trunk_claim, trunk_claim_at, with_header, Registry, PEER,
    SECRET,
};
use super::*;

#[test]
fn a_call_held_at_another_site_is_claimed_then_fetched_over_the_trunk_and_a_codec_it_cannot_take_is_refused_first(
) {
    // Site B parks a call in PCMA; this edge learns of it from the watch stream.
    let (mut net, mut reg, _) = registry_with_a_park(None, call_info("site-b", "b-call", "PCMA"));
    assert!(net.edge.orbit().in_slot("orbit.test", 701).is_some());

    // Carol offers PCMU only: refused before anything is claimed.
    net.send(CAROL, &carol_invite("701", "pcmu"));
    let r = net.one(CAROL);
    assert_eq!((r.code(), r.reason()), (488, "Parked Call Uses PCMA"));
    assert!(net.edge.take_proposals().is_empty(), "no claim proposed");

    // Offering PCMA too: the claim is ordered, won, and the call fetched from site B over the
    // trunk, signed and naming the park.
    let inv = carol_invite("701", "pcma")
        .replace("RTP/AVP 0\r\n", "RTP/AVP 0 8\r\na=rtpmap:8 PCMA/8000\r\n")
        .replace("RTP/AVP 0\n", "RTP/AVP 0 8\na=rtpmap:8 PCMA/8000\n");
    let inv = fix_length(&inv);
    net.send(CAROL, &inv);
    reg.serve(&mut net);
    assert!(matches!(reg.events.last(), Some(Event::Claimed { .. })));
    let trunk = net.one(PEER);
    assert_eq!(trunk.method(), &orbit_sip::Method::Invite);
    let p = reg.events.iter().rev().find_map(|e| match e {
        Event::Claimed { parked, .. } => Some(parked.clone()),
        _ => None,
    });
    assert_eq!(
        trunk.header_other("X-Orbit-Claim").map(str::trim),
        Some(p.unwrap().id.to_string().as_str())
    );
    assert_eq!(
        trunk.header_other("X-Orbit-Claim-Index").map(str::trim),
        Some(reg.index.to_string().as_str()),
        "the log index the claim was committed at"
    );
    assert!(trunk
        .header_other("X-Orbit-Trunk")
        .unwrap()
        .trim()
        .starts_with("site-a;"));
    assert!(trunk
        .uri()
        .unwrap()
        .to_string()
        .starts_with("sip:701@127.0.0.1:9100"));
    // Site B answers with the parked caller's identity: Carol's phone is told whom it got.
    let pai = "\"701: Bob\" <sip:5551234@pstn>";
    let ok = with_header(
        answer(&trunk, 200, "b", Some(SDP_B), PEER),
        "P-Asserted-Identity",
        pai,
    );
    net.send_msg(PEER, ok);
    let ok = net
        .take(CAROL)
        .into_iter()
        .find(|m| m.code() == 200)
        .unwrap();
    assert_eq!(
        ok.header_other("P-Asserted-Identity").map(str::trim),
        Some(pai)
    );
}

/// The same message with its Content-Length set to its body's.
fn fix_length(msg: &str) -> String {
    let (head, body) = msg.split_once("\n\n").unwrap();
    let len = body.replace('\n', "\r\n").len();
    let head: Vec<String> = head
        .lines()
        .map(|l| {
            if l.starts_with("Content-Length:") {
                format!("Content-Length: {len}")
            } else {
                l.to_string()
            }
        })
        .collect();
    format!("{}\n\n{body}", head.join("\n"))
}

#[test]
fn trunk_claims_are_refused_from_elsewhere_tampered_replayed_or_before_the_registry_shows_them() {
    let (mut net, mut reg) = parked_by_bob();
    let p = reg.parked();

    // A good signature, sent from another host than site B's edge: refused, and not told why
    // (a stranger would learn the sites' names and which check failed).
    let elsewhere = "127.0.0.5:9100";
    net.send(elsewhere, &trunk_claim(&net, p.id, SECRET, "else"));
    let r = net.one(elsewhere);
    assert_eq!((r.code(), r.reason()), (403, "Forbidden"));
    // The From changed in transit: the signature covers it.
    let tampered = trunk_claim(&net, p.id, SECRET, "tamper").replace("sip:3001@", "sip:3002@");
    net.send(PEER, &tampered);
    let r = net.one(PEER);
    assert_eq!((r.code(), r.reason()), (403, "Bad Trunk Signature"));

    // Site B claims before the registry has shown this edge the claim: held, then refused.
    net.send(PEER, &trunk_claim(&net, p.id, SECRET, "early"));
    let codes: Vec<u16> = net.take(PEER).iter().map(|m| m.code()).collect();
    assert_eq!(codes, vec![100], "held, not answered");
    net.advance(Duration::from_millis(2100));
    let r = net
        .take(PEER)
        .into_iter()
        .find(|m| m.code() >= 200 && m.call_id() == "trunk-early")
        .expect("a final answer");
    assert_eq!((r.code(), r.reason()), (404, "Claim Not Committed"));
    assert_eq!(
        net.edge.orbit().in_slot("orbit.test", 701),
        Some(&p),
        "still parked"
    );

    // The claim arrives before the watch brings it: it waits, and the commit hands it over.
    let claim = trunk_claim(&net, p.id, SECRET, "claim");
    net.send(PEER, &claim);
    let codes: Vec<u16> = net.take(PEER).iter().map(|m| m.code()).collect();
    assert_eq!(codes, vec![100], "held, not answered");
    claim_by_site_b(&mut net, &mut reg, &p);
    let ok = net.one(PEER);
    assert_eq!(ok.code(), 200, "{}", ok.head_text());

    // The same signed request again as a new transaction (only the Via branch changed, which
    // the signature does not cover): a replay.
    net.send(PEER, &claim.replace("z9hG4bKclaim", "z9hG4bKagain"));
    let r = net.one(PEER);
    assert_eq!((r.code(), r.reason()), (403, "Replayed Trunk Request"));
}

/// The chaos tests' other finding: this site was cut off while Carol retrieved a call held at
/// site B. Her claim's outcome never came (503 to her), yet it was committed once the cut
/// healed. Nobody will fetch the call: as soon as the watch shows the claim, this edge gives
/// it back to site B (which alone may park it again), rather than leaving it to B's 10 s
/// wait for a trunk INVITE that never comes.
#[test]
fn a_claim_given_up_as_unavailable_and_committed_after_all_is_given_back_at_once() {
    let (mut net, mut reg, _) = registry_with_a_park(None, call_info("site-b", "b-call", "PCMU"));
    let p = reg.parked();
    net.send(CAROL, &carol_invite("701", "lost"));
    let props = net.edge.take_proposals();
    let claim = props
        .iter()
        .find(|x| matches!(x.cmd, Command::Claim { .. }))
        .expect("a claim");
    let Command::Claim { by, .. } = &claim.cmd else {
        unreachable!()
    };
    let unavailable = crate::orbit::OrbitError::Unavailable("timed out".into());
    net.edge
        .on_orbit_outcome(net.now, claim.token, 0, Err(unavailable));
    net.collect();
    let r = net.one(CAROL);
    assert_eq!(r.code(), 503);
    // The claim commits after all; this edge's watch brings it.
    net.advance(Duration::from_secs(2));
    let at = net.edge.now_ms(net.now);
    reg.feed(&mut net, at, claim.cmd.clone());
    let m = net.one(PEER);
    assert_eq!(*m.method(), orbit_sip::Method::Message);
    assert_eq!(m.content_type(), Some("application/x-orbit-give-back"));
    assert_eq!(
        m.header_other("X-Orbit-Claim").map(str::trim),
        Some(p.id.to_string().as_str())
    );
    assert!(m.header_other("X-Orbit-Trunk").is_some(), "signed");
    let (site, retriever) = by.rsplit_once('/').expect("edge/retriever");
    assert_eq!(site, "site-a", "the claim is in this edge's name");
    assert!(
        m.from().unwrap().uri.contains(&format!("sip:{retriever}@")),
        "from the retriever the claim names"
    );
    assert!(
        net.edge.take_proposals().is_empty(),
        "site B's call is not this edge's to park"
    );
}

/// A give-back MESSAGE from site B for a call held here that B's retriever claimed, signed
/// and from the retriever the claim names.
fn give_back_message(net: &Net, park: u64, user: &str, branch: &str) -> String {
    let ts = net.edge.now_ms(net.now) / 1000;
    let call_id = format!("give-back-{branch}");
    let from = format!("<sip:{user}@orbit.test>;tag=gb");
    let body = park.to_string();
    let sig = crate::trunk::Signed {
        site: "site-b",
        to_site: "site-a",
        ts,
        method: "MESSAGE",
        call_id: &call_id,
        from: &from,
        user: "701",
        claim: Some(crate::trunk::Claim::Park(park, 0)),
        body: body.as_bytes(),
    }
    .sign(SECRET);
    format!(
        "MESSAGE sip:701@127.0.0.1:5060 SIP/2.0\nVia: SIP/2.0/UDP {PEER};branch=z9hG4bK{branch}\nMax-Forwards: 70\nFrom: {from}\nTo: <sip:701@127.0.0.1:5060>\nCall-ID: {call_id}\nCSeq: 1 MESSAGE\nX-Orbit-Trunk: site-b;{ts};{sig}\nX-Orbit-Claim: {park}\nContent-Type: application/x-orbit-give-back\nContent-Length: {}\n\n{body}",
        body.len()
    )
}

/// A claim names its edge and user; one from an edge of before that, its user only.
#[test]
fn a_claim_is_the_named_sites_only() {
    use crate::park::claimed_by;
    assert!(claimed_by("site-b/3001", "site-b", "3001"));
    assert!(!claimed_by("site-b/3001", "site-c", "3001"), "another site");
    assert!(!claimed_by("site-b/3001", "site-b", "3002"), "another user");
    assert!(
        claimed_by("site-a/e2/3001", "site-a/e2", "3001"),
        "an edge named in its site"
    );
    assert!(
        claimed_by("3001", "site-c", "3001"),
        "a claim from an edge of before"
    );
}

#[test]
fn a_call_given_back_by_its_claimant_goes_back_into_its_slot_at_once_and_only_then() {
    let (mut net, mut reg) = parked_by_bob();
    let p = reg.parked();
    // Site B claimed it for its 3001; someone else at B cannot give it back.
    let at = net.edge.now_ms(net.now);
    let claim = Command::Claim {
        tenant: "orbit.test".into(),
        slot: p.slot,
        park: Some(p.id),
        by: "site-b/3001".into(),
    };
    reg.feed(&mut net, at, claim);
    net.send(PEER, &give_back_message(&net, p.id, "3002", "other"));
    let r = net.one(PEER);
    assert_eq!((r.code(), r.reason()), (403, "Not The Claimant"));
    assert!(net.edge.take_proposals().is_empty());
    // The claimant can: parked again in 701 now, not after the fetch wait.
    net.send(PEER, &give_back_message(&net, p.id, "3001", "right"));
    assert_eq!(net.one(PEER).code(), 200);
    reg.serve(&mut net);
    let again = net
        .edge
        .orbit()
        .in_slot("orbit.test", 701)
        .expect("parked again");
    assert_ne!(again.id, p.id);
    assert_eq!(again.call.call_id, p.call.call_id);
    assert!(net.take(ALICE).is_empty(), "Alice still on the music");
    // A park not held here: refused.
    net.send(
        PEER,
        &give_back_message(&net, p.id + 100, "3001", "nowhere"),
    );
    let r = net.one(PEER);
    assert_eq!((r.code(), r.reason()), (404, "Park Not Held Here"));
}

/// The claimant's watch can be ahead of the holder's: a give-back that comes before the claim
/// shows here is kept, and the call is put back as the claim shows, if it is that claimant's.
#[test]
fn a_give_back_before_the_claim_shows_here_puts_the_call_back_when_it_does() {
    let (mut net, mut reg) = parked_by_bob();
    let p = reg.parked();
    net.send(PEER, &give_back_message(&net, p.id, "3001", "early"));
    assert_eq!(net.one(PEER).code(), 202);
    assert!(
        net.edge.take_proposals().is_empty(),
        "nothing to put back yet"
    );
    claim_by_site_b(&mut net, &mut reg, &p);
    reg.serve(&mut net);
    let again = net
        .edge
        .orbit()
        .in_slot("orbit.test", 701)
        .expect("parked again");
    assert_ne!(again.id, p.id);
    assert_eq!(again.call.call_id, p.call.call_id);

    // Kept for another retriever than the one the claim names: the call waits for its
    // claimant as before.
    let (mut net, mut reg) = parked_by_bob();
    let p = reg.parked();
    net.send(PEER, &give_back_message(&net, p.id, "3002", "early"));
    assert_eq!(net.one(PEER).code(), 202);
    claim_by_site_b(&mut net, &mut reg, &p);
    reg.serve(&mut net);
    assert!(
        net.edge.orbit().in_slot("orbit.test", 701).is_none(),
        "claimed, not put back"
    );
    net.send(PEER, &trunk_claim(&net, p.id, SECRET, "fetch"));
    assert_eq!(net.one(PEER).code(), 200, "3001 fetches it");
}

/// The chaos tests' finding: site B won the claim while this site was cut off from the
/// registry, and B's INVITE came before this edge's stalled watch got to the claim. The claim
/// names the log index it was committed at; the edge waits for its replica to get there,
/// however long past the usual 2 s, and hands the call over when it does.
#[test]
fn a_claim_the_replica_is_short_of_waits_for_the_watch_to_reach_it() {
    let (mut net, mut reg) = parked_by_bob();
    let p = reg.parked();
    // Committed a few entries ahead of what this edge's watch has brought.
    let at = reg.index + 3;
    net.send(PEER, &trunk_claim_at(&net, p.id, at, "stalled"));
    let codes: Vec<u16> = net.take(PEER).iter().map(|m| m.code()).collect();
    assert_eq!(codes, vec![100], "held, not answered");
    // Eight seconds of a stalled watch (the lease renewed all along): still waiting.
    for _ in 0..8 {
        net.advance(Duration::from_secs(1));
        reg.serve(&mut net);
        assert!(
            net.take(PEER).iter().all(|m| m.code() < 200),
            "no final answer while the replica is at {} of {at}",
            net.edge.port.watch_index
        );
    }
    // The watch brings the claim: B gets the call.
    while reg.index + 1 < at {
        let filler = Command::Claim {
            tenant: "orbit.test".into(),
            slot: 709,
            park: None,
            by: "2001".into(),
        };
        reg.index += 1;
        net.edge
            .on_orbit_watch(net.now, reg.index, net.edge.now_ms(net.now), vec![filler]);
    }
    claim_by_site_b(&mut net, &mut reg, &p);
    assert_eq!(reg.index, at);
    let ok = net.one(PEER);
    assert_eq!(ok.code(), 200, "{}", ok.head_text());
}

/// A claim whose entry the replica already has, without the claim in it, is refused after the
/// usual wait; one the replica never gets to, after a lease's length (the registry has given
/// this edge's calls up by then).
#[test]
fn a_claim_the_replica_passed_or_never_reaches_is_refused() {
    let (mut net, mut reg) = parked_by_bob();
    let p = reg.parked();
    net.send(PEER, &trunk_claim_at(&net, p.id, reg.index, "passed"));
    assert!(net.take(PEER).iter().all(|m| m.code() == 100));
    net.advance(Duration::from_millis(2100));
    let r = net.one(PEER);
    assert_eq!((r.code(), r.reason()), (404, "Claim Not Committed"));

    net.send(PEER, &trunk_claim_at(&net, p.id, reg.index + 1000, "never"));
    assert!(net.take(PEER).iter().all(|m| m.code() == 100));
    let mut waited = Duration::ZERO;
    let r = loop {
        net.advance(Duration::from_secs(1));
        reg.serve(&mut net);
        waited += Duration::from_secs(1);
        // (The first claim's 404 is sent again until ACKed: only this one's answer counts.)
        let answer = |m: &Message| m.code() >= 200 && m.call_id() == "trunk-never";
        if let Some(r) = net.take(PEER).into_iter().find(answer) {
            break r;
        }
        assert!(waited < Duration::from_secs(20), "never answered");
    };
    assert_eq!((r.code(), r.reason()), (404, "Claim Not Committed"));
    assert!(
        waited >= Duration::from_secs(15),
        "answered after {waited:?}"
    );
    assert_eq!(net.edge.orbit().in_slot("orbit.test", 701), Some(&p));
}

#[test]
fn a_call_claimed_by_a_site_that_never_comes_for_it_goes_back_to_its_slot() {
    let (mut net, mut reg) = parked_by_bob();
    let first = reg.parked();
    // Site B wins the claim, and its trunk INVITE never arrives (its edge went away).
    claim_by_site_b(&mut net, &mut reg, &first);
    assert!(net.edge.orbit().in_slot("orbit.test", 701).is_none());
    net.advance(crate::park::FETCH_WAIT - Duration::from_millis(500));
    reg.serve(&mut net);
    assert!(
        net.edge.orbit().in_slot("orbit.test", 701).is_none(),
        "not yet"
    );
    net.advance(Duration::from_secs(1));
    reg.serve(&mut net);
    // Back in 701 as a new park held here, Alice still on the music (nothing sent to her).
    let again = net.edge.orbit().in_slot("orbit.test", 701).unwrap().clone();
    assert!(again.id != first.id);
    assert_eq!(again.call.call_id, first.call.call_id);
    assert!(net.take(ALICE).is_empty(), "Alice's leg untouched");
    // The late trunk INVITE for the old claim finds nothing; Carol here can retrieve her.
    net.send(PEER, &trunk_claim(&net, first.id, SECRET, "late1"));
    assert_eq!(net.one(PEER).code(), 404);
    carol_retrieves_alice(&mut net, &mut reg, "c4");
}

/// The watch fell behind and the registry sent its whole state instead: a call claimed by
/// another site and waiting to be fetched is not in it (a claim takes the park out), yet it is
/// not lost. It waits for its claimant as before, and is handed over when the INVITE comes.
#[test]
fn a_resync_while_a_claimed_call_waits_for_its_claimant_keeps_the_call() {
    let (mut net, mut reg) = parked_by_bob();
    let first = reg.parked();
    claim_by_site_b(&mut net, &mut reg, &first);
    net.edge
        .on_orbit_resync(net.now, reg.index, reg.orbit.clone());
    net.collect();
    assert!(net.take(ALICE).is_empty(), "Alice's leg untouched");
    net.send(PEER, &trunk_claim(&net, first.id, SECRET, "after-resync"));
    let ok = net.one(PEER);
    assert_eq!(ok.code(), 200, "{}", ok.head_text());
}

#[test]
fn a_trunk_claim_cancelled_while_it_waits_for_the_replica_leaves_the_call_here() {
    let (mut net, mut reg) = parked_by_bob();
    let first = reg.parked();
    // Site B's INVITE comes before this edge's watch shows the claim: it waits (100 only).
    let inv = trunk_claim(&net, first.id, SECRET, "wait1");
    net.send(PEER, &inv);
    assert!(net.take(PEER).iter().all(|m| m.code() == 100));
    // Its retriever hung up: site B cancels. 200 to the CANCEL, 487 to the INVITE.
    let cancel = inv
        .lines()
        .take_while(|l| !l.is_empty())
        .filter(|l| {
            ["Via:", "From:", "To:", "Call-ID:", "Max-Forwards:"]
                .iter()
                .any(|h| l.starts_with(h))
        })
        .collect::<Vec<_>>()
        .join("\n");
    let cancel = format!(
        "CANCEL sip:701@orbit.test SIP/2.0\n{cancel}\nCSeq: 1 CANCEL\nContent-Length: 0\n\n"
    );
    net.send(PEER, &cancel);
    let mut codes: Vec<u16> = net.take(PEER).iter().map(|m| m.code()).collect();
    codes.sort();
    assert_eq!(codes, vec![200, 487]);
    // The claim commits after all: nobody takes the call, which goes back to its slot.
    claim_by_site_b(&mut net, &mut reg, &first);
    assert!(net.take(ALICE).is_empty(), "Alice is not handed to anyone");
    net.advance(crate::park::FETCH_WAIT + Duration::from_secs(1));
    reg.serve(&mut net);
    assert!(net.edge.orbit().in_slot("orbit.test", 701).is_some());
    assert!(net.take(ALICE).is_empty());
}

#[test]
fn an_unfetched_call_whose_slot_was_taken_meanwhile_goes_to_another_slot() {
    let (mut net, mut reg) = parked_by_bob();
    let first = reg.parked();
    claim_by_site_b(&mut net, &mut reg, &first);
    // The fetch wait ends: the edge asks for 701 again, free as far as its replica shows...
    net.advance(crate::park::FETCH_WAIT + Duration::from_millis(500));
    // ...but another site's call took 701 before that park was ordered.
    let at = net.edge.now_ms(net.now);
    let other = Command::Park {
        lot: first.lot.clone(),
        slot: Some(701),
        call: call_info("site-b", "b-call", "PCMU"),
    };
    reg.feed(&mut net, at, other);
    reg.serve(&mut net);
    reg.serve(&mut net);
    // Refused there, it goes into the next free slot instead of staying on music unparked.
    let again = net
        .edge
        .orbit()
        .in_slot("orbit.test", 702)
        .expect("parked in 702");
    assert_eq!(again.call.call_id, first.call.call_id);
    assert!(net.take(ALICE).is_empty(), "Alice's leg untouched");
}

#[test]
fn a_trunk_claim_of_a_park_the_watch_has_not_brought_yet_waits_for_it() {
    let (mut net, mut reg) = parked_by_bob();
    let first = reg.parked();
    // In the registry, ahead of this edge's watch: a retriever at site B claimed the call and
    // cancelled, site B put it back (a new park of the call held here), and 3001 at site B
    // claimed that new park.
    let at = net.edge.now_ms(net.now);
    let [claim_first, repark] = claim_and_put_back(&first, Some(first.id));
    reg.orbit.apply(at, &claim_first).unwrap();
    let Event::Parked(again) = reg.orbit.apply(at, &repark).unwrap() else {
        panic!("parked again")
    };
    let claim_again = Command::Claim {
        tenant: "orbit.test".into(),
        slot: 701,
        park: Some(again.id),
        by: "3001".into(),
    };
    reg.orbit.apply(at, &claim_again).unwrap();
    // Site B's INVITE for the new park comes first: held, not refused.
    net.send(PEER, &trunk_claim(&net, again.id, SECRET, "ahead"));
    let got = net.take(PEER);
    assert!(
        got.iter().all(|m| m.code() == 100),
        "{:?}",
        got.iter().map(|m| m.code()).collect::<Vec<_>>()
    );
    // The watch catches up: the call is handed over.
    reg.index += 1;
    net.edge.on_orbit_watch(
        net.now,
        reg.index,
        at,
        vec![claim_first, repark, claim_again],
    );
    net.collect();
    assert!(net.take(PEER).iter().any(|m| m.code() == 200));
}

/// A site (authenticated) that names parks and log indexes far ahead holds a place in the
/// claim waits for a lease each: it gets a quarter of them, and another site's claim still
/// waits its turn.
#[test]
fn one_site_holds_at_most_a_quarter_of_the_claim_waits() {
    use super::registry::{trunk_invite, trunk_invite_from, PEER_C};
    use crate::park::CLAIMS_WAITING_PER_SITE;
    let (mut net, reg) = parked_by_bob();
    let p = reg.parked();
    let far = reg.index + 1_000_000;
    for i in 0..CLAIMS_WAITING_PER_SITE as u64 {
        let claim = crate::trunk::Claim::Park(p.id + 1_000 + i, far);
        net.send(
            PEER,
            &trunk_invite(&net, claim, "701", "Carol", SECRET, &format!("f{i}")),
        );
        let codes: Vec<u16> = net.take(PEER).iter().map(|m| m.code()).collect();
        assert_eq!(codes, vec![100], "claim {i} waits");
    }
    let claim = crate::trunk::Claim::Park(p.id + 5_000, far);
    net.send(
        PEER,
        &trunk_invite(&net, claim, "701", "Carol", SECRET, "over"),
    );
    let r = net.one(PEER);
    assert_eq!(r.code(), 503, "site B's quarter is full");
    assert_eq!(r.header_other("Retry-After").map(str::trim), Some("1"));
    // Site C's claim of the call held here still waits for the watch.
    let claim = crate::trunk::Claim::Park(p.id, reg.index + 1);
    let inv = trunk_invite_from(("site-c", PEER_C), &net, claim, "701", "Dave", SECRET, "c1");
    net.send(PEER_C, &inv);
    let codes: Vec<u16> = net.take(PEER_C).iter().map(|m| m.code()).collect();
    assert_eq!(codes, vec![100], "site C is not crowded out");
}

#[test]
fn a_phone_on_the_same_ip_as_another_sites_edge_cannot_assert_an_identity() {
    // Bob's phone shares 127.0.0.1 with site B's edge (one host, or one NAT).
    let mut net = registry_net();
    let mut reg = Registry::default();
    reg.serve(&mut net);
    net.register("1002", BOB1);
    reg.serve(&mut net);
    net.send(ALICE, &invite("1002", "c1", ""));
    reg.serve(&mut net);
    net.take(ALICE);
    let inv = net
        .take(BOB1)
        .into_iter()
        .find(|m| m.method() == &orbit_sip::Method::Invite)
        .unwrap();
    let ok = with_header(
        answer(&inv, 200, "bob", Some(SDP_B), BOB1),
        "P-Asserted-Identity",
        "\"Bank\" <sip:bank@example.com>",
    );
    net.send_msg(BOB1, ok);
    let ok = net
        .take(ALICE)
        .into_iter()
        .find(|m| m.code() == 200)
        .unwrap();
    assert_eq!(ok.header_other("P-Asserted-Identity"), None);
}
