//! `orbitd`: the Orbit daemon.
//!
//! - `orbitd dev` starts a whole site on this machine with built-in settings (site A: SIP on
//!   127.0.0.1:5060 UDP+TCP, TLS on 5061 with a generated certificate, RTP 20000–20999,
//!   extensions 1001–1010 with password `pw<ext>`).
//! - `orbitd edge --config FILE` runs an edge from a TOML file (see `config/edge.example.toml`).
//! - `orbitd check-config FILE` validates a file and exits.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use orbit_edge::config::{
    AuthConfig, EdgeConfig, Extension, LimitsConfig, MediaConfig, SipConfig, TenantConfig,
};
use orbit_edge::media::RelayFactory;
use orbit_edge::{driver, Edge};
use orbit_media::PortPool;
use serde::Deserialize;
use tracing::info;

// The SIP core allocates per message (parse spans, response buffers); mimalloc's thread-local
// free lists cost about half of glibc malloc's time there.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "orbitd", version, about = "Orbit multi-site SIP call server")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start a complete system on this machine with built-in dev settings.
    Dev {
        /// Where generated state (the dev TLS certificate) is kept.
        #[arg(long, default_value = "./orbit-data")]
        data_dir: PathBuf,
        /// SIP UDP/TCP listen address of site A.
        #[arg(long, default_value = "127.0.0.1:5060")]
        sip: std::net::SocketAddr,
    },
    /// Run an edge from a config file.
    Edge {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Check a config file and exit.
    CheckConfig { config: PathBuf },
    /// Run a registry node, or change the registry's membership.
    Registry {
        #[command(subcommand)]
        cmd: RegistryCmd,
    },
}

#[derive(Subcommand)]
enum RegistryCmd {
    /// Run a registry node from the `[registry]` table of a config file.
    Run {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Initialise a new cluster on the node at --at: `orbitd registry init --at A 1=A 2=B 3=C`.
    Init {
        #[arg(long)]
        at: String,
        /// Members as `id=host:port`.
        #[arg(required = true)]
        members: Vec<String>,
    },
    /// Add a node as a learner (it copies the log but does not vote): `4=host:port`.
    AddLearner {
        #[arg(long)]
        at: String,
        member: String,
    },
    /// Make a learner a voter.
    Promote {
        #[arg(long)]
        at: String,
        id: u64,
    },
    /// Remove a node (voter or learner) from the cluster.
    Remove {
        #[arg(long)]
        at: String,
        id: u64,
    },
    /// Show the membership and the leader as the node at --at sees them.
    Status {
        #[arg(long)]
        at: String,
    },
}

/// The daemon's config file: an `[edge]` table, a `[registry]` table, or both.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    edge: Option<EdgeConfig>,
    registry: Option<RegistrySettings>,
}

/// A registry node's settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistrySettings {
    /// Node id, from 1; unique in the cluster, never reused.
    id: u64,
    /// gRPC address (Raft between nodes, proposals, membership).
    listen: std::net::SocketAddr,
    /// Directory of the node's redb file (vote, log, snapshots).
    data_dir: PathBuf,
    #[serde(default = "default_heartbeat")]
    heartbeat_ms: u64,
    #[serde(default = "default_election_min")]
    election_min_ms: u64,
    #[serde(default = "default_election_max")]
    election_max_ms: u64,
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

fn parse_member(s: &str) -> Result<(u64, String)> {
    let (id, addr) = s
        .split_once('=')
        .with_context(|| format!("{s:?}: members are written id=host:port"))?;
    let id: u64 = id
        .parse()
        .ok()
        .filter(|i| *i > 0)
        .with_context(|| format!("{s:?}: node ids are numbers from 1"))?;
    addr.parse::<std::net::SocketAddr>()
        .with_context(|| format!("{s:?}: {addr} is not host:port"))?;
    Ok((id, addr.to_string()))
}

fn print_membership(m: &orbit_registry::pb::MembershipReply) {
    let list = |v: &[orbit_registry::pb::Member]| {
        v.iter()
            .map(|m| format!("{}={}", m.id, m.addr))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!(
        "leader:   {}",
        if m.leader == 0 {
            "none".to_string()
        } else {
            m.leader.to_string()
        }
    );
    println!("voters:   {}", list(&m.voters));
    println!("learners: {}", list(&m.learners));
    println!("applied:  {}", m.last_applied);
}

async fn run_registry(r: RegistrySettings) -> Result<()> {
    let mut cfg = orbit_registry::NodeConfig::new(r.id, r.listen, r.data_dir);
    cfg.heartbeat = Duration::from_millis(r.heartbeat_ms);
    cfg.election_min = Duration::from_millis(r.election_min_ms);
    cfg.election_max = Duration::from_millis(r.election_max_ms);
    let node = orbit_registry::Node::start(cfg).await?;
    info!(node = r.id, "registry ready");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: stopping the registry node"),
        _ = tokio::signal::ctrl_c() => info!("Ctrl-C: stopping the registry node"),
    }
    node.shutdown().await;
    Ok(())
}

async fn registry_cmd(cmd: RegistryCmd) -> Result<()> {
    use orbit_registry::admin::{self, Change};
    let m = match cmd {
        RegistryCmd::Run { .. } => unreachable!("handled by the caller"),
        RegistryCmd::Init { at, members } => {
            let members = members
                .iter()
                .map(|m| parse_member(m))
                .collect::<Result<Vec<_>>>()?;
            admin::initialize(&at, members).await?
        }
        RegistryCmd::AddLearner { at, member } => {
            let (id, addr) = parse_member(&member)?;
            admin::change(&at, Change::AddLearner, id, addr).await?
        }
        RegistryCmd::Promote { at, id } => {
            admin::change(&at, Change::Promote, id, String::new()).await?
        }
        RegistryCmd::Remove { at, id } => {
            admin::change(&at, Change::Remove, id, String::new()).await?
        }
        RegistryCmd::Status { at } => admin::status(&at).await?,
    };
    print_membership(&m);
    Ok(())
}

fn load(path: &Path) -> Result<FileConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let cfg: FileConfig =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    if cfg.edge.is_none() && cfg.registry.is_none() {
        bail!("{}: needs an [edge] or a [registry] table", path.display());
    }
    if let Some(edge) = &cfg.edge {
        edge.validate()
            .with_context(|| format!("checking {}", path.display()))?;
        edge.load_music()
            .with_context(|| format!("checking {}", path.display()))?;
    }
    if let Some(r) = &cfg.registry {
        if r.id == 0 {
            bail!("{}: registry node ids start at 1", path.display());
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

fn dev_config(sip: std::net::SocketAddr) -> EdgeConfig {
    let mut extensions = BTreeMap::new();
    for n in 1001..=1010 {
        extensions.insert(
            n.to_string(),
            Extension {
                password: Some(format!("pw{n}")),
                display_name: Some(format!("Ext {n}")),
                ..Default::default()
            },
        );
    }
    EdgeConfig {
        site: "site-a".into(),
        sip: SipConfig {
            listen: sip,
            tls_listen: Some(std::net::SocketAddr::new(sip.ip(), sip.port() + 1)),
            tls_cert: None,
            tls_key: None,
            advertise: None,
            t1_ms: 500,
        },
        media: MediaConfig {
            ip: sip.ip(),
            port_min: 20000,
            port_max: 20999,
            timeout_secs: 60,
            idle_close_secs: 10,
        },
        tenant: TenantConfig {
            domain: "orbit.local".into(),
            realm: None,
            any_host: true,
            extensions,
            lots: vec![Default::default()],
            features: Default::default(),
        },
        // MD5 first: many desk phones and SIPp take the first challenge even when they cannot
        // do its algorithm; SHA-256 (RFC 8760) is offered second. Production configs choose.
        auth: AuthConfig {
            algorithms: vec!["MD5".into(), "SHA-256".into()],
            ..AuthConfig::default()
        },
        limits: LimitsConfig::default(),
        registry: None,
        trunk: None,
    }
}

/// A self-signed certificate for dev mode, made once and kept in the data dir.
fn dev_tls(data_dir: &Path) -> Result<tokio_rustls::TlsAcceptor> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let cert = data_dir.join("dev-cert.pem");
    let key = data_dir.join("dev-key.pem");
    if !cert.exists() || !key.exists() {
        let ck = rcgen::generate_simple_self_signed(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "orbit.local".to_string(),
        ])
        .context("generating dev certificate")?;
        std::fs::write(&cert, ck.cert.pem())?;
        std::fs::write(&key, ck.key_pair.serialize_pem())?;
    }
    tls_from_files(&cert, &key)
}

fn tls_from_files(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor> {
    let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(
        std::fs::File::open(cert).with_context(|| format!("opening {}", cert.display()))?,
    ))
    .collect::<Result<Vec<_>, _>>()
    .with_context(|| format!("reading {}", cert.display()))?;
    let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(
        std::fs::File::open(key).with_context(|| format!("opening {}", key.display()))?,
    ))?
    .with_context(|| format!("no private key in {}", key.display()))?;
    if certs.is_empty() {
        bail!("no certificate in {}", cert.display());
    }
    Ok(orbit_sip::transport::tls_acceptor(certs, key)?)
}

/// The SIP core runs alone on a single-threaded runtime of its own thread (its receive, process,
/// send loop never waits for another thread); media forwarding runs on the main runtime.
async fn run_edge(cfg: EdgeConfig, tls: Option<tokio_rustls::TlsAcceptor>) -> Result<()> {
    let media_rt = tokio::runtime::Handle::current();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let core =
        std::thread::Builder::new()
            .name("sip-core".into())
            .spawn(move || -> Result<()> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(run_core(cfg, tls, media_rt, async {
                    let _ = stop_rx.await;
                }))
            })?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let core_done = tokio::task::spawn_blocking(move || core.join());
    tokio::pin!(core_done);
    tokio::select! {
        _ = tokio::signal::ctrl_c() => info!("Ctrl-C: ending calls"),
        _ = term.recv() => info!("SIGTERM: ending calls"),
        r = &mut core_done => {
            return r.map_err(|e| anyhow::anyhow!("{e}"))?.map_err(|_| anyhow::anyhow!("SIP core panicked"))?;
        }
    }
    let _ = stop_tx.send(());
    core_done
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .map_err(|_| anyhow::anyhow!("SIP core panicked"))?
}

async fn run_core(
    cfg: EdgeConfig,
    tls: Option<tokio_rustls::TlsAcceptor>,
    media_rt: tokio::runtime::Handle,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let cfg = Arc::new(cfg);
    let (mut sockets, local) = driver::bind(&cfg, tls)
        .await
        .with_context(|| format!("binding SIP sockets on {}", cfg.sip.listen))?;
    let pool = PortPool::with_timing(
        cfg.media.ip,
        cfg.media.port_min,
        cfg.media.port_max,
        orbit_media::PoolTiming {
            close_after: Duration::from_secs(cfg.media.idle_close_secs),
            ..Default::default()
        },
    )
    .on_runtime(media_rt);
    info!(
        site = %cfg.site,
        sip = %cfg.sip.listen,
        tls = ?cfg.sip.tls_listen,
        rtp = format!("{}-{}", cfg.media.port_min, cfg.media.port_max),
        extensions = cfg.tenant.extensions.len(),
        "edge started"
    );
    let music = cfg.load_music()?;
    let (media_tx, media_rx) = tokio::sync::mpsc::unbounded_channel();
    sockets.media = Some(media_rx);
    let mut edge = Edge::new(
        cfg.clone(),
        local,
        Box::new(RelayFactory {
            pool,
            events: Some(media_tx),
        }),
        Instant::now(),
    );
    for (lot, clip) in music {
        info!(lot = %lot, seconds = clip.duration().as_secs(), "music on hold loaded");
        edge.set_music(&lot, clip);
    }
    driver::run(edge, sockets, shutdown, Duration::from_secs(5)).await;
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.cmd {
        Cmd::CheckConfig { config } => {
            load(&config)?;
            println!("{}: ok", config.display());
            Ok(())
        }
        Cmd::Registry { cmd } => match cmd {
            RegistryCmd::Run { config } => {
                let r = load(&config)?
                    .registry
                    .with_context(|| format!("{}: no [registry] table", config.display()))?;
                rt.block_on(run_registry(r))
            }
            cmd => rt.block_on(registry_cmd(cmd)),
        },
        Cmd::Edge { config } => {
            let cfg = load(&config)?
                .edge
                .with_context(|| format!("{}: no [edge] table", config.display()))?;
            let tls = match (&cfg.sip.tls_cert, &cfg.sip.tls_key) {
                (Some(c), Some(k)) => Some(tls_from_files(Path::new(c), Path::new(k))?),
                _ => None,
            };
            rt.block_on(run_edge(cfg, tls))
        }
        Cmd::Dev { data_dir, sip } => {
            let cfg = dev_config(sip);
            cfg.validate()?;
            let tls = dev_tls(&data_dir)?;
            println!(
                "Orbit dev: one site\n\
                 \n  site-a  SIP {sip} (UDP+TCP), TLS {}:{}, RTP {}-{}\n\
                 \n  extensions 1001-1010, password pw<ext> (1001/pw1001, ...), any domain\n\
                 \n  call park: transfer a call to 700 (or a slot 701-720); dial the slot to\n\
                 \n  retrieve it; unanswered after 90 s it rings the parker back; lamp keys:\n\
                 \n  SUBSCRIBE (Event: dialog) to 700 or to a slot\n\
                 \n  softphone: server {sip}, user 1001, password pw1001; call 1002 from a second phone\n\
                 \n  Ctrl-C ends calls with BYE and stops.\n",
                sip.ip(),
                sip.port() + 1,
                cfg.media.port_min,
                cfg.media.port_max
            );
            rt.block_on(run_edge(cfg, Some(tls)))
        }
    }
}
