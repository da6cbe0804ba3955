//! Raft RPCs over gRPC (tonic): the client side openraft calls ([`Network`], [`Peer`]) and the
//! server side that hands requests to the local Raft ([`RaftService`]).
//!
//! Every request names the node it is meant for and the server refuses one meant for another
//! node. Every call is bounded by openraft's hard TTL. A peer that cannot be reached is reported
//! `Unreachable`, which makes openraft back off along [`Peer::backoff`] (50 ms doubling up to
//! [`Network::backoff_cap`]) instead of retrying at the heartbeat rate.

use std::time::{Duration, Instant};

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

use crate::identity::Access;
use crate::pb;
use crate::pb::raft_client::RaftClient;
use crate::tls::Tls;
use crate::{NodeId, Raft, TypeConfig};

/// Connect lazily to `addr` (`host:port`), with a bounded connect time; over mutual TLS with
/// `tls`, which the node at `addr` must then serve with a certificate for that host.
pub fn channel(addr: &str, tls: Option<&Tls>) -> Result<Channel, tonic::transport::Error> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut e = Endpoint::from_shared(format!("{scheme}://{addr}"))?
        .connect_timeout(Duration::from_millis(500))
        .tcp_nodelay(true);
    if let Some(t) = tls {
        e = e.tls_config(t.client())?;
    }
    Ok(e.connect_lazy())
}

/// Makes a [`Peer`] for each node openraft talks to.
#[derive(Clone)]
pub struct Network {
    pub from: NodeId,
    /// This node's certificate, when the cluster speaks TLS.
    pub tls: Option<Tls>,
    /// The longest wait between tries at a peer that cannot be reached: below the shortest
    /// election timeout ([`Network::backoff_cap_for`]).
    pub backoff_cap: Duration,
}

impl Network {
    /// Half the shortest election timeout (at least one heartbeat). A member that restarts
    /// campaigns once a lease and an election timeout pass without word from a leader, and
    /// its higher term unseats the leader the moment the leader's append reaches it (openraft
    /// 0.9 has no pre-vote): the leader must be back at it well before then, not in a 2 s
    /// back-off.
    pub fn backoff_cap_for(heartbeat: Duration, election_min: Duration) -> Duration {
        (election_min / 2).max(heartbeat)
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Peer {
        let mut p = Peer {
            from: self.from,
            target,
            addr: node.addr.clone(),
            tls: self.tls.clone(),
            backoff_cap: self.backoff_cap,
            client: None,
            answered: Instant::now(),
            connected: Instant::now(),
        };
        p.connect();
        p
    }
}

pub struct Peer {
    from: NodeId,
    target: NodeId,
    addr: String,
    tls: Option<Tls>,
    backoff_cap: Duration,
    client: Option<RaftClient<Channel>>,
    /// The last call answered, and the last new connection: see [`Peer::call`].
    answered: Instant,
    connected: Instant,
}

/// How long a peer may go unanswered before its connection is replaced, and how often at
/// most it is.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

#[derive(Clone, Copy)]
enum Kind {
    Append,
    Vote,
    Snapshot,
}

impl Peer {
    /// A new channel to the peer: its first call opens a connection of its own.
    fn connect(&mut self) {
        self.client = channel(&self.addr, self.tls.as_ref())
            .ok()
            .map(RaftClient::new);
        self.connected = Instant::now();
    }

    /// One RPC: the JSON request in, openraft's reply (or its remote error) out.
    ///
    /// A peer unanswered for [`RECONNECT_AFTER`] gets a new connection (once per that time):
    /// after a cut that dropped its packets, a TCP connection recovers only at its next
    /// retransmission, seconds after the network is back, and every request on it waits for
    /// that; a fresh one is through as soon as the network is. Not at every timeout: an
    /// append's limit is one heartbeat (50 ms), which a new TLS connection across a WAN
    /// cannot meet, and a slow answer now and then is no dead connection.
    async fn call<Req, Resp, E>(
        &mut self,
        kind: Kind,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        if self.answered.elapsed() > RECONNECT_AFTER && self.connected.elapsed() > RECONNECT_AFTER {
            self.connect();
        }
        let Some(client) = self.client.as_mut() else {
            let e = std::io::Error::other(format!("node {} has no usable address", self.target));
            return Err(RPCError::Unreachable(Unreachable::new(&e)));
        };
        let payload =
            serde_json::to_vec(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let msg = pb::RaftRequest {
            to_node: self.target,
            from_node: self.from,
            payload,
        };
        let fut = async {
            match kind {
                Kind::Append => client.append_entries(msg).await,
                Kind::Vote => client.vote(msg).await,
                Kind::Snapshot => client.install_snapshot(msg).await,
            }
        };
        let reply = match tokio::time::timeout(option.hard_ttl(), fut).await {
            Err(elapsed) => return Err(RPCError::Network(NetworkError::new(&elapsed))),
            Ok(Err(status)) => {
                return Err(match status.code() {
                    tonic::Code::Unavailable | tonic::Code::FailedPrecondition => {
                        RPCError::Unreachable(Unreachable::new(&status))
                    }
                    _ => RPCError::Network(NetworkError::new(&status)),
                })
            }
            Ok(Ok(r)) => r.into_inner(),
        };
        self.answered = Instant::now();
        match reply.result {
            Some(pb::raft_reply::Result::Ok(b)) => {
                serde_json::from_slice(&b).map_err(|e| RPCError::Network(NetworkError::new(&e)))
            }
            Some(pb::raft_reply::Result::Error(b)) => {
                let e: RaftError<NodeId, E> = serde_json::from_slice(&b)
                    .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            None => {
                let e = std::io::Error::other("empty Raft reply");
                Err(RPCError::Network(NetworkError::new(&e)))
            }
        }
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(Kind::Append, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(Kind::Snapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(Kind::Vote, &rpc, &option).await
    }

    fn backoff(&self) -> Backoff {
        let cap = self.backoff_cap;
        let mut d = Duration::from_millis(50).min(cap);
        Backoff::new(std::iter::from_fn(move || {
            let now = d;
            d = (d * 2).min(cap);
            Some(now)
        }))
    }
}

/// The gRPC face of the local Raft node.
pub struct RaftService {
    pub id: NodeId,
    pub raft: Raft,
    /// Whether the node serves TLS: then only registry nodes may call, each as itself.
    pub tls: bool,
}

impl RaftService {
    /// The request's body, if it comes from the node it names and is meant for this one.
    fn check(&self, req: Request<pb::RaftRequest>) -> Result<pb::RaftRequest, Status> {
        let access = Access::of(&req, self.tls)?;
        let r = req.into_inner();
        let members: Vec<NodeId> = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .nodes()
            .map(|(id, _)| *id)
            .collect();
        access.raft(r.from_node, &members)?;
        if r.to_node != self.id {
            return Err(Status::failed_precondition(format!(
                "this is registry node {}, not node {}",
                self.id, r.to_node
            )));
        }
        Ok(r)
    }
}

fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T, Status> {
    serde_json::from_slice(b)
        .map_err(|e| Status::invalid_argument(format!("bad Raft payload: {e}")))
}

fn reply<T: Serialize, E: Serialize>(r: Result<T, E>) -> Result<Response<pb::RaftReply>, Status> {
    let result = match r {
        Ok(v) => pb::raft_reply::Result::Ok(
            serde_json::to_vec(&v).map_err(|e| Status::internal(e.to_string()))?,
        ),
        Err(e) => pb::raft_reply::Result::Error(
            serde_json::to_vec(&e).map_err(|e| Status::internal(e.to_string()))?,
        ),
    };
    Ok(Response::new(pb::RaftReply {
        result: Some(result),
    }))
}

#[tonic::async_trait]
impl pb::raft_server::Raft for RaftService {
    async fn append_entries(
        &self,
        req: Request<pb::RaftRequest>,
    ) -> Result<Response<pb::RaftReply>, Status> {
        let r = self.check(req)?;
        reply(self.raft.append_entries(decode(&r.payload)?).await)
    }

    async fn vote(&self, req: Request<pb::RaftRequest>) -> Result<Response<pb::RaftReply>, Status> {
        let r = self.check(req)?;
        reply(self.raft.vote(decode(&r.payload)?).await)
    }

    async fn install_snapshot(
        &self,
        req: Request<pb::RaftRequest>,
    ) -> Result<Response<pb::RaftReply>, Status> {
        let r = self.check(req)?;
        reply(self.raft.install_snapshot(decode(&r.payload)?).await)
    }

    async fn campaign(
        &self,
        req: Request<pb::RaftRequest>,
    ) -> Result<Response<pb::RaftReply>, Status> {
        let r = self.check(req)?;
        let leader = self.raft.metrics().borrow().current_leader;
        if leader != Some(r.from_node) {
            return Err(Status::failed_precondition(format!(
                "node {} is not the leader this node knows ({leader:?})",
                r.from_node
            )));
        }
        tracing::info!(
            from = r.from_node,
            "the leader hands leadership over: campaigning"
        );
        self.raft
            .trigger()
            .elect()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(pb::RaftReply {
            result: Some(pb::raft_reply::Result::Ok(Vec::new())),
        }))
    }
}
