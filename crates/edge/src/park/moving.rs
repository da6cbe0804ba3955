//! Moving a parked call to another edge, so that a draining edge can leave without dropping
//! it: the parked party keeps its slot and deadline and hears music throughout.
//!
//! ```text
//! draining edge D                            edge T (this site's first)             registry
//! ──MESSAGE, X-Orbit-Claim: park, signed───▶ the offer matches the park D holds? take
//!   (the party's dialog and SDP)              the dialog on probation, open a relay
//! ◀──200─────────────────────────────────────
//! ──Move{park, to: T}─────────────────────────────────────────────────────────────▶ ordered
//!   (refused if a retrieve claimed it first: D hands it to the retriever as before,  against
//!    and T lets its copy go without a word to the party)                            claims
//! Moved: T plays the music and re-INVITEs the party (Contact T, SDP T's relay); D stops its
//!        relay, keeps the dialog a moment ([`HANDED_GRACE`]), then forgets it without a BYE
//! ```
//!
//! The edge that will hold the call is the one that re-INVITEs the party, so that it also
//! answers for every way that can fail (the party refuses it: the call ends there and the
//! slot is freed with `End`). Both edges act on the same commit, T starting its music as D
//! stops its own: the gap is the difference between their views of it (the test measures
//! under 200 ms), and a retriever at T never hears D's music too.
//! Only parties reached over UDP move (a TCP or TLS connection cannot change hands); the
//! others wait for their retrieve or recall within the drain time.
//!
//! This file is the handing edge's side and what both sides share; the taking edge's is
//! `moved_in.rs`.

use orbit_sip::transport::Proto;
use serde::{Deserialize, Serialize};

use super::*;
use crate::trunk::Claim;

/// How long the handing edge keeps the moved call's dialog after the move, while the new
/// edge's re-INVITE reaches the party.
pub(crate) const HANDED_GRACE: Duration = Duration::from_secs(2);
/// How often an offer refused (or unanswered) is made again, to another edge if there is one.
const OFFER_TRIES: u32 = 3;
const OFFER_RETRY: Duration = Duration::from_secs(1);
/// The offer's body type.
const OFFER_TYPE: &str = "application/x-orbit-move+json";
/// CSeq room the new edge leaves for requests the handing edge may still have in flight in
/// the dialog: CSeq numbers need only increase.
const CSEQ_ROOM: u32 = 100;

/// Which side of its call the parked party is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum PartySide {
    A,
    B,
}

/// What one edge offers another of a parked call (signed with the trunk's secret; the park
/// id is the signed claim, and must match). The taker checks the dialog against the park's
/// record in the registry and takes the parker, caller and codec from there.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct MoveOffer {
    pub park: ParkId,
    pub side: PartySide,
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
    pub pt: u8,
    pub te: Option<u8>,
    pub label: String,
}

/// A move under way, at the handing edge.
pub(crate) struct Moving {
    pub cid: u64,
    pub to: String,
    pub stage: Stage,
    /// Edges that refused it, and offers made.
    pub tried: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// The offer is out.
    Offered,
    /// Taken on probation over there; the move is being ordered.
    Ordering,
    /// The log moved it: the new edge re-INVITEs the party; ours plays on until `until`.
    Handed,
    /// Refused (or the move was): offered again from `retry_at`, to another edge if any.
    Refused { retry_at: Instant },
}

impl Moving {
    /// Whether the party's dialog is changing hands (its own re-INVITE waits: 491).
    pub(crate) fn busy(&self) -> bool {
        !matches!(self.stage, Stage::Refused { .. })
    }
}

/// Another live, non-draining edge to move a call to: one of this site first, then by name,
/// skipping those that refused it while others are left.
fn target(edge: &Parking, tried: &[String]) -> Option<(String, std::net::SocketAddr)> {
    let now = edge.now_ms(edge.last_now);
    let site = |id: &str| id.split('/').next().unwrap_or("").to_string();
    let ours = site(&edge.id);
    edge.orbit
        .trunks(now)
        .filter(|(e, _)| **e != edge.id && !edge.orbit.is_draining(e))
        .map(|(e, a)| (tried.contains(e), site(e) != ours, e.clone(), a))
        .min()
        .map(|(_, _, e, a)| (e, a))
}

/// Offer every call parked here (waiting, its party on UDP, not being moved) to another edge;
/// offers refused are made again a little later, a few times.
pub(crate) fn move_held(edge: &mut Parking, now: Instant) {
    if edge.cfg.trunk.is_none() {
        return;
    }
    let due = |m: Option<&Moving>| match m {
        None => true,
        Some(m) => {
            matches!(m.stage, Stage::Refused { retry_at } if retry_at <= now)
                && (m.tried.len() as u32) < OFFER_TRIES
        }
    };
    let movable: Vec<(u64, ParkId)> = edge
        .park
        .held
        .iter()
        .filter(|(_, ps)| ps.recall.is_none() && due(edge.park.moving.get(&ps.id)))
        .filter(|(_, ps)| {
            edge.orbit
                .parked(ps.id)
                .is_some_and(|p| p.phase == orbit_state::Phase::Waiting && p.call.edge == edge.id)
        })
        .filter(|(cid, ps)| {
            edge.calls.get(cid).is_some_and(|c| {
                c.state() == CallState::Confirmed
                    && c.dialog_ref(ps.parked).flow.proto == Proto::Udp
            })
        })
        .map(|(cid, ps)| (*cid, ps.id))
        .collect();
    for (cid, park) in movable {
        let tried = edge
            .park
            .moving
            .remove(&park)
            .map(|m| m.tried)
            .unwrap_or_default();
        let Some((to, to_addr)) = target(edge, &tried) else {
            return;
        };
        offer(edge, now, cid, park, to, to_addr, tried);
    }
}

/// Offer park `park` (call `cid`) to edge `to`.
fn offer(
    edge: &mut Parking,
    now: Instant,
    cid: u64,
    park: ParkId,
    to: String,
    to_addr: std::net::SocketAddr,
    tried: Vec<String>,
) {
    let call = &edge.b2bua.calls[&cid];
    let ps = &edge.park.held[&cid];
    let d = call.dialog_ref(ps.parked);
    let o = MoveOffer {
        park,
        side: match ps.parked {
            Side::A => PartySide::A,
            Side::B => PartySide::B,
        },
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
        pt: ps.pt,
        te: ps.te,
        label: ps.label.clone(),
    };
    let span = call.span.clone();
    let _g = span.enter();
    let body = serde_json::to_vec(&o).expect("serialisable");
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
        Some(Claim::Park(park, 0)),
        &body,
    );
    for (k, v) in &signed {
        w.header(k, v);
    }
    let bytes = w.finish(Some(OFFER_TYPE), &body);
    info!(park, %to, "offering the parked call to another edge");
    let flow = Flow {
        proto: Proto::Udp,
        addr: to_addr,
        conn: 0,
    };
    edge.send_request(now, flow, branch, false, bytes, Owner::MoveOffer { park });
    edge.park.moving.insert(
        park,
        Moving {
            cid,
            to,
            stage: Stage::Offered,
            tried,
        },
    );
}

/// This move failed for now: offer the call again a little later (elsewhere, if possible).
fn refused(edge: &mut Parking, now: Instant, park: ParkId) {
    if let Some(m) = edge.park.moving.get_mut(&park) {
        m.tried.push(m.to.clone());
        m.stage = Stage::Refused {
            retry_at: now + OFFER_RETRY,
        };
    }
}

/// The answer to an offer: taken on probation (order the move), or refused.
pub(crate) fn offer_response(edge: &mut Parking, now: Instant, park: ParkId, msg: Option<Message>) {
    let Some(m) = edge.park.moving.get_mut(&park) else {
        return;
    };
    if m.stage != Stage::Offered {
        return;
    }
    let code = msg.as_ref().map_or(408, Message::code);
    if !(200..300).contains(&code) {
        warn!(park, to = %m.to, code, "the parked call's offer was refused: it stays here for now");
        return refused(edge, now, park);
    }
    m.stage = Stage::Ordering;
    let to = m.to.clone();
    edge.propose_then(now, Command::Move { park, to }, ParkThen::Move(park));
}

/// The move's outcome. Moved: the new edge takes it from here. Refused (a retrieve claimed
/// the call first, say): it stays here, offered again if still parked. Not known (the registry
/// out of reach): the watch will tell ([`on_moved_away`]).
pub(crate) fn move_outcome(edge: &mut Parking, now: Instant, park: ParkId, outcome: Outcome) {
    match outcome {
        Ok(Event::Moved { .. }) => on_moved_away(edge, now, park),
        Err(OrbitError::Unavailable(e)) => {
            info!(park, error = %e, "move not known to be ordered: the watch will tell");
        }
        other => {
            let to = edge.park.moving.get(&park).map(|m| m.to.clone());
            warn!(park, ?to, outcome = ?other.err(), "parked call not moved: it stays here");
            refused(edge, now, park);
        }
    }
}

/// The log moved park `park` away from this edge: the new edge plays the music from now on
/// (it saw the same commit) and re-INVITEs the party, so this edge's relay stops at once (a
/// retriever there must not hear two); the dialog is kept a moment longer, so that a request
/// of the party's crossing the re-INVITE is told to wait (491), then forgotten.
pub(crate) fn on_moved_away(edge: &mut Parking, now: Instant, park: ParkId) {
    let Some(m) = edge.park.moving.get_mut(&park) else {
        return;
    };
    if m.stage == Stage::Handed {
        return; // the outcome and the watch both tell
    }
    m.stage = Stage::Handed;
    info!(park, to = %m.to, "parked call moved to another edge");
    let cid = m.cid;
    if let Some(r) = edge.b2bua.calls.get_mut(&cid).and_then(|c| c.media.take()) {
        edge.b2bua.sv.media.close(now, r);
    }
    edge.timers
        .schedule(now + HANDED_GRACE, TimerKey::MovedAway(park));
}

/// The grace after a move is over: forget the call without a word to its party, whose
/// dialog is the new edge's now.
pub(crate) fn on_moved_away_timer(edge: &mut Parking, park: ParkId) {
    let Some(m) = edge.park.moving.remove(&park) else {
        return;
    };
    if m.stage != Stage::Handed {
        edge.park.moving.insert(park, m); // an older timer of this park
        return;
    }
    forget(edge, m.cid, park);
}

/// A parked call's party is changing hands: its own re-INVITE waits (491).
pub(crate) fn is_moving(edge: &Parking, park: ParkId) -> bool {
    edge.park.moving.get(&park).is_some_and(Moving::busy)
}

/// Forget call `cid` (park `park`) without a word to its party, whose dialog is another
/// edge's: its record here (no `End`: the other edge holds the park), its relay, its dialog.
pub(crate) fn forget(edge: &mut Parking, cid: u64, park: ParkId) {
    edge.park.held.remove(&cid);
    unhold(edge, park);
    call::end_call(edge, cid);
}
