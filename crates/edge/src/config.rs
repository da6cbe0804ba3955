//! Edge configuration, as read from the `[edge]` part of the daemon's TOML file.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeConfig {
    /// Site name, used in logs and tags.
    #[serde(default = "default_site")]
    pub site: String,
    pub sip: SipConfig,
    pub media: MediaConfig,
    pub tenant: TenantConfig,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
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

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            algorithms: default_algorithms(),
            nonce_ttl_secs: default_nonce_ttl(),
            trusted: vec![],
            min_expires: default_min_expires(),
            max_expires: default_max_expires(),
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
    /// Requests per second allowed from one source IP (sustained), and the burst above it.
    #[serde(default = "default_rate")]
    pub requests_per_sec: u32,
    #[serde(default = "default_burst")]
    pub burst: u32,
    /// Most concurrent calls; more get 503.
    #[serde(default = "default_max_calls")]
    pub max_calls: usize,
    /// Most open TCP (and, separately, TLS) connections.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

fn default_max_connections() -> usize {
    10_000
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

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_message: default_max_message(),
            max_headers: default_max_headers(),
            requests_per_sec: default_rate(),
            burst: default_burst(),
            max_calls: default_max_calls(),
            max_connections: default_max_connections(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("extension {0}: needs a password or an HA1 hash")]
    NoSecret(String),
    #[error("extension {0}: extensions are digits only")]
    BadExtension(String),
    #[error("media port range {0}-{1} holds no port pair")]
    PortRange(u16, u16),
    #[error("auth: unknown algorithm {0} (use SHA-256 or MD5)")]
    Algorithm(String),
    #[error("auth: bad trusted network {0}")]
    Trusted(String),
    #[error("TLS needs both tls_cert and tls_key")]
    TlsFiles,
}

impl EdgeConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (ext, e) in &self.tenant.extensions {
            if ext.is_empty() || !ext.bytes().all(|c| c.is_ascii_digit()) {
                return Err(ConfigError::BadExtension(ext.clone()));
            }
            if e.password.is_none() && e.ha1_md5.is_none() && e.ha1_sha256.is_none() {
                return Err(ConfigError::NoSecret(ext.clone()));
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
        Ok(())
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
}
