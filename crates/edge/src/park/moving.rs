//! Handing a parked call to another edge, so that a draining edge can leave without dropping
//! it: the parked party keeps its slot and deadline and hears music throughout.
//!
//! ```text
//! draining edge D                               edge T (same site first)            registry
//! ──MESSAGE, X-Orbit-Claim: park, signed──────▶ replica: park held by D? take the dialog,
//!   (the party's dialog, its SDP, the park)       open a relay, play the music
//! ◀──200, SDP of T's relay────────────────────
//! ──Move{park, to: T}───────────────────────────────────────────────────────────────▶ ordered
//!   (refused if a retrieve claimed it first: D hands it over as before; T lets go)    against claims
//! ──re-INVITE to the party: Contact T, SDP T's relay──▶ party ──200──▶ D ──ACK──▶ party
//! D forgets the call (no BYE); the party's next request goes to T, its RTP to T's relay
//! ```
//!
//! T holds what it took on probation until the log shows the move ([`ADOPT_WAIT`]), and plays
//! its music from then on (D's plays until the party takes the re-INVITE: the party hears
//! both for a round trip, never neither); if the log takes the park elsewhere first (a
//! retrieve's claim) or never shows the move, T lets the call go without a word to the party,
//! whose dialog is still D's. Only parties reached over UDP move (a TCP or TLS connection cannot change hands);
//! other parked calls wait for their retrieve or recall within the drain time.

use bytes::Bytes;
use orbit_sip::transport::Proto;
use serde::{Deserialize, Serialize};

use super::*;
use crate::trunk::Claim;

/// How long an edge holds a call it was asked to take over before the log shows the move.
pub(crate) const ADOPT_WAIT: Duration = Duration::from_secs(5);
/// How long a moved call's ACK is kept, to answer its 2xx again (the INVITE's 64·T1).
const ACK_KEPT: Duration = Duration::from_secs(32);
/// The handover request's body type.
const ADOPT_TYPE: &str = "application/x-orbit-adopt+json";
/// The CSeq room the taking edge leaves for the re-INVITE (and anything else) the handing
/// edge still sends in the dialog: CSeq numbers need only increase.
const CSEQ_ROOM: u32 = 1000;

/// What one edge tells another of a parked call it hands over (signed with the trunk's
/// secret; the park id is the signed claim, and must match).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Adoption {
    pub park: ParkId,
    /// Which side of the call the parked party is on ("a" or "b").
    pub side: String,
    pub call_id: String,
    pub local_tag: String,
    pub local_hdr: String,
    pub remote_hdr: String,
    pub remote_target: String,
    pub route_set: Vec<String>,
    pub local_cseq: u32,
    pub remote_cseq: u32,
    /// Where the party is (UDP).
    pub addr: std::net::SocketAddr,
    pub contact_user: String,
    pub user: String,
    /// The party's last SDP (where its RTP goes, what it can take).
    pub sdp: String,
    pub codec: String,
    pub pt: u8,
    pub te: Option<u8>,
    pub label: String,
    pub caller_uri: String,
    pub parker: String,
}

/// A handover under way, at the handing edge.
pub(crate) struct Moving {
    pub cid: u64,
    pub to: String,
    pub to_addr: std::net::SocketAddr,
    pub stage: Stage,
}

pub(crate) enum Stage {
    /// The handover request is out.
    Asking,
    /// The taker answered with its relay's SDP; the move is being ordered.
    Ordering(Bytes),
    /// The re-INVITE is out.
    Pointing,
    /// Done: the ACK, resent if the party repeats its 2xx.
    Done(Flow, Bytes),
}

/// Another live edge to hand calls to: one of this site first, by name, none draining.
fn target(edge: &Parking) -> Option<(String, std::net::SocketAddr)> {
    let now = edge.now_ms(edge.last_now);
    let site = |id: &str| id.split('/').next().unwrap_or("").to_string();
    let ours = site(&edge.id);
    edge.orbit
        .trunks(now)
        .filter(|(e, _)| **e != edge.id && !edge.orbit.is_draining(e))
        .map(|(e, a)| (site(e) != ours, e.clone(), a))
        .min()
        .map(|(_, e, a)| (e, a))
}

/// Hand every call parked here (waiting, its party on UDP, not moving yet) to another edge.
pub(crate) fn move_held(edge: &mut Parking, now: Instant) {
    if edge.cfg.trunk.is_none() {
        return;
    }
    let movable: Vec<(u64, ParkId)> = edge
        .park
        .held
        .iter()
        .filter(|(_, ps)| ps.recall.is_none() && !edge.park.moving.contains_key(&ps.id))
        .filter(|(_, ps)| {
            edge.orbit
                .parked(ps.id)
                .is_some_and(|p| p.phase == orbit_state::Phase::Waiting && p.call.edge == edge.id)
        })
        .filter(|(cid, ps)| {
            edge.calls.get(cid).is_some_and(|c| {
                c.state() == CallState::Confirmed
                    && c.dialog_ref(ps.parked).flow.proto == orbit_sip::transport::Proto::Udp
            })
        })
        .map(|(cid, ps)| (*cid, ps.id))
        .collect();
    for (cid, park) in movable {
        let Some((to, to_addr)) = target(edge) else {
            return;
        };
        ask(edge, now, cid, park, to, to_addr);
    }
}

/// Ask edge `to` to take park `park` (call `cid`) over.
fn ask(
    edge: &mut Parking,
    now: Instant,
    cid: u64,
    park: ParkId,
    to: String,
    to_addr: std::net::SocketAddr,
) {
    let call = &edge.b2bua.calls[&cid];
    let ps = &edge.park.held[&cid];
    let d = call.dialog_ref(ps.parked);
    let a = Adoption {
        park,
        side: if ps.parked == Side::A { "a" } else { "b" }.into(),
        call_id: d.call_id.clone(),
        local_tag: d.local_tag.clone(),
        local_hdr: d.local_hdr.clone(),
        remote_hdr: d.remote_hdr.clone(),
        remote_target: d.remote_target.clone(),
        route_set: d.route_set.clone(),
        local_cseq: d.local_cseq + CSEQ_ROOM,
        remote_cseq: d.remote_cseq,
        addr: d.flow.addr,
        contact_user: d.contact_user.clone(),
        user: d.user.clone(),
        sdp: String::from_utf8_lossy(call.sdp(ps.parked).unwrap_or_default()).into(),
        codec: ps.codec.name().into(),
        pt: ps.pt,
        te: ps.te,
        label: ps.label.clone(),
        caller_uri: ps.caller_uri.clone(),
        parker: ps.parker.clone(),
    };
    let span = call.span.clone();
    let _g = span.enter();
    let body = serde_json::to_vec(&a).expect("serialisable");
    let slot = ps.slot.to_string();
    let (tag, call_id) = (edge.ids.tag(), edge.ids.call_id("orbit-move"));
    let from = format!("<sip:{}@{}>;tag={tag}", edge.id, edge.cfg.tenant.domain);
    let branch = edge.new_branch();
    let mut w = Writer::request("MESSAGE", &format!("sip:{slot}@{to_addr}"));
    w.header("Via", &edge.local.via(Proto::Udp, &branch.branch));
    w.header("Max-Forwards", "70");
    w.header("From", &from);
    w.header("To", &format!("<sip:{slot}@{to_addr}>"));
    w.header("Call-ID", &call_id);
    w.header("CSeq", "1 MESSAGE");
    let signed = crate::trunk::headers(
        edge,
        "MESSAGE",
        &to,
        &call_id,
        &from,
        &slot,
        Some(Claim::Park(park)),
        &body,
    );
    for (k, v) in &signed {
        w.header(k, v);
    }
    let bytes = w.finish(Some(ADOPT_TYPE), &body);
    info!(park, %to, "handing the parked call to another edge");
    let flow = Flow {
        proto: Proto::Udp,
        addr: to_addr,
        conn: 0,
    };
    edge.send_request(now, flow, branch, false, bytes, Owner::Adopt { park });
    edge.park.moving.insert(
        park,
        Moving {
            cid,
            to,
            to_addr,
            stage: Stage::Asking,
        },
    );
}

/// The taker's answer: its relay's SDP (order the move), or a refusal (the call stays here).
pub(crate) fn adopt_response(edge: &mut Parking, now: Instant, park: ParkId, msg: Option<Message>) {
    let Some(m) = edge.park.moving.get_mut(&park) else {
        return;
    };
    let code = msg.as_ref().map_or(408, Message::code);
    let sdp = msg
        .filter(|r| (200..300).contains(&r.code()) && is_sdp(r))
        .map(|r| r.body.clone());
    let Some(sdp) = sdp else {
        warn!(park, to = %m.to, code, "the edge asked to take the parked call refused: it stays here");
        edge.park.moving.remove(&park);
        return;
    };
    m.stage = Stage::Ordering(sdp);
    let to = m.to.clone();
    edge.propose_then(now, Command::Move { park, to }, ParkThen::Move(park));
}

/// The move's outcome: point the party at its new edge, or (a retrieve claimed the call
/// first, say) keep it here; the taker lets its copy go.
pub(crate) fn move_outcome(edge: &mut Parking, now: Instant, park: ParkId, outcome: Outcome) {
    let Some(m) = edge.park.moving.get_mut(&park) else {
        return;
    };
    let sdp = match (&outcome, std::mem::replace(&mut m.stage, Stage::Pointing)) {
        (Ok(Event::Moved { .. }), Stage::Ordering(sdp)) => sdp,
        _ => {
            warn!(park, to = %m.to, outcome = ?outcome.err(), "parked call not moved: it stays here");
            edge.park.moving.remove(&park);
            return;
        }
    };
    let (cid, to_addr) = (m.cid, m.to_addr);
    let Some(ps) = edge.park.held.get(&cid) else {
        return;
    };
    let side = ps.parked;
    let call = edge.b2bua.calls.get_mut(&cid).expect("held");
    let d = call.dialog(side);
    let contact = format!("<sip:{}@{to_addr}>", d.contact_user);
    edge.b2bua.sv.send_in_dialog(
        now,
        d,
        "INVITE",
        &[("Contact", contact.as_str())],
        Some(("application/sdp", &sdp)),
        Owner::Moving { park },
    );
}

/// The party's answer to the re-INVITE. A 2xx: ACK it, and this edge forgets the call (the
/// party talks to the new edge now). A failure: the party cannot be moved, and the new edge
/// holds its record: hang the party up rather than leave it on a call nobody holds.
pub(crate) fn moving_response(
    edge: &mut Parking,
    now: Instant,
    park: ParkId,
    msg: Option<Message>,
) {
    let Some(m) = edge.park.moving.get(&park) else {
        return;
    };
    if let Stage::Done(flow, ack) = &m.stage {
        let (flow, ack) = (*flow, ack.clone());
        return edge.send(flow, ack); // the 2xx again
    }
    let cid = m.cid;
    let to = m.to.clone();
    match msg.filter(|r| (200..300).contains(&r.code())) {
        Some(ok) => {
            let Some(ps) = edge.park.held.get(&cid) else {
                return;
            };
            let side = ps.parked;
            let branch = edge.new_branch();
            let call = &edge.b2bua.calls[&cid];
            let d = call.dialog_ref(side);
            let ack = d.request(&edge.local, "ACK", ok.cseq.seq, &branch.branch, &[], None);
            let flow = d.flow;
            edge.send(flow, ack.clone());
            if let Some(m) = edge.park.moving.get_mut(&park) {
                m.stage = Stage::Done(flow, ack);
            }
            edge.timers.schedule(now + ACK_KEPT, TimerKey::Moved(park));
            info!(park, %to, "parked call moved to another edge");
            forget(edge, cid, park);
        }
        None => {
            warn!(park, %to, "the parked party did not take the re-INVITE: hanging it up");
            edge.park.moving.remove(&park);
            forget_record(edge, cid, park);
            hangup(edge, now, cid, "could not be moved");
        }
    }
}

/// The moved call's ACK need not be kept any longer.
pub(crate) fn on_moved_timer(edge: &mut Parking, park: ParkId) {
    edge.park.moving.remove(&park);
}

/// This edge no longer holds park `park`: forget its record here (no `End`: another edge
/// holds it).
fn forget_record(edge: &mut Parking, cid: u64, park: ParkId) {
    edge.park.held.remove(&cid);
    unhold(edge, park);
}

/// Forget call `cid` (park `park`) without a word to its party, whose dialog is another
/// edge's now: its record, its relay, its dialog.
fn forget(edge: &mut Parking, cid: u64, park: ParkId) {
    forget_record(edge, cid, park);
    call::end_call(edge, cid);
}

/// A trunk MESSAGE from edge `from` asking this edge to take park `park` over.
pub(crate) fn on_adopt(
    edge: &mut Parking,
    now: Instant,
    key: &ServerKey,
    msg: Message,
    from: &str,
    park: ParkId,
) {
    let refuse = |edge: &mut Parking, code: u16, why: &'static str| {
        warn!(park, %from, code, why, "parked call not taken over");
        edge.reply(now, key, Response::to(&msg, code).reason(why));
    };
    if edge.draining.is_some() {
        return refuse(edge, 503, "Draining Too");
    }
    let a = match serde_json::from_slice::<Adoption>(&msg.body) {
        Ok(a) if a.park == park => a,
        _ => return refuse(edge, 400, "Bad Handover"),
    };
    // Only the edge that holds the call may hand it over.
    let held_by_sender = edge
        .orbit
        .parked(park)
        .is_some_and(|p| p.call.edge == from && p.phase == orbit_state::Phase::Waiting);
    if !held_by_sender {
        return refuse(edge, 403, "Not Held By Sender");
    }
    if edge.park.by_id.contains_key(&park) {
        return refuse(edge, 409, "Taken Over Already");
    }
    if edge.calls.len() >= edge.max_calls {
        return refuse(edge, 503, "No Room");
    }
    let (Some(codec), Ok(info)) = (
        Codec::from_name(&a.codec),
        sdp::media_info(a.sdp.as_bytes()),
    ) else {
        return refuse(edge, 400, "Bad Handover");
    };
    let side = if a.side == "a" { Side::A } else { Side::B };
    let Some(parked) = edge.orbit.parked(park).cloned() else {
        return;
    };
    let cid = edge.b2bua.next_call_id();
    let relay = match edge.open_relay(now, cid) {
        Ok(r) => r,
        Err(_) => return refuse(edge, 503, "No Relay Ports"),
    };
    let party = Dialog {
        call_id: a.call_id,
        local_tag: a.local_tag,
        local_hdr: a.local_hdr,
        remote_hdr: a.remote_hdr,
        remote_target: a.remote_target,
        route_set: a.route_set,
        local_cseq: a.local_cseq,
        remote_cseq: a.remote_cseq,
        flow: Flow {
            proto: Proto::Udp,
            addr: a.addr,
            conn: 0,
        },
        contact_user: a.contact_user,
        user: a.user,
    };
    let span = info_span!(parent: None, "call", id = cid, caller = %a.caller_uri, slot = parked.slot, edge = %edge.id);
    let _g = span.clone().entered();
    relay.set_remote(
        &mut edge.b2bua.sv.media,
        side.leg(),
        info.rtp,
        info.rtcp,
        a.addr.ip(),
    );
    // The music starts once the log shows the move (`on_moved`): until then the party is the
    // other edge's, which may yet keep it.
    let answer = relay_offer(
        edge.now_ms(now),
        relay.local(side.leg()),
        (codec, a.pt, a.te),
    );
    call::insert_adopted_call(
        edge,
        now,
        cid,
        span.clone(),
        side,
        party,
        relay,
        msg.clone(),
        key,
        Some(Bytes::from(a.sdp.into_bytes())),
    );
    edge.park.held.insert(
        cid,
        ParkState {
            id: park,
            slot: parked.slot,
            lot: parked.lot.clone(),
            parked: side,
            codec,
            pt: a.pt,
            te: a.te,
            label: a.label,
            caller_uri: a.caller_uri,
            parker: a.parker,
            recall: None,
        },
    );
    edge.park.by_id.insert(park, cid);
    edge.park.adopting.insert(park, cid);
    edge.timers
        .schedule(now + ADOPT_WAIT, TimerKey::AdoptWait(park));
    info!(park, %from, "taking the parked call over");
    let r = Response::to(&msg, 200).body("application/sdp", &answer);
    edge.reply(now, key, r);
}

/// The log shows the move: the call taken on probation is this edge's now, and its party
/// hears this edge's music (the other edge's stops once the party takes the re-INVITE).
pub(crate) fn on_moved(edge: &mut Parking, parked: &Parked, from: &str) {
    let Some(cid) = edge.park.adopting.remove(&parked.id) else {
        return;
    };
    info!(park = parked.id, slot = parked.slot, %from, "parked call taken over");
    let (Some(ps), Some(call)) = (edge.park.held.get(&cid), edge.b2bua.calls.get(&cid)) else {
        return;
    };
    let music = edge
        .park
        .music
        .get(&ps.lot.park_ext)
        .cloned()
        .unwrap_or_else(builtin_music);
    if let Some(m) = call.media {
        m.play(
            &mut edge.b2bua.sv.media,
            ps.parked.leg(),
            music,
            (ps.codec, ps.pt),
            true,
        );
    }
}

/// The log took park `park` elsewhere (claimed, ended) while this edge held it on
/// probation: let it go now.
pub(crate) fn on_taken_elsewhere(edge: &mut Parking, park: ParkId) {
    if let Some(cid) = edge.park.adopting.remove(&park) {
        info!(
            park,
            "the parked call offered here went elsewhere: letting it go"
        );
        forget(edge, cid, park);
    }
}

/// The move was never shown: let the call go without a word to its party (its dialog is
/// still the other edge's).
pub(crate) fn on_adopt_wait(edge: &mut Parking, park: ParkId) {
    let Some(cid) = edge.park.adopting.remove(&park) else {
        return;
    };
    let held_here = edge
        .orbit
        .parked(park)
        .is_some_and(|p| p.call.edge == edge.id);
    if held_here {
        return; // the watch showed the move without its event reaching us: keep it
    }
    warn!(
        park,
        "the handover of a parked call was not ordered: letting it go"
    );
    forget(edge, cid, park);
}
