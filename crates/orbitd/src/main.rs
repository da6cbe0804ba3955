//! `orbitd`: the Orbit daemon.
//!
//! - `orbitd dev` starts a whole site on this machine with built-in settings (site A: SIP on
//!   127.0.0.1:5060 UDP+TCP, TLS on 5061 with a generated certificate, RTP 20000–20999,
//!   extensions 1001–1010 with password `pw<ext>`).
//! - `orbitd edge --config FILE` runs an edge from a TOML file (see `config/edge.example.toml`).
//! - `orbitd check-config FILE` validates a file and exits.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use config::{load, node_config, FileConfig, RegistrySettings};
use orbit_edge::config::EdgeConfig;
use orbit_edge::{driver, Edge};
use orbit_media::PortPool;
use tracing::{error, info};

mod config;
mod dev;
mod edge_admin;
mod failure;
mod link;
mod pki;
mod succession;
mod telemetry;
mod traces;

// The SIP core allocates per message (parse spans, response buffers); mimalloc's thread-local
// free lists cost about half of glibc malloc's time there.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "orbitd", version, about = "Orbit multi-site SIP call server")]
struct Cli {
    /// How log lines are written on stderr: text for people, json for log collectors.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log: LogFormat,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start a complete system on this machine with built-in dev settings.
    Dev {
        /// Where generated state is kept: the registry's disks, the dev TLS certificate, the
        /// trunk secret.
        #[arg(long, default_value = "./orbit-data")]
        data_dir: PathBuf,
        /// SIP UDP/TCP listen address of site A; sites B and C listen 10 and 20 ports higher.
        #[arg(long, default_value = "127.0.0.1:5060")]
        sip: std::net::SocketAddr,
        /// gRPC port of registry node 1; nodes 2 and 3 take the next two.
        #[arg(long, default_value_t = 50051)]
        grpc: u16,
        /// First RTP port of site A; sites B and C start 1000 and 2000 higher.
        #[arg(long, default_value_t = 20000)]
        rtp: u16,
    },
    /// Run an edge from a config file.
    Edge {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run every role a config file has: `[registry]`, `[edge]`, or both.
    Run {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Check a config file and exit.
    CheckConfig { config: PathBuf },
    /// Issue the cluster's certificates from a CA of its own (made on first use): for a
    /// small deployment or a first start (compose, a Kubernetes Job); larger ones bring their
    /// own CA (cert-manager), with the same SPIFFE IDs.
    Pki {
        #[command(subcommand)]
        cmd: pki::PkiCmd,
    },
    /// Run a registry node, or change the registry's membership.
    Registry {
        #[command(subcommand)]
        cmd: RegistryCmd,
        #[command(flatten)]
        tls: ClientTlsArgs,
    },
}

/// The certificate a command-line client shows a registry that speaks mutual TLS: the three
/// flags, or the same from the environment, or else the admin certificate `orbitd dev` made
/// under `./orbit-data/pki` if it is there.
#[derive(clap::Args)]
struct ClientTlsArgs {
    /// The cluster's CA certificate (PEM).
    #[arg(long, env = "ORBIT_CA", global = true, requires_all = ["cert", "key"])]
    ca: Option<PathBuf>,
    /// This client's certificate (PEM), naming an admin (`spiffe://orbit/admin/<name>`).
    #[arg(long, env = "ORBIT_CERT", global = true, requires_all = ["ca", "key"])]
    cert: Option<PathBuf>,
    /// Its private key (PEM, readable by its owner only).
    #[arg(long, env = "ORBIT_KEY", global = true, requires_all = ["ca", "cert"])]
    key: Option<PathBuf>,
}

impl ClientTlsArgs {
    fn load(&self) -> Result<Option<orbit_registry::Tls>> {
        Ok(orbit_registry::tls::cli_tls(
            self.ca.as_deref(),
            self.cert.as_deref(),
            self.key.as_deref(),
        )?)
    }
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

fn parse_member(s: &str) -> Result<(u64, String)> {
    let (id, addr) = s
        .split_once('=')
        .with_context(|| format!("{s:?}: members are written id=host:port"))?;
    let id: u64 = id
        .parse()
        .ok()
        .filter(|i| *i > 0)
        .with_context(|| format!("{s:?}: node ids are numbers from 1"))?;
    // An address or a DNS name (a Kubernetes Service's), as the certificates name nodes.
    if !orbit_state::is_host_port(addr) {
        anyhow::bail!("{s:?}: {addr} is not host:port");
    }
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
    println!("term:     {}", m.term);
}

/// Every role of a config file in one process: a registry node, an edge, or both (the node
/// starts first, so that the edge's link finds it).
async fn run_roles(f: FileConfig, tls: Option<tokio_rustls::TlsAcceptor>) -> Result<()> {
    match (f.registry, f.edge) {
        (Some(r), None) => run_registry(r).await,
        (None, Some(edge)) => run_sites(vec![(edge, tls)], std::future::pending())
            .await
            .map(|_| ()),
        (Some(r), Some(edge)) => {
            let id = r.id;
            let node = orbit_registry::Node::start(node_config(r)?).await?;
            // A registry node that stops on its own (its disk full) ends the process, after
            // draining the edge as a SIGTERM would: a supervisor starts it again.
            let mut failed = None;
            let result = run_sites(vec![(edge, tls)], async {
                let e = node.failed().await;
                error!(node = id, error = %e, "the registry node stopped; draining the edge");
                failed = Some(e);
            })
            .await;
            if let Some(e) = failed {
                node.shutdown().await;
                return Err(e.into());
            }
            // An operator drained the edge: the registry node is still a voter, and stays
            // until the process is told to stop.
            if let Ok(false) = result {
                info!(node = id, "edge drained; the registry node keeps running");
                tokio::select! {
                    r = until_signal() => r?,
                    e = node.failed() => {
                        node.shutdown().await;
                        return Err(e.into());
                    }
                }
            }
            node.shutdown().await;
            result.map(|_| ())
        }
        (None, None) => bail!("the config file has neither [edge] nor [registry]"),
    }
}

async fn run_registry(r: RegistrySettings) -> Result<()> {
    let id = r.id;
    let node = orbit_registry::Node::start(node_config(r)?).await?;
    info!(node = id, "registry ready");
    tokio::select! {
        r = until_signal() => r?,
        // Stopped on its own (its disk full): the process ends, with the cause, so that a
        // supervisor notices and starts it again once the disk is mended.
        e = node.failed() => {
            node.shutdown().await;
            return Err(e.into());
        }
    }
    node.shutdown().await;
    Ok(())
}

/// Until SIGTERM or Ctrl-C.
async fn until_signal() -> Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: stopping the registry node"),
        _ = tokio::signal::ctrl_c() => info!("Ctrl-C: stopping the registry node"),
    }
    Ok(())
}

async fn registry_cmd(cmd: RegistryCmd, tls: ClientTlsArgs) -> Result<()> {
    use orbit_registry::admin::{self, Change};
    let tls = tls.load()?;
    let tls = tls.as_ref();
    let m = match cmd {
        RegistryCmd::Run { .. } => unreachable!("handled by the caller"),
        RegistryCmd::Init { at, members } => {
            let members = members
                .iter()
                .map(|m| parse_member(m))
                .collect::<Result<Vec<_>>>()?;
            admin::initialize(&at, tls, members).await?
        }
        RegistryCmd::AddLearner { at, member } => {
            let (id, addr) = parse_member(&member)?;
            admin::change(&at, tls, Change::AddLearner, id, addr).await?
        }
        RegistryCmd::Promote { at, id } => {
            admin::change(&at, tls, Change::Promote, id, String::new()).await?
        }
        RegistryCmd::Remove { at, id } => {
            admin::change(&at, tls, Change::Remove, id, String::new()).await?
        }
        RegistryCmd::Status { at } => admin::status(&at, tls).await?,
    };
    print_membership(&m);
    Ok(())
}

/// The TLS listener's certificate from an edge's config, when it names one.
fn edge_tls(cfg: &EdgeConfig) -> Result<Option<tokio_rustls::TlsAcceptor>> {
    match (&cfg.sip.tls_cert, &cfg.sip.tls_key) {
        (Some(c), Some(k)) => Ok(Some(tls_from_files(Path::new(c), Path::new(k))?)),
        _ => Ok(None),
    }
}

/// A self-signed certificate for dev mode, made once and kept in the data dir.
pub(crate) fn dev_tls(data_dir: &Path) -> Result<tokio_rustls::TlsAcceptor> {
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
        orbit_registry::dev_pki::write_private(&key, &ck.key_pair.serialize_pem())?;
    }
    tls_from_files(&cert, &key)
}

fn tls_from_files(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor> {
    let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(
        std::fs::File::open(cert).with_context(|| format!("opening {}", cert.display()))?,
    ))
    .collect::<Result<Vec<_>, _>>()
    .with_context(|| format!("reading {}", cert.display()))?;
    // Refused if others may read it, as the control plane's keys are.
    let pem = orbit_registry::tls::read_private(key)?;
    let key = rustls_pemfile::private_key(&mut pem.as_slice())?
        .with_context(|| format!("no private key in {}", key.display()))?;
    if certs.is_empty() {
        bail!("no certificate in {}", cert.display());
    }
    Ok(orbit_sip::transport::tls_acceptor(certs, key)?)
}

/// Each site's SIP core runs alone on a single-threaded runtime of its own thread (its receive,
/// process, send loop never waits for another thread); media forwarding and the registry link
/// run on the main runtime. Ctrl-C or SIGTERM drains every site; an operator's drain
/// (`orbitctl edge drain`) ends one site's core on its own. Returns once every site has
/// drained: true if a signal asked for it; the first error of a site that failed.
pub(crate) async fn run_sites(
    sites: Vec<(EdgeConfig, Option<tokio_rustls::TlsAcceptor>)>,
    stop: impl std::future::Future<Output = ()>,
) -> Result<bool> {
    // Polled only until it or a signal asks for the drain (a finished future is not polled).
    let mut stop = std::pin::pin!(stop);
    let main_rt = tokio::runtime::Handle::current();
    let mut stops = vec![];
    let mut cores = tokio::task::JoinSet::new();
    for (cfg, tls) in sites {
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        stops.push(stop_tx);
        let rt = main_rt.clone();
        let core = std::thread::Builder::new()
            .name(format!("sip-{}", cfg.id()))
            .spawn(move || -> Result<()> {
                let local = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                local.block_on(run_core(cfg, tls, rt, async {
                    let _ = stop_rx.await;
                }))
            })?;
        cores.spawn_blocking(move || core.join());
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut signalled = false;
    let mut first_error = None;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c(), if !signalled => {
                info!("Ctrl-C: draining");
                signalled = true;
            }
            _ = term.recv(), if !signalled => {
                info!("SIGTERM: draining");
                signalled = true;
            }
            _ = &mut stop, if !signalled => signalled = true,
            r = cores.join_next() => match r {
                None => break,
                Some(r) => {
                    let r = r?
                        .map_err(|_| anyhow::anyhow!("SIP core panicked"))
                        .and_then(|r| r);
                    // A site that fails (it cannot bind, say) stops the others too.
                    if let Err(e) = r {
                        first_error.get_or_insert(e);
                        signalled = true;
                    }
                }
            },
        }
        if signalled {
            for s in stops.drain(..) {
                let _ = s.send(());
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(signalled),
    }
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
    // The core plans the relay's ports; the driver binds them, on the media runtime.
    let pool = PortPool::placed(cfg.media.ip).on_runtime(media_rt.clone());
    info!(
        edge = %cfg.id(),
        sip = %cfg.sip.listen,
        tls = ?cfg.sip.tls_listen,
        rtp = format!("{}-{}", cfg.media.port_min, cfg.media.port_max),
        extensions = cfg.tenant.extensions.len(),
        "edge started"
    );
    let music = cfg.load_music()?;
    sockets.media = Some(driver::MediaIo::new(pool));
    let mut edge = Edge::new(cfg.clone(), local, start_now());
    for (lot, clip) in music {
        info!(lot = %lot, seconds = clip.duration().as_secs(), "music on hold loaded");
        edge.set_music(&lot, clip);
    }
    if let Some(a) = &cfg.admin {
        let tls = cfg
            .registry
            .as_ref()
            .and_then(|r| r.tls.as_ref())
            .map(|t| {
                orbit_registry::Tls::load(&orbit_registry::TlsFiles {
                    ca: t.ca.clone(),
                    cert: t.cert.clone(),
                    key: t.key.clone(),
                })
            })
            .transpose()?;
        sockets.admin = Some(edge_admin::start(
            cfg.id(),
            a.listen,
            tls.as_ref(),
            &media_rt,
        )?);
    }
    // Held (its lock) until the edge stops.
    let mut state_lock = None;
    if let Some(r) = &cfg.registry {
        sockets.orbit = Some(link::start(r, &media_rt, 0)?);
        if let Some(dir) = &cfg.state_dir {
            state_lock = Some(succession::hold(dir)?);
            let previous = succession::previous(dir)?;
            succession::keep(dir, edge.incarnation())?;
            edge = edge.replacing(previous);
        }
        let now = tokio::time::Instant::now().into_std();
        edge = edge.with_registry(now, Duration::from_secs(r.lease_secs));
        info!(edge = %cfg.id(), nodes = ?r.nodes, "orbit state from the registry");
    }
    let grace = Duration::from_secs(cfg.drain_secs);
    driver::run(edge, sockets, shutdown, grace).await;
    drop(state_lock);
    Ok(())
}

/// An edge's start: the process's clock (tokio's, so that tests can pause it), the wall
/// clock read once, identifiers from the operating system's entropy.
fn start_now() -> orbit_edge::Start {
    let wall_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    orbit_edge::Start {
        now: tokio::time::Instant::now().into_std(),
        wall_ms,
        ids: orbit_sip::ids::Ids::from_entropy(),
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => failure::report(&e),
    }
}

/// Logs on stderr: what a person cares about at INFO (`RUST_LOG` changes it), as text or as
/// one JSON object per line. openraft's own lines at ERROR only: its warnings are the expected
/// races of an election (the node logs leadership changes itself); and none from its
/// replication, which logs every append that outlives its 50 ms (one heartbeat) at ERROR and
/// tries again: under load or a partition, a line per heartbeat. The leader says itself when a
/// member stops taking the log (`orbit_registry`'s followers).
/// With `traces`, the spans go to its collector too, whatever `RUST_LOG` keeps off the log:
/// quiet logs must not mean no traces.
fn logs(format: LogFormat, traces: Option<&traces::Tracing>) {
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,openraft=error,openraft::replication=off".into());
    let fmt = tracing_subscriber::fmt::layer()
        .with_target(false)
        .with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Text => fmt
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .boxed(),
        LogFormat::Json => fmt.json().with_current_span(true).boxed(),
    };
    tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(traces.map(|t| t.layer()))
        .init();
}

/// What `[telemetry]` asks for: metrics served, traces sent (then the logs start here, with
/// the spans going to the collector too). `instance` names this process in its spans.
fn telemetry_of(
    rt: &tokio::runtime::Runtime,
    t: &telemetry::TelemetrySettings,
    format: LogFormat,
    instance: &str,
) -> Result<Option<traces::Tracing>> {
    let _in = rt.enter();
    let tracing = match &t.otlp_endpoint {
        Some(e) => Some(traces::start(e, t.trace_sampling, instance)?),
        None => None,
    };
    logs(format, tracing.as_ref());
    if let Some(listen) = t.metrics_listen {
        telemetry::serve(listen, &t.metrics_allow)?;
    }
    Ok(tracing)
}

/// How a process names itself in its spans: its edge's identity, its registry node, or both.
fn instance_of(f: &config::FileConfig) -> String {
    let edge = f.edge.as_ref().map(|e| e.id());
    let node = f.registry.as_ref().map(|r| format!("registry-{}", r.id));
    edge.into_iter().chain(node).collect::<Vec<_>>().join(",")
}

/// What runs from a config file.
enum Role {
    Registry,
    Edge,
    /// Every table the file has.
    All,
}

fn run(cli: Cli) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let format = cli.log;
    let (config, role) = match cli.cmd {
        Cmd::Registry {
            cmd: RegistryCmd::Run { config },
            ..
        } => (config, Role::Registry),
        Cmd::Edge { config } => (config, Role::Edge),
        Cmd::Run { config } => (config, Role::All),
        Cmd::CheckConfig { config } => {
            logs(format, None);
            load(&config)?;
            println!("{}: ok", config.display());
            return Ok(());
        }
        Cmd::Registry { cmd, tls } => {
            logs(format, None);
            return rt.block_on(registry_cmd(cmd, tls));
        }
        Cmd::Pki { cmd } => return pki::run(cmd),
        Cmd::Dev {
            data_dir,
            sip,
            grpc,
            rtp,
        } => {
            logs(format, None);
            return rt.block_on(dev::run(data_dir, sip, grpc, rtp));
        }
    };
    // A config that does not load is reported before any log line.
    let f = load(&config)?;
    let tracing = telemetry_of(&rt, &f.telemetry, format, &instance_of(&f))?;
    let missing = |table: &str| {
        anyhow::Error::new(failure::BadConfig(anyhow::anyhow!(
            "{}: no [{table}] table",
            config.display()
        )))
    };
    let r = match role {
        Role::Registry => match f.registry {
            Some(r) => rt.block_on(run_registry(r)),
            None => Err(missing("registry")),
        },
        Role::Edge => match f.edge {
            Some(cfg) => edge_tls(&cfg).and_then(|tls| {
                rt.block_on(run_sites(vec![(cfg, tls)], std::future::pending()))
                    .map(|_| ())
            }),
            None => Err(missing("edge")),
        },
        Role::All => {
            let tls = match &f.edge {
                Some(e) => edge_tls(e),
                None => Ok(None),
            };
            tls.and_then(|tls| rt.block_on(run_roles(f, tls)))
        }
    };
    if let Some(t) = tracing {
        t.flush();
    }
    r
}
