//! Getting a command ordered: by this node's Raft if it leads, else forwarded to the leader
//! (over its peer listener, as this node), with what a failure means for the caller (nothing
//! appended, try again; or uncertain, do not simply retry).

use std::sync::Arc;
use std::time::Duration;

use orbit_state::{Command, Event, Rejection};
use tonic::Status;
use tracing::{info_span, Instrument};

use crate::batch::{Batcher, WriteError};
use crate::network::channel;
use crate::pb;
use crate::tls::Tls;
use crate::NodeId;

#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    #[error("no leader known yet")]
    NoLeader,
    #[error("not the leader")]
    NotLeader,
    #[error("leader {0} unreachable: {1}")]
    Forward(NodeId, String),
    /// The node forwarded to leads no more and appended nothing: ask again.
    #[error("node {0} leads no more")]
    LeaderMoved(NodeId),
    #[error("raft: {0}")]
    Raft(String),
}

/// What a committed proposal did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub index: u64,
    pub outcome: Result<Event, Rejection>,
}

/// Order `cmd` here if this node leads; else send it on to the leader, unless it was forwarded
/// already (`may_forward` false: only the leader takes a forwarded proposal, so it cannot loop).
/// In a `registry.propose` span, a child of the caller's trace when `remote` (the request's
/// metadata) carries one.
pub(crate) async fn propose(
    batch: &Batcher,
    fwd: &Forwarder,
    cmd: Command,
    by: Option<String>,
    request: Option<String>,
    may_forward: bool,
    remote: Option<&tonic::metadata::MetadataMap>,
) -> Result<Committed, ProposeError> {
    let span = || info_span!("registry.propose", kind = cmd.kind());
    let span = match remote {
        Some(md) => orbit_trace::continuing_remote(md, span),
        None => orbit_trace::within(None, span),
    };
    async move {
        // A leader that hands over (a transfer, an election) answers what it had not appended
        // with UNAVAILABLE: ask again, and this node's Raft names the new leader. A few times.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let r = match batch
                .submit_as(cmd.clone(), by.clone(), request.clone())
                .await
            {
                Ok(Ok((index, outcome))) => Ok(Committed { index, outcome }),
                Ok(Err(WriteError::NotLeader(f))) => {
                    let (Some(id), Some(node)) = (f.leader_id, f.leader_node) else {
                        return Err(ProposeError::NoLeader);
                    };
                    if !may_forward {
                        return Err(ProposeError::NotLeader);
                    }
                    forward(fwd, id, &node.addr, &cmd, by.as_deref(), request.as_deref()).await
                }
                Ok(Err(e)) => Err(ProposeError::Raft(e.to_string())),
                Err(_) => Err(ProposeError::Raft("registry node stopped".into())),
            };
            match r {
                Err(ProposeError::LeaderMoved(_)) if attempt < 4 => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(ProposeError::LeaderMoved(_)) => return Err(ProposeError::NoLeader),
                r => return r,
            }
        }
    }
    .instrument(span)
    .await
}

/// A proposal that failed, as a status: nothing appended is UNAVAILABLE (try again); a
/// forward that broke midway may have been committed: ABORTED (the client must not simply
/// retry).
pub(crate) fn propose_status(e: ProposeError) -> Status {
    match e {
        ProposeError::NoLeader | ProposeError::NotLeader | ProposeError::LeaderMoved(_) => {
            Status::unavailable(e.to_string())
        }
        ProposeError::Forward(..) => Status::aborted(e.to_string()),
        ProposeError::Raft(_) => Status::internal(e.to_string()),
    }
}

/// Clients of the leaders proposals were forwarded to, kept: a connection per forwarded
/// proposal would cost a TCP and HTTP/2 handshake each.
#[derive(Clone)]
pub(crate) struct Forwarder {
    clients: Arc<
        std::sync::Mutex<
            std::collections::HashMap<
                String,
                pb::registry_client::RegistryClient<tonic::transport::Channel>,
            >,
        >,
    >,
    /// This node's certificate: the leader takes a forwarded proposal from a node only.
    tls: Option<Tls>,
}

impl Forwarder {
    pub(crate) fn new(tls: Option<Tls>) -> Forwarder {
        Forwarder {
            clients: Default::default(),
            tls,
        }
    }

    /// How this node reaches its peers (its certificate, as a node).
    pub(crate) fn tls(&self) -> Option<&Tls> {
        self.tls.as_ref()
    }

    fn client(
        &self,
        leader: NodeId,
        addr: &str,
    ) -> Result<pb::registry_client::RegistryClient<tonic::transport::Channel>, ProposeError> {
        let mut m = self.clients.lock().unwrap();
        if let Some(c) = m.get(addr) {
            return Ok(c.clone());
        }
        let ch = channel(addr, self.tls.as_ref())
            .map_err(|e| ProposeError::Forward(leader, e.to_string()))?;
        let c = pb::registry_client::RegistryClient::new(ch);
        m.insert(addr.to_string(), c.clone());
        Ok(c)
    }
}

/// Send a proposal to the leader (which stamps its own time on it).
async fn forward(
    fwd: &Forwarder,
    leader: NodeId,
    addr: &str,
    cmd: &Command,
    by: Option<&str>,
    request: Option<&str>,
) -> Result<Committed, ProposeError> {
    let mut client = fwd.client(leader, addr)?;
    let command = serde_json::to_vec(cmd).map_err(|e| ProposeError::Raft(e.to_string()))?;
    let reply = tokio::time::timeout(
        Duration::from_secs(3),
        client.propose({
            let mut req = tonic::Request::new(pb::ProposeRequest {
                command,
                forwarded: true,
                edge: by.unwrap_or_default().to_string(),
                request_id: request.unwrap_or_default().to_string(),
            });
            orbit_trace::inject(&mut req);
            req
        }),
    )
    .await
    .map_err(|_| ProposeError::Forward(leader, "timed out".into()))?
    .map_err(|s| {
        use std::error::Error;
        // The node's own answer that it does not lead (not the connection failing, which
        // may have cut an appended proposal's answer off): nothing was appended there.
        let transport = s
            .source()
            .is_some_and(|e| e.is::<tonic::transport::Error>());
        match s.code() {
            tonic::Code::Unavailable if !transport => ProposeError::LeaderMoved(leader),
            _ => ProposeError::Forward(leader, s.message().to_string()),
        }
    })?
    .into_inner();
    let outcome =
        serde_json::from_slice(&reply.outcome).map_err(|e| ProposeError::Raft(e.to_string()))?;
    Ok(Committed {
        index: reply.index,
        outcome,
    })
}
