//! The edge's sans-I/O core: messages and time in, datagrams out.
//!
//! ```text
//! edge.on_message(now, flow, bytes);     // a datagram or a framed stream message
//! edge.on_timeout(now);                  // when now >= edge.next_timeout()
//! for t in edge.drain() { send t.bytes over t.flow }
//! ```
//!
//! The core owns the transactions (RFC 3261 §17, keyed by branch), the registrar, the digest
//! authenticator and the calls. Call logic lives in [`crate::call`]; this file dispatches.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use orbit_sip::header::{NameAddr, Via};
use orbit_sip::message::{Limits, Message, Name, ParseError, Writer};
use orbit_sip::timer::Timers;
use orbit_sip::transaction::{
    ClientEvent, ClientTransaction, Kind, ServerTransaction, TimerEvent, Timing,
};
use orbit_sip::transport::{Flow, Proto};
use orbit_sip::{reason_phrase, Method, Scheme};
use tracing::{debug, info, info_span};

use crate::auth::{Authenticator, Verdict};
use crate::call::Call;
use crate::config::{net_contains, parse_net, EdgeConfig, Extension};
use crate::media::MediaFactory;
use crate::ratelimit::RateLimiter;
use crate::registrar::{ContactUpdate, RegisterError, Registrar};

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
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum TimerKey {
    Server(String),
    Client(String),
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
}

pub(crate) struct ServerEntry {
    pub tx: ServerTransaction,
    pub flow: Flow,
}

/// Who gets the responses of a client transaction.
pub(crate) enum Owner {
    /// One fork of a call's outgoing INVITE.
    Branch { call: u64, idx: usize },
    /// An in-dialog request relayed from the other side; the response goes back to `stx`.
    Relay {
        call: u64,
        stx: String,
        req: Box<Message>,
    },
    /// A request of our own whose answer only matters to the call (BYE at teardown).
    Bye { call: u64 },
    /// One fork of a recall (the parker's phones, then the fallback).
    Recall { call: u64, attempt: u32, idx: usize },
    /// A NOTIFY about a REFER's progress; `bye`: end that side's dialog once it is answered.
    ReferNotify {
        call: u64,
        bye: Option<crate::call::Side>,
    },
    /// A lamp NOTIFY: a refusal ends the subscription.
    Lamp { sub: (String, String) },
    /// Nobody (CANCEL, stray BYE to a late fork).
    Nobody,
}

pub(crate) struct ClientEntry {
    pub tx: ClientTransaction,
    pub flow: Flow,
    pub owner: Owner,
}

pub struct Edge {
    pub(crate) cfg: Arc<EdgeConfig>,
    limits: Limits,
    pub(crate) timing: Timing,
    /// Our address per transport, for Via and Contact.
    pub(crate) local: HashMap<Proto, SocketAddr>,
    out: Vec<Transmit>,
    pub(crate) stx: HashMap<String, ServerEntry>,
    pub(crate) ctx: HashMap<String, ClientEntry>,
    pub(crate) timers: Timers<TimerKey>,
    pub(crate) registrar: Registrar,
    auth: Authenticator,
    pub(crate) calls: HashMap<u64, Call>,
    /// (Call-ID, our tag) → call; both legs of every call are here.
    pub(crate) dialogs: HashMap<(String, String), u64>,
    /// INVITE server transaction key → call, while unanswered (for CANCEL).
    pub(crate) pending_invites: HashMap<String, u64>,
    pub(crate) next_call: u64,
    next_id: u64,
    id_prefix: String,
    pub(crate) media: Box<dyn MediaFactory>,
    trusted: Vec<(IpAddr, u8)>,
    rate: RateLimiter,
    pub stats: Stats,
    pub(crate) shutting_down: bool,
    last_media_check: Instant,
    /// The orbit state: lots, parked calls, deadlines. On one site the edge orders the
    /// commands itself; the registry (Raft) takes this role across sites.
    pub(crate) orbit: orbit_state::Orbit,
    /// Wall-clock reading at `clock.0`, to stamp orbit commands with absolute times.
    pub(crate) clock: (Instant, orbit_state::Millis),
    /// Park id → the call holding it.
    pub(crate) parks: HashMap<orbit_state::ParkId, u64>,
    /// Retrieving INVITEs (server transaction key) whose claim is in flight, and whether the
    /// retriever has cancelled meanwhile.
    pub(crate) claiming: HashMap<String, bool>,
    /// Music on hold per lot (park extension), encoded once.
    pub(crate) music: HashMap<String, Arc<orbit_media::Clip>>,
    /// The latest events the orbit state produced, for whoever takes them (tests, later the
    /// API); bounded, since the daemon itself never takes them.
    pub(crate) orbit_events: std::collections::VecDeque<orbit_state::Event>,
    /// When the deadline timer is set for, if it is.
    pub(crate) deadline_at: Option<Instant>,
    /// The latest time given to the core (for work done outside an input, e.g. call cleanup).
    pub(crate) last_now: Instant,
    pub(crate) blf: crate::blf::Lamps,
    /// Slots spoken to attended parkers, held until their REFER comes (or their call ends).
    pub(crate) announced: std::collections::HashSet<u32>,
    /// The lot a one-touch park goes to: the tenant's first.
    pub(crate) default_lot: Option<orbit_state::LotKey>,
    /// Proposals, outcomes and the watch position (see [`crate::orbit`]).
    pub(crate) port: crate::orbit::OrbitPort,
}

impl Edge {
    pub fn new(
        cfg: Arc<EdgeConfig>,
        local: HashMap<Proto, SocketAddr>,
        media: Box<dyn MediaFactory>,
        now: Instant,
    ) -> Edge {
        let trusted = cfg
            .auth
            .trusted
            .iter()
            .filter_map(|t| parse_net(t))
            .collect();
        let mut timers = Timers::default();
        timers.schedule(now + Duration::from_secs(1), TimerKey::Housekeeping);
        let id_prefix = format!("{:08x}", rand::random::<u32>());
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
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
        Edge {
            limits: Limits {
                max_headers: cfg.limits.max_headers,
            },
            timing: Timing {
                t1: Duration::from_millis(cfg.sip.t1_ms),
                ..Timing::default()
            },
            local,
            out: Vec::new(),
            stx: HashMap::new(),
            ctx: HashMap::new(),
            timers,
            registrar: Registrar::default(),
            auth: Authenticator::new(cfg.tenant.realm(), &cfg.auth, now),
            calls: HashMap::new(),
            dialogs: HashMap::new(),
            pending_invites: HashMap::new(),
            next_call: 0,
            next_id: 1,
            id_prefix,
            media,
            trusted,
            rate: RateLimiter::new(cfg.limits.requests_per_sec, cfg.limits.burst),
            stats: Stats::default(),
            shutting_down: false,
            last_media_check: now,
            orbit,
            clock: (now, wall),
            parks: HashMap::new(),
            claiming: HashMap::new(),
            music,
            orbit_events: Default::default(),
            deadline_at: None,
            last_now: now,
            blf: Default::default(),
            announced: Default::default(),
            default_lot,
            port: crate::orbit::OrbitPort::new(crate::orbit::Backend::Local, Duration::ZERO),
            cfg,
        }
    }

    /// Order orbit commands through the registry instead of locally: the state here becomes a
    /// mirror of the registry's (fed by [`Edge::on_orbit_watch`]), the configured lots are
    /// proposed, and the edge holds a lease of `lease_ttl`, renewed at a third of it.
    pub fn with_registry(mut self, now: Instant, lease_ttl: Duration) -> Edge {
        self.port = crate::orbit::OrbitPort::new(crate::orbit::Backend::Registry, lease_ttl);
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
        self.music.insert(park_ext.to_string(), clip);
    }

    /// Orbit events since the last take (parked, claimed, expired, ...; the latest
    /// [`ORBIT_EVENTS_KEPT`] at most).
    pub fn take_orbit_events(&mut self) -> Vec<orbit_state::Event> {
        std::mem::take(&mut self.orbit_events).into()
    }

    /// Something the media relay saw: a digit pressed by a party.
    pub fn on_media_event(&mut self, now: Instant, ev: crate::media::MediaEvent) {
        self.last_now = now;
        let side = match ev.leg {
            crate::media::Leg::A => crate::call::Side::A,
            crate::media::Leg::B => crate::call::Side::B,
        };
        crate::park::on_digit(self, now, ev.call, side, ev.digit);
        self.settle(now);
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

    pub(crate) fn unique(&mut self) -> String {
        self.next_id += 1;
        format!("{}{:x}", self.id_prefix, self.next_id)
    }

    pub(crate) fn new_branch(&mut self) -> String {
        format!("z9hG4bK{}", self.unique())
    }

    pub(crate) fn extension(&self, ext: &str) -> Option<&Extension> {
        self.cfg.tenant.extensions.get(ext)
    }

    /// `host:port` to put in Via and Contact for a flow's transport.
    pub(crate) fn local_for(&self, proto: Proto) -> SocketAddr {
        self.local
            .get(&proto)
            .or_else(|| self.local.get(&Proto::Udp))
            .copied()
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 5060)))
    }

    pub(crate) fn via(&self, proto: Proto, branch: &str) -> String {
        let l = self.local_for(proto);
        format!("SIP/2.0/{} {};branch={};rport", proto.via_name(), l, branch)
    }

    pub(crate) fn contact(&self, user: &str, proto: Proto) -> String {
        contact(&self.local, user, proto)
    }
}

/// Our Contact toward a party reached over `proto`, as user `user`.
pub(crate) fn contact(local: &HashMap<Proto, SocketAddr>, user: &str, proto: Proto) -> String {
    let l = local
        .get(&proto)
        .or_else(|| local.get(&Proto::Udp))
        .copied()
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 5060)));
    {
        match proto {
            Proto::Udp => format!("<sip:{user}@{l}>"),
            Proto::Tcp => format!("<sip:{user}@{l};transport=tcp>"),
            Proto::Tls => format!("<sips:{user}@{l}>"),
        }
    }
}

impl Edge {
    // ---------------------------------------------------------------- input

    /// A message arrived over `flow`.
    pub fn on_message(&mut self, now: Instant, flow: Flow, bytes: Bytes) {
        self.last_now = now;
        if bytes.iter().all(|&b| b == b'\r' || b == b'\n' || b == 0) {
            return; // keep-alive
        }
        // The per-source limit comes first, so that a flood costs no parsing.
        if !self.rate.allow(now, flow.addr.ip()) {
            self.stats.rate_limited += 1;
            // One 503 per second per source at most, then silence.
            if self.rate.should_answer(now, flow.addr.ip()) {
                if let Ok(m) = orbit_sip::parse(bytes, &self.limits) {
                    if m.is_request() && *m.method() != Method::Ack {
                        let r = self.response_bytes(
                            &m,
                            &flow,
                            503,
                            None,
                            &[("Retry-After", "5")],
                            None,
                        );
                        self.send(flow, r);
                    }
                }
            }
            return;
        }
        if bytes.len() > self.cfg.limits.max_message {
            // Too large to be a legitimate request here; answer 513 if we can read it.
            if let Ok(m) = orbit_sip::parse(bytes, &self.limits) {
                if m.is_request() && *m.method() != Method::Ack {
                    let r = self.response_bytes(&m, &flow, 513, None, &[], None);
                    self.send(flow, r);
                }
            }
            return;
        }
        let msg = match orbit_sip::parse(bytes.clone(), &self.limits) {
            Ok(m) => m,
            Err(e) => return self.on_parse_error(flow, &bytes, e),
        };
        if msg.is_request() {
            self.on_request(now, flow, msg);
        } else {
            self.on_response(now, msg);
        }
        self.settle(now);
    }

    fn on_parse_error(&mut self, flow: Flow, bytes: &[u8], err: ParseError) {
        self.stats.parse_errors += 1;
        debug!(%err, from = %flow.addr, "unparseable message");
        // Answer only requests, and only when we can build a response (RFC 4475: invalid
        // requests get 400, responses we cannot read are dropped).
        if bytes.starts_with(b"SIP/") {
            return;
        }
        let code = if err == ParseError::Version { 505 } else { 400 };
        if let Some(r) = salvage_response(bytes, &flow, code, &err.to_string()) {
            self.send(flow, r);
        }
    }

    /// RFC 3261 §17.2.3 matching (branch, sent-by, method), narrowed to the source it came
    /// from: a request naming another party's branch from elsewhere must not be taken for that
    /// party's retransmission (nor be answered with its response).
    fn server_key(msg: &Message, src: SocketAddr) -> String {
        let mut k = Self::rfc_key(msg);
        k.push('\x1f');
        k.push_str(&src.to_string());
        k
    }

    fn rfc_key(msg: &Message) -> String {
        let via = msg.top_via();
        let method = match msg.method() {
            Method::Ack => "INVITE",
            m => m.as_str(),
        };
        match via.as_ref().and_then(|v| v.branch()) {
            Some(b) if b.starts_with("z9hG4bK") => {
                let (h, p) = via.map(|v| v.sent_by()).unwrap_or(("", 0));
                format!("{b}\x1f{h}:{p}\x1f{method}")
            }
            // RFC 2543 peers: match on the request's identity instead.
            _ => format!(
                "{}\x1f{}\x1f{}\x1f{}",
                msg.call_id(),
                msg.from_tag().unwrap_or(""),
                msg.cseq.seq,
                method
            ),
        }
    }

    fn on_request(&mut self, now: Instant, flow: Flow, msg: Message) {
        let key = Self::server_key(&msg, flow.addr);
        let method = msg.method().clone();
        if method == Method::Ack {
            if let Some(e) = self.stx.get_mut(&key) {
                if e.tx.kind == Kind::Invite
                    && e.tx.state == orbit_sip::transaction::State::Completed
                {
                    e.tx.on_ack(now);
                    if let Some(t) = e.tx.poll_timeout() {
                        self.timers.schedule(t, TimerKey::Server(key));
                    }
                    return;
                }
            }
            // ACK for a 2xx: end-to-end, belongs to the dialog.
            return self.dialog_request(now, flow, msg, None);
        }
        if let Some(e) = self.stx.get(&key) {
            // A retransmission: resend what we last answered.
            if let Some(r) = e.tx.on_retransmission() {
                let f = e.flow;
                self.send(f, r);
            }
            return;
        }
        let kind = if method == Method::Invite {
            Kind::Invite
        } else {
            Kind::NonInvite
        };
        self.stx.insert(
            key.clone(),
            ServerEntry {
                tx: ServerTransaction::new(kind, flow.proto.reliable(), self.timing),
                flow,
            },
        );
        let span = info_span!("sip.request", method = %method, call_id = %msg.call_id(), from = %flow.addr);
        let _g = span.enter();

        if let Some(uri) = msg.uri() {
            if uri.scheme == Scheme::Other {
                return self.reply(now, &key, &msg, 416, None, &[], None);
            }
        }
        if method == Method::Cancel {
            return self.on_cancel(now, &key, msg);
        }
        if let Some(unsupported) = msg
            .headers(Name::Require)
            .chain(msg.headers(Name::ProxyRequire))
            .next()
            .map(str::to_string)
        {
            if method != Method::Bye {
                return self.reply(
                    now,
                    &key,
                    &msg,
                    420,
                    None,
                    &[("Unsupported", &unsupported)],
                    None,
                );
            }
        }
        if msg.to_tag().is_some() {
            return self.dialog_request(now, flow, msg, Some(key));
        }
        match method {
            Method::Register => self.on_register(now, &key, flow, msg),
            Method::Options => {
                let extra = [
                    ("Allow", ALLOW),
                    ("Accept", "application/sdp"),
                    ("Supported", "replaces"),
                ];
                self.reply(now, &key, &msg, 200, None, &extra, None)
            }
            Method::Invite => self.on_invite(now, &key, flow, msg),
            Method::Subscribe => {
                if self.authenticate(now, &key, flow, &msg).is_some() {
                    crate::blf::on_subscribe(self, now, &key, flow, msg)
                }
            }
            Method::Bye | Method::Prack | Method::Update | Method::Info => {
                self.reply(now, &key, &msg, 481, None, &[], None)
            }
            Method::Other(_) => self.reply(now, &key, &msg, 501, None, &[("Allow", ALLOW)], None),
            _ => self.reply(now, &key, &msg, 405, None, &[("Allow", ALLOW)], None),
        }
    }

    fn dialog_request(&mut self, now: Instant, flow: Flow, msg: Message, key: Option<String>) {
        if *msg.method() == Method::Subscribe {
            if let Some(k) = &key {
                if crate::blf::on_dialog_subscribe(self, now, k, &msg) {
                    return;
                }
            }
        }
        let dk = (
            msg.call_id().to_string(),
            msg.to_tag().unwrap_or("").to_string(),
        );
        match self.dialogs.get(&dk).copied() {
            Some(call) => crate::call::on_dialog_request(self, now, call, flow, msg, key),
            None => {
                if let Some(key) = key {
                    self.reply(now, &key, &msg, 481, None, &[], None);
                }
            }
        }
    }

    fn on_cancel(&mut self, now: Instant, key: &str, msg: Message) {
        // The CANCEL matches the INVITE server transaction with the same branch (§9.2).
        let invite_key = key.replace("\x1fCANCEL\x1f", "\x1fINVITE\x1f");
        if !self.stx.contains_key(&invite_key) {
            return self.reply(now, key, &msg, 481, None, &[], None);
        }
        self.reply(now, key, &msg, 200, None, &[], None);
        if let Some(cancelled) = self.claiming.get_mut(&invite_key) {
            // Its claim is being ordered: the 487 goes with the outcome (which, if the claim
            // was won, puts the call back in its slot).
            *cancelled = true;
            return;
        }
        crate::call::on_cancel(self, now, &invite_key);
    }

    fn on_response(&mut self, now: Instant, msg: Message) {
        let Some(branch) = msg.top_via().and_then(|v| v.branch()).map(str::to_string) else {
            return;
        };
        let key = if *msg.method() == Method::Cancel {
            format!("{branch}:CANCEL")
        } else {
            branch
        };
        let Some(entry) = self.ctx.get_mut(&key) else {
            debug!(code = msg.code(), "response matches no transaction");
            return;
        };
        let code = msg.code();
        match entry.tx.on_response(now, code) {
            ClientEvent::Absorb => {}
            ClientEvent::ResendAck => {
                if let Some(a) = entry.tx.ack().cloned() {
                    let f = entry.flow;
                    self.send(f, a);
                }
            }
            ev => {
                if ev == ClientEvent::DeliverAndAck {
                    let ack = ack_for_failure(entry.tx.request(), &msg);
                    if let Some(ack) = ack {
                        entry.tx.set_ack(ack.clone());
                        let f = entry.flow;
                        self.out.push(Transmit {
                            flow: f,
                            bytes: ack,
                        });
                    }
                }
                if let Some(t) = self.ctx[&key].tx.poll_timeout() {
                    self.timers.schedule(t, TimerKey::Client(key.clone()));
                }
                crate::call::on_client_response(self, now, &key, msg);
            }
        }
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
            }
        }
        self.settle(now);
    }

    fn server_timer(&mut self, now: Instant, key: String) {
        let Some(e) = self.stx.get_mut(&key) else {
            return;
        };
        match e.tx.poll_timeout() {
            Some(t) if t <= now => {}
            _ => return, // stale timer entry
        }
        match e.tx.on_timeout(now) {
            TimerEvent::Retransmit(b) => {
                let f = e.flow;
                if let Some(t) = e.tx.poll_timeout() {
                    self.timers.schedule(t, TimerKey::Server(key));
                }
                self.send(f, b);
            }
            TimerEvent::Nothing => {
                if let Some(t) = e.tx.poll_timeout() {
                    self.timers.schedule(t, TimerKey::Server(key));
                }
            }
            TimerEvent::TimedOut | TimerEvent::Terminated => {
                self.stx.remove(&key);
            }
        }
    }

    fn client_timer(&mut self, now: Instant, key: String) {
        let Some(e) = self.ctx.get_mut(&key) else {
            return;
        };
        match e.tx.poll_timeout() {
            Some(t) if t <= now => {}
            _ => return,
        }
        match e.tx.on_timeout(now) {
            TimerEvent::Retransmit(b) => {
                let f = e.flow;
                if let Some(t) = e.tx.poll_timeout() {
                    self.timers.schedule(t, TimerKey::Client(key));
                }
                self.send(f, b);
            }
            TimerEvent::Nothing => {
                if let Some(t) = e.tx.poll_timeout() {
                    self.timers.schedule(t, TimerKey::Client(key));
                }
            }
            TimerEvent::TimedOut => {
                crate::call::on_client_timeout(self, now, &key);
                self.ctx.remove(&key);
            }
            TimerEvent::Terminated => {
                self.ctx.remove(&key);
            }
        }
    }

    fn housekeeping(&mut self, now: Instant) {
        self.timers
            .schedule(now + Duration::from_secs(1), TimerKey::Housekeeping);
        self.registrar.expire(now);
        crate::blf::expire(self, now);
        self.rate.prune(now);
        if now.duration_since(self.last_media_check) >= Duration::from_secs(1) {
            self.last_media_check = now;
            crate::call::check_media(self, now);
            self.media.maintain();
        }
    }

    pub(crate) fn schedule_client(&mut self, key: &str) {
        if let Some(t) = self.ctx.get(key).and_then(|e| e.tx.poll_timeout()) {
            self.timers.schedule(t, TimerKey::Client(key.to_string()));
        }
    }

    /// Send a new request as a client transaction.
    pub(crate) fn send_request(
        &mut self,
        now: Instant,
        flow: Flow,
        key: String,
        invite: bool,
        bytes: Bytes,
        owner: Owner,
    ) {
        let kind = if invite {
            Kind::Invite
        } else {
            Kind::NonInvite
        };
        let tx =
            ClientTransaction::new(kind, bytes.clone(), flow.proto.reliable(), now, self.timing);
        self.ctx
            .insert(key.clone(), ClientEntry { tx, flow, owner });
        self.schedule_client(&key);
        self.send(flow, bytes);
    }

    // ---------------------------------------------------------------- responses

    /// Build a response to `req` (RFC 3261 §8.2.6): Vias (top one marked with received/rport),
    /// From, To (with `to_tag` added when it has none), Call-ID, CSeq.
    pub(crate) fn response_bytes(
        &self,
        req: &Message,
        flow: &Flow,
        code: u16,
        to_tag: Option<&str>,
        extra: &[(&str, &str)],
        body: Option<(&str, &[u8])>,
    ) -> Bytes {
        build_response(req, flow, code, reason_phrase(code), to_tag, extra, body)
    }

    /// Answer a request through its server transaction.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn reply(
        &mut self,
        now: Instant,
        key: &str,
        req: &Message,
        code: u16,
        to_tag: Option<&str>,
        extra: &[(&str, &str)],
        body: Option<(&str, &[u8])>,
    ) {
        let tag;
        let to_tag = match to_tag {
            Some(t) => Some(t),
            None if code > 100 && req.to_tag().is_none() => {
                tag = self.unique();
                Some(tag.as_str())
            }
            None => None,
        };
        let bytes = self.response_bytes(req, &self.stx_flow(key), code, to_tag, extra, body);
        self.reply_bytes(now, key, code, bytes);
    }

    fn stx_flow(&self, key: &str) -> Flow {
        self.stx.get(key).map(|e| e.flow).unwrap_or(Flow {
            proto: Proto::Udp,
            addr: SocketAddr::from(([127, 0, 0, 1], 9)),
            conn: 0,
        })
    }

    pub(crate) fn reply_bytes(&mut self, now: Instant, key: &str, code: u16, bytes: Bytes) {
        let Some(e) = self.stx.get_mut(key) else {
            return;
        };
        e.tx.respond(now, code, bytes.clone());
        let f = e.flow;
        if let Some(t) = e.tx.poll_timeout() {
            self.timers.schedule(t, TimerKey::Server(key.to_string()));
        }
        self.send(f, bytes);
    }

    // ---------------------------------------------------------------- registrar

    fn on_register(&mut self, now: Instant, key: &str, flow: Flow, msg: Message) {
        let Some(to) = msg.to() else {
            return self.reply(now, key, &msg, 400, None, &[], None);
        };
        let Some(aor) = orbit_sip::Uri::parse(to.uri)
            .ok()
            .and_then(|u| u.user().map(str::to_string))
        else {
            return self.reply(now, key, &msg, 404, None, &[], None);
        };
        if self.extension(&aor).is_none() {
            return self.reply(now, key, &msg, 404, None, &[], None);
        }
        let user = match self.check_auth(now, flow.addr.ip(), &msg, Name::Authorization) {
            Ok(u) => u,
            Err((code, headers)) => {
                let extra: Vec<(&str, &str)> = headers
                    .iter()
                    .map(|h| ("WWW-Authenticate", h.as_str()))
                    .collect();
                let code = if code == 407 { 401 } else { code };
                return self.reply(now, key, &msg, code, None, &extra, None);
            }
        };
        if user != aor {
            return self.reply(now, key, &msg, 403, None, &[], None);
        }
        let default_exp = msg
            .header(Name::Expires)
            .and_then(|e| e.parse::<u32>().ok())
            .unwrap_or(3600);
        let contacts: Vec<&str> = msg.values(Name::Contact).collect();
        let max = self.cfg.auth.max_expires;
        let min = self.cfg.auth.min_expires;
        let result = if contacts == ["*"] {
            if default_exp != 0 {
                return self.reply(now, key, &msg, 400, None, &[], None);
            }
            self.registrar
                .update(now, &aor, None, flow, msg.call_id(), msg.cseq.seq, min)
        } else if contacts.contains(&"*") {
            return self.reply(now, key, &msg, 400, None, &[], None);
        } else if contacts.is_empty() {
            Ok(())
        } else {
            let mut ups = Vec::with_capacity(contacts.len());
            for c in &contacts {
                let Some(na) = NameAddr::parse(c) else {
                    return self.reply(now, key, &msg, 400, None, &[], None);
                };
                let exp = na
                    .param("expires")
                    .and_then(|e| e.parse::<u32>().ok())
                    .unwrap_or(default_exp)
                    .min(max);
                ups.push(ContactUpdate {
                    contact: na.uri.to_string(),
                    expires: exp,
                });
            }
            self.registrar.update(
                now,
                &aor,
                Some(&ups),
                flow,
                msg.call_id(),
                msg.cseq.seq,
                min,
            )
        };
        match result {
            Err(RegisterError::TooBrief) => {
                let m = min.to_string();
                self.reply(now, key, &msg, 423, None, &[("Min-Expires", &m)], None)
            }
            Err(RegisterError::OutOfOrder) => self.reply(now, key, &msg, 500, None, &[], None),
            Err(RegisterError::TooMany) => self.reply(now, key, &msg, 403, None, &[], None),
            Ok(()) => {
                self.stats.registrations += 1;
                let bindings = self.registrar.lookup(now, &aor);
                let until = bindings.iter().map(|b| b.expires_at).max();
                self.report_location(now, &aor, until);
                let values: Vec<String> = bindings
                    .iter()
                    .map(|b| {
                        format!(
                            "<{}>;expires={}",
                            b.contact,
                            b.expires_at.saturating_duration_since(now).as_secs()
                        )
                    })
                    .collect();
                let extra: Vec<(&str, &str)> =
                    values.iter().map(|v| ("Contact", v.as_str())).collect();
                info!(ext = %aor, contacts = bindings.len(), "registered");
                self.reply(now, key, &msg, 200, None, &extra, None)
            }
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
            Verdict::Challenge => Err((code, self.auth.challenges(now, false))),
            Verdict::Stale => Err((code, self.auth.challenges(now, true))),
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
        key: &str,
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
                self.reply(now, key, msg, 403, None, &[], None);
                None
            }
            Err((code, headers)) => {
                let extra: Vec<(&str, &str)> = headers
                    .iter()
                    .map(|h| ("Proxy-Authenticate", h.as_str()))
                    .collect();
                self.reply(now, key, msg, code, None, &extra, None);
                None
            }
        }
    }

    pub(crate) fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|n| net_contains(*n, ip))
    }

    /// Whether a Request-URI / To host names this tenant.
    pub(crate) fn is_our_host(&self, host: &str) -> bool {
        if self.cfg.tenant.any_host || host.eq_ignore_ascii_case(&self.cfg.tenant.domain) {
            return true;
        }
        let h = host.trim_start_matches('[').trim_end_matches(']');
        h.parse::<IpAddr>()
            .map(|ip| self.local.values().any(|l| l.ip() == ip) || ip == self.cfg.advertise())
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

/// Build a response without a transaction (also used for salvaged 400s).
pub(crate) fn build_response(
    req: &Message,
    flow: &Flow,
    code: u16,
    reason: &str,
    to_tag: Option<&str>,
    extra: &[(&str, &str)],
    body: Option<(&str, &[u8])>,
) -> Bytes {
    let mut w = Writer::response(code, reason);
    for (i, v) in req.values(Name::Via).enumerate() {
        if i == 0 {
            w.header("Via", &mark_via(v, flow.addr));
        } else {
            w.header("Via", v);
        }
    }
    w.copy(req, Name::From, "From");
    match (req.header(Name::To), to_tag) {
        (Some(to), Some(tag)) if req.to_tag().is_none() => {
            w.header_parts("To", &[to, ";tag=", tag]);
        }
        (Some(to), _) => {
            w.header("To", to);
        }
        _ => {}
    }
    w.header("Call-ID", req.call_id());
    w.copy(req, Name::CSeq, "CSeq");
    for (k, v) in extra {
        w.header(k, v);
    }
    w.header("Server", "orbit");
    match body {
        Some((ct, b)) => w.finish(Some(ct), b),
        None => w.finish(None, b""),
    }
}

/// Add `received` and fill `rport` on the top Via (RFC 3261 §18.2.1, RFC 3581).
fn mark_via(v: &str, src: SocketAddr) -> String {
    let mut out = String::with_capacity(v.len() + 40);
    let mut parts = v.split(';');
    out.push_str(parts.next().unwrap_or(""));
    let mut had_rport = false;
    for p in parts {
        let name = p.split('=').next().unwrap_or("").trim();
        if name.eq_ignore_ascii_case("rport") {
            had_rport = true;
            continue;
        }
        if name.eq_ignore_ascii_case("received") {
            continue;
        }
        out.push(';');
        out.push_str(p);
    }
    out.push_str(";received=");
    out.push_str(&src.ip().to_string());
    if had_rport {
        out.push_str(";rport=");
        out.push_str(&src.port().to_string());
    }
    out
}

/// ACK for a non-2xx final response (RFC 3261 §17.1.1.3): same branch, R-URI, From, Call-ID
/// and CSeq number as the INVITE; To from the response.
fn ack_for_failure(invite: &Bytes, resp: &Message) -> Option<Bytes> {
    let inv = orbit_sip::parse(invite.clone(), &Limits::default()).ok()?;
    let uri = inv.uri()?.to_string();
    let mut w = Writer::request("ACK", &uri);
    w.header("Via", inv.values(Name::Via).next()?);
    w.header("Max-Forwards", "70");
    w.copy(&inv, Name::From, "From");
    w.header("To", resp.header(Name::To)?);
    w.header("Call-ID", inv.call_id());
    w.header("CSeq", &format!("{} ACK", inv.cseq.seq));
    w.copy(&inv, Name::Route, "Route");
    Some(w.finish(None, b""))
}

/// Build a 400/505 for a request the strict parser refused, from whatever header lines can be
/// read. Without a Via, Call-ID, From, To and CSeq we cannot answer, and drop it.
fn salvage_response(bytes: &[u8], flow: &Flow, code: u16, why: &str) -> Option<Bytes> {
    let text = String::from_utf8_lossy(bytes);
    let head = text.split("\r\n\r\n").next()?;
    let mut lines = head.split("\r\n");
    let start = lines.next()?;
    let method = start.split(' ').next()?;
    if method.is_empty() || method.eq_ignore_ascii_case("ACK") {
        return None;
    }
    let mut via = vec![];
    let (mut from, mut to, mut cid, mut cseq) = (None, None, None, None);
    for l in lines {
        let Some((n, v)) = l.split_once(':') else {
            continue;
        };
        let v = v.trim();
        match Name::parse(n.trim()) {
            Name::Via => via.extend(orbit_sip::message::split_list(v).map(str::to_string)),
            Name::From if from.is_none() => from = Some(v.to_string()),
            Name::To if to.is_none() => to = Some(v.to_string()),
            Name::CallId if cid.is_none() => cid = Some(v.to_string()),
            Name::CSeq if cseq.is_none() => cseq = Some(v.to_string()),
            _ => {}
        }
    }
    // Without a usable Via and CSeq the sender could not match an answer: stay silent.
    let top = via.first()?;
    // A 505 answers a Via of another version too; a 400 needs one we understand.
    if code != 505 {
        Via::parse(top)?;
    }
    let cseq = cseq?;
    let mut w = if code == 505 {
        Writer::response(505, "Version Not Supported")
    } else {
        Writer::response(code, &format!("Bad Request ({why})"))
    };
    w.header("Via", &mark_via(top, flow.addr));
    for v in via.iter().skip(1) {
        w.header("Via", v);
    }
    // Whatever of the dialog identifiers the request had is echoed (RFC 4475 3.3.1).
    for (name, value) in [("From", from), ("To", to), ("Call-ID", cid)] {
        if let Some(v) = value {
            w.header(name, &v);
        }
    }
    w.header("CSeq", &cseq);
    w.header("Server", "orbit");
    Some(w.finish(None, b""))
}

impl Edge {
    /// A stream that could not be framed: answer 400 if a request can be read from it.
    pub fn on_bad_stream(&mut self, flow: Flow, bytes: &[u8]) {
        self.stats.parse_errors += 1;
        if let Some(r) = salvage_response(bytes, &flow, 400, "bad framing") {
            self.send(flow, r);
        }
    }
}
