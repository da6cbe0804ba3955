//! Edge configuration, as read from the `[edge]` part of the daemon's TOML file.
//!
//! Longer than most files here because every setting carries its documentation, default and
//! validation in one place; it holds no other logic.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use serde::Deserialize;

mod pickup;
pub use pickup::{DirectedPickup, PickupDial, PickupGroup, PickupRules};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeConfig {
    /// Site name (lowercase letters, digits and `-`): the edges of one site share its phones.
    #[serde(default = "default_site")]
    pub site: String,
    /// This edge's name within its site, when a site has several edges (same characters as
    /// `site`). The edge's identity is `site/name` (just `site` without a name): each running
    /// edge process needs its own, and the registry refuses a second process with one that is
    /// held.
    #[serde(default)]
    pub name: Option<String>,
    /// A directory of this edge's own where it keeps its process's incarnation, so that after
    /// a crash its next process takes its identity over at once (the registry lets a process
    /// in that names the one it replaces). Without one, a restarted edge waits for its
    /// predecessor's lease to run out.
    #[serde(default)]
    pub state_dir: Option<std::path::PathBuf>,
    /// How long a drain (SIGTERM, `orbitctl edge drain`) waits for the calls here to end
    /// before it ends them with BYE. A Kubernetes pod's `terminationGracePeriodSeconds`
    /// should be longer.
    #[serde(default = "default_drain_secs")]
    pub drain_secs: u64,
    pub sip: SipConfig,
    pub media: MediaConfig,
    pub tenant: TenantConfig,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    /// The orbit registry (parks shared across sites); absent: this edge keeps the orbit state
    /// itself (one site).
    #[serde(default)]
    pub registry: Option<RegistryLink>,
    /// The SIP trunk to the other sites' edges (retrieve and calls across sites).
    #[serde(default)]
    pub trunk: Option<TrunkConfig>,
    /// This edge's admin listener (`[edge.admin]`): its calls and registrations, hanging a
    /// call up, and gRPC health for readiness. Under `[edge.registry.tls]` (whose
    /// certificate then names this host too); without it, on a loopback address only.
    #[serde(default)]
    pub admin: Option<EdgeAdminConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeAdminConfig {
    /// gRPC address.
    pub listen: SocketAddr,
}

/// How an edge reaches the orbit registry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryLink {
    /// Registry nodes' gRPC addresses (`host:port`), the nearest first: proposals and the watch
    /// stream go to the first that answers.
    pub nodes: Vec<String>,
    /// The edge's lease: if the registry hears nothing from the edge for this long, its parked
    /// calls are given up (lost) and their slots freed. Renewed every third of it.
    #[serde(default = "default_lease_secs")]
    pub lease_secs: u64,
    /// This edge's certificate for the registry's mutual TLS (`[edge.registry.tls]`: `ca`,
    /// `cert`, `key`), naming it `spiffe://orbit/edge/<site>`: the registry takes proposals
    /// for this site only from it. None: plaintext, to a registry on this host only.
    #[serde(default)]
    pub tls: Option<RegistryTls>,
}

/// Where an edge's control-plane certificates are (see `orbit_registry::tls`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryTls {
    pub ca: std::path::PathBuf,
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

fn default_lease_secs() -> u64 {
    15
}

/// The inter-site trunk: SIP between edges, each request signed with a shared secret.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrunkConfig {
    /// Shared by all sites' edges (at least 16 characters): requests between edges carry an
    /// HMAC-SHA256 over their identity made with it.
    pub secret: String,
    /// The other sites' edges.
    #[serde(default)]
    pub peers: Vec<TrunkPeer>,
    /// How far apart two edges' clocks (and a request's transit) may be; older signatures are
    /// refused.
    #[serde(default = "default_max_skew")]
    pub max_skew_secs: u64,
}

fn default_max_skew() -> u64 {
    30
}

/// Another edge, named in config. Edges with a registry also learn each other from their
/// leases, so only edges without one (or a fixed address to prefer) need listing.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrunkPeer {
    /// The peer's site name (as in its `site`).
    pub site: String,
    /// The peer's name within its site (as in its `name`), if it has one.
    #[serde(default)]
    pub name: Option<String>,
    /// Its SIP address (UDP).
    pub addr: SocketAddr,
}

impl TrunkPeer {
    /// The peer edge's identity.
    pub fn id(&self) -> String {
        edge_id(&self.site, self.name.as_deref())
    }
}

/// The secrets `config/edge.example.toml` shows: refused, so that a copied example never runs
/// with them.
pub const EXAMPLE_SECRETS: [&str; 2] = ["change-me-to-32-random-characters", "change-me"];

/// An edge's identity: `site`, or `site/name` for one of several edges of a site.
pub fn edge_id(site: &str, name: Option<&str>) -> String {
    match name {
        Some(n) => format!("{site}/{n}"),
        None => site.to_string(),
    }
}

fn default_drain_secs() -> u64 {
    60
}

fn default_site() -> String {
    "site-a".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipConfig {
    /// UDP and TCP listen address.
    pub listen: SocketAddr,
    /// TLS listen address; TLS is off when absent.
    #[serde(default)]
    pub tls_listen: Option<SocketAddr>,
    /// PEM certificate chain and key for TLS; absent in dev mode, which generates one.
    #[serde(default)]
    pub tls_cert: Option<String>,
    #[serde(default)]
    pub tls_key: Option<String>,
    /// Address put in Via/Contact/Record-Route; defaults to the listen address.
    #[serde(default)]
    pub advertise: Option<IpAddr>,
    /// SIP T1 in milliseconds (RFC 3261 default 500).
    #[serde(default = "default_t1")]
    pub t1_ms: u64,
}

fn default_t1() -> u64 {
    500
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaConfig {
    pub ip: IpAddr,
    pub port_min: u16,
    pub port_max: u16,
    /// A call with no RTP/RTCP in either direction for this long is ended with BYE.
    #[serde(default = "default_media_timeout")]
    pub timeout_secs: u64,
    /// Relay endpoints left over from ended calls are reused for new calls; one unused this
    /// long is closed and its ports returned to the system.
    #[serde(default = "default_idle_close")]
    pub idle_close_secs: u64,
    /// A parked call with no RTP/RTCP from the parked party for this long is ended (its phone
    /// may send nothing while it only listens to music). Unset: the lot's parking time plus
    /// its recall and fallback rings plus `timeout_secs`, so that silence alone never ends a
    /// park before its recall has run.
    #[serde(default)]
    pub parked_timeout_secs: Option<u64>,
}

fn default_idle_close() -> u64 {
    10
}

fn default_media_timeout() -> u64 {
    60
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// The SIP domain of the tenant (host part of its AORs).
    pub domain: String,
    /// Digest realm; defaults to the domain.
    #[serde(default)]
    pub realm: Option<String>,
    /// Dev mode: any host in a Request-URI or To is taken as this tenant's domain.
    #[serde(default)]
    pub any_host: bool,
    pub extensions: BTreeMap<String, Extension>,
    /// Parking lots; absent: one lot `700` with slots 701-720. An empty list: no call park.
    #[serde(default = "default_lots")]
    pub lots: Vec<LotSettings>,
    #[serde(default)]
    pub features: FeatureCodes,
    /// Pickup groups (`[[edge.tenant.pickup_groups]]`); none: nobody is in a group.
    #[serde(default)]
    pub pickup_groups: Vec<PickupGroup>,
    /// Whom directed pickup may reach: `"group"` (the picker's groups, the default) or
    /// `"anyone"`.
    #[serde(default)]
    pub directed_pickup: DirectedPickup,
}

/// One parking lot of the tenant.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LotSettings {
    /// The extension that parks a call in the next free slot.
    #[serde(default = "default_park_ext")]
    pub park_ext: String,
    /// Slot range, `"701-720"`.
    #[serde(default = "default_slots")]
    pub slots: String,
    /// Seconds a call stays parked before it rings the parker.
    #[serde(default = "default_parking_secs")]
    pub parking_secs: u64,
    /// Seconds the recall rings the parker before the fallback.
    #[serde(default = "default_recall_ring_secs")]
    pub recall_ring_secs: u64,
    /// Extension rung when the parker does not answer the recall; none: the caller is hung up.
    #[serde(default)]
    pub fallback: Option<String>,
    /// Music on hold: an 8 kHz mono 16-bit WAV file; absent: built-in music.
    #[serde(default)]
    pub music: Option<String>,
    /// `first-free` or `next-after-last`.
    #[serde(default)]
    pub slot_choice: SlotChoiceSetting,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SlotChoiceSetting {
    #[default]
    FirstFree,
    NextAfterLast,
}

impl Default for LotSettings {
    fn default() -> Self {
        LotSettings {
            park_ext: default_park_ext(),
            slots: default_slots(),
            parking_secs: default_parking_secs(),
            recall_ring_secs: default_recall_ring_secs(),
            fallback: None,
            music: None,
            slot_choice: SlotChoiceSetting::FirstFree,
        }
    }
}

fn default_lots() -> Vec<LotSettings> {
    vec![LotSettings::default()]
}
fn default_park_ext() -> String {
    "700".into()
}
fn default_slots() -> String {
    "701-720".into()
}
fn default_parking_secs() -> u64 {
    90
}
fn default_recall_ring_secs() -> u64 {
    20
}

impl LotSettings {
    /// First and last slot of `slots`.
    pub fn range(&self) -> Result<(u32, u32), ConfigError> {
        let bad = || {
            ConfigError::Lot(format!(
                "lot {}: slots {:?} is not like \"701-720\"",
                self.park_ext, self.slots
            ))
        };
        let (a, b) = self.slots.split_once('-').ok_or_else(bad)?;
        let a: u32 = a.trim().parse().map_err(|_| bad())?;
        let b: u32 = b.trim().parse().map_err(|_| bad())?;
        Ok((a, b))
    }

    /// The lot as the orbit state holds it.
    pub fn lot_config(&self, tenant: &str) -> Result<orbit_state::LotConfig, ConfigError> {
        let (first_slot, last_slot) = self.range()?;
        Ok(orbit_state::LotConfig {
            tenant: tenant.to_string(),
            park_ext: self.park_ext.clone(),
            first_slot,
            last_slot,
            parking_ms: self.parking_secs * 1000,
            recall_ring_ms: self.recall_ring_secs * 1000,
            fallback: self.fallback.clone(),
            choice: match self.slot_choice {
                SlotChoiceSetting::FirstFree => orbit_state::SlotChoice::FirstFree,
                SlotChoiceSetting::NextAfterLast => orbit_state::SlotChoice::NextAfterLast,
            },
        })
    }
}

/// Feature codes dialled or keyed during a call.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureCodes {
    /// DTMF during a bridged call: park the other party (one-touch park).
    #[serde(default = "default_park_code")]
    pub park: String,
    /// Dialled alone: group pickup (the call ringing longest in the picker's groups).
    #[serde(default = "pickup::default_pickup_code")]
    pub pickup: String,
    /// Dialled before an extension: directed pickup of the call ringing it.
    #[serde(default = "pickup::default_directed_codes")]
    pub pickup_prefixes: Vec<String>,
}

fn default_park_code() -> String {
    "*68".into()
}

impl Default for FeatureCodes {
    fn default() -> Self {
        FeatureCodes {
            park: default_park_code(),
            pickup: pickup::default_pickup_code(),
            pickup_prefixes: pickup::default_directed_codes(),
        }
    }
}

impl TenantConfig {
    pub fn realm(&self) -> &str {
        self.realm.as_deref().unwrap_or(&self.domain)
    }
}

/// An extension's credentials: a password, or HA1 hashes (`H(user:realm:password)`) per
/// algorithm so that secrets need not be stored in the clear.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Extension {
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub ha1_md5: Option<String>,
    #[serde(default)]
    pub ha1_sha256: Option<String>,
    #[serde(default)]
    pub display_name: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Challenge algorithms in order of preference (RFC 8760): "SHA-256", "MD5".
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Seconds a nonce stays fresh; an older one gets `stale=true`.
    #[serde(default = "default_nonce_ttl")]
    pub nonce_ttl_secs: u64,
    /// Sources whose INVITEs are not challenged (e.g. a trusted SBC), as `ip` or `ip/prefix`.
    #[serde(default)]
    pub trusted: Vec<String>,
    /// Registration expiry bounds, in seconds.
    #[serde(default = "default_min_expires")]
    pub min_expires: u32,
    #[serde(default = "default_max_expires")]
    pub max_expires: u32,
    /// Wrong digests within `failure_window_secs` that lock out one extension from one
    /// source (0: no limit).
    #[serde(default = "default_failures_per_source_ext")]
    pub failures_per_source_ext: u32,
    /// Wrong digests from one source (IPv4 address or IPv6 /64) for any extensions that lock
    /// it out, except for extensions that recently authenticated from it (0: no limit).
    #[serde(default = "default_failures_per_source")]
    pub failures_per_source: u32,
    /// Wrong digests for one extension from any sources that lock it out, except from
    /// sources where it recently authenticated (0: no limit). Higher than the others, so that
    /// locking a user out of new places costs a stranger many addresses' worth of guesses.
    #[serde(default = "default_failures_per_ext")]
    pub failures_per_ext: u32,
    #[serde(default = "default_failure_window")]
    pub failure_window_secs: u64,
    /// The first lockout, in seconds; each further one doubles, up to `lockout_max_secs`.
    #[serde(default = "default_lockout")]
    pub lockout_secs: u64,
    #[serde(default = "default_lockout_max")]
    pub lockout_max_secs: u64,
}

fn default_algorithms() -> Vec<String> {
    vec!["SHA-256".into(), "MD5".into()]
}
fn default_nonce_ttl() -> u64 {
    300
}
fn default_min_expires() -> u32 {
    60
}
fn default_max_expires() -> u32 {
    3600
}
fn default_failures_per_source_ext() -> u32 {
    10
}
fn default_failures_per_source() -> u32 {
    30
}
fn default_failures_per_ext() -> u32 {
    50
}
fn default_failure_window() -> u64 {
    60
}
fn default_lockout() -> u64 {
    30
}
fn default_lockout_max() -> u64 {
    900
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            algorithms: default_algorithms(),
            nonce_ttl_secs: default_nonce_ttl(),
            trusted: vec![],
            min_expires: default_min_expires(),
            max_expires: default_max_expires(),
            failures_per_source_ext: default_failures_per_source_ext(),
            failures_per_source: default_failures_per_source(),
            failures_per_ext: default_failures_per_ext(),
            failure_window_secs: default_failure_window(),
            lockout_secs: default_lockout(),
            lockout_max_secs: default_lockout_max(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest message accepted, in bytes (larger: 513 or dropped).
    #[serde(default = "default_max_message")]
    pub max_message: usize,
    /// Most header lines in one message (more: 400).
    #[serde(default = "default_max_headers")]
    pub max_headers: usize,
    /// Requests per second allowed from one source (an IPv4 address, or an IPv6 /64: a site's
    /// phones in one /64 share it, as phones behind one NAT do), sustained, and the burst above
    /// it.
    #[serde(default = "default_rate")]
    pub requests_per_sec: u32,
    #[serde(default = "default_burst")]
    pub burst: u32,
    /// Most concurrent calls; more get 503. The relay's port range bounds it too (each call
    /// holds two port pairs): the edge takes the smaller of the two.
    #[serde(default = "default_max_calls")]
    pub max_calls: usize,
    /// Most concurrent calls one digest-authenticated user may start (486 beyond), so that
    /// one phone cannot take the whole edge. Trusted sources and trunk peers are exempt.
    #[serde(default = "default_calls_per_user")]
    pub calls_per_user: usize,
    /// Most lamp subscriptions one user may hold (403 beyond); a large attendant console
    /// has about 200 keys.
    #[serde(default = "default_lamps_per_user")]
    pub lamps_per_user: usize,
    /// Most server transactions held at once; beyond it requests are answered without state
    /// (OPTIONS, challenges) or with 503. A transaction lives 32 s after its answer (64·T1)
    /// and a call has two (INVITE, BYE), so this allows about 16,000 calls/s, three times
    /// what one edge core serves, in at most about 600 MB. A flood from spoofed sources stops
    /// here instead of growing the table for 32 s at whatever rate it comes.
    #[serde(default = "default_max_transactions")]
    pub max_transactions: usize,
    /// Most open TCP (and, separately, TLS) connections.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Most open TCP (and, separately, TLS) connections from one source (an IPv4 address or an
    /// IPv6 /64), so that one host cannot take every slot. Raise it for an SBC, a NAT with many
    /// phones behind one address, or a site whose phones share one IPv6 /64.
    #[serde(default = "default_max_connections_per_ip")]
    pub max_connections_per_ip: usize,
    /// Seconds from accept (TLS handshake included) to a connection's first complete
    /// message; silent connections are closed then instead of holding a slot for the idle
    /// timeout.
    #[serde(default = "default_first_message_secs")]
    pub first_message_secs: u64,
    /// Messages queued for writing on one connection; a peer that lets more pile up (it
    /// does not read) is closed. A count of messages, each at most about `max_message`.
    #[serde(default = "default_write_queue")]
    pub write_queue: usize,
}

fn default_max_connections() -> usize {
    10_000
}
fn default_max_connections_per_ip() -> usize {
    32
}
fn default_first_message_secs() -> u64 {
    10
}
fn default_write_queue() -> usize {
    256
}

fn default_max_message() -> usize {
    16 * 1024
}
fn default_max_headers() -> usize {
    96
}
fn default_rate() -> u32 {
    1000
}
fn default_burst() -> u32 {
    2000
}
fn default_max_calls() -> usize {
    20_000
}

fn default_calls_per_user() -> usize {
    16
}

fn default_lamps_per_user() -> usize {
    200
}

fn default_max_transactions() -> usize {
    1 << 20
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_message: default_max_message(),
            max_headers: default_max_headers(),
            requests_per_sec: default_rate(),
            burst: default_burst(),
            max_calls: default_max_calls(),
            calls_per_user: default_calls_per_user(),
            lamps_per_user: default_lamps_per_user(),
            max_transactions: default_max_transactions(),
            max_connections: default_max_connections(),
            max_connections_per_ip: default_max_connections_per_ip(),
            first_message_secs: default_first_message_secs(),
            write_queue: default_write_queue(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("extension {0}: the example config's password; give it its own")]
    ExampleSecret(String),
    #[error("{0} {1:?}: lowercase letters, digits and '-', at most 63")]
    Name(&'static str, String),
    #[error("extension {0}: needs a password or an HA1 hash")]
    NoSecret(String),
    #[error("extension {0}: extensions are 1 to 16 digits")]
    BadExtension(String),
    #[error("media port range {0}-{1} holds no port pair")]
    PortRange(u16, u16),
    #[error("auth: unknown algorithm {0} (use SHA-256 or MD5)")]
    Algorithm(String),
    #[error("auth: bad trusted network {0}")]
    Trusted(String),
    #[error("TLS needs both tls_cert and tls_key")]
    TlsFiles,
    #[error("{0}")]
    Lot(String),
    #[error("registry: {0}")]
    Registry(String),
    #[error("admin: {0}")]
    Admin(String),
    #[error("trunk: {0}")]
    Trunk(String),
    #[error("pickup: {0}")]
    Pickup(String),
}

impl EdgeConfig {
    /// This edge's identity: `site`, or `site/name`.
    pub fn id(&self) -> String {
        edge_id(&self.site, self.name.as_deref())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if !orbit_state::names::is_name(&self.site) {
            return Err(ConfigError::Name("site", self.site.clone()));
        }
        if let Some(n) = &self.name {
            if !orbit_state::names::is_name(n) {
                return Err(ConfigError::Name("name", n.clone()));
            }
        }
        for (ext, e) in &self.tenant.extensions {
            if !orbit_state::is_extension(ext) {
                return Err(ConfigError::BadExtension(ext.clone()));
            }
            if e.password.is_none() && e.ha1_md5.is_none() && e.ha1_sha256.is_none() {
                return Err(ConfigError::NoSecret(ext.clone()));
            }
            if e.password
                .as_deref()
                .is_some_and(|p| EXAMPLE_SECRETS.contains(&p))
            {
                return Err(ConfigError::ExampleSecret(ext.clone()));
            }
        }
        if self.media.port_max <= self.media.port_min + 1 {
            return Err(ConfigError::PortRange(
                self.media.port_min,
                self.media.port_max,
            ));
        }
        for a in &self.auth.algorithms {
            if a != "SHA-256" && a != "MD5" {
                return Err(ConfigError::Algorithm(a.clone()));
            }
        }
        for t in &self.auth.trusted {
            parse_net(t).ok_or_else(|| ConfigError::Trusted(t.clone()))?;
        }
        if self.sip.tls_cert.is_some() != self.sip.tls_key.is_some() {
            return Err(ConfigError::TlsFiles);
        }
        self.lot_configs()?;
        if let Some(r) = &self.registry {
            if r.nodes.is_empty() {
                return Err(ConfigError::Registry("no registry nodes".into()));
            }
            if r.tls.is_none() {
                // Plaintext reaches a registry on this host only (which listens so only then).
                let on_this_host = |n: &String| {
                    n.parse::<std::net::SocketAddr>()
                        .map(|a| a.ip().is_loopback())
                        .unwrap_or_else(|_| n.starts_with("localhost:"))
                };
                if let Some(n) = r.nodes.iter().find(|n| !on_this_host(n)) {
                    return Err(ConfigError::Registry(format!(
                        "registry node {n} is not on this host: set [edge.registry.tls] (ca, cert, key)"
                    )));
                }
            }
            let max = orbit_state::MAX_LEASE_MS / 1000;
            if r.lease_secs < 3 || r.lease_secs > max {
                return Err(ConfigError::Registry(format!(
                    "lease_secs {}: from 3 to {max}",
                    r.lease_secs
                )));
            }
        }
        if let Some(a) = &self.admin {
            let tls = self.registry.as_ref().is_some_and(|r| r.tls.is_some());
            if !tls && !a.listen.ip().is_loopback() {
                return Err(ConfigError::Admin(format!(
                    "listen {} is not a loopback address: set [edge.registry.tls] so that only the cluster's certificates get in",
                    a.listen
                )));
            }
        }
        if let Some(t) = &self.trunk {
            if t.secret.len() < 16 {
                return Err(ConfigError::Trunk("secret: at least 16 characters".into()));
            }
            if EXAMPLE_SECRETS.contains(&t.secret.as_str()) {
                return Err(ConfigError::Trunk(
                    "secret: the example's; make one (e.g. `openssl rand -hex 24`)".into(),
                ));
            }
            let mut seen = std::collections::HashSet::new();
            for p in &t.peers {
                let id = p.id();
                if !orbit_state::names::is_name(&p.site)
                    || p.name
                        .as_deref()
                        .is_some_and(|n| !orbit_state::names::is_name(n))
                {
                    return Err(ConfigError::Trunk(format!(
                        "peer {id}: not a site/edge name"
                    )));
                }
                if id == self.id() || !seen.insert(id.clone()) {
                    return Err(ConfigError::Trunk(format!(
                        "peer {id}: one entry per other edge"
                    )));
                }
            }
        }
        let code = &self.tenant.features.park;
        if code.is_empty()
            || !code
                .bytes()
                .all(|c| c.is_ascii_digit() || c == b'*' || c == b'#')
        {
            return Err(ConfigError::Lot(format!(
                "feature code {code:?}: digits, * and # only"
            )));
        }
        pickup::validate(
            &self.tenant.pickup_groups,
            &self.tenant.features,
            &self.tenant.extensions,
        )
    }

    /// The tenant's extensions and pickup groups as the orbit state takes them.
    pub fn tenant_seed(&self) -> orbit_state::Command {
        pickup::tenant_seed(
            &self.tenant.domain,
            &self.tenant.pickup_groups,
            &self.tenant.extensions,
        )
    }

    /// The tenant's lots as the orbit state takes them, checked on their own, against each
    /// other (ranges may not overlap, no park extension inside a range) and against the
    /// extensions (no extension number inside a lot; fallbacks must exist).
    pub fn lot_configs(&self) -> Result<Vec<orbit_state::LotConfig>, ConfigError> {
        let mut orbit = orbit_state::Orbit::new();
        let mut out = vec![];
        for l in &self.tenant.lots {
            let c = l.lot_config(&self.tenant.domain)?;
            if out
                .iter()
                .any(|o: &orbit_state::LotConfig| o.park_ext == c.park_ext)
            {
                return Err(ConfigError::Lot(format!(
                    "lot {} is configured twice",
                    c.park_ext
                )));
            }
            orbit
                .apply(0, &orbit_state::Command::SetLot(c.clone()))
                .map_err(|e| {
                    ConfigError::Lot(e.to_string().replace("lot configuration invalid: ", ""))
                })?;
            if let Some(ext) = self
                .tenant
                .extensions
                .keys()
                .find(|e| **e == c.park_ext || e.parse::<u32>().is_ok_and(|n| c.contains(n)))
            {
                return Err(ConfigError::Lot(format!(
                    "extension {ext} collides with lot {} (slots {})",
                    c.park_ext, l.slots
                )));
            }
            if let Some(f) = &c.fallback {
                if !self.tenant.extensions.contains_key(f) {
                    return Err(ConfigError::Lot(format!(
                        "lot {}: fallback {f} is not an extension",
                        c.park_ext
                    )));
                }
            }
            out.push(c);
        }
        Ok(out)
    }

    /// The music files of the lots that name one, read and encoded (a missing or malformed
    /// file is an error at start, not silence later).
    pub fn load_music(
        &self,
    ) -> Result<Vec<(String, std::sync::Arc<orbit_media::Clip>)>, ConfigError> {
        let mut out = vec![];
        for l in &self.tenant.lots {
            if let Some(path) = &l.music {
                let clip = orbit_media::Clip::from_wav_file(path).map_err(|e| {
                    ConfigError::Lot(format!("lot {}: music {path}: {e}", l.park_ext))
                })?;
                out.push((l.park_ext.clone(), std::sync::Arc::new(clip)));
            }
        }
        Ok(out)
    }

    pub fn advertise(&self) -> IpAddr {
        self.sip.advertise.unwrap_or(self.sip.listen.ip())
    }
}

/// `ip` or `ip/prefix` to (network, prefix length).
pub fn parse_net(s: &str) -> Option<(IpAddr, u8)> {
    let (ip, len) = match s.split_once('/') {
        Some((ip, len)) => (ip.parse().ok()?, len.parse().ok()?),
        None => {
            let ip: IpAddr = s.parse().ok()?;
            (ip, if ip.is_ipv4() { 32 } else { 128 })
        }
    };
    let max = if matches!(ip, IpAddr::V4(_)) { 32 } else { 128 };
    (len <= max).then_some((ip, len))
}

pub fn net_contains((net, len): (IpAddr, u8), ip: IpAddr) -> bool {
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => {
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            u32::from(n) & mask == u32::from(i) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(i)) => {
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            u128::from(n) & mask == u128::from(i) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nets() {
        let n = parse_net("10.1.0.0/16").unwrap();
        assert!(net_contains(n, "10.1.200.3".parse().unwrap()));
        assert!(!net_contains(n, "10.2.0.1".parse().unwrap()));
        assert!(net_contains(
            parse_net("127.0.0.1").unwrap(),
            "127.0.0.1".parse().unwrap()
        ));
        assert!(parse_net("10.0.0.0/33").is_none());
    }

    fn with_lots(lots: &str) -> Result<(), String> {
        let text = format!(
            r#"
            [sip]
            listen = "127.0.0.1:5060"
            [media]
            ip = "127.0.0.1"
            port_min = 20000
            port_max = 20999
            [tenant]
            domain = "example.com"
            extensions = {{ "1001" = {{ password = "x" }} }}
            {lots}
            "#
        );
        let cfg: EdgeConfig = toml::from_str(&text).map_err(|e| e.to_string())?;
        cfg.validate().map_err(|e| e.to_string())
    }

    #[test]
    fn a_registry_off_this_host_is_reached_over_mutual_tls_only() {
        let registry =
            |nodes: &str, tls: &str| with_lots(&format!("[registry]\nnodes = [{nodes}]\n{tls}"));
        assert_eq!(
            registry("\"127.0.0.1:50051\", \"localhost:50052\"", ""),
            Ok(())
        );
        let e = registry("\"127.0.0.1:50051\", \"10.0.2.5:50051\"", "").unwrap_err();
        assert!(e.contains("10.0.2.5:50051 is not on this host"), "{e}");
        let e = registry("\"registry.example.com:50051\"", "").unwrap_err();
        assert!(e.contains("[edge.registry.tls]"), "{e}");
        let tls = "[registry.tls]\nca = \"ca.pem\"\ncert = \"a.pem\"\nkey = \"a.key\"\n";
        assert_eq!(registry("\"10.0.2.5:50051\"", tls), Ok(()));
    }

    #[test]
    fn lots_default_and_errors() {
        let text = r#"
            [sip]
            listen = "127.0.0.1:5060"
            [media]
            ip = "127.0.0.1"
            port_min = 20000
            port_max = 20999
            [tenant]
            domain = "example.com"
            extensions = { "1001" = { password = "x" } }
        "#;
        let cfg: EdgeConfig = toml::from_str(text).unwrap();
        let lots = cfg.lot_configs().unwrap();
        assert_eq!(lots.len(), 1);
        let l = &lots[0];
        assert_eq!(
            (
                l.park_ext.as_str(),
                l.first_slot,
                l.last_slot,
                l.parking_ms,
                l.recall_ring_ms
            ),
            ("700", 701, 720, 90_000, 20_000)
        );
        assert_eq!(cfg.tenant.features.park, "*68");

        with_lots("[[tenant.lots]]\nslots = \"701-705\"\nfallback = \"1001\"").unwrap();
        let err = |l: &str| with_lots(l).unwrap_err();
        assert!(err("[[tenant.lots]]\n[[tenant.lots]]\npark_ext = \"800\"").contains("overlap"));
        assert!(err("[[tenant.lots]]\npark_ext = \"705\"").contains("inside"));
        assert!(err("[[tenant.lots]]\nslots = \"1000-1010\"").contains("extension 1001"));
        assert!(err("[[tenant.lots]]\nfallback = \"1999\"").contains("fallback 1999"));
        assert!(err("[[tenant.lots]]\nslots = \"seven\"").contains("not like"));
        assert!(err("[[tenant.lots]]\n[[tenant.lots]]").contains("twice"));
        assert!(err("[[tenant.lots]]\nslot_choice = \"random\"").contains("unknown variant"));
        assert!(err("[tenant.features]\npark = \"*6x\"").contains("feature code"));
    }

    #[test]
    fn lot_music_is_read_at_start() {
        let dir = std::env::temp_dir().join(format!("orbit-music-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("moh.wav");
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 8000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(&good, spec).unwrap();
        for i in 0..8000 {
            w.write_sample(((i % 40) * 500 - 10_000) as i16).unwrap();
        }
        w.finalize().unwrap();
        let cfg_with = |music: &str| -> EdgeConfig {
            toml::from_str(&format!(
                r#"
                [sip]
                listen = "127.0.0.1:5060"
                [media]
                ip = "127.0.0.1"
                port_min = 20000
                port_max = 20999
                [tenant]
                domain = "example.com"
                extensions = {{ "1001" = {{ password = "x" }} }}
                [[tenant.lots]]
                music = "{music}"
                "#
            ))
            .unwrap()
        };
        let loaded = cfg_with(good.to_str().unwrap()).load_music().unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!((loaded[0].0.as_str(), loaded[0].1.frames()), ("700", 50));
        let missing = cfg_with("/nonexistent/moh.wav").load_music().unwrap_err();
        assert!(missing
            .to_string()
            .contains("lot 700: music /nonexistent/moh.wav"));
        std::fs::write(dir.join("bad.wav"), b"RIFF....").unwrap();
        assert!(cfg_with(dir.join("bad.wav").to_str().unwrap())
            .load_music()
            .is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
