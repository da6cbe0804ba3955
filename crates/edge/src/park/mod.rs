//! Call park on the edge: the SIP and media side of the orbit state.
//!
//! A parked call is an ordinary [`Call`] whose one party (the transferor) has left: its side is
//! *vacant*, the relay leg that faced it stays open, and the parked party's leg plays the lot's
//! music from the same relay port it was talking to, so the parked phone needs no re-INVITE.
//! Whoever comes next takes the vacant side: a retriever (its INVITE to the slot, answered by
//! us), or the recall (our INVITE to the parker's phones, then the lot's fallback).
//!
//! ```text
//! REFER 700 ──▶ Park ──▶ 202, NOTIFY 200, BYE transferor, MESSAGE "Parked on 701", music
//! INVITE 701 ─▶ Claim ─▶ 200 with the relay's vacant leg, music stops, parties bridged
//! deadline ───▶ Expire ─▶ INVITE parker ──(ring time)──▶ INVITE fallback ──▶ BYE caller
//! BYE from the parked caller ─▶ End(HungUp): the slot is free at once
//! ```
//!
//! Every decision (is the slot free? who won the claim?) is a command applied to the orbit
//! state, never a local guess, so that the registry can take over ordering across sites.
//!
//! Park is a layer ([`Parking`]) over the calls': it reaches its own tables and, through the
//! calls' methods, the calls it holds; one file per job (`place.rs`, `refer.rs`, `attended.rs`,
//! `one_touch.rs`, `retrieve.rs`, `recall.rs`, `handover.rs`), and `events.rs` for what it
//! hears (its proposals' outcomes, applied events, calls that ended).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use orbit_media::sdp;
use orbit_media::{Clip, Codec, Prompts};
use orbit_sip::build::Response;
use orbit_sip::dialog::Dialog;
use orbit_sip::header::{NameAddr, Replaces};
use orbit_sip::key::{ClientKey, ServerKey};
use orbit_sip::message::{Message, Name, Writer};
use orbit_sip::transport::Flow;
use orbit_sip::Method;
use orbit_state::{
    CallInfo, Command, EndReason, Event, LotKey, Millis, ParkId, Parked, RecallStage, Rejection,
};
use tracing::{debug, info, info_span, warn};

use crate::call::{self, is_sdp, Branch, BranchState, Call, CallState, Calls, NewCall, Side};
use crate::media::Leg;
use crate::services::orbit_port::{Feature, OrbitError, Outcome, Then};
use crate::services::transactions::Owner;
use crate::services::{TimerKey, ALLOW};

mod attended;
mod events;
mod give_back;
mod handover;
mod moved_in;
mod moving;
mod one_touch;
mod place;
mod recall;
mod refer;
mod retrieve;

pub(crate) use attended::*;
pub(crate) use events::*;
pub(crate) use give_back::*;
pub(crate) use handover::*;
pub(crate) use moved_in::*;
pub(crate) use moving::*;
pub(crate) use one_touch::*;
pub(crate) use place::*;
pub(crate) use recall::*;
pub(crate) use refer::*;
pub(crate) use retrieve::*;

/// What park tells pickup of a call's recall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecallNews {
    /// It began ringing the parker.
    Ringing(u64),
    /// It stopped (answered, taken, timed out, or its call ended).
    Stopped(u64),
}

/// The built-in music, synthesised once per process (immutable, so sharing it between sites
/// in one process shares nothing that could change).
pub(crate) fn builtin_music() -> Arc<Clip> {
    static MUSIC: OnceLock<Arc<Clip>> = OnceLock::new();
    MUSIC
        .get_or_init(|| Arc::new(orbit_media::audio::builtin_music()))
        .clone()
}

/// The park layer: park's own tables over the calls' layer (to which it derefs), whose calls
/// it holds, bridges and hands over.
pub struct Parking {
    pub(crate) b2bua: Calls,
    pub(crate) park: Parks,
    pub(crate) handover: Handover,
    /// How each of park's proposals in flight continues, by its token.
    pub(crate) then: HashMap<u64, ParkThen>,
}

impl std::ops::Deref for Parking {
    type Target = Calls;
    fn deref(&self) -> &Calls {
        &self.b2bua
    }
}

impl std::ops::DerefMut for Parking {
    fn deref_mut(&mut self) -> &mut Calls {
        &mut self.b2bua
    }
}

/// End call `id` from our side, and drop at once what park keeps for it: a recall ringing on
/// its behalf is cancelled before the BYEs leave.
pub(crate) fn hangup(edge: &mut Parking, now: Instant, id: u64, why: &'static str) {
    cancel_recall(edge, now, id);
    call::hangup(edge, now, id, why);
    edge.after_calls(now);
}

/// What the park feature keeps, in tables of its own keyed by call (the calls themselves are
/// the B2BUA's): every entry of a call is dropped when the call ends ([`on_call_end`]).
#[derive(Default)]
pub(crate) struct Parks {
    /// Calls held parked here.
    pub held: HashMap<u64, ParkState>,
    /// Park id → the call holding it.
    pub by_id: HashMap<ParkId, u64>,
    /// Calls to the park extension, and the slot each announced.
    pub consults: HashMap<u64, Consult>,
    /// Calls whose park is being ordered (not parkable again until its outcome).
    pub ordering: HashSet<u64>,
    /// Parks of calls held here that this edge's own proposal claimed (a retrieve here), until
    /// its watch shows the claim: an expiry of one that a lagging watch brings after the claim's
    /// answer rings no recall (the call has a retriever, or was parked again).
    pub claimed_here: HashSet<ParkId>,
    /// Recalls that began ringing the parker or stopped, by call, in order, since pickup last
    /// looked (it records and ends their rings). Taken by pickup.
    pub recall_news: Vec<RecallNews>,
    /// Digits each party of a call pressed lately (for the park code), and when the last came.
    pub digits: HashMap<u64, [(String, Option<Instant>); 2]>,
    /// Slots spoken to attended parkers, held until their REFER comes (or their call ends).
    pub announced: HashSet<u32>,
    /// Retrieves here that won the claim of a call whose park's answer has not come yet, by
    /// call (one per call: a park is claimed once).
    pub claimed_early: HashMap<u64, AfterClaim>,
    /// Retrieving INVITEs whose claim is in flight, and whether the retriever has cancelled
    /// meanwhile.
    pub claiming: HashMap<ServerKey, bool>,
    /// Claims whose outcome never came (the registry out of reach), by slot and claimant
    /// (`<this edge>/<retriever>`), and when they were given up: one the watch shows
    /// committed after all is given back.
    pub given_up: HashMap<(u32, String), Instant>,
    /// Music on hold per lot (park extension), encoded once.
    pub music: HashMap<String, Arc<Clip>>,
    /// The lot a one-touch park goes to: the tenant's first.
    pub default_lot: Option<LotKey>,
    /// Parked calls this edge is moving to another (it drains), by park (`moving.rs`).
    pub moving: HashMap<ParkId, Moving>,
    /// Parked calls another edge offered here, held (call, until when) until the log shows
    /// the move; bounded by `max_calls` and [`PROBATION`].
    pub probation: HashMap<ParkId, (u64, Instant)>,
}

/// What the edge keeps about a call it holds parked.
pub(crate) struct ParkState {
    pub id: ParkId,
    pub slot: u32,
    pub lot: LotKey,
    /// The side of the parked party.
    pub parked: Side,
    /// The parked party's codec (music, and what the next party must use).
    pub codec: Codec,
    pub pt: u8,
    pub te: Option<u8>,
    /// How the parked party is shown: its display name, else its user.
    pub label: String,
    pub caller_uri: String,
    pub parker: String,
    pub recall: Option<Recall>,
    /// A recall answer's claim whose commit was never shown: its phone was hung up, and the
    /// claim, by this target, is nobody's to fetch if the watch shows it after all.
    pub claim_given_up: Option<String>,
}

pub(crate) struct Recall {
    /// The phone (branch index) whose answer is being claimed for.
    pub claiming: Option<usize>,
    /// That answer, held unACKed while the watch is awaited: its claim's outcome never came.
    pub unsure: Option<AfterRecallClaim>,
    /// The watch showed that answer's claim committed before its outcome came.
    pub claim_shown: bool,
    pub attempt: u32,
    pub stage: RecallStage,
    pub target: String,
    pub branches: Vec<Branch>,
}

/// The spoken prompts, loaded once per process (immutable).
pub(crate) fn prompts() -> &'static Prompts {
    static P: OnceLock<Prompts> = OnceLock::new();
    P.get_or_init(Prompts::load)
}

/// Tell an extension something on its screen: a SIP MESSAGE (RFC 3428) to each of its phones.
fn tell(edge: &mut Parking, now: Instant, ext: &str, from_user: &str, text: &str) {
    let domain = edge.cfg.tenant.domain.clone();
    for b in edge.registrar.lookup(now, ext) {
        let branch = edge.new_branch();
        let tag = edge.ids.tag();
        let call_id = edge.ids.call_id("orbit");
        let mut w = Writer::request("MESSAGE", &b.contact);
        w.header("Via", &edge.local.via(b.flow.proto, &branch.branch));
        w.header("Max-Forwards", "70");
        w.header(
            "From",
            &format!("\"Call Park\" <sip:{from_user}@{domain}>;tag={tag}"),
        );
        w.header("To", &format!("<sip:{ext}@{domain}>"));
        w.header("Call-ID", &call_id);
        w.header("CSeq", "1 MESSAGE");
        let bytes = w.finish(Some("text/plain"), text.as_bytes());
        edge.send_request(now, b.flow, branch, false, bytes, Owner::Nobody);
    }
}

/// A request from a party while its call is parked (or half-parked): nobody to relay it to.
pub(crate) fn parked_request(
    edge: &mut Parking,
    now: Instant,
    id: u64,
    side: Side,
    key: ServerKey,
    msg: Message,
) {
    let method = msg.method().clone();
    if method != Method::Invite {
        return edge.reply(now, &key, Response::to(&msg, 200));
    }
    // A re-INVITE (session refresh, hold): answer it with the relay's address for this party,
    // so the music keeps reaching it.
    // Its dialog is changing hands to another edge: that edge re-INVITEs it in a moment.
    if edge
        .park
        .held
        .get(&id)
        .is_some_and(|ps| is_moving(edge, ps.id))
    {
        return edge.reply(now, &key, Response::to(&msg, 491));
    }
    let call = edge.b2bua.calls.get_mut(&id).expect("present");
    let Some(ps) = edge.park.held.get(&id) else {
        return edge.reply(now, &key, Response::to(&msg, 491));
    };
    let (codec, pt, te) = (ps.codec, ps.pt, ps.te);
    let Some(media) = call.media else {
        return edge.reply(now, &key, Response::to(&msg, 488));
    };
    if is_sdp(&msg) {
        match sdp::media_info(&msg.body) {
            Ok(info) => media.set_remote(
                &mut edge.b2bua.sv.media,
                side.leg(),
                info.rtp,
                info.rtcp,
                call.dialog_ref(side).flow.addr.ip(),
            ),
            Err(_) => return edge.reply(now, &key, Response::to(&msg, 488)),
        }
        call.set_sdp(side, Some(msg.body.clone()));
    }
    let body = sdp::ours(media.local(side.leg()), msg.cseq.seq as u64, codec, pt, te);
    let d = call.dialog_ref(side);
    let c = edge.b2bua.sv.local.contact(&d.contact_user, d.flow.proto);
    let bytes = Response::to(&msg, 200)
        .reason("OK")
        .header("Contact", &c)
        .header("Allow", ALLOW)
        .body("application/sdp", &body)
        .encode(d.flow.addr);
    call::send_own_2xx(edge, now, id, side, &key, msg.cseq.seq, bytes);
}

/// The edge's own SDP for a relay leg at `local`, in the parked party's codec, versioned by
/// the wall clock's second (`now_ms`).
fn relay_offer(
    now_ms: Millis,
    local: std::net::SocketAddr,
    (codec, pt, te): (Codec, u8, Option<u8>),
) -> Vec<u8> {
    sdp::ours(local, now_ms / 1000, codec, pt, te)
}

/// The registry gave up on call `cid` (park `id`): this edge's lease lapsed, so the slot may
/// hold another call by now. Nobody can retrieve it any more: hang the caller up.
pub(crate) fn lost(edge: &mut Parking, now: Instant, id: ParkId, cid: u64) {
    let why = "parked call lost with our lease: hanging up";
    let _ = drop_parked(edge, now, id, cid, why);
    hangup(edge, now, cid, "lease lapsed");
}

/// An operator ended park `id` (call `cid`) through the admin API: hang the caller up.
pub(crate) fn ended_by_operator(edge: &mut Parking, now: Instant, id: ParkId, cid: u64) {
    if drop_parked(edge, now, id, cid, "parked call hung up by an operator") {
        hangup(edge, now, cid, "hung up by an operator");
    }
}

/// Forget park `id` of call `cid` here (its recall stopped), logging `why`; whether the call
/// is still here to hang up.
fn drop_parked(edge: &mut Parking, now: Instant, id: ParkId, cid: u64, why: &str) -> bool {
    unhold(edge, id);
    cancel_recall(edge, now, cid);
    let Some(call) = edge.b2bua.calls.get(&cid) else {
        return false;
    };
    if let Some(ps) = edge.park.held.remove(&cid) {
        let span = call.span.clone();
        let _g = span.enter();
        warn!(slot = ps.slot, caller = %ps.caller_uri, "{why}");
    }
    true
}

/// This edge no longer holds park `id` (retrieved, recalled, ended, lost, re-parked): forget
/// it here and in the trunk's claim tables; a trunk claim of it still waiting is refused.
fn unhold(edge: &mut Parking, id: ParkId) {
    edge.park.by_id.remove(&id);
    if let Some(c) = edge.handover.forget(id) {
        let r = Response::to(&c.msg, 404).reason("Park Not Held Here");
        let at = edge.last_now;
        edge.reply(at, &c.key, r);
    }
}

/// How long a parked call may be silent: configured, or the lot's parking time, recall and
/// fallback rings and the ordinary media timeout, so that silence alone never ends a park
/// before its recall has run.
pub(crate) fn parked_timeout(edge: &Parking, ps: &ParkState) -> Duration {
    if let Some(s) = edge.cfg.media.parked_timeout_secs {
        return Duration::from_secs(s);
    }
    let lot = edge.orbit.lot(&ps.lot);
    let parking = lot.map_or(0, |l| l.parking_ms);
    let rings = lot.map_or(0, |l| {
        l.recall_ring_ms * if l.fallback.is_some() { 2 } else { 1 }
    });
    Duration::from_millis(parking.saturating_add(rings))
        + Duration::from_secs(edge.cfg.media.timeout_secs)
}

/// Call `cid` is gone (`why`: why we ended it, if we did): its entries here go, and if it was
/// parked, its slot is free at once.
pub(crate) fn on_call_end(edge: &mut Parking, now: Instant, cid: u64, why: Option<&'static str>) {
    let p = &mut edge.park;
    if let Some(c) = p.consults.remove(&cid) {
        p.announced.remove(&c.slot);
    }
    p.ordering.remove(&cid);
    p.digits.remove(&cid);
    if let Some(a) = p.claimed_early.remove(&cid) {
        nobody_parked(edge, now, &a, 404);
    }
    let p = &mut edge.park;
    let Some(mut ps) = p.held.remove(&cid) else {
        return;
    };
    unhold(edge, ps.id);
    if let Some(r) = &mut ps.recall {
        edge.park.recall_news.push(RecallNews::Stopped(cid));
        for b in &r.branches {
            cancel_branch(edge, now, b, None);
        }
        hang_up_unsure(edge, now, r);
    }
    // Whatever this edge's state shows (across sites it may lag): the log decides.
    let reason = match why {
        Some("no media") => {
            warn!(slot = ps.slot, caller = %ps.caller_uri, "parked call ended: no RTP or RTCP from the parked caller");
            EndReason::NoMedia
        }
        Some("shutdown") => {
            warn!(slot = ps.slot, caller = %ps.caller_uri, "parked call ended: this edge is stopping");
            EndReason::Lost
        }
        _ => {
            info!(slot = ps.slot, "parked caller hung up");
            EndReason::HungUp
        }
    };
    let end = Command::End {
        park: ps.id,
        reason,
    };
    edge.propose(now, end, Then::Nothing);
}
