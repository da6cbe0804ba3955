//! Calls through the edge: setup and teardown, forking, the INVITE and 2xx timers, relay
//! ports that fail, silence, re-INVITE, CANCEL, early media, failures mapped through,
//! routing errors, digest for untrusted sources, and request limits.

use super::*;

#[test]
fn call_setup_rewrites_sdp_and_bye_tears_down() {
    let mut net = Net::new();
    let (ok, inv) = answered_call(&mut net);
    // Bob is offered the relay's B side, Alice is answered with its A side.
    assert!(body(&inv).contains("c=IN IP4 127.0.0.1\r\n"));
    assert!(body(&inv).contains(&format!(
        "m=audio {} RTP/AVP 0 101",
        net.media.port(0, Leg::B)
    )));
    assert!(body(&ok).contains(&format!("m=audio {} RTP/AVP 0", net.media.port(0, Leg::A))));
    assert_eq!(inv.max_forwards(), Some(69));
    assert!(inv
        .header(Name::From)
        .unwrap()
        .contains("\"Alice\" <sip:1001@orbit.test>"));
    // The relay learned both parties' announced addresses.
    let remotes = net.media.remotes();
    assert!(remotes.contains(&(crate::media::Leg::A, Some("10.1.1.1:4000".parse().unwrap()))));
    assert!(remotes.contains(&(crate::media::Leg::B, Some("10.2.2.2:5000".parse().unwrap()))));
    // ACK goes through to Bob.
    net.send(ALICE, &alice_in_dialog(&ok, "ACK", 1, "ack1", None));
    let ack = net.one(BOB1);
    assert_eq!(*ack.method(), orbit_sip::Method::Ack);
    assert_eq!(ack.to_tag(), Some("bob"));
    // Alice hangs up: 200 to her, BYE to Bob; Bob's 200 ends the call and frees the media.
    net.send(ALICE, &alice_in_dialog(&ok, "BYE", 2, "bye1", None));
    assert_eq!(net.one(ALICE).code(), 200);
    let bye = net.one(BOB1);
    assert_eq!(*bye.method(), orbit_sip::Method::Bye);
    assert_eq!(net.media.open_sessions(), 0);
    net.send_msg(BOB1, answer(&bye, 200, "bob", None, BOB1));
    assert_eq!(net.edge.active_calls(), 0);
    // A BYE retransmission is answered from the transaction, not as a new request.
    net.send(ALICE, &alice_in_dialog(&ok, "BYE", 2, "bye1", None));
    assert_eq!(net.one(ALICE).code(), 200);
    assert!(net.take(BOB1).is_empty());
}

#[test]
fn forking_first_2xx_wins_others_cancelled_late_answer_hung_up() {
    let mut net = Net::new();
    net.register("1002", BOB1);
    net.register("1002", BOB2);
    net.send(ALICE, &invite("1002", "f1", ""));
    net.take(ALICE);
    let inv1 = net.one(BOB1);
    let inv2 = net.one(BOB2);
    assert_ne!(
        inv1.top_via().unwrap().branch(),
        inv2.top_via().unwrap().branch()
    );
    net.send_msg(BOB1, answer(&inv1, 180, "b1", None, BOB1));
    net.send_msg(BOB2, answer(&inv2, 180, "b2", None, BOB2));
    net.take(ALICE);
    net.send_msg(BOB1, answer(&inv1, 200, "b1", Some(SDP_B), BOB1));
    assert_eq!(net.one(ALICE).code(), 200);
    let cancel = net.one(BOB2);
    assert_eq!(*cancel.method(), orbit_sip::Method::Cancel);
    assert_eq!(
        cancel.top_via().unwrap().branch(),
        inv2.top_via().unwrap().branch()
    );
    // Bob2 answered at the same moment: the edge takes the call and hangs it up.
    net.send_msg(BOB2, answer(&inv2, 200, "b2", Some(SDP_B), BOB2));
    let msgs = net.take(BOB2);
    let methods: Vec<_> = msgs
        .iter()
        .map(|m| m.method().as_str().to_string())
        .collect();
    assert_eq!(methods, vec!["ACK", "BYE"]);
    // Alice still has exactly one call, with Bob1.
    assert_eq!(net.edge.active_calls(), 1);
}

#[test]
fn unanswered_invite_gives_408_after_timer_b() {
    let mut net = Net::new();
    net.register("1002", BOB1);
    net.send(ALICE, &invite("1002", "t1", ""));
    net.take(ALICE);
    // Bob never answers; Timer A retransmits the INVITE over UDP.
    net.advance(Duration::from_millis(31_999));
    let retransmits = net.take(BOB1);
    assert_eq!(retransmits.len(), 1 + 6, "INVITE plus six retransmissions");
    assert!(net.take(ALICE).is_empty());
    net.advance(Duration::from_millis(2));
    assert_eq!(net.one(ALICE).code(), 408);
    assert_eq!(net.edge.active_calls(), 0);
    assert_eq!(net.media.open_sessions(), 0);
}

#[test]
fn missing_ack_retransmits_2xx_then_ends_call() {
    let mut net = Net::new();
    let (_ok, _inv) = answered_call(&mut net);
    net.advance(Duration::from_millis(31_900));
    let again = net.take(ALICE);
    assert_eq!(again.len(), 10, "2xx retransmitted at T1 doubling to T2");
    assert!(again.iter().all(|m| m.code() == 200));
    net.advance(Duration::from_millis(200));
    assert_eq!(*net.one(ALICE).method(), orbit_sip::Method::Bye);
    assert_eq!(*net.one(BOB1).method(), orbit_sip::Method::Bye);
    assert_eq!(net.media.open_sessions(), 0);
}

#[test]
fn relay_ports_the_driver_cannot_bind_end_the_call_and_are_taken_last_from_then_on() {
    let mut net = Net::new();
    net.register("1002", BOB1);
    net.send(ALICE, &invite("1002", "c1", ""));
    let inv = net.one(BOB1);
    net.send_msg(BOB1, answer(&inv, 180, "bob", None, BOB1));
    net.take(ALICE);
    assert_eq!(net.media.open_sessions(), 1);
    let busy = [net.media.port(0, Leg::A), net.media.port(0, Leg::B)];
    // The driver could not bind them (another process holds one): the caller hears the call
    // end, the callee's phone stops ringing, the ports are free in the plan again.
    let failed = net.media.fail(net.media.call(0));
    net.edge.on_media_event(net.now, failed);
    net.collect();
    assert_eq!(
        net.one(ALICE).code(),
        503,
        "not 487: the caller did not cancel"
    );
    assert_eq!(*net.one(BOB1).method(), orbit_sip::Method::Cancel);
    assert_eq!(net.edge.media_ports_in_use(), 0);
    // Past the cool-down that released ports wait out (they would be reused first): the next
    // calls still get other ports while any others are free (1,000 ports: 250 calls).
    net.advance(Duration::from_secs(1));
    for n in 0..20 {
        net.send(ALICE, &invite("1002", &format!("n{n}"), ""));
        let nth = net.media.opened() - 1;
        let ports = [net.media.port(nth, Leg::A), net.media.port(nth, Leg::B)];
        assert!(ports.iter().all(|p| !busy.contains(p)), "{ports:?}");
    }
}

#[test]
fn a_call_rung_then_answered_leaves_nothing_queued_past_timer_j() {
    let mut net = Net::new();
    let (ok, _) = answered_call(&mut net);
    net.send(ALICE, &alice_in_dialog(&ok, "ACK", 1, "ack1", None));
    // The callee rang (Timer C: 180 s) then answered (Timer J: 32 s): no entry is left queued
    // for three minutes.
    let latest = net.edge.timers.deadlines().max().unwrap();
    assert!(
        latest <= net.now + Duration::from_secs(33),
        "a timer queued {:?} ahead",
        latest - net.now
    );
}

#[test]
fn silent_media_ends_call_with_bye_both_ways() {
    let mut net = Net::new();
    let (ok, _) = answered_call(&mut net);
    net.send(ALICE, &alice_in_dialog(&ok, "ACK", 1, "ack1", None));
    net.take(BOB1);
    net.media.set_idle(Duration::from_secs(59));
    net.advance(Duration::from_secs(2));
    assert!(net.take(ALICE).is_empty());
    net.media.set_idle(Duration::from_secs(61));
    net.advance(Duration::from_secs(1));
    // BYE to both (retransmitted over UDP until answered).
    for party in [ALICE, BOB1] {
        let msgs = net.take(party);
        assert!(!msgs.is_empty());
        assert!(msgs.iter().all(|m| *m.method() == orbit_sip::Method::Bye));
    }
    assert_eq!(net.media.open_sessions(), 0);
}

#[test]
fn reinvite_hold_is_passed_through_with_sdp_rewritten() {
    let mut net = Net::new();
    let (ok, _) = answered_call(&mut net);
    net.send(ALICE, &alice_in_dialog(&ok, "ACK", 1, "ack1", None));
    net.take(BOB1);
    let hold = format!("{SDP_A}a=sendonly\n");
    net.send(
        ALICE,
        &alice_in_dialog(&ok, "INVITE", 2, "hold", Some(&hold)),
    );
    let reinv = net.one(BOB1);
    assert_eq!(*reinv.method(), orbit_sip::Method::Invite);
    assert_eq!(reinv.to_tag(), Some("bob"));
    assert!(body(&reinv).contains("a=sendonly"));
    assert!(body(&reinv).contains(&format!("m=audio {} ", net.media.port(0, Leg::B))));
    // A second re-INVITE while the first is pending is glare: 491.
    net.send(
        ALICE,
        &alice_in_dialog(&ok, "INVITE", 3, "glare", Some(&hold)),
    );
    assert_eq!(net.one(ALICE).code(), 491);
    let recv = SDP_B.replace(
        "a=rtpmap:0 PCMU/8000\n",
        "a=rtpmap:0 PCMU/8000\na=recvonly\n",
    );
    net.send_msg(BOB1, answer(&reinv, 200, "bob", Some(&recv), BOB1));
    let ok2 = net.one(ALICE);
    assert_eq!(ok2.code(), 200);
    assert!(body(&ok2).contains("a=recvonly"));
    assert!(body(&ok2).contains(&format!("m=audio {} ", net.media.port(0, Leg::A))));
    net.send(ALICE, &alice_in_dialog(&ok, "ACK", 2, "ack2", None));
    let ack = net.one(BOB1);
    assert_eq!(*ack.method(), orbit_sip::Method::Ack);
    assert_eq!(ack.cseq.seq, reinv.cseq.seq);
}

#[test]
fn cancel_while_ringing() {
    let mut net = Net::new();
    net.register("1002", BOB1);
    let inv_text = invite("1002", "x1", "");
    net.send(ALICE, &inv_text);
    net.take(ALICE);
    let inv = net.one(BOB1);
    net.send_msg(BOB1, answer(&inv, 180, "bob", None, BOB1));
    net.take(ALICE);
    let cancel = inv_text
        .replacen("INVITE sip", "CANCEL sip", 1)
        .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL")
        .split("Content-Type")
        .next()
        .unwrap()
        .to_string()
        + "Content-Length: 0\n\n";
    net.send(ALICE, &cancel);
    let codes: Vec<u16> = net.take(ALICE).iter().map(|m| m.code()).collect();
    assert_eq!(codes, vec![200, 487]);
    let c = net.one(BOB1);
    assert_eq!(*c.method(), orbit_sip::Method::Cancel);
    assert_eq!(net.media.open_sessions(), 0);
    net.send_msg(BOB1, answer(&inv, 487, "bob", None, BOB1));
    // The edge ACKs the 487 (same branch as its INVITE).
    let ack = net.one(BOB1);
    assert_eq!(*ack.method(), orbit_sip::Method::Ack);
    assert_eq!(
        ack.top_via().unwrap().branch(),
        inv.top_via().unwrap().branch()
    );
    assert_eq!(net.edge.active_calls(), 0);
}

#[test]
fn routing_errors_and_retransmissions() {
    let mut net = Net::new();
    // Unknown extension, known but not registered.
    net.send(ALICE, &invite("9999", "e1", ""));
    assert_eq!(net.one(ALICE).code(), 404);
    net.send(ALICE, &invite("1003", "e2", ""));
    assert_eq!(net.one(ALICE).code(), 480);
    // Max-Forwards exhausted.
    net.send(
        ALICE,
        &invite("1002", "e3", "").replace("Max-Forwards: 70", "Max-Forwards: 0"),
    );
    assert_eq!(net.one(ALICE).code(), 483);
    // Unsupported extension required.
    net.send(ALICE, &invite("1002", "e4", "Require: 100rel\n"));
    let r = net.one(ALICE);
    assert_eq!(r.code(), 420);
    assert_eq!(r.header_other("Unsupported"), Some("100rel"));
    // A foreign domain is not ours.
    net.send(
        ALICE,
        &invite("1002", "e5", "").replacen("@orbit.test SIP/2.0", "@elsewhere.example SIP/2.0", 1),
    );
    assert_eq!(net.one(ALICE).code(), 404);
    // OPTIONS out of dialog is answered with what we allow.
    net.send(ALICE, "OPTIONS sip:orbit.test SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:6001;branch=z9hG4bKo1\nMax-Forwards: 70\nFrom: <sip:1001@orbit.test>;tag=o\nTo: <sip:orbit.test>\nCall-ID: o1\nCSeq: 1 OPTIONS\nContent-Length: 0\n\n");
    let o = net.one(ALICE);
    assert_eq!(o.code(), 200);
    assert!(o.header(Name::Allow).unwrap().contains("INVITE"));
    // An INVITE retransmission does not start a second call.
    net.register("1002", BOB1);
    net.send(ALICE, &invite("1002", "r1", ""));
    net.send(ALICE, &invite("1002", "r1", ""));
    assert_eq!(net.edge.active_calls(), 1);
    assert_eq!(net.take(BOB1).len(), 1);
}

#[test]
fn own_invite_coming_back_is_a_loop() {
    let mut net = Net::new();
    net.register("1002", BOB1);
    net.send(ALICE, &invite("1002", "l1", ""));
    let inv = net.one(BOB1);
    // Something routes our own INVITE back to us.
    let mut looped = String::from_utf8(
        inv.head_text()
            .replacen(
                "INVITE sip:1002@127.0.0.1:7001",
                "INVITE sip:1002@orbit.test",
                1,
            )
            .into_bytes(),
    )
    .unwrap();
    looped = looped.replacen(
        "Via: ",
        "Via: SIP/2.0/UDP 127.0.0.1:7001;branch=z9hG4bKloop\r\nVia: ",
        1,
    );
    let bytes = format!("{looped}\r\n\r\n{}", body(&inv)).into_bytes();
    net.send_msg(BOB1, Bytes::from(bytes));
    assert_eq!(net.one(BOB1).code(), 482);
}

#[test]
fn invite_from_untrusted_source_needs_digest_of_the_caller() {
    let mut cfg = config();
    cfg.auth.trusted.clear();
    let mut net = Net::with(cfg);
    net.register("1002", BOB1);
    net.send(ALICE, &invite("1002", "a1", ""));
    let ch = net.one(ALICE);
    assert_eq!(ch.code(), 407);
    assert!(ch
        .header(Name::ProxyAuthenticate)
        .unwrap()
        .contains("algorithm=MD5"));
    assert!(net.take(BOB1).is_empty());
    assert_eq!(net.media.open_sessions(), 0);
}
#[test]
fn limits_message_size_header_count_and_source_rate() {
    let mut cfg = config();
    cfg.limits.requests_per_sec = 10;
    cfg.limits.burst = 5;
    let mut net = Net::with(cfg);
    // Larger than max_message: 513, and nothing else.
    let big = format!("X-Pad: {}\n", "a".repeat(20_000));
    net.send(ALICE, &options("big", &big));
    assert_eq!(net.one(ALICE).code(), 513);
    // More header lines than max_headers: 400.
    let many: String = (0..200).map(|i| format!("X-H{i}: v\n")).collect();
    net.send(ALICE, &options("many", &many));
    assert_eq!(net.one(ALICE).code(), 400);
    // The bucket (burst 5, of which two went above) runs dry: one 503, then silence.
    for i in 0..20 {
        net.send(ALICE, &options(&format!("r{i}"), ""));
    }
    let codes: Vec<u16> = net.take(ALICE).iter().map(|m| m.code()).collect();
    assert_eq!(codes, vec![200, 200, 200, 503]);
    // Another source address is not affected, and the bucket refills with time.
    let other = "127.0.0.2:7001";
    net.send(other, &options("other", "").replace(ALICE, other));
    assert_eq!(net.one(other).code(), 200);
    net.advance(Duration::from_secs(1));
    net.send(ALICE, &options("later", ""));
    assert_eq!(net.one(ALICE).code(), 200);
}

#[test]
fn early_media_183_is_relayed_with_sdp_rewritten() {
    let mut net = Net::new();
    net.register("1002", BOB1);
    net.send(ALICE, &invite("1002", "em1", ""));
    net.take(ALICE);
    let inv = net.one(BOB1);
    net.send_msg(BOB1, answer(&inv, 183, "bob", Some(SDP_B), BOB1));
    let p = net.one(ALICE);
    assert_eq!(p.code(), 183);
    assert!(
        body(&p).contains(&format!("m=audio {} RTP/AVP 0", net.media.port(0, Leg::A))),
        "{}",
        body(&p)
    );
    assert!(!body(&p).contains("10.2.2.2\r\nt="));
    assert!(net
        .media
        .remotes()
        .contains(&(crate::media::Leg::B, Some("10.2.2.2:5000".parse().unwrap()))));
}

#[test]
fn failures_are_mapped_through_and_free_the_media() {
    for (code, want) in [(486, 486), (603, 603), (404, 404), (407, 480)] {
        let mut net = Net::new();
        net.register("1002", BOB1);
        net.send(ALICE, &invite("1002", "fm", ""));
        net.take(ALICE);
        let inv = net.one(BOB1);
        net.send_msg(BOB1, answer(&inv, code, "bob", None, BOB1));
        let r = net.one(ALICE);
        assert_eq!(r.code(), want, "callee answered {code}");
        assert_eq!(net.media.open_sessions(), 0);
        assert_eq!(net.edge.active_calls(), 0);
    }
}
