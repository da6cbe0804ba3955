//! Recall: at the deadline the edge holding the call rings the parker (wherever it is
//! registered now), then the lot's fallback, then hangs the caller up. A call an operator sent
//! to an extension (`Command::Send`) rings there first, then goes on to the parker. The slot
//! stays claimable throughout; a recall answered claims its own park id, so a retriever who
//! came first wins.
//!
//! ```text
//! Sent ──▶ INVITE that extension ──(ring time)──┐
//! Expired ──▶ INVITE parker ◀────────────────────┘ ──(ring time)──▶ INVITE fallback ──(ring time)──▶ End(Abandoned), BYE caller
//!               └─ 2xx (at any stage) ──▶ Claim(park) ──▶ won: bridged   lost: ACK + BYE that phone
//!                                                      └─ outcome never came: the 2xx held
//!                                                         unACKed until the watch shows who
//!                                                         claimed it (≤ 3 s), else ACK + BYE
//! ```

use super::*;

/// How long a recall answer whose claim's outcome never came (the registry out of reach, a
/// leader lost) waits, unACKed, for the watch to show whether that claim was committed. The
/// phone resends its 200 meanwhile; a new leader commits in about a second.
const UNSURE_WAIT: Duration = Duration::from_secs(3);
/// How soon a recall stage that ran its time while an answer was being claimed looks again.
const CLAIMING_RECHECK: Duration = Duration::from_millis(500);

/// Ring the recall's `stage` target for call `cid` (an operator sent it, its deadline has
/// come, or the previous stage went unanswered).
pub(crate) fn start_recall(edge: &mut Parking, now: Instant, cid: u64, stage: RecallStage) {
    let Some(call) = edge.calls.get(&cid) else {
        return;
    };
    let Some(ps) = edge.park.held.get(&cid) else {
        return;
    };
    // Inside the call's span, and so in the park's trace.
    let span = orbit_trace::child_of(
        &call.span,
        || info_span!(parent: &call.span, "recall", stage = ?stage, park = ps.id),
    );
    let _g = span.enter();
    let Some(lot) = edge.orbit.lot(&ps.lot).cloned() else {
        return;
    };
    let target = match stage {
        RecallStage::Parker => ps.parker.clone(),
        RecallStage::Sent => match edge.orbit.parked(ps.id).and_then(|p| p.sent_to.clone()) {
            Some(to) => to,
            None => return next_stage(edge, now, cid, stage),
        },
        RecallStage::Fallback => match &lot.fallback {
            Some(f) => f.clone(),
            None => return abandon(edge, now, cid),
        },
    };
    // The target's phones here, else wherever it is registered now.
    let mut targets: Vec<call::Target> = edge
        .registrar
        .lookup(now, &target)
        .iter()
        .map(call::Target::phone)
        .collect();
    if targets.is_empty() {
        targets = crate::trunk::targets_for(edge, now, &target, &target);
    }
    if targets.is_empty() {
        info!(%target, ?stage, "recall target not registered");
        return next_stage(edge, now, cid, stage);
    }
    if edge.calls[&cid].departed_live() {
        let v = edge.park.held[&cid].parked.other();
        call::send_bye_departed(edge, now, cid, v);
    }
    let domain = edge.cfg.tenant.domain.clone();
    let call = edge.calls.get(&cid).expect("present");
    let ps = edge.park.held.get(&cid).expect("parked");
    let attempt = ps.recall.as_ref().map(|r| r.attempt + 1).unwrap_or(1);
    let v = ps.parked.other();
    let parked_user = call.dialog_ref(ps.parked).user.clone();
    let (slot, label, codec, pt, te) = (ps.slot, ps.label.clone(), ps.codec, ps.pt, ps.te);
    let caller_user = orbit_sip::Uri::parse(&ps.caller_uri)
        .ok()
        .and_then(|u| u.user().map(str::to_string))
        .unwrap_or_else(|| parked_user.clone());
    let tag = edge.ids.tag();
    let d = Dialog {
        call_id: edge.ids.call_id("orbit"),
        local_tag: tag.clone(),
        local_hdr: format!(
            "\"Recall {slot}: {}\" <sip:{caller_user}@{domain}>;tag={tag}",
            label.replace('"', "")
        ),
        remote_hdr: format!("<sip:{target}@{domain}>"),
        remote_target: String::new(),
        route_set: vec![],
        local_cseq: 1,
        remote_cseq: 0,
        flow: targets[0].flow,
        contact_user: caller_user.clone(),
        user: target.clone(),
    };
    edge.seat(cid, v, d);
    let call = &edge.calls[&cid];
    let mut body = vec![];
    if let Some(m) = call.media {
        m.vacate(&mut edge.media, v.leg());
        body = relay_offer(edge.now_ms(now), m.local(v.leg()), (codec, pt, te));
    }
    info!(%target, ?stage, slot, forks = targets.len(), "recall ringing");
    if stage == RecallStage::Parker {
        // The parker's colleagues may pick the recall up.
        edge.park.recall_news.push(RecallNews::Ringing(cid));
    }
    let keys: Vec<ClientKey> = targets.iter().map(|_| edge.new_branch()).collect();
    let d = edge.calls[&cid].dialog_ref(v);
    let sends: Vec<_> = targets
        .iter()
        .zip(keys)
        .map(|(t, branch)| {
            let bytes = call::invite_bytes(edge, d, t, &branch.branch, "70", Some(&body));
            (t.flow, branch, bytes)
        })
        .collect();
    let branches = sends
        .iter()
        .map(|(_, k, _)| Branch::new(k.clone()))
        .collect();
    edge.park.held.get_mut(&cid).expect("parked").recall = Some(Recall {
        claiming: None,
        unsure: None,
        claim_shown: false,
        attempt,
        stage,
        target,
        branches,
    });
    for (idx, (flow, branch, bytes)) in sends.into_iter().enumerate() {
        edge.send_request(
            now,
            flow,
            branch,
            true,
            bytes,
            Owner::Recall {
                call: cid,
                attempt,
                idx,
            },
        );
    }
    edge.timers.schedule(
        now + Duration::from_millis(lot.recall_ring_ms),
        TimerKey::Recall { call: cid, attempt },
    );
}

pub(crate) fn current_recall(edge: &mut Parking, cid: u64, attempt: u32) -> Option<&mut Recall> {
    edge.park
        .held
        .get_mut(&cid)?
        .recall
        .as_mut()
        .filter(|r| r.attempt == attempt)
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn recall_response(
    edge: &mut Parking,
    now: Instant,
    ckey: &ClientKey,
    cid: u64,
    attempt: u32,
    idx: usize,
    flow: Flow,
    msg: Message,
) {
    let code = msg.code();
    let Some(r) = current_recall(edge, cid, attempt) else {
        // The recall was given up (retrieved, timed out, caller gone): stop this phone.
        match code {
            101..=199 => call::send_cancel(edge, now, ckey, None),
            200..=299 => call::ack_and_bye(edge, now, flow, &msg),
            _ => {}
        }
        return;
    };
    match code {
        100 => {}
        101..=199 => {
            if r.branches[idx].provisional() {
                call::send_cancel(edge, now, ckey, None);
            }
        }
        200..=299 => recall_answered(edge, now, cid, idx, flow, msg),
        _ => recall_failed(edge, now, cid, attempt, idx),
    }
}

/// A recall phone answered: claim the call for it (a retriever may have come first).
pub(crate) struct AfterRecallClaim {
    cid: u64,
    idx: usize,
    flow: Flow,
    msg: Message,
}

pub(crate) fn recall_answered(
    edge: &mut Parking,
    now: Instant,
    cid: u64,
    idx: usize,
    flow: Flow,
    msg: Message,
) {
    let span = edge.calls[&cid].span.clone();
    let _g = span.enter();
    let ps = edge.park.held.get_mut(&cid).expect("parked");
    let r = ps.recall.as_mut().expect("recalling");
    match r.claiming {
        // A retransmission of the answer being claimed for.
        Some(i) if i == idx => return,
        // Another phone answered first: this one is not needed.
        Some(_) => return call::ack_and_bye(edge, now, flow, &msg),
        None => r.claiming = Some(idx),
    }
    let claim = Command::Claim {
        tenant: edge.b2bua.sv.cfg.tenant.domain.clone(),
        slot: ps.slot,
        park: Some(ps.id),
        by: r.target.clone(),
    };
    let after = AfterRecallClaim {
        cid,
        idx,
        flow,
        msg,
    };
    edge.propose_then(now, claim, ParkThen::RecallClaim(after));
}

/// The recall's claim: won, the answering phone takes the vacant side; lost, it is hung up.
pub(crate) fn recall_claim_outcome(
    edge: &mut Parking,
    now: Instant,
    a: AfterRecallClaim,
    outcome: Outcome,
) {
    let AfterRecallClaim {
        cid,
        idx,
        flow,
        msg,
    } = a;
    let recall = edge.park.held.get_mut(&cid).and_then(|p| p.recall.as_mut());
    let Some(r) = recall.filter(|r| r.claiming == Some(idx)) else {
        return call::ack_and_bye(edge, now, flow, &msg);
    };
    match outcome {
        Ok(Event::Claimed { .. }) => answer_taken(edge, now, cid, idx, flow, msg),
        // The watch showed the claim committed before its outcome was lost.
        Err(OrbitError::Unavailable(_)) if r.claim_shown => {
            info!(target = %r.target, "recall answer's claim shown committed before its outcome was lost: answered");
            answer_taken(edge, now, cid, idx, flow, msg)
        }
        Err(OrbitError::Unavailable(e)) => {
            // Committed or not, the watch will say ([`recall_claim_shown`]).
            info!(error = %e, target = %r.target, "recall answered, its claim's outcome unknown: waiting for the log");
            let attempt = r.attempt;
            r.unsure = Some(AfterRecallClaim {
                cid,
                idx,
                flow,
                msg,
            });
            let key = TimerKey::RecallUnsure { call: cid, attempt };
            edge.timers.schedule(now + UNSURE_WAIT, key);
        }
        _ => {
            r.claiming = None;
            call::ack_and_bye(edge, now, flow, &msg)
        }
    }
}

/// The watch shows a claim of park `park`, held here by call `cid`, while a recall answer is
/// being claimed: its own claim (true) is the answer's, taken now if its outcome was lost, or
/// when that outcome comes (the watch may be first: the second long run's 17 s late recalls);
/// another's (a retriever won) hangs up an answer held unsure.
pub(crate) fn recall_claim_shown(edge: &mut Parking, now: Instant, park: ParkId, by: &str) -> bool {
    let Some(&cid) = edge.park.by_id.get(&park) else {
        return false;
    };
    let Some(r) = edge.park.held.get_mut(&cid).and_then(|p| p.recall.as_mut()) else {
        return false;
    };
    if r.claiming.is_some() && r.unsure.is_none() && r.target == by {
        r.claim_shown = true;
        return true;
    }
    let Some(a) = r.unsure.take() else {
        return false;
    };
    if r.target == by {
        info!(park, %by, "recall answer's claim committed after all: answered");
        answer_taken(edge, now, a.cid, a.idx, a.flow, a.msg);
        return true;
    }
    r.claiming = None;
    call::ack_and_bye(edge, now, a.flow, &a.msg);
    false
}

/// The recall is over with its call: an answer held while its claim was unsure is hung up.
pub(crate) fn hang_up_unsure(edge: &mut Parking, now: Instant, r: &mut Recall) {
    if let Some(a) = r.unsure.take() {
        call::ack_and_bye(edge, now, a.flow, &a.msg);
    }
}

/// A recall answer's claim was not shown in time: its phone is hung up, the recall rings on,
/// and a claim the watch shows later puts the call back into its slot at once
/// ([`crate::park::on_claimed`]), as nobody will come for it.
pub(crate) fn on_unsure_timeout(edge: &mut Parking, now: Instant, cid: u64, attempt: u32) {
    let Some(r) = current_recall(edge, cid, attempt) else {
        return;
    };
    let Some(a) = r.unsure.take() else {
        return;
    };
    r.claiming = None;
    let target = r.target.clone();
    warn!(%target, "recall answer's claim not shown by the log: that phone is hung up");
    if let Some(ps) = edge.park.held.get_mut(&cid) {
        ps.claim_given_up = Some(target);
    }
    call::ack_and_bye(edge, now, a.flow, &a.msg);
}

/// Recall phone `idx` of call `cid` won the claim: it takes the vacant side, bridged to the
/// parked party.
fn answer_taken(edge: &mut Parking, now: Instant, cid: u64, idx: usize, flow: Flow, msg: Message) {
    let ps = edge.park.held.get(&cid).expect("parked");
    let (park_id, parked) = (ps.id, ps.parked);
    unhold(edge, park_id);
    let mut ps = edge.park.held.remove(&cid).expect("parked");
    let call = edge.b2bua.calls.get_mut(&cid).expect("present");
    let r = ps.recall.take().expect("recalling");
    let v = parked.other();
    call.dialog(v).establish(&msg, flow);
    call.fill(v);
    if is_sdp(&msg) {
        call.set_sdp(v, Some(msg.body.clone()));
        if let (Some(m), Ok(info)) = (call.media, sdp::media_info(&msg.body)) {
            m.set_remote(
                &mut edge.b2bua.sv.media,
                v.leg(),
                info.rtp,
                info.rtcp,
                flow.addr.ip(),
            );
        }
    }
    if let Some(m) = call.media {
        m.bridge(&mut edge.b2bua.sv.media, parked.leg());
    }
    call.confirm();
    info!(by = %r.target, stage = ?r.stage, slot = ps.slot, "recall answered");
    call::send_own_ack(edge, cid, v, 1);
    edge.park.recall_news.push(RecallNews::Stopped(cid));
    for (i, b) in r.branches.iter().enumerate() {
        if i != idx {
            cancel_branch(edge, now, b, Some(call::COMPLETED_ELSEWHERE));
        }
    }
}

pub(crate) fn cancel_branch(edge: &mut Parking, now: Instant, b: &Branch, reason: Option<&str>) {
    match b.state {
        // No provisional yet: a CANCEL now could overtake the INVITE; the stale-recall path
        // cancels it when its first 1xx arrives.
        BranchState::Calling | BranchState::Done => {}
        BranchState::Proceeding => call::send_cancel(edge, now, &b.key, reason),
    }
}

pub(crate) fn recall_failed(edge: &mut Parking, now: Instant, cid: u64, attempt: u32, idx: usize) {
    let Some(r) = current_recall(edge, cid, attempt) else {
        return;
    };
    r.branches[idx].state = BranchState::Done;
    if r.branches.iter().all(|b| b.state == BranchState::Done) {
        let stage = r.stage;
        next_stage(edge, now, cid, stage);
    }
}

pub(crate) fn on_recall_timeout(edge: &mut Parking, now: Instant, cid: u64, attempt: u32) {
    let Some(r) = current_recall(edge, cid, attempt) else {
        return;
    };
    if r.claiming.is_some() {
        // An answer is being claimed: the stage is not over until its outcome is known.
        let key = TimerKey::Recall { call: cid, attempt };
        return edge.timers.schedule(now + CLAIMING_RECHECK, key);
    }
    let stage = r.stage;
    info!(call = cid, ?stage, "recall unanswered");
    next_stage(edge, now, cid, stage);
}

/// The recall stage `stage` is over unanswered: ring the parker after a sent call, the
/// fallback after the parker, or give up.
pub(crate) fn next_stage(edge: &mut Parking, now: Instant, cid: u64, stage: RecallStage) {
    cancel_recall(edge, now, cid);
    let Some(ps) = edge.park.held.get(&cid) else {
        return;
    };
    let has_fallback = edge
        .orbit
        .lot(&ps.lot)
        .is_some_and(|l| l.fallback.is_some());
    let id = ps.id;
    if stage == RecallStage::Sent {
        let cmd = Command::RecallStage {
            park: id,
            stage: RecallStage::Parker,
        };
        edge.propose(now, cmd, Then::Nothing);
        start_recall(edge, now, cid, RecallStage::Parker);
    } else if stage == RecallStage::Parker && has_fallback {
        let cmd = Command::RecallStage {
            park: id,
            stage: RecallStage::Fallback,
        };
        edge.propose(now, cmd, Then::Nothing);
        start_recall(edge, now, cid, RecallStage::Fallback);
    } else {
        abandon(edge, now, cid);
    }
}

/// Nobody took the call back: hang up the parked caller.
pub(crate) fn abandon(edge: &mut Parking, now: Instant, cid: u64) {
    let Some(call) = edge.b2bua.calls.get(&cid) else {
        return;
    };
    let Some(ps) = edge.park.held.remove(&cid) else {
        return;
    };
    let span = call.span.clone();
    let _g = span.enter();
    warn!(slot = ps.slot, caller = %ps.caller_uri, parker = %ps.parker, "recall and fallback unanswered: hanging up the parked caller");
    edge.park.recall_news.push(RecallNews::Stopped(cid));
    unhold(edge, ps.id);
    let end = Command::End {
        park: ps.id,
        reason: EndReason::Abandoned,
    };
    edge.propose(now, end, Then::Nothing);
    hangup(edge, now, cid, "recall unanswered");
}

/// Stop ringing recall phones: the recall stage is over (timed out, or a new park replaces it),
/// the call is ending, or it was lost with the lease.
pub(crate) fn cancel_recall(edge: &mut Parking, now: Instant, cid: u64) {
    cancel_recall_with(edge, now, cid, None);
}

/// Stop ringing recall phones because someone else has the call (a retriever, a picker): their
/// CANCELs say so (RFC 3326), and the phones do not log a missed call.
pub(crate) fn cancel_recall_taken(edge: &mut Parking, now: Instant, cid: u64) {
    cancel_recall_with(edge, now, cid, Some(call::COMPLETED_ELSEWHERE));
}

fn cancel_recall_with(edge: &mut Parking, now: Instant, cid: u64, reason: Option<&str>) {
    let Some(r) = edge.park.held.get_mut(&cid).and_then(|p| p.recall.as_mut()) else {
        return;
    };
    // Keep the attempt number but mark it over, so late answers find no current recall.
    r.attempt = r.attempt.wrapping_add(1 << 31);
    let branches = std::mem::take(&mut r.branches);
    if let Some(a) = r.unsure.take() {
        call::ack_and_bye(edge, now, a.flow, &a.msg);
    }
    edge.park.recall_news.push(RecallNews::Stopped(cid));
    for b in &branches {
        cancel_branch(edge, now, b, reason);
    }
}
