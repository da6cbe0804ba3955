//! Park by REFER (RFC 3515): a blind transfer to the park extension or a slot, or the REFER
//! with `Replaces` that completes an attended park, from either call. The transferor hears the
//! outcome in a NOTIFY (message/sipfrag) and its leg ends once that NOTIFY is answered.
//!
//! ```text
//! REFER 700 ──▶ 202 ──▶ Park ──▶ NOTIFY "200 OK" ──▶ BYE transferor
//!                          └──▶ NOTIFY "503 Parking Lot Full" (the call stays)
//! ```

use super::*;

/// The dialog a REFER's Replaces names, if it is one of the REFER sender's own: a user may
/// complete a transfer only with its own calls (naming someone else's dialog would take over
/// that call). `Err` when it names a dialog of another user (403, logged).
pub(crate) fn own_dialog_named(
    edge: &Parking,
    id: u64,
    from: Side,
    r: &Replaces,
) -> Result<Option<(u64, Side)>, ()> {
    let Some((cid, side)) = edge.dialog_named(r) else {
        return Ok(None);
    };
    let me = &edge.calls[&id].dialog_ref(from).user;
    let named = &edge.calls[&cid].dialog_ref(side).user;
    if me != named {
        warn!(by = %me, owner = %named, call_id = %r.call_id, "Replaces names another user's dialog: refused");
        return Err(());
    }
    Ok(Some((cid, side)))
}

pub(crate) fn on_refer(
    edge: &mut Parking,
    now: Instant,
    id: u64,
    from: Side,
    key: ServerKey,
    msg: Message,
) {
    let Some(target) = msg
        .header(Name::ReferTo)
        .and_then(NameAddr::parse)
        .map(|n| n.uri.to_string())
    else {
        return edge.reply(now, &key, Response::to(&msg, 400));
    };
    let replaces = Replaces::from_refer_to(&target);
    let named = match &replaces {
        Some(r) => match own_dialog_named(edge, id, from, r) {
            Ok(n) => n,
            Err(()) => {
                return edge.reply(now, &key, Response::to(&msg, 403).reason("Not Your Call"))
            }
        },
        None => None,
    };
    let user = orbit_sip::Uri::parse(target.split('?').next().unwrap_or(""))
        .ok()
        .and_then(|u| u.user().map(str::to_string))
        .unwrap_or_default();
    let tenant = edge.cfg.tenant.domain.clone();
    let flow = edge.calls[&id].dialog_ref(from).flow;
    let refuse = |edge: &mut Parking, code: u16, reason: &str| {
        let bytes = Response::to(&msg, code).reason(reason).encode(flow.addr);
        edge.reply_bytes(now, &key, code, bytes);
    };
    let no_sub = msg
        .header_other("Refer-Sub")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("false"));
    let extra: &[(&str, &str)] = if no_sub {
        &[("Refer-Sub", "false")]
    } else {
        &[]
    };
    let event = format!("refer;id={}", msg.cseq.seq);

    // Attended park completed from the consultation call (the call to the park extension):
    // its Replaces names the parker's dialog in the call to park.
    if let Some(c) = edge.park.consults.get(&id).cloned() {
        let Some((ocid, oside)) = named else {
            return refuse(edge, 403, "Transfer Only To Park");
        };
        if ocid == id || !parkable(edge, ocid) {
            return edge.reply(now, &key, Response::to(&msg, 491));
        }
        edge.reply(now, &key, Response::to(&msg, 202).pairs(extra));
        edge.park.announced.remove(&c.slot);
        let how = ParkBy::FromConsult {
            consult: id,
            from,
            event,
            no_sub,
        };
        return propose_park(edge, now, ocid, oside, c.lot, Some(c.slot), how);
    }

    // Attended park completed from the call to park: Replaces names the consultation call,
    // whose slot was announced. Blind park otherwise: the park extension or a slot.
    let mut consult_call = None;
    let (lot, slot) = if replaces.is_some() {
        match named.and_then(|(c, _)| Some((c, edge.park.consults.get(&c).cloned()?))) {
            Some((c, consult)) => {
                consult_call = Some(c);
                (consult.lot, Some(consult.slot))
            }
            None => return refuse(edge, 403, "Transfer Only To Park"),
        }
    } else if let Some(l) = edge.lot_named(&user) {
        (l.key(), None)
    } else if let Some(s) = edge.slot_number(&user) {
        (
            edge.orbit.lot_of(&tenant, s).expect("slot has a lot").key(),
            Some(s),
        )
    } else {
        // Transfers elsewhere are not offered; the party keeps its call.
        return refuse(edge, 403, "Transfer Only To Park");
    };
    if !parkable(edge, id) {
        return edge.reply(now, &key, Response::to(&msg, 491));
    }
    edge.reply(now, &key, Response::to(&msg, 202).pairs(extra));
    if let Some(s) = slot {
        if consult_call.is_some() {
            edge.park.announced.remove(&s);
        }
    }
    let how = ParkBy::Refer {
        event,
        no_sub,
        consult_call,
    };
    propose_park(edge, now, id, from, lot, slot, how);
}

/// NOTIFY the transferor of the REFER's outcome (RFC 3515 with a final message/sipfrag);
/// `bye`: end its dialog once the NOTIFY is answered.
pub(crate) fn refer_notify(
    edge: &mut Parking,
    now: Instant,
    id: u64,
    to: Side,
    event: &str,
    frag: &str,
    bye: Option<Side>,
) {
    let body = format!("{frag}\r\n");
    let b2bua = &mut edge.b2bua;
    let call = b2bua.calls.get_mut(&id).expect("present");
    b2bua.sv.send_in_dialog(
        now,
        call.dialog(to),
        "NOTIFY",
        &[
            ("Event", event),
            ("Subscription-State", "terminated;reason=noresource"),
        ],
        Some(("message/sipfrag;version=2.0", body.as_bytes())),
        Owner::ReferNotify { call: id, bye },
    );
}

pub(crate) fn notify_done(edge: &mut Parking, now: Instant, id: u64, bye: Option<Side>) {
    if let Some(side) = bye {
        if edge
            .calls
            .get(&id)
            .is_some_and(|c| c.vacant() == Some(side) && c.departed_live())
        {
            call::send_bye_departed(edge, now, id, side);
        }
    }
}
