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
    CallInfo, Command, EndReason, Event, LotKey, Millis, ParkId, RecallStage, Rejection,
};
use tracing::{info, info_span, warn};

use crate::call::{self, is_sdp, Branch, BranchState, Call, CallState, Side};
use crate::core::{Edge, TimerKey, ALLOW};
use crate::media::Leg;
use crate::orbit::{OrbitError, Outcome, Then};
use crate::transactions::Owner;

/// The built-in music, synthesised once per process (immutable, so sharing it between sites
/// in one process shares nothing that could change).
pub(crate) fn builtin_music() -> Arc<Clip> {
    static MUSIC: OnceLock<Arc<Clip>> = OnceLock::new();
    MUSIC
        .get_or_init(|| Arc::new(orbit_media::audio::builtin_music()))
        .clone()
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
}

pub(crate) struct Recall {
    /// The phone (branch index) whose answer is being claimed for.
    pub claiming: Option<usize>,
    pub attempt: u32,
    pub stage: RecallStage,
    pub target: String,
    pub branches: Vec<Branch>,
}

impl Edge {
    /// `user` as a parking slot number of this tenant.
    pub(crate) fn slot_number(&self, user: &str) -> Option<u32> {
        if user.is_empty() || !user.bytes().all(|b| b.is_ascii_digit()) || user.starts_with('0') {
            return None;
        }
        let n: u32 = user.parse().ok()?;
        self.orbit.lot_of(&self.cfg.tenant.domain, n).map(|_| n)
    }
}

/// The parked party as the other parties should see it.
fn label_of(d: &Dialog) -> (String, String, Option<String>) {
    let na = NameAddr::parse(&d.remote_hdr);
    let uri = na.as_ref().map(|n| n.uri.to_string()).unwrap_or_default();
    let display = na
        .as_ref()
        .and_then(|n| n.display)
        .map(|s| s.trim_matches('"').to_string())
        .filter(|s| !s.is_empty());
    let label = display.clone().unwrap_or_else(|| {
        orbit_sip::Uri::parse(&uri)
            .ok()
            .and_then(|u| u.user().map(str::to_string))
            .unwrap_or_else(|| "caller".into())
    });
    (label, uri, display)
}

/// The codec the parked party is using: the first G.711 format of the other party's SDP that
/// the parked party also offered, else the parked party's own first G.711.
fn parked_codec(call: &Call, parked: Side) -> (Codec, u8, Option<u8>) {
    let mine = call.sdp[parked as usize].as_deref().unwrap_or(b"");
    let theirs = call.sdp[parked.other() as usize].as_deref().unwrap_or(b"");
    let my_formats = sdp::formats(mine).unwrap_or_default();
    let chosen = sdp::formats(theirs)
        .unwrap_or_default()
        .iter()
        .filter_map(|(_, n)| Codec::from_name(n))
        .find_map(|c| {
            my_formats
                .iter()
                .find(|(_, n)| Codec::from_name(n) == Some(c))
                .map(|(pt, _)| (c, *pt))
        })
        .or_else(|| sdp::g711(mine))
        .unwrap_or((Codec::Pcmu, 0));
    (chosen.0, chosen.1, sdp::telephone_event(mine))
}

// ------------------------------------------------------------------ park

/// A park being ordered: what the edge keeps until the outcome, and how the flow that asked
/// for it continues.
pub(crate) struct AfterPark {
    cid: u64,
    parker: Side,
    lot: LotKey,
    label: String,
    caller_uri: String,
    parker_ext: String,
    codec: Codec,
    pt: u8,
    te: Option<u8>,
    how: ParkBy,
}

enum ParkBy {
    /// A REFER in the call to park (blind; or attended, completed from that call, ending the
    /// consultation call `consult_call`).
    Refer {
        event: String,
        no_sub: bool,
        consult_call: Option<u64>,
    },
    /// A REFER in the consultation call (`consult`, from its side `from`) whose Replaces named
    /// the call to park.
    FromConsult {
        consult: u64,
        from: Side,
        event: String,
        no_sub: bool,
    },
    /// The park code pressed on side `parker`: speak the outcome to it in its codec.
    OneTouch { codec: Codec, pt: u8 },
}

/// Park the party facing away from `parker` in call `cid`: the orbit decides the slot. Until
/// the outcome the call is not parkable again; [`park_outcome`] continues.
fn propose_park(
    edge: &mut Edge,
    now: Instant,
    cid: u64,
    parker: Side,
    lot: LotKey,
    slot: Option<u32>,
    how: ParkBy,
) {
    let parked = parker.other();
    let call = edge.calls.get_mut(&cid).expect("present");
    call.parking = true;
    let pd = call.dialog_ref(parked);
    let (label, caller_uri, caller_display) = label_of(pd);
    let (codec, pt, te) = parked_codec(call, parked);
    let info = CallInfo {
        caller_uri: caller_uri.clone(),
        caller_display,
        parker: call.dialog_ref(parker).user.clone(),
        edge: edge.cfg.site.clone(),
        call_id: pd.call_id.clone(),
        local_tag: pd.local_tag.clone(),
        remote_tag: NameAddr::parse(&pd.remote_hdr)
            .and_then(|n| n.tag().map(str::to_string))
            .unwrap_or_default(),
        codec: Some(codec.name().to_string()),
    };
    let after = AfterPark {
        cid,
        parker,
        lot: lot.clone(),
        label,
        caller_uri,
        parker_ext: info.parker.clone(),
        codec,
        pt,
        te,
        how,
    };
    let span = call.span.clone();
    let _g = span.enter();
    edge.propose(
        now,
        Command::Park {
            lot,
            slot,
            call: info,
        },
        Then::Park(after),
    );
}

/// The park's outcome. Parked: the parked party hears the lot's music from its own relay
/// port, the parker's side is vacant, the parker's phones are told the slot, and the flow
/// finishes (NOTIFY, BYE, prompt). Refused: the call stays with the parker.
pub(crate) fn park_outcome(edge: &mut Edge, now: Instant, a: AfterPark, outcome: Outcome) {
    let live = edge.calls.get_mut(&a.cid).is_some_and(|c| {
        c.parking = false;
        c.state == CallState::Confirmed
    });
    let p = match outcome {
        Ok(Event::Parked(p)) => p,
        Ok(ev) => {
            warn!(?ev, "park answered with another event");
            return park_refused(edge, now, a, &OrbitError::Unavailable("bad answer".into()));
        }
        Err(e) => {
            warn!(error = %e, "park refused; the call stays with the parker");
            return park_refused(edge, now, a, &e);
        }
    };
    if !live {
        // The call ended while the park was being ordered: free the slot again.
        info!(slot = p.slot, "call ended while parking");
        if let ParkBy::FromConsult { consult, .. } = a.how {
            call::hangup(edge, now, consult, "call to park ended");
        }
        let end = Command::End {
            park: p.id,
            reason: EndReason::HungUp,
        };
        return edge.propose(now, end, Then::Nothing);
    }
    info!(slot = p.slot, by = %a.parker_ext, "parked");
    let parked = a.parker.other();
    let music = edge
        .music
        .get(&a.lot.park_ext)
        .cloned()
        .unwrap_or_else(builtin_music);
    let call = edge.calls.get_mut(&a.cid).expect("present");
    if let Some(m) = &call.media {
        m.play(parked.leg(), music, a.codec, a.pt, true);
    }
    call.vacant = Some(a.parker);
    call.departed_live = true;
    call.park = Some(ParkState {
        id: p.id,
        slot: p.slot,
        lot: a.lot,
        parked,
        codec: a.codec,
        pt: a.pt,
        te: a.te,
        label: a.label,
        caller_uri: a.caller_uri,
        parker: a.parker_ext.clone(),
        recall: None,
    });
    edge.parks.insert(p.id, a.cid);
    let text = format!("Parked on {}", p.slot);
    tell(edge, now, &a.parker_ext, &p.lot.park_ext, &text);
    let (cid, from) = (a.cid, a.parker);
    match a.how {
        ParkBy::Refer {
            event,
            no_sub,
            consult_call,
        } => {
            if let Some(m) = &edge.calls[&cid].media {
                m.vacate(from.leg());
            }
            if no_sub {
                call::send_bye_departed(edge, now, cid, from);
            } else {
                refer_notify(edge, now, cid, from, &event, "SIP/2.0 200 OK", Some(from));
            }
            if let Some(c) = consult_call {
                call::hangup(edge, now, c, "attended park completed");
            }
        }
        ParkBy::FromConsult {
            consult,
            from: cfrom,
            event,
            no_sub,
        } => {
            if let Some(m) = &edge.calls[&cid].media {
                m.vacate(from.leg());
            }
            call::send_bye_departed(edge, now, cid, from);
            if !no_sub {
                refer_notify(edge, now, consult, cfrom, &event, "SIP/2.0 200 OK", None);
            }
            call::hangup(edge, now, consult, "attended park completed");
        }
        ParkBy::OneTouch { codec, pt } => {
            let clip = Arc::new(prompts().parked_on(p.slot));
            let after = clip.duration() + Duration::from_millis(200);
            speak(edge, now, cid, from, clip, codec, pt, after, true);
        }
    }
}

fn park_refused(edge: &mut Edge, now: Instant, a: AfterPark, e: &OrbitError) {
    if !edge.calls.contains_key(&a.cid) {
        return;
    }
    match a.how {
        ParkBy::Refer { event, no_sub, .. } => {
            if !no_sub {
                refer_notify(edge, now, a.cid, a.parker, &event, refusal_frag(e), None);
            }
        }
        ParkBy::FromConsult {
            consult,
            from,
            event,
            no_sub,
        } => {
            if !no_sub && edge.calls.contains_key(&consult) {
                refer_notify(edge, now, consult, from, &event, refusal_frag(e), None);
            }
        }
        ParkBy::OneTouch { codec, pt } => {
            let clip = match e {
                OrbitError::Rejected(Rejection::LotFull) => prompts().lot_full.clone(),
                _ => prompts().park_failed.clone(),
            };
            let after = clip.duration();
            speak(edge, now, a.cid, a.parker, clip, codec, pt, after, false);
        }
    }
}

/// The sipfrag status line that reports a refused park.
fn refusal_frag(e: &OrbitError) -> &'static str {
    match e {
        OrbitError::Rejected(Rejection::LotFull) => "SIP/2.0 503 Parking Lot Full",
        OrbitError::Rejected(Rejection::SlotTaken(_)) => "SIP/2.0 486 Slot Taken",
        OrbitError::Rejected(Rejection::NotASlot(_)) => "SIP/2.0 404 No Such Slot",
        OrbitError::Unavailable(_) => "SIP/2.0 503 Parking Unavailable",
        _ => "SIP/2.0 500 Park Failed",
    }
}

/// Which call and side a dialog named by a Replaces belongs to (either tag may be ours).
fn dialog_named(edge: &Edge, r: &Replaces) -> Option<(u64, Side)> {
    for tag in [&r.to_tag, &r.from_tag] {
        if let Some(&cid) = edge.dialogs.get(&(r.call_id.clone(), tag.clone())) {
            let call = edge.calls.get(&cid)?;
            let side = [Side::A, Side::B].into_iter().find(|&s| {
                call.dialog_ref(s).call_id == r.call_id && call.dialog_ref(s).local_tag == *tag
            })?;
            return Some((cid, side));
        }
    }
    None
}

/// The dialog a REFER's Replaces names, if it is one of the REFER sender's own: a user may
/// complete a transfer only with its own calls (naming someone else's dialog would take over
/// that call). `Err` when it names a dialog of another user (403, logged).
fn own_dialog_named(
    edge: &Edge,
    id: u64,
    from: Side,
    r: &Replaces,
) -> Result<Option<(u64, Side)>, ()> {
    let Some((cid, side)) = dialog_named(edge, r) else {
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

fn parkable(call: &Call) -> bool {
    call.state == CallState::Confirmed
        && !call.parking
        && call.park.is_none()
        && call.vacant.is_none()
        && call.consult.is_none()
        && !call.negotiating()
}

// ------------------------------------------------------------------ park by REFER

pub(crate) fn on_refer(
    edge: &mut Edge,
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
    let refuse = |edge: &mut Edge, code: u16, reason: &str| {
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
    if let Some(c) = edge.calls[&id].consult.clone() {
        let Some((ocid, oside)) = named else {
            return refuse(edge, 403, "Transfer Only To Park");
        };
        if ocid == id || !parkable(&edge.calls[&ocid]) {
            return edge.reply(now, &key, Response::to(&msg, 491));
        }
        edge.reply(now, &key, Response::to(&msg, 202).pairs(extra));
        edge.announced.remove(&c.slot);
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
        match named.and_then(|(c, _)| Some((c, edge.calls[&c].consult.clone()?))) {
            Some((c, consult)) => {
                consult_call = Some(c);
                (consult.lot, Some(consult.slot))
            }
            None => return refuse(edge, 403, "Transfer Only To Park"),
        }
    } else if let Some(l) = edge.orbit.lot_by_ext(&tenant, &user) {
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
    if !parkable(&edge.calls[&id]) {
        return edge.reply(now, &key, Response::to(&msg, 491));
    }
    edge.reply(now, &key, Response::to(&msg, 202).pairs(extra));
    if let Some(s) = slot {
        if consult_call.is_some() {
            edge.announced.remove(&s);
        }
    }
    let how = ParkBy::Refer {
        event,
        no_sub,
        consult_call,
    };
    propose_park(edge, now, id, from, lot, slot, how);
}

// ------------------------------------------------------------------ attended park: call 700

/// A call to the park extension: the edge answers and speaks the slot the caller's other call
/// will be parked in, and waits for the REFER with Replaces that completes the park.
#[derive(Clone)]
pub(crate) struct Consult {
    pub lot: LotKey,
    pub slot: u32,
}

/// The spoken prompts, loaded once per process (immutable).
pub(crate) fn prompts() -> &'static Prompts {
    static P: OnceLock<Prompts> = OnceLock::new();
    P.get_or_init(Prompts::load)
}

/// How long the edge holds an announced slot for the REFER that completes an attended park.
const CONSULT_HOLD: Duration = Duration::from_secs(60);

pub(crate) fn on_park_call(
    edge: &mut Edge,
    now: Instant,
    key: &ServerKey,
    flow: Flow,
    msg: Message,
    parker: String,
    lot: LotKey,
) {
    let offer = is_sdp(&msg).then(|| msg.body.clone());
    let Some((codec, pt)) = offer.as_deref().and_then(sdp::g711) else {
        let bytes = Response::to(&msg, 488)
            .reason("G.711 Needed For Prompts")
            .encode(flow.addr);
        return edge.reply_bytes(now, key, 488, bytes);
    };
    let id = edge.next_call_id();
    let media = match edge.media.open(id) {
        Ok(m) => m,
        Err(e) => {
            warn!(error = %e, "no media ports");
            return edge.reply(now, key, Response::to(&msg, 503));
        }
    };
    let announced = edge.announced.clone();
    let slot = edge.orbit.free_slot(&lot, |s| announced.contains(&s));
    let tag = edge.ids.tag();
    let d = Dialog::uas(&msg, flow, &tag, &lot.park_ext, &parker);
    let span = info_span!(parent: None, "call", id, caller = %parker, callee = %lot.park_ext, site = %edge.cfg.site);
    let _g = span.enter();
    let info = offer.as_deref().and_then(|o| sdp::media_info(o).ok());
    if let Some(i) = info {
        media.set_remote(Leg::A, i.rtp, i.rtcp, flow.addr.ip());
    }
    let te = offer.as_deref().and_then(sdp::telephone_event);
    let body = sdp::ours(
        media.local(Leg::A),
        now_version(edge.now_ms(now)),
        codec,
        pt,
        te,
    );
    let (clip, consult) = match slot {
        Some(s) => {
            info!(slot = s, "attended park: slot announced");
            edge.announced.insert(s);
            (
                Arc::new(prompts().parked_on(s)),
                Some(Consult {
                    lot: lot.clone(),
                    slot: s,
                }),
            )
        }
        None => {
            info!("attended park: lot full");
            (prompts().lot_full.clone(), None)
        }
    };
    let hold = if consult.is_some() {
        CONSULT_HOLD
    } else {
        clip.duration() + Duration::from_millis(200)
    };
    media.play(Leg::A, clip, codec, pt, false);
    let invite = msg.clone();
    call::insert_app_call(
        edge,
        now,
        id,
        span.clone(),
        d,
        media,
        invite,
        key,
        offer,
        consult,
    );
    let c = edge.local.contact(&lot.park_ext, flow.proto);
    let bytes = Response::to(&msg, 200)
        .reason("OK")
        .tag(&tag)
        .header("Contact", &c)
        .header("Allow", ALLOW)
        .body("application/sdp", &body)
        .encode(flow.addr);
    call::send_own_2xx(edge, now, id, Side::A, key, msg.cseq.seq, bytes);
    edge.timers.schedule(now + hold, TimerKey::AppHangup(id));
}

/// The call to the park extension has lasted its time (the prompt, or the wait for the REFER).
pub(crate) fn on_app_hangup(edge: &mut Edge, now: Instant, id: u64) {
    if edge
        .calls
        .get(&id)
        .is_some_and(|c| c.consult.is_some() || c.vacant == Some(Side::B))
    {
        call::hangup(edge, now, id, "park prompt done");
    }
}

// ------------------------------------------------------------------ one-touch park: *68

/// A digit from a party, by RFC 4733 in RTP or by SIP INFO: the park code parks the other party.
pub(crate) fn on_digit(edge: &mut Edge, now: Instant, cid: u64, side: Side, digit: char) {
    let code = edge.cfg.tenant.features.park.clone();
    let Some(call) = edge.calls.get_mut(&cid) else {
        return;
    };
    if !parkable(call) {
        return;
    }
    let (buf, last) = &mut call.digits[side as usize];
    if last.is_some_and(|t| now.duration_since(t) > Duration::from_secs(3)) {
        buf.clear();
    }
    buf.push(digit);
    *last = Some(now);
    if buf.len() > 16 {
        buf.remove(0);
    }
    if !buf.ends_with(&code) {
        return;
    }
    buf.clear();
    let Some(lot) = edge.default_lot.clone() else {
        return;
    };
    let (codec, pt) = call.sdp[side as usize]
        .as_deref()
        .and_then(sdp::g711)
        .unwrap_or((Codec::Pcmu, 0));
    let span = call.span.clone();
    let _g = span.enter();
    info!(by = ?side, "one-touch park");
    // Parked: the presser hears the slot, then its leg ends. Refused: it hears why, then the
    // other party again.
    propose_park(
        edge,
        now,
        cid,
        side,
        lot,
        None,
        ParkBy::OneTouch { codec, pt },
    );
}

/// Play `clip` to `side` of call `cid`; when it is over, BYE that side (`bye`) or bridge it
/// again.
#[allow(clippy::too_many_arguments)]
fn speak(
    edge: &mut Edge,
    now: Instant,
    cid: u64,
    side: Side,
    clip: Arc<Clip>,
    codec: Codec,
    pt: u8,
    after: Duration,
    bye: bool,
) {
    if let Some(m) = &edge.calls[&cid].media {
        m.play(side.leg(), clip, codec, pt, false);
    }
    edge.timers.schedule(
        now + after,
        TimerKey::Prompt {
            call: cid,
            side,
            bye,
        },
    );
}

/// A prompt to a presser has ended: hang its leg up (parked) or let it hear the call again.
pub(crate) fn on_prompt_done(edge: &mut Edge, now: Instant, cid: u64, side: Side, bye: bool) {
    let Some(call) = edge.calls.get(&cid) else {
        return;
    };
    if bye {
        // Still the presser on that side (not a retriever or a recall that took it since).
        if call.vacant == Some(side) && call.departed_live {
            if let Some(m) = &call.media {
                m.vacate(side.leg());
            }
            call::send_bye_departed(edge, now, cid, side);
        }
    } else if let Some(m) = &call.media {
        m.bridge(side.leg());
    }
}

/// A SIP INFO digit (`application/dtmf-relay` "Signal=5", or `application/dtmf` "5").
pub(crate) fn info_digit(msg: &Message) -> Option<char> {
    let ct = msg.content_type()?.to_ascii_lowercase();
    let body = std::str::from_utf8(&msg.body).ok()?;
    let v = if ct.starts_with("application/dtmf-relay") {
        body.lines()
            .find_map(|l| {
                l.split_once('=')
                    .filter(|(k, _)| k.trim().eq_ignore_ascii_case("signal"))
            })?
            .1
    } else if ct.starts_with("application/dtmf") {
        body
    } else {
        return None;
    };
    let c = v.trim().chars().next()?;
    (c.is_ascii_digit() || matches!(c, '*' | '#' | 'A'..='D')).then_some(c)
}

/// NOTIFY the transferor of the REFER's outcome (RFC 3515 with a final message/sipfrag);
/// `bye`: end its dialog once the NOTIFY is answered.
fn refer_notify(
    edge: &mut Edge,
    now: Instant,
    id: u64,
    to: Side,
    event: &str,
    frag: &str,
    bye: Option<Side>,
) {
    let branch = edge.new_branch();
    let call = edge.calls.get_mut(&id).expect("present");
    let d = call.dialog(to);
    d.local_cseq += 1;
    let cseq = d.local_cseq;
    let flow = d.flow;
    let body = format!("{frag}\r\n");
    let d = edge.calls[&id].dialog_ref(to);
    let bytes = d.request(
        &edge.local,
        "NOTIFY",
        cseq,
        &branch.branch,
        &[
            ("Event", event),
            ("Subscription-State", "terminated;reason=noresource"),
        ],
        Some(("message/sipfrag;version=2.0", body.as_bytes())),
    );
    edge.send_request(
        now,
        flow,
        branch,
        false,
        bytes,
        Owner::ReferNotify { call: id, bye },
    );
}

pub(crate) fn notify_done(edge: &mut Edge, now: Instant, id: u64, bye: Option<Side>) {
    if let Some(side) = bye {
        if edge
            .calls
            .get(&id)
            .is_some_and(|c| c.vacant == Some(side) && c.departed_live)
        {
            call::send_bye_departed(edge, now, id, side);
        }
    }
}

/// Tell an extension something on its screen: a SIP MESSAGE (RFC 3428) to each of its phones.
fn tell(edge: &mut Edge, now: Instant, ext: &str, from_user: &str, text: &str) {
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
    edge: &mut Edge,
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
    let call = edge.calls.get_mut(&id).expect("present");
    let Some(ps) = &call.park else {
        return edge.reply(now, &key, Response::to(&msg, 491));
    };
    let (codec, pt, te) = (ps.codec, ps.pt, ps.te);
    let Some(media) = &call.media else {
        return edge.reply(now, &key, Response::to(&msg, 488));
    };
    if is_sdp(&msg) {
        match sdp::media_info(&msg.body) {
            Ok(info) => media.set_remote(
                side.leg(),
                info.rtp,
                info.rtcp,
                call.dialog_ref(side).flow.addr.ip(),
            ),
            Err(_) => return edge.reply(now, &key, Response::to(&msg, 488)),
        }
        call.sdp[side as usize] = Some(msg.body.clone());
    }
    let body = sdp::ours(media.local(side.leg()), msg.cseq.seq as u64, codec, pt, te);
    let d = call.dialog_ref(side);
    let c = edge.local.contact(&d.contact_user, d.flow.proto);
    let bytes = Response::to(&msg, 200)
        .reason("OK")
        .header("Contact", &c)
        .header("Allow", ALLOW)
        .body("application/sdp", &body)
        .encode(d.flow.addr);
    call::send_own_2xx(edge, now, id, side, &key, msg.cseq.seq, bytes);
}

// ------------------------------------------------------------------ retrieve

/// A retrieve whose claim is being ordered: the retriever's INVITE.
pub(crate) struct AfterClaim {
    pub key: ServerKey,
    pub flow: Flow,
    pub msg: Message,
    pub retriever: String,
    pub slot: u32,
}

fn nobody_parked(edge: &mut Edge, now: Instant, a: &AfterClaim, code: u16) {
    let reason = match code {
        404 => format!("Nobody Parked On {}", a.slot),
        _ => "Parking Unavailable".to_string(),
    };
    let bytes = Response::to(&a.msg, code)
        .reason(&reason)
        .encode(a.flow.addr);
    edge.reply_bytes(now, &a.key, code, bytes);
}

/// The retriever must take the parked party's codec: `Err` names it when the offer has none.
fn retriever_pt(ps: &ParkState, offer: Option<&[u8]>) -> Result<u8, Codec> {
    match offer {
        Some(o) => offer_pt(o, ps.codec).ok_or(ps.codec),
        None => Ok(ps.pt),
    }
}

/// The payload type an SDP offer gives `codec`, if it offers it.
fn offer_pt(offer: &[u8], codec: Codec) -> Option<u8> {
    sdp::formats(offer)
        .unwrap_or_default()
        .iter()
        .find(|(_, n)| Codec::from_name(n) == Some(codec))
        .map(|(pt, _)| *pt)
}

fn wrong_codec(edge: &mut Edge, now: Instant, a: &AfterClaim, codec: Codec) {
    let reason = format!("Parked Call Uses {}", codec.name());
    let bytes = Response::to(&a.msg, 488)
        .reason(&reason)
        .encode(a.flow.addr);
    edge.reply_bytes(now, &a.key, 488, bytes);
}

/// An INVITE to a slot: claim whatever is parked there (the log decides; what this edge's
/// state shows serves only to refuse a codec the parked call cannot take before claiming).
pub(crate) fn on_retrieve(
    edge: &mut Edge,
    now: Instant,
    key: &ServerKey,
    flow: Flow,
    msg: Message,
    retriever: String,
    slot: u32,
) {
    let tenant = edge.cfg.tenant.domain.clone();
    let a = AfterClaim {
        key: key.clone(),
        flow,
        msg,
        retriever,
        slot,
    };
    let here = edge
        .orbit
        .in_slot(&tenant, slot)
        .and_then(|p| edge.parks.get(&p.id))
        .and_then(|cid| edge.calls.get(cid))
        .and_then(|c| c.park.as_ref());
    let offer = is_sdp(&a.msg).then_some(&a.msg.body[..]);
    if let Some(ps) = here {
        if let Err(codec) = retriever_pt(ps, offer) {
            return wrong_codec(edge, now, &a, codec);
        }
    } else if let (Some(codec), Some(o)) = (
        edge.orbit
            .in_slot(&tenant, slot)
            .and_then(|p| p.call.codec.as_deref())
            .and_then(Codec::from_name),
        offer,
    ) {
        // Held at another site: its codec is in the registry's record of the park.
        if offer_pt(o, codec).is_none() {
            return wrong_codec(edge, now, &a, codec);
        }
    }
    edge.reply(now, key, Response::to(&a.msg, 100));
    let claim = Command::Claim {
        tenant,
        slot,
        park: None,
        by: a.retriever.clone(),
    };
    let span = info_span!(parent: None, "retrieve", slot, by = %a.retriever, site = %edge.cfg.site);
    let _g = span.enter();
    edge.claiming.insert(a.key.clone(), false);
    edge.propose(now, claim, Then::Retrieve(a));
}

/// The claim's outcome: take the call here, or from the site holding it over the trunk.
pub(crate) fn claim_outcome(edge: &mut Edge, now: Instant, a: AfterClaim, outcome: Outcome) {
    if edge.claiming.remove(&a.key) == Some(true) {
        return claim_cancelled(edge, now, &a, outcome);
    }
    match outcome {
        Ok(Event::Claimed { parked, .. }) if parked.call.edge == edge.cfg.site => {
            match edge.parks.get(&parked.id).copied() {
                Some(cid) => take_parked(edge, now, &a, cid),
                None => nobody_parked(edge, now, &a, 404),
            }
        }
        Ok(Event::Claimed { parked, .. }) => crate::trunk::retrieve_remote(edge, now, a, parked),
        Err(OrbitError::Unavailable(_)) => nobody_parked(edge, now, &a, 503),
        _ => nobody_parked(edge, now, &a, 404),
    }
}

/// The retriever cancelled while its claim was being ordered: its INVITE gets its 487 now, and
/// a call it won goes back into the same slot (a new park with a fresh timer), wherever it is
/// held; the holding edge takes the new park as its own ([`adopt_repark`]).
fn claim_cancelled(edge: &mut Edge, now: Instant, a: &AfterClaim, outcome: Outcome) {
    let bytes = Response::to(&a.msg, 487)
        .reason("Request Terminated")
        .encode(a.flow.addr);
    edge.reply_bytes(now, &a.key, 487, bytes);
    if let Ok(Event::Claimed { parked, .. }) = outcome {
        info!(
            park = parked.id,
            slot = parked.slot,
            "retriever cancelled after its claim won: parking the call again"
        );
        let cmd = Command::Park {
            lot: parked.lot,
            slot: Some(parked.slot),
            call: parked.call,
        };
        edge.propose(now, cmd, Then::Nothing);
    }
}

/// A park of a call held here that this edge did not make (a retriever who cancelled after
/// winning put it back): the call whose own park was claimed and not fetched takes the new
/// one. Its music never stopped.
pub(crate) fn adopt_repark(edge: &mut Edge, p: &orbit_state::Parked) {
    if edge.parks.contains_key(&p.id) {
        return;
    }
    let found = edge.parks.iter().find_map(|(&old, &cid)| {
        let c = edge.calls.get(&cid)?;
        let d = c.dialog_ref(c.park.as_ref()?.parked);
        (edge.orbit.parked(old).is_none()
            && d.call_id == p.call.call_id
            && d.local_tag == p.call.local_tag)
            .then_some((old, cid))
    });
    let Some((old, cid)) = found else { return };
    unhold(edge, old);
    edge.parks.insert(p.id, cid);
    if let Some(ps) = edge.calls.get_mut(&cid).and_then(|c| c.park.as_mut()) {
        ps.id = p.id;
        ps.slot = p.slot;
    }
    info!(
        old,
        park = p.id,
        slot = p.slot,
        "parked call back in its slot"
    );
}

/// Give the parked call `cid` (claimed) to the retriever whose INVITE is `a`: it takes the
/// vacant side and gets a 200 with the relay's vacant leg in the parked party's codec.
pub(crate) fn take_parked(edge: &mut Edge, now: Instant, a: &AfterClaim, cid: u64) {
    let call = &edge.calls[&cid];
    let ps = call.park.as_ref().expect("parks maps to parked calls");
    let (codec, parked, label, park_id) = (ps.codec, ps.parked, ps.label.clone(), ps.id);
    let offer = is_sdp(&a.msg).then(|| a.msg.body.clone());
    let pt = match retriever_pt(ps, offer.as_deref()) {
        Ok(pt) => pt,
        Err(codec) => {
            // Claimed, but the offer changed since the check: nobody else can have it now.
            wrong_codec(edge, now, a, codec);
            return call::hangup(
                edge,
                now,
                cid,
                "retriever cannot take the parked call's codec",
            );
        }
    };
    let te = offer.as_deref().and_then(sdp::telephone_event).or(ps.te);
    let span = call.span.clone();
    let _g = span.enter();
    unhold(edge, park_id);
    cancel_recall(edge, now, cid);
    if edge.calls[&cid].departed_live {
        call::send_bye_departed(edge, now, cid, parked.other());
    }
    let tag = edge.ids.tag();
    let v = parked.other();
    let parked_user = edge.calls[&cid].dialog_ref(parked).user.clone();
    seat(
        edge,
        cid,
        v,
        Dialog::uas(&a.msg, a.flow, &tag, &parked_user, &a.retriever),
    );
    let call = edge.calls.get_mut(&cid).expect("present");
    call.vacant = None;
    let ps = call.park.take().expect("parked");
    call.sdp[v as usize] = offer.clone();
    let mut body = vec![];
    if let Some(m) = &call.media {
        m.vacate(v.leg());
        if let Some(info) = offer.as_deref().and_then(|o| sdp::media_info(o).ok()) {
            m.set_remote(v.leg(), info.rtp, info.rtcp, a.flow.addr.ip());
        }
        m.bridge(parked.leg());
        m.bridge(v.leg());
        body = sdp::ours(
            m.local(v.leg()),
            now_version(edge.now_ms(now)),
            codec,
            pt,
            te,
        );
    }
    info!(slot = ps.slot, by = %a.retriever, "retrieved");
    let c = edge.local.contact(&parked_user, a.flow.proto);
    let identity = format!(
        "\"{}: {}\" <{}>",
        ps.slot,
        label.replace('"', ""),
        ps.caller_uri
    );
    let bytes = Response::to(&a.msg, 200)
        .reason("OK")
        .tag(&tag)
        .header("Contact", &c)
        .header("Allow", ALLOW)
        .header("P-Asserted-Identity", &identity)
        .body("application/sdp", &body)
        .encode(a.flow.addr);
    call::send_own_2xx(edge, now, cid, v, &a.key, a.msg.cseq.seq, bytes);
}

/// Seat the next party (`d`) on the vacant side `v` of call `cid`, re-keying the dialog map.
fn seat(edge: &mut Edge, cid: u64, v: Side, d: Dialog) {
    let call = edge.calls.get_mut(&cid).expect("present");
    let old = call.dialog_ref(v);
    let old_key = (old.call_id.clone(), old.local_tag.clone());
    let new_key = (d.call_id.clone(), d.local_tag.clone());
    *call.dialog(v) = d;
    edge.dialogs.remove(&old_key);
    edge.dialogs.insert(new_key, cid);
}

fn now_version(ms: Millis) -> u64 {
    ms / 1000
}

// ------------------------------------------------------------------ recall

/// Ring the recall's `stage` target for call `cid` (its deadline has come, or the parker did
/// not answer).
pub(crate) fn start_recall(edge: &mut Edge, now: Instant, cid: u64, stage: RecallStage) {
    let Some(call) = edge.calls.get(&cid) else {
        return;
    };
    let Some(ps) = &call.park else { return };
    let span = call.span.clone();
    let _g = span.enter();
    let Some(lot) = edge.orbit.lot(&ps.lot).cloned() else {
        return;
    };
    let target = match stage {
        RecallStage::Parker => ps.parker.clone(),
        RecallStage::Fallback => match &lot.fallback {
            Some(f) => f.clone(),
            None => return abandon(edge, now, cid),
        },
    };
    // The target's phones here, else wherever it is registered now.
    let mut targets: Vec<call::Target> = edge
        .registrar
        .lookup(now, &target)
        .iter()
        .map(call::Target::phone)
        .collect();
    if targets.is_empty() {
        targets = crate::trunk::targets_for(edge, now, &target, &target);
    }
    if targets.is_empty() {
        info!(%target, ?stage, "recall target not registered");
        return next_stage(edge, now, cid, stage);
    }
    if edge.calls[&cid].departed_live {
        let v = edge.calls[&cid]
            .park
            .as_ref()
            .expect("parked")
            .parked
            .other();
        call::send_bye_departed(edge, now, cid, v);
    }
    let domain = edge.cfg.tenant.domain.clone();
    let call = edge.calls.get(&cid).expect("present");
    let ps = call.park.as_ref().expect("parked");
    let attempt = ps.recall.as_ref().map(|r| r.attempt + 1).unwrap_or(1);
    let v = ps.parked.other();
    let parked_user = call.dialog_ref(ps.parked).user.clone();
    let (slot, label, codec, pt, te) = (ps.slot, ps.label.clone(), ps.codec, ps.pt, ps.te);
    let caller_user = orbit_sip::Uri::parse(&ps.caller_uri)
        .ok()
        .and_then(|u| u.user().map(str::to_string))
        .unwrap_or_else(|| parked_user.clone());
    let tag = edge.ids.tag();
    let d = Dialog {
        call_id: edge.ids.call_id("orbit"),
        local_tag: tag.clone(),
        local_hdr: format!(
            "\"Recall {slot}: {}\" <sip:{caller_user}@{domain}>;tag={tag}",
            label.replace('"', "")
        ),
        remote_hdr: format!("<sip:{target}@{domain}>"),
        remote_target: String::new(),
        route_set: vec![],
        local_cseq: 1,
        remote_cseq: 0,
        flow: targets[0].flow,
        contact_user: caller_user.clone(),
        user: target.clone(),
    };
    seat(edge, cid, v, d);
    let call = &edge.calls[&cid];
    let mut body = vec![];
    if let Some(m) = &call.media {
        m.vacate(v.leg());
        body = sdp::ours(
            m.local(v.leg()),
            now_version(edge.now_ms(now)),
            codec,
            pt,
            te,
        );
    }
    info!(%target, ?stage, slot, forks = targets.len(), "recall ringing");
    let keys: Vec<ClientKey> = targets.iter().map(|_| edge.new_branch()).collect();
    let d = edge.calls[&cid].dialog_ref(v);
    let sends: Vec<_> = targets
        .iter()
        .zip(keys)
        .map(|(t, branch)| {
            let bytes = call::invite_bytes(edge, d, t, &branch.branch, "70", Some(&body));
            (t.flow, branch, bytes)
        })
        .collect();
    let branches = sends
        .iter()
        .map(|(_, k, _)| Branch::new(k.clone()))
        .collect();
    let call = edge.calls.get_mut(&cid).expect("present");
    call.park.as_mut().expect("parked").recall = Some(Recall {
        claiming: None,
        attempt,
        stage,
        target,
        branches,
    });
    for (idx, (flow, branch, bytes)) in sends.into_iter().enumerate() {
        edge.send_request(
            now,
            flow,
            branch,
            true,
            bytes,
            Owner::Recall {
                call: cid,
                attempt,
                idx,
            },
        );
    }
    edge.timers.schedule(
        now + Duration::from_millis(lot.recall_ring_ms),
        TimerKey::Recall { call: cid, attempt },
    );
}

fn current_recall(edge: &mut Edge, cid: u64, attempt: u32) -> Option<&mut Recall> {
    edge.calls
        .get_mut(&cid)?
        .park
        .as_mut()?
        .recall
        .as_mut()
        .filter(|r| r.attempt == attempt)
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn recall_response(
    edge: &mut Edge,
    now: Instant,
    ckey: &ClientKey,
    cid: u64,
    attempt: u32,
    idx: usize,
    flow: Flow,
    msg: Message,
) {
    let code = msg.code();
    let Some(r) = current_recall(edge, cid, attempt) else {
        // The recall was given up (retrieved, timed out, caller gone): stop this phone.
        match code {
            101..=199 => call::send_cancel(edge, now, ckey),
            200..=299 => call::ack_and_bye(edge, now, flow, &msg),
            _ => {}
        }
        return;
    };
    match code {
        100 => {}
        101..=199 => {
            if r.branches[idx].provisional() {
                call::send_cancel(edge, now, ckey);
            }
        }
        200..=299 => recall_answered(edge, now, cid, idx, flow, msg),
        _ => recall_failed(edge, now, cid, attempt, idx),
    }
}

/// A recall phone answered: claim the call for it (a retriever may have come first).
pub(crate) struct AfterRecallClaim {
    cid: u64,
    idx: usize,
    flow: Flow,
    msg: Message,
}

fn recall_answered(edge: &mut Edge, now: Instant, cid: u64, idx: usize, flow: Flow, msg: Message) {
    let call = edge.calls.get_mut(&cid).expect("present");
    let span = call.span.clone();
    let _g = span.enter();
    let ps = call.park.as_mut().expect("parked");
    let r = ps.recall.as_mut().expect("recalling");
    match r.claiming {
        // A retransmission of the answer being claimed for.
        Some(i) if i == idx => return,
        // Another phone answered first: this one is not needed.
        Some(_) => return call::ack_and_bye(edge, now, flow, &msg),
        None => r.claiming = Some(idx),
    }
    let claim = Command::Claim {
        tenant: edge.cfg.tenant.domain.clone(),
        slot: ps.slot,
        park: Some(ps.id),
        by: r.target.clone(),
    };
    let after = AfterRecallClaim {
        cid,
        idx,
        flow,
        msg,
    };
    edge.propose(now, claim, Then::RecallClaim(after));
}

/// The recall's claim: won, the answering phone takes the vacant side; lost, it is hung up.
pub(crate) fn recall_claim_outcome(
    edge: &mut Edge,
    now: Instant,
    a: AfterRecallClaim,
    outcome: Outcome,
) {
    let AfterRecallClaim {
        cid,
        idx,
        flow,
        msg,
    } = a;
    let ours = edge
        .calls
        .get(&cid)
        .and_then(|c| c.park.as_ref())
        .and_then(|p| p.recall.as_ref())
        .is_some_and(|r| r.claiming == Some(idx));
    if !ours || !matches!(outcome, Ok(Event::Claimed { .. })) {
        if let Some(r) = edge
            .calls
            .get_mut(&cid)
            .and_then(|c| c.park.as_mut())
            .and_then(|p| p.recall.as_mut())
        {
            r.claiming = None;
        }
        return call::ack_and_bye(edge, now, flow, &msg);
    }
    let call = edge.calls.get_mut(&cid).expect("present");
    let ps = call.park.as_ref().expect("parked");
    let (park_id, parked) = (ps.id, ps.parked);
    unhold(edge, park_id);
    let call = edge.calls.get_mut(&cid).expect("present");
    let mut ps = call.park.take().expect("parked");
    let r = ps.recall.take().expect("recalling");
    let v = parked.other();
    call.dialog(v).establish(&msg, flow);
    call.vacant = None;
    if is_sdp(&msg) {
        call.sdp[v as usize] = Some(msg.body.clone());
        if let (Some(m), Ok(info)) = (&call.media, sdp::media_info(&msg.body)) {
            m.set_remote(v.leg(), info.rtp, info.rtcp, flow.addr.ip());
        }
    }
    if let Some(m) = &call.media {
        m.bridge(parked.leg());
    }
    call.state = CallState::Confirmed;
    info!(by = %r.target, stage = ?r.stage, slot = ps.slot, "recall answered");
    call::send_own_ack(edge, cid, v, 1);
    for (i, b) in r.branches.iter().enumerate() {
        if i != idx {
            cancel_branch(edge, now, b);
        }
    }
}

fn cancel_branch(edge: &mut Edge, now: Instant, b: &Branch) {
    match b.state {
        // No provisional yet: a CANCEL now could overtake the INVITE; the stale-recall path
        // cancels it when its first 1xx arrives.
        BranchState::Calling | BranchState::Done => {}
        BranchState::Proceeding => call::send_cancel(edge, now, &b.key),
    }
}

pub(crate) fn recall_failed(edge: &mut Edge, now: Instant, cid: u64, attempt: u32, idx: usize) {
    let Some(r) = current_recall(edge, cid, attempt) else {
        return;
    };
    r.branches[idx].state = BranchState::Done;
    if r.branches.iter().all(|b| b.state == BranchState::Done) {
        let stage = r.stage;
        next_stage(edge, now, cid, stage);
    }
}

pub(crate) fn on_recall_timeout(edge: &mut Edge, now: Instant, cid: u64, attempt: u32) {
    let Some(r) = current_recall(edge, cid, attempt) else {
        return;
    };
    let stage = r.stage;
    info!(call = cid, ?stage, "recall unanswered");
    next_stage(edge, now, cid, stage);
}

/// The recall stage `stage` is over unanswered: ring the fallback, or give up.
fn next_stage(edge: &mut Edge, now: Instant, cid: u64, stage: RecallStage) {
    cancel_recall(edge, now, cid);
    let Some(ps) = edge.calls.get(&cid).and_then(|c| c.park.as_ref()) else {
        return;
    };
    let has_fallback = edge
        .orbit
        .lot(&ps.lot)
        .is_some_and(|l| l.fallback.is_some());
    let id = ps.id;
    if stage == RecallStage::Parker && has_fallback {
        let cmd = Command::RecallStage {
            park: id,
            stage: RecallStage::Fallback,
        };
        edge.propose(now, cmd, Then::Nothing);
        start_recall(edge, now, cid, RecallStage::Fallback);
    } else {
        abandon(edge, now, cid);
    }
}

/// Nobody took the call back: hang up the parked caller.
fn abandon(edge: &mut Edge, now: Instant, cid: u64) {
    let Some(call) = edge.calls.get_mut(&cid) else {
        return;
    };
    let Some(ps) = call.park.take() else { return };
    let span = call.span.clone();
    let _g = span.enter();
    warn!(slot = ps.slot, caller = %ps.caller_uri, parker = %ps.parker, "recall and fallback unanswered: hanging up the parked caller");
    unhold(edge, ps.id);
    let end = Command::End {
        park: ps.id,
        reason: EndReason::Abandoned,
    };
    edge.propose(now, end, Then::Nothing);
    call::hangup(edge, now, cid, "recall unanswered");
}

/// The registry gave up on call `cid` (park `id`): this edge's lease lapsed, so the slot may
/// hold another call by now. Nobody can retrieve it any more: hang the caller up.
pub(crate) fn lost(edge: &mut Edge, now: Instant, id: ParkId, cid: u64) {
    unhold(edge, id);
    cancel_recall(edge, now, cid);
    let Some(call) = edge.calls.get_mut(&cid) else {
        return;
    };
    if let Some(ps) = call.park.take() {
        let span = call.span.clone();
        let _g = span.enter();
        warn!(slot = ps.slot, caller = %ps.caller_uri, "parked call lost with our lease: hanging up");
    }
    call::hangup(edge, now, cid, "lease lapsed");
}

/// Stop ringing recall phones (the call was retrieved, or is ending).
pub(crate) fn cancel_recall(edge: &mut Edge, now: Instant, cid: u64) {
    let Some(r) = edge
        .calls
        .get_mut(&cid)
        .and_then(|c| c.park.as_mut())
        .and_then(|p| p.recall.as_mut())
    else {
        return;
    };
    // Keep the attempt number but mark it over, so late answers find no current recall.
    r.attempt = r.attempt.wrapping_add(1 << 31);
    let branches = std::mem::take(&mut r.branches);
    for b in &branches {
        cancel_branch(edge, now, b);
    }
}

/// This edge no longer holds park `id` (retrieved, recalled, ended, lost, re-parked): forget
/// it here and in the trunk's claim tables.
fn unhold(edge: &mut Edge, id: ParkId) {
    edge.parks.remove(&id);
    edge.trunk.forget(id);
}

/// How long a parked call may be silent: configured, or the lot's parking time, recall and
/// fallback rings and the ordinary media timeout, so that silence alone never ends a park
/// before its recall has run.
pub(crate) fn parked_timeout(edge: &Edge, ps: &ParkState) -> Duration {
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

/// A call is gone: if it was parked, its slot is free at once.
pub(crate) fn on_call_end(edge: &mut Edge, call: &Call) {
    if let Some(c) = &call.consult {
        edge.announced.remove(&c.slot);
    }
    let Some(ps) = &call.park else { return };
    unhold(edge, ps.id);
    let now = edge.last_now;
    if let Some(r) = &ps.recall {
        for b in &r.branches {
            cancel_branch(edge, now, b);
        }
    }
    // Whatever this edge's state shows (across sites it may lag): the log decides.
    let reason = match call.end_why {
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
