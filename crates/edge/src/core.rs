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
//! This file holds the [`Edge`] itself, its inputs and outputs, and the timers. The way in is
//! [`crate::router`]; the transaction layer is [`crate::transactions`]; each feature lives in
//! files of its own (calls in `call/`, park in `park/`, lamps in `blf.rs`, the registrar in
//! `registrar.rs`, the trunk in `trunk.rs`). Nothing here reads a clock or draws randomness that
//! was not handed in: `now` comes with every input, the wall clock and the identifier generator
//! with [`Start`].

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use orbit_sip::build::{Local, Response};
use orbit_sip::ids::Ids;
use orbit_sip::key::{ClientKey, ServerKey};
use orbit_sip::message::{Limits, Message, Name};
use orbit_sip::timer::Timers;
use orbit_sip::transaction::Timing;
use orbit_sip::transport::{Flow, Proto};
use tracing::info;

use crate::auth::{Authenticator, Verdict};
use crate::call::Call;
use crate::config::{net_contains, parse_net, EdgeConfig, Extension};
use crate::media::{Media, MediaCmd, MediaEvent};
use crate::ratelimit::RateLimiter;
use crate::registrar::Registrar;
use crate::transactions::{ClientEntry, ServerEntry};

/// Orbit events an edge keeps for [`Edge::take_orbit_events`].
pub const ORBIT_EVENTS_KEPT: usize = 4096;

pub const ALLOW: &str =
    "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, NOTIFY, MESSAGE, REFER, SUBSCRIBE";

/// A message to send.
#[derive(Debug, Clone)]
pub struct Transmit {
    pub flow: Flow,
    pub bytes: Bytes,
}

/// Counters for tests, logs and (later) metrics.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub calls_started: u64,
    pub calls_answered: u64,
    pub calls_failed: u64,
    pub parse_errors: u64,
    pub rate_limited: u64,
    pub registrations: u64,
    /// Requests answered without a transaction (the table was full).
    pub stateless: u64,
    /// In-dialog requests refused because they did not come over the dialog's flow.
    pub foreign_in_dialog: u64,
}

/// What an edge starts from: the time (monotonic and wall clock, read once by whoever starts
/// it) and the generator of its identifiers.
pub struct Start {
    pub now: Instant,
    /// Unix milliseconds at `now`.
    pub wall_ms: orbit_state::Millis,
    pub ids: Ids,
}

impl Start {
    /// Deterministic: for tests and simulations.
    pub fn seeded(now: Instant, wall_ms: orbit_state::Millis, seed: u64) -> Start {
        Start {
            now,
            wall_ms,
            ids: Ids::seeded(seed),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TimerKey {
    Server(ServerKey),
    Client(ClientKey),
    Call(u64),
    /// The earliest park deadline.
    Deadline,
    /// A recall has rung long enough.
    Recall {
        call: u64,
        attempt: u32,
    },
    /// A call to the park extension is over (its prompt played, or no REFER came).
    AppHangup(u64),
    /// A prompt to one side has played: BYE that side (parked) or bridge it again.
    Prompt {
        call: u64,
        side: crate::call::Side,
        bye: bool,
    },
    Housekeeping,
    /// Time to renew this edge's lease with the registry.
    Lease,
    /// A trunk claim of this park has waited long enough for the replica to show it.
    TrunkClaim(orbit_state::ParkId),
    /// A call held here, claimed by another site, has waited long enough to be fetched.
    TrunkFetch(orbit_state::ParkId),
}

pub struct Edge {
    pub(crate) cfg: Arc<EdgeConfig>,
    pub(crate) limits: Limits,
    pub(crate) timing: Timing,
    /// Our address per transport, for Via and Contact.
    pub(crate) local: Local,
    pub(crate) out: Vec<Transmit>,
    /// Boxed, so that growing the table moves pointers, not entries: at a few thousand calls
    /// per second it holds hundreds of thousands (Timer J keeps each for 32 s).
    pub(crate) stx: HashMap<ServerKey, Box<ServerEntry>>,
    /// Bytes the server transactions are counted as (bounded as well as their count).
    pub(crate) stx_bytes: usize,
    pub(crate) ctx: HashMap<ClientKey, Box<ClientEntry>>,
    pub(crate) timers: Timers<TimerKey>,
    pub(crate) registrar: Registrar,
    pub(crate) auth: Authenticator,
    pub(crate) calls: HashMap<u64, Call>,
    /// (Call-ID, our tag) → call; both legs of every call are here.
    pub(crate) dialogs: HashMap<(String, String), u64>,
    /// INVITE server transaction → call, while unanswered (for CANCEL).
    pub(crate) pending_invites: HashMap<ServerKey, u64>,
    pub(crate) next_call: u64,
    /// Tags, branches and Call-IDs (random, from the generator handed in).
    pub(crate) ids: Ids,
    /// Relay ports and the media commands not yet taken.
    pub(crate) media: Media,
    trusted: Vec<(IpAddr, u8)>,
    pub(crate) rate: RateLimiter,
    pub stats: Stats,
    pub(crate) shutting_down: bool,
    /// The orbit state: lots, parked calls, deadlines. On one site the edge orders the
    /// commands itself; the registry (Raft) takes this role across sites.
    pub(crate) orbit: orbit_state::Orbit,
    /// Wall-clock reading at `clock.0`, to stamp orbit commands with absolute times.
    pub(crate) clock: (Instant, orbit_state::Millis),
    /// The latest events the orbit state produced, for whoever takes them (tests, later the
    /// API); bounded, since the daemon itself never takes them.
    pub(crate) orbit_events: std::collections::VecDeque<orbit_state::Event>,
    /// When the deadline timer is set for, if it is.
    pub(crate) deadline_at: Option<Instant>,
    /// The latest time given to the core (for work done outside an input, e.g. call cleanup).
    pub(crate) last_now: Instant,
    /// When the server transactions were last swept for requests never answered.
    last_sweep: Instant,
    pub(crate) blf: crate::blf::Lamps,
    /// Calls parked here, and everything else the park feature keeps.
    pub(crate) park: crate::park::Parks,
    /// Proposals, outcomes and the watch position (see [`crate::orbit`]).
    pub(crate) port: crate::orbit::OrbitPort,
    /// Trunk signatures seen, claims shown for calls held here (see [`crate::trunk`]).
    pub(crate) trunk: crate::trunk::TrunkState,
    /// Calls each digest-authenticated user has started and not ended.
    pub(crate) calls_by_user: HashMap<String, usize>,
    /// Concurrent calls this edge takes: `limits.max_calls`, or fewer if the relay's ports
    /// cannot serve that many (two port pairs a call).
    pub(crate) max_calls: usize,
}

impl Edge {
    pub fn new(cfg: Arc<EdgeConfig>, local: HashMap<Proto, SocketAddr>, start: Start) -> Edge {
        let Start {
            now,
            wall_ms: wall,
            mut ids,
        } = start;
        let trusted = cfg
            .auth
            .trusted
            .iter()
            .filter_map(|t| parse_net(t))
            .collect();
        let mut timers = Timers::default();
        timers.schedule(now + Duration::from_secs(1), TimerKey::Housekeeping);
        let mut orbit = orbit_state::Orbit::new();
        let mut music = HashMap::new();
        let mut default_lot = None;
        // Validated at start (EdgeConfig::validate); a lot refused here is logged and skipped.
        for lot in cfg.lot_configs().unwrap_or_default() {
            if let Err(e) = orbit.apply(wall, &orbit_state::Command::SetLot(lot.clone())) {
                tracing::error!(lot = %lot.park_ext, error = %e, "parking lot refused");
                continue;
            }
            music.insert(lot.park_ext.clone(), crate::park::builtin_music());
            default_lot.get_or_insert(lot.key());
        }
        let incarnation = ids.u64().max(1);
        let plan = orbit_media::PortPlan::new(
            cfg.media.port_min,
            cfg.media.port_max,
            orbit_media::PoolTiming {
                close_after: Duration::from_secs(cfg.media.idle_close_secs),
                ..Default::default()
            },
            ids.rng(),
        );
        let pairs = plan.capacity();
        let max_calls = cfg.limits.max_calls.min(pairs / 2);
        if max_calls < cfg.limits.max_calls {
            info!(
                max_calls,
                configured = cfg.limits.max_calls,
                "the relay's ports bound the calls this edge takes"
            );
        }
        Edge {
            limits: Limits {
                max_headers: cfg.limits.max_headers,
            },
            timing: Timing {
                t1: Duration::from_millis(cfg.sip.t1_ms),
                ..Timing::default()
            },
            local: Local::new(local),
            out: Vec::new(),
            stx: HashMap::new(),
            stx_bytes: 0,
            ctx: HashMap::new(),
            timers,
            registrar: Registrar::default(),
            auth: Authenticator::with_rng(cfg.tenant.realm(), &cfg.auth, now, ids.rng()),
            calls: HashMap::new(),
            dialogs: HashMap::new(),
            pending_invites: HashMap::new(),
            next_call: 0,
            ids,
            media: Media::new(cfg.media.ip, plan),
            trusted,
            rate: RateLimiter::new(cfg.limits.requests_per_sec, cfg.limits.burst),
            stats: Stats::default(),
            shutting_down: false,
            orbit,
            clock: (now, wall),
            orbit_events: Default::default(),
            deadline_at: None,
            last_now: now,
            last_sweep: now,
            blf: Default::default(),
            park: crate::park::Parks {
                music,
                default_lot,
                ..Default::default()
            },
            port: crate::orbit::OrbitPort::new(
                crate::orbit::Backend::Local,
                Duration::ZERO,
                incarnation,
            ),
            trunk: Default::default(),
            calls_by_user: HashMap::new(),
            max_calls,
            cfg,
        }
    }

    /// Order orbit commands through the registry instead of locally: the state here becomes a
    /// mirror of the registry's (fed by [`Edge::on_orbit_watch`]), the configured lots are
    /// proposed, and the edge holds a lease of `lease_ttl`, renewed at a third of it.
    pub fn with_registry(mut self, now: Instant, lease_ttl: Duration) -> Edge {
        self.port.backend = crate::orbit::Backend::Registry;
        self.port.lease_ttl = lease_ttl;
        for lot in self.cfg.lot_configs().unwrap_or_default() {
            self.propose(
                now,
                orbit_state::Command::SetLot(lot),
                crate::orbit::Then::Nothing,
            );
        }
        self.renew_lease(now);
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
                    crate::media::Leg::A => crate::call::Side::A,
                    crate::media::Leg::B => crate::call::Side::B,
                };
                crate::park::on_digit(self, now, call, side, digit);
            }
            MediaEvent::Silent { call, idle } => crate::call::on_silence(self, now, call, idle),
            MediaEvent::Failed { call, error } => {
                if let Some(r) = self.calls.get_mut(&call).and_then(|c| c.media.take()) {
                    tracing::warn!(call, %error, "relay ports could not be opened");
                    self.media.failed(r);
                    crate::call::fail(self, now, call, 503, "no media ports");
                }
            }
        }
        self.settle(now);
    }

    /// We are ending call `id`: the features stop whatever rings on its behalf.
    pub(crate) fn call_ending(&mut self, now: Instant, id: u64) {
        crate::park::cancel_recall(self, now, id);
    }

    /// Call `id` is gone (`why`: why we ended it, if we did): the features that keep entries
    /// by call drop them.
    pub(crate) fn call_ended(&mut self, now: Instant, id: u64, why: Option<&'static str>) {
        crate::park::on_call_end(self, now, id, why);
    }

    /// How long call `id` may go without media: a parked call longer (its phone may send
    /// nothing while it listens to the music).
    pub(crate) fn silence_limit(&self, id: u64) -> Duration {
        match self.park.held.get(&id) {
            Some(ps) => crate::park::parked_timeout(self, ps),
            None => Duration::from_secs(self.cfg.media.timeout_secs),
        }
    }

    /// Media commands for the relay, in order.
    pub fn take_media(&mut self) -> Vec<MediaCmd> {
        self.media.take()
    }

    /// Lamp (BLF) subscriptions alive.
    pub fn lamp_subscriptions(&self) -> usize {
        self.blf.len()
    }

    /// The orbit state as this edge sees it.
    pub fn orbit(&self) -> &orbit_state::Orbit {
        &self.orbit
    }

    /// Messages to send, in order.
    pub fn drain(&mut self) -> std::vec::Drain<'_, Transmit> {
        self.out.drain(..)
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

    pub(crate) fn send(&mut self, flow: Flow, bytes: Bytes) {
        self.out.push(Transmit { flow, bytes });
    }

    pub(crate) fn extension(&self, ext: &str) -> Option<&Extension> {
        self.cfg.tenant.extensions.get(ext)
    }

    // ---------------------------------------------------------------- timers

    pub fn on_timeout(&mut self, now: Instant) {
        self.last_now = now;
        while let Some(k) = self.timers.pop_due(now) {
            match k {
                TimerKey::Server(key) => self.server_timer(now, key),
                TimerKey::Client(key) => self.client_timer(now, key),
                TimerKey::Call(id) => crate::call::on_timer(self, now, id),
                TimerKey::Deadline => self.on_deadline(now),
                TimerKey::Lease => self.renew_lease(now),
                TimerKey::Recall { call, attempt } => {
                    crate::park::on_recall_timeout(self, now, call, attempt)
                }
                TimerKey::AppHangup(id) => crate::park::on_app_hangup(self, now, id),
                TimerKey::Prompt { call, side, bye } => {
                    crate::park::on_prompt_done(self, now, call, side, bye)
                }
                TimerKey::Housekeeping => self.housekeeping(now),
                TimerKey::TrunkClaim(park) => crate::trunk::on_claim_timeout(self, now, park),
                TimerKey::TrunkFetch(park) => crate::trunk::on_fetch_timeout(self, now, park),
            }
        }
        self.settle(now);
    }

    fn housekeeping(&mut self, now: Instant) {
        self.timers
            .schedule(now + Duration::from_secs(1), TimerKey::Housekeeping);
        self.registrar.expire(now);
        crate::blf::expire(self, now);
        self.rate.prune(now);
        self.media.maintain(now, self.ids.rng());
        if now.saturating_duration_since(self.last_sweep) >= crate::transactions::SWEEP_EVERY {
            self.last_sweep = now;
            self.sweep_unanswered(now);
        }
    }

    /// Digest check of `msg` from `source`. `Ok(user)` or the response to send: (401/407 with
    /// challenges) or 403 (also while `source` or the user is locked out after failures).
    pub(crate) fn check_auth(
        &mut self,
        now: Instant,
        source: IpAddr,
        msg: &Message,
        header: Name,
    ) -> Result<String, (u16, Vec<String>)> {
        let realm = self.auth.realm().to_string();
        // Use the credentials for our realm when a phone sends several.
        let value = msg
            .headers(header)
            .find(|v| v.contains(&format!("realm=\"{realm}\"")))
            .map(str::to_string);
        let cfg = self.cfg.clone();
        let attempt = crate::auth::Attempt {
            method: msg.method().as_str(),
            request_uri: msg.uri().map_or("", |u| u.as_str()),
            source,
        };
        let verdict = self.auth.verify(now, &attempt, value.as_deref(), |u| {
            cfg.tenant.extensions.get(u)
        });
        let code = if header == Name::Authorization {
            401
        } else {
            407
        };
        match verdict {
            Verdict::Ok { user } => Ok(user),
            Verdict::Challenge => Err((code, self.auth.challenges(now, false, source))),
            Verdict::Stale => Err((code, self.auth.challenges(now, true, source))),
            Verdict::Denied(why) => {
                info!(reason = why, from = ?msg.from().map(|f| f.uri.to_string()), "authentication failed");
                Err((403, vec![]))
            }
            // Logged once per lockout, when it starts.
            Verdict::Locked => Err((403, vec![])),
        }
    }

    /// The extension sending `msg`: trusted sources by their From, others by digest
    /// (answering the challenge or refusal here and returning none).
    pub(crate) fn authenticate(
        &mut self,
        now: Instant,
        key: &ServerKey,
        flow: Flow,
        msg: &Message,
    ) -> Option<String> {
        let from_user = msg
            .from()
            .and_then(|f| orbit_sip::Uri::parse(f.uri).ok())
            .and_then(|u| u.user().map(str::to_string))
            .unwrap_or_default();
        if self.is_trusted(flow.addr.ip()) {
            return Some(from_user);
        }
        match self.check_auth(now, flow.addr.ip(), msg, Name::ProxyAuthorization) {
            Ok(user) if user == from_user => Some(user),
            Ok(_) => {
                self.reply(now, key, Response::to(msg, 403));
                None
            }
            Err((code, headers)) => {
                let extra: Vec<(&str, &str)> = headers
                    .iter()
                    .map(|h| ("Proxy-Authenticate", h.as_str()))
                    .collect();
                self.reply(now, key, Response::to(msg, code).pairs(&extra));
                None
            }
        }
    }

    /// Whether `flow` comes from (or goes to) another site's edge (by its IP).
    pub(crate) fn is_trunk_peer(&self, flow: &Flow) -> bool {
        let ip = flow.addr.ip().to_canonical();
        self.cfg
            .trunk
            .as_ref()
            .is_some_and(|t| t.peers.iter().any(|p| p.addr.ip().to_canonical() == ip))
    }

    /// Admit a new call for `user`, whose request came over `flow`: `Ok(owner)` (the user it
    /// counts against, if any) or the refusal to send (503 at capacity, 486 when the user has
    /// as many calls as it may).
    pub(crate) fn admit_call(&self, user: &str, flow: &Flow) -> Result<Option<String>, u16> {
        if self.calls.len() >= self.max_calls {
            return Err(503);
        }
        let ip = flow.addr.ip().to_canonical();
        if self.is_trusted(ip) || self.is_trunk_peer(flow) {
            return Ok(None);
        }
        if self.calls_by_user.get(user).copied().unwrap_or(0) >= self.cfg.limits.calls_per_user {
            info!(%user, "too many calls for one user");
            return Err(486);
        }
        Ok(Some(user.to_string()))
    }

    /// A call counted against `owner` is over (or was never started).
    pub(crate) fn release_owner(&mut self, owner: &str) {
        if let Some(n) = self.calls_by_user.get_mut(owner) {
            *n -= 1;
            if *n == 0 {
                self.calls_by_user.remove(owner);
            }
        }
    }

    pub(crate) fn is_trusted(&self, ip: IpAddr) -> bool {
        // An IPv4 peer seen on a dual-stack socket arrives as ::ffff:a.b.c.d.
        let ip = ip.to_canonical();
        self.trusted.iter().any(|n| net_contains(*n, ip))
    }

    /// Whether a Request-URI / To host names this tenant.
    pub(crate) fn is_our_host(&self, host: &str) -> bool {
        if self.cfg.tenant.any_host || host.eq_ignore_ascii_case(&self.cfg.tenant.domain) {
            return true;
        }
        let h = host.trim_start_matches('[').trim_end_matches(']');
        h.parse::<IpAddr>()
            .map(|ip| self.local.has_ip(ip) || ip == self.cfg.advertise())
            .unwrap_or(false)
    }

    /// End every call (BYE / 487) and refuse new ones; the driver exits once calls are gone.
    pub fn shutdown(&mut self, now: Instant) {
        self.shutting_down = true;
        let ids: Vec<u64> = self.calls.keys().copied().collect();
        info!(calls = ids.len(), "shutting down: ending calls");
        for id in ids {
            crate::call::hangup(self, now, id, "shutdown");
        }
        self.settle(now);
    }

    pub fn flow_closed(&mut self, flow: &Flow) {
        self.registrar.flow_closed(flow);
    }

    pub fn media_ports_in_use(&self) -> usize {
        self.media.in_use()
    }
}
