//! Giving a call ringing here to the picker the log chose: a picker at this site directly, a
//! picker at another site when its edge's trunk INVITE (`X-Orbit-Claim: ring-N`) comes and
//! this edge's replica shows that pickup by that picker (waiting briefly for the watch, as a
//! retrieve's trunk claim does). A call picked up elsewhere and never fetched is recorded
//! again and rings on.
//!
//! ```text
//! PickedUp(N, by site-c/3001) ─▶ claimed ─(trunk INVITE from site-c, From 3001)─▶ take_here
//!                                        └─ none within 10 s ─▶ Ring again
//! trunk INVITE before the watch shows it ─▶ 100, wait ≤ 2 s ─▶ 404 if never
//! ```

use super::*;

/// Trunk pickups waiting for the replica, at once.
const PICKS_WAITING: usize = 1024;
/// How long a trunk pickup waits for the replica (the watch is a commit behind at most).
const PICK_WAIT: Duration = Duration::from_secs(2);
/// How long a call picked up at another site waits for that site's trunk INVITE.
const FETCH_WAIT: Duration = Duration::from_secs(10);

/// A trunk INVITE from another site's edge claiming ring `ring` for its picker `caller`.
pub(crate) struct TrunkPick {
    pub key: ServerKey,
    pub flow: Flow,
    pub msg: Message,
    /// The picker, as the sending site's From names it (and its signature vouches for).
    pub caller: String,
    /// The sending site.
    pub site: String,
    pub ring: RingId,
}

/// The call ringing here as `ringing`, if it still does. Found by its dialog too: the watch
/// (or a pickup's outcome) may bring the ring before this edge heard its `Ring` was recorded.
pub(crate) fn call_of(edge: &mut Picking, ringing: &orbit_state::Ringing) -> Option<u64> {
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
    let Some(id) = edge.pickup.by_ring.remove(&ring) else {
        return not_ringing(edge);
    };
    edge.pickup.claimed.remove(&ring);
    if let Some(r) = edge.pickup.rings.remove(&id) {
        if let Some(h) = r.held {
            // The callee answered after the pickup won: its phone is hung up.
            call::refuse_answer(edge, now, h);
        }
    }
    let domain = edge.cfg.tenant.domain.clone();
    let display = |edge: &Picking, user: &str, given: Option<&str>| {
        given
            .map(|d| d.trim_matches('"').to_string())
            .or_else(|| edge.extension(user).and_then(|e| e.display_name.clone()))
            .map(|d| format!("\"{}\" ", d.replace(['"', '\\'], "")))
            .unwrap_or_default()
    };
    // The picker as the caller is told: its display name as its site gives it (another site's
    // From), else as configured here; a phone's own From display is not passed on.
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
        Ok(()) => info!(ring, by = %p.picker, site = site.unwrap_or("here"), "call picked up"),
        Err(NotPickable::NotRinging) => not_ringing(edge),
        Err(NotPickable::NoOffer) => edge.reply(
            now,
            &p.key,
            Response::to(&p.msg, 488).reason("Caller Sent No Offer"),
        ),
    }
}

/// The watch showed ring `ring`, ringing here, picked up by `by`: a picker here is answered by
/// its own outcome; another site's is expected over the trunk.
pub(crate) fn on_picked_elsewhere(
    edge: &mut Picking,
    now: Instant,
    ringing: &orbit_state::Ringing,
    by: &str,
) {
    let ring = ringing.id;
    if by.starts_with(&edge.picker_name("")) || call_of(edge, ringing).is_none() {
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
        let r = Response::to(&c.msg, 481).reason("Call No Longer Ringing");
        return edge.reply(now, &c.key, r);
    }
    let claimant = format!("{}/{}", c.site, c.caller);
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
        picker: c.caller,
        replaces: false,
    };
    take_here(edge, now, c.ring, &p, Some(&c.site));
}

/// Hold a trunk pickup until the watch shows it, for [`PICK_WAIT`] at most.
fn wait_for_replica(edge: &mut Picking, now: Instant, c: TrunkPick) {
    let w = &edge.pickup.waiting;
    if w.len() >= PICKS_WAITING || w.contains_key(&c.ring) {
        let r = Response::to(&c.msg, 503).header("Retry-After", "1");
        return edge.reply(now, &c.key, r);
    }
    edge.reply(now, &c.key, Response::to(&c.msg, 100));
    edge.timers
        .schedule(now + PICK_WAIT, TimerKey::PickupWait(c.ring));
    edge.pickup.waiting.insert(c.ring, c);
}

/// A trunk pickup waited in vain for the replica.
pub(crate) fn on_pick_wait_timeout(edge: &mut Picking, now: Instant, ring: RingId) {
    if let Some(w) = edge.pickup.waiting.remove(&ring) {
        warn!(ring, caller = %w.caller, site = %w.site, "trunk pickup not shown by the registry: refused");
        let r = Response::to(&w.msg, 404).reason("Pickup Not Committed");
        edge.reply(now, &w.key, r);
    }
}

/// A call ringing here, picked up at another site, was never fetched: record it again, so
/// that it rings on and may be picked up.
pub(crate) fn on_fetch_timeout(edge: &mut Picking, now: Instant, ring: RingId) {
    let Some(by) = edge.pickup.claimed.remove(&ring) else {
        return; // fetched, or over
    };
    let Some(id) = edge.pickup.by_ring.remove(&ring) else {
        return;
    };
    warn!(ring, %by, "picked-up call never fetched over the trunk: it rings on");
    record(edge, now, id);
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
