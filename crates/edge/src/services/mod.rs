//! What every feature stands on: the configuration, the transaction layer
//! ([`transactions`]), the timers, the identifiers, the relay's command queue, the messages
//! to send, who a request comes from (trusted source, digest, trunk peer), the location
//! service (where phones are registered) and the orbit port ([`orbit_port`]: proposals out,
//! outcomes and applied events in).
//!
//! [`Services`] is the bottom floor of the edge's layers: it knows no feature. Features reach
//! it from their own layer (the calls' [`crate::call::Calls`] derefs to it), and hear back
//! through what it hands up: a response or a timeout for the owner of a client transaction
//! ([`transactions::Delivery`]), a timer key, an orbit outcome or event.

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
use crate::config::{net_contains, parse_net, EdgeConfig, Extension};
use crate::location::Registrar;
use crate::media::{Leg, Media};

pub(crate) mod orbit_port;
pub(crate) mod transactions;

use orbit_port::OrbitPort;
use transactions::{ClientEntry, ServerEntry};

pub const ALLOW: &str =
    "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, NOTIFY, MESSAGE, REFER, SUBSCRIBE";

/// A message to send.
#[derive(Debug, Clone)]
pub struct Transmit {
    pub flow: Flow,
    pub bytes: Bytes,
}

/// The methods counted on their own in [`Stats::requests`]; any other is counted last.
pub const METHODS: [&str; 13] = [
    "INVITE",
    "ACK",
    "BYE",
    "CANCEL",
    "REGISTER",
    "OPTIONS",
    "SUBSCRIBE",
    "NOTIFY",
    "REFER",
    "MESSAGE",
    "INFO",
    "UPDATE",
    "PRACK",
];

/// Counters for tests, logs and metrics (the driver publishes them, `metrics.rs`).
#[derive(Debug, Default, Clone)]
pub struct Stats {
    /// Requests retransmitted to this edge (answered again, not counted in `requests`).
    pub retransmissions: u64,
    /// Feature latencies not yet published, seconds: (what, how long). At most
    /// [`LATENCIES_KEPT`]; the driver takes them every second.
    pub latencies: Vec<(&'static str, f64)>,
    /// Requests received, by method ([`METHODS`], then any other).
    pub requests: [u64; METHODS.len() + 1],
    /// Responses sent, by class (1xx to 6xx): each answer once (not its retransmissions).
    pub responses: [u64; 6],
    /// Calls parked at this edge by a phone (not the re-parks of a retrieve given up).
    pub parks: u64,
    /// Parks held here that were claimed: retrieved, or a recall answered.
    pub claims: u64,
    /// Recalls begun here (deadlines come).
    pub recalls: u64,
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
    /// Ringing calls given to a picker here.
    pub pickups: u64,
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

/// The two parties of a B2BUA call: A, the caller's dialog (we are its UAS), and B, the
/// callee's (we are its UAC). Here because transaction owners and timers name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Side {
    A,
    B,
}

impl Side {
    pub(crate) fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }
    pub(crate) fn leg(self) -> Leg {
        match self {
            Side::A => Leg::A,
            Side::B => Leg::B,
        }
    }
}

/// Every timer of the edge, by what it is for; the edge dispatches each to its feature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TimerKey {
    Server(ServerKey),
    Client(ClientKey),
    /// A 2xx of ours to retransmit until it is ACKed.
    Call(u64),
    /// The earliest park deadline.
    Deadline,
    /// A recall has rung long enough.
    Recall {
        call: u64,
        attempt: u32,
    },
    /// A recall answer whose claim's outcome never came has waited long enough for the watch.
    RecallUnsure {
        call: u64,
        attempt: u32,
    },
    /// A call to the park extension is over (its prompt played, or no REFER came).
    AppHangup(u64),
    /// A prompt to one side has played: BYE that side (parked) or bridge it again.
    Prompt {
        call: u64,
        side: Side,
        bye: bool,
    },
    Housekeeping,
    /// Time to renew this edge's lease with the registry.
    Lease,
    /// A drain has run its time: end what is left.
    DrainDeadline,
    /// A parked call offered here has waited long enough for the log to show its move.
    Probation(orbit_state::ParkId),
    /// A parked call moved away: the new edge has had time to re-INVITE its party.
    MovedAway(orbit_state::ParkId),
    /// A moved parked party answered our re-INVITE 491: time to send it again.
    Reinvite {
        park: orbit_state::ParkId,
        attempt: u32,
    },
    /// A trunk claim of this park has waited long enough for the replica to show it.
    TrunkClaim(orbit_state::ParkId),
    /// A call held here, claimed by another site, has waited long enough to be fetched.
    TrunkFetch(orbit_state::ParkId),
    /// A call has rung long enough to be recorded for pickup.
    RingRecord(u64),
    /// A trunk pickup of this ring has waited long enough for the replica to show it.
    PickupWait(orbit_state::RingId),
    /// A call ringing here, picked up, has waited long enough for its picker.
    PickupFetch(orbit_state::RingId),
    /// A callee's answer that lost to a pickup has waited long enough for the pickup to show.
    AnswerWait(u64),
}

pub struct Services {
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
    /// Where each extension's phones are registered.
    pub(crate) registrar: Registrar,
    pub(crate) auth: Authenticator,
    /// Tags, branches and Call-IDs (random, from the generator handed in).
    pub(crate) ids: Ids,
    /// Relay ports and the media commands not yet taken.
    pub(crate) media: Media,
    trusted: Vec<(IpAddr, u8)>,
    pub(crate) stats: Stats,
    pub(crate) shutting_down: bool,
    /// The orbit state: lots, parked calls, deadlines. On one site the edge orders the
    /// commands itself; the registry (Raft) takes this role across sites.
    pub(crate) orbit: orbit_state::Orbit,
    /// Wall-clock reading at `clock.0`, to stamp orbit commands with absolute times.
    pub(crate) clock: (Instant, orbit_state::Millis),
    /// When the deadline timer is set for, if it is.
    pub(crate) deadline_at: Option<Instant>,
    /// The latest time given to the core (for work done outside an input, e.g. call cleanup).
    pub(crate) last_now: Instant,
    /// Proposals, outcomes and the watch position (see [`orbit_port`]).
    pub(crate) port: OrbitPort,
    /// Who may pick up (and watch the lamp of) whom: the tenant's pickup groups as the orbit
    /// state has them ([`Services::refresh_pickup_rules`] after they change).
    pub(crate) pickup_rules: crate::config::PickupRules,
    /// This edge's identity (`site` or `site/name`): how the orbit state names it.
    pub(crate) id: String,
    /// The drain under way, if any (`draining.rs` moves it on).
    pub(crate) draining: Option<Drain>,
}

/// A drain under way (`draining.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Drain {
    /// When whatever is left is ended.
    pub until: Instant,
    pub leaving: Leaving,
}

/// How far a drain has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Leaving {
    /// Calls are still up.
    Waiting,
    /// The lease's release is proposed.
    Releasing,
    /// Released (or no registry to tell): the process may exit.
    Gone,
}

/// Latencies kept for the driver to publish (more in a second than this are dropped).
pub const LATENCIES_KEPT: usize = 10_000;

impl Stats {
    /// One more latency of `what`, if there is room.
    pub(crate) fn latency(&mut self, what: &'static str, seconds: f64) {
        if self.latencies.len() < LATENCIES_KEPT {
            self.latencies.push((what, seconds));
        }
    }

    /// A response with `code` sent for the first time.
    pub(crate) fn answered(&mut self, code: u16) {
        if let Some(n) = self
            .responses
            .get_mut(usize::from(code / 100).wrapping_sub(1))
        {
            *n += 1;
        }
    }
}

impl Services {
    pub(crate) fn new(
        cfg: Arc<EdgeConfig>,
        local: HashMap<Proto, SocketAddr>,
        start: Start,
    ) -> Self {
        let Start {
            now,
            wall_ms,
            mut ids,
        } = start;
        let trusted = cfg
            .auth
            .trusted
            .iter()
            .filter_map(|t| parse_net(t))
            .collect();
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
        Services {
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
            timers: Timers::default(),
            registrar: Registrar::default(),
            auth: Authenticator::with_rng(cfg.tenant.realm(), &cfg.auth, now, ids.rng()),
            ids,
            media: Media::new(cfg.media.ip, plan),
            trusted,
            stats: Stats::default(),
            shutting_down: false,
            orbit: orbit_state::Orbit::new(),
            clock: (now, wall_ms),
            deadline_at: None,
            last_now: now,
            port: OrbitPort::new(orbit_port::Backend::Local, Duration::ZERO, incarnation),
            pickup_rules: crate::config::PickupRules::default(),
            id: cfg.id(),
            draining: None,
            cfg,
        }
    }

    /// Take the tenant's pickup groups from the orbit state again (they changed, or the state
    /// was replaced); whether the rules are different now.
    pub(crate) fn refresh_pickup_rules(&mut self) -> bool {
        let t = &self.cfg.tenant;
        let rules = crate::config::PickupRules::of(&self.orbit, &t.domain, t.directed_pickup);
        if rules != self.pickup_rules {
            let groups: Vec<String> = self
                .orbit
                .pickup_groups(&t.domain)
                .map(|g| g.name)
                .collect();
            tracing::info!(tenant = %t.domain, groups = %groups.join(","), "pickup groups changed");
            self.pickup_rules = rules;
            return true;
        }
        false
    }

    pub(crate) fn send(&mut self, flow: Flow, bytes: Bytes) {
        self.out.push(Transmit { flow, bytes });
    }

    /// Relay ports for `call` (two pairs, in random order), if free.
    pub(crate) fn open_relay(
        &mut self,
        now: Instant,
        call: u64,
    ) -> Result<crate::media::Relay, &'static str> {
        self.media.open(now, call, self.ids.rng())
    }

    pub(crate) fn extension(&self, ext: &str) -> Option<&Extension> {
        self.cfg.tenant.extensions.get(ext)
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

    /// Whether `flow` comes from (or goes to) another edge (by its IP: a configured peer's,
    /// or one an edge gave with its lease).
    pub(crate) fn is_trunk_peer(&self, flow: &Flow) -> bool {
        let ip = flow.addr.ip().to_canonical();
        let Some(t) = &self.cfg.trunk else {
            return false;
        };
        let now = self.now_ms(self.last_now);
        t.peers.iter().any(|p| p.addr.ip().to_canonical() == ip)
            || self
                .orbit
                .trunks(now)
                .any(|(e, a)| *e != self.id && crate::location::Peer::Leased(a).sent(flow.addr))
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
}
