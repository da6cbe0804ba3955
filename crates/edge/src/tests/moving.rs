//! A parked call offered to this edge by the edge that holds it (it drains), in virtual time
//! with the registry played as in `registry.rs`: taken on probation; once the log shows the
//! move, music and a re-INVITE that points the party here; let go without a word when the log
//! takes the park elsewhere or never shows the move; and what a stranger's offer gets.

use orbit_state::{Command, Event};

use super::registry::{call_info, registry_with_a_park, Registry, PEER, SECRET};
use super::*;
use crate::park::{MoveOffer, PartySide};

/// The party the offer names: its phone and where its RTP goes.
const PARTY: &str = "10.5.5.5:7000";

/// Site B's offer of park `park`: the dialog `call_info("site-b", "b-call", ..)` names.
fn offer(park: u64) -> MoveOffer {
    MoveOffer {
        park,
        side: PartySide::B,
        call_id: "b-call".into(),
        local_tag: "b-call-l".into(),
        local_hdr: "<sip:2002@orbit.test>;tag=b-call-l".into(),
        remote_hdr: "<sip:5551234@pstn>;tag=b-call-r".into(),
        remote_target: format!("sip:5551234@{PARTY}"),
        route_set: vec![],
        local_cseq: 1002,
        remote_cseq: 1,
        addr: PARTY.parse().unwrap(),
        contact_user: "2002".into(),
        user: "5551234".into(),
        sdp: "v=0\r\no=p 1 1 IN IP4 10.5.5.5\r\ns=-\r\nc=IN IP4 10.5.5.5\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n".into(),
        pt: 0,
        te: None,
        label: "Bob".into(),
    }
}

/// The offer MESSAGE from site B for `claim_park` carrying `o`, signed with `secret`.
fn offer_message(net: &Net, claim_park: u64, o: &MoveOffer, secret: &str, branch: &str) -> String {
    let ts = net.edge.now_ms(net.now) / 1000;
    let call_id = format!("move-{branch}");
    let from = "<sip:site-b@orbit.test>;tag=mv".to_string();
    let body = serde_json::to_string(o).unwrap();
    let sig = crate::trunk::Signed {
        site: "site-b",
        to_site: "site-a",
        ts,
        method: "MESSAGE",
        call_id: &call_id,
        from: &from,
        user: "701",
        claim: Some(crate::trunk::Claim::Park(claim_park, 0)),
        body: body.as_bytes(),
    }
    .sign(secret);
    format!(
        "MESSAGE sip:701@127.0.0.1:5060 SIP/2.0\nVia: SIP/2.0/UDP {PEER};branch=z9hG4bK{branch}\nMax-Forwards: 70\nFrom: {from}\nTo: <sip:701@127.0.0.1:5060>\nCall-ID: {call_id}\nCSeq: 1 MESSAGE\nX-Orbit-Trunk: site-b;{ts};{sig}\nX-Orbit-Claim: {claim_park}\nContent-Type: application/x-orbit-move+json\nContent-Length: {}\n\n{body}",
        body.len()
    )
}

/// Send `text`, its head's line breaks made CRLF, its body's bytes as they are.
fn send_raw(net: &mut Net, from: &str, text: &str) {
    let (head, body) = text.split_once("\n\n").unwrap();
    let msg = format!("{}\r\n\r\n{body}", head.replace('\n', "\r\n"));
    net.send_msg(from, Bytes::from(msg.into_bytes()));
}

/// Site B offers park `park` with `o`: the answer.
fn offered(net: &mut Net, park: u64, o: &MoveOffer, secret: &str, branch: &str) -> Message {
    let m = offer_message(net, park, o, secret, branch);
    send_raw(net, PEER, &m);
    net.one(PEER)
}

/// Site B's move of park `park` to this edge, as the watch brings it.
fn moved_here(net: &mut Net, reg: &mut Registry, park: u64) -> Event {
    let at = net.edge.now_ms(net.now);
    let cmd = Command::Move {
        park,
        to: "site-a".into(),
    };
    reg.feed(net, at, cmd)
}

#[test]
fn an_offered_call_is_held_on_probation_then_played_music_and_re_invited_once_moved() {
    let (mut net, mut reg, _) = registry_with_a_park(None, call_info("site-b", "b-call", "PCMU"));
    let p = reg.parked();
    let sessions = net.media.open_sessions();
    assert_eq!(
        offered(&mut net, p.id, &offer(p.id), SECRET, "h1").code(),
        200
    );
    // A relay is open for the party, which hears nothing from here yet, nor is sent anything:
    // its dialog is still site B's.
    assert_eq!(net.media.open_sessions(), sessions + 1);
    assert!(
        net.media.take_feeds().is_empty(),
        "no music before the move"
    );
    assert!(net.take(PARTY).is_empty());
    // Site B orders the move: the party hears this edge's music and is re-INVITEd here, in
    // its own dialog, with this edge's relay and Contact.
    let ev = moved_here(&mut net, &mut reg, p.id);
    assert!(matches!(ev, Event::Moved { .. }), "{ev:?}");
    assert_eq!(
        net.media.take_feeds(),
        vec!["play B music PCMU 16000ms".to_string()]
    );
    let inv = net.one(PARTY);
    assert_eq!(*inv.method(), orbit_sip::Method::Invite);
    assert_eq!(inv.call_id(), "b-call");
    assert_eq!(inv.from_tag(), Some("b-call-l"));
    assert_eq!(inv.to_tag(), Some("b-call-r"));
    assert_eq!(inv.cseq.seq, 1003, "above what site B used");
    assert!(
        inv.header(Name::Contact).unwrap().contains(EDGE),
        "{}",
        inv.head_text()
    );
    let relay = net.media.port(net.media.opened() - 1, crate::media::Leg::B);
    assert!(
        body(&inv).contains(&format!("m=audio {relay} ")),
        "{}",
        body(&inv)
    );
    net.send_msg(PARTY, answer(&inv, 200, "b-call-r", Some(SDP_B), PARTY));
    assert_eq!(*net.one(PARTY).method(), orbit_sip::Method::Ack);
    // Kept past the probation.
    net.advance(crate::park::PROBATION + Duration::from_secs(1));
    assert_eq!(net.media.open_sessions(), sessions + 1);
    // The party's BYE, now sent here, ends the park here.
    let bye = format!(
        "BYE sip:2002@127.0.0.1:5060 SIP/2.0\nVia: SIP/2.0/UDP {PARTY};branch=z9hG4bKpb\nMax-Forwards: 70\nFrom: <sip:5551234@pstn>;tag=b-call-r\nTo: <sip:2002@orbit.test>;tag=b-call-l\nCall-ID: b-call\nCSeq: 2 BYE\nContent-Length: 0\n\n"
    );
    net.send(PARTY, &bye);
    assert_eq!(net.one(PARTY).code(), 200);
    reg.serve(&mut net);
    assert!(matches!(reg.events.last(), Some(Event::Ended { .. })));
    assert_eq!(net.media.open_sessions(), sessions);
}

#[test]
fn an_offered_call_goes_quietly_when_a_retrieve_claims_it_first_or_the_move_never_comes() {
    let (mut net, mut reg, _) = registry_with_a_park(None, call_info("site-b", "b-call", "PCMU"));
    let p = reg.parked();
    let sessions = net.media.open_sessions();
    assert_eq!(
        offered(&mut net, p.id, &offer(p.id), SECRET, "h1").code(),
        200
    );
    // A retrieve at another site claims it first (the move will be refused): let go at once,
    // without a word to the party.
    let at = net.edge.now_ms(net.now);
    reg.feed(
        &mut net,
        at,
        Command::Claim {
            tenant: "orbit.test".into(),
            slot: p.slot,
            park: None,
            by: "site-c/3001".into(),
        },
    );
    assert_eq!(net.media.open_sessions(), sessions);
    assert!(net.take(PARTY).is_empty());
    assert!(net.media.take_feeds().is_empty());

    // Another park, offered, whose move never comes: let go after the probation.
    let at = net.edge.now_ms(net.now);
    let lot = orbit_state::LotKey {
        tenant: "orbit.test".into(),
        park_ext: "700".into(),
    };
    let ev = reg.feed(
        &mut net,
        at,
        Command::Park {
            lot,
            slot: None,
            call: call_info("site-b", "b-call", "PCMU"),
        },
    );
    let Event::Parked(p2) = ev else {
        panic!("{ev:?}")
    };
    assert_eq!(
        offered(&mut net, p2.id, &offer(p2.id), SECRET, "h2").code(),
        200
    );
    assert_eq!(net.media.open_sessions(), sessions + 1);
    net.advance(crate::park::PROBATION + Duration::from_millis(10));
    assert_eq!(net.media.open_sessions(), sessions);
    assert!(net.take(PARTY).is_empty());
    // Its move, ordered after all (a registry slower than the probation): this edge no
    // longer has the call, and ends the park rather than hold a slot for nobody.
    moved_here(&mut net, &mut reg, p2.id);
    reg.serve(&mut net);
    assert!(reg.orbit.parked(p2.id).is_none());
}

#[test]
fn a_stranger_cannot_offer_this_edge_a_call_nor_take_over_a_dialog_it_does_not_hold() {
    let (mut net, _reg, _) = registry_with_a_park(None, call_info("site-b", "b-call", "PCMU"));
    let p = net.edge.orbit().in_slot("orbit.test", 701).unwrap().clone();
    let sessions = net.media.open_sessions();
    // Unsigned, from a phone: a MESSAGE is not something this edge takes.
    let plain = offer_message(&net, p.id, &offer(p.id), SECRET, "s0")
        .lines()
        .filter(|l| !l.starts_with("X-Orbit-"))
        .collect::<Vec<_>>()
        .join("\n");
    send_raw(&mut net, "127.0.0.1:6001", &plain);
    assert_eq!(net.one("127.0.0.1:6001").code(), 405);
    // Signed with another secret.
    let r = offered(&mut net, p.id, &offer(p.id), "not-the-trunk-secret", "s1");
    assert_eq!(r.code(), 403);
    // A body naming another park than the signed claim.
    let r = offered(&mut net, p.id, &offer(p.id + 1), SECRET, "s2");
    assert_eq!(r.code(), 400);
    // A park site B does not hold (none such).
    let r = offered(&mut net, p.id + 7, &offer(p.id + 7), SECRET, "s3");
    assert_eq!((r.code(), r.reason()), (403, "Not Held By Sender"));
    // Another dialog than the park's (no other call can be taken over this way).
    let mut other = offer(p.id);
    other.call_id = "someone-elses-call".into();
    let r = offered(&mut net, p.id, &other, SECRET, "s4");
    assert_eq!((r.code(), r.reason()), (403, "Not That Call"));
    // Line breaks to smuggle headers in, or an address nobody is at.
    let mut crlf = offer(p.id);
    crlf.label = "Bob\r\nX-Evil: 1".into();
    assert_eq!(offered(&mut net, p.id, &crlf, SECRET, "s5").code(), 400);
    let mut nowhere = offer(p.id);
    nowhere.addr = "0.0.0.0:7000".parse().unwrap();
    assert_eq!(offered(&mut net, p.id, &nowhere, SECRET, "s6").code(), 400);
    assert_eq!(
        net.media.open_sessions(),
        sessions,
        "nothing opened for a stranger"
    );
}

#[test]
fn a_moved_party_that_refuses_the_re_invite_is_hung_up_by_the_edge_that_holds_it_now() {
    let (mut net, mut reg, _) = registry_with_a_park(None, call_info("site-b", "b-call", "PCMU"));
    let p = reg.parked();
    assert_eq!(
        offered(&mut net, p.id, &offer(p.id), SECRET, "r1").code(),
        200
    );
    moved_here(&mut net, &mut reg, p.id);
    // A crossing re-INVITE of its own (491): asked again a moment later.
    let inv = net.one(PARTY);
    net.send_msg(PARTY, answer(&inv, 491, "b-call-r", None, PARTY));
    net.take(PARTY);
    net.advance(Duration::from_millis(1100));
    let again = net.one(PARTY);
    assert_eq!(*again.method(), orbit_sip::Method::Invite);
    assert!(again.cseq.seq > inv.cseq.seq);
    // Then a refusal: the call ends here, and the slot is freed by this edge (its holder).
    net.send_msg(PARTY, answer(&again, 481, "b-call-r", None, PARTY));
    let msgs = net.take(PARTY);
    let bye = msgs
        .iter()
        .find(|m| *m.method() == orbit_sip::Method::Bye)
        .expect("a BYE, should the party still have the dialog");
    net.send_msg(PARTY, answer(bye, 481, "b-call-r", None, PARTY));
    reg.serve(&mut net);
    assert!(
        reg.events
            .iter()
            .any(|e| matches!(e, Event::Ended { parked, .. } if parked.id == p.id)),
        "{:?}",
        reg.events.last()
    );
    assert!(reg.orbit.parked(p.id).is_none());
}
