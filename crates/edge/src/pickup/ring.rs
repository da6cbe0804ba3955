//! Recording the calls ringing here that someone may pick up, and ending the records: a call
//! to a pickable extension is recorded once it has rung for [`RECORD_AFTER`]; from then on a
//! callee's answer is held back until the log has ordered it (`RingEnd`, answered) against any
//! pickup, and a call that stops ringing otherwise ends its ring.
//!
//! ```text
//! call to 2001 ─▶ (0.5 s) ─▶ Ring ─▶ Recorded(N) ─▶ 2xx: RingEnd(N, answered) ─▶ relayed
//!                                               │                            └▶ NotRinging: ACK+BYE
//!                                               └▶ call gone: RingEnd(N)
//! ```

use super::*;

/// How far a call ringing here is in being recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RingState {
    /// Waiting for [`RECORD_AFTER`] to pass.
    Waiting,
    /// Its `Ring` is being ordered.
    Recording,
    /// Recorded as this ring.
    Recorded(RingId),
    /// The callee answered: the `RingEnd` of this ring is being ordered.
    Ending(RingId),
}

/// A call ringing here that pickup watches.
pub(crate) struct Ring {
    pub ext: String,
    pub state: RingState,
    /// The callee's answer, held back while the log orders it.
    pub held: Option<HeldAnswer>,
}

/// A call from a phone here to `ext` has started ringing: watch it if anybody may pick it up.
pub(crate) fn on_ringing(edge: &mut Picking, now: Instant, id: u64, ext: &str) {
    if !edge.pickup.rules.pickable(ext) || !edge.is_pickable(id) {
        return;
    }
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

/// Call `id` has rung long enough: record it (its answers are held from now on).
pub(crate) fn on_record_timer(edge: &mut Picking, now: Instant, id: u64) {
    let Some(r) = edge.pickup.rings.get(&id) else {
        return;
    };
    if r.state != RingState::Waiting {
        return;
    }
    record(edge, now, id);
}

/// Have call `id`'s ring recorded (again, after a pickup that never came for it).
pub(crate) fn record(edge: &mut Picking, now: Instant, id: u64) {
    let Some(ext) = edge.pickup.rings.get(&id).map(|r| r.ext.clone()) else {
        return;
    };
    if !edge.is_pickable(id) {
        return;
    }
    let call = &edge.calls[&id];
    let from = call.invite().from();
    let ring = RingCall {
        caller_uri: format!("sip:{}@{}", call.a.user, edge.cfg.tenant.domain),
        caller_display: from
            .and_then(|f| f.display)
            .map(|d| d.trim_matches('"').to_string()),
        edge: edge.cfg.site.clone(),
        call_id: call.a.call_id.clone(),
        local_tag: call.a.local_tag.clone(),
        remote_tag: call.invite().from_tag().unwrap_or("").to_string(),
    };
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
        // The call stopped ringing meanwhile.
        if let Some(ring) = ring {
            end_ring(edge, now, ring);
        }
        return;
    };
    if r.state != RingState::Recording {
        return; // a pickup of it came first, and found it by its dialog
    }
    let Some(ring) = ring else {
        // Not recorded (the registry out of reach, or full): the call rings on unwatched.
        let held = edge.pickup.rings.remove(&id).and_then(|r| r.held);
        return release(edge, now, id, held);
    };
    r.state = RingState::Recorded(ring);
    edge.pickup.by_ring.insert(ring, id);
    if let Some(h) = r.held.take() {
        answered(edge, now, id, ring, h);
    }
}

/// The callee answered a call whose answers are held: order the answer against any pickup.
pub(crate) fn on_held_answer(edge: &mut Picking, now: Instant, h: HeldAnswer) {
    let id = h.call;
    let Some(r) = edge.pickup.rings.get_mut(&id) else {
        return release(edge, now, id, Some(h));
    };
    match r.state {
        RingState::Recorded(ring) => answered(edge, now, id, ring, h),
        // The first answer waits for its ring's outcome; a retransmission is dropped.
        RingState::Recording | RingState::Ending(_) => {
            r.held.get_or_insert(h);
        }
        RingState::Waiting => release(edge, now, id, Some(h)),
    }
}

fn answered(edge: &mut Picking, now: Instant, id: u64, ring: RingId, h: HeldAnswer) {
    if let Some(r) = edge.pickup.rings.get_mut(&id) {
        r.state = RingState::Ending(ring);
        r.held = Some(h);
    }
    let cmd = Command::RingEnd {
        ring,
        answered: true,
    };
    edge.propose_then(now, cmd, PickThen::Answered(id));
}

/// Whether the callee's answer to call `id` came before any pickup.
pub(crate) fn answer_outcome(edge: &mut Picking, now: Instant, id: u64, outcome: Outcome) {
    let Some(r) = edge.pickup.rings.get_mut(&id) else {
        return;
    };
    let (RingState::Ending(ring), held) = (r.state, r.held.take()) else {
        return;
    };
    match outcome {
        Err(OrbitError::Rejected(orbit_state::Rejection::NotRinging)) => {
            // A picker had it first: the callee's phone is answered and hung up, and the call
            // waits for its picker (here, or another site's over the trunk).
            info!(
                call = id,
                "callee answered after a pickup: its answer refused"
            );
            r.state = RingState::Recorded(ring);
            if let Some(h) = held {
                call::refuse_answer(edge, now, h);
            }
        }
        _ => {
            edge.pickup.rings.remove(&id);
            edge.pickup.by_ring.remove(&ring);
            release(edge, now, id, held);
        }
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

/// Call `id`, watched, is gone: its ring (if recorded) is over.
pub(crate) fn on_unrung(edge: &mut Picking, now: Instant, id: u64) {
    let Some(r) = edge.pickup.rings.get(&id) else {
        return;
    };
    match r.state {
        // Its outcome finds the entry gone and ends the ring.
        RingState::Waiting | RingState::Recording => {
            edge.pickup.rings.remove(&id);
        }
        RingState::Recorded(ring) => {
            edge.pickup.rings.remove(&id);
            edge.pickup.by_ring.remove(&ring);
            drop_claims(edge, now, ring);
            end_ring(edge, now, ring);
        }
        // The call is gone: whatever the answer's outcome, nobody is to have it. A held answer
        // is refused (its call gone, the relay hangs it up).
        RingState::Ending(ring) => {
            let r = edge.pickup.rings.remove(&id).expect("present");
            edge.pickup.by_ring.remove(&ring);
            drop_claims(edge, now, ring);
            if let Some(h) = r.held {
                call::branch_response(edge, now, h.call, h.idx, h.flow, h.msg);
            }
        }
    }
}

fn end_ring(edge: &mut Picking, now: Instant, ring: RingId) {
    let cmd = Command::RingEnd {
        ring,
        answered: false,
    };
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
