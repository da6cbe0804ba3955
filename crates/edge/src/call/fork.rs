//! Starting a call and its forks: the caller's INVITE is answered 100 and sent, with the
//! relay's SDP, to every contact of the callee (or another site's edge). The first 2xx wins;
//! the other forks get CANCEL (once they have answered provisionally, so the CANCEL cannot
//! overtake the INVITE), or ACK and BYE if they answer late. Failures are ranked as RFC 3261
//! §16.7 ranks them.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BranchState {
    Calling,
    Proceeding,
    Done,
}

/// One fork of an INVITE we sent (to a callee's contact, or a recall's).
pub(crate) struct Branch {
    pub key: ClientKey,
    pub state: BranchState,
    /// A CANCEL is due as soon as the fork answers provisionally (sending it before any
    /// response could overtake the INVITE).
    pub cancel_wanted: bool,
    /// The fork goes to another site's edge (whose asserted identity of the callee is passed
    /// on; a phone's never is).
    pub trunk: bool,
}

impl Branch {
    pub(crate) fn new(key: ClientKey) -> Branch {
        Branch {
            key,
            state: BranchState::Calling,
            cancel_wanted: false,
            trunk: false,
        }
    }

    /// A provisional response arrived: the fork is proceeding. True when a CANCEL was waiting
    /// for it and must go now.
    pub(crate) fn provisional(&mut self) -> bool {
        if self.state == BranchState::Calling {
            self.state = BranchState::Proceeding;
        }
        std::mem::take(&mut self.cancel_wanted)
    }
}

/// The initial INVITE of a dialog we start (`d`, as the UAC), to one fork `t` of the callee.
pub(crate) fn invite_bytes(
    edge: &Services,
    d: &Dialog,
    t: &Target,
    branch: &str,
    max_forwards: &str,
    sdp: Option<&[u8]>,
) -> Bytes {
    let proto = t.flow.proto;
    let mut w = Writer::request("INVITE", &t.uri);
    w.header("Via", &edge.local.via(proto, branch));
    w.header("Max-Forwards", max_forwards);
    w.header("From", &d.local_hdr);
    w.header("To", &d.remote_hdr);
    w.header("Call-ID", &d.call_id);
    w.header("CSeq", "1 INVITE");
    w.header("Contact", &edge.local.contact(&d.contact_user, proto));
    w.header("Allow", ALLOW);
    if let Some((site, claim)) = &t.trunk {
        let body = sdp.unwrap_or(b"");
        let headers = crate::trunk::headers(
            edge,
            "INVITE",
            site,
            &d.call_id,
            &d.local_hdr,
            &d.user,
            *claim,
            body,
        );
        for (name, value) in headers {
            w.header(name, &value);
        }
    }
    match sdp {
        Some(b) => w.finish(Some("application/sdp"), b),
        None => w.finish(None, b""),
    }
}

impl Calls {
    /// Start a B2BUA call: answer the caller's INVITE with 100, fork it to `targets` with the
    /// relay's SDP. The call's number, unless it was refused.
    pub(crate) fn start_call(
        &mut self,
        now: Instant,
        key: &ServerKey,
        flow: Flow,
        msg: Message,
        nc: NewCall,
        targets: Vec<Target>,
    ) -> Option<u64> {
        let NewCall {
            caller,
            callee,
            display: from_display,
            max_forwards: mf,
        } = nc;
        let owner = match self.admit_call(&caller, &flow) {
            Ok(o) => o,
            Err(486) => {
                self.reply(now, key, Response::to(&msg, 486).reason("Too Many Calls"));
                return None;
            }
            Err(code) => {
                self.reply(now, key, Response::to(&msg, code));
                return None;
            }
        };
        let id = self.next_call_id();
        let media = match self.open_relay(now, id) {
            Ok(m) => m,
            Err(e) => {
                warn!(error = %e, "no media ports");
                self.reply(now, key, Response::to(&msg, 503));
                return None;
            }
        };
        // Trying at once, so the caller stops retransmitting.
        self.reply(now, key, Response::to(&msg, 100));

        // Its own root in the log lines; in the trace, a child of the request that made it
        // (a retrieve's, a trunk request's).
        let span = orbit_trace::within(
            None,
            || info_span!(parent: None, "call", id, caller = %caller, callee = %callee, edge = %self.sv.id),
        );
        let a_tag = self.sv.ids.tag();
        let b_tag = self.sv.ids.tag();
        let domain = self.sv.cfg.tenant.domain.clone();
        let display = from_display.or_else(|| {
            self.extension(&caller)
                .and_then(|e| e.display_name.as_ref())
                .map(|d| format!("\"{d}\""))
        });
        let b_from = match &display {
            Some(d) => format!("{d} <sip:{caller}@{domain}>;tag={b_tag}"),
            None => format!("<sip:{caller}@{domain}>;tag={b_tag}"),
        };
        let a = Dialog::uas(&msg, flow, &a_tag, &callee, &caller);
        let b = Dialog {
            call_id: self.sv.ids.call_id("orbit"),
            local_tag: b_tag.clone(),
            local_hdr: b_from,
            remote_hdr: format!("<sip:{callee}@{domain}>"),
            remote_target: String::new(),
            route_set: vec![],
            local_cseq: 1,
            remote_cseq: 0,
            flow: targets[0].flow,
            contact_user: caller.clone(),
            user: callee.clone(),
        };
        let mut call = Call::new(id, span.clone(), now, a, msg, key, b, media);
        let invite = call.a_invite.clone();
        let body = match relay_sdp(
            &mut self.sv.media,
            &mut call,
            Side::A,
            &invite,
            flow.addr.ip(),
        ) {
            Ok(b) => b,
            Err(()) => {
                // The call never starts: its relay ports go back at once.
                self.sv.media.close(now, media);
                let m = call.a_invite.clone();
                self.reply(now, key, Response::to(&m, 488).tag(&a_tag));
                return None;
            }
        };
        let _g = span.enter();
        info!(forks = targets.len(), trunk = ?targets[0].trunk.as_ref().map(|t| &t.0), "call started");
        self.sv.stats.calls_started += 1;
        self.dialogs.insert((call.a.call_id.clone(), a_tag), id);
        self.dialogs.insert((call.b.call_id.clone(), b_tag), id);
        self.pending_invites.insert(key.clone(), id);
        let mf = mf.saturating_sub(1).to_string();
        let mut sends = vec![];
        for t in &targets {
            let branch = self.new_branch();
            let bytes = invite_bytes(self, &call.b, t, &branch.branch, &mf, body.as_deref());
            let mut b = Branch::new(branch.clone());
            b.trunk = t.trunk.is_some();
            call.branches.push(b);
            sends.push((t.flow, branch, bytes));
        }
        call.owner = owner;
        self.insert_call(call);
        for (idx, (flow, branch, bytes)) in sends.into_iter().enumerate() {
            self.send_request(
                now,
                flow,
                branch,
                true,
                bytes,
                Owner::Branch { call: id, idx },
            );
        }
        Some(id)
    }

    /// A new call's number (its key in `calls`; media events name it).
    pub(crate) fn next_call_id(&mut self) -> u64 {
        self.next_call += 1;
        self.next_call
    }
}

pub(crate) fn branch_response(
    edge: &mut Calls,
    now: Instant,
    id: u64,
    idx: usize,
    flow: Flow,
    msg: Message,
) {
    let code = msg.code();
    let from_peer = edge.is_trunk_peer(&flow);
    let Some(call) = edge.calls.get_mut(&id) else {
        if (200..300).contains(&code) {
            ack_and_bye(edge, now, flow, &msg);
        }
        return;
    };
    let span = call.span.clone();
    let _g = span.enter();
    match code {
        100 => {}
        101..=199 => {
            let b = &mut call.branches[idx];
            if b.provisional() {
                let key = b.key.clone();
                let reason = call.cancel_reason.clone();
                send_cancel(edge, now, &key, reason.as_deref());
                return;
            }
            if call.state != CallState::Ringing || call.winner.is_some() || msg.to_tag().is_none() {
                return;
            }
            let bytes = to_caller(&mut edge.sv, call, &msg, flow, false, None);
            let key = call.a_stx.clone();
            edge.reply_bytes(now, &key, code, bytes);
        }
        200..=299 => {
            if call.winner == Some(idx)
                && call.b.remote_hdr.contains(msg.to_tag().unwrap_or("\u{0}"))
            {
                // The winner retransmits its 2xx: our ACK was lost.
                if let Some((Side::B, cseq, ack)) = &call.acked {
                    if *cseq == msg.cseq.seq {
                        let ack = ack.clone();
                        edge.send(flow, ack);
                    }
                }
                return;
            }
            if call.b_answered() || call.state != CallState::Ringing {
                // A second fork answered, or the caller has gone (or was picked up): take it
                // and hang it up.
                debug!("late 2xx from another fork: ACK and BYE");
                call.branches[idx].state = BranchState::Done;
                ack_and_bye(edge, now, flow, &msg);
                return;
            }
            if call.hold_answer {
                // Pickup must first have the log order this answer against any pickup (the
                // fork stays open meanwhile: the others' failures do not end the call).
                edge.held_answers.push(HeldAnswer {
                    call: id,
                    idx,
                    flow,
                    msg,
                });
                return;
            }
            call.winner = Some(idx);
            call.branches[idx].state = BranchState::Done;
            call.b.establish(&msg, flow);
            if call.sdp[Side::B as usize].is_some() {
                // Early media came (perhaps from another fork): the B leg may have latched onto
                // a phone that is not the one answering. Start it afresh for the answerer.
                if let Some(m) = call.media {
                    m.vacate(&mut edge.sv.media, Side::B.leg());
                }
            }
            let others: Vec<usize> = (0..call.branches.len()).filter(|&i| i != idx).collect();
            // Who answered, as another site's edge asserts it (a parked caller fetched over
            // the trunk: its slot and name); a phone's own claim is not passed on (RFC 3325).
            let identity = (call.branches[idx].trunk && from_peer)
                .then(|| msg.header_other("P-Asserted-Identity").map(str::trim))
                .flatten();
            let bytes = to_caller(&mut edge.sv, call, &msg, flow, true, identity);
            let a_cseq = call.a_invite.cseq.seq;
            call.ok_retx[Side::A as usize] = Some(OkRetx {
                cseq: a_cseq,
                rt: Retransmitter::new(now, edge.sv.timing),
                bytes: bytes.clone(),
            });
            call.ack_pending = Some((Side::A, a_cseq, Side::B, 1));
            call.state = CallState::Answered;
            call.invite_busy = false;
            let key = call.a_stx.clone();
            edge.pending_invites.remove(&key);
            edge.sv.stats.calls_answered += 1;
            if call.ring_watched {
                edge.answered.push(id);
            }
            info!(
                after_ms = now.duration_since(call.started).as_millis() as u64,
                "answered"
            );
            for i in others {
                cancel_branch(edge, now, id, i);
            }
            edge.reply_bytes(now, &key, code, bytes);
            schedule_call(edge, id);
        }
        _ => branch_failed(edge, now, id, idx, code, msg.reason().to_string()),
    }
}

pub(crate) fn branch_failed(
    edge: &mut Calls,
    now: Instant,
    id: u64,
    idx: usize,
    code: u16,
    reason: String,
) {
    let Some(call) = edge.calls.get_mut(&id) else {
        return;
    };
    call.branches[idx].state = BranchState::Done;
    // RFC 3261 §16.7: a 6xx beats everything; otherwise the lowest class, first seen.
    let rank = |c: u16| if c >= 600 { 0 } else { c / 100 };
    let better = match &call.best {
        None => true,
        Some((b, _)) => rank(code) < rank(*b),
    };
    if better {
        call.best = Some((code, reason));
    }
    if call.branches.iter().any(|b| b.state != BranchState::Done) || call.b_answered() {
        return;
    }
    if call.state == CallState::Ringing {
        let (mut code, mut reason) = call.best.clone().unwrap_or((480, String::new()));
        // The callee's phone asking for credentials is not the caller's business.
        if code == 401 || code == 407 {
            code = 480;
            reason = reason_phrase(480).into();
        }
        let span = call.span.clone();
        let _g = span.enter();
        info!(code, "call failed");
        edge.sv.stats.calls_failed += 1;
        let bytes = Response::to(&call.a_invite, code)
            .reason(&reason)
            .tag(&call.a.local_tag)
            .encode(call.a.flow.addr);
        let key = call.a_stx.clone();
        edge.reply_bytes(now, &key, code, bytes);
    }
    end_call(edge, id);
}

pub(crate) fn cancel_branch(edge: &mut Calls, now: Instant, id: u64, idx: usize) {
    let Some(call) = edge.calls.get_mut(&id) else {
        return;
    };
    let b = &mut call.branches[idx];
    match b.state {
        BranchState::Calling => b.cancel_wanted = true,
        BranchState::Proceeding => {
            let key = b.key.clone();
            let reason = call.cancel_reason.clone();
            send_cancel(edge, now, &key, reason.as_deref());
        }
        BranchState::Done => {}
    }
}

/// CANCEL for an INVITE we sent (RFC 3261 §9.1), on the INVITE's branch, with `reason` as
/// its `Reason` (RFC 3326).
pub(crate) fn send_cancel(
    edge: &mut Calls,
    now: Instant,
    invite_key: &ClientKey,
    reason: Option<&str>,
) {
    let Some(e) = edge.sv.ctx.get(invite_key) else {
        return;
    };
    if e.tx.state != State::Proceeding && e.tx.state != State::Initial {
        return;
    }
    let flow = e.flow;
    let Some(bytes) = cancel_for(e.tx.request(), reason) else {
        return;
    };
    edge.send_request(now, flow, invite_key.cancel(), false, bytes, Owner::Nobody);
}

/// Accept and immediately end a dialog we do not want (a late fork's 2xx).
pub(crate) fn ack_and_bye(edge: &mut Calls, now: Instant, flow: Flow, msg: &Message) {
    let d = Dialog::from_2xx(msg, flow);
    let branch = edge.sv.ids.branch();
    let ack = d.request(&edge.sv.local, "ACK", msg.cseq.seq, &branch, &[], None);
    edge.send(flow, ack);
    let branch = edge.new_branch();
    let bye = d.request(
        &edge.sv.local,
        "BYE",
        msg.cseq.seq + 1,
        &branch.branch,
        &[],
        None,
    );
    edge.send_request(now, flow, branch, false, bye, Owner::Nobody);
}

/// The caller cancelled its INVITE. `reason`: the CANCEL's `Reason`, passed on to the forks
/// when it came from another site's edge (a call picked up there: the phones here must not
/// log it as missed).
pub(crate) fn on_cancel(
    edge: &mut Calls,
    now: Instant,
    invite_key: &ServerKey,
    reason: Option<String>,
) {
    let Some(id) = edge.pending_invites.get(invite_key).copied() else {
        return;
    };
    let Some(call) = edge.calls.get_mut(&id) else {
        return;
    };
    if call.state != CallState::Ringing || call.picked {
        return;
    }
    call.cancel_reason = reason;
    let _g = call.span.clone().entered();
    info!("cancelled by caller");
    hangup(edge, now, id, "cancelled");
}

/// The callee's answer `msg` (over `flow`) as the caller gets it: on the caller's INVITE, with
/// our tag and Contact, its SDP (learnt by the relay) rewritten to the relay; with `allow`, what
/// we allow (a 2xx), with `identity`, who answered as a trunk peer asserts it.
fn to_caller(
    sv: &mut Services,
    call: &mut Call,
    msg: &Message,
    flow: Flow,
    allow: bool,
    identity: Option<&str>,
) -> Bytes {
    let sdp = relay_sdp(&mut sv.media, call, Side::B, msg, flow.addr.ip())
        .ok()
        .flatten();
    let contact = sv.local.contact(&call.a.contact_user, call.a.flow.proto);
    let mut r = Response::to(&call.a_invite, msg.code())
        .reason(msg.reason())
        .tag(&call.a.local_tag)
        .header("Contact", &contact);
    if allow {
        r = r.header("Allow", ALLOW);
    }
    if let Some(id) = identity {
        r = r.header("P-Asserted-Identity", id);
    }
    if let Some(b) = &sdp {
        r = r.sdp(b);
    }
    r.encode(call.a.flow.addr)
}
