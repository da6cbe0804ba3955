//! The B2BUA call model: one [`Call`] owns two dialogs, A (the caller's, where we are the UAS)
//! and B (the callee's, where we are the UAC, forked to every registered contact), and the media
//! session that joins them. Every function here is an event handler on the sans-I/O [`Edge`]:
//! a message or a timer in, messages out through the edge's transaction layer.
//!
//! ```text
//! caller ──INVITE──▶ A │ Call │ B ──INVITE──▶ each contact of the callee (first 2xx wins,
//!        ◀──18x/2xx──  │      │  ◀──18x/2xx──  the others get CANCEL, or ACK+BYE if late)
//!        ──ACK──────▶  │      │  ──ACK──────▶  (forwarded when the caller ACKs: delayed offer)
//!        ◀─re-INVITE, INFO, UPDATE, … relayed both ways, SDP rewritten to the relay ─▶
//!        ──BYE──────▶  │      │  ──BYE──────▶  media released at once
//! ```

use std::net::IpAddr;
use std::time::Instant;

use bytes::Bytes;
use orbit_sip::build::{cancel_for, Response};
use orbit_sip::dialog::Dialog;
use orbit_sip::key::{ClientKey, ServerKey};
use orbit_sip::message::{Message, Name, Writer};
use orbit_sip::transaction::{Retransmitter, State};
use orbit_sip::transport::Flow;
use orbit_sip::{reason_phrase, Method};
use tracing::{debug, info, info_span, warn, Span};

use crate::core::{Edge, TimerKey, ALLOW};
use crate::media::{Leg, MediaSession};
use crate::transactions::Owner;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Side {
    A,
    B,
}

impl Side {
    pub(crate) fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }
    pub(crate) fn leg(self) -> Leg {
        match self {
            Side::A => Leg::A,
            Side::B => Leg::B,
        }
    }
}

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
}

impl Branch {
    pub(crate) fn new(key: ClientKey) -> Branch {
        Branch {
            key,
            state: BranchState::Calling,
            cancel_wanted: false,
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

/// Where one fork of an INVITE goes: a phone registered here, or another site's edge.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub flow: Flow,
    pub uri: String,
    /// Over the trunk: the peer edge's site, and the park this edge claimed (a retrieve).
    pub trunk: Option<(String, Option<orbit_state::ParkId>)>,
}

impl Target {
    pub(crate) fn phone(b: &crate::registrar::Binding) -> Target {
        Target {
            flow: b.flow,
            uri: b.contact.clone(),
            trunk: None,
        }
    }
}

/// The initial INVITE of a dialog we start (`d`, as the UAC), to one fork `t` of the callee.
pub(crate) fn invite_bytes(
    edge: &Edge,
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
        let headers =
            crate::trunk::headers(edge, site, &d.call_id, &d.local_hdr, &d.user, *claim, body);
        for (name, value) in headers {
            w.header(name, &value);
        }
    }
    match sdp {
        Some(b) => w.finish(Some("application/sdp"), b),
        None => w.finish(None, b""),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallState {
    /// INVITE sent to the callee's contacts; no 2xx yet.
    Ringing,
    /// 2xx sent to the caller; waiting for its ACK.
    Answered,
    Confirmed,
    Ending,
}

/// A 2xx we retransmit until the party ACKs it.
struct OkRetx {
    to: Side,
    cseq: u32,
    rt: Retransmitter,
    bytes: Bytes,
}

pub(crate) struct Call {
    pub(crate) id: u64,
    pub(crate) span: Span,
    pub(crate) state: CallState,
    started: Instant,
    pub(crate) a: Dialog,
    a_invite: Message,
    a_stx: ServerKey,
    pub(crate) b: Dialog,
    branches: Vec<Branch>,
    winner: Option<usize>,
    best: Option<(u16, String)>,
    pub(crate) media: Option<Box<dyn MediaSession>>,
    ok_retx: Option<OkRetx>,
    /// When `from` ACKs our 2xx for its INVITE with `cseq`, send ACK with `to_cseq` to `to`.
    ack_pending: Option<(Side, u32, Side, u32)>,
    /// The last SDP each party sent (what it can receive): the codec for music and for the
    /// next party after a park.
    pub(crate) sdp: [Option<Bytes>; 2],
    /// Parked: the slot, and the recall once the deadline has passed.
    pub(crate) park: Option<crate::park::ParkState>,
    /// The side whose party left (the transferor): nothing more is sent to it, and its leg of
    /// the relay waits for the next party (retriever or recall).
    pub(crate) vacant: Option<Side>,
    /// We answered a party's INVITE ourselves (retrieve): its ACK may carry the SDP answer.
    pub(crate) own_answer: Option<(Side, u32)>,
    /// The party that left the vacant side has not been sent its BYE yet (it is hearing the
    /// slot spoken, or its NOTIFY is unanswered); whoever takes the side next sends it first.
    pub(crate) departed_live: bool,
    /// A call to the park extension: the slot it announced.
    pub(crate) consult: Option<crate::park::Consult>,
    /// A park of this call is being ordered (not parkable again until its outcome).
    pub(crate) parking: bool,
    /// Digits each party pressed lately (for feature codes), and when the last came.
    pub(crate) digits: [(String, Option<Instant>); 2],
    /// The last ACK we sent for a 2xx, to resend if that 2xx is retransmitted.
    acked: Option<(Side, u32, Bytes)>,
    /// An INVITE (initial or re-INVITE) is being relayed: a second one gets 491 (glare).
    invite_busy: bool,
    pending_byes: usize,
    /// Why we ended the call, when we did (the park's end reason says it).
    pub(crate) end_why: Option<&'static str>,
}

impl Call {
    pub(crate) fn dialog(&mut self, s: Side) -> &mut Dialog {
        match s {
            Side::A => &mut self.a,
            Side::B => &mut self.b,
        }
    }

    pub(crate) fn dialog_ref(&self, s: Side) -> &Dialog {
        match s {
            Side::A => &self.a,
            Side::B => &self.b,
        }
    }

    /// An offer/answer exchange is under way (a re-INVITE relayed, an ACK awaited).
    pub(crate) fn negotiating(&self) -> bool {
        self.invite_busy || self.ack_pending.is_some() || self.own_answer.is_some()
    }

    /// Which of this call's dialogs a request belongs to; none for a dialog the call has left
    /// behind (a transferor replaced by a retriever).
    fn side_of(&self, call_id: &str, to_tag: &str) -> Option<Side> {
        [Side::A, Side::B].into_iter().find(|&s| {
            let d = self.dialog_ref(s);
            d.call_id == call_id && d.local_tag == to_tag
        })
    }
}

pub(crate) fn user_of(uri: &str) -> Option<String> {
    orbit_sip::Uri::parse(uri)
        .ok()
        .and_then(|u| u.user().map(str::to_string))
}

pub(crate) fn is_sdp(msg: &Message) -> bool {
    !msg.body.is_empty()
        && msg
            .content_type()
            .map(|c| c.to_ascii_lowercase().starts_with("application/sdp"))
            .unwrap_or(false)
}

/// Learn where `from` wants media, and rewrite its SDP for the other party.
/// `source`: the IP the message came from (the relay latches only onto it or the SDP's).
fn relay_sdp(
    call: &mut Call,
    from: Side,
    msg: &Message,
    source: IpAddr,
) -> Result<Option<Vec<u8>>, ()> {
    if !is_sdp(msg) {
        return Ok(None);
    }
    call.sdp[from as usize] = Some(msg.body.clone());
    let Some(media) = &call.media else {
        return Ok(Some(msg.body.to_vec()));
    };
    let info = orbit_media::sdp::media_info(&msg.body).map_err(|_| ())?;
    media.set_remote(from.leg(), info.rtp, info.rtcp, source);
    media.set_dtmf(from.leg(), orbit_media::sdp::telephone_event(&msg.body));
    orbit_media::sdp::rewrite(&msg.body, media.local(from.other().leg()))
        .map(Some)
        .map_err(|_| ())
}

/// Who calls whom, for [`Edge::start_call`].
pub(crate) struct NewCall {
    pub caller: String,
    pub callee: String,
    /// The caller's display name as it came.
    pub display: Option<String>,
    pub max_forwards: u32,
}

impl Edge {
    /// Start a B2BUA call: answer the caller's INVITE with 100, fork it to `targets` with the
    /// relay's SDP.
    pub(crate) fn start_call(
        &mut self,
        now: Instant,
        key: &ServerKey,
        flow: Flow,
        msg: Message,
        nc: NewCall,
        targets: Vec<Target>,
    ) {
        let NewCall {
            caller,
            callee,
            display: from_display,
            max_forwards: mf,
        } = nc;
        if self.calls.len() >= self.cfg.limits.max_calls {
            return self.reply(now, key, Response::to(&msg, 503));
        }
        let id = self.unique_call_id();
        let media = match self.media.open(id) {
            Ok(m) => m,
            Err(e) => {
                warn!(error = %e, "no media ports");
                return self.reply(now, key, Response::to(&msg, 503));
            }
        };
        // Trying at once, so the caller stops retransmitting.
        self.reply(now, key, Response::to(&msg, 100));

        let span = info_span!(parent: None, "call", id, caller = %caller, callee = %callee, site = %self.cfg.site);
        let a_tag = self.ids.tag();
        let b_tag = self.ids.tag();
        let domain = self.cfg.tenant.domain.clone();
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
            call_id: self.ids.call_id("orbit"),
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
        let mut call = Call {
            id,
            span: span.clone(),
            state: CallState::Ringing,
            started: now,
            a,
            a_invite: msg,
            a_stx: key.clone(),
            b,
            branches: vec![],
            winner: None,
            best: None,
            media: Some(media),
            ok_retx: None,
            ack_pending: None,
            sdp: [None, None],
            park: None,
            vacant: None,
            own_answer: None,
            consult: None,
            parking: false,
            departed_live: false,
            digits: Default::default(),
            acked: None,
            invite_busy: true,
            pending_byes: 0,
            end_why: None,
        };
        let invite = call.a_invite.clone();
        let body = match relay_sdp(&mut call, Side::A, &invite, flow.addr.ip()) {
            Ok(b) => b,
            Err(()) => {
                let m = call.a_invite.clone();
                return self.reply(now, key, Response::to(&m, 488).tag(&a_tag));
            }
        };
        let _g = span.enter();
        info!(forks = targets.len(), trunk = ?targets[0].trunk.as_ref().map(|t| &t.0), "call started");
        self.stats.calls_started += 1;
        self.dialogs.insert((call.a.call_id.clone(), a_tag), id);
        self.dialogs.insert((call.b.call_id.clone(), b_tag), id);
        self.pending_invites.insert(key.clone(), id);
        let mf = mf.saturating_sub(1).to_string();
        let mut sends = vec![];
        for t in &targets {
            let branch = self.new_branch();
            let bytes = invite_bytes(self, &call.b, t, &branch.branch, &mf, body.as_deref());
            call.branches.push(Branch::new(branch.clone()));
            sends.push((t.flow, branch, bytes));
        }
        self.calls.insert(id, call);
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
    }

    pub(crate) fn next_call_id(&mut self) -> u64 {
        self.unique_call_id()
    }

    fn unique_call_id(&mut self) -> u64 {
        self.next_call += 1;
        self.next_call
    }
}

// ------------------------------------------------------------------ responses from B forks

pub(crate) fn on_client_response(edge: &mut Edge, now: Instant, ckey: &ClientKey, msg: Message) {
    let Some(entry) = edge.ctx.get(ckey) else {
        return;
    };
    match &entry.owner {
        Owner::Branch { call, idx } => {
            let (call, idx, flow) = (*call, *idx, entry.flow);
            branch_response(edge, now, call, idx, flow, msg)
        }
        Owner::Relay { call, stx, req } => {
            let (call, stx, req) = (*call, stx.clone(), req.clone());
            relay_response(edge, now, call, &stx, &req, msg)
        }
        Owner::Bye { call } => {
            if msg.code() >= 200 {
                let call = *call;
                bye_done(edge, call);
            }
        }
        Owner::Recall { call, attempt, idx } => {
            let (call, attempt, idx, flow) = (*call, *attempt, *idx, entry.flow);
            crate::park::recall_response(edge, now, ckey, call, attempt, idx, flow, msg)
        }
        Owner::ReferNotify { call, bye } => {
            if msg.code() >= 200 {
                let (call, bye) = (*call, *bye);
                crate::park::notify_done(edge, now, call, bye);
            }
        }
        Owner::Lamp { sub } => {
            if msg.code() >= 200 {
                let sub = sub.clone();
                crate::blf::on_notify_response(edge, &sub, Some(msg.code()));
            }
        }
        Owner::Nobody => {}
    }
}

pub(crate) fn on_client_timeout(edge: &mut Edge, now: Instant, ckey: &ClientKey) {
    let Some(entry) = edge.ctx.get(ckey) else {
        return;
    };
    match &entry.owner {
        Owner::Branch { call, idx } => {
            let (call, idx) = (*call, *idx);
            branch_failed(edge, now, call, idx, 408, "Request Timeout".into());
        }
        Owner::Relay { call, stx, req } => {
            let (call, stx, req) = (*call, stx.clone(), req.clone());
            if *req.method() == Method::Invite {
                if let Some(c) = edge.calls.get_mut(&call) {
                    c.invite_busy = false;
                }
            }
            edge.reply(now, &stx, Response::to(&req, 408));
        }
        Owner::Bye { call } => {
            let call = *call;
            bye_done(edge, call)
        }
        Owner::Recall { call, attempt, idx } => {
            let (call, attempt, idx) = (*call, *attempt, *idx);
            crate::park::recall_failed(edge, now, call, attempt, idx);
        }
        Owner::ReferNotify { call, bye } => {
            let (call, bye) = (*call, *bye);
            crate::park::notify_done(edge, now, call, bye);
        }
        Owner::Lamp { sub } => {
            let sub = sub.clone();
            crate::blf::on_notify_response(edge, &sub, None);
        }
        Owner::Nobody => {}
    }
}

fn branch_response(edge: &mut Edge, now: Instant, id: u64, idx: usize, flow: Flow, msg: Message) {
    let code = msg.code();
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
                send_cancel(edge, now, &key);
                return;
            }
            if call.state != CallState::Ringing || call.winner.is_some() || msg.to_tag().is_none() {
                return;
            }
            let body = relay_sdp(call, Side::B, &msg, flow.addr.ip())
                .ok()
                .flatten();
            let bytes = Response::to(&call.a_invite, code)
                .reason(msg.reason())
                .tag(&call.a.local_tag)
                .header(
                    "Contact",
                    &edge.local.contact(&call.a.contact_user, call.a.flow.proto),
                )
                .opt_body(body.as_deref().map(|b| ("application/sdp", b)))
                .encode(call.a.flow.addr);
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
            if call.winner.is_some() || call.state != CallState::Ringing {
                // A second fork answered, or the caller has gone: take it and hang it up.
                debug!("late 2xx from another fork: ACK and BYE");
                ack_and_bye(edge, now, flow, &msg);
                return;
            }
            call.winner = Some(idx);
            call.branches[idx].state = BranchState::Done;
            call.b.establish(&msg, flow);
            let others: Vec<usize> = (0..call.branches.len()).filter(|&i| i != idx).collect();
            let body = relay_sdp(call, Side::B, &msg, flow.addr.ip())
                .ok()
                .flatten();
            let bytes = Response::to(&call.a_invite, code)
                .reason(msg.reason())
                .tag(&call.a.local_tag)
                .header(
                    "Contact",
                    &edge.local.contact(&call.a.contact_user, call.a.flow.proto),
                )
                .header("Allow", ALLOW)
                .opt_body(body.as_deref().map(|b| ("application/sdp", b)))
                .encode(call.a.flow.addr);
            let a_cseq = call.a_invite.cseq.seq;
            call.ok_retx = Some(OkRetx {
                to: Side::A,
                cseq: a_cseq,
                rt: Retransmitter::new(now, edge.timing),
                bytes: bytes.clone(),
            });
            call.ack_pending = Some((Side::A, a_cseq, Side::B, 1));
            call.state = CallState::Answered;
            call.invite_busy = false;
            let key = call.a_stx.clone();
            edge.pending_invites.remove(&key);
            edge.stats.calls_answered += 1;
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

fn branch_failed(edge: &mut Edge, now: Instant, id: u64, idx: usize, code: u16, reason: String) {
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
    if call.branches.iter().any(|b| b.state != BranchState::Done) || call.winner.is_some() {
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
        edge.stats.calls_failed += 1;
        let bytes = Response::to(&call.a_invite, code)
            .reason(&reason)
            .tag(&call.a.local_tag)
            .encode(call.a.flow.addr);
        let key = call.a_stx.clone();
        edge.reply_bytes(now, &key, code, bytes);
    }
    end_call(edge, id);
}

fn cancel_branch(edge: &mut Edge, now: Instant, id: u64, idx: usize) {
    let Some(call) = edge.calls.get_mut(&id) else {
        return;
    };
    let b = &mut call.branches[idx];
    match b.state {
        BranchState::Calling => b.cancel_wanted = true,
        BranchState::Proceeding => {
            let key = b.key.clone();
            send_cancel(edge, now, &key);
        }
        BranchState::Done => {}
    }
}

/// CANCEL for an INVITE we sent (RFC 3261 §9.1), on the INVITE's branch.
pub(crate) fn send_cancel(edge: &mut Edge, now: Instant, invite_key: &ClientKey) {
    let Some(e) = edge.ctx.get(invite_key) else {
        return;
    };
    if e.tx.state != State::Proceeding && e.tx.state != State::Initial {
        return;
    }
    let flow = e.flow;
    let Some(bytes) = cancel_for(e.tx.request(), None) else {
        return;
    };
    edge.send_request(now, flow, invite_key.cancel(), false, bytes, Owner::Nobody);
}

/// Accept and immediately end a dialog we do not want (a late fork's 2xx).
pub(crate) fn ack_and_bye(edge: &mut Edge, now: Instant, flow: Flow, msg: &Message) {
    let d = Dialog::from_2xx(msg, flow);
    let branch = edge.ids.branch();
    let ack = d.request(&edge.local, "ACK", msg.cseq.seq, &branch, &[], None);
    edge.send(flow, ack);
    let branch = edge.new_branch();
    let bye = d.request(
        &edge.local,
        "BYE",
        msg.cseq.seq + 1,
        &branch.branch,
        &[],
        None,
    );
    edge.send_request(now, flow, branch, false, bye, Owner::Nobody);
}

// ------------------------------------------------------------------ in-dialog requests

pub(crate) fn on_dialog_request(
    edge: &mut Edge,
    now: Instant,
    id: u64,
    flow: Flow,
    msg: Message,
    key: Option<ServerKey>,
) {
    let Some(call) = edge.calls.get_mut(&id) else {
        if let Some(k) = key {
            edge.reply(now, &k, Response::to(&msg, 481));
        }
        return;
    };
    let span = call.span.clone();
    let _g = span.enter();
    let tag = msg.to_tag().unwrap_or("");
    let side = call
        .side_of(msg.call_id(), tag)
        .filter(|&s| call.dialog_ref(s).accepts(&flow));
    let Some(side) = side else {
        if call.side_of(msg.call_id(), tag).is_some() {
            // The dialog's identifiers, from elsewhere than its party: a forgery, or a
            // stranger who read them (lamp NOTIFYs carry Call-IDs and tags). Nothing changes.
            edge.stats.foreign_in_dialog += 1;
            debug!(method = %msg.method(), from = %flow.addr, "in-dialog request from outside the dialog's flow");
        }
        if let Some(k) = key {
            edge.reply(now, &k, Response::to(&msg, 481));
        }
        return;
    };
    let method = msg.method().clone();
    if method == Method::Ack {
        return on_ack(edge, now, id, side, msg);
    }
    let Some(key) = key else { return };
    if call.vacant == Some(side) {
        // The transferor, after the park: its BYE is welcome, nothing else is relayed.
        let code = if method == Method::Bye { 200 } else { 481 };
        return edge.reply(now, &key, Response::to(&msg, code));
    }
    // In-dialog CSeq must grow (RFC 3261 §12.2.2).
    let d = call.dialog(side);
    if msg.cseq.seq <= d.remote_cseq && d.remote_cseq != 0 {
        return edge.reply(
            now,
            &key,
            Response::to(&msg, 500).header("Retry-After", "1"),
        );
    }
    d.remote_cseq = msg.cseq.seq;
    if side == Side::B && call.winner.is_none() {
        // The callee's dialog is not established yet.
        return edge.reply(now, &key, Response::to(&msg, 481));
    }
    match method {
        Method::Bye => {
            edge.reply(now, &key, Response::to(&msg, 200));
            info!(by = ?side, "hangup");
            let call = edge.calls.get_mut(&id).expect("present");
            call.state = CallState::Ending;
            call.ok_retx = None;
            call.media = None;
            let other = side.other();
            send_bye(edge, now, id, other);
            if edge.calls.get(&id).map(|c| c.pending_byes) == Some(0) {
                end_call(edge, id);
            }
        }
        Method::Refer => crate::park::on_refer(edge, now, id, side, key, msg),
        _ => {
            if method == Method::Info {
                if let Some(digit) = crate::park::info_digit(&msg) {
                    crate::park::on_digit(edge, now, id, side, digit);
                }
            }
            let c = &edge.calls[&id];
            if c.vacant.is_some() || c.park.is_some() {
                // Parked: nobody on the other side to relay to. Re-INVITEs get the relay's
                // SDP back (the music keeps flowing to the same address); the rest is accepted.
                crate::park::parked_request(edge, now, id, side, key, msg)
            } else {
                relay_request(edge, now, id, side, key, msg)
            }
        }
    }
}

fn relay_request(edge: &mut Edge, now: Instant, id: u64, from: Side, key: ServerKey, msg: Message) {
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
    let body = match relay_sdp(call, from, &msg, call.dialog_ref(from).flow.addr.ip()) {
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
        &edge.local,
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
            stx: key,
            req: Box::new(msg),
        },
    );
}

fn relay_response(
    edge: &mut Edge,
    now: Instant,
    id: u64,
    stx: &ServerKey,
    req: &Message,
    msg: Message,
) {
    let code = msg.code();
    if code == 100 {
        return;
    }
    let Some(call) = edge.calls.get_mut(&id) else {
        return;
    };
    let from = if req.call_id() == call.a.call_id {
        Side::A
    } else {
        Side::B
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
    let body = relay_sdp(call, to, &msg, call.dialog_ref(to).flow.addr.ip())
        .ok()
        .flatten();
    let ct = msg.content_type().unwrap_or("application/sdp").to_string();
    let body_ref: Option<(&str, &[u8])> = match &body {
        Some(b) => Some((ct.as_str(), b.as_slice())),
        None if !msg.body.is_empty() => Some((ct.as_str(), &msg.body[..])),
        None => None,
    };
    let from_d = call.dialog_ref(from);
    let contact = edge.local.contact(&from_d.contact_user, from_d.flow.proto);
    let bytes = Response::to(req, code)
        .reason(msg.reason())
        .header("Contact", &contact)
        .opt_body(body_ref)
        .encode(from_d.flow.addr);
    if invite && code >= 200 {
        call.invite_busy = false;
        if code < 300 {
            call.ok_retx = Some(OkRetx {
                to: from,
                cseq: req.cseq.seq,
                rt: Retransmitter::new(now, edge.timing),
                bytes: bytes.clone(),
            });
            call.ack_pending = Some((from, req.cseq.seq, to, msg.cseq.seq));
            schedule_call(edge, id);
        }
    }
    edge.reply_bytes(now, stx, code, bytes);
}

fn on_ack(edge: &mut Edge, now: Instant, id: u64, side: Side, msg: Message) {
    let call = edge.calls.get_mut(&id).expect("present");
    if let Some(r) = &call.ok_retx {
        if r.to == side && r.cseq == msg.cseq.seq {
            call.ok_retx = None;
        }
    }
    if call.own_answer == Some((side, msg.cseq.seq)) {
        // Our own 2xx (retrieve) was offer or answer; a delayed offer's answer comes here.
        call.own_answer = None;
        if call.state == CallState::Answered {
            call.state = CallState::Confirmed;
        }
        if is_sdp(&msg) {
            if let (Ok(info), Some(m)) = (orbit_media::sdp::media_info(&msg.body), &call.media) {
                m.set_remote(
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
    let body = relay_sdp(call, side, &msg, call.dialog_ref(side).flow.addr.ip())
        .ok()
        .flatten();
    let branch = edge.new_branch();
    let call = edge.calls.get(&id).expect("present");
    let d = call.dialog_ref(to);
    let flow = d.flow;
    let ack = d.request(
        &edge.local,
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

pub(crate) fn on_cancel(edge: &mut Edge, now: Instant, invite_key: &ServerKey) {
    let Some(id) = edge.pending_invites.get(invite_key).copied() else {
        return;
    };
    let Some(call) = edge.calls.get(&id) else {
        return;
    };
    if call.state != CallState::Ringing {
        return;
    }
    let _g = call.span.clone().entered();
    info!("cancelled by caller");
    hangup(edge, now, id, "cancelled");
}

/// End the dialog of a party that has left the call (the transferor after a park); its answer
/// does not matter to the call.
pub(crate) fn send_bye_departed(edge: &mut Edge, now: Instant, id: u64, to: Side) {
    let branch = edge.new_branch();
    let Some(call) = edge.calls.get_mut(&id) else {
        return;
    };
    call.departed_live = false;
    let d = call.dialog(to);
    d.local_cseq += 1;
    let cseq = d.local_cseq;
    let flow = d.flow;
    let d = edge.calls[&id].dialog_ref(to);
    let bye = d.request(&edge.local, "BYE", cseq, &branch.branch, &[], None);
    edge.send_request(now, flow, branch, false, bye, Owner::Nobody);
}

pub(crate) fn send_bye(edge: &mut Edge, now: Instant, id: u64, to: Side) {
    let call = edge.calls.get_mut(&id).expect("present");
    if (to == Side::B && call.winner.is_none()) || call.vacant == Some(to) {
        return;
    }
    let d = call.dialog(to);
    d.local_cseq += 1;
    let cseq = d.local_cseq;
    call.pending_byes += 1;
    let branch = edge.new_branch();
    let call = edge.calls.get(&id).expect("present");
    let d = call.dialog_ref(to);
    let flow = d.flow;
    let bye = d.request(&edge.local, "BYE", cseq, &branch.branch, &[], None);
    edge.send_request(now, flow, branch, false, bye, Owner::Bye { call: id });
}

fn bye_done(edge: &mut Edge, id: u64) {
    if let Some(c) = edge.calls.get_mut(&id) {
        c.pending_byes = c.pending_byes.saturating_sub(1);
        if c.pending_byes == 0 && c.state == CallState::Ending {
            end_call(edge, id);
        }
    }
}

/// End a call from our side: BYE both parties when answered, 487 and CANCEL when ringing.
pub(crate) fn hangup(edge: &mut Edge, now: Instant, id: u64, why: &'static str) {
    let Some(call) = edge.calls.get_mut(&id) else {
        return;
    };
    call.end_why.get_or_insert(why);
    let _g = call.span.clone().entered();
    let state = call.state;
    call.state = CallState::Ending;
    call.media = None;
    call.ok_retx = None;
    match state {
        CallState::Ringing => {
            info!(why, "ending unanswered call");
            let key = call.a_stx.clone();
            let req = call.a_invite.clone();
            let tag = call.a.local_tag.clone();
            let n = call.branches.len();
            edge.pending_invites.remove(&key);
            if edge
                .stx
                .get(&key)
                .map(|e| e.tx.state == State::Proceeding)
                .unwrap_or(false)
            {
                edge.reply(now, &key, Response::to(&req, 487).tag(&tag));
            }
            for i in 0..n {
                cancel_branch(edge, now, id, i);
            }
            let call = edge.calls.get(&id).expect("present");
            if call.branches.iter().all(|b| b.state == BranchState::Done) {
                end_call(edge, id);
            }
        }
        CallState::Answered | CallState::Confirmed => {
            info!(why, "ending call");
            crate::park::cancel_recall(edge, now, id);
            send_bye(edge, now, id, Side::A);
            send_bye(edge, now, id, Side::B);
            if edge.calls.get(&id).map(|c| c.pending_byes) == Some(0) {
                end_call(edge, id);
            }
        }
        CallState::Ending => {}
    }
}

pub(crate) fn end_call(edge: &mut Edge, id: u64) {
    let Some(call) = edge.calls.remove(&id) else {
        return;
    };
    let _g = call.span.enter();
    crate::park::on_call_end(edge, &call);
    edge.dialogs
        .remove(&(call.a.call_id.clone(), call.a.local_tag.clone()));
    edge.dialogs
        .remove(&(call.b.call_id.clone(), call.b.local_tag.clone()));
    edge.pending_invites.remove(&call.a_stx);
    debug!("call ended");
}

// ------------------------------------------------------------------ timers

/// A call the edge answers itself (the park extension): side A is the caller, side B is
/// vacant (nobody else is in it).
#[allow(clippy::too_many_arguments)]
pub(crate) fn insert_app_call(
    edge: &mut Edge,
    now: Instant,
    id: u64,
    span: Span,
    a: Dialog,
    media: Box<dyn MediaSession>,
    msg: Message,
    key: &ServerKey,
    offer: Option<Bytes>,
    consult: Option<crate::park::Consult>,
) {
    let b = Dialog {
        call_id: String::new(),
        local_tag: String::new(),
        local_hdr: String::new(),
        remote_hdr: String::new(),
        remote_target: String::new(),
        route_set: vec![],
        local_cseq: 0,
        remote_cseq: 0,
        flow: a.flow,
        contact_user: String::new(),
        user: String::new(),
    };
    edge.dialogs
        .insert((a.call_id.clone(), a.local_tag.clone()), id);
    let call = Call {
        id,
        span,
        state: CallState::Answered,
        started: now,
        a,
        a_invite: msg,
        a_stx: key.clone(),
        b,
        branches: vec![],
        winner: None,
        best: None,
        media: Some(media),
        ok_retx: None,
        ack_pending: None,
        sdp: [offer, None],
        park: None,
        vacant: Some(Side::B),
        own_answer: None,
        consult,
        parking: false,
        departed_live: false,
        digits: Default::default(),
        acked: None,
        invite_busy: false,
        pending_byes: 0,
        end_why: None,
    };
    edge.calls.insert(id, call);
}

/// Answer a party's INVITE ourselves (retrieve) with `bytes`, a 2xx, and resend it until the
/// party ACKs.
pub(crate) fn send_own_2xx(
    edge: &mut Edge,
    now: Instant,
    id: u64,
    side: Side,
    key: &ServerKey,
    cseq: u32,
    bytes: Bytes,
) {
    if let Some(call) = edge.calls.get_mut(&id) {
        call.ok_retx = Some(OkRetx {
            to: side,
            cseq,
            rt: Retransmitter::new(now, edge.timing),
            bytes: bytes.clone(),
        });
        call.own_answer = Some((side, cseq));
        call.state = CallState::Answered;
    }
    edge.reply_bytes(now, key, 200, bytes);
    schedule_call(edge, id);
}

/// Send an ACK for the 2xx that established `side`'s dialog (a recall we placed).
pub(crate) fn send_own_ack(edge: &mut Edge, id: u64, side: Side, cseq: u32) {
    let branch = edge.new_branch();
    let Some(call) = edge.calls.get(&id) else {
        return;
    };
    let d = call.dialog_ref(side);
    let flow = d.flow;
    let ack = d.request(&edge.local, "ACK", cseq, &branch.branch, &[], None);
    edge.calls.get_mut(&id).expect("present").acked = Some((side, cseq, ack.clone()));
    edge.send(flow, ack);
}

pub(crate) fn schedule_call(edge: &mut Edge, id: u64) {
    if let Some(r) = edge.calls.get(&id).and_then(|c| c.ok_retx.as_ref()) {
        let t = r.rt.poll_timeout();
        edge.timers.schedule(t, TimerKey::Call(id));
    }
}

pub(crate) fn on_timer(edge: &mut Edge, now: Instant, id: u64) {
    let Some(call) = edge.calls.get_mut(&id) else {
        return;
    };
    let Some(r) = call.ok_retx.as_mut() else {
        return;
    };
    match r.rt.on_timeout(now) {
        Some(true) => {
            let flow = match r.to {
                Side::A => call.a.flow,
                Side::B => call.b.flow,
            };
            let b = r.bytes.clone();
            edge.send(flow, b);
            schedule_call(edge, id);
        }
        Some(false) => schedule_call(edge, id),
        None => {
            // No ACK for our 2xx within 64·T1: the dialog is dead (RFC 3261 §13.3.1.4).
            call.ok_retx = None;
            let _g = call.span.clone().entered();
            warn!("no ACK for 2xx");
            hangup(edge, now, id, "no ACK");
        }
    }
}

/// End calls whose media stopped in both directions: after `media.timeout_secs`, or for a
/// parked call after [`parked_timeout`] (a parked phone may send nothing while it listens).
pub(crate) fn check_media(edge: &mut Edge, now: Instant) {
    let timeout = std::time::Duration::from_secs(edge.cfg.media.timeout_secs);
    let dead: Vec<u64> = edge
        .calls
        .values()
        .filter(|c| c.state == CallState::Confirmed)
        .filter(|c| {
            let limit = match &c.park {
                Some(ps) => crate::park::parked_timeout(edge, ps),
                None => timeout,
            };
            c.media.as_ref().is_some_and(|m| m.idle() > limit)
        })
        .map(|c| c.id)
        .collect();
    for id in dead {
        hangup(edge, now, id, "no media");
    }
}
