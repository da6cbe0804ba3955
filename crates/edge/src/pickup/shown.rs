//! Calls recorded for extension lamps only: a call a watched extension makes, and a call to a
//! watched extension nobody may pick up. An edge with a lamp of an extension says so in the
//! log (`Watch`, `crate::blf`); the edge where such a call begins records it at once (a call
//! answered in its first half second shows too), marks it answered when it is, and ends it
//! with the call, so the lamp at any site shows it early, confirmed, then terminated. Nobody
//! picks these up, so a callee's answer is never held for them; calls of extensions nobody
//! watches cost the log nothing.
//!
//! ```text
//! call begun ─▶ Ring (called: Some(callee) for the caller's lamp,
//!                     None for the callee's) ─▶ Recorded(N) ─answered─▶ RingAnswered(N) ─▶ Answered(N)
//!                                          └────────── call over or parked: RingEnd(N) ◀─┘
//! ```

use super::*;

/// One record of a call, for one extension's lamp.
pub(crate) struct Shown {
    /// The extension whose lamp shows it.
    ext: String,
    state: ShownState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ShownState {
    /// Its `Ring` is being ordered; `answered`: the call was answered meanwhile.
    Recording {
        answered: bool,
    },
    Recorded(RingId),
    Answered(RingId),
}

/// Record call `id` for the lamp of extension `ext`, which makes the call (to `called`) or,
/// with `called` None, is called: the caller's edge records the call as it begins, since a
/// lamp somewhere watches `ext`.
pub(crate) fn show(edge: &mut Picking, now: Instant, id: u64, ext: &str, called: Option<&str>) {
    let Some(call) = edge.calls.get(&id) else {
        return;
    };
    let ring = ring_call(edge, call, called);
    edge.calls.get_mut(&id).expect("present").ring_watched = true;
    edge.pickup.shown.entry(id).or_default().push(Shown {
        ext: ext.to_string(),
        state: ShownState::Recording { answered: false },
    });
    let cmd = Command::Ring {
        tenant: edge.cfg.tenant.domain.clone(),
        ext: ext.to_string(),
        call: ring,
    };
    edge.propose_then(now, cmd, PickThen::Shown(id, ext.to_string()));
}

/// The outcome of recording call `id` for `ext`'s lamp.
pub(crate) fn shown_outcome(edge: &mut Picking, now: Instant, id: u64, ext: &str, o: Outcome) {
    let ring = match o {
        Ok(Event::Ringing(r)) => r.id,
        Ok(_) => return,
        Err(e) => {
            debug!(call = id, %ext, error = %e, "call not recorded for a lamp");
            return forget(edge, id, ext);
        }
    };
    if entry(edge, id, ext, ring).is_none() {
        // The call ended while it was being recorded: the record goes too.
        return end_ring(edge, now, ring);
    }
    recorded(edge, now, id, ext, ring);
}

/// Call `id`'s record for `ext` is ring `ring` (its outcome, or the watch showing it first).
fn recorded(edge: &mut Picking, now: Instant, id: u64, ext: &str, ring: RingId) {
    let Some(s) = entry(edge, id, ext, ring) else {
        return;
    };
    match s.state {
        ShownState::Recording { answered: false } => s.state = ShownState::Recorded(ring),
        ShownState::Recording { answered: true } => {
            s.state = ShownState::Answered(ring);
            edge.propose(now, Command::RingAnswered { ring }, Then::Nothing);
        }
        _ => {}
    }
}

/// The watch showed `ringing`, a record of call `id` here, before its outcome came: taken as
/// that record if the call is being recorded for the extension (or already is). Whether it is.
pub(crate) fn adopt_shown(
    edge: &mut Picking,
    now: Instant,
    id: u64,
    ringing: &orbit_state::Ringing,
) -> bool {
    if entry(edge, id, &ringing.ext, ringing.id).is_none() {
        return false;
    }
    recorded(edge, now, id, &ringing.ext, ringing.id);
    true
}

/// Call `id` was answered: its records show it confirmed.
pub(crate) fn shown_answered(edge: &mut Picking, now: Instant, id: u64) {
    let Some(records) = edge.pickup.shown.get_mut(&id) else {
        return;
    };
    let mut answered = vec![];
    for s in records.iter_mut() {
        match s.state {
            ShownState::Recording { .. } => s.state = ShownState::Recording { answered: true },
            ShownState::Recorded(ring) => {
                s.state = ShownState::Answered(ring);
                answered.push(ring);
            }
            ShownState::Answered(_) => {}
        }
    }
    for ring in answered {
        edge.propose(now, Command::RingAnswered { ring }, Then::Nothing);
    }
}

/// Call `id` is over (or parked: one of its parties left it): its records end.
pub(crate) fn shown_over(edge: &mut Picking, now: Instant, id: u64) {
    for s in edge.pickup.shown.remove(&id).unwrap_or_default() {
        // A `Ring` being ordered is ended by its outcome, which finds the entry gone.
        if let ShownState::Recorded(ring) | ShownState::Answered(ring) = s.state {
            end_ring(edge, now, ring);
        }
    }
}

/// The registry no longer has these records (this edge's lease lapsed, it restarted, or a
/// resync showed them gone): nothing to end any more.
pub(crate) fn shown_lost(edge: &mut Picking, gone: impl Fn(RingId) -> bool) {
    for records in edge.pickup.shown.values_mut() {
        records.retain(|s| match s.state {
            ShownState::Recorded(r) | ShownState::Answered(r) => !gone(r),
            ShownState::Recording { .. } => true,
        });
    }
    edge.pickup.shown.retain(|_, v| !v.is_empty());
}

/// Call `id`'s record for `ext`: the one being recorded, or the one recorded as `ring`.
fn entry<'a>(edge: &'a mut Picking, id: u64, ext: &str, ring: RingId) -> Option<&'a mut Shown> {
    edge.pickup.shown.get_mut(&id)?.iter_mut().find(|s| {
        s.ext == ext
            && match s.state {
                ShownState::Recording { .. } => true,
                ShownState::Recorded(r) | ShownState::Answered(r) => r == ring,
            }
    })
}

fn forget(edge: &mut Picking, id: u64, ext: &str) {
    if let Some(v) = edge.pickup.shown.get_mut(&id) {
        v.retain(|s| !(s.ext == ext && matches!(s.state, ShownState::Recording { .. })));
        if v.is_empty() {
            edge.pickup.shown.remove(&id);
        }
    }
}

impl Shown {
    /// Its record, once made.
    pub(crate) fn ring(&self) -> Option<RingId> {
        match self.state {
            ShownState::Recorded(r) | ShownState::Answered(r) => Some(r),
            ShownState::Recording { .. } => None,
        }
    }
}
