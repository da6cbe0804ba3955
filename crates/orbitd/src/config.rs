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
    /// Peers to ask to make this node a voter (host:port; e.g. the other pods of the
    /// StatefulSet): a new node joins by itself, and one removed while away joins again.
    #[serde(default)]
    pub join: Vec<String>,
    /// The address peers reach this node at, as `join` gives it (host:port; default `listen`).
    #[serde(default)]
    pub advertise: Option<String>,
    /// On the leader: remove a member that has not kept up for this long (a pod of a
    /// scaled-down StatefulSet), one at a time, never below three voters. Absent: never.
    #[serde(default)]
    pub remove_unreachable_secs: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSettings {
    name: String,
    role: String,
    sha256: String,
}

impl RegistrySettings {
    /// `join`, `advertise` and `remove_unreachable_secs`.
    fn check_membership(&self) -> Result<()> {
        for a in self.join.iter().chain(&self.advertise) {
            if !orbit_state::is_host_port(a) {
                bail!("registry join/advertise {a:?}: host:port");
            }
        }
        if !self.join.is_empty() && self.advertise.is_none() && self.listen.ip().is_unspecified() {
            bail!(
                "registry join: set advertise to the address peers reach this node at (listen {} is every address)",
                self.listen
            );
        }
        if self.remove_unreachable_secs.is_some_and(|s| s < 10) {
            bail!(
                "registry remove_unreachable_secs: at least 10 (a restart must not read as gone)"
            );
        }
        Ok(())
    }

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
    r.check_membership()?;
    let mut cfg = orbit_registry::NodeConfig::new(r.id, r.listen, r.data_dir);
    cfg.tokens = tokens;
    cfg.heartbeat = Duration::from_millis(r.heartbeat_ms);
    cfg.election_min = Duration::from_millis(r.election_min_ms);
    cfg.election_max = Duration::from_millis(r.election_max_ms);
    cfg.tls = tls;
    cfg.admin_listen = r.admin_listen;
    cfg.edge_listen = r.edge_listen;
    cfg.join = r.join;
    cfg.advertise = r.advertise;
    cfg.remove_unreachable = r.remove_unreachable_secs.map(Duration::from_secs);
    Ok(cfg)
}

/// Read and check a config file: what `run` and `check-config` both do. Whatever is wrong is
/// a [`BadConfig`](crate::failure::BadConfig) (exit code 78).
/// `${NAME}` in a config file replaced by the environment's `NAME` (letters, digits and `_`):
/// what differs between the replicas of one config (a pod's address, a node id from its
/// ordinal) and what belongs in a secret rather than a file (the trunk secret). A variable
/// that is not set, or whose value would end its TOML string (a quote, a backslash, a control
/// character), is an error naming it and its line. Comment lines are left as they are.
pub fn expand_env(text: &str, var: impl Fn(&str) -> Option<String>) -> Result<String> {
    let mut out = String::with_capacity(text.len());
    for (n, line) in text.split_inclusive('\n').enumerate() {
        // A comment line may show a `${NAME}` (documenting a variable) without setting it.
        if line.trim_start().starts_with('#') {
            out.push_str(line);
            continue;
        }
        let mut rest = line;
        while let Some(i) = rest.find("${") {
            out.push_str(&rest[..i]);
            let after = &rest[i + 2..];
            let Some(end) = after.find('}') else {
                bail!("line {}: ${{ without its closing }}", n + 1);
            };
            let name = &after[..end];
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                bail!(
                    "line {}: ${{{name}}}: a variable is letters, digits and _",
                    n + 1
                );
            }
            let Some(value) = var(name) else {
                bail!("line {}: ${{{name}}}: {name} is not set", n + 1);
            };
            if value
                .chars()
                .any(|c| c == '"' || c == '\\' || c.is_control())
            {
                bail!(
                    "line {}: ${{{name}}}: its value has a quote, a backslash or a control character",
                    n + 1
                );
            }
            out.push_str(&value);
            rest = &after[end + 1..];
        }
        out.push_str(rest);
    }
    Ok(out)
}

pub fn load(path: &Path) -> Result<FileConfig> {
    load_checked(path).map_err(|e| anyhow::Error::new(crate::failure::BadConfig(e)))
}

fn load_checked(path: &Path) -> Result<FileConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let text = expand_env(&text, |k| std::env::var(k).ok())
        .with_context(|| format!("reading {}", path.display()))?;
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
        r.check_membership()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_come_from_the_environment_and_bad_ones_name_their_line() {
        let env = |k: &str| match k {
            "POD_IP" => Some("10.0.3.7".to_string()),
            "NODE_ID" => Some("2".to_string()),
            "EVIL" => Some("x\"\nid = 9".to_string()),
            _ => None,
        };
        let text = "[registry]\nid = ${NODE_ID}\nlisten = \"${POD_IP}:50051\"\n";
        assert_eq!(
            expand_env(text, env).unwrap(),
            "[registry]\nid = 2\nlisten = \"10.0.3.7:50051\"\n"
        );
        assert_eq!(expand_env("a = \"$HOME\"", env).unwrap(), "a = \"$HOME\"");
        let comment = "  # set ${UNSET} in the pod\nid = ${NODE_ID}\n";
        assert_eq!(
            expand_env(comment, env).unwrap(),
            "  # set ${UNSET} in the pod\nid = 2\n"
        );
        for (bad, says) in [
            (
                "x\nsecret = \"${TRUNK}\"",
                "line 2: ${TRUNK}: TRUNK is not set",
            ),
            ("s = \"${EVIL}\"", "line 1: ${EVIL}: its value has a quote"),
            (
                "s = \"${POD IP}\"",
                "line 1: ${POD IP}: a variable is letters",
            ),
            ("s = \"${POD_IP\"", "line 1: ${ without its closing }"),
        ] {
            let e = expand_env(bad, env).unwrap_err().to_string();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }

    #[test]
    fn join_advertise_and_removal_are_checked_with_the_file() {
        let dir = std::env::temp_dir().join(format!("orbit-config-join-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("registry.toml");
        let with = |extra: &str| {
            std::fs::write(
                &path,
                format!("[registry]\nid = 4\nlisten = \"127.0.0.1:50051\"\ndata_dir = \"/tmp/x\"\n{extra}"),
            )
            .unwrap();
            load_checked(&path)
                .map(|_| ())
                .map_err(|e| format!("{e:#}"))
        };
        let good = "join = [\"orbit-registry-0.orbit-registry:50051\"]\nadvertise = \"orbit-registry-3.orbit-registry:50051\"\nremove_unreachable_secs = 600\n";
        assert_eq!(with(good), Ok(()));
        for (bad, says) in [
            (
                "join = [\"no port\"]\n",
                "registry join/advertise \"no port\": host:port",
            ),
            ("advertise = \"x:0\"\n", "host:port"),
            ("remove_unreachable_secs = 3\n", "at least 10"),
        ] {
            let e = with(bad).unwrap_err();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
        // Listening on every address, a node must say which is its own.
        let r: RegistrySettings = toml::from_str(
            "id = 4\nlisten = \"0.0.0.0:50051\"\ndata_dir = \"/x\"\njoin = [\"a:1\"]\n",
        )
        .unwrap();
        let e = r.check_membership().unwrap_err().to_string();
        assert!(e.contains("set advertise"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
