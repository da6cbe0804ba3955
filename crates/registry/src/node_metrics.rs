//! A registry node's metrics (issue 12): what its Raft metrics say, once a second and when the
//! leader changes (from the health loop), each series labelled with the node's id; and what the leader's batcher sees
//! of every entry (commit latency, refusals, lease lapses).

use metrics::{counter, gauge, histogram};
use orbit_state::{Event, Rejection};

use crate::NodeId;

/// Publish the node's view: its term, whether it leads, its applied and last log indexes.
pub(crate) fn publish(id: NodeId, leader: Option<NodeId>, term: u64, applied: u64, last: u64) {
    let n = || id.to_string();
    gauge!("orbit_registry_term", "node" => n()).set(term as f64);
    gauge!("orbit_registry_is_leader", "node" => n()).set(f64::from(u8::from(leader == Some(id))));
    gauge!("orbit_registry_leader_known", "node" => n()).set(f64::from(u8::from(leader.is_some())));
    gauge!("orbit_registry_applied_index", "node" => n()).set(applied as f64);
    gauge!("orbit_registry_last_log_index", "node" => n()).set(last as f64);
}

/// The counters that count rare things, at 0 from the start (a series that appears only
/// when it first counts is one an alert cannot watch).
pub(crate) fn register(id: NodeId) {
    counter!("orbit_registry_leader_changes_total", "node" => id.to_string()).increment(0);
    counter!("orbit_registry_lease_lapses_total").increment(0);
    counter!("orbit_registry_commands_total").increment(0);
    counter!("orbit_registry_members_removed_total").increment(0);
    for kind in KINDS {
        counter!("orbit_registry_refused_total", "kind" => kind).increment(0);
    }
}

const KINDS: [&str; 6] = [
    "not_yours",
    "identity_in_use",
    "slot",
    "gone",
    "out_of_range",
    "other",
];

/// The leader removed a member that had not answered for the wait (`pruning.rs`).
pub(crate) fn member_removed() {
    counter!("orbit_registry_members_removed_total").increment(1);
}

/// An entry of `commands` committed and applied after `seconds`, with these outcomes.
pub(crate) fn entry(seconds: f64, outcomes: &[Result<Event, Rejection>]) {
    histogram!("orbit_registry_commit_seconds").record(seconds);
    counter!("orbit_registry_commands_total").increment(outcomes.len() as u64);
    for o in outcomes {
        match o {
            Err(r) => counter!("orbit_registry_refused_total", "kind" => refusal(r)).increment(1),
            Ok(Event::LeaseLapsed {
                released: false, ..
            }) => counter!("orbit_registry_lease_lapses_total").increment(1),
            Ok(_) => {}
        }
    }
}

/// A refusal's kind, for a label (a few fixed values, never the refusal's contents).
fn refusal(r: &Rejection) -> &'static str {
    match r {
        Rejection::NotYours { .. } => "not_yours",
        Rejection::IdentityInUse { .. } => "identity_in_use",
        Rejection::SlotTaken(_) | Rejection::LotFull => "slot",
        Rejection::Gone(_) | Rejection::Empty(_) | Rejection::NotRinging => "gone",
        Rejection::OutOfRange { .. } => "out_of_range",
        _ => "other",
    }
}
