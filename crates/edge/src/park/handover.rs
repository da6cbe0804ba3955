//! Handing a call held here to the site that won it: the claimant's trunk INVITE
//! (`X-Orbit-Claim`, checked in [`crate::trunk`]) is given the call once this edge's replica
//! shows that claim, by that caller; a claim the replica does not show yet waits briefly for
//! the watch. A call claimed and never fetched goes back to its slot. A retrieve of a call
//! held elsewhere is the other end: [`retrieve_remote`].
//!
//! ```text
//! trunk INVITE 701, X-Orbit-Claim: 7 ─▶ replica shows Claimed(7) by the caller? ─▶ take_parked
//!                                      └─ not yet: 100, wait ≤ 2 s for the watch ─▶ 404 if never
//! Claimed(7) shown, no INVITE within 10 s ─▶ Park again (same slot if free) ─▶ adopt_repark
//! ```

use super::*;
use crate::trunk::Claim;

/// Trunk claims waiting for the replica to show their claim, at once.
const CLAIMS_WAITING: usize = 1024;
/// How long a trunk claim waits for the replica (the watch is a commit behind at most).
const CLAIM_WAIT: Duration = Duration::from_secs(2);
/// How long a call held here, claimed by another site, waits for that site's trunk INVITE
/// before it goes back to its slot (the claimant's edge is gone, cut off, or its retriever
/// cancelled while its INVITE was on the way). The INVITE normally comes a round trip after
/// the commit.
pub(crate) const FETCH_WAIT: Duration = Duration::from_secs(10);
/// How soon parking an unfetched call again is retried when the registry was out of reach.
const REPARK_RETRY: Duration = Duration::from_secs(2);

/// What the hand-over keeps: claims the replica has shown for calls held here, and trunk
/// claims waiting for the replica.
#[derive(Default)]
pub(crate) struct Handover {
    /// Park → who claimed it and what was parked, for calls held here whose claim the watch
    /// has shown and that have not been fetched yet.
    claimed: HashMap<ParkId, (String, Parked)>,
    waiting: HashMap<ParkId, TrunkClaim>,
}

/// A trunk INVITE from another site's edge (`site`) claiming park `park` for `caller`.
pub(crate) struct TrunkClaim {
    pub key: ServerKey,
    pub flow: Flow,
    pub msg: Message,
    pub caller: String,
    pub site: String,
    pub park: ParkId,
}

impl Handover {
    /// Whether park `park` of a call held here was claimed and waits for its claimant.
    pub(crate) fn is_claimed(&self, park: ParkId) -> bool {
        self.claimed.contains_key(&park)
    }

    /// A call held here was claimed (the watch showed it).
    /// A trunk claim of it still waiting for the replica, if any, for its caller to answer.
    pub(crate) fn forget(&mut self, park: ParkId) -> Option<TrunkClaim> {
        self.claimed.remove(&park);
        self.waiting.remove(&park)
    }
}

/// This edge won the claim of a call another site holds: call that site's edge for it, and
/// bridge the retriever to that leg (media through both relays).
pub(crate) fn retrieve_remote(edge: &mut Parking, now: Instant, a: AfterClaim, parked: Parked) {
    let site = parked.call.edge.clone();
    let slot = parked.slot.to_string();
    let Some(t) = crate::trunk::peer_target(edge, &site, &slot, Some(Claim::Park(parked.id)))
    else {
        warn!(%site, slot = parked.slot, "claimed a call held at a site with no trunk to it");
        let r = Response::to(&a.msg, 502).reason("No Trunk To Site");
        return edge.reply(now, &a.key, r);
    };
    info!(%site, slot = parked.slot, park = parked.id, "retrieving over the trunk");
    let nc = NewCall {
        caller: a.retriever,
        callee: slot,
        display: None,
        max_forwards: 70,
    };
    edge.start_call(now, &a.key, a.flow, a.msg, nc, vec![t]);
}

/// A claim of a call held here was committed (the watch shows it): remember who made it, and
/// hand the call over if that site's trunk INVITE is already waiting; if none comes within
/// [`FETCH_WAIT`], the call goes back to its slot ([`on_fetch_timeout`]).
pub(crate) fn on_claimed(edge: &mut Parking, now: Instant, parked: &Parked, by: &str) {
    let park = parked.id;
    if !edge.park.by_id.contains_key(&park) {
        return;
    }
    edge.handover
        .claimed
        .insert(park, (by.to_string(), parked.clone()));
    edge.timers
        .schedule(now + FETCH_WAIT, TimerKey::TrunkFetch(park));
    if let Some(c) = edge.handover.waiting.remove(&park) {
        on_claim(edge, now, c);
    }
}

/// A call held here was claimed by another site, and that site never came for it: park it
/// again, in its slot if that is still free (a new park with a fresh timer, which this edge
/// takes as its own: [`crate::park::adopt_repark`]), so that it is not left on music forever.
pub(crate) fn on_fetch_timeout(edge: &mut Parking, now: Instant, park: ParkId) {
    let Some((by, parked)) = edge.handover.claimed.remove(&park) else {
        return; // fetched, ended or lost meanwhile
    };
    if !edge.park.by_id.contains_key(&park) {
        return;
    }
    edge.handover.waiting.remove(&park);
    warn!(park, slot = parked.slot, %by, "claimed call never fetched over the trunk: parking it again");
    repark(edge, now, parked, true);
}

/// Park `parked`'s call again: in its own slot if `same_slot` and it is free, else in any.
fn repark(edge: &mut Parking, now: Instant, parked: Parked, same_slot: bool) {
    let free = same_slot
        && edge
            .orbit
            .in_slot(&parked.lot.tenant, parked.slot)
            .is_none();
    let cmd = orbit_state::Command::Park {
        lot: parked.lot.clone(),
        slot: free.then_some(parked.slot),
        call: parked.call.clone(),
    };
    edge.propose_then(now, cmd, ParkThen::Repark(parked));
}

/// The outcome of parking an unfetched call again. Its slot taken meanwhile (another call, or
/// another unfetched claim of the same slot put back first): any free slot. The registry out
/// of reach: again shortly. The lot full, or anything else: the call cannot be held for
/// anyone, and the caller is hung up rather than left on music that no slot shows.
pub(crate) fn repark_outcome(edge: &mut Parking, now: Instant, parked: Parked, outcome: Outcome) {
    use orbit_state::Rejection;
    let Some(&cid) = edge.park.by_id.get(&parked.id) else {
        return; // adopted by the new park, or ended meanwhile
    };
    match outcome {
        Ok(_) => {}
        Err(OrbitError::Rejected(Rejection::SlotTaken(_))) => repark(edge, now, parked, false),
        Err(OrbitError::Unavailable(e)) => {
            info!(park = parked.id, error = %e, "parking an unfetched call again: retrying");
            edge.handover
                .claimed
                .insert(parked.id, (String::new(), parked.clone()));
            edge.timers
                .schedule(now + REPARK_RETRY, TimerKey::TrunkFetch(parked.id));
        }
        Err(e) => {
            warn!(park = parked.id, slot = parked.slot, error = %e, "an unfetched call cannot be parked again: hanging up");
            hangup(edge, now, cid, "claimed, never fetched, not parkable");
        }
    }
}

/// The claimant cancelled its trunk INVITE while it waited for the replica: 487 to it; the
/// call stays here and goes back to its slot when the fetch wait ends.
pub(crate) fn cancel_waiting(edge: &mut Parking, now: Instant, invite: &ServerKey) -> bool {
    let Some(park) = edge
        .handover
        .waiting
        .iter()
        .find(|(_, w)| w.key == *invite)
        .map(|(p, _)| *p)
    else {
        return false;
    };
    let w = edge.handover.waiting.remove(&park).expect("found");
    edge.reply(now, &w.key, Response::to(&w.msg, 487));
    true
}

/// A trunk claim waited in vain for the replica to show its claim.
pub(crate) fn on_claim_timeout(edge: &mut Parking, now: Instant, park: ParkId) {
    if let Some(w) = edge.handover.waiting.remove(&park) {
        warn!(park, caller = %w.caller, "trunk claim not shown by the registry: refused");
        let r = Response::to(&w.msg, 404).reason("Claim Not Committed");
        edge.reply(now, &w.key, r);
    }
}

/// Hold a trunk claim until this edge's watch shows it ([`on_claimed`]), for [`CLAIM_WAIT`]
/// at most ([`on_claim_timeout`]).
fn wait_for_replica(edge: &mut Parking, now: Instant, c: TrunkClaim) {
    let w = &edge.handover.waiting;
    if w.len() >= CLAIMS_WAITING || w.contains_key(&c.park) {
        return edge.reply(
            now,
            &c.key,
            Response::to(&c.msg, 503).header("Retry-After", "1"),
        );
    }
    edge.reply(now, &c.key, Response::to(&c.msg, 100));
    edge.timers
        .schedule(now + CLAIM_WAIT, TimerKey::TrunkClaim(c.park));
    edge.handover.waiting.insert(c.park, c);
}

/// A trunk INVITE claiming park `park` of a call this edge holds: the claim was won in the
/// registry by the sending edge. Give it the call once this edge's replica shows that claim
/// by `caller` (waiting up to [`CLAIM_WAIT`] for the watch), unless this edge's lease lapsed
/// (the registry gave the call up, and the slot may be someone else's by now).
pub(crate) fn on_claim(edge: &mut Parking, now: Instant, c: TrunkClaim) {
    let park = c.park;
    let held = edge
        .park
        .by_id
        .get(&park)
        .copied()
        .filter(|cid| edge.park.held.contains_key(cid));
    let Some(cid) = held else {
        if edge.orbit.is_future(park) {
            // Not in this edge's replica yet (a park it made itself, put back after an
            // unfetched claim, whose entry the watch has not brought): wait for it as for a
            // claim not shown yet.
            return wait_for_replica(edge, now, c);
        }
        let r = Response::to(&c.msg, 404).reason("Park Not Held Here");
        return edge.reply(now, &c.key, r);
    };
    if !edge.lease_holds(now) {
        warn!(park, "claim refused: our lease is not known to hold");
        let r = Response::to(&c.msg, 410).reason("Park Lease Lapsed");
        return edge.reply(now, &c.key, r);
    }
    // A retrieve's claim names its retriever; a recall's pickup names its picker and site.
    let claimant = format!("{}/{}", c.site, c.caller);
    match edge.handover.claimed.get(&park).map(|(by, _)| by) {
        Some(by) if *by == c.caller || *by == claimant => {}
        Some(by) => {
            warn!(park, %by, caller = %c.caller, "trunk claim by someone else than the registry says");
            let r = Response::to(&c.msg, 403).reason("Not The Claimant");
            return edge.reply(now, &c.key, r);
        }
        // The registry answered the claimant before our watch brought the entry: wait.
        None => return wait_for_replica(edge, now, c),
    }
    let slot = edge.park.held.get(&cid).map(|p| p.slot).unwrap_or(0);
    let a = AfterClaim {
        key: c.key,
        flow: c.flow,
        msg: c.msg,
        retriever: c.caller,
        slot,
    };
    crate::park::take_parked(edge, now, &a, cid);
}
