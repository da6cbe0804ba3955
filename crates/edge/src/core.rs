//! The edge's sans-I/O core: messages, time and committed orbit events in; messages to send,
//! media commands, orbit proposals and timers out.
//!
//! ```text
//! edge.on_message(now, flow, bytes);     // a datagram or a framed stream message (router.rs)
//! edge.on_timeout(now);                  // when now >= edge.next_timeout()
//! edge.on_orbit_feed(now, feed);         // the registry answered, or applied an entry (orbit.rs)
//! for t in edge.drain() { send t.bytes over t.flow }
//! for p in edge.take_proposals() { hand p to the registry }
//! ```
//!
//! The edge is built in layers, each owning its tables and reaching only those below it, to
//! which it derefs: `Services` (transactions, timers, identifiers, outputs, the orbit port),
//! the calls' `Calls`, park's `Parking`, and this [`Edge`] at the top with the lamps, the
//! trunk's replay cache and the rate limiter. A layer tells the ones above what they must hear
//! by handing it up (a `Delivery` for a client transaction's owner, a timer key, a call that
//! ended, an orbit outcome or event); this file hands each to its feature (`router.rs` and
//! `orbit.rs` are the edge's ways in). Nothing here reads a clock or draws randomness that was not handed in: `now`
//! comes with every input, the wall clock and the identifier generator with [`Start`].

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use orbit_sip::transport::{Flow, Proto};

use crate::blf::{Lamping, Lamps};
use crate::call::Calls;
use crate::config::EdgeConfig;
use crate::media::{MediaCmd, MediaEvent};
use crate::park::Parking;
use crate::pickup::Picking;
use crate::ratelimit::RateLimiter;
use crate::services::orbit_port::{Backend, Feature, Then};
use crate::services::transactions::{Delivery, Owner, SWEEP_EVERY};
use crate::services::{Services, Side, TimerKey};
use crate::trunk::Replays;

pub use crate::services::{Start, Stats, Transmit};

/// Orbit events an edge keeps for [`Edge::take_orbit_events`].
pub const ORBIT_EVENTS_KEPT: usize = 4096;

pub struct Edge {
    pub(crate) picking: Picking,
    /// Lamp (BLF) subscriptions.
    pub(crate) lamps: Lamps,
    /// Trunk signatures seen (see [`crate::trunk`]).
    pub(crate) replays: Replays,
    pub(crate) rate: RateLimiter,
    /// The latest events the orbit state produced, for whoever takes them (tests, later the
    /// API); bounded, since the daemon itself never takes them.
    pub(crate) orbit_events: VecDeque<orbit_state::Event>,
    /// When the server transactions were last swept for requests never answered.
    last_sweep: Instant,
}

impl std::ops::Deref for Edge {
    type Target = Picking;
    fn deref(&self) -> &Picking {
        &self.picking
    }
}

impl std::ops::DerefMut for Edge {
    fn deref_mut(&mut self) -> &mut Picking {
        &mut self.picking
    }
}

impl Edge {
    pub fn new(cfg: Arc<EdgeConfig>, local: HashMap<Proto, SocketAddr>, start: Start) -> Edge {
        let now = start.now;
        let mut sv = Services::new(cfg.clone(), local, start);
        sv.timers
            .schedule(now + Duration::from_secs(1), TimerKey::Housekeeping);
        let mut music = HashMap::new();
        let mut default_lot = None;
        let wall = sv.now_ms(now);
        // Validated at start (EdgeConfig::validate); a lot refused here is logged and skipped.
        for lot in cfg.lot_configs().unwrap_or_default() {
            if let Err(e) = sv
                .orbit
                .apply(wall, &orbit_state::Command::SetLot(lot.clone()))
            {
                tracing::error!(lot = %lot.park_ext, error = %e, "parking lot refused");
                continue;
            }
            music.insert(lot.park_ext.clone(), crate::park::builtin_music());
            default_lot.get_or_insert(lot.key());
        }
        if let Err(e) = sv.orbit.apply(wall, &cfg.tenant_seed()) {
            tracing::error!(error = %e, "pickup groups refused");
        }
        sv.refresh_pickup_rules();
        Edge {
            picking: Picking::new(Parking::new(Calls::new(sv), music, default_lot)),
            lamps: Lamps::default(),
            replays: Replays::default(),
            rate: RateLimiter::new(cfg.limits.requests_per_sec, cfg.limits.burst),
            orbit_events: VecDeque::new(),
            last_sweep: now,
        }
    }

    /// The services, and the lamps over them.
    pub(crate) fn lamping(&mut self) -> Lamping<'_> {
        Lamping {
            sv: &mut self.picking.parking.b2bua.sv,
            blf: &mut self.lamps,
        }
    }

    /// This edge process's incarnation: what its lease names it by (kept on disk by the
    /// daemon so that its successor can say it [replaces](Edge::replacing) it).
    pub fn incarnation(&self) -> u64 {
        self.port.incarnation
    }

    /// This process succeeds the one of incarnation `previous` (0: none known), which crashed:
    /// its first lease says so, and the registry lets it take the identity over at once.
    /// Before [`Edge::with_registry`], which asks for the first lease.
    pub fn replacing(mut self, previous: u64) -> Edge {
        self.port.replaces = previous;
        self
    }

    /// Order orbit commands through the registry instead of locally: the state here becomes a
    /// mirror of the registry's (fed by [`Edge::on_orbit_watch`]), the configured lots are
    /// seeded, and the edge holds a lease of `lease_ttl`, renewed at a third of it.
    pub fn with_registry(mut self, now: Instant, lease_ttl: Duration) -> Edge {
        self.port.backend = Backend::Registry;
        self.port.lease_ttl = lease_ttl;
        // Where the registry has none of these lots yet; one it has (changed through the admin
        // API, say) stays as it is.
        for lot in self.cfg.lot_configs().unwrap_or_default() {
            self.propose(now, orbit_state::Command::SeedLot(lot), Then::Nothing);
        }
        // The extensions, so that the registry can check an operator's groups against them,
        // and the groups, unless an operator has changed them there.
        let seed = self.cfg.tenant_seed();
        self.propose(now, seed, Then::Nothing);
        self.renew_lease(now, 0);
        self
    }

    /// Orbit proposals waiting for the registry's answer.
    pub fn proposals_in_flight(&self) -> usize {
        self.port.in_flight()
    }

    /// Use `clip` as the music on hold of lot `park_ext` (from a configured WAV file).
    pub fn set_music(&mut self, park_ext: &str, clip: Arc<orbit_media::Clip>) {
        self.park.music.insert(park_ext.to_string(), clip);
    }

    /// Orbit events since the last take (parked, claimed, expired, ...; the latest
    /// [`ORBIT_EVENTS_KEPT`] at most).
    pub fn take_orbit_events(&mut self) -> Vec<orbit_state::Event> {
        std::mem::take(&mut self.orbit_events).into()
    }

    /// Something the media relay saw: a digit pressed, a silent call, ports it could not open.
    pub fn on_media_event(&mut self, now: Instant, ev: MediaEvent) {
        self.last_now = now;
        match ev {
            MediaEvent::Digit { call, leg, digit } => {
                let side = match leg {
                    crate::media::Leg::A => Side::A,
                    crate::media::Leg::B => Side::B,
                };
                crate::park::on_digit(self, now, call, side, digit);
            }
            MediaEvent::Silent { call, idle } => {
                let limit = self.picking.parking.silence_limit(call);
                crate::call::on_silence(self, now, call, idle, limit)
            }
            MediaEvent::Failed { call, error } => {
                let b2bua = &mut self.parking.b2bua;
                if let Some(r) = b2bua.calls.get_mut(&call).and_then(|c| c.media.take()) {
                    tracing::warn!(call, %error, "relay ports could not be opened");
                    b2bua.sv.media.failed(r);
                    crate::call::fail(self, now, call, 503, "no media ports");
                }
            }
        }
        self.settle(now);
    }

    /// Media commands for the relay, in order.
    pub fn take_media(&mut self) -> Vec<MediaCmd> {
        self.media.take()
    }

    /// Lamp (BLF) subscriptions alive.
    pub fn lamp_subscriptions(&self) -> usize {
        self.lamps.len()
    }

    /// The orbit state as this edge sees it.
    pub fn orbit(&self) -> &orbit_state::Orbit {
        &self.orbit
    }

    /// Messages to send, in order.
    pub fn drain(&mut self) -> std::vec::Drain<'_, Transmit> {
        self.picking.parking.b2bua.sv.out.drain(..)
    }

    pub fn next_timeout(&self) -> Option<Instant> {
        self.timers.next_deadline()
    }

    pub fn active_calls(&self) -> usize {
        self.calls.len()
    }

    pub fn registrations(&self) -> usize {
        self.registrar.count()
    }

    /// Counters (for logs and tests).
    pub fn stats(&self) -> &Stats {
        &self.picking.parking.b2bua.sv.stats
    }

    // ---------------------------------------------------------------- timers

    pub fn on_timeout(&mut self, now: Instant) {
        self.last_now = now;
        while let Some(k) = self.timers.pop_due(now) {
            match k {
                TimerKey::Server(key) => self.server_timer(now, key),
                TimerKey::Client(key) => {
                    if let Some(d) = self.client_timer(now, key) {
                        self.deliver(now, d);
                    }
                }
                TimerKey::Call(id) => crate::call::on_timer(self, now, id),
                TimerKey::Deadline => self.on_deadline(now),
                // A timer the retry of a failed renewal made stale is dropped.
                TimerKey::Lease if self.port.lease_due.is_some_and(|d| now < d) => {}
                TimerKey::Lease => {
                    let calls = self.calls.len();
                    self.renew_lease(now, calls)
                }
                TimerKey::DrainDeadline => crate::draining::on_deadline(&mut self.picking, now),
                TimerKey::Probation(park) => crate::park::on_probation_timer(self, now, park),
                TimerKey::MovedAway(park) => crate::park::on_moved_away_timer(self, park),
                TimerKey::Reinvite { park, attempt } => {
                    crate::park::on_reinvite_timer(self, now, park, attempt)
                }
                TimerKey::Recall { call, attempt } => {
                    crate::park::on_recall_timeout(self, now, call, attempt)
                }
                TimerKey::RecallUnsure { call, attempt } => {
                    crate::park::on_unsure_timeout(self, now, call, attempt)
                }
                TimerKey::AppHangup(id) => crate::park::on_app_hangup(self, now, id),
                TimerKey::Prompt { call, side, bye } => {
                    crate::park::on_prompt_done(self, now, call, side, bye)
                }
                TimerKey::Housekeeping => self.housekeeping(now),
                TimerKey::TrunkClaim(park) => crate::park::on_claim_timeout(self, now, park),
                TimerKey::TrunkFetch(park) => crate::park::on_fetch_timeout(self, now, park),
                TimerKey::RingRecord(call) => crate::pickup::on_record_timer(self, now, call),
                TimerKey::PickupWait(ring) => crate::pickup::on_pick_wait_timeout(self, now, ring),
                TimerKey::PickupFetch(ring) => crate::pickup::on_fetch_timeout(self, now, ring),
                TimerKey::AnswerWait(call) => crate::pickup::on_answer_wait(self, now, call),
            }
            // Timers due together fire in one go: the next must find park's entries of a call
            // this one ended already gone (no recall stage, expiry or re-park for it).
            self.picking.after_calls(now);
        }
        self.settle(now);
    }

    fn housekeeping(&mut self, now: Instant) {
        self.timers
            .schedule(now + Duration::from_secs(1), TimerKey::Housekeeping);
        self.registrar.expire(now);
        crate::blf::expire(&mut self.lamping(), now);
        self.rate.prune(now);
        let sv = &mut self.picking.parking.b2bua.sv;
        sv.media.maintain(now, sv.ids.rng());
        if now.saturating_duration_since(self.last_sweep) >= SWEEP_EVERY {
            self.last_sweep = now;
            let b2bua = &mut self.parking.b2bua;
            let ringing = &b2bua.pending_invites;
            b2bua.sv.sweep_unanswered(now, |k| ringing.contains_key(k));
        }
    }

    /// A response to a client transaction, or its timeout: to the feature that owns it.
    pub(crate) fn deliver(&mut self, now: Instant, d: Delivery) {
        let Delivery {
            key,
            owner,
            flow,
            response,
        } = d;
        let done = response.as_ref().is_none_or(|r| r.code() >= 200);
        match (owner, response) {
            (Owner::Branch { call, idx }, Some(msg)) => {
                crate::call::branch_response(self, now, call, idx, flow, msg)
            }
            (Owner::Branch { call, idx }, None) => {
                crate::call::branch_failed(self, now, call, idx, 408, "Request Timeout".into())
            }
            (
                Owner::Relay {
                    call,
                    from,
                    stx,
                    req,
                },
                Some(msg),
            ) => crate::call::relay_response(self, now, call, from, &stx, &req, msg),
            (Owner::Relay { call, stx, req, .. }, None) => {
                crate::call::relay_timed_out(self, now, call, &stx, &req)
            }
            (Owner::Bye { call }, _) if done => crate::call::bye_done(self, call),
            (Owner::Recall { call, attempt, idx }, Some(msg)) => {
                crate::park::recall_response(self, now, &key, call, attempt, idx, flow, msg)
            }
            (Owner::Recall { call, attempt, idx }, None) => {
                crate::park::recall_failed(self, now, call, attempt, idx)
            }
            (Owner::ReferNotify { call, bye }, _) if done => {
                crate::park::notify_done(self, now, call, bye)
            }
            (Owner::MoveOffer { park }, r) if done => {
                crate::park::offer_response(self, now, park, r)
            }
            (Owner::MovedHere { park, attempt }, r) if done => {
                crate::park::moved_here_response(self, now, park, attempt, r)
            }
            (Owner::Lamp { sub }, r) if done => {
                let code = r.map(|r| r.code());
                crate::blf::on_notify_response(&mut self.lamping(), now, &sub, code)
            }
            _ => {}
        }
        self.picking.after_calls(now);
    }

    /// Hand every applied event and every outcome in to the features, and what the calls
    /// report ended to the features that keep entries by call, until nothing is left (a
    /// continuation may propose again; on one site that is answered at once).
    pub(crate) fn settle(&mut self, now: Instant) {
        loop {
            if self.picking.after_calls(now) {
                continue;
            }
            if let Some(ev) = self.port.events.pop_front() {
                let ours = |t: &String| *t == self.cfg.tenant.domain;
                if matches!(&ev, orbit_state::Event::PickupGroupsSet { tenant } if ours(tenant))
                    && self.refresh_pickup_rules()
                {
                    crate::blf::rules_changed(&mut self.lamping(), now);
                }
                crate::blf::on_event(&mut self.lamping(), now, &ev);
                self.picking.on_orbit_event(now, &ev);
                crate::draining::on_event(&mut self.picking, now, &ev);
                if self.orbit_events.len() == ORBIT_EVENTS_KEPT {
                    self.orbit_events.pop_front();
                }
                self.orbit_events.push_back(ev);
                continue;
            }
            if let Some((feature, token, span, outcome)) = self.next_outcome() {
                let _g = span.enter();
                match feature {
                    Feature::Park => self.picking.parking.continue_with(now, token, outcome),
                    Feature::Pickup => self.picking.continue_with(now, token, outcome),
                }
                continue;
            }
            break;
        }
        self.schedule_deadline();
        crate::draining::progress(&mut self.picking, now);
    }

    /// Begin draining (SIGTERM): nothing new from now on, what is up may end until
    /// `now + grace`, then what is left is ended; [`Edge::drained`] once it has all gone and
    /// the registry knows. A second call changes nothing.
    pub fn begin_drain(&mut self, now: Instant, grace: Duration) {
        crate::draining::begin(&mut self.picking, now, grace);
        self.settle(now);
    }

    /// Whether a drain is over: nothing left here, and the registry told.
    pub fn drained(&self) -> bool {
        self.draining
            .is_some_and(|d| d.leaving == crate::services::Leaving::Gone)
    }

    pub fn flow_closed(&mut self, flow: &Flow) {
        self.registrar.flow_closed(flow);
    }

    pub fn media_ports_in_use(&self) -> usize {
        self.media.in_use()
    }
}
