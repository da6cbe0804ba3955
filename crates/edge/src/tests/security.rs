//! Strangers trying, at the sans-I/O level: requests and responses naming someone else's
//! dialog or transaction from elsewhere, transfers naming someone else's call, and floods that
//! would grow the transaction table.

use orbit_sip::Method;

use super::park::{carol_invite, refer_replacing, CAROL};
use super::*;

/// Another host than Alice's, same port.
const STRANGER: &str = "127.0.0.2:6001";

#[test]
fn in_dialog_requests_from_another_address_change_nothing() {
    let mut net = Net::new();
    let (ok, _inv) = answered_call(&mut net);
    net.send(ALICE, &alice_in_dialog(&ok, "ACK", 1, "ack1", None));
    net.take(BOB1);
    // The stranger knows Alice's Call-ID and tags (a lamp NOTIFY shows them) and sends BYE,
    // a re-INVITE, a REFER and an INFO from its own address: each is challenged (only Alice,
    // by digest, could move her dialog there), and nothing else happens.
    for (method, cseq) in [("BYE", 5), ("INVITE", 6), ("REFER", 7), ("INFO", 8)] {
        let req = alice_in_dialog(&ok, method, cseq, &format!("f{method}"), None)
            .replace(ALICE, STRANGER);
        net.send(STRANGER, &req);
        assert_eq!(net.one(STRANGER).code(), 407, "{method}");
    }
    // With credentials of another user than the dialog's: 481.
    let ch = {
        let req = alice_in_dialog(&ok, "BYE", 9, "fcred0", None).replace(ALICE, STRANGER);
        net.send(STRANGER, &req);
        net.one(STRANGER)
    };
    let auth = digest_answer(&ch, "1003", "pw1003", "BYE", &ok);
    let req = alice_in_dialog(&ok, "BYE", 10, "fcred1", None)
        .replace(ALICE, STRANGER)
        .replace(
            "Max-Forwards: 70\n",
            &format!("Max-Forwards: 70\nProxy-Authorization: {auth}\n"),
        );
    net.send(STRANGER, &req);
    assert_eq!(net.one(STRANGER).code(), 481);
    assert!(net.take(BOB1).is_empty(), "nothing relayed to Bob");
    assert!(net.take(ALICE).is_empty(), "nothing sent to Alice");
    assert_eq!(net.edge.active_calls(), 1);
    assert_eq!(net.edge.stats.foreign_in_dialog, 1);
    // A forged ACK from elsewhere is dropped (it cannot be challenged).
    net.send(
        STRANGER,
        &alice_in_dialog(&ok, "ACK", 1, "fack", None).replace(ALICE, STRANGER),
    );
    assert!(net.take(BOB1).is_empty());
    // Alice herself still hangs up her call.
    net.send(ALICE, &alice_in_dialog(&ok, "BYE", 2, "bye1", None));
    assert_eq!(net.one(ALICE).code(), 200);
    let bye = net.one(BOB1);
    assert_eq!(*bye.method(), Method::Bye);
}

/// The Proxy-Authorization answering challenge `ch` as `user`, for an in-dialog `method` to
/// the target of `ok`'s Contact.
fn digest_answer(ch: &Message, user: &str, pw: &str, method: &str, ok: &Message) -> String {
    let uri = ok
        .header(Name::Contact)
        .unwrap()
        .trim_matches(['<', '>'])
        .to_string();
    let creds = crate::auth::Credentials {
        user,
        password: pw,
        method,
        uri: &uri,
        nc: 1,
        cnonce: "c9",
    };
    crate::auth::answer(ch.header(Name::ProxyAuthenticate).unwrap(), &creds).unwrap()
}

#[test]
fn a_party_that_moved_takes_its_dialog_along_by_digest() {
    let mut net = Net::new();
    let (ok, _inv) = answered_call(&mut net);
    net.send(ALICE, &alice_in_dialog(&ok, "ACK", 1, "ack1", None));
    net.take(BOB1);
    // Alice's phone (at a trusted address) comes back from another address (a new NAT mapping, a new connection):
    // challenged, then her own credentials move the dialog, and her BYE ends the call.
    let moved = "127.0.0.3:6001";
    let bye = |cseq: u32, branch: &str, auth: &str| {
        alice_in_dialog(&ok, "BYE", cseq, branch, None)
            .replace(ALICE, moved)
            .replace("Max-Forwards: 70\n", &format!("Max-Forwards: 70\n{auth}"))
    };
    net.send(moved, &bye(2, "mv1", ""));
    let ch = net.one(moved);
    assert_eq!(ch.code(), 407);
    let auth = digest_answer(&ch, "1001", "pw1001", "BYE", &ok);
    net.send(
        moved,
        &bye(3, "mv2", &format!("Proxy-Authorization: {auth}\n")),
    );
    assert_eq!(net.one(moved).code(), 200);
    assert_eq!(*net.one(BOB1).method(), Method::Bye);
    // A trusted gateway's new port on the same IP moves its dialog without a digest.
    let mut net = Net::new();
    let (ok, _inv) = answered_call(&mut net);
    net.send(ALICE, &alice_in_dialog(&ok, "ACK", 1, "ack1", None));
    net.take(BOB1);
    let port = "127.0.0.1:6666";
    net.send(
        port,
        &alice_in_dialog(&ok, "BYE", 2, "gw1", None).replace(ALICE, port),
    );
    assert_eq!(net.one(port).code(), 200);
    assert_eq!(*net.one(BOB1).method(), Method::Bye);
}

#[test]
fn a_response_from_elsewhere_does_not_answer_a_ringing_call() {
    let mut net = Net::new();
    net.register("1002", BOB1);
    net.send(ALICE, &invite("1002", "r1", ""));
    net.take(ALICE);
    let inv = net.one(BOB1);
    // A forged 200 for Bob's fork (its branch and Call-ID copied), from another address.
    net.send_msg(
        "127.0.0.9:7001",
        answer(&inv, 200, "evil", Some(SDP_B), BOB1),
    );
    net.send_msg("127.0.0.1:7777", answer(&inv, 486, "evil", None, BOB1));
    assert!(net.take(ALICE).is_empty(), "Alice got nothing");
    assert!(
        net.take("127.0.0.9:7001").is_empty(),
        "no ACK to the forger"
    );
    assert!(net.take(BOB1).is_empty(), "Bob's fork is not cancelled");
    // Bob's own answer still connects the call.
    net.send_msg(BOB1, answer(&inv, 200, "bob", Some(SDP_B), BOB1));
    let ok = net.one(ALICE);
    assert_eq!(ok.code(), 200);
    assert!(ok.to_tag().is_some());
    assert!(body(&ok).contains(&format!("m=audio {}", net.media.port(0, Leg::A))));
}

#[test]
fn a_lamp_refresh_from_another_address_is_refused() {
    let mut net = Net::new();
    let sub = "SUBSCRIBE sip:701@orbit.test SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:6001;branch=z9hG4bKs1\nMax-Forwards: 70\nFrom: <sip:1001@orbit.test>;tag=sub\nTo: <sip:701@orbit.test>\nCall-ID: lamp-1\nCSeq: 1 SUBSCRIBE\nContact: <sip:1001@127.0.0.1:6001>\nEvent: dialog\nExpires: 600\nContent-Length: 0\n\n";
    net.send(ALICE, sub);
    let msgs = net.take(ALICE);
    let ok = msgs.iter().find(|m| m.code() == 200).unwrap();
    let tag = ok.to_tag().unwrap().to_string();
    assert_eq!(net.edge.lamp_subscriptions(), 1);
    // Someone else ends Alice's subscription with her identifiers.
    let unsub = sub
        .replace(
            "To: <sip:701@orbit.test>",
            &format!("To: <sip:701@orbit.test>;tag={tag}"),
        )
        .replace("CSeq: 1", "CSeq: 2")
        .replace("Expires: 600", "Expires: 0")
        .replace("z9hG4bKs1", "z9hG4bKs2")
        .replace(ALICE, STRANGER);
    net.send(STRANGER, &unsub);
    assert_eq!(net.one(STRANGER).code(), 481);
    assert_eq!(net.edge.lamp_subscriptions(), 1);
    assert!(net.take(ALICE).is_empty(), "no NOTIFY: nothing changed");
}

/// Carol calls 700 (her own attended park): the edge answers and announces a slot.
fn carol_consults(net: &mut Net) -> Message {
    net.send(CAROL, &carol_invite("700", "k9"));
    let ok = net.one(CAROL);
    assert_eq!(ok.code(), 200);
    ok
}

#[test]
fn a_transfer_naming_another_users_call_is_refused() {
    let mut net = Net::new();
    let (ok, inv) = answered_call(&mut net);
    net.send(ALICE, &alice_in_dialog(&ok, "ACK", 1, "ack1", None));
    net.take(BOB1);
    let ok_k = carol_consults(&mut net);
    // Bob completes an "attended park" with Replaces naming Carol's consultation call: it
    // would park his caller in the slot promised to Carol and end her call.
    let refer = refer_replacing(&inv, "call-k9", ok_k.to_tag().unwrap(), "carol");
    net.send(BOB1, &refer);
    let r = net.one(BOB1);
    assert_eq!(r.code(), 403);
    assert!(net.edge.orbit().all_parked().next().is_none());
    assert!(net.take(CAROL).is_empty(), "Carol's call is left alone");
    // And the other way: Carol, from her consultation call, names Bob's dialog in his call
    // with Alice: it would park Alice, whose call is not Carol's.
    let replaces = format!(
        "{}%3Bto-tag%3D{}%3Bfrom-tag%3Dbob",
        inv.call_id().replace('@', "%40"),
        inv.from_tag().unwrap()
    );
    let target = ok_k
        .header(Name::Contact)
        .unwrap()
        .trim_matches(['<', '>'])
        .to_string();
    let carol_refer = format!(
        "REFER {target} SIP/2.0\nVia: SIP/2.0/UDP {CAROL};branch=z9hG4bKcr1;rport\nMax-Forwards: 70\nFrom: \"Carol\" <sip:1003@orbit.test>;tag=carol\nTo: {}\nCall-ID: call-k9\nCSeq: 2 REFER\nRefer-To: <sip:1001@orbit.test?Replaces={replaces}>\nContent-Length: 0\n\n",
        ok_k.header(Name::To).unwrap()
    );
    net.send(CAROL, &carol_refer);
    let r = net.one(CAROL);
    assert_eq!(r.code(), 403, "{}", r.head_text());
    assert!(net.edge.orbit().all_parked().next().is_none());
    assert!(net.take(ALICE).is_empty() && net.take(BOB1).is_empty());
    assert_eq!(net.edge.active_calls(), 2);
}

#[test]
fn a_flood_of_new_transactions_from_spoofed_sources_keeps_the_table_bounded() {
    const CAP: usize = 1000;
    let mut cfg = config();
    cfg.limits.max_transactions = CAP;
    // Untrusted sources everywhere: INVITEs are challenged.
    cfg.auth.trusted.clear();
    let mut net = Net::with(cfg);
    let req = |method: &str, n: u32, src: &str| {
        format!(
            "{method} sip:1002@orbit.test SIP/2.0\nVia: SIP/2.0/UDP {src};branch=z9hG4bKfl{n}\nMax-Forwards: 70\nFrom: <sip:1001@orbit.test>;tag=f{n}\nTo: <sip:1002@orbit.test>\nCall-ID: flood-{n}\nCSeq: 1 {method}\nContact: <sip:1001@{src}>\nContent-Length: 0\n\n"
        )
    };
    let methods = ["OPTIONS", "REGISTER", "INVITE", "MESSAGE"];
    let mut answers: HashMap<&str, HashMap<u16, usize>> = HashMap::new();
    for n in 0..100_000u32 {
        // Every request from another spoofed address (10.x.y.z), so no per-source limit helps.
        let src = format!("10.{}.{}.{}:5060", (n >> 16) & 255, (n >> 8) & 255, n & 255);
        let method = methods[n as usize % methods.len()];
        net.edge.on_message(
            net.now,
            flow(&src),
            Bytes::from(req(method, n, &src).replace('\n', "\r\n")),
        );
        for t in net.edge.drain() {
            let m = orbit_sip::parse(t.bytes, &Limits::default()).unwrap();
            *answers
                .entry(method)
                .or_default()
                .entry(m.code())
                .or_default() += 1;
        }
        assert!(net.edge.server_transactions() <= CAP);
    }
    // Every request was answered; past the cap, OPTIONS and challenges without state, the rest
    // told to come back later.
    assert_eq!(answers["OPTIONS"][&200], 25_000);
    assert_eq!(answers["REGISTER"][&401], 25_000);
    assert_eq!(answers["INVITE"][&407], 25_000);
    assert!(
        answers["MESSAGE"][&503] > 24_000,
        "{:?}",
        answers["MESSAGE"]
    );
    assert!(net.edge.stats.stateless > 95_000);
    // Once the transactions time out (64·T1), a phone is served as before.
    net.advance(Duration::from_secs(40));
    assert_eq!(net.edge.server_transactions(), 0);
    net.register("1002", BOB1);
}

#[test]
fn an_expires_that_is_not_a_number_is_refused_not_read_as_a_default() {
    let mut net = Net::new();
    for (n, bad) in ["99999999999", "-5", "1e9"].iter().enumerate() {
        let sub = format!("SUBSCRIBE sip:701@orbit.test SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:6001;branch=z9hG4bKe{n}\nMax-Forwards: 70\nFrom: <sip:1001@orbit.test>;tag=e{n}\nTo: <sip:701@orbit.test>\nCall-ID: exp-{n}\nCSeq: 1 SUBSCRIBE\nContact: <sip:1001@127.0.0.1:6001>\nEvent: dialog\nExpires: {bad}\nContent-Length: 0\n\n");
        net.send(ALICE, &sub);
        let r = net.one(ALICE);
        // The strict parser refuses it already; the registrar and lamps check it again.
        assert_eq!(r.code(), 400, "{bad}");
    }
    assert_eq!(net.edge.lamp_subscriptions(), 0);
}

#[test]
fn one_user_cannot_hold_more_lamps_than_its_share() {
    let mut cfg = config();
    cfg.limits.lamps_per_user = 3;
    let mut net = Net::with(cfg);
    let sub = |n: u32, from: &str| {
        format!("SUBSCRIBE sip:701@orbit.test SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:6001;branch=z9hG4bKl{n}\nMax-Forwards: 70\nFrom: <sip:{from}@orbit.test>;tag=l{n}\nTo: <sip:701@orbit.test>\nCall-ID: lamps-{n}\nCSeq: 1 SUBSCRIBE\nContact: <sip:{from}@127.0.0.1:6001>\nEvent: dialog\nExpires: 600\nContent-Length: 0\n\n")
    };
    for n in 0..3 {
        net.send(ALICE, &sub(n, "1001"));
        assert!(net.take(ALICE).iter().any(|m| m.code() == 200));
    }
    net.send(ALICE, &sub(3, "1001"));
    let r = net.one(ALICE);
    assert_eq!((r.code(), r.reason()), (403, "Too Many Lamps"));
    // Another user still subscribes.
    net.send(ALICE, &sub(4, "1002"));
    assert!(net.take(ALICE).iter().any(|m| m.code() == 200));
    assert_eq!(net.edge.lamp_subscriptions(), 4);
}

/// An INVITE from Alice at an untrusted address, answering the edge's challenge.
fn authenticated_invite(net: &mut Net, to: &str, branch: &str) -> u16 {
    net.send(ALICE, &invite(to, branch, ""));
    let ch = net.one(ALICE);
    assert_eq!(ch.code(), 407);
    let creds = crate::auth::Credentials {
        user: "1001",
        password: "pw1001",
        method: "INVITE",
        uri: &format!("sip:{to}@orbit.test"),
        nc: 1,
        cnonce: "c1",
    };
    let auth = crate::auth::answer(ch.header(Name::ProxyAuthenticate).unwrap(), &creds).unwrap();
    let again = invite(
        to,
        &format!("{branch}x"),
        &format!("Proxy-Authorization: {auth}\n"),
    )
    .replace("CSeq: 1 INVITE", "CSeq: 2 INVITE")
    .replace(&format!("call-{branch}x"), &format!("call-{branch}"));
    net.send(ALICE, &again);
    let codes: Vec<u16> = net.take(ALICE).iter().map(|m| m.code()).collect();
    *codes.iter().find(|&&c| c != 100).unwrap_or(&100)
}

#[test]
fn one_user_cannot_start_more_calls_than_its_share() {
    let mut cfg = config();
    cfg.auth.trusted.clear();
    cfg.limits.calls_per_user = 2;
    let mut net = Net::with(cfg);
    net.register("1002", BOB1);
    // Two ringing calls are Alice's share; the third is refused, and nothing rings for it.
    assert_eq!(authenticated_invite(&mut net, "1002", "u1"), 100);
    assert_eq!(authenticated_invite(&mut net, "1002", "u2"), 100);
    let bob_got = net.take(BOB1);
    assert_eq!(bob_got.len(), 2);
    assert_eq!(authenticated_invite(&mut net, "1002", "u3"), 486);
    assert!(net.take(BOB1).is_empty());
    assert_eq!(net.edge.active_calls(), 2);
    // Bob turns one down: that call is over, and Alice may call again.
    net.send_msg(BOB1, answer(&bob_got[0], 603, "bob", None, BOB1));
    assert_eq!(net.edge.active_calls(), 1);
    net.take(ALICE);
    assert_eq!(authenticated_invite(&mut net, "1002", "u4"), 100);
}

#[test]
fn an_invite_with_replaces_naming_another_users_dialog_is_refused() {
    let mut net = Net::new();
    let (ok, _inv) = answered_call(&mut net);
    net.send(ALICE, &alice_in_dialog(&ok, "ACK", 1, "ack1", None));
    net.take(BOB1);
    // Carol names Alice's dialog with the edge: she would take Alice's place in the call.
    let replaces = format!(
        "Replaces: {};to-tag={};from-tag=alice\n",
        ok.call_id(),
        ok.to_tag().unwrap()
    );
    let inv = carol_invite("1002", "rp1").replace(
        "Content-Type: application/sdp",
        &format!("{replaces}Content-Type: application/sdp"),
    );
    net.send(CAROL, &inv);
    let r = net.one(CAROL);
    assert_eq!((r.code(), r.reason()), (403, "Not Your Call"));
    assert!(net.take(ALICE).is_empty() && net.take(BOB1).is_empty());
    assert_eq!(net.edge.active_calls(), 1);
}

#[test]
fn a_lamp_key_retrieving_a_parked_call_with_replaces_is_a_retrieve() {
    let mut net = Net::new();
    let (ok, _inv) = super::park::park_by_bob(&mut net, "700");
    net.take(BOB1);
    assert_eq!(net.edge.orbit().all_parked().count(), 1);
    // Carol's lamp key names the parked caller's dialog, as the lamp document gives it.
    let replaces = format!(
        "Replaces: {};to-tag={};from-tag=alice\n",
        ok.call_id(),
        ok.to_tag().unwrap()
    );
    let inv = carol_invite("701", "lk1").replace(
        "Content-Type: application/sdp",
        &format!("{replaces}Content-Type: application/sdp"),
    );
    net.send(CAROL, &inv);
    let r = net.one(CAROL);
    assert_eq!(r.code(), 200, "{}", r.head_text());
    assert_eq!(net.edge.orbit().all_parked().count(), 0);
}

#[test]
fn large_requests_fill_the_transaction_table_by_bytes_not_only_by_count() {
    const CAP: usize = 1000;
    let mut cfg = config();
    cfg.limits.max_transactions = CAP;
    let mut net = Net::with(cfg);
    // OPTIONS of about 4 KB each (padded with Vias), from spoofed sources: the table's byte
    // budget (512 bytes a transaction on average) stops it long before its count.
    let vias: String = (0..60)
        .map(|i| format!("Via: SIP/2.0/UDP 198.51.100.{i}:5060;branch=z9hG4bKpad{i}\n"))
        .collect();
    let mut size = 0;
    for n in 0..CAP as u32 {
        let src = format!("10.1.{}.{}:5060", (n >> 8) & 255, n & 255);
        let req = format!("OPTIONS sip:orbit.test SIP/2.0\nVia: SIP/2.0/UDP {src};branch=z9hG4bKbig{n}\n{vias}Max-Forwards: 70\nFrom: <sip:x@orbit.test>;tag=b{n}\nTo: <sip:orbit.test>\nCall-ID: big-{n}\nCSeq: 1 OPTIONS\nContent-Length: 0\n\n");
        let req = req.replace('\n', "\r\n");
        size = req.len();
        net.edge.on_message(net.now, flow(&src), Bytes::from(req));
        assert_eq!(net.edge.drain().count(), 1, "each is answered");
    }
    let held = net.edge.server_transactions();
    assert!(size > 3000);
    assert!(
        held * size <= CAP * 512,
        "{held} transactions of {size} bytes held"
    );
    assert!(held * size > CAP * 512 - size, "the budget is used: {held}");
}

#[test]
fn a_stranger_cannot_list_extensions_by_registering() {
    let mut net = Net::new();
    let reg = |ext: &str| {
        format!("REGISTER sip:orbit.test SIP/2.0\nVia: SIP/2.0/UDP {STRANGER};branch=z9hG4bKenum{ext}\nMax-Forwards: 70\nFrom: <sip:{ext}@orbit.test>;tag=e\nTo: <sip:{ext}@orbit.test>\nCall-ID: enum-{ext}\nCSeq: 1 REGISTER\nContact: <sip:{ext}@{STRANGER}>\nContent-Length: 0\n\n")
    };
    // An extension that exists and one that does not get the same answer: a challenge.
    for ext in ["1001", "9999"] {
        net.send(STRANGER, &reg(ext));
        assert_eq!(net.one(STRANGER).code(), 401, "{ext}");
    }
}

#[test]
fn the_answering_fork_gets_the_media_leg_afresh_after_another_forks_early_media() {
    let mut net = Net::new();
    net.register("1002", BOB1);
    net.register("1002", BOB2);
    net.send(ALICE, &invite("1002", "fm1", ""));
    net.take(ALICE);
    let inv1 = net.one(BOB1);
    let inv2 = net.one(BOB2);
    // Bob's first phone sends early media (the relay may latch onto it)...
    net.send_msg(BOB1, answer(&inv1, 183, "bob1", Some(SDP_B), BOB1));
    net.media.take_feeds();
    // ...and his second phone answers: the leg must not stay with the first.
    let sdp2 = SDP_B.replace("10.2.2.2", "10.2.2.9");
    net.send_msg(BOB2, answer(&inv2, 200, "bob2", Some(&sdp2), BOB2));
    assert!(net.media.take_feeds().contains(&"vacate B".to_string()));
    assert!(net
        .media
        .remotes()
        .ends_with(&[(crate::media::Leg::B, Some("10.2.2.9:5000".parse().unwrap()))]));
}

#[test]
fn an_identity_a_phone_asserts_is_not_passed_on() {
    let mut net = Net::new();
    net.register("1002", BOB1);
    net.send(ALICE, &invite("1002", "c1", ""));
    net.take(ALICE);
    let inv = net.one(BOB1);
    let ok = super::registry::with_header(
        answer(&inv, 200, "bob", Some(SDP_B), BOB1),
        "P-Asserted-Identity",
        "\"Bank\" <sip:bank@example.com>",
    );
    net.send_msg(BOB1, ok);
    let ok = net.one(ALICE);
    assert_eq!(ok.code(), 200);
    assert_eq!(ok.header_other("P-Asserted-Identity"), None);
}

#[test]
fn a_request_never_answered_is_dropped_after_its_time_without_a_timer_per_request() {
    let mut net = Net::new();
    let text = "OPTIONS sip:orbit.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.9:5060;branch=z9hG4bKlost\r\nFrom: <sip:x@orbit.test>;tag=x\r\nTo: <sip:orbit.test>\r\nCall-ID: lost\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
    let msg = orbit_sip::parse(
        Bytes::from_static(text.as_bytes()),
        &orbit_sip::message::Limits::default(),
    )
    .unwrap();
    let key = orbit_sip::key::ServerKey::of(&msg, "127.0.0.9:5060".parse().unwrap());
    // A path that forgets to answer (none should): the table would keep it for ever.
    let before = net.edge.timers.len();
    assert!(net
        .edge
        .open_server(&key, false, flow("127.0.0.9:5060"), 200));
    assert_eq!(net.edge.timers.len(), before, "no timer of its own");
    let n = net.edge.server_transactions();
    net.advance(crate::services::transactions::UNANSWERED - Duration::from_secs(11));
    assert_eq!(net.edge.server_transactions(), n);
    net.advance(Duration::from_secs(22));
    assert_eq!(net.edge.server_transactions(), n - 1);
}

#[test]
fn invites_with_sdp_the_relay_cannot_read_give_their_relay_ports_back() {
    let mut net = Net::new();
    net.register("1002", BOB1);
    // 300 of them (the range holds 250 calls): each refused, none keeps its ports.
    for n in 0..300 {
        let bad = invite("1002", &format!("bad{n}"), "")
            .replace("m=audio 4000 RTP/AVP 0 101", "m=audio xxxx RTP/AVP 0 101");
        net.send(ALICE, &bad);
        let r: Vec<u16> = net.take(ALICE).iter().map(|m| m.code()).collect();
        assert!(r.contains(&488), "{r:?}");
    }
    assert_eq!(net.media.open_sessions(), 0);
    assert_eq!(net.edge.media_ports_in_use(), 0);
    // An ordinary call still gets its ports.
    net.send(ALICE, &invite("1002", "good", ""));
    assert_eq!(net.one(BOB1).method(), &orbit_sip::Method::Invite);
}
