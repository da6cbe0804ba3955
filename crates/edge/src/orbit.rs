//! The orbit state's way into the edge: the registry's answers and its watch stream come in
//! here; the edge then hands every outcome and applied event to the features that wait for it
//! (park, lamps) until nothing is left (`Edge::settle`, in `core.rs`). Proposals leave through
//! the port in `services/orbit_port.rs`, which also says what a command, an outcome and a feed
//! are.
//!
//! ```text
//! registry ─▶ on_orbit_feed ─▶ outcome_in / watch_in / resync ─▶ settle:
//!     applied events ─▶ lamps (NOTIFY), park (recall on Expired, hand-over on Claimed, lost calls)
//!     outcomes       ─▶ park (the continuation kept under the proposal's token)
//! ```

use std::time::Instant;

use orbit_state::{Millis, Orbit};
use tracing::info;

pub use crate::services::orbit_port::{Backend, OrbitError, OrbitFeed, Outcome, Proposal};

use crate::core::Edge;

impl Edge {
    /// Proposals for the registry, taken (the driver sends them).
    pub fn take_proposals(&mut self) -> Vec<Proposal> {
        std::mem::take(&mut self.port.outbox)
    }

    /// Something from the registry.
    pub fn on_orbit_feed(&mut self, now: Instant, feed: OrbitFeed) {
        match feed {
            OrbitFeed::Outcome {
                token,
                index,
                outcome,
            } => self.on_orbit_outcome(now, token, index, outcome),
            OrbitFeed::Applied { index, at, cmds } => self.on_orbit_watch(now, index, at, cmds),
            OrbitFeed::Resync { index, orbit } => self.on_orbit_resync(now, index, *orbit),
        }
    }

    /// The registry answered proposal `token`, committed at log `index` (0: not committed).
    pub fn on_orbit_outcome(&mut self, now: Instant, token: u64, index: u64, outcome: Outcome) {
        self.last_now = now;
        self.outcome_in(now, token, index, outcome);
        self.settle(now);
    }

    /// The registry applied `cmds` at log `index`, stamped `at`: apply them to the mirror and
    /// react to their events. Indexes at or below the last seen are repeats (a resumed stream)
    /// and ignored.
    pub fn on_orbit_watch(
        &mut self,
        now: Instant,
        index: u64,
        at: Millis,
        cmds: Vec<orbit_state::Command>,
    ) {
        self.last_now = now;
        if self.watch_in(index, at, cmds) {
            self.settle(now);
        }
    }

    /// The registry's whole state as of log `index` (a new or lagging watcher): replace the
    /// mirror and bring every lamp up to date.
    pub fn on_orbit_resync(&mut self, now: Instant, index: u64, orbit: Orbit) {
        self.last_now = now;
        info!(index, edge = %self.id, "orbit state resynchronised");
        self.orbit = orbit;
        let rules_changed = self.refresh_pickup_rules();
        self.port.watch_index = index;
        if rules_changed {
            crate::blf::rules_changed(&mut self.lamping(), now);
        }
        crate::blf::refresh_all(&mut self.lamping(), now);
        self.picking.resynced(now);
        crate::draining::on_resync(&mut self.picking, now);
        self.settle(now);
    }
}
