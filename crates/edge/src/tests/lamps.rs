//! Busy lamp field (BLF): SUBSCRIBE to a park slot or the whole lot, and the dialog-info
//! NOTIFYs that follow the parked call, their refresh, expiry and refusals.

use orbit_sip::Method;

use super::park::{ok_to, parked, CAROL};
use super::*;

pub(super) fn subscribe(
    user: &str,
    branch: &str,
    cseq: u32,
    to_tag: Option<&str>,
    extra: &str,
) -> String {
    let to = match to_tag {
        Some(t) => format!("<sip:{user}@orbit.test>;tag={t}"),
        None => format!("<sip:{user}@orbit.test>"),
    };
    format!(
        "SUBSCRIBE sip:{user}@orbit.test SIP/2.0\nVia: SIP/2.0/UDP {CAROL};branch=z9hG4bK{branch};rport\nMax-Forwards: 70\nFrom: <sip:1003@orbit.test>;tag=lamp{user}\nTo: {to}\nCall-ID: lamp-{user}\nCSeq: {cseq} SUBSCRIBE\nContact: <sip:1003@{CAROL}>\nEvent: dialog\nAccept: application/dialog-info+xml\n{extra}Content-Length: 0\n\n"
    )
}

/// The NOTIFYs sent to Carol, answered, as (version, body).
pub(super) fn lamp_notifies(net: &mut Net) -> Vec<(String, String)> {
    let msgs = net.take(CAROL);
    let mut out = vec![];
    let mut seen = std::collections::HashSet::new();
    // Retransmissions (same CSeq) count once.
    for m in msgs.iter().filter(|m| {
        *m.method() == Method::Notify && seen.insert((m.call_id().to_string(), m.cseq.seq))
    }) {
        let b = body(m);
        let v = b
            .split("dialog-info\" version=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .to_string();
        out.push((
            m.header_other("Subscription-State").unwrap().to_string(),
            format!("v{v} {b}"),
        ));
        net.send_msg(CAROL, ok_to(m));
    }
    out
}

#[test]
fn lamps_follow_the_slot_and_the_lot() {
    let mut net = Net::new();
    net.register("1003", CAROL);
    net.send(CAROL, &subscribe("701", "s1", 1, None, "Expires: 600\n"));
    let msgs = net.take(CAROL);
    let ok = msgs
        .iter()
        .find(|m| m.code() == 200)
        .expect("200 to SUBSCRIBE");
    assert_eq!(ok.header(Name::Expires), Some("600"));
    let tag = ok.to_tag().unwrap().to_string();
    let n = msgs
        .iter()
        .find(|m| *m.method() == Method::Notify)
        .expect("first NOTIFY");
    assert!(body(n).contains("version=\"0\" state=\"full\" entity=\"sip:701@orbit.test\""));
    assert!(!body(n).contains("<dialog "), "free slot: no dialog");
    assert!(n
        .header_other("Subscription-State")
        .unwrap()
        .starts_with("active;expires=60"));
    net.send_msg(CAROL, ok_to(n));
    // The whole lot too.
    net.send(CAROL, &subscribe("700", "s2", 1, None, ""));
    let msgs = net.take(CAROL);
    let lot_tag = msgs
        .iter()
        .find(|m| m.code() == 200)
        .unwrap()
        .to_tag()
        .unwrap()
        .to_string();
    let first = msgs.iter().find(|m| *m.method() == Method::Notify).unwrap();
    assert!(body(first).contains("entity=\"sip:700@orbit.test\""));
    net.send_msg(CAROL, ok_to(first));

    let ok_a = parked(&mut net);
    let n = lamp_notifies(&mut net);
    assert_eq!(n.len(), 2, "slot and lot watchers told");
    for (_, b) in &n {
        assert!(b.starts_with("v1 "), "{b}");
        assert!(b.contains("<state>confirmed</state>"));
        assert!(b.contains("call-id=\"call-c1\""), "{b}");
        assert!(b.contains("remote-tag=\"alice\""));
        assert!(b.contains("<identity display=\"Alice\">sip:1001@orbit.test</identity>"));
    }
    // Refresh: a NOTIFY with the state again. Too short: 423.
    net.send(
        CAROL,
        &subscribe("701", "s3", 2, Some(&tag), "Expires: 30\n"),
    );
    assert_eq!(net.one(CAROL).code(), 423);
    net.send(
        CAROL,
        &subscribe("701", "s4", 3, Some(&tag), "Expires: 120\n"),
    );
    let n = lamp_notifies(&mut net);
    assert_eq!(n.len(), 1);
    assert!(n[0].1.starts_with("v2 ") && n[0].1.contains("<dialog "));
    // Alice hangs up: the lamps go out.
    net.send(ALICE, &alice_in_dialog(&ok_a, "BYE", 2, "bye1", None));
    let n = lamp_notifies(&mut net);
    assert_eq!(n.len(), 2);
    assert!(n.iter().all(|(_, b)| !b.contains("<dialog ")));
    // Un-subscribe the lot: final NOTIFY; the slot subscription expires on its own.
    net.send(
        CAROL,
        &subscribe("700", "s5", 2, Some(&lot_tag), "Expires: 0\n"),
    );
    let n = lamp_notifies(&mut net);
    assert_eq!(n.len(), 1);
    assert!(n[0].0.starts_with("terminated"));
    net.advance(Duration::from_secs(121));
    let n = lamp_notifies(&mut net);
    assert_eq!(n.len(), 1, "{n:?}");
    assert_eq!(n[0].0, "terminated;reason=timeout");
    assert_eq!(net.edge.lamp_subscriptions(), 0);
    // Other packages and unknown resources.
    net.send(
        CAROL,
        &subscribe("701", "s6", 1, None, "")
            .replace("Event: dialog", "Event: presence")
            .replace("lamp-701", "lamp-x"),
    );
    assert_eq!(net.one(CAROL).code(), 489);
    net.send(CAROL, &subscribe("799", "s7", 1, None, ""));
    assert_eq!(net.one(CAROL).code(), 404);
}
