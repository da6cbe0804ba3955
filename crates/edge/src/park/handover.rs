//! Handing a call held here to the site that won it: the claimant's trunk INVITE
//! (`X-Orbit-Claim`, checked in [`crate::trunk`]) is given the call once this edge's replica
//! shows that claim, by that caller; a claim the replica does not show yet waits for the
//! watch: 2 s, and on while the replica is short of the log index the claim names (this site
//! was cut off from the registry and its watch stalled), up to a lease's length. A call
//! claimed and never fetched goes back to its slot, at once if its claimant gives it back
//! (`give_back.rs`). A retrieve of a call held elsewhere is the other end:
//! [`retrieve_remote`].
//!
//! ```text
//! trunk INVITE 701, X-Orbit-Claim: 7, -Index: 1204 ─▶ replica shows Claimed(7) by that site
//!                                                    for the caller? ─▶ take_parked
//!                         └─ not yet: 100, wait ≥ 2 s, and while the replica is short of 1204
//!                            (≤ a lease) ─▶ 404 if never
//! Claimed(7) shown, no INVITE within 10 s, or given back ─▶ Park again (same slot if free)
//!                                                         ─▶ adopt_repark
//! ```

use super::*;
use crate::trunk::Claim;

/// Trunk claims waiting for the replica to show their claim, at once.
const CLAIMS_WAITING: usize = 1024;
/// ... of them from one site: a site (authenticated, but perhaps naming log indexes far
/// ahead to hold its places for a lease each) cannot take the other sites' places.
pub(crate) const CLAIMS_WAITING_PER_SITE: usize = CLAIMS_WAITING / 4;
/// How long a trunk claim waits for the replica at least (a watch that is not cut off is a
/// commit behind at most), and how often it looks again while the replica is short of it.
const CLAIM_WAIT: Duration = Duration::from_secs(2);
/// How long a call held here, claimed by another site, waits for that site's trunk INVITE
/// before it goes back to its slot (the claimant's edge is gone, cut off, or its retriever
/// cancelled while its INVITE was on the way). The INVITE normally comes a round trip after
/// the commit.
pub(crate) const FETCH_WAIT: Duration = Duration::from_secs(10);
/// How soon parking an unfetched call again is retried when the registry was out of reach.
const REPARK_RETRY: Duration = Duration::from_secs(2);

/// What the hand-over keeps: claims the replica has shown for calls held here, trunk claims
/// waiting for the replica, and give-backs that came before their claim showed.
#[derive(Default)]
pub(crate) struct Handover {
    /// Park → who claimed it and what was parked, for calls held here whose claim the watch
    /// has shown and that have not been fetched yet.
    claimed: HashMap<ParkId, (String, Parked)>,
    waiting: HashMap<ParkId, TrunkClaim>,
    /// Give-backs that came before the watch showed their claim: from which site, for which
    /// user, and when, for the claim to be put back as soon as it is shown, if it is theirs.
    pub(crate) given_back: HashMap<ParkId, (String, String, Instant)>,
}

/// A trunk INVITE from another site's edge (`site`) claiming park `park` for `caller`.
pub(crate) struct TrunkClaim {
    pub key: ServerKey,
    pub flow: Flow,
    pub msg: Message,
    pub caller: String,
    pub site: String,
    pub park: ParkId,
    /// The log index the claim was committed at, as the claimant says (0: not said).
    pub at: u64,
    /// When the INVITE came.
    pub since: Instant,
}

impl Handover {
    /// Who claimed park `park` of a call held here, if the watch has shown it and the call
    /// waits for its claimant.
    pub(crate) fn claimed_by(&self, park: ParkId) -> Option<&str> {
        self.claimed.get(&park).map(|(by, _)| by.as_str())
    }

    /// Whether park `park` of a call held here was claimed and waits for its claimant.
    pub(crate) fn is_claimed(&self, park: ParkId) -> bool {
        self.claimed.contains_key(&park)
    }

    /// A call held here was claimed (the watch showed it).
    /// A trunk claim of it still waiting for the replica, if any, for its caller to answer.
    pub(crate) fn forget(&mut self, park: ParkId) -> Option<TrunkClaim> {
        self.claimed.remove(&park);
        self.given_back.remove(&park);
        self.waiting.remove(&park)
    }
}

/// This edge won the claim of a call another site holds: call that site's edge for it (its
/// INVITE names the claim and the log index it was committed at), and bridge the retriever to
/// that leg (media through both relays).
pub(crate) fn retrieve_remote(edge: &mut Parking, now: Instant, a: AfterClaim, parked: Parked) {
    let site = parked.call.edge.clone();
    let slot = parked.slot.to_string();
    let claim = Claim::Park(parked.id, edge.port.committed_at);
    let Some(t) = crate::trunk::peer_target(edge, &site, &slot, Some(claim)) else {
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
    if !edge.park.by_id.contains_key(&park) && being_parked(edge, parked).is_none() {
        return;
    }
    edge.handover
        .claimed
        .insert(park, (by.to_string(), parked.clone()));
    edge.timers
        .schedule(now + FETCH_WAIT, TimerKey::TrunkFetch(park));
    if let Some((site, user, since)) = edge.handover.given_back.remove(&park) {
        if claimed_by(by, &site, &user) && now < since + edge.port.lease_ttl {
            info!(park, %by, "claimed call given back before the claim was shown: parking it again");
            return put_back(edge, now, park);
        }
    }
    let recall_given_up = edge.park.by_id.get(&park).and_then(|cid| {
        let ps = edge.park.held.get(cid)?;
        ps.claim_given_up.as_deref()
    });
    if recall_given_up == Some(by) {
        info!(park, %by, "a recall answer's claim hung up as unknown was committed: parking the call again");
        return put_back(edge, now, park);
    }
    if let Some(c) = edge.handover.waiting.remove(&park) {
        on_claim(edge, now, c);
    }
}

/// The call this edge is parking as `parked`, whose answer has not come: the watch, or a
/// claim's own answer, may bring a park and a claim of it in the same entry before the answer
/// to the park's proposal does (the simulation found the call then left on music in no slot).
pub(crate) fn being_parked(edge: &Parking, parked: &Parked) -> Option<u64> {
    let key = (parked.call.call_id.clone(), parked.call.local_tag.clone());
    edge.dialogs
        .get(&key)
        .copied()
        .filter(|cid| edge.park.ordering.contains(cid))
}

/// A call held here was claimed by another site, and that site never came for it: park it
/// again, in its slot if that is still free (a new park with a fresh timer, which this edge
/// takes as its own: [`crate::park::adopt_repark`]), so that it is not left on music forever.
pub(crate) fn on_fetch_timeout(edge: &mut Parking, now: Instant, park: ParkId) {
    if let Some((by, parked)) = edge.handover.claimed.get(&park) {
        warn!(park, slot = parked.slot, %by, "claimed call never fetched over the trunk: parking it again");
        put_back(edge, now, park);
    }
}

/// Put the call of park `park`, claimed and not fetched, back: parked again, in its own slot
/// if that is still free.
pub(crate) fn put_back(edge: &mut Parking, now: Instant, park: ParkId) {
    let Some((_, parked)) = edge.handover.claimed.remove(&park) else {
        return; // fetched, ended or lost meanwhile
    };
    if !edge.park.by_id.contains_key(&park) {
        return;
    }
    if let Some(w) = edge.handover.waiting.remove(&park) {
        let r = Response::to(&w.msg, 404).reason("Park Not Held Here");
        edge.reply(now, &w.key, r);
    }
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

/// This edge's park `park` is held here now (its answer came after the watch had shown it): a
/// trunk claim of it that came meanwhile goes on.
pub(crate) fn now_held(edge: &mut Parking, now: Instant, park: ParkId) {
    if let Some(c) = edge.handover.waiting.remove(&park) {
        on_claim(edge, now, c);
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

/// A trunk claim's wait ended: on, if the replica is still short of the claim's entry (for
/// a lease's length at most), else refused.
pub(crate) fn on_claim_timeout(edge: &mut Parking, now: Instant, park: ParkId) {
    let Some(w) = edge.handover.waiting.get(&park) else {
        return;
    };
    if let Some(again) = edge.replica_wait(w.at, w.since, now, CLAIM_WAIT) {
        return edge.timers.schedule(again, TimerKey::TrunkClaim(park));
    }
    let w = edge.handover.waiting.remove(&park).expect("found");
    warn!(park, caller = %w.caller, at = w.at, replica = edge.port.watch_index, "trunk claim not shown by the registry: refused");
    let r = Response::to(&w.msg, 404).reason("Claim Not Committed");
    edge.reply(now, &w.key, r);
}

/// Hold a trunk claim until this edge's watch shows it ([`on_claimed`]), for [`CLAIM_WAIT`],
/// and on while the replica is short of the claim's entry ([`on_claim_timeout`]).
fn wait_for_replica(edge: &mut Parking, now: Instant, c: TrunkClaim) {
    let w = &edge.handover.waiting;
    let from_site = w.values().filter(|x| x.site == c.site).count();
    if w.len() >= CLAIMS_WAITING || from_site >= CLAIMS_WAITING_PER_SITE || w.contains_key(&c.park)
    {
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

/// Whether a claim the log shows made by `by` is the one site `site` asserts for `user`: a
/// claim names `<site>/<user>` (a retrieve's, a recall pickup's), or, from an edge of before
/// that, the bare user (any site may then fetch it in that user's name, as before).
pub(crate) fn claimed_by(by: &str, site: &str, user: &str) -> bool {
    match by.rsplit_once('/') {
        Some((s, u)) => s == site && u == user,
        None => by == user,
    }
}

/// A trunk INVITE claiming park `park` of a call this edge holds: the claim was won in the
/// registry by the sending edge. Give it the call once this edge's replica shows that claim
/// by that site for `caller` (waiting for the watch: [`wait_for_replica`]), unless this
/// edge's lease lapsed
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
        // Not in this edge's replica yet (a park it made itself, put back after an unfetched
        // claim, whose entry the watch has not brought), or shown claimed before the answer
        // to this edge's park came: wait for it as for a claim not shown yet.
        if edge.orbit.is_future(park) || edge.handover.is_claimed(park) {
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
    match edge.handover.claimed.get(&park).map(|(by, _)| by) {
        Some(by) if claimed_by(by, &c.site, &c.caller) => {}
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
