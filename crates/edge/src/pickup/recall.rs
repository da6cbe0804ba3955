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
use crate::park::{AfterClaim, RecallNews};

/// Park's news of recalls, in order: record the rings of those that began ringing the parker,
/// end those of recalls that stopped.
pub(crate) fn on_recall_news(edge: &mut Picking, now: Instant) -> bool {
    if edge.park.recall_news.is_empty() {
        return false;
    }
    for news in std::mem::take(&mut edge.park.recall_news) {
        match news {
            RecallNews::Ringing(cid) => recall_ringing(edge, now, cid),
            RecallNews::Stopped(cid) => recall_over(edge, now, cid),
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
        edge: edge.id.clone(),
        call_id: p.call.call_id.clone(),
        local_tag: p.call.local_tag.clone(),
        remote_tag: p.call.remote_tag.clone(),
        park: Some(p.id),
        called: None,
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
            // Not recorded, unless the watch brought it already (the answer lost on the way).
            if edge.pickup.recalls.get(&cid) == Some(&None) {
                edge.pickup.recalls.remove(&cid);
            }
            return;
        }
    };
    match edge.pickup.recalls.get_mut(&cid) {
        Some(slot @ None) => {
            *slot = Some(ring);
            edge.pickup.by_recall.insert(ring, cid);
        }
        Some(Some(known)) if *known == ring => {} // the watch brought it first
        _ => end_ring(edge, now, ring),
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
        // Another record for a recall already recorded, or for one that stopped.
        _ => end_ring(edge, now, ringing.id),
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
    // The recall stops at once (its timers with it): the call is the picker's now, and a
    // stage timing out meanwhile must not ring the fallback or hang the caller up.
    if let Some(&cid) = edge.park.by_id.get(&parked.id) {
        crate::park::cancel_recall_taken(edge, now, cid);
    }
    crate::park::on_claimed(edge, now, parked, by);
}

/// The picker here won a recall: take the parked call here, or from the site holding it. A
/// picker who cannot take the parked call's codec is refused, and the call goes back to its
/// slot (a retriever is refused before claiming; a group pickup does not know what it gets).
pub(crate) fn take_recall(edge: &mut Picking, now: Instant, p: Pick, parked: orbit_state::Parked) {
    let a = AfterClaim {
        key: p.key,
        flow: p.flow,
        msg: p.msg,
        retriever: p.picker,
        slot: parked.slot,
    };
    let codec = parked
        .call
        .codec
        .as_deref()
        .and_then(orbit_media::Codec::from_name);
    let offer = crate::call::is_sdp(&a.msg).then_some(&a.msg.body[..]);
    if let (Some(codec), Some(offer)) = (codec, offer) {
        if crate::park::offer_pt(offer, codec).is_none() {
            crate::park::wrong_codec(edge, now, &a, codec);
            info!(
                park = parked.id,
                slot = parked.slot,
                "recall picked up by a phone without its codec: parked again"
            );
            let cmd = Command::Park {
                lot: parked.lot.clone(),
                slot: Some(parked.slot),
                call: parked.call.clone(),
            };
            edge.propose(now, cmd, Then::Nothing);
            return;
        }
    }
    if parked.call.edge != edge.id {
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
