//! Recording the calls ringing here that someone may pick up, and ending the records: a call
//! to a pickable extension is recorded once it has rung for [`RECORD_AFTER`] (at once when a
//! lamp watches the extension, `shown.rs`); from then on a
//! callee's answer is held back until the log has ordered it (`RingAnswered`) against any
//! pickup; the record then stands for the call in progress until it ends (`RingEnd`), and a
//! call that stops ringing otherwise ends it too.
//!
//! ```text
//! call to 2001 ─▶ (0.5 s) ─▶ Ring ─▶ Recorded(N) ─▶ 2xx held: RingAnswered(N) ─▶ relayed,
//!                                               │     │        Talking(N) ─▶ call over: RingEnd(N)
//!                                               │     └▶ NotRinging: held until the picker
//!                                               │        comes (then ACK+BYE), or goes through
//!                                               └▶ call gone: RingEnd(N)
//! ```
//!
//! The callee's answer is refused only when the picker the log chose is actually given the
//! call ([`take_here`]); a pickup that never comes, a ring lost with the lease, or one that
//! vanished for a reason this edge never learnt lets the answer through.
//!
//! A call's entry ([`RingState`]), from the call's first ring to its end:
//!
//! | state | goes to | when |
//! |---|---|---|
//! | `Waiting` | `Recording` | [`RECORD_AFTER`] passed (or at once, the callee watched), the call still ringing: `Ring` proposed, answers held |
//! | `Recording` | `Recorded(N)` | the `Ring` committed (or the watch showed it first) |
//! | `Recording` | gone | the `Ring` refused (registry away, caps): the call rings on, unwatched |
//! | `Recorded(N)` | `Answering(N)` | the callee answered: `RingAnswered` proposed |
//! | `Recorded(N)` | gone | picked up here ([`take_here`]); the call stopped ringing (`RingEnd`); lost with the lease |
//! | `Recorded(N)` | `Recording` | picked up, but the picker never came, cancelled or could not take the codec, no answer held ([`picker_gone`]) |
//! | `Answering(N)` | `Talking(N)` | committed (or the registry away): the answer relayed |
//! | `Answering(N)` | `Recorded(N)` | refused: a pickup won; the answer waits for the picker, or goes through ([`picker_gone`]) |
//! | `Talking(N)` | gone | the call ended, or was parked: `RingEnd` |

use super::*;

/// How long a callee's answer that lost to a pickup waits for the picker's pickup to show
/// (the watch is a commit behind at most) before it goes through.
const ANSWER_WAIT: Duration = Duration::from_secs(2);

/// How far a call ringing here is in being recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RingState {
    /// Waiting for [`RECORD_AFTER`] to pass.
    Waiting,
    /// Its `Ring` is being ordered.
    Recording,
    /// Recorded as this ring.
    Recorded(RingId),
    /// The callee answered: that answer (`RingAnswered` of this ring) is being ordered.
    Answering(RingId),
    /// Answered: the record stays, as the call in progress, until the call ends.
    Talking(RingId),
}

/// A call ringing here that pickup watches.
pub(crate) struct Ring {
    pub ext: String,
    pub state: RingState,
    /// The callee's answer, held back while the log orders it or a picker is awaited.
    pub held: Option<HeldAnswer>,
}

/// A call from phone `caller` here to extension `callee` has started ringing: watch it if
/// anybody may pick it up, and record it for the lamps that watch either party
/// (`shown.rs`). A call to an extension whose lamp is watched is recorded at once, so that an
/// answer in its first half second shows too.
pub(crate) fn on_call_begun(edge: &mut Picking, now: Instant, id: u64, caller: &str, callee: &str) {
    let (tenant, now_ms) = (edge.cfg.tenant.domain.clone(), edge.now_ms(now));
    let watched = |edge: &Picking, ext: &str| {
        edge.extension(ext).is_some() && edge.orbit.watched(&tenant, ext, now_ms)
    };
    if watched(edge, caller) {
        show(edge, now, id, caller, Some(callee));
    }
    let callee_watched = watched(edge, callee);
    if edge.pickup_rules.pickable(callee) && edge.is_pickable(id) {
        on_ringing(edge, now, id, callee);
        if callee_watched {
            record(edge, now, id);
        }
    } else if callee_watched {
        show(edge, now, id, callee, None);
    }
}

/// Call `id` to `ext`, whom someone may pick up, has started ringing: it is recorded in
/// [`RECORD_AFTER`] unless over by then.
fn on_ringing(edge: &mut Picking, now: Instant, id: u64, ext: &str) {
    if let Some(c) = edge.calls.get_mut(&id) {
        c.ring_watched = true;
    }
    edge.pickup.rings.insert(
        id,
        Ring {
            ext: ext.to_string(),
            state: RingState::Waiting,
            held: None,
        },
    );
    edge.timers
        .schedule(now + RECORD_AFTER, TimerKey::RingRecord(id));
}

/// Call `call` as a record of the extension it rings, or with `called` (the extension it
/// rings) of the extension that makes it: who calls, and the caller's dialog with this edge
/// with the watched party's own tag local (what a lamp shows; for a call to the extension,
/// what a Replaces names).
pub(crate) fn ring_call(edge: &Picking, call: &call::Call, called: Option<&str>) -> RingCall {
    let domain = &edge.cfg.tenant.domain;
    let phone_tag = call.invite().from_tag().unwrap_or("").to_string();
    let (local_tag, remote_tag) = match called {
        Some(_) => (phone_tag, call.a.local_tag.clone()),
        None => (call.a.local_tag.clone(), phone_tag),
    };
    RingCall {
        caller_uri: format!("sip:{}@{domain}", call.a.user),
        caller_display: call
            .invite()
            .from()
            .and_then(|f| f.display)
            .map(|d| d.trim_matches('"').to_string()),
        edge: edge.id.clone(),
        call_id: call.a.call_id.clone(),
        local_tag,
        remote_tag,
        park: None,
        called: called.map(|c| format!("sip:{c}@{domain}")),
    }
}

/// Call `id` has rung long enough: record it (its answers are held from now on).
pub(crate) fn on_record_timer(edge: &mut Picking, now: Instant, id: u64) {
    if edge.pickup.rings.get(&id).map(|r| r.state) == Some(RingState::Waiting) {
        record(edge, now, id);
    }
}

/// Have call `id`'s ring recorded (again, after a pickup that never came for it).
pub(crate) fn record(edge: &mut Picking, now: Instant, id: u64) {
    let Some(ext) = edge.pickup.rings.get(&id).map(|r| r.ext.clone()) else {
        return;
    };
    if !edge.is_pickable(id) {
        return;
    }
    let ring = ring_call(edge, &edge.calls[&id], None);
    edge.calls.get_mut(&id).expect("pickable").hold_answer = true;
    if let Some(r) = edge.pickup.rings.get_mut(&id) {
        r.state = RingState::Recording;
    }
    let cmd = Command::Ring {
        tenant: edge.cfg.tenant.domain.clone(),
        ext,
        call: ring,
    };
    edge.propose_then(now, cmd, PickThen::Ring(id));
}

/// The outcome of recording call `id`'s ring.
pub(crate) fn ring_outcome(edge: &mut Picking, now: Instant, id: u64, outcome: Outcome) {
    let ring = match outcome {
        Ok(Event::Ringing(r)) => Some(r.id),
        Ok(_) => None,
        Err(e) => {
            debug!(call = id, error = %e, "ring not recorded: nobody can pick this call up");
            None
        }
    };
    let Some(r) = edge.pickup.rings.get_mut(&id) else {
        // The call stopped ringing before its ring was recorded: the record goes too.
        if let Some(ring) = ring {
            end_ring(edge, now, ring);
        }
        return;
    };
    match (r.state, ring) {
        (RingState::Recording, Some(ring)) => {
            r.state = RingState::Recorded(ring);
            edge.pickup.by_ring.insert(ring, id);
        }
        // The watch brought the ring first ([`adopt_ring`]).
        (RingState::Recorded(known), Some(ring)) if known == ring => {}
        (RingState::Recording, None) => {
            // Not recorded (the registry out of reach, or full): the call rings on unwatched.
            let held = edge.pickup.rings.remove(&id).and_then(|r| r.held);
            return release(edge, now, id, held);
        }
        _ => return,
    }
    let r = edge.pickup.rings.get_mut(&id).expect("present");
    if let (RingState::Recorded(ring), Some(h)) = (r.state, r.held.take()) {
        answered(edge, now, id, ring, h);
    }
}

/// The callee answered a call whose answers are held: order the answer against any pickup.
pub(crate) fn on_held_answer(edge: &mut Picking, now: Instant, h: HeldAnswer) {
    let id = h.call;
    let Some(r) = edge.pickup.rings.get_mut(&id) else {
        return release(edge, now, id, Some(h));
    };
    if r.held.is_some() {
        // A retransmission, or another fork answering too: the first answer is decided
        // first, and the other resends its 2xx meanwhile.
        return;
    }
    match r.state {
        RingState::Recorded(ring) => answered(edge, now, id, ring, h),
        RingState::Recording | RingState::Answering(_) => r.held = Some(h),
        RingState::Waiting | RingState::Talking(_) => release(edge, now, id, Some(h)),
    }
}

fn answered(edge: &mut Picking, now: Instant, id: u64, ring: RingId, h: HeldAnswer) {
    if let Some(r) = edge.pickup.rings.get_mut(&id) {
        r.state = RingState::Answering(ring);
        r.held = Some(h);
    }
    let cmd = Command::RingAnswered { ring };
    edge.propose_then(now, cmd, PickThen::Answered(id, ring));
}

/// Whether the callee's answer to call `id` (ring `ring`) came before any pickup.
pub(crate) fn answer_outcome(
    edge: &mut Picking,
    now: Instant,
    id: u64,
    ring: RingId,
    outcome: Outcome,
) {
    let Some(r) = edge.pickup.rings.get_mut(&id) else {
        // The call ended while its answer was ordered: the record of it in progress goes too.
        if outcome.is_ok() {
            end_ring(edge, now, ring);
        }
        return;
    };
    let RingState::Answering(ring) = r.state else {
        return;
    };
    match outcome {
        Err(OrbitError::Rejected(orbit_state::Rejection::NotRinging)) => {
            // A pickup came first: the answer waits for the picker (who refuses it when it
            // takes the call), or goes through if none shows.
            info!(
                call = id,
                ring, "callee answered after a pickup: its answer waits"
            );
            r.state = RingState::Recorded(ring);
            edge.timers
                .schedule(now + ANSWER_WAIT, TimerKey::AnswerWait(id));
        }
        _ => {
            // Answered (or, the registry out of reach, taken to be): the record now shows the
            // call in progress, and ends with it.
            let held = r.held.take();
            r.state = RingState::Talking(ring);
            edge.pickup.by_ring.remove(&ring);
            release(edge, now, id, held);
        }
    }
}

/// A callee's answer that lost to a pickup has waited: if no pickup of its ring has shown
/// (the ring went some other way), it goes through.
pub(crate) fn on_answer_wait(edge: &mut Picking, now: Instant, id: u64) {
    let Some(r) = edge.pickup.rings.get(&id) else {
        return;
    };
    let RingState::Recorded(ring) = r.state else {
        return;
    };
    if r.held.is_none() || edge.pickup.claimed.contains_key(&ring) {
        return; // taken meanwhile, or its picker is awaited (the fetch wait decides)
    }
    warn!(
        call = id,
        ring, "no pickup shown for a ring the log no longer has: the callee's answer goes through"
    );
    picker_gone(edge, now, id);
}

/// Nobody is coming for call `id`'s pickup: a held answer goes through, else the call is
/// recorded again and rings on.
pub(crate) fn picker_gone(edge: &mut Picking, now: Instant, id: u64) {
    let Some(r) = edge.pickup.rings.get_mut(&id) else {
        return;
    };
    if let RingState::Recorded(ring) | RingState::Answering(ring) = r.state {
        edge.pickup.by_ring.remove(&ring);
        edge.pickup.claimed.remove(&ring);
    }
    let r = edge.pickup.rings.get_mut(&id).expect("present");
    match r.held.take() {
        Some(h) => {
            edge.pickup.rings.remove(&id);
            release(edge, now, id, Some(h));
        }
        None => record(edge, now, id),
    }
}

/// Call `id` needs pickup no more: its answers go through, the one held first.
fn release(edge: &mut Picking, now: Instant, id: u64, held: Option<HeldAnswer>) {
    if let Some(c) = edge.calls.get_mut(&id) {
        c.hold_answer = false;
    }
    if let Some(h) = held {
        call::branch_response(edge, now, h.call, h.idx, h.flow, h.msg);
    }
}

/// Call `id`, watched, stopped ringing (cancelled, failed, ended): its ring is over.
pub(crate) fn on_unrung(edge: &mut Picking, now: Instant, id: u64) {
    let Some(r) = edge.pickup.rings.remove(&id) else {
        return;
    };
    match r.state {
        // A `Ring` being ordered is ended by its outcome, which finds the entry gone.
        RingState::Waiting | RingState::Recording => {}
        RingState::Recorded(ring) | RingState::Answering(ring) => {
            edge.pickup.by_ring.remove(&ring);
            drop_claims(edge, now, ring);
            if matches!(r.state, RingState::Recorded(_)) {
                end_ring(edge, now, ring);
            }
        }
        RingState::Talking(ring) => end_ring(edge, now, ring),
    }
    if let Some(h) = r.held {
        // Its call is gone: the late answer is taken and hung up.
        call::branch_response(edge, now, h.call, h.idx, h.flow, h.msg);
    }
}

/// The registry dropped `rings` (this edge's lease lapsed, or it restarted): those ringing
/// here can no longer be picked up; they ring on, and a held answer goes through.
pub(crate) fn rings_lost(edge: &mut Picking, now: Instant, rings: Vec<RingId>) {
    for ring in rings {
        if let Some(id) = edge.pickup.by_ring.remove(&ring) {
            edge.pickup.claimed.remove(&ring);
            let held = edge.pickup.rings.remove(&id).and_then(|r| r.held);
            release(edge, now, id, held);
        }
    }
}

pub(crate) fn end_ring(edge: &mut Picking, now: Instant, ring: RingId) {
    let cmd = Command::RingEnd { ring };
    edge.propose(now, cmd, Then::Nothing);
}

/// Ring `ring` is over here: a pickup of it shown by the watch is forgotten, and a trunk pickup
/// waiting for one is refused.
fn drop_claims(edge: &mut Picking, now: Instant, ring: RingId) {
    edge.pickup.claimed.remove(&ring);
    if let Some(w) = edge.pickup.waiting.remove(&ring) {
        let r = Response::to(&w.msg, 481).reason("Call No Longer Ringing");
        edge.reply(now, &w.key, r);
    }
}

/// A call here was parked: whoever it was to has left it (or is on hold in a slot), so its
/// record as a call in progress ends; a lamp of the extension goes dark.
pub(crate) fn on_parked(edge: &mut Picking, now: Instant, p: &orbit_state::Parked) {
    let key = (p.call.call_id.clone(), p.call.local_tag.clone());
    let Some(&id) = edge.dialogs.get(&key) else {
        return;
    };
    if let Some(RingState::Talking(ring)) = edge.pickup.rings.get(&id).map(|r| r.state) {
        edge.pickup.rings.remove(&id);
        end_ring(edge, now, ring);
    }
    shown_over(edge, now, id);
}
