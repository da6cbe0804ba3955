//! Handing a parked call over between sites, in virtual time with the registry played as in
//! `registry.rs`: fetching a call held elsewhere over the signed trunk, trunk claims refused
//! (from elsewhere, tampered, replayed, not yet committed) or waiting for the watch, claims
//! whose fetch never comes or is cancelled, and identities asserted from a trunk's address.

use orbit_state::{Command, Event};

use super::park::{carol_invite, CAROL};
use super::registry::{
    call_info, carol_retrieves_alice, claim_and_put_back, claim_by_site_b, parked_by_bob,
    registry_net, registry_with_a_park, trunk_claim, with_header, Registry, PEER, SECRET,
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
