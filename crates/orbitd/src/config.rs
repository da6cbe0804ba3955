//! The daemon's config file (`orbitd run`, `check-config`): an `[edge]` table, a `[registry]`
//! table, or both; read, checked and turned into what each role starts from.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use orbit_edge::config::EdgeConfig;
use serde::Deserialize;

/// The daemon's config file: an `[edge]` table, a `[registry]` table, or both.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub edge: Option<EdgeConfig>,
    pub registry: Option<RegistrySettings>,
    /// `[telemetry]`: metrics (and, later, traces).
    #[serde(default)]
    pub telemetry: crate::telemetry::TelemetrySettings,
}

/// A registry node's settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrySettings {
    /// Node id, from 1; unique in the cluster, never reused.
    pub id: u64,
    /// gRPC address (Raft between nodes, proposals, membership); the address peers know the
    /// node by. It takes edge and admin traffic too, unless these have their own:
    pub listen: std::net::SocketAddr,
    /// Where the admin API is served (operators, orbitctl), e.g. on a management network; then
    /// `listen` refuses operators' certificates and tokens.
    #[serde(default)]
    pub admin_listen: Option<std::net::SocketAddr>,
    /// Where edges propose and watch; then `listen` refuses edges' certificates (and this
    /// listener everyone else's).
    #[serde(default)]
    pub edge_listen: Option<std::net::SocketAddr>,
    /// Directory of the node's redb file (vote, log, snapshots).
    pub data_dir: PathBuf,
    #[serde(default = "default_heartbeat")]
    pub heartbeat_ms: u64,
    #[serde(default = "default_election_min")]
    pub election_min_ms: u64,
    #[serde(default = "default_election_max")]
    pub election_max_ms: u64,
    /// Mutual TLS for Raft between nodes and for every client (`[registry.tls]`: `ca`, `cert`,
    /// `key`; the certificate names `spiffe://orbit/registry/<id>`). Without it the node
    /// serves plaintext, which is allowed on a loopback address only.
    #[serde(default)]
    pub tls: Option<orbit_registry::TlsFiles>,
    /// Bearer tokens for scripts (`[[registry.tokens]]`: `name`, `role` read or admin, and
    /// `sha256`, the hex SHA-256 of the token: `printf %s "$TOKEN" | sha256sum`), taken by the
    /// admin API in place of a client certificate, over TLS.
    #[serde(default)]
    pub tokens: Vec<TokenSettings>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSettings {
    name: String,
    role: String,
    sha256: String,
}

impl RegistrySettings {
    fn tokens(&self) -> Result<orbit_registry::identity::Tokens> {
        let mut t = orbit_registry::identity::Tokens::default();
        for s in &self.tokens {
            t.add(&s.name, &s.role, &s.sha256)
                .map_err(anyhow::Error::msg)?;
        }
        Ok(t)
    }
}

fn default_heartbeat() -> u64 {
    50
}
fn default_election_min() -> u64 {
    200
}
fn default_election_max() -> u64 {
    400
}

/// A registry node's settings as the node takes them.
pub fn node_config(r: RegistrySettings) -> Result<orbit_registry::NodeConfig> {
    let tls = r.tls.as_ref().map(orbit_registry::Tls::load).transpose()?;
    let tokens = r.tokens()?;
    let mut cfg = orbit_registry::NodeConfig::new(r.id, r.listen, r.data_dir);
    cfg.tokens = tokens;
    cfg.heartbeat = Duration::from_millis(r.heartbeat_ms);
    cfg.election_min = Duration::from_millis(r.election_min_ms);
    cfg.election_max = Duration::from_millis(r.election_max_ms);
    cfg.tls = tls;
    cfg.admin_listen = r.admin_listen;
    cfg.edge_listen = r.edge_listen;
    Ok(cfg)
}

/// Read and check a config file: what `run` and `check-config` both do. Whatever is wrong is
/// a [`BadConfig`](crate::failure::BadConfig) (exit code 78).
pub fn load(path: &Path) -> Result<FileConfig> {
    load_checked(path).map_err(|e| anyhow::Error::new(crate::failure::BadConfig(e)))
}

fn load_checked(path: &Path) -> Result<FileConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let cfg: FileConfig =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    if cfg.edge.is_none() && cfg.registry.is_none() {
        bail!("{}: needs an [edge] or a [registry] table", path.display());
    }
    cfg.telemetry
        .check()
        .with_context(|| format!("checking {}", path.display()))?;
    if let Some(edge) = &cfg.edge {
        edge.validate()
            .with_context(|| format!("checking {}", path.display()))?;
        edge.load_music()
            .with_context(|| format!("checking {}", path.display()))?;
        // The SIP listener's certificate and key (a key others may read is refused).
        crate::edge_tls(edge).with_context(|| format!("checking {}", path.display()))?;
    }
    if let Some(r) = &cfg.registry {
        if r.id == 0 {
            bail!("{}: registry node ids start at 1", path.display());
        }
        let listeners = [
            ("listen", Some(r.listen)),
            ("admin_listen", r.admin_listen),
            ("edge_listen", r.edge_listen),
        ];
        let mut seen = std::collections::BTreeMap::new();
        for (field, addr) in listeners.iter().filter_map(|(f, a)| Some((*f, (*a)?))) {
            if r.tls.is_none() && !addr.ip().is_loopback() {
                bail!(
                    "{}: registry {field} {addr} is not a loopback address: set [registry.tls] (ca, cert, key) so that only the cluster's certificates get in",
                    path.display()
                );
            }
            if let Some(other) = seen.insert(addr, field) {
                bail!(
                    "{}: registry {field} and {other} are both {addr}: give each its own address",
                    path.display()
                );
            }
        }
        if let Some(t) = &r.tls {
            orbit_registry::Tls::load(t).with_context(|| format!("checking {}", path.display()))?;
        }
        r.tokens()
            .with_context(|| format!("checking {}", path.display()))?;
        if !r.tokens.is_empty() && r.tls.is_none() {
            bail!(
                "{}: bearer tokens need [registry.tls] (a token in plaintext is anyone's who sees it)",
                path.display()
            );
        }
        if r.election_min_ms <= r.heartbeat_ms || r.election_max_ms <= r.election_min_ms {
            bail!(
                "{}: registry timing must be heartbeat < election_min < election_max",
                path.display()
            );
        }
    }
    Ok(cfg)
}
