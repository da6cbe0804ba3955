//! Draining this edge (a rolling upgrade, a scale-down, `orbitctl edge drain`, SIGTERM): it
//! takes nothing new, lets what it holds finish, and leaves the registry in one command.
//!
//! ```text
//! SIGTERM, or Drain{edge} in the log ─▶ draining: out-of-dialog INVITE, REGISTER, SUBSCRIBE
//!     and OPTIONS answered 503 + Retry-After (a load balancer's OPTIONS probe takes the edge
//!     out); dialogs, retrieves and pickups of what it holds (trunk INVITEs with a claim) go on
//! each parked call ───────────────────▶ moved to another edge of the site (or another
//!     site's), which re-INVITEs its party; slot and deadline kept (`park/moving.rs`)
//! every call over ─────────────────────▶ Release{edge, incarnation}: the lease ends now
//! the drain deadline ──────────────────▶ BYE to what is left, then Release
//! ```
//!
//! The drain is ordered through the log (`Drain`), so that every edge and operator sees it.
//! What a drain is at any moment ([`Drain`]) is the services'; this file moves it on.

use std::time::{Duration, Instant};

use orbit_sip::message::Message;
use orbit_sip::Method;
use orbit_state::{Command, Event};
use tracing::info;

use crate::pickup::Picking;
use crate::services::orbit_port::{Backend, Then};
use crate::services::{Drain, Leaving, TimerKey};

/// What a client told "come back later" is told: long enough for a load balancer to have
/// taken this edge out, short enough that a phone retries soon (at another edge).
pub(crate) const RETRY_AFTER: &str = "10";

/// Whether out-of-dialog `msg` is refused while draining: everything that would start
/// something new here. A trunk INVITE with a claim is another edge fetching a call this one
/// holds (a retrieve, a pickup): that is how held calls leave, so it goes on.
pub(crate) fn refused(msg: &Message) -> bool {
    match msg.method() {
        Method::Register | Method::Subscribe | Method::Options => true,
        Method::Invite => crate::trunk::claim_of(msg).is_none(),
        _ => false,
    }
}

/// Begin draining: nothing new from now on, and what is left ended at `now + grace`. A second
/// call changes nothing (the first deadline stands).
pub(crate) fn begin(edge: &mut Picking, now: Instant, grace: Duration) {
    if edge.draining.is_some() {
        return;
    }
    let until = now + grace;
    info!(
        edge = %edge.id,
        calls = edge.calls.len(),
        grace_secs = grace.as_secs(),
        "draining: taking no new calls"
    );
    edge.draining = Some(Drain {
        until,
        leaving: Leaving::Waiting,
    });
    edge.timers.schedule(until, TimerKey::DrainDeadline);
    // Every edge and operator is to see it; on SIGTERM this edge says so itself (an
    // operator's drain is in the log already, and saying it twice changes nothing).
    if edge.port.backend == Backend::Registry && !edge.orbit.is_draining(&edge.id) {
        let id = edge.id.clone();
        edge.propose(now, Command::Drain { edge: id }, Then::Nothing);
    }
    crate::park::move_held(edge, now);
}

/// The drain deadline: end whatever is left (BYE, or 487 to what still rings).
pub(crate) fn on_deadline(edge: &mut Picking, now: Instant) {
    // Calls offered here and not moved yet are other edges' parties: let go, not hung up.
    crate::park::drop_probation(edge);
    let ids: Vec<u64> = edge.calls.keys().copied().collect();
    info!(edge = %edge.id, calls = ids.len(), "drain deadline: ending the calls left");
    edge.shutting_down = true;
    for id in ids {
        crate::call::hangup(edge, now, id, "drained");
        edge.after_calls(now);
    }
}

/// An operator drained this edge through the registry.
pub(crate) fn on_event(edge: &mut Picking, now: Instant, ev: &Event) {
    if let Event::Draining { edge: e } = ev {
        if *e == edge.id {
            let grace = Duration::from_secs(edge.cfg.drain_secs);
            begin(edge, now, grace);
        }
    }
}

/// The registry's whole state came in (a watcher that lagged may have missed the `Drain`):
/// drain if it says this process is draining.
pub(crate) fn on_resync(edge: &mut Picking, now: Instant) {
    let ours = edge.orbit.incarnation_of(&edge.id) == Some(edge.port.incarnation);
    if ours && edge.orbit.is_draining(&edge.id) {
        let grace = Duration::from_secs(edge.cfg.drain_secs);
        begin(edge, now, grace);
    }
}

/// After every input: once nothing is left, leave the registry (one command, so that its
/// slots and lamps free at once rather than when the lease runs out).
pub(crate) fn progress(edge: &mut Picking, now: Instant) {
    let Some(d) = edge.draining else {
        return;
    };
    if d.leaving != Leaving::Waiting {
        return;
    }
    // Parked calls go to another edge (one parked since the drain began too).
    crate::park::move_held(edge, now);
    if !edge.calls.is_empty() {
        return;
    }
    let leaving = match edge.port.backend {
        // No registry to tell.
        Backend::Local => Leaving::Gone,
        Backend::Registry => {
            let cmd = Command::Release {
                edge: edge.id.clone(),
                incarnation: edge.port.incarnation,
            };
            edge.propose(now, cmd, Then::Release);
            Leaving::Releasing
        }
    };
    edge.draining = Some(Drain { leaving, ..d });
}
