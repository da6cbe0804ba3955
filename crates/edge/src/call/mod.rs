//! The B2BUA call model: one [`Call`] owns two dialogs, A (the caller's, where we are the UAS)
//! and B (the callee's, where we are the UAC, forked to every registered contact), and the media
//! session that joins them. Every function here is an event handler on [`Calls`], the calls'
//! layer: their tables over the [`Services`] (to which it derefs). A message or a timer in,
//! messages out through the transaction layer; a call that ends is reported upwards in
//! [`Calls::ended`], never by calling a feature above.
//!
//! ```text
//! caller ──INVITE──▶ A │ Call │ B ──INVITE──▶ each contact of the callee (first 2xx wins,
//!        ◀──18x/2xx──  │      │  ◀──18x/2xx──  the others get CANCEL, or ACK+BYE if late)
//!        ──ACK──────▶  │      │  ──ACK──────▶  (forwarded when the caller ACKs: delayed offer)
//!        ◀─re-INVITE, INFO, UPDATE, … relayed both ways, SDP rewritten to the relay ─▶
//!        ──BYE──────▶  │      │  ──BYE──────▶  media released at once
//! ```

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

use bytes::Bytes;
use orbit_sip::build::{cancel_for, Response};
use orbit_sip::dialog::Dialog;
use orbit_sip::header::Replaces;
use orbit_sip::key::{ClientKey, ServerKey};
use orbit_sip::message::{Message, Name, Writer};
use orbit_sip::transaction::{Retransmitter, State};
use orbit_sip::transport::Flow;
use orbit_sip::{reason_phrase, Method};
use tracing::{debug, info, info_span, warn, Span};

pub(crate) use crate::location::Target;
use crate::media::{Media, Relay};
use crate::services::transactions::Owner;
pub(crate) use crate::services::Side;
use crate::services::{Services, TimerKey, ALLOW};

mod fork;
mod in_dialog;
mod takeover;
mod teardown;

pub(crate) use fork::*;
pub(crate) use in_dialog::*;
pub(crate) use takeover::*;
pub(crate) use teardown::*;

/// The calls' layer: every call and the tables that find one, over the services.
pub struct Calls {
    pub(crate) sv: Services,
    pub(crate) calls: HashMap<u64, Call>,
    /// (Call-ID, our tag) → call; both legs of every call are here.
    pub(crate) dialogs: HashMap<(String, String), u64>,
    /// INVITE server transaction → call, while unanswered (for CANCEL).
    pub(crate) pending_invites: HashMap<ServerKey, u64>,
    next_call: u64,
    /// Calls each digest-authenticated user has started and not ended.
    calls_by_user: HashMap<String, usize>,
    /// Concurrent calls this edge takes: `limits.max_calls`, or fewer if the relay's ports
    /// cannot serve that many (two port pairs a call).
    pub(crate) max_calls: usize,
    /// Calls we began to end while answered: whatever rings on their behalf elsewhere (a
    /// recall) is to stop. Taken by the layer above.
    pub(crate) ending: Vec<u64>,
    /// Calls gone, and why we ended them if we did: for the features that keep entries by
    /// call. Taken by the layer above.
    pub(crate) ended: Vec<(u64, Option<&'static str>)>,
    /// Calls gone that pickup watched ([`Call::ring_watched`]): their rings are over. Taken
    /// by pickup.
    pub(crate) unrung: Vec<u64>,
    /// Answers held back for pickup ([`Call::hold_answer`]), to be given back through
    /// [`branch_response`] or refused. Taken by pickup.
    pub(crate) held_answers: Vec<HeldAnswer>,
    /// Calls pickup watches that were answered (by a callee or a picker): a lamp shows them
    /// confirmed now. Taken by pickup.
    pub(crate) answered: Vec<u64>,
}

/// A callee's 2xx held back until the log has ordered it against any pickup of the ring.
pub(crate) struct HeldAnswer {
    pub call: u64,
    pub idx: usize,
    pub flow: Flow,
    pub msg: Message,
}

impl std::ops::Deref for Calls {
    type Target = Services;
    fn deref(&self) -> &Services {
        &self.sv
    }
}

impl std::ops::DerefMut for Calls {
    fn deref_mut(&mut self) -> &mut Services {
        &mut self.sv
    }
}

impl Calls {
    pub(crate) fn new(sv: Services) -> Calls {
        let pairs = sv.media.capacity();
        let max_calls = sv.cfg.limits.max_calls.min(pairs / 2);
        if max_calls < sv.cfg.limits.max_calls {
            info!(
                max_calls,
                configured = sv.cfg.limits.max_calls,
                "the relay's ports bound the calls this edge takes"
            );
        }
        Calls {
            sv,
            calls: HashMap::new(),
            dialogs: HashMap::new(),
            pending_invites: HashMap::new(),
            next_call: 0,
            calls_by_user: HashMap::new(),
            max_calls,
            ending: vec![],
            ended: vec![],
            unrung: vec![],
            held_answers: vec![],
            answered: vec![],
        }
    }

    /// Admit a new call for `user`, whose request came over `flow`: `Ok(owner)` (the user it
    /// counts against, if any) or the refusal to send (503 at capacity, 486 when the user has
    /// as many calls as it may).
    pub(crate) fn admit_call(&self, user: &str, flow: &Flow) -> Result<Option<String>, u16> {
        if self.calls.len() >= self.max_calls {
            return Err(503);
        }
        let ip = flow.addr.ip().to_canonical();
        if self.is_trusted(ip) || self.is_trunk_peer(flow) {
            return Ok(None);
        }
        if self.calls_by_user.get(user).copied().unwrap_or(0) >= self.sv.cfg.limits.calls_per_user {
            info!(%user, "too many calls for one user");
            return Err(486);
        }
        Ok(Some(user.to_string()))
    }

    /// A call counted against `owner` is over (or was never started).
    pub(crate) fn release_owner(&mut self, owner: &str) {
        if let Some(n) = self.calls_by_user.get_mut(owner) {
            *n -= 1;
            if *n == 0 {
                self.calls_by_user.remove(owner);
            }
        }
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
    cseq: u32,
    rt: Retransmitter,
    bytes: Bytes,
}

pub(crate) struct Call {
    pub(crate) id: u64,
    pub(crate) span: Span,
    state: CallState,
    started: Instant,
    pub(crate) a: Dialog,
    a_invite: Message,
    a_stx: ServerKey,
    pub(crate) b: Dialog,
    branches: Vec<Branch>,
    winner: Option<usize>,
    best: Option<(u16, String)>,
    pub(crate) media: Option<Relay>,
    /// Our 2xx to each side, until that side ACKs it (both, when a picker took the call).
    ok_retx: [Option<OkRetx>; 2],
    /// When `from` ACKs our 2xx for its INVITE with `cseq`, send ACK with `to_cseq` to `to`.
    ack_pending: Option<(Side, u32, Side, u32)>,
    /// The last SDP each party sent (what it can receive): the codec for music and for the
    /// next party after a park.
    sdp: [Option<Bytes>; 2],
    /// The side whose party left (the transferor): nothing more is sent to it, and its leg of
    /// the relay waits for the next party (retriever or recall).
    vacant: Option<Side>,
    /// We answered a party's INVITE ourselves (retrieve): its ACK may carry the SDP answer.
    pub(crate) own_answer: Option<(Side, u32)>,
    /// The party that left the vacant side has not been sent its BYE yet (it is hearing the
    /// slot spoken, or its NOTIFY is unanswered); whoever takes the side next sends it first.
    departed_live: bool,
    /// The last ACK we sent for a 2xx, to resend if that 2xx is retransmitted.
    acked: Option<(Side, u32, Bytes)>,
    /// An INVITE (initial or re-INVITE) is being relayed: a second one gets 491 (glare).
    invite_busy: bool,
    pending_byes: usize,
    /// Why we ended the call, when we did (the park's end reason says it).
    pub(crate) end_why: Option<&'static str>,
    /// The user this call counts against ([`Calls::admit_call`]).
    pub(crate) owner: Option<String>,
    /// Pickup records this call (its ringing, or for a lamp, the call a watched extension
    /// makes or takes): it is told when the call is answered ([`Calls::answered`]) and gone
    /// ([`Calls::unrung`]).
    pub(crate) ring_watched: bool,
    /// A callee's 2xx waits for pickup ([`Calls::held_answers`]) instead of answering.
    pub(crate) hold_answer: bool,
    /// A picker took the call while it rang: the forks' answers and failures no longer count.
    pub(crate) picked: bool,
    /// The `Reason` the forks' CANCELs carry (RFC 3326): why they stop ringing.
    pub(crate) cancel_reason: Option<String>,
    /// Side B's party came with the call from another edge (a parked call moved here): it is
    /// in the call as an answering fork's would be.
    moved_in_b: bool,
}

impl Call {
    /// A call whose caller (side A) sent `invite` through server transaction `key`; side B is
    /// `b` (ringing the callee) or a placeholder (vacant, for a call the edge answers).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        id: u64,
        span: Span,
        now: Instant,
        a: Dialog,
        invite: Message,
        key: &ServerKey,
        b: Dialog,
        media: Relay,
    ) -> Call {
        Call {
            id,
            span,
            state: CallState::Ringing,
            started: now,
            a,
            a_invite: invite,
            a_stx: key.clone(),
            b,
            branches: vec![],
            winner: None,
            best: None,
            media: Some(media),
            ok_retx: [None, None],
            ack_pending: None,
            sdp: [None, None],
            vacant: None,
            own_answer: None,
            departed_live: false,
            acked: None,
            invite_busy: true,
            pending_byes: 0,
            end_why: None,
            owner: None,
            ring_watched: false,
            hold_answer: false,
            picked: false,
            cancel_reason: None,
            moved_in_b: false,
        }
    }

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

    pub(crate) fn state(&self) -> CallState {
        self.state
    }

    /// When the call began (its INVITE, or its handover here).
    pub(crate) fn started(&self) -> Instant {
        self.started
    }

    /// The last SDP `side`'s party sent: what it can receive.
    pub(crate) fn sdp(&self, side: Side) -> Option<&[u8]> {
        self.sdp[side as usize].as_deref()
    }

    /// The caller's INVITE, as it came.
    pub(crate) fn invite(&self) -> &Message {
        &self.a_invite
    }

    /// Side B has its party: a fork answered, or a picker took the call.
    pub(crate) fn b_answered(&self) -> bool {
        self.winner.is_some() || self.picked || self.moved_in_b
    }

    /// The side whose party left, waiting for the next one.
    pub(crate) fn vacant(&self) -> Option<Side> {
        self.vacant
    }

    /// The party that left the vacant side is still to be sent its BYE.
    pub(crate) fn departed_live(&self) -> bool {
        self.departed_live
    }

    /// `side`'s party has left (a transferor, its call parked): nothing more is relayed to it,
    /// its relay leg waits for the next party, and it is still to be sent its BYE.
    pub(crate) fn vacate(&mut self, side: Side) {
        self.vacant = Some(side);
        self.departed_live = true;
    }

    /// The vacant side `side` has its next party (a retriever, a recalled phone).
    pub(crate) fn fill(&mut self, side: Side) {
        debug_assert_eq!(self.vacant, Some(side));
        self.vacant = None;
    }

    /// `side`'s party sent `sdp` (none: an offer still to come).
    pub(crate) fn set_sdp(&mut self, side: Side, sdp: Option<Bytes>) {
        self.sdp[side as usize] = sdp;
    }

    /// A call whose answer we gave and acknowledged ourselves (a recall answered) is up.
    pub(crate) fn confirm(&mut self) {
        self.state = CallState::Confirmed;
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
    media: &mut Media,
    call: &mut Call,
    from: Side,
    msg: &Message,
    source: IpAddr,
) -> Result<Option<Vec<u8>>, ()> {
    if !is_sdp(msg) {
        return Ok(None);
    }
    call.sdp[from as usize] = Some(msg.body.clone());
    let Some(relay) = call.media else {
        return Ok(Some(msg.body.to_vec()));
    };
    let info = orbit_media::sdp::media_info(&msg.body).map_err(|_| ())?;
    relay.set_remote(media, from.leg(), info.rtp, info.rtcp, source);
    relay.set_dtmf(
        media,
        from.leg(),
        orbit_media::sdp::telephone_event(&msg.body),
    );
    orbit_media::sdp::rewrite(&msg.body, relay.local(from.other().leg()))
        .map(Some)
        .map_err(|_| ())
}

/// Who calls whom, for [`Calls::start_call`].
pub(crate) struct NewCall {
    pub caller: String,
    pub callee: String,
    /// The caller's display name as it came.
    pub display: Option<String>,
    pub max_forwards: u32,
}

/// A call the edge answers itself (the park extension): side A is the caller, side B is
/// vacant (nobody else is in it).
#[allow(clippy::too_many_arguments)]
pub(crate) fn insert_app_call(
    edge: &mut Calls,
    now: Instant,
    id: u64,
    span: Span,
    a: Dialog,
    media: Relay,
    msg: Message,
    key: &ServerKey,
    offer: Option<Bytes>,
    owner: Option<String>,
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
    let mut call = Call::new(id, span, now, a, msg, key, b, media);
    call.state = CallState::Answered;
    call.sdp = [offer, None];
    call.vacant = Some(Side::B);
    call.invite_busy = false;
    call.owner = owner;
    edge.insert_call(call);
}

/// A parked call moved here from another edge (it drains, `park/moving.rs`): `party`, on side
/// `side`, is in a dialog whose other end this edge now plays; the other side is vacant, as a
/// parked call's is. `msg` and `key` are the offer's request (never answered as an INVITE: the
/// call is up).
#[allow(clippy::too_many_arguments)]
pub(crate) fn insert_moved_call(
    edge: &mut Calls,
    now: Instant,
    id: u64,
    span: Span,
    side: Side,
    party: Dialog,
    media: Relay,
    msg: Message,
    key: &ServerKey,
    sdp: Option<Bytes>,
) {
    let vacant = Dialog {
        call_id: String::new(),
        local_tag: String::new(),
        local_hdr: String::new(),
        remote_hdr: String::new(),
        remote_target: String::new(),
        route_set: vec![],
        local_cseq: 0,
        remote_cseq: 0,
        flow: party.flow,
        contact_user: String::new(),
        user: String::new(),
    };
    edge.dialogs
        .insert((party.call_id.clone(), party.local_tag.clone()), id);
    let (a, b) = match side {
        Side::A => (party, vacant),
        Side::B => (vacant, party),
    };
    let mut call = Call::new(id, span, now, a, msg, key, b, media);
    call.state = CallState::Confirmed;
    call.sdp[side as usize] = sdp;
    call.vacant = Some(side.other());
    call.invite_busy = false;
    call.moved_in_b = side == Side::B;
    edge.insert_call(call);
}

/// Answer a party's INVITE ourselves (retrieve) with `bytes`, a 2xx, and resend it until the
/// party ACKs.
pub(crate) fn send_own_2xx(
    edge: &mut Calls,
    now: Instant,
    id: u64,
    side: Side,
    key: &ServerKey,
    cseq: u32,
    bytes: Bytes,
) {
    if let Some(call) = edge.calls.get_mut(&id) {
        call.ok_retx[side as usize] = Some(OkRetx {
            cseq,
            rt: Retransmitter::new(now, edge.sv.timing),
            bytes: bytes.clone(),
        });
        call.own_answer = Some((side, cseq));
        if call.state == CallState::Ringing && call.ring_watched {
            edge.answered.push(id);
        }
        call.state = CallState::Answered;
    }
    edge.reply_bytes(now, key, 200, bytes);
    schedule_call(edge, id);
}

/// Send an ACK for the 2xx that established `side`'s dialog (a recall we placed).
pub(crate) fn send_own_ack(edge: &mut Calls, id: u64, side: Side, cseq: u32) {
    let branch = edge.new_branch();
    let Some(call) = edge.calls.get(&id) else {
        return;
    };
    let d = call.dialog_ref(side);
    let flow = d.flow;
    let ack = d.request(&edge.sv.local, "ACK", cseq, &branch.branch, &[], None);
    edge.calls.get_mut(&id).expect("present").acked = Some((side, cseq, ack.clone()));
    edge.send(flow, ack);
}

pub(crate) fn schedule_call(edge: &mut Calls, id: u64) {
    let next = edge.calls.get(&id).and_then(|c| {
        c.ok_retx
            .iter()
            .flatten()
            .map(|r| r.rt.poll_timeout())
            .min()
    });
    if let Some(t) = next {
        edge.sv.timers.schedule(t, TimerKey::Call(id));
    }
}

pub(crate) fn on_timer(edge: &mut Calls, now: Instant, id: u64) {
    for side in [Side::A, Side::B] {
        let Some(call) = edge.calls.get_mut(&id) else {
            return;
        };
        let Some(r) = call.ok_retx[side as usize].as_mut() else {
            continue;
        };
        match r.rt.on_timeout(now) {
            Some(true) => {
                let b = r.bytes.clone();
                let flow = call.dialog_ref(side).flow;
                edge.send(flow, b);
            }
            Some(false) => {}
            None => {
                // No ACK for our 2xx within 64·T1: the dialog is dead (RFC 3261 §13.3.1.4).
                call.ok_retx = [None, None];
                let _g = call.span.clone().entered();
                warn!("no ACK for 2xx");
                return hangup(edge, now, id, "no ACK");
            }
        }
    }
    schedule_call(edge, id);
}

impl Calls {
    /// Which call and side a dialog named by a `Replaces` belongs to (either tag may be ours).
    pub(crate) fn dialog_named(&self, r: &Replaces) -> Option<(u64, Side)> {
        for tag in [&r.to_tag, &r.from_tag] {
            if let Some(&cid) = self.dialogs.get(&(r.call_id.clone(), tag.clone())) {
                let call = self.calls.get(&cid)?;
                let side = [Side::A, Side::B].into_iter().find(|&s| {
                    call.dialog_ref(s).call_id == r.call_id && call.dialog_ref(s).local_tag == *tag
                })?;
                return Some((cid, side));
            }
        }
        None
    }

    /// Seat the next party (`d`) on side `side` of call `id`, re-keying the dialog map.
    pub(crate) fn seat(&mut self, id: u64, side: Side, d: Dialog) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let old = call.dialog_ref(side);
        let old_key = (old.call_id.clone(), old.local_tag.clone());
        let new_key = (d.call_id.clone(), d.local_tag.clone());
        *call.dialog(side) = d;
        self.dialogs.remove(&old_key);
        self.dialogs.insert(new_key, id);
    }

    /// Take a new call in, counting it against its owner.
    pub(crate) fn insert_call(&mut self, call: Call) {
        if let Some(o) = &call.owner {
            *self.calls_by_user.entry(o.clone()).or_default() += 1;
        }
        self.calls.insert(call.id, call);
    }
}
