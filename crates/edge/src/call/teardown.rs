//! Ending calls: BYE to both parties when answered, 487 and CANCEL when ringing, the media
//! released at once; calls whose media stopped are ended here too (after
//! the limit the edge gives, longer for a parked call). The features that keep entries by
//! call hear of it through [`Calls::ending`] and [`Calls::ended`].

use super::*;

/// End the dialog of a party that has left the call (the transferor after a park); its answer
/// does not matter to the call.
pub(crate) fn send_bye_departed(edge: &mut Calls, now: Instant, id: u64, to: Side) {
    let Some(call) = edge.calls.get_mut(&id) else {
        return;
    };
    call.departed_live = false;
    edge.sv
        .send_in_dialog(now, call.dialog(to), "BYE", &[], None, Owner::Nobody);
}

pub(crate) fn send_bye(edge: &mut Calls, now: Instant, id: u64, to: Side) {
    let call = edge.calls.get_mut(&id).expect("present");
    if (to == Side::B && !call.b_answered()) || call.vacant == Some(to) {
        return;
    }
    call.pending_byes += 1;
    let owner = Owner::Bye { call: id };
    edge.sv
        .send_in_dialog(now, call.dialog(to), "BYE", &[], None, owner);
}

pub(crate) fn bye_done(edge: &mut Calls, id: u64) {
    if let Some(c) = edge.calls.get_mut(&id) {
        c.pending_byes = c.pending_byes.saturating_sub(1);
        if c.pending_byes == 0 && c.state == CallState::Ending {
            end_call(edge, id);
        }
    }
}

/// End a call that cannot go on (its relay ports could not be bound): the caller, if still
/// waiting for an answer, gets `code` rather than the 487 that says it cancelled.
pub(crate) fn fail(edge: &mut Calls, now: Instant, id: u64, code: u16, why: &'static str) {
    let Some(call) = edge.calls.get(&id) else {
        return;
    };
    if call.state == CallState::Ringing {
        let (key, req, tag) = (
            call.a_stx.clone(),
            call.a_invite.clone(),
            call.a.local_tag.clone(),
        );
        edge.reply(now, &key, Response::to(&req, code).tag(&tag));
    }
    hangup(edge, now, id, why);
}

/// End a call from our side: BYE both parties when answered, 487 and CANCEL when ringing.
pub(crate) fn hangup(edge: &mut Calls, now: Instant, id: u64, why: &'static str) {
    let Some(call) = edge.calls.get_mut(&id) else {
        return;
    };
    call.end_why.get_or_insert(why);
    let _g = call.span.clone().entered();
    let state = call.state;
    call.state = CallState::Ending;
    if let Some(r) = call.media.take() {
        edge.sv.media.close(now, r);
    }
    call.ok_retx = [None, None];
    match state {
        CallState::Ringing => {
            info!(why, "ending unanswered call");
            if call.ring_watched {
                // Nobody may pick it up from now on, though its forks are still to end.
                edge.unrung.push(id);
            }
            let key = call.a_stx.clone();
            let req = call.a_invite.clone();
            let tag = call.a.local_tag.clone();
            let n = call.branches.len();
            edge.pending_invites.remove(&key);
            if edge
                .stx
                .get(&key)
                .map(|e| e.tx.state == State::Proceeding)
                .unwrap_or(false)
            {
                edge.reply(now, &key, Response::to(&req, 487).tag(&tag));
            }
            for i in 0..n {
                cancel_branch(edge, now, id, i);
            }
            let call = edge.calls.get(&id).expect("present");
            if call.branches.iter().all(|b| b.state == BranchState::Done) {
                end_call(edge, id);
            }
        }
        CallState::Answered | CallState::Confirmed => {
            info!(why, "ending call");
            edge.ending.push(id);
            send_bye(edge, now, id, Side::A);
            send_bye(edge, now, id, Side::B);
            if edge.calls.get(&id).map(|c| c.pending_byes) == Some(0) {
                end_call(edge, id);
            }
        }
        CallState::Ending => {}
    }
}

pub(crate) fn end_call(edge: &mut Calls, id: u64) {
    let Some(call) = edge.calls.remove(&id) else {
        return;
    };
    if let Some(o) = &call.owner {
        edge.release_owner(o);
    }
    if let Some(r) = call.media {
        edge.sv.media.close(edge.sv.last_now, r);
    }
    let _g = call.span.enter();
    edge.ended.push((id, call.end_why));
    if call.ring_watched {
        edge.unrung.push(id);
    }
    edge.dialogs
        .remove(&(call.a.call_id.clone(), call.a.local_tag.clone()));
    edge.dialogs
        .remove(&(call.b.call_id.clone(), call.b.local_tag.clone()));
    edge.pending_invites.remove(&call.a_stx);
    debug!("call ended");
}

/// The relay has heard nothing from either party of call `id` for `idle`: end the call once
/// that passes `limit` (longer for a parked call: its phone may send nothing while it
/// listens to the music).
pub(crate) fn on_silence(
    edge: &mut Calls,
    now: Instant,
    id: u64,
    idle: std::time::Duration,
    limit: std::time::Duration,
) {
    let Some(c) = edge.calls.get(&id) else {
        return;
    };
    if c.state != CallState::Confirmed {
        return;
    }
    if idle > limit {
        hangup(edge, now, id, "no media");
    }
}
