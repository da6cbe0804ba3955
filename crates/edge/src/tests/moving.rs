//! A parked call handed to this edge by the edge that holds it (it drains), in virtual time
//! with the registry played as in `registry.rs`: taken on probation, music only once the log
//! shows the move, let go without a word when the log takes the park elsewhere or never shows
//! the move; and what a stranger's handover gets.

use orbit_state::{Command, Event};

use super::registry::{call_info, registry_with_a_park, Registry, PEER, SECRET};
use super::*;
use crate::park::Adoption;

/// The party the handover names: its phone and where its RTP goes.
const PARTY: &str = "10.5.5.5:7000";

fn adoption(park: u64) -> Adoption {
    Adoption {
        park,
        side: "b".into(),
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
        codec: "PCMU".into(),
        pt: 0,
        te: None,
        label: "Bob".into(),
        caller_uri: "sip:5551234@pstn".into(),
        parker: "2002".into(),
    }
}

/// A handover MESSAGE from site B for `claim_park` carrying `a`, signed with `secret`.
fn handover(net: &Net, claim_park: u64, a: &Adoption, secret: &str, branch: &str) -> String {
    let ts = net.edge.now_ms(net.now) / 1000;
    let call_id = format!("move-{branch}");
    let from = "<sip:site-b@orbit.test>;tag=mv".to_string();
    let body = serde_json::to_string(a).unwrap();
    let sig = crate::trunk::Signed {
        site: "site-b",
        to_site: "site-a",
        ts,
        method: "MESSAGE",
        call_id: &call_id,
        from: &from,
        user: "701",
        claim: Some(crate::trunk::Claim::Park(claim_park)),
        body: body.as_bytes(),
    }
    .sign(secret);
    format!(
        "MESSAGE sip:701@127.0.0.1:5060 SIP/2.0\nVia: SIP/2.0/UDP {PEER};branch=z9hG4bK{branch}\nMax-Forwards: 70\nFrom: {from}\nTo: <sip:701@127.0.0.1:5060>\nCall-ID: {call_id}\nCSeq: 1 MESSAGE\nX-Orbit-Trunk: site-b;{ts};{sig}\nX-Orbit-Claim: {claim_park}\nContent-Type: application/x-orbit-adopt+json\nContent-Length: {}\n\n{body}",
        body.len()
    )
}

/// Send `text` keeping its body's bytes as they are (a JSON body has no line breaks to fix).
fn send_raw(net: &mut Net, from: &str, text: &str) {
    let (head, body) = text.split_once("\n\n").unwrap();
    let msg = format!("{}\r\n\r\n{body}", head.replace('\n', "\r\n"));
    net.send_msg(from, Bytes::from(msg.into_bytes()));
}

fn park_of(reg: &Registry) -> orbit_state::Parked {
    reg.parked()
}

#[test]
fn a_handed_over_call_is_held_on_probation_and_plays_music_once_the_log_shows_the_move() {
    let (mut net, mut reg, _) = registry_with_a_park(None, call_info("site-b", "b-call", "PCMU"));
    let p = park_of(&reg);
    let sessions = net.media.open_sessions();
    let m = handover(&net, p.id, &adoption(p.id), SECRET, "h1");
    send_raw(&mut net, PEER, &m);
    let ok = net.one(PEER);
    assert_eq!(ok.code(), 200, "{}", ok.head_text());
    // Its answer names a relay of this edge for the party, which has nothing played yet.
    assert!(body(&ok).contains("m=audio "), "{}", body(&ok));
    assert_eq!(net.media.open_sessions(), sessions + 1);
    assert!(
        net.media.take_feeds().is_empty(),
        "no music before the move"
    );
    assert!(
        net.take(PARTY).is_empty(),
        "nothing to the party: its dialog is site B's"
    );
    // Site B orders the move: this edge holds it now, and the party hears its music.
    let at = net.edge.now_ms(net.now);
    let ev = reg.feed(
        &mut net,
        at,
        Command::Move {
            park: p.id,
            to: "site-a".into(),
        },
    );
    assert!(matches!(ev, Event::Moved { .. }), "{ev:?}");
    assert_eq!(
        net.media.take_feeds(),
        vec!["play B music PCMU 16000ms".to_string()]
    );
    // Kept past the probation.
    net.advance(crate::park::ADOPT_WAIT + Duration::from_secs(1));
    assert_eq!(net.media.open_sessions(), sessions + 1);
    // The party's BYE, sent to this edge after its re-INVITE, ends the park here.
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
fn a_handed_over_call_goes_quietly_when_a_retrieve_claims_it_first_or_the_move_never_comes() {
    let (mut net, mut reg, _) = registry_with_a_park(None, call_info("site-b", "b-call", "PCMU"));
    let p = park_of(&reg);
    let sessions = net.media.open_sessions();
    let m = handover(&net, p.id, &adoption(p.id), SECRET, "h1");
    send_raw(&mut net, PEER, &m);
    assert_eq!(net.one(PEER).code(), 200);
    // A retrieve at another site claims it first: the move will be refused; let go at once,
    // without a word to the party (whose dialog is site B's).
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
    let ev = reg.feed(
        &mut net,
        at,
        Command::Park {
            lot: orbit_state::LotKey {
                tenant: "orbit.test".into(),
                park_ext: "700".into(),
            },
            slot: None,
            call: call_info("site-b", "b-call2", "PCMU"),
        },
    );
    let Event::Parked(p2) = ev else {
        panic!("{ev:?}")
    };
    let m = handover(&net, p2.id, &adoption(p2.id), SECRET, "h2");
    send_raw(&mut net, PEER, &m);
    assert_eq!(net.one(PEER).code(), 200);
    assert_eq!(net.media.open_sessions(), sessions + 1);
    net.advance(crate::park::ADOPT_WAIT + Duration::from_millis(10));
    assert_eq!(net.media.open_sessions(), sessions);
    assert!(net.take(PARTY).is_empty());
}

#[test]
fn a_stranger_cannot_hand_this_edge_a_call_nor_take_one_it_does_not_hold() {
    let (mut net, _reg, _) = registry_with_a_park(None, call_info("site-b", "b-call", "PCMU"));
    let p = net.edge.orbit().in_slot("orbit.test", 701).unwrap().clone();
    let sessions = net.media.open_sessions();
    // Unsigned, from a phone: a MESSAGE is not something this edge takes.
    let plain = handover(&net, p.id, &adoption(p.id), SECRET, "s0")
        .lines()
        .filter(|l| !l.starts_with("X-Orbit-"))
        .collect::<Vec<_>>()
        .join("\n");
    send_raw(&mut net, "127.0.0.1:6001", &plain);
    assert_eq!(net.one("127.0.0.1:6001").code(), 405);
    // Signed with a wrong secret: refused.
    let m = handover(&net, p.id, &adoption(p.id), "not-the-trunk-secret", "s1");
    send_raw(&mut net, PEER, &m);
    assert_eq!(net.one(PEER).code(), 403);
    // A body naming another park than the signed claim: refused.
    let m = handover(&net, p.id, &adoption(p.id + 1), SECRET, "s2");
    send_raw(&mut net, PEER, &m);
    assert_eq!(net.one(PEER).code(), 400);
    // A park site B does not hold (none such): refused.
    let m = handover(&net, p.id + 7, &adoption(p.id + 7), SECRET, "s3");
    send_raw(&mut net, PEER, &m);
    let r = net.one(PEER);
    assert_eq!((r.code(), r.reason()), (403, "Not Held By Sender"));
    assert_eq!(
        net.media.open_sessions(),
        sessions,
        "nothing opened for a stranger"
    );
}
