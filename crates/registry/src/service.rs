//! The registry's own gRPC service on a node (`orbit.registry.v1.Registry`): proposals (checked
//! against the caller, forwarded to the leader), the edges' watch stream, membership changes
//! and status.

use std::collections::BTreeMap;
use std::sync::Arc;

use openraft::error::RaftError;
use openraft::BasicNode;
use orbit_state::Command;
use tonic::{Request as GrpcRequest, Response as GrpcResponse, Status};
use tracing::info_span;

use crate::batch::Batcher;
use crate::identity::Access;
use crate::pb;
use crate::proposing::{propose, propose_status, Forwarder};
use crate::store::StateMachineStore;
use crate::watch::{next_items, serve_watch, watch_permit, WATCH_CHUNK};
use crate::{NodeId, Raft};

pub(crate) struct RegistryService {
    pub(crate) raft: Raft,
    pub(crate) sm: StateMachineStore,
    pub(crate) fwd: Forwarder,
    pub(crate) batch: Batcher,
    pub(crate) closed: tokio::sync::watch::Receiver<bool>,
    /// Whether this node serves TLS: then every call is checked against its certificate.
    pub(crate) tls: bool,
    /// Watch streams open on this node (shared with the admin API's), bounded.
    pub(crate) watchers: Arc<tokio::sync::Semaphore>,
}

impl RegistryService {
    fn membership(&self) -> pb::MembershipReply {
        let m = self.raft.metrics().borrow().clone();
        let cfg = m.membership_config.membership();
        let d = self.sm.data.read().unwrap();
        let member = |id: &NodeId| pb::Member {
            id: *id,
            addr: cfg.get_node(id).map(|n| n.addr.clone()).unwrap_or_default(),
            admin_addr: d.orbit.node_admin(*id).unwrap_or_default().to_string(),
        };
        let voters: Vec<pb::Member> = cfg.voter_ids().map(|id| member(&id)).collect();
        let learners: Vec<pb::Member> = cfg.learner_ids().map(|id| member(&id)).collect();
        pb::MembershipReply {
            voters,
            learners,
            leader: m.current_leader.unwrap_or(0),
            last_applied: m.last_applied.map(|l| l.index).unwrap_or(0),
            term: m.current_term,
        }
    }
}

fn node_of(req: GrpcRequest<pb::NodeRequest>) -> Result<pb::Member, Status> {
    let m = req
        .into_inner()
        .node
        .ok_or_else(|| Status::invalid_argument("node missing"))?;
    if m.id == 0 {
        return Err(Status::invalid_argument("node ids start at 1"));
    }
    Ok(m)
}

#[tonic::async_trait]
impl pb::registry_server::Registry for RegistryService {
    type WatchStream = std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = Result<pb::WatchItem, Status>> + Send + 'static>,
    >;

    async fn watch(
        &self,
        req: GrpcRequest<pb::WatchRequest>,
    ) -> Result<GrpcResponse<Self::WatchStream>, Status> {
        Access::of(&req, self.tls)?.read()?;
        let cursor = req.into_inner().after_index;
        let permit = watch_permit(&self.watchers)?;
        let stream = serve_watch(
            self.sm.clone(),
            self.closed.clone(),
            permit,
            cursor,
            |sm, cursor| {
                let (items, next) = next_items(sm, cursor)?;
                let more = items.len() == WATCH_CHUNK;
                Ok((items, next, more))
            },
            info_span!("registry.watch"),
        );
        Ok(GrpcResponse::new(stream))
    }

    async fn propose(
        &self,
        req: GrpcRequest<pb::ProposeRequest>,
    ) -> Result<GrpcResponse<pb::ProposeReply>, Status> {
        let access = Access::of(&req, self.tls)?;
        let (md, _, req) = req.into_parts();
        let cmd: Command = serde_json::from_slice(&req.command)
            .map_err(|e| Status::invalid_argument(format!("bad command: {e}")))?;
        let by = access.propose(
            &cmd,
            req.forwarded,
            &req.edge,
            &self.sm.data.read().unwrap().orbit,
        )?;
        // Request ids come from the admin API of another node only (namespaced there by the
        // caller): nobody else may fill the table of requests seen, nor answer another's.
        let from_node = matches!(
            access,
            Access::Open | Access::Caller(crate::identity::Caller::Node(_))
        );
        let request =
            (from_node && req.forwarded && !req.request_id.is_empty()).then_some(req.request_id);
        let c = propose(
            &self.batch,
            &self.fwd,
            cmd,
            by,
            request,
            !req.forwarded,
            Some(&md),
        )
        .await
        .map_err(propose_status)?;
        Ok(GrpcResponse::new(pb::ProposeReply {
            index: c.index,
            outcome: serde_json::to_vec(&c.outcome).map_err(|e| Status::internal(e.to_string()))?,
        }))
    }

    async fn initialize(
        &self,
        req: GrpcRequest<pb::InitializeRequest>,
    ) -> Result<GrpcResponse<pb::MembershipReply>, Status> {
        Access::of(&req, self.tls)?.admin()?;
        let members = req.into_inner().members;
        if members.is_empty() || members.iter().any(|m| m.id == 0 || m.addr.is_empty()) {
            return Err(Status::invalid_argument(
                "members need ids from 1 and addresses",
            ));
        }
        let m: BTreeMap<NodeId, BasicNode> = members
            .into_iter()
            .map(|m| (m.id, BasicNode::new(m.addr)))
            .collect();
        self.raft.initialize(m).await.map_err(|e| match e {
            RaftError::APIError(e) => Status::failed_precondition(e.to_string()),
            e => Status::internal(e.to_string()),
        })?;
        Ok(GrpcResponse::new(self.membership()))
    }

    async fn add_learner(
        &self,
        req: GrpcRequest<pb::NodeRequest>,
    ) -> Result<GrpcResponse<pb::MembershipReply>, Status> {
        Access::of(&req, self.tls)?.admin()?;
        let m = node_of(req)?;
        crate::membership::add_learner(&self.raft, &self.batch, m.id, m.addr).await?;
        Ok(GrpcResponse::new(self.membership()))
    }

    async fn promote(
        &self,
        req: GrpcRequest<pb::NodeRequest>,
    ) -> Result<GrpcResponse<pb::MembershipReply>, Status> {
        Access::of(&req, self.tls)?.admin()?;
        let m = node_of(req)?;
        crate::membership::promote(&self.raft, &self.batch, m.id).await?;
        Ok(GrpcResponse::new(self.membership()))
    }

    async fn remove(
        &self,
        req: GrpcRequest<pb::NodeRequest>,
    ) -> Result<GrpcResponse<pb::MembershipReply>, Status> {
        Access::of(&req, self.tls)?.admin()?;
        let m = node_of(req)?;
        crate::membership::remove(&self.raft, &self.batch, m.id, 1).await?;
        Ok(GrpcResponse::new(self.membership()))
    }

    async fn join(
        &self,
        req: GrpcRequest<pb::NodeRequest>,
    ) -> Result<GrpcResponse<pb::MembershipReply>, Status> {
        let access = Access::of(&req, self.tls)?;
        let m = node_of(req)?;
        access.join(m.id)?;
        // In a task of its own: a membership change cut off midway (the joiner gone, its
        // deadline up) would leave the cluster in its joint configuration.
        let (raft, batch) = (self.raft.clone(), self.batch.clone());
        tokio::spawn(async move { crate::membership::join(&raft, &batch, m.id, m.addr).await })
            .await
            .map_err(|e| Status::internal(e.to_string()))??;
        Ok(GrpcResponse::new(self.membership()))
    }

    async fn status(
        &self,
        req: GrpcRequest<pb::StatusRequest>,
    ) -> Result<GrpcResponse<pb::MembershipReply>, Status> {
        Access::of(&req, self.tls)?.read()?;
        Ok(GrpcResponse::new(self.membership()))
    }
}
