//! Picking up a recall: a parked call ringing back to its parker rings the parker's extension
//! like any call, and the parker's colleagues may pick it up. Park tells pickup when a recall
//! starts ringing the parker and when it stops ([`crate::park::Parks::recall_news`]); pickup
//! records the ring with its park, and the log's `Pickup` of it takes the park out of its slot
//! in the same step, so that the parker answering, a retriever and a picker cannot all win.
//! The winner then has the call as a retriever would: here ([`crate::park::take_parked`]) or
//! fetched over the trunk with the park's claim.
//!
//! ```text
//! Expired ─▶ recall rings 1002 ─▶ Ring(1002, park 7) ─▶ *8 by 1003 ─▶ PickedUp(+ park 7)
//!                                                          └▶ take_parked / retrieve_remote
//! ```

use super::*;
use crate::park::AfterClaim;

/// Park's news of recalls, in order: record the rings of those that began ringing the parker,
/// end those of recalls that stopped.
pub(crate) fn on_recall_news(edge: &mut Picking, now: Instant) -> bool {
    if edge.park.recall_news.is_empty() {
        return false;
    }
    for (cid, ringing) in std::mem::take(&mut edge.park.recall_news) {
        if ringing {
            recall_ringing(edge, now, cid);
        } else {
            recall_over(edge, now, cid);
        }
    }
    true
}

fn recall_ringing(edge: &mut Picking, now: Instant, cid: u64) {
    let Some(ps) = edge.park.held.get(&cid) else {
        return;
    };
    if !edge.pickup_rules.pickable(&ps.parker) || edge.pickup.recalls.contains_key(&cid) {
        return;
    }
    let Some(p) = edge.orbit.parked(ps.id) else {
        return;
    };
    let ring = RingCall {
        caller_uri: p.call.caller_uri.clone(),
        caller_display: p.call.caller_display.clone(),
        edge: edge.cfg.site.clone(),
        call_id: p.call.call_id.clone(),
        local_tag: p.call.local_tag.clone(),
        remote_tag: p.call.remote_tag.clone(),
        park: Some(p.id),
    };
    let cmd = Command::Ring {
        tenant: edge.cfg.tenant.domain.clone(),
        ext: ps.parker.clone(),
        call: ring,
    };
    edge.pickup.recalls.insert(cid, None);
    edge.propose_then(now, cmd, PickThen::RecallRing(cid));
}

fn recall_over(edge: &mut Picking, now: Instant, cid: u64) {
    // A ring still being recorded is ended by its outcome, which finds the entry gone.
    if let Some(Some(ring)) = edge.pickup.recalls.remove(&cid) {
        edge.pickup.by_recall.remove(&ring);
        end_ring(edge, now, ring);
    }
}

/// The outcome of recording the ring of call `cid`'s recall.
pub(crate) fn recall_ring_outcome(edge: &mut Picking, now: Instant, cid: u64, outcome: Outcome) {
    let ring = match outcome {
        Ok(Event::Ringing(r)) => r.id,
        _ => {
            edge.pickup.recalls.remove(&cid);
            return;
        }
    };
    match edge.pickup.recalls.get_mut(&cid) {
        Some(slot @ None) => {
            *slot = Some(ring);
            edge.pickup.by_recall.insert(ring, cid);
        }
        Some(Some(_)) => {} // the watch brought it first
        None => end_ring(edge, now, ring),
    }
}

/// The watch showed the ring of a recall here: adopted if its outcome has not come yet; ended
/// if the recall stopped meanwhile.
pub(crate) fn on_recall_ring_shown(
    edge: &mut Picking,
    now: Instant,
    ringing: &orbit_state::Ringing,
    park: orbit_state::ParkId,
) {
    if edge.pickup.by_recall.contains_key(&ringing.id) {
        return;
    }
    let cid = edge.park.by_id.get(&park).copied();
    match cid.and_then(|c| edge.pickup.recalls.get_mut(&c).map(|r| (c, r))) {
        Some((c, slot @ None)) => {
            *slot = Some(ringing.id);
            edge.pickup.by_recall.insert(ringing.id, c);
        }
        Some(_) => {}
        None => end_ring(edge, now, ringing.id),
    }
}

/// A recall ringing here was picked up (the watch showed it): the park is claimed by the
/// picker, whose trunk INVITE claims it as a retriever's would (a picker here has it at once).
pub(crate) fn on_recall_picked(
    edge: &mut Picking,
    now: Instant,
    ringing: &orbit_state::Ringing,
    parked: &orbit_state::Parked,
    by: &str,
) {
    if let Some(cid) = edge.pickup.by_recall.remove(&ringing.id) {
        edge.pickup.recalls.remove(&cid);
    }
    crate::park::on_claimed(edge, now, parked, by);
}

/// The picker here won a recall: take the parked call here, or from the site holding it.
pub(crate) fn take_recall(edge: &mut Picking, now: Instant, p: Pick, parked: orbit_state::Parked) {
    let a = AfterClaim {
        key: p.key,
        flow: p.flow,
        msg: p.msg,
        retriever: p.picker,
        slot: parked.slot,
    };
    if parked.call.edge != edge.cfg.site {
        info!(site = %parked.call.edge, park = parked.id, "picking up a recall over the trunk");
        return crate::park::retrieve_remote(edge, now, a, parked);
    }
    match edge.park.by_id.get(&parked.id).copied() {
        Some(cid) => {
            if let Some(ring) = edge.pickup.recalls.remove(&cid).flatten() {
                edge.pickup.by_recall.remove(&ring);
            }
            info!(park = parked.id, slot = parked.slot, "recall picked up");
            crate::park::take_parked(edge, now, &a, cid)
        }
        None => crate::park::nobody_parked(edge, now, &a, 404),
    }
}
