//! One registry node: its store, its Raft, the leader's deadline timer, its admin address
//! announced in the log, and the gRPC listeners for Raft, the registry's service
//! (`service.rs`) and the admin API (`admin_api.rs`), each behind its gate (`listeners.rs`).
//! Proposals are ordered or forwarded in `proposing.rs`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::{BasicNode, Config};
use orbit_state::{Command, Event, Millis};

use tonic::service::interceptor::InterceptedService;

use tracing::{info, info_span, Instrument};

use crate::admin_api::{health_loop, AdminService};
use crate::batch::Batcher;
use crate::listeners::{Gate, Traffic};
use crate::network::{Network, RaftService};
use crate::pb;
use crate::proposing::{propose, Committed, Forwarder, ProposeError};
use crate::service::RegistryService;
use crate::store::{self, StateMachineStore};
use crate::tls::Tls;
use crate::watch::MAX_WATCHERS;
use crate::{NodeId, Raft};

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub id: NodeId,
    /// The gRPC address this node listens on and its peers reach it at.
    pub listen: SocketAddr,
    /// Directory of the node's redb file.
    pub data_dir: PathBuf,
    pub heartbeat: Duration,
    /// Election timeout range; a leader's loss is noticed within its upper end.
    pub election_min: Duration,
    pub election_max: Duration,
    /// Mutual TLS for everything this node serves and sends; none: plaintext, which belongs
    /// on a loopback address only (config refuses it elsewhere).
    pub tls: Option<Tls>,
    /// Bearer tokens the admin API takes in place of a client certificate.
    pub tokens: crate::identity::Tokens,
    /// Where the admin API (and membership changes) is served instead of on `listen`.
    pub admin_listen: Option<SocketAddr>,
    /// Where edges propose and watch instead of on `listen`.
    pub edge_listen: Option<SocketAddr>,
    /// Peers (host:port) to ask to make this node a voter, as `advertise` (`joining.rs`);
    /// empty: the node waits to be initialised or added by an operator.
    pub join: Vec<String>,
    /// The address peers reach this node at (a DNS name under Kubernetes); default `listen`.
    pub advertise: Option<String>,
    /// On the leader: remove members that have not kept up for this long (`pruning.rs`).
    pub remove_unreachable: Option<Duration>,
}

impl NodeConfig {
    pub fn new(id: NodeId, listen: SocketAddr, data_dir: PathBuf) -> NodeConfig {
        NodeConfig {
            id,
            listen,
            data_dir,
            heartbeat: Duration::from_millis(50),
            election_min: Duration::from_millis(200),
            election_max: Duration::from_millis(400),
            tls: None,
            tokens: Default::default(),
            admin_listen: None,
            edge_listen: None,
            join: vec![],
            advertise: None,
            remove_unreachable: None,
        }
    }

    /// Each address the node listens on and the traffic it takes there: `listen` takes
    /// whatever has no listener of its own (everything, by default).
    pub fn listeners(&self) -> Vec<(SocketAddr, Traffic)> {
        let mut v = vec![(
            self.listen,
            Traffic {
                peer: true,
                edge: self.edge_listen.is_none(),
                admin: self.admin_listen.is_none(),
            },
        )];
        if let Some(a) = self.edge_listen {
            v.push((
                a,
                Traffic {
                    peer: false,
                    edge: true,
                    admin: false,
                },
            ));
        }
        if let Some(a) = self.admin_listen {
            v.push((
                a,
                Traffic {
                    peer: false,
                    edge: false,
                    admin: true,
                },
            ));
        }
        v
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("raft: {0}")]
    Raft(String),
    #[error("binding {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error("TLS: {0}")]
    Tls(String),
    /// Raft stopped on its own: a storage error (the disk full or failing). The node takes
    /// no part in the cluster until the process starts again.
    #[error("registry node {node} stopped: {cause} (data in {data_dir})")]
    Stopped {
        node: NodeId,
        cause: String,
        data_dir: PathBuf,
    },
}

pub struct Node {
    pub id: NodeId,
    pub raft: Raft,
    pub state: StateMachineStore,
    /// Set on shutdown: the server stops accepting and every watch stream ends, so that
    /// graceful shutdown completes and nothing keeps the store open.
    closing: tokio::sync::watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
    deadlines: tokio::task::JoinHandle<()>,
    /// Keeps grpc.health.v1 in step with whether a leader is known.
    health: tokio::task::JoinHandle<()>,
    fwd: Forwarder,
    batch: Batcher,
    data_dir: PathBuf,
}

/// How often the leader looks at the earliest deadline when nothing has been applied: the
/// bound on how late an Expire is proposed (plus one commit).
const DEADLINE_POLL: Duration = Duration::from_millis(20);

/// How long a new leader waits before it lapses an edge's lease: an edge whose renewals found
/// no leader tries again within seconds of one (each try retries for up to 5 s, then once a
/// second), and registry faults back to back (a quorum lost, then a leader paused) should not
/// cost every site its parked calls. An edge really gone keeps its slots that much longer.
pub(crate) const LEASE_GRACE: Duration = Duration::from_secs(5);

/// On the leader: propose `Expire` for every park whose deadline has come. A new leader does the
/// same from the state it has, so overdue deadlines fire at once after a failover. Never early
/// (the state machine refuses an Expire stamped before the deadline, and this node waits for
/// the park's gate: its parking time after this node applied it, `log_clock.rs`) and never
/// twice (the state refuses a second Expire for the same park), whoever proposes.
pub(crate) async fn deadline_loop(id: NodeId, raft: Raft, sm: StateMachineStore, batch: Batcher) {
    // The term this node leads and since when (its monotonic clock).
    let mut office: Option<(u64, tokio::time::Instant)> = None;
    loop {
        let notified = sm.applied.notified();
        let (leading, term) = {
            let m = raft.metrics();
            let m = m.borrow();
            (
                m.current_leader == Some(id) && m.state.is_leader(),
                m.current_term,
            )
        };
        let next = if leading {
            sm.data.read().unwrap().orbit.next_deadline()
        } else {
            None
        };
        let mono = tokio::time::Instant::now();
        let now = sm.clock.lock().unwrap().stamp(wall_ms(), mono);
        // The soonest a gate opens on what the stamps say is due.
        let mut gated: Option<tokio::time::Instant> = None;
        let mut gate = |g: Option<tokio::time::Instant>| {
            if let Some(g) = g {
                gated = Some(gated.map_or(g, |x| x.min(g)));
            }
            g.is_none()
        };
        if !leading {
            office = None;
        } else if office.is_none_or(|(t, _)| t != term) {
            office = Some((term, mono));
        }
        if let Some((_, since)) = office {
            // Edges whose lease ran out: their parked calls are lost (once, never early; the
            // state refuses a lapse before the lease's end or after a renewal). Not in a new
            // leader's first moments: leases that ran out while there was no leader had no
            // one to renew them with.
            let lapsed = sm.data.read().unwrap().orbit.lapsed(now);
            let in_office = since + LEASE_GRACE;
            let lapsed: Vec<_> = {
                let clock = sm.clock.lock().unwrap();
                lapsed
                    .into_iter()
                    .filter(|e| {
                        let g = clock.lease_gate(e, mono);
                        gate(match mono < in_office {
                            true => Some(g.map_or(in_office, |g| g.max(in_office))),
                            false => g,
                        })
                    })
                    .collect()
            };
            for edge in lapsed {
                let cmd = Command::LeaseLapse { edge: edge.clone() };
                if let Ok((_, Ok(Event::LeaseLapsed { lost, .. }))) = batch.write(cmd).await {
                    info!(%edge, lost = lost.len(), "edge lease lapsed");
                }
            }
        }
        // All that are due at once, their gates open: they go into one entry.
        let due: Vec<_> = match next {
            Some((at, _)) if at <= now => {
                let due = sm.data.read().unwrap().orbit.due(now);
                let clock = sm.clock.lock().unwrap();
                due.into_iter()
                    .filter(|p| gate(clock.park_gate(*p, mono)))
                    .collect()
            }
            _ => vec![],
        };
        match next {
            Some(_) if !due.is_empty() => {
                let pending: Vec<_> = due
                    .into_iter()
                    .map(|park| {
                        // In the park's trace: the deadline is the park's.
                        let trace = sm
                            .data
                            .read()
                            .unwrap()
                            .orbit
                            .parked(park)
                            .and_then(|p| p.call.trace.clone());
                        let span = orbit_trace::continuing(trace.as_deref(), || {
                            info_span!("registry.expire", park)
                        });
                        let rx = span.in_scope(|| batch.submit(Command::Expire { park }));
                        (park, span, rx)
                    })
                    .collect();
                let mut failed = false;
                for (park, span, rx) in pending {
                    match rx.instrument(span).await {
                        Ok(Ok((_, Ok(Event::Expired(p))))) => info!(
                            park,
                            slot = p.slot,
                            late_ms = wall_ms().saturating_sub(p.deadline),
                            "deadline fired"
                        ),
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => {
                            info!(park, error = %e, "expire not committed; retrying");
                            failed = true;
                        }
                        Err(_) => return, // the node is stopping
                    }
                }
                if failed {
                    tokio::time::sleep(DEADLINE_POLL).await;
                }
            }
            Some((at, _)) => {
                // Not due by the stamps yet, or due and waiting for a gate.
                let wait = match at.checked_sub(now) {
                    Some(ms) if ms > 0 => Duration::from_millis(ms).min(DEADLINE_POLL),
                    _ => DEADLINE_POLL,
                };
                let wait = gated.map_or(wait, |g| wait.min(g.saturating_duration_since(mono)));
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = notified => {}
                }
            }
            None => {
                let wait = gated.map_or(DEADLINE_POLL, |g| {
                    DEADLINE_POLL.min(g.saturating_duration_since(mono))
                });
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = notified => {}
                }
            }
        }
    }
}

/// Milliseconds since the Unix epoch: the wall clock read once, plus tokio's monotonic clock
/// since. A leader's stamps never step back when NTP steps the wall clock, and under a paused
/// tokio clock (the deterministic simulation) time is virtual.
pub(crate) fn wall_ms() -> Millis {
    static BASE: std::sync::OnceLock<(tokio::time::Instant, Millis)> = std::sync::OnceLock::new();
    let (at, wall) = BASE.get_or_init(|| {
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        (tokio::time::Instant::now(), wall)
    });
    wall + at.elapsed().as_millis() as u64
}

/// Have the log say where this node serves operators (`admin_listen`; none: its peer
/// address), so that a client at any node finds the leader's; asked again every second until
/// there is a leader to order it. A wildcard address is announced with the host peers know
/// the node by.
async fn announce_admin(
    id: NodeId,
    admin: Option<SocketAddr>,
    raft: Raft,
    sm: StateMachineStore,
    (batch, fwd): (Batcher, Forwarder),
    mut closed: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let want = admin.and_then(|a| {
            if !a.ip().is_unspecified() {
                return Some(a.to_string());
            }
            let m = raft.metrics().borrow().clone();
            let peer = m.membership_config.membership().get_node(&id)?.addr.clone();
            let host = peer.rsplit_once(':')?.0.to_string();
            Some(format!("{host}:{}", a.port()))
        });
        let have = sm
            .data
            .read()
            .unwrap()
            .orbit
            .node_admin(id)
            .map(str::to_string);
        let known = admin.is_none() || want.is_some();
        if known && have == want {
            return;
        }
        if known {
            let cmd = Command::NodeAdmin {
                node: id,
                addr: want.clone(),
            };
            match propose(&batch, &fwd, cmd, None, None, true, None).await {
                Ok(Committed { outcome: Ok(_), .. }) => {
                    info!(node = id, admin = ?want, "admin address announced");
                    return;
                }
                Ok(Committed {
                    outcome: Err(e), ..
                }) => {
                    tracing::warn!(node = id, error = %e, "admin address refused");
                    return;
                }
                Err(e) => tracing::debug!(node = id, error = %e, "admin address not announced yet"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = closed.wait_for(|c| *c) => return,
        }
    }
}

/// `svc` behind the listener's gate: only its own kind of caller gets in.
fn gated<S>(svc: S, gate: &Gate) -> InterceptedService<S, Gate> {
    InterceptedService::new(svc, gate.clone())
}

/// openraft's settings from a node's config.
pub(crate) fn raft_config(cfg: &NodeConfig) -> Result<Arc<Config>, NodeError> {
    let config = Config {
        cluster_name: "orbit".into(),
        heartbeat_interval: cfg.heartbeat.as_millis() as u64,
        election_timeout_min: cfg.election_min.as_millis() as u64,
        election_timeout_max: cfg.election_max.as_millis() as u64,
        ..Default::default()
    };
    Ok(Arc::new(
        config
            .validate()
            .map_err(|e| NodeError::Raft(e.to_string()))?,
    ))
}

impl Node {
    /// Open the store (restoring what is on disk), start Raft and serve gRPC on `listen`.
    pub async fn start(cfg: NodeConfig) -> Result<Node, NodeError> {
        std::fs::create_dir_all(&cfg.data_dir)
            .map_err(|e| NodeError::Raft(format!("creating {}: {e}", cfg.data_dir.display())))?;
        let (log, sm) = store::open(&cfg.data_dir.join("registry.redb"))?;
        // Every listener before Raft starts: a port in use fails the start with nothing left
        // running.
        let mut bound = vec![];
        for (addr, traffic) in cfg.listeners() {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| NodeError::Bind(addr, e))?;
            bound.push((l, traffic));
        }
        let config = raft_config(&cfg)?;
        let network = Network {
            from: cfg.id,
            tls: cfg.tls.clone(),
            backoff_cap: Network::backoff_cap_for(cfg.heartbeat, cfg.election_min),
        };
        let raft = Raft::new(cfg.id, config, network, log, sm.clone())
            .await
            .map_err(|e| NodeError::Raft(e.to_string()))?;
        let (closing, closed) = tokio::sync::watch::channel(false);
        let tls = cfg.tls.is_some();
        let raft_svc = pb::raft_server::RaftServer::new(RaftService {
            id: cfg.id,
            raft: raft.clone(),
            tls,
        });
        let fwd = Forwarder::new(cfg.tls.clone());
        let watchers = Arc::new(tokio::sync::Semaphore::new(MAX_WATCHERS));
        let batch = Batcher::start(raft.clone(), sm.clock.clone());
        let reg_svc = pb::registry_server::RegistryServer::new(RegistryService {
            raft: raft.clone(),
            sm: sm.clone(),
            fwd: fwd.clone(),
            batch: batch.clone(),
            closed: closed.clone(),
            tls,
            watchers: watchers.clone(),
        });
        let admin_svc = crate::admin_pb::admin_server::AdminServer::new(AdminService {
            raft: raft.clone(),
            sm: sm.clone(),
            closed: closed.clone(),
            tls,
            tokens: std::sync::Arc::new(cfg.tokens.clone()),
            watchers,
            batch: batch.clone(),
            fwd: fwd.clone(),
        });
        let (health, health_svc) = tonic_health::server::health_reporter();
        let health_task = tokio::spawn(health_loop(raft.clone(), health, closed.clone()));
        // Both versions of reflection: grpcurl asks v1, many clients (Python's grpcio) v1alpha.
        let reflect = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(crate::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection_err =
            |e: tonic_reflection::server::Error| NodeError::Raft(format!("reflection: {e}"));
        let reflection = reflect().build_v1().map_err(reflection_err)?;
        let reflection_alpha = reflect().build_v1alpha().map_err(reflection_err)?;
        let tokens = std::sync::Arc::new(cfg.tokens.clone());
        // One task per listener; aborting `server` drops the set, which aborts them all.
        let mut servers = tokio::task::JoinSet::new();
        for (listener, traffic) in bound {
            let gate = Gate {
                traffic,
                tls,
                tokens: tokens.clone(),
            };
            let mut builder = tonic::transport::Server::builder();
            if let Some(t) = &cfg.tls {
                builder = builder
                    .tls_config(t.server())
                    .map_err(|e| NodeError::Tls(e.to_string()))?;
            }
            // Health on every listener, ungated: it tells whether the node serves, no more.
            let router = builder
                .add_service(health_svc.clone())
                .add_service(gated(reg_svc.clone(), &gate));
            let router = router
                .add_optional_service(traffic.peer.then(|| gated(raft_svc.clone(), &gate)))
                .add_optional_service(traffic.admin.then(|| gated(admin_svc.clone(), &gate)))
                .add_optional_service(traffic.admin.then(|| gated(reflection.clone(), &gate)))
                .add_optional_service(
                    traffic
                        .admin
                        .then(|| gated(reflection_alpha.clone(), &gate)),
                );
            // Small Raft messages must not wait for Nagle and delayed ACKs (40 ms on Linux).
            let incoming = tokio_stream::StreamExt::map(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                |s| {
                    s.inspect(|s| {
                        let _ = s.set_nodelay(true);
                    })
                },
            );
            let mut closed = closed.clone();
            servers.spawn(
                async move {
                    let _ = router
                        .serve_with_incoming_shutdown(incoming, async move {
                            let _ = closed.wait_for(|c| *c).await;
                        })
                        .await;
                }
                .instrument(info_span!("registry.grpc", node = cfg.id)),
            );
        }
        let server = tokio::spawn(async move { while servers.join_next().await.is_some() {} });
        let deadlines = tokio::spawn(deadline_loop(
            cfg.id,
            raft.clone(),
            sm.clone(),
            batch.clone(),
        ));
        tokio::spawn(announce_admin(
            cfg.id,
            cfg.admin_listen,
            raft.clone(),
            sm.clone(),
            (batch.clone(), fwd.clone()),
            closed.clone(),
        ));
        if !cfg.join.is_empty() {
            let advertise = cfg
                .advertise
                .clone()
                .unwrap_or_else(|| cfg.listen.to_string());
            tokio::spawn(crate::joining::join_loop(
                raft.clone(),
                cfg.id,
                advertise,
                cfg.join.clone(),
                cfg.tls.clone(),
                closed.clone(),
            ));
        }
        if let Some(after) = cfg.remove_unreachable {
            tokio::spawn(crate::pruning::prune_loop(
                raft.clone(),
                batch.clone(),
                cfg.tls.clone(),
                after,
                closed.clone(),
            ));
        }
        info!(node = cfg.id, listen = %cfg.listen, admin_listen = ?cfg.admin_listen, edge_listen = ?cfg.edge_listen, "registry node started");
        Ok(Node {
            id: cfg.id,
            raft,
            state: sm,
            closing,
            server,
            deadlines,
            health: health_task,
            fwd,
            batch,
            data_dir: cfg.data_dir.clone(),
        })
    }

    /// Make a new cluster of `members` (id → gRPC address). Only on a node with an empty log.
    pub async fn initialize(
        &self,
        members: &BTreeMap<NodeId, SocketAddr>,
    ) -> Result<(), NodeError> {
        let m: BTreeMap<NodeId, BasicNode> = members
            .iter()
            .map(|(id, a)| (*id, BasicNode::new(a.to_string())))
            .collect();
        self.raft
            .initialize(m)
            .await
            .map_err(|e| NodeError::Raft(e.to_string()))
    }

    /// Whether this node is part of a cluster already (its log or vote is not empty).
    pub async fn is_initialized(&self) -> Result<bool, NodeError> {
        self.raft
            .is_initialized()
            .await
            .map_err(|e| NodeError::Raft(e.to_string()))
    }

    /// Order `cmd` through the log (here if this node leads, else at the leader) and return
    /// what applying it did.
    pub async fn propose(&self, cmd: Command) -> Result<Committed, ProposeError> {
        propose(&self.batch, &self.fwd, cmd, None, None, true, None).await
    }

    /// The leader's batching queue of this node (proposals straight to Raft, not forwarded).
    pub fn batcher(&self) -> Batcher {
        self.batch.clone()
    }

    /// Resolves if Raft stops on its own (openraft stops at a storage error: a write to a
    /// full disk, say), with the cause. A node left like that still answered health checks
    /// as serving while it took no part in the cluster.
    pub async fn failed(&self) -> NodeError {
        let mut m = self.raft.metrics();
        let cause = loop {
            if let Err(fatal) = &m.borrow_and_update().running_state {
                break fatal.to_string();
            }
            if m.changed().await.is_err() {
                break "Raft stopped".to_string();
            }
        };
        NodeError::Stopped {
            node: self.id,
            cause,
            data_dir: self.data_dir.clone(),
        }
    }

    /// The orbit state as applied on this node.
    pub fn orbit(&self) -> orbit_state::Orbit {
        self.state.data.read().unwrap().orbit.clone()
    }

    /// Stop Raft and the server (as a crash would, minus the disk: what was flushed stays).
    /// Returns once the store is closed, so the same directory can be opened again at once.
    pub async fn shutdown(self) {
        let Node {
            raft,
            state,
            closing,
            mut server,
            deadlines,
            health,
            ..
        } = self;
        deadlines.abort();
        health.abort();
        let _ = deadlines.await;
        let _ = health.await;
        let _ = raft.shutdown().await;
        let _ = closing.send(true);
        // Graceful shutdown waits for open connections; watch streams end on `closing` and
        // peers' in-flight RPCs are short. Give them a moment, then cut them.
        if tokio::time::timeout(Duration::from_millis(500), &mut server)
            .await
            .is_err()
        {
            server.abort();
            let _ = server.await;
        }
        // Tasks that still hold the store (connection handlers, openraft's state-machine
        // worker) go away on their own shortly after; wait for them rather than leave the
        // redb file locked for whoever opens it next.
        let db = state.db_handle();
        drop((raft, state));
        let t0 = std::time::Instant::now();
        while db.strong_count() > 0 {
            if t0.elapsed() > Duration::from_secs(5) {
                tracing::warn!("registry store still held 5 s after shutdown");
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
