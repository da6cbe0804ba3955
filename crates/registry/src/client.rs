//! The registry as its clients (the edges) see it: proposals that find the leader through any
//! node, and a watch stream that survives node failures and resumes where it left off.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use orbit_state::{Command, Event, Millis, Orbit, Rejection};
use tokio::sync::mpsc;
use tonic::transport::Channel;
use tonic::Code;
use tracing::{debug, info, warn};

use crate::network::channel;
use crate::pb;
use crate::pb::registry_client::RegistryClient;
use crate::tls::Tls;
use crate::Request;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// No node could take the command: nothing was committed.
    #[error("registry unavailable: {0}")]
    Unavailable(String),
    /// The command may or may not have been committed (a timeout or a forward that broke
    /// midway); its event, if any, comes through the watch stream.
    #[error("registry outcome unknown: {0}")]
    Uncertain(String),
    #[error("registry: {0}")]
    Bad(String),
}

/// What the watch stream delivers, in log order.
#[derive(Debug, Clone)]
pub enum WatchUpdate {
    /// Entry `index` applied `cmds` (in order) at the leader's time `at`.
    Applied {
        index: u64,
        at: Millis,
        cmds: Vec<Command>,
    },
    /// The whole state as of `index` (a new watcher, or one too far behind).
    Resync { index: u64, orbit: Box<Orbit> },
}

/// Clients of the registry nodes, the nearest first.
pub struct Link {
    nodes: Vec<(String, RegistryClient<Channel>)>,
    /// The node that answered last (proposals go there first).
    current: AtomicUsize,
}

/// How long a proposal may take in all, retries included: longer than an election.
const PROPOSE_BUDGET: Duration = Duration::from_secs(5);
/// One attempt.
const ATTEMPT: Duration = Duration::from_secs(2);

impl Link {
    /// Clients of `nodes`, over mutual TLS with this edge's certificate when `tls` is given.
    pub fn new(nodes: &[String], tls: Option<&Tls>) -> Result<Link, LinkError> {
        if nodes.is_empty() {
            return Err(LinkError::Bad("no registry nodes".into()));
        }
        let nodes = nodes
            .iter()
            .map(|a| {
                channel(a, tls)
                    .map(|c| (a.clone(), RegistryClient::new(c)))
                    .map_err(|e| LinkError::Bad(format!("{a}: {e}")))
            })
            .collect::<Result<_, _>>()?;
        Ok(Link {
            nodes,
            current: AtomicUsize::new(0),
        })
    }

    /// Have `cmd` committed; its log index and outcome. Retried on another node (after a
    /// pause) only while nothing can have been appended: no leader, node unreachable.
    pub async fn propose(
        &self,
        cmd: &Command,
    ) -> Result<(u64, Result<Event, Rejection>), LinkError> {
        let command = serde_json::to_vec(cmd).map_err(|e| LinkError::Bad(e.to_string()))?;
        let started = tokio::time::Instant::now();
        let mut i = self.current.load(Ordering::Relaxed);
        let mut pause = Duration::from_millis(20);
        loop {
            let (addr, client) = &self.nodes[i % self.nodes.len()];
            let mut client = client.clone();
            let mut req = tonic::Request::new(pb::ProposeRequest {
                command: command.clone(),
                forwarded: false,
                edge: String::new(),
                request_id: String::new(),
            });
            // The edge's span (its `orbit.command`) continues on the registry.
            orbit_trace::inject(&mut req);
            let last = match tokio::time::timeout(ATTEMPT, client.propose(req)).await {
                Err(_) => return Err(LinkError::Uncertain(format!("{addr}: timed out"))),
                Ok(Ok(r)) => {
                    let r = r.into_inner();
                    self.current.store(i % self.nodes.len(), Ordering::Relaxed);
                    let outcome = serde_json::from_slice(&r.outcome)
                        .map_err(|e| LinkError::Bad(e.to_string()))?;
                    return Ok((r.index, outcome));
                }
                Ok(Err(s)) if s.code() == Code::Unavailable => format!("{addr}: {}", s.message()),
                Ok(Err(s)) if matches!(s.code(), Code::Aborted | Code::DeadlineExceeded) => {
                    return Err(LinkError::Uncertain(format!("{addr}: {}", s.message())))
                }
                Ok(Err(s)) => return Err(LinkError::Bad(format!("{addr}: {}", s.message()))),
            };
            if started.elapsed() + pause > PROPOSE_BUDGET {
                return Err(LinkError::Unavailable(last));
            }
            debug!(%last, "proposal not taken; trying again");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(200));
            i += 1;
        }
    }

    /// Follow the applied entries from just after `after`, forever, each sent on `tx` as
    /// `map` makes it: on a broken stream, reconnect (to the next node after a failure) and
    /// resume after the last index delivered. Returns when `tx` is closed.
    pub async fn watch<T>(
        &self,
        mut after: u64,
        tx: mpsc::Sender<T>,
        map: impl Fn(WatchUpdate) -> T,
    ) {
        let mut i = 0usize;
        let mut pause = Duration::from_millis(50);
        loop {
            let (addr, client) = &self.nodes[i % self.nodes.len()];
            let mut client = client.clone();
            match client.watch(pb::WatchRequest { after_index: after }).await {
                Ok(s) => {
                    info!(%addr, after, "watching the registry");
                    let mut s = s.into_inner();
                    loop {
                        match s.message().await {
                            Ok(Some(item)) => {
                                pause = Duration::from_millis(50);
                                let Some(u) = decode(item) else { continue };
                                after = match &u {
                                    WatchUpdate::Applied { index, .. } => *index,
                                    WatchUpdate::Resync { index, .. } => *index,
                                };
                                if tx.send(map(u)).await.is_err() {
                                    return;
                                }
                            }
                            Ok(None) => break,
                            Err(e) => {
                                debug!(%addr, error = %e, "watch stream broke");
                                break;
                            }
                        }
                    }
                }
                Err(e) => debug!(%addr, error = %e, "watch refused"),
            }
            if tx.is_closed() {
                return;
            }
            warn!(%addr, after, "watch interrupted; reconnecting");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
            i += 1;
        }
    }
}

fn decode(item: pb::WatchItem) -> Option<WatchUpdate> {
    match item.item? {
        pb::watch_item::Item::Event(_) => {
            let req: Request = serde_json::from_slice(&item.command)
                .map_err(|e| warn!(error = %e, "undecodable watch entry"))
                .ok()?;
            Some(WatchUpdate::Applied {
                index: item.index,
                at: req.at,
                cmds: req.cmds,
            })
        }
        pb::watch_item::Item::Resync(bytes) => {
            let orbit = serde_json::from_slice(&bytes)
                .map_err(|e| warn!(error = %e, "undecodable watch state"))
                .ok()?;
            Some(WatchUpdate::Resync {
                index: item.index,
                orbit: Box::new(orbit),
            })
        }
    }
}
