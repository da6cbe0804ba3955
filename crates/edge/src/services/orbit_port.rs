//! The edge's side of the orbit state: commands go out as proposals, outcomes and applied
//! events come back.
//!
//! Every decision (is 701 free? who won the claim?) is an outcome of a command ordered by
//! whoever owns the state: the edge itself on one site ([`Backend::Local`]), the Raft registry
//! across sites ([`Backend::Registry`]). The flows that need an outcome are two-phase: they
//! propose with a [`Then`] saying who continues (the park feature keeps its continuations
//! under the proposal's token), and continue when the outcome comes back, on one site at once
//! (when the edge settles, after the input that proposed), across sites a commit later. A
//! continuation re-checks its call: it may have ended meanwhile.
//!
//! This file is the port: proposals out, outcomes and applied events queued for the edge to
//! hand to its features (`crate::orbit`), the lease and the location reports.
//!
//! ```text
//! park flow ──propose(cmd, then)──▶ Local: Orbit::apply now ─┐
//!                                  Registry: Proposal out ────┼─▶ on_orbit_outcome(token, outcome)
//!                                                             └─▶ then(outcome) in the call's span
//! registry watch ─▶ on_orbit_watch(index, at, cmd) ─▶ mirror.apply ─▶ on_orbit_event (lamps, recall)
//! ```
//!
//! Applied events drive what every site does whatever site caused them: lamps change, the edge
//! holding a call starts its recall on `Expired`, an edge whose lease lapsed drops its calls.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use orbit_state::{Command, Event, Millis, Orbit, Rejection};
use tracing::{debug, info, info_span, warn, Span};

use super::{Services, TimerKey};

/// How soon a lease renewal that failed (the registry out of reach) is tried again.
pub(crate) const LEASE_RETRY: Duration = Duration::from_secs(1);

/// Who orders this edge's orbit commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// This edge, on one site: commands are applied at once to its own state.
    Local,
    /// The registry: commands leave as [`Proposal`]s; the state here is a mirror fed by the
    /// registry's watch stream.
    Registry,
}

/// A command for the registry, to be answered with [`crate::Edge::on_orbit_outcome`].
#[derive(Debug, Clone)]
pub struct Proposal {
    pub token: u64,
    pub cmd: Command,
    /// Its `orbit.command` span: the link sends it from inside, so that the registry's
    /// spans join the feature's trace.
    pub span: Span,
}

/// Why a command has no event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrbitError {
    #[error("refused: {0}")]
    Rejected(#[from] Rejection),
    /// The registry could not be reached or did not answer in time: the command may or may not
    /// have been committed (its event, if any, still comes through the watch stream).
    #[error("registry unavailable: {0}")]
    Unavailable(String),
}

pub type Outcome = Result<Event, OrbitError>;

/// What comes back from the registry, for [`crate::Edge::on_orbit_feed`].
// Each item is moved once through a channel; boxing outcomes would allocate for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum OrbitFeed {
    /// The answer to proposal `token`, committed at log `index` (0: not committed, or not
    /// known to be).
    Outcome {
        token: u64,
        index: u64,
        outcome: Outcome,
    },
    /// Log entry `index` applied `cmds`, in order, at the leader's time `at` (the watch
    /// stream).
    Applied {
        index: u64,
        at: Millis,
        cmds: Vec<Command>,
    },
    /// The registry's whole state as of `index`.
    Resync { index: u64, orbit: Box<Orbit> },
}

/// Who continues once a command's outcome is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Then {
    /// Nothing waits for it (recall progress, hang-ups, registrations).
    Nothing,
    /// A feature that keeps how it continues under the proposal's token.
    Feature(Feature),
    /// A lease renewal sent at this instant: the lease holds until then + its ttl.
    Lease(Instant),
    /// The lease's release at the end of a drain.
    Release,
}

/// The features that continue after their proposals' outcomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Feature {
    Park,
    Pickup,
}

/// The edge's orbit bookkeeping.
pub(crate) struct OrbitPort {
    pub backend: Backend,
    next_token: u64,
    /// Proposals not yet taken by the driver.
    pub outbox: Vec<Proposal>,
    /// Continuations waiting for their outcome, with the command's kind and when it was
    /// proposed (for the features' latency).
    waiting: HashMap<u64, (Then, Span, &'static str, Instant)>,
    /// Outcomes ready to continue with (one site: right after the input that proposed), with
    /// the log index each was committed at.
    ready: VecDeque<(u64, u64, Then, Span, Outcome)>,
    /// The log index of the outcome the features are continuing with now (0: one site, or
    /// not committed): what a claim's trunk INVITE tells the holding edge to wait for.
    pub committed_at: u64,
    /// Events applied but not yet reacted to.
    pub events: VecDeque<Event>,
    /// The last registry log index seen on the watch stream (resume point).
    pub watch_index: u64,
    /// The lease (registry only): how long, and until when it is known to hold.
    pub lease_ttl: Duration,
    pub lease_until: Option<Instant>,
    /// When the lease is renewed next: a third of its time after the last try, sooner after a
    /// try that failed ([`LEASE_RETRY`]); a lease timer that fires before it is stale.
    pub lease_due: Option<Instant>,
    /// Until when each extension was last reported registered here.
    located: HashMap<String, Millis>,
    /// Until when each extension was last reported watched by a lamp here.
    watching: HashMap<String, Millis>,
    /// This process, as its lease names it: the registry drops the calls of an earlier one.
    pub incarnation: u64,
    /// The process this one took over from (its incarnation, kept on disk; 0: none), named
    /// until the first lease is granted.
    pub replaces: u64,
}

impl OrbitPort {
    pub(crate) fn new(backend: Backend, lease_ttl: Duration, incarnation: u64) -> OrbitPort {
        OrbitPort {
            backend,
            next_token: 0,
            outbox: vec![],
            waiting: HashMap::new(),
            ready: VecDeque::new(),
            committed_at: 0,
            events: VecDeque::new(),
            watch_index: 0,
            lease_ttl,
            lease_until: None,
            lease_due: None,
            located: HashMap::new(),
            watching: HashMap::new(),
            incarnation,
            replaces: 0,
        }
    }

    /// Proposals in flight (tests, metrics).
    pub(crate) fn in_flight(&self) -> usize {
        self.waiting.len()
    }
}

fn short(ev: &Event) -> String {
    match ev {
        Event::LotSet(k) => format!("lot {} set", k.park_ext),
        Event::LotDeleted(k) => format!("lot {} deleted", k.park_ext),
        Event::PickupGroupsSet { tenant } => format!("pickup groups of {tenant} set"),
        Event::NodeAdminSet { node } => format!("admin address of registry node {node} set"),
        Event::LeaseGranted { edge, until } => format!("lease of {edge} until {until}"),
        Event::Located { ext, edge, .. } => format!("{ext} registered at {edge}"),
        Event::Unlocated { ext, edge, .. } => format!("{ext} no longer at {edge}"),
        Event::Watched { ext, edge, .. } => format!("{ext} watched from {edge}"),
        Event::Unwatched { ext, edge, .. } => format!("{ext} no longer watched from {edge}"),
        Event::LeaseLapsed {
            edge,
            lost,
            released: false,
            ..
        } => format!("lease of {edge} lapsed, {} calls lost", lost.len()),
        Event::LeaseLapsed {
            edge,
            lost,
            released: true,
            ..
        } => format!("{edge} left, {} calls lost", lost.len()),
        Event::Draining { edge } => format!("{edge} draining"),
        Event::EdgeRestarted { edge, lost, .. } => {
            format!("{edge} restarted, {} calls lost", lost.len())
        }
        Event::Parked(p) => format!("park {} in {} until {}", p.id, p.slot, p.deadline),
        Event::Claimed { parked, by } => {
            format!("park {} in {} claimed by {by}", parked.id, parked.slot)
        }
        Event::Expired(p) => format!("park {} in {} expired", p.id, p.slot),
        Event::Extended(p) => format!("park {} in {} extended to {}", p.id, p.slot, p.deadline),
        Event::Moved { parked, from } => format!(
            "park {} in {} moved from {from} to {}",
            parked.id, parked.slot, parked.call.edge
        ),
        Event::RecallStage(p) => format!("park {} in {} recall {:?}", p.id, p.slot, p.phase),
        Event::Sent(p) => format!("park {} in {} sent to {:?}", p.id, p.slot, p.sent_to),
        Event::Ended { parked, reason } => {
            format!("park {} in {} ended: {reason:?}", parked.id, parked.slot)
        }
        Event::Ringing(r) => format!("ring {} of {} at {}", r.id, r.ext, r.call.edge),
        Event::RingAnswered(r) => format!("ring {} of {} answered", r.id, r.ext),
        Event::RingEnded { ringing } => format!("ring {} of {} over", ringing.id, ringing.ext),
        Event::PickedUp { ringing, by, .. } => {
            format!("ring {} of {} picked up by {by}", ringing.id, ringing.ext)
        }
    }
}

impl Services {
    pub(crate) fn now_ms(&self, now: Instant) -> Millis {
        self.clock.1 + now.saturating_duration_since(self.clock.0).as_millis() as u64
    }

    fn instant_at(&self, ms: Millis) -> Instant {
        self.clock.0 + Duration::from_millis(ms.saturating_sub(self.clock.1))
    }

    /// Have `cmd` ordered, in an `orbit.command` span inside the current one (the call's);
    /// `then` says who continues once its outcome is known. The proposal's token.
    pub(crate) fn propose(&mut self, now: Instant, cmd: Command, then: Then) -> u64 {
        let span = info_span!("orbit.command", kind = cmd.kind(), edge = %self.id);
        self.port.next_token += 1;
        let token = self.port.next_token;
        match self.port.backend {
            Backend::Local => {
                let r = {
                    let _g = span.enter();
                    let r = self.orbit.apply(self.now_ms(now), &cmd);
                    match &r {
                        Ok(ev) => {
                            debug!(event = %short(ev), "applied");
                            self.port.events.push_back(ev.clone());
                        }
                        Err(e) => debug!(refused = %e, "refused"),
                    }
                    r
                };
                self.port
                    .ready
                    .push_back((token, 0, then, span, r.map_err(Into::into)));
            }
            Backend::Registry => {
                span.in_scope(|| debug!(token, "proposed"));
                let cmd_kind = cmd.kind();
                self.port.outbox.push(Proposal {
                    token,
                    cmd,
                    span: span.clone(),
                });
                self.port.waiting.insert(token, (then, span, cmd_kind, now));
            }
        }
        token
    }

    /// The registry answered proposal `token` at `now`, committed at log `index`: its
    /// continuation is ready.
    pub(crate) fn outcome_in(&mut self, now: Instant, token: u64, index: u64, outcome: Outcome) {
        if let Some((then, span, kind, asked)) = self.port.waiting.remove(&token) {
            // How long the features wait for the registry (what a phone waits on top of its
            // own signalling): parks, claims (retrieves, recall answers), pickups.
            if matches!(kind, "park" | "claim" | "pickup") {
                self.stats
                    .latency(kind, now.saturating_duration_since(asked).as_secs_f64());
            }
            span.in_scope(|| match &outcome {
                Ok(ev) => debug!(event = %short(ev), "committed"),
                Err(e) => debug!(error = %e, "not committed"),
            });
            self.port
                .ready
                .push_back((token, index, then, span, outcome));
        }
    }

    /// The next outcome a feature continues with: `(feature, token, span, outcome)`, its log
    /// index in [`OrbitPort::committed_at`]. The outcomes of commands nobody waits for, and
    /// of lease renewals, are taken care of here.
    pub(crate) fn next_outcome(&mut self) -> Option<(Feature, u64, Span, Outcome)> {
        while let Some((token, index, then, span, outcome)) = self.port.ready.pop_front() {
            self.port.committed_at = index;
            match then {
                Then::Feature(f) => return Some((f, token, span, outcome)),
                Then::Nothing => {
                    if let Err(e) = outcome {
                        span.in_scope(|| info!(error = %e, "orbit command without effect"));
                    }
                }
                Then::Release => {
                    // Refused (the lease had lapsed) or not known to be committed (the
                    // lease then runs out by itself): the process leaves either way.
                    span.in_scope(|| match &outcome {
                        Ok(_) => info!(edge = %self.id, "drained: lease released"),
                        Err(e) => info!(edge = %self.id, error = %e, "drained: lease not released, it runs out by itself"),
                    });
                    if let Some(d) = &mut self.draining {
                        d.leaving = super::Leaving::Gone;
                    }
                }
                Then::Lease(sent) => match outcome {
                    Ok(_) => {
                        if self.port.lease_until.is_none() {
                            info!(edge = %self.id, "registry lease held: taking calls");
                        }
                        self.port.lease_until = Some(sent + self.port.lease_ttl);
                        self.port.replaces = 0;
                    }
                    Err(e) => span.in_scope(|| {
                        if matches!(
                            e,
                            OrbitError::Rejected(Rejection::IdentityInUse { .. })
                        ) {
                            warn!(error = %e, edge = %self.id, "another process holds this edge's identity: is it configured twice? waiting for its lease to end (set state_dir to take over at once after a crash)");
                        } else {
                            // Tried again soon: two tries a third of a lease apart both lost
                            // to a registry outage (a quorum lost, then the leader paused)
                            // let the lease lapse and the calls parked here go with it.
                            warn!(error = %e, edge = %self.id, retry_ms = LEASE_RETRY.as_millis() as u64, "lease not renewed");
                            let at = self.last_now + LEASE_RETRY;
                            if self.port.lease_due.is_none_or(|d| at < d) {
                                self.port.lease_due = Some(at);
                                self.timers.schedule(at, TimerKey::Lease);
                            }
                        }
                    }),
                },
            }
        }
        None
    }

    /// The registry applied `cmds` at log `index`, stamped `at`: apply them to the mirror,
    /// queueing their events. False for a repeat (an index at or below the last seen: a
    /// resumed stream).
    pub(crate) fn watch_in(&mut self, index: u64, at: Millis, cmds: Vec<Command>) -> bool {
        if index <= self.port.watch_index {
            return false;
        }
        self.port.watch_index = index;
        for cmd in cmds {
            if let Ok(ev) = self.orbit.apply(at, &cmd) {
                if self.stale_drain(&ev) {
                    continue;
                }
                self.port.events.push_back(ev);
            }
        }
        true
    }

    /// Whether `ev` drains this edge's name while another process held it: a predecessor's
    /// drain, met again when a process restarted under the same name reads the log from its
    /// start. Judged as the command is applied (the mirror as of that log entry), for a batch
    /// may hold both the old drain and this process's own lease.
    fn stale_drain(&self, ev: &Event) -> bool {
        matches!(ev, Event::Draining { edge } if *edge == self.id
            && self.orbit.incarnation_of(edge) != Some(self.port.incarnation))
    }

    /// When a trunk claim committed at log `at` (0: not said), waiting since `since` for this
    /// edge's replica to show it, is looked at again; `None`: its wait is over, refuse it. It
    /// waits `first` at least (a timer an earlier claim of the same call left may come
    /// sooner), and on, `first` at a time, while the replica is short of that entry (its
    /// watch stalled or lags, as when this site was cut off from the registry), for less than
    /// a lease, past which the registry has given up this edge's calls anyway.
    pub(crate) fn replica_wait(
        &self,
        at: u64,
        since: Instant,
        now: Instant,
        first: Duration,
    ) -> Option<Instant> {
        if now < since + first {
            return Some(since + first);
        }
        (at > self.port.watch_index && now < since + self.port.lease_ttl).then(|| now + first)
    }

    /// One site: keep a timer at the earliest deadline (across sites the leader fires them).
    pub(crate) fn schedule_deadline(&mut self) {
        if self.port.backend != Backend::Local {
            return;
        }
        let Some((ms, _)) = self.orbit.next_deadline() else {
            return;
        };
        let at = self.instant_at(ms);
        if self.deadline_at.is_none_or(|t| at < t) {
            self.deadline_at = Some(at);
            self.timers.schedule(at, TimerKey::Deadline);
        }
    }

    /// The deadline timer (one site): expire what is due; the recall starts from the event.
    pub(crate) fn on_deadline(&mut self, now: Instant) {
        self.deadline_at = None;
        for park in self.orbit.due(self.now_ms(now)) {
            self.propose(now, Command::Expire { park }, Then::Nothing);
        }
    }

    /// Renew this edge's lease (registry only), saying what the edge holds (`calls` up or
    /// ringing); the next renewal at a third of its life.
    pub(crate) fn renew_lease(&mut self, now: Instant, calls: usize) {
        let ttl = self.port.lease_ttl;
        self.port.lease_due = Some(now + ttl / 3);
        self.timers.schedule(now + ttl / 3, TimerKey::Lease);
        let sip = self.local.addr(orbit_sip::transport::Proto::Udp);
        let cmd = Command::Lease {
            edge: self.id.clone(),
            ttl_ms: ttl.as_millis() as u64,
            incarnation: self.port.incarnation,
            replaces: self.port.replaces,
            // Where the other edges reach this one (not a wildcard address: nobody could).
            sip: (!sip.ip().is_unspecified()).then_some(sip),
            load: orbit_state::EdgeLoad {
                calls: calls.try_into().unwrap_or(u32::MAX),
                relay_ports: self.media.in_use().try_into().unwrap_or(u32::MAX),
            },
        };
        self.propose(now, cmd, Then::Lease(now));
    }

    /// `user` as a parking slot number of this tenant. An extension of this edge's config is
    /// never a slot, whatever lot the registry has (an admin's lot may overlap extensions that
    /// the registry does not know of): its calls stay its own.
    pub(crate) fn slot_number(&self, user: &str) -> Option<u32> {
        if user.is_empty() || !user.bytes().all(|b| b.is_ascii_digit()) || user.starts_with('0') {
            return None;
        }
        if self.extension(user).is_some() {
            return None;
        }
        let n: u32 = user.parse().ok()?;
        self.orbit.lot_of(&self.cfg.tenant.domain, n).map(|_| n)
    }

    /// The lot whose park extension is `user`, unless `user` is one of this edge's extensions
    /// (as for [`Services::slot_number`]).
    pub(crate) fn lot_named(&self, user: &str) -> Option<&orbit_state::LotConfig> {
        if self.extension(user).is_some() {
            return None;
        }
        self.orbit.lot_by_ext(&self.cfg.tenant.domain, user)
    }

    /// Whether this edge may act on claims of the calls it holds: always on one site; across
    /// sites only while its lease is known to hold (a lapsed edge's calls may be in other
    /// hands now).
    pub(crate) fn lease_holds(&self, now: Instant) -> bool {
        match self.port.backend {
            Backend::Local => true,
            Backend::Registry => self.port.lease_until.is_some_and(|t| now < t),
        }
    }
    /// Tell the registry where `ext` is registered (phones here until `until`, or none any
    /// more), so other sites can ring it. A refresh is reported only once the last report has
    /// less than half of the new lifetime left: about two reports per registration period.
    pub(crate) fn report_location(&mut self, now: Instant, ext: &str, until: Option<Instant>) {
        if self.port.backend != Backend::Registry {
            return;
        }
        let (tenant, edge) = (self.cfg.tenant.domain.clone(), self.id.clone());
        let now_ms = self.now_ms(now);
        let cmd = match until {
            Some(t) => {
                let until = self.now_ms(t);
                let last = self.port.located.get(ext).copied();
                if last.is_some_and(|l| l >= now_ms + (until.saturating_sub(now_ms)) / 2) {
                    return;
                }
                self.port.located.insert(ext.to_string(), until);
                Command::Locate {
                    tenant,
                    ext: ext.to_string(),
                    edge,
                    until,
                }
            }
            None => {
                if self.port.located.remove(ext).is_none() {
                    return;
                }
                Command::Unlocate {
                    tenant,
                    ext: ext.to_string(),
                    edge,
                }
            }
        };
        self.propose(now, cmd, Then::Nothing);
    }

    /// Tell every edge that a lamp here watches `ext` until `until` (none any more: `None`), so
    /// that they record its calls from the first ring. Reported as registrations are (about two
    /// reports per subscription period); on one site too, whose own state records the calls.
    pub(crate) fn report_watch(&mut self, now: Instant, ext: &str, until: Option<Instant>) {
        let (tenant, edge) = (self.cfg.tenant.domain.clone(), self.id.clone());
        let now_ms = self.now_ms(now);
        let cmd = match until {
            Some(t) => {
                let until = self.now_ms(t);
                let last = self.port.watching.get(ext).copied();
                if last.is_some_and(|l| l >= now_ms + (until.saturating_sub(now_ms)) / 2) {
                    return;
                }
                self.port.watching.insert(ext.to_string(), until);
                Command::Watch {
                    tenant,
                    ext: ext.to_string(),
                    edge,
                    until,
                }
            }
            None => {
                if self.port.watching.remove(ext).is_none() {
                    return;
                }
                Command::Unwatch {
                    tenant,
                    ext: ext.to_string(),
                    edge,
                }
            }
        };
        self.propose(now, cmd, Then::Nothing);
    }

    /// The registry dropped this edge's watches (its lease lapsed, or it restarted): every
    /// lamp here is to be reported again.
    pub(crate) fn watches_lost(&mut self) {
        self.port.watching.clear();
    }
}
