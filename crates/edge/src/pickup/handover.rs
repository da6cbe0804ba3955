//! Giving a call ringing here to the picker the log chose: a picker at this site directly, a
//! picker at another site when its edge's trunk INVITE (`X-Orbit-Claim: ring-N`) comes and
//! this edge's replica shows that pickup by that picker (waiting briefly for the watch, as a
//! retrieve's trunk claim does). A call whose picker never comes goes on without it: recorded
//! again if it still rings, to its callee if the callee answered meanwhile.
//!
//! ```text
//! PickedUp(N, by site-c/3001) ─▶ claimed ─(trunk INVITE from site-c, From 3001)─▶ take_here
//!                                        └─ none within 10 s ─▶ Ring again (or the callee's
//!                                                               held answer goes through)
//! trunk INVITE before the watch shows it ─▶ 100, wait ≥ 2 s, and while the replica is short
//!                                          of the pickup's log index (≤ a lease) ─▶ 404 if never
//! ```

use super::*;

/// Trunk pickups waiting for the replica, at once.
const PICKS_WAITING: usize = 1024;
/// ... of them from one site (as the park claims' waits, `park/handover.rs`).
const PICKS_WAITING_PER_SITE: usize = PICKS_WAITING / 4;
/// How long a trunk pickup waits for the replica at least (a watch that is not cut off is a
/// commit behind at most), and how often it looks again while the replica is short of it.
const PICK_WAIT: Duration = Duration::from_secs(2);
/// How long a call picked up at another site waits for that site's trunk INVITE.
const FETCH_WAIT: Duration = Duration::from_secs(10);

/// A trunk INVITE from another site's edge claiming ring `ring` for its picker.
pub(crate) struct TrunkPick {
    pub key: ServerKey,
    pub flow: Flow,
    pub msg: Message,
    /// The picker, as the sending site's From names it (and its signature vouches for).
    pub picker: String,
    /// The sending site.
    pub site: String,
    pub ring: RingId,
    /// The log index the pickup was committed at, as the picker's site says (0: not said).
    pub at: u64,
    /// When the INVITE came.
    pub since: Instant,
}

/// The call ringing here as `ringing`, if it still does; found by its dialog too, and then
/// taken as recorded: the watch (or a pickup's outcome) may bring the ring before this edge
/// heard that its `Ring` was recorded.
pub(crate) fn adopt_ring(edge: &mut Picking, ringing: &orbit_state::Ringing) -> Option<u64> {
    if let Some(&id) = edge.pickup.by_ring.get(&ringing.id) {
        return Some(id);
    }
    let key = (ringing.call.call_id.clone(), ringing.call.local_tag.clone());
    let id = *edge.dialogs.get(&key)?;
    let r = edge.pickup.rings.get_mut(&id)?;
    if r.state != RingState::Recording {
        return None;
    }
    r.state = RingState::Recorded(ringing.id);
    edge.pickup.by_ring.insert(ringing.id, id);
    Some(id)
}

/// Give the call ringing here as ring `ring` to picker `p`, whom the log chose. `site`: the
/// picker's site when it is another's (its picker is asserted by that site's edge).
pub(crate) fn take_here(
    edge: &mut Picking,
    now: Instant,
    ring: RingId,
    p: &Pick,
    site: Option<&str>,
) {
    let not_ringing = |edge: &mut Picking| {
        let (code, why) = if p.replaces || site.is_some() {
            (481, "Call No Longer Ringing")
        } else {
            (404, "Nothing To Pick Up")
        };
        edge.reply(now, &p.key, Response::to(&p.msg, code).reason(why));
    };
    let Some(&id) = edge.pickup.by_ring.get(&ring) else {
        return not_ringing(edge);
    };
    let domain = edge.cfg.tenant.domain.clone();
    let display = |edge: &Picking, user: &str, given: Option<&str>| {
        given
            .map(|d| d.trim_matches('"').to_string())
            .or_else(|| edge.extension(user).and_then(|e| e.display_name.clone()))
            .map(|d| format!("\"{}\" ", d.replace(['"', '\\'], "")))
            .unwrap_or_default()
    };
    // The picker as the caller is told: its display name as its site gives it (another site's
    // From), else as configured here; a picking phone's own From display is not passed on.
    // The caller's is, as it came (the picker sees it as any callee would).
    let given = site.and_then(|_| p.msg.from().and_then(|f| f.display));
    let identity = format!(
        "{}<sip:{}@{domain}>",
        display(edge, &p.picker, given),
        p.picker
    );
    let Some(call) = edge.calls.get(&id) else {
        return not_ringing(edge);
    };
    let caller = call.a.user.clone();
    let caller_given = call
        .invite()
        .from()
        .and_then(|f| f.display)
        .map(str::to_string);
    let caller_identity = format!(
        "{}<sip:{caller}@{domain}>",
        display(edge, &caller, caller_given.as_deref())
    );
    let picker = Picker {
        key: &p.key,
        flow: p.flow,
        msg: &p.msg,
        user: &p.picker,
        identity: &identity,
        caller_identity: &caller_identity,
    };
    match call::take_ringing(edge, now, id, picker) {
        Ok(()) => {
            info!(ring, by = %p.picker, site = site.unwrap_or("here"), "call picked up");
            edge.pickup.by_ring.remove(&ring);
            edge.pickup.claimed.remove(&ring);
            if let Some(h) = edge.pickup.rings.remove(&id).and_then(|r| r.held) {
                // The callee answered after the pickup won: its phone is hung up.
                call::refuse_answer(edge, now, h);
            }
        }
        Err(NotPickable::NotRinging) => not_ringing(edge),
        Err(e) => {
            let why = match e {
                NotPickable::NoOffer => "Caller Sent No Offer",
                _ => "No Codec In Common With The Caller",
            };
            edge.reply(now, &p.key, Response::to(&p.msg, 488).reason(why));
            picker_gone(edge, now, id);
        }
    }
}

/// The watch showed a ring of this edge: adopted if its outcome has not come yet; ended if no
/// call here rings for it (a `Ring` whose outcome was lost, though it was committed).
pub(crate) fn on_ring_shown(edge: &mut Picking, now: Instant, ringing: &orbit_state::Ringing) {
    if adopt_ring(edge, ringing).is_some() {
        return;
    }
    let key = (
        ringing.call.call_id.clone(),
        ringing.call.edge_tag().to_string(),
    );
    let call = edge.dialogs.get(&key).copied();
    let recording = call.is_some_and(|id| {
        edge.pickup.rings.contains_key(&id) || adopt_shown(edge, now, id, ringing)
    });
    if !recording {
        debug!(ring = ringing.id, "a ring no call here rings for: ended");
        end_ring(edge, now, ringing.id);
    }
}

/// The watch showed ring `ringing`, ringing here, picked up by `by`: remember who, for its
/// trunk INVITE (or the picker here, whose outcome takes it); if nobody comes for it within
/// [`FETCH_WAIT`], the call rings on ([`on_fetch_timeout`]).
pub(crate) fn on_picked(
    edge: &mut Picking,
    now: Instant,
    ringing: &orbit_state::Ringing,
    by: &str,
) {
    let ring = ringing.id;
    if adopt_ring(edge, ringing).is_none() {
        return;
    }
    edge.pickup.claimed.insert(ring, by.to_string());
    edge.timers
        .schedule(now + FETCH_WAIT, TimerKey::PickupFetch(ring));
    if let Some(w) = edge.pickup.waiting.remove(&ring) {
        on_trunk_pick(edge, now, w);
    }
}

/// A trunk INVITE claiming ring `ring` for its picker: give it the call once this edge's
/// replica shows that pickup by that picker at that site.
pub(crate) fn on_trunk_pick(edge: &mut Picking, now: Instant, c: TrunkPick) {
    if !edge.pickup.by_ring.contains_key(&c.ring) {
        if edge.orbit.is_future_ring(c.ring) {
            // The replica has not seen this ring yet (nor, then, its pickup).
            return wait_for_replica(edge, now, c);
        }
        let r = Response::to(&c.msg, 481).reason("Call No Longer Ringing");
        return edge.reply(now, &c.key, r);
    }
    let claimant = format!("{}/{}", c.site, c.picker);
    match edge.pickup.claimed.get(&c.ring) {
        Some(by) if *by == claimant => {}
        Some(by) => {
            warn!(ring = c.ring, %by, %claimant, "trunk pickup by someone else than the registry says");
            let r = Response::to(&c.msg, 403).reason("Not The Picker");
            return edge.reply(now, &c.key, r);
        }
        None => return wait_for_replica(edge, now, c),
    }
    let p = Pick {
        key: c.key,
        flow: c.flow,
        msg: c.msg,
        picker: c.picker,
        replaces: false,
    };
    take_here(edge, now, c.ring, &p, Some(&c.site));
}

/// Hold a trunk pickup until the watch shows it, for [`PICK_WAIT`], and on while the replica
/// is short of the pickup's entry ([`on_pick_wait_timeout`]).
fn wait_for_replica(edge: &mut Picking, now: Instant, c: TrunkPick) {
    let w = &edge.pickup.waiting;
    let from_site = w.values().filter(|x| x.site == c.site).count();
    if w.len() >= PICKS_WAITING || from_site >= PICKS_WAITING_PER_SITE || w.contains_key(&c.ring) {
        let r = Response::to(&c.msg, 503).header("Retry-After", "1");
        return edge.reply(now, &c.key, r);
    }
    edge.reply(now, &c.key, Response::to(&c.msg, 100));
    edge.timers
        .schedule(now + PICK_WAIT, TimerKey::PickupWait(c.ring));
    edge.pickup.waiting.insert(c.ring, c);
}

/// A trunk pickup's wait ended: on, if the replica is still short of the pickup's entry (for
/// a lease's length at most), else refused.
pub(crate) fn on_pick_wait_timeout(edge: &mut Picking, now: Instant, ring: RingId) {
    let Some(w) = edge.pickup.waiting.get(&ring) else {
        return;
    };
    if let Some(again) = edge.replica_wait(w.at, w.since, now, PICK_WAIT) {
        return edge.timers.schedule(again, TimerKey::PickupWait(ring));
    }
    let w = edge.pickup.waiting.remove(&ring).expect("found");
    warn!(ring, picker = %w.picker, site = %w.site, at = w.at, replica = edge.port.watch_index, "trunk pickup not shown by the registry: refused");
    let r = Response::to(&w.msg, 404).reason("Pickup Not Committed");
    edge.reply(now, &w.key, r);
}

/// A call ringing here was picked up and its picker never came: it rings on (recorded again),
/// or, if its callee answered meanwhile, the callee has it.
pub(crate) fn on_fetch_timeout(edge: &mut Picking, now: Instant, ring: RingId) {
    let Some(by) = edge.pickup.claimed.get(&ring).cloned() else {
        return; // fetched, or over
    };
    let Some(&id) = edge.pickup.by_ring.get(&ring) else {
        edge.pickup.claimed.remove(&ring);
        return;
    };
    warn!(ring, %by, "picked-up call never fetched: it goes on without its picker");
    picker_gone(edge, now, id);
}

/// The picker's site cancelled its trunk INVITE while it waited for the replica. False: not a
/// waiting trunk pickup.
pub(crate) fn cancel_waiting_pick(edge: &mut Picking, now: Instant, invite: &ServerKey) -> bool {
    let Some(ring) = edge
        .pickup
        .waiting
        .iter()
        .find(|(_, w)| w.key == *invite)
        .map(|(r, _)| *r)
    else {
        return false;
    };
    let w = edge.pickup.waiting.remove(&ring).expect("found");
    edge.reply(now, &w.key, Response::to(&w.msg, 487));
    true
}
