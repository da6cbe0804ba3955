//! Requests inside a call's dialogs: taken only over the dialog's own flow with a growing CSeq
//! ([`accept`]); the router then hands BYE here ([`on_bye`]), REFER and parked calls' requests
//! to park, and everything else (re-INVITE, UPDATE, INFO, ...) back here to be relayed to the
//! other party with its SDP rewritten to the relay ([`relay_request`]). An ACK for a 2xx is
//! forwarded when the other side ACKs us (delayed offer).

use super::*;

/// Whether a request naming a dialog of call `id` acts in it: over the dialog's own flow (or
/// its party's new one, [`rebind`]), in a dialog still in the call, with a CSeq that grows. Answers what stops here (481, 500, a
/// vacant side's BYE) and takes ACKs; `Some` hands the request to the feature that owns its
/// method ([`crate::router`]).
pub(crate) fn accept(
    edge: &mut Calls,
    now: Instant,
    id: u64,
    flow: Flow,
    msg: &Message,
    key: Option<ServerKey>,
) -> Option<(Side, ServerKey)> {
    let Some(call) = edge.calls.get_mut(&id) else {
        if let Some(k) = key {
            edge.reply(now, &k, Response::to(msg, 481));
        }
        return None;
    };
    let tag = msg.to_tag().unwrap_or("");
    let side = match call.side_of(msg.call_id(), tag) {
        Some(s) if call.dialog_ref(s).accepts(&flow) => s,
        Some(s) => {
            rebind(edge, now, id, s, flow, msg, key.as_ref()).ok()?;
            s
        }
        None => {
            if let Some(k) = key {
                edge.reply(now, &k, Response::to(msg, 481));
            }
            return None;
        }
    };
    let call = edge.calls.get_mut(&id).expect("present");
    let method = msg.method().clone();
    if method == Method::Ack {
        on_ack(edge, now, id, side, msg);
        return None;
    }
    let key = key?;
    if call.vacant == Some(side) {
        // The transferor, after the park: its BYE is welcome, nothing else is relayed.
        let code = if method == Method::Bye { 200 } else { 481 };
        edge.reply(now, &key, Response::to(msg, code));
        return None;
    }
    // In-dialog CSeq must grow (RFC 3261 §12.2.2).
    let d = call.dialog(side);
    if msg.cseq.seq <= d.remote_cseq && d.remote_cseq != 0 {
        let r = Response::to(msg, 500).header("Retry-After", "1");
        edge.reply(now, &key, r);
        return None;
    }
    d.remote_cseq = msg.cseq.seq;
    if side == Side::B && !call.b_answered() {
        // The callee's dialog is not established yet.
        edge.reply(now, &key, Response::to(msg, 481));
        return None;
    }
    Some((side, key))
}

/// A request in dialog `side` of call `id` over another flow than the dialog's: its party
/// moved (a TCP/TLS connection dropped and came back, a NAT mapping changed), or a stranger
/// read the dialog's identifiers (lamp NOTIFYs carry Call-IDs and tags). Only the party may
/// move the dialog: from the same IP when that IP is a trusted source (a gateway's new port),
/// else by digest as the dialog's own user, challenged with 407. `Err`: answered (an ACK,
/// which cannot be challenged, dropped) and nothing changed.
fn rebind(
    edge: &mut Calls,
    now: Instant,
    id: u64,
    side: Side,
    flow: Flow,
    msg: &Message,
    key: Option<&ServerKey>,
) -> Result<(), ()> {
    let d = edge.calls[&id].dialog_ref(side);
    let (old, user) = (d.flow, d.user.clone());
    let ip = flow.addr.ip();
    let moved = match key {
        None => false,
        Some(_) if edge.is_trusted(ip) => old.addr.ip() == ip && old.proto == flow.proto,
        Some(k) => match edge.check_auth(now, ip, msg, Name::ProxyAuthorization) {
            Ok(u) => u == user,
            Err((code, challenges)) if code != 403 => {
                let r = Response::to(msg, 407).headers("Proxy-Authenticate", &challenges);
                edge.reply(now, k, r);
                return Err(());
            }
            Err(_) => false,
        },
    };
    if !moved {
        edge.sv.stats.foreign_in_dialog += 1;
        debug!(method = %msg.method(), from = %flow.addr, "in-dialog request from outside the dialog's flow");
        if let Some(k) = key {
            edge.reply(now, k, Response::to(msg, 481));
        }
        return Err(());
    }
    info!(%user, from = %old.addr, to = %flow.addr, "dialog moved to its party's new flow");
    edge.calls.get_mut(&id).expect("present").dialog(side).flow = flow;
    Ok(())
}

/// A party hangs up: 200 to it, BYE to the other party, the media released at once.
pub(crate) fn on_bye(
    edge: &mut Calls,
    now: Instant,
    id: u64,
    side: Side,
    key: ServerKey,
    msg: Message,
) {
    edge.reply(now, &key, Response::to(&msg, 200));
    info!(by = ?side, "hangup");
    let call = edge.calls.get_mut(&id).expect("present");
    call.state = CallState::Ending;
    call.ok_retx = [None, None];
    if let Some(r) = call.media.take() {
        edge.sv.media.close(now, r);
    }
    send_bye(edge, now, id, side.other());
    if edge.calls.get(&id).map(|c| c.pending_byes) == Some(0) {
        end_call(edge, id);
    }
}

/// A relayed request got no answer: the sender gets 408, and another re-INVITE may follow.
pub(crate) fn relay_timed_out(
    edge: &mut Calls,
    now: Instant,
    id: u64,
    stx: &ServerKey,
    req: &Message,
) {
    if *req.method() == Method::Invite {
        if let Some(c) = edge.calls.get_mut(&id) {
            c.invite_busy = false;
        }
    }
    edge.reply(now, stx, Response::to(req, 408));
}

pub(crate) fn relay_request(
    edge: &mut Calls,
    now: Instant,
    id: u64,
    from: Side,
    key: ServerKey,
    msg: Message,
) {
    let call = edge.calls.get_mut(&id).expect("present");
    if call.state == CallState::Ending {
        return edge.reply(now, &key, Response::to(&msg, 481));
    }
    let invite = *msg.method() == Method::Invite;
    if invite {
        if call.invite_busy || call.ack_pending.is_some() {
            return edge.reply(now, &key, Response::to(&msg, 491));
        }
        call.invite_busy = true;
    }
    let body = match relay_sdp(
        &mut edge.sv.media,
        call,
        from,
        &msg,
        call.dialog_ref(from).flow.addr.ip(),
    ) {
        Ok(b) => b,
        Err(()) => {
            if invite {
                call.invite_busy = false;
            }
            return edge.reply(now, &key, Response::to(&msg, 488));
        }
    };
    let to = from.other();
    let d = call.dialog(to);
    d.local_cseq += 1;
    let cseq = d.local_cseq;
    let ct = msg.content_type().unwrap_or("application/sdp").to_string();
    let mut extra: Vec<(&str, &str)> = vec![];
    for (name, raw, v) in msg.all_headers() {
        match name {
            Name::Event | Name::Supported => extra.push((raw, v)),
            Name::Other
                if ["subscription-state", "info-package", "session-expires"]
                    .iter()
                    .any(|h| raw.eq_ignore_ascii_case(h)) =>
            {
                extra.push((raw, v))
            }
            _ => {}
        }
    }
    let body_ref: Option<(&str, &[u8])> = match &body {
        Some(b) => Some((ct.as_str(), b.as_slice())),
        None if !msg.body.is_empty() => Some((ct.as_str(), &msg.body[..])),
        None => None,
    };
    let branch = edge.new_branch();
    let call = edge.calls.get(&id).expect("present");
    let d = call.dialog_ref(to);
    let flow = d.flow;
    let bytes = d.request(
        &edge.sv.local,
        msg.method().as_str(),
        cseq,
        &branch.branch,
        &extra,
        body_ref,
    );
    if invite {
        // Say "trying" to the sender so it stops retransmitting the re-INVITE.
        edge.reply(now, &key, Response::to(&msg, 100));
    }
    edge.send_request(
        now,
        flow,
        branch,
        invite,
        bytes,
        Owner::Relay {
            call: id,
            from,
            stx: key,
            req: Box::new(msg),
        },
    );
}

pub(crate) fn relay_response(
    edge: &mut Calls,
    now: Instant,
    id: u64,
    from: Side,
    stx: &ServerKey,
    req: &Message,
    msg: Message,
) {
    let code = msg.code();
    if code == 100 {
        return;
    }
    let Some(call) = edge.calls.get_mut(&id) else {
        // The call ended meanwhile: the sender still gets its answer (its transaction would
        // otherwise wait in the table), without the body meant for a call that is gone.
        if code >= 200 {
            edge.reply(now, stx, Response::to(req, code).reason(msg.reason()));
        }
        return;
    };
    let to = from.other();
    let invite = *req.method() == Method::Invite;
    if invite && (200..300).contains(&code) {
        if let Some((s, cseq, ack)) = call.acked.clone() {
            if s == to && cseq == msg.cseq.seq {
                let f = call.dialog(to).flow;
                edge.send(f, ack);
                return;
            }
        }
        if call.ack_pending.is_some() {
            return; // a retransmitted 2xx while we wait for the ACK
        }
    }
    let body = relay_sdp(
        &mut edge.sv.media,
        call,
        to,
        &msg,
        call.dialog_ref(to).flow.addr.ip(),
    )
    .ok()
    .flatten();
    let ct = msg.content_type().unwrap_or("application/sdp").to_string();
    let body_ref: Option<(&str, &[u8])> = match &body {
        Some(b) => Some((ct.as_str(), b.as_slice())),
        None if !msg.body.is_empty() => Some((ct.as_str(), &msg.body[..])),
        None => None,
    };
    let from_d = call.dialog_ref(from);
    let contact = edge
        .sv
        .local
        .contact(&from_d.contact_user, from_d.flow.proto);
    let bytes = Response::to(req, code)
        .reason(msg.reason())
        .header("Contact", &contact)
        .opt_body(body_ref)
        .encode(from_d.flow.addr);
    if invite && code >= 200 {
        call.invite_busy = false;
        if code < 300 {
            call.ok_retx[from as usize] = Some(OkRetx {
                cseq: req.cseq.seq,
                rt: Retransmitter::new(now, edge.sv.timing),
                bytes: bytes.clone(),
            });
            call.ack_pending = Some((from, req.cseq.seq, to, msg.cseq.seq));
            schedule_call(edge, id);
        }
    }
    edge.reply_bytes(now, stx, code, bytes);
}

pub(crate) fn on_ack(edge: &mut Calls, now: Instant, id: u64, side: Side, msg: &Message) {
    let call = edge.calls.get_mut(&id).expect("present");
    if let Some(r) = &call.ok_retx[side as usize] {
        if r.cseq == msg.cseq.seq {
            call.ok_retx[side as usize] = None;
            // The caller has our 2xx: its INVITE transaction, which lingers for 32 s to
            // absorb retransmissions, need not keep a copy to resend.
            if side == Side::A && msg.cseq.seq == call.a_invite.cseq.seq {
                if let Some(e) = edge.sv.stx.get_mut(&call.a_stx) {
                    e.tx.forget_response();
                }
            }
        }
    }
    if call.own_answer == Some((side, msg.cseq.seq)) {
        // Our own 2xx (retrieve) was offer or answer; a delayed offer's answer comes here.
        call.own_answer = None;
        if call.state == CallState::Answered {
            call.state = CallState::Confirmed;
        }
        if is_sdp(msg) {
            if let (Ok(info), Some(m)) = (orbit_media::sdp::media_info(&msg.body), call.media) {
                m.set_remote(
                    &mut edge.sv.media,
                    side.leg(),
                    info.rtp,
                    info.rtcp,
                    call.dialog_ref(side).flow.addr.ip(),
                );
            }
            call.sdp[side as usize] = Some(msg.body.clone());
        }
        return;
    }
    let Some((from, cseq, to, to_cseq)) = call.ack_pending else {
        return;
    };
    if from != side || cseq != msg.cseq.seq {
        return;
    }
    call.ack_pending = None;
    if call.state == CallState::Answered {
        call.state = CallState::Confirmed;
    }
    // Delayed offer: the ACK carries the answer.
    let body = relay_sdp(
        &mut edge.sv.media,
        call,
        side,
        msg,
        call.dialog_ref(side).flow.addr.ip(),
    )
    .ok()
    .flatten();
    let branch = edge.new_branch();
    let call = edge.calls.get(&id).expect("present");
    let d = call.dialog_ref(to);
    let flow = d.flow;
    let ack = d.request(
        &edge.sv.local,
        "ACK",
        to_cseq,
        &branch.branch,
        &[],
        body.as_deref().map(|b| ("application/sdp", b)),
    );
    edge.calls.get_mut(&id).expect("present").acked = Some((to, to_cseq, ack.clone()));
    edge.send(flow, ack);
    let _ = now;
}
