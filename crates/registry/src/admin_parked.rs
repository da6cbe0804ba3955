//! Parked calls as the admin API shows them: one call, and the park events an applied entry
//! is, read a bounded piece at a time for a watch.

use orbit_state::{Event, Parked, Phase, RecallStage};
use tonic::Status;

use crate::admin_pb as pb;
use crate::store::StateMachineStore;
use crate::watch::WATCH_CHUNK;

pub(crate) fn call(p: &Parked) -> pb::ParkedCall {
    pb::ParkedCall {
        park_id: p.id,
        tenant: p.lot.tenant.clone(),
        lot: p.lot.park_ext.clone(),
        slot: p.slot,
        caller_uri: p.call.caller_uri.clone(),
        caller_display: p.call.caller_display.clone().unwrap_or_default(),
        parker: p.call.parker.clone(),
        edge: p.call.edge.clone(),
        parked_at_ms: p.parked_at,
        deadline_ms: p.deadline,
        phase: match p.phase {
            Phase::Waiting => "waiting",
            Phase::Recalling {
                stage: RecallStage::Parker,
                ..
            } => "recalling parker",
            Phase::Recalling {
                stage: RecallStage::Fallback,
                ..
            } => "recalling fallback",
            Phase::Recalling {
                stage: RecallStage::Sent,
                ..
            } => "sent",
        }
        .into(),
        sent_to: p.sent_to.clone().unwrap_or_default(),
    }
}

/// The park events an applied event is, at log `index`.
fn park_events(index: u64, ev: &Event) -> Vec<pb::ParkEvent> {
    let one = |kind: &str, p: &Parked, detail: String| pb::ParkEvent {
        index,
        kind: kind.into(),
        call: Some(call(p)),
        detail,
    };
    match ev {
        Event::Parked(p) => vec![one("parked", p, String::new())],
        Event::Claimed { parked, by } => vec![one("retrieved", parked, by.clone())],
        Event::PickedUp {
            parked: Some(p),
            by,
            ..
        } => vec![one("retrieved", p, by.clone())],
        Event::Expired(p) => vec![one("recalling", p, String::new())],
        Event::RecallStage(p) => vec![one("recall_stage", p, String::new())],
        Event::Sent(p) => vec![one("sent", p, p.sent_to.clone().unwrap_or_default())],
        Event::Ended { parked, reason } => vec![one("ended", parked, format!("{reason:?}"))],
        Event::Moved { parked, from } => vec![one("moved", parked, format!("from {from}"))],
        Event::Extended(p) => vec![one("extended", p, String::new())],
        Event::LeaseLapsed { edge, lost, .. } | Event::EdgeRestarted { edge, lost, .. } => lost
            .iter()
            .map(|p| one("lost", p, format!("edge {edge} gone")))
            .collect(),
        _ => vec![],
    }
}

/// The park events after `cursor`, a bounded piece at a time under the lock (which apply
/// needs too): (events, the new cursor, whether more is waiting). OUT_OF_RANGE when the watch
/// fell behind what is kept (or a snapshot replaced it), rather than skip events.
pub(crate) fn park_events_after(
    sm: &StateMachineStore,
    cursor: u64,
) -> Result<(Vec<pb::ParkEvent>, u64, bool), Status> {
    let events = sm.events.lock().unwrap();
    let floor = sm.complete_after.load(std::sync::atomic::Ordering::Relaxed);
    if floor > cursor {
        return Err(Status::out_of_range(format!(
            "this watch fell behind what the node keeps (events after {floor} only): list the parked calls and watch from the list's index"
        )));
    }
    let from = events.partition_point(|a| a.index <= cursor);
    let chunk: Vec<&crate::store::Applied> = events.range(from..).take(WATCH_CHUNK).collect();
    let more = from + chunk.len() < events.len();
    let items = chunk
        .iter()
        .flat_map(|a| a.done.iter().flat_map(|(_, e)| park_events(a.index, e)))
        .collect();
    let next = match chunk.last() {
        Some(a) => a.index,
        None => events.back().map_or(cursor, |a| a.index.max(cursor)),
    };
    Ok((items, next, more))
}
