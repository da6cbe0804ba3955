//! The operator's API on every registry node (`proto/orbit/admin/v1/admin.proto`, issue 11):
//! the cluster's status, the parked calls and the lots, read from this node's replica of the
//! state; park events as they are applied; lots created, changed and deleted through the log.
//! Beside it on the same listener: `grpc.health.v1` (serving while the node knows a leader)
//! and server reflection, so that generic gRPC clients need no `.proto` files. Reads are any
//! Orbit certificate's ([`Access::read`]), changes an admin's ([`Access::admin`]).

use std::time::Duration;

use orbit_state::{Command, Event, LotKey, Rejection};
use tonic::{Request, Response, Status};
use tracing::{info, info_span, warn};

use crate::admin_groups::{group_in, group_out};
use crate::admin_lots::{lot_in, lot_out};
use crate::admin_parked::{call, park_events_after};
use crate::admin_pb as pb;
use crate::identity::Access;
use crate::store::StateMachineStore;
use crate::Raft;

pub(crate) struct AdminService {
    pub raft: Raft,
    pub sm: StateMachineStore,
    pub closed: tokio::sync::watch::Receiver<bool>,
    pub tls: bool,
    /// Bearer tokens that stand for certificates here (`[[registry.tokens]]`).
    pub tokens: std::sync::Arc<crate::identity::Tokens>,
    /// Watch streams open on this node, bounded ([`crate::watch::MAX_WATCHERS`]).
    pub watchers: std::sync::Arc<tokio::sync::Semaphore>,
    /// Changes go through the log like any proposal (forwarded to the leader from here).
    pub batch: crate::batch::Batcher,
    pub fwd: crate::proposing::Forwarder,
}

/// A mutation's request id as the log keeps it: the caller's own (namespaced by who it is, so
/// that no one can answer another's retry), or none; INVALID_ARGUMENT naming `request_id` if
/// it cannot be one.
fn request(by: &Access, id: &str) -> Result<Option<String>, Status> {
    if id.is_empty() {
        return Ok(None);
    }
    if id.len() > 128 || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Status::invalid_argument(
            "request_id: at most 128 printable characters",
        ));
    }
    Ok(Some(format!("{by} {id}")))
}

#[tonic::async_trait]
impl pb::admin_server::Admin for AdminService {
    async fn get_cluster_status(
        &self,
        req: Request<pb::GetClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatus>, Status> {
        Access::of_with(&req, self.tls, &self.tokens)?.read()?;
        Ok(Response::new(self.status()))
    }

    async fn add_member(
        &self,
        req: Request<pb::AddMemberRequest>,
    ) -> Result<Response<pb::ClusterStatus>, Status> {
        let by = Access::of_with(&req, self.tls, &self.tokens)?;
        by.admin()?;
        let r = req.into_inner();
        crate::membership::add_learner(&self.raft, &self.batch, r.id, r.addr.clone()).await?;
        info!(%by, node = r.id, addr = %r.addr, "learner added through the admin API");
        Ok(Response::new(self.status()))
    }

    async fn promote_member(
        &self,
        req: Request<pb::MemberRequest>,
    ) -> Result<Response<pb::ClusterStatus>, Status> {
        let by = Access::of_with(&req, self.tls, &self.tokens)?;
        by.admin()?;
        let id = req.into_inner().id;
        crate::membership::promote(&self.raft, &self.batch, id).await?;
        info!(%by, node = id, "member promoted to voter through the admin API");
        Ok(Response::new(self.status()))
    }

    async fn remove_member(
        &self,
        req: Request<pb::MemberRequest>,
    ) -> Result<Response<pb::ClusterStatus>, Status> {
        let by = Access::of_with(&req, self.tls, &self.tokens)?;
        by.admin()?;
        let id = req.into_inner().id;
        crate::membership::remove(&self.raft, &self.batch, id, 1).await?;
        info!(%by, node = id, "member removed through the admin API");
        Ok(Response::new(self.status()))
    }

    async fn transfer_leadership(
        &self,
        req: Request<pb::MemberRequest>,
    ) -> Result<Response<pb::ClusterStatus>, Status> {
        let by = Access::of_with(&req, self.tls, &self.tokens)?;
        by.admin()?;
        let id = req.into_inner().id;
        crate::transfer::transfer(&self.raft, &self.batch, self.fwd.tls(), id).await?;
        info!(%by, node = id, "leadership transferred through the admin API");
        Ok(Response::new(self.status()))
    }

    async fn take_snapshot(
        &self,
        req: Request<pb::TakeSnapshotRequest>,
    ) -> Result<Response<pb::TakeSnapshotResponse>, Status> {
        let by = Access::of_with(&req, self.tls, &self.tokens)?;
        by.admin()?;
        let before = self.snapshot_index();
        self.raft
            .trigger()
            .snapshot()
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        // Taken in the background: answer once it is there (or say it is still being taken).
        let mut metrics = self.raft.metrics();
        // Within orbitctl's default timeout (10 s): a bigger state says so rather than hang.
        let wait = tokio::time::timeout(std::time::Duration::from_secs(8), async {
            loop {
                let m = metrics.borrow_and_update().clone();
                let at = m.snapshot.map(|l| l.index).unwrap_or(0);
                let applied = m.last_applied.map(|l| l.index).unwrap_or(0);
                if at > before || (at == applied && at > 0) {
                    return at;
                }
                if metrics.changed().await.is_err() {
                    return at;
                }
            }
        })
        .await;
        let index = wait.map_err(|_| Status::deadline_exceeded("snapshot still being taken"))?;
        info!(%by, index, "snapshot taken through the admin API");
        Ok(Response::new(pb::TakeSnapshotResponse { index }))
    }

    async fn list_parked_calls(
        &self,
        req: Request<pb::ListParkedCallsRequest>,
    ) -> Result<Response<pb::ListParkedCallsResponse>, Status> {
        Access::of_with(&req, self.tls, &self.tokens)?.read()?;
        let tenant = req.into_inner().tenant;
        let d = self.sm.data.read().unwrap();
        let mut calls: Vec<pb::ParkedCall> = d
            .orbit
            .all_parked()
            .filter(|p| tenant.is_empty() || p.lot.tenant == tenant)
            .map(call)
            .collect();
        calls.sort_by(|a, b| (&a.tenant, &a.lot, a.slot).cmp(&(&b.tenant, &b.lot, b.slot)));
        Ok(Response::new(pb::ListParkedCallsResponse {
            calls,
            index: d.last_applied.map(|l| l.index).unwrap_or(0),
        }))
    }

    async fn hang_up_parked_call(
        &self,
        req: Request<pb::HangUpParkedCallRequest>,
    ) -> Result<Response<pb::HangUpParkedCallResponse>, Status> {
        let by = Access::of_with(&req, self.tls, &self.tokens)?;
        by.admin()?;
        let r = req.into_inner();
        let park = r.park_id;
        let end = Command::End {
            park,
            reason: orbit_state::EndReason::Operator,
        };
        self.commit(end, request(&by, &r.request_id)?).await?;
        info!(%by, park, "parked call hung up through the admin API");
        Ok(Response::new(pb::HangUpParkedCallResponse {}))
    }

    async fn extend_parked_call(
        &self,
        req: Request<pb::ExtendParkedCallRequest>,
    ) -> Result<Response<pb::ParkedCall>, Status> {
        let by = Access::of_with(&req, self.tls, &self.tokens)?;
        by.admin()?;
        let r = req.into_inner();
        let by_ms = r.seconds.saturating_mul(1000);
        let cmd = Command::Extend {
            park: r.park_id,
            by_ms,
        };
        match self.commit(cmd, request(&by, &r.request_id)?).await? {
            Event::Extended(p) => {
                info!(%by, park = p.id, deadline = p.deadline, "parked call extended through the admin API");
                Ok(Response::new(call(&p)))
            }
            _ => Err(Status::internal("extended as something else")),
        }
    }

    async fn drain_edge(
        &self,
        req: Request<pb::DrainEdgeRequest>,
    ) -> Result<Response<pb::DrainEdgeResponse>, Status> {
        let by = Access::of_with(&req, self.tls, &self.tokens)?;
        by.admin()?;
        let r = req.into_inner();
        let edge = r.edge;
        if !orbit_state::names::is_edge_id(&edge) {
            return Err(Status::invalid_argument(format!(
                "edge {edge:?}: site or site/name, lowercase letters, digits and '-'"
            )));
        }
        let id = request(&by, &r.request_id)?;
        self.commit(Command::Drain { edge: edge.clone() }, id)
            .await?;
        info!(%by, %edge, "edge drained through the admin API");
        Ok(Response::new(pb::DrainEdgeResponse {}))
    }

    async fn list_lots(
        &self,
        req: Request<pb::ListLotsRequest>,
    ) -> Result<Response<pb::ListLotsResponse>, Status> {
        Access::of_with(&req, self.tls, &self.tokens)?.read()?;
        let tenant = req.into_inner().tenant;
        let d = self.sm.data.read().unwrap();
        let lots = d
            .orbit
            .lots()
            .filter(|l| tenant.is_empty() || l.tenant == tenant)
            .map(|l| lot_out(l, d.orbit.occupied(&l.key()).count()))
            .collect();
        Ok(Response::new(pb::ListLotsResponse { lots }))
    }

    async fn set_lot(&self, req: Request<pb::SetLotRequest>) -> Result<Response<pb::Lot>, Status> {
        let by = Access::of_with(&req, self.tls, &self.tokens)?;
        by.admin()?;
        let r = req.into_inner();
        let id = request(&by, &r.request_id)?;
        let lot = r
            .lot
            .ok_or_else(|| Status::invalid_argument("lot: missing"))?;
        let cfg = lot_in(lot)?;
        // Its fallback must be an extension the tenant has, as this node knows them (checked
        // here, not as the log applies it: entries already in a log must apply as they did).
        if let Some(f) = &cfg.fallback {
            let known = self
                .sm
                .data
                .read()
                .unwrap()
                .orbit
                .has_extension(&cfg.tenant, f);
            if known == Some(false) {
                return Err(Status::invalid_argument(format!(
                    "lot.fallback: no extension {f} in {}",
                    cfg.tenant
                )));
            }
        }
        self.commit(Command::SetLot(cfg.clone()), id).await?;
        info!(%by, tenant = %cfg.tenant, lot = %cfg.park_ext, first = cfg.first_slot, last = cfg.last_slot, "lot set through the admin API");
        let parked = self.parked_in(&cfg.key());
        Ok(Response::new(lot_out(&cfg, parked)))
    }

    async fn delete_lot(
        &self,
        req: Request<pb::DeleteLotRequest>,
    ) -> Result<Response<pb::DeleteLotResponse>, Status> {
        let by = Access::of_with(&req, self.tls, &self.tokens)?;
        by.admin()?;
        let r = req.into_inner();
        let id = request(&by, &r.request_id)?;
        let key = LotKey {
            tenant: r.tenant,
            park_ext: r.park_ext,
        };
        self.commit(Command::DeleteLot(key.clone()), id).await?;
        info!(%by, tenant = %key.tenant, lot = %key.park_ext, "lot deleted through the admin API");
        Ok(Response::new(pb::DeleteLotResponse {}))
    }

    async fn get_lot(&self, req: Request<pb::GetLotRequest>) -> Result<Response<pb::Lot>, Status> {
        Access::of_with(&req, self.tls, &self.tokens)?.read()?;
        let r = req.into_inner();
        let key = LotKey {
            tenant: r.tenant,
            park_ext: r.park_ext,
        };
        let d = self.sm.data.read().unwrap();
        let lot = d.orbit.lot(&key).ok_or_else(|| {
            Status::not_found(format!("no lot {} in {}", key.park_ext, key.tenant))
        })?;
        Ok(Response::new(lot_out(lot, d.orbit.occupied(&key).count())))
    }

    async fn locate_extension(
        &self,
        req: Request<pb::LocateExtensionRequest>,
    ) -> Result<Response<pb::LocateExtensionResponse>, Status> {
        Access::of_with(&req, self.tls, &self.tokens)?.read()?;
        let r = req.into_inner();
        if !orbit_state::is_extension(&r.ext) {
            return Err(Status::invalid_argument(format!(
                "ext: {:?} is not an extension of digits",
                r.ext
            )));
        }
        let d = self.sm.data.read().unwrap();
        let locations = d
            .orbit
            .locations_of(&r.tenant, &r.ext, crate::node::wall_ms())
            .into_iter()
            .map(|(edge, until_ms)| pb::ExtensionLocation {
                edge: edge.to_string(),
                until_ms,
            })
            .collect();
        Ok(Response::new(pb::LocateExtensionResponse { locations }))
    }

    async fn list_pickup_groups(
        &self,
        req: Request<pb::ListPickupGroupsRequest>,
    ) -> Result<Response<pb::ListPickupGroupsResponse>, Status> {
        Access::of_with(&req, self.tls, &self.tokens)?.read()?;
        let tenant = req.into_inner().tenant;
        let d = self.sm.data.read().unwrap();
        let groups = d
            .orbit
            .tenants()
            .filter(|t| tenant.is_empty() || **t == tenant)
            .flat_map(|t| d.orbit.pickup_groups(t))
            .map(group_out)
            .collect();
        Ok(Response::new(pb::ListPickupGroupsResponse { groups }))
    }

    async fn get_pickup_group(
        &self,
        req: Request<pb::GetPickupGroupRequest>,
    ) -> Result<Response<pb::PickupGroup>, Status> {
        Access::of_with(&req, self.tls, &self.tokens)?.read()?;
        let r = req.into_inner();
        let d = self.sm.data.read().unwrap();
        let g = d
            .orbit
            .pickup_groups(&r.tenant)
            .find(|g| g.name == r.name)
            .ok_or_else(|| {
                Status::not_found(format!("no pickup group {} in {}", r.name, r.tenant))
            })?;
        Ok(Response::new(group_out(g)))
    }

    async fn set_pickup_group(
        &self,
        req: Request<pb::SetPickupGroupRequest>,
    ) -> Result<Response<pb::PickupGroup>, Status> {
        let by = Access::of_with(&req, self.tls, &self.tokens)?;
        by.admin()?;
        let r = req.into_inner();
        let id = request(&by, &r.request_id)?;
        let g = group_in(r.group)?;
        self.commit(Command::SetPickupGroup(g.clone()), id).await?;
        info!(%by, tenant = %g.tenant, group = %g.name, members = g.members.len(), "pickup group set through the admin API");
        Ok(Response::new(group_out(g)))
    }

    async fn delete_pickup_group(
        &self,
        req: Request<pb::DeletePickupGroupRequest>,
    ) -> Result<Response<pb::DeletePickupGroupResponse>, Status> {
        let by = Access::of_with(&req, self.tls, &self.tokens)?;
        by.admin()?;
        let r = req.into_inner();
        let id = request(&by, &r.request_id)?;
        let cmd = Command::DeletePickupGroup {
            tenant: r.tenant.clone(),
            name: r.name.clone(),
        };
        self.commit(cmd, id).await?;
        info!(%by, tenant = %r.tenant, group = %r.name, "pickup group deleted through the admin API");
        Ok(Response::new(pb::DeletePickupGroupResponse {}))
    }

    async fn send_parked_call(
        &self,
        req: Request<pb::SendParkedCallRequest>,
    ) -> Result<Response<pb::ParkedCall>, Status> {
        let by = Access::of_with(&req, self.tls, &self.tokens)?;
        by.admin()?;
        let r = req.into_inner();
        if !orbit_state::is_extension(&r.ext) {
            return Err(Status::invalid_argument(format!(
                "ext: {:?} is not an extension of digits",
                r.ext
            )));
        }
        let cmd = Command::Send {
            park: r.park_id,
            to: r.ext,
        };
        match self.commit(cmd, request(&by, &r.request_id)?).await? {
            Event::Sent(p) => {
                info!(%by, park = p.id, slot = p.slot, to = ?p.sent_to, "parked call sent through the admin API");
                Ok(Response::new(call(&p)))
            }
            _ => Err(Status::internal("sent as something else")),
        }
    }

    type WatchParkedCallsStream = std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = Result<pb::ParkEvent, Status>> + Send + 'static>,
    >;

    async fn watch_parked_calls(
        &self,
        req: Request<pb::WatchParkedCallsRequest>,
    ) -> Result<Response<Self::WatchParkedCallsStream>, Status> {
        Access::of_with(&req, self.tls, &self.tokens)?.read()?;
        let after = req.into_inner().after_index;
        let floor = self
            .sm
            .complete_after
            .load(std::sync::atomic::Ordering::Relaxed);
        if after != 0 && after < floor {
            return Err(Status::out_of_range(format!(
                "events after {after} are no longer all kept here (only after {floor}): list the parked calls and watch from the list's index"
            )));
        }
        let cursor = after.max(floor);
        let permit = crate::watch::watch_permit(&self.watchers)?;
        let stream = crate::watch::serve_watch(
            self.sm.clone(),
            self.closed.clone(),
            permit,
            cursor,
            park_events_after,
            info_span!("admin.watch_parked"),
        );
        Ok(Response::new(stream))
    }
}

impl AdminService {
    /// The last snapshot's index on this node (0: none).
    fn snapshot_index(&self) -> u64 {
        let m = self.raft.metrics().borrow().clone();
        m.snapshot.map(|l| l.index).unwrap_or(0)
    }

    /// Have `cmd` committed (an admin's: no edge's right to check at apply); the status a
    /// refusal or a failure maps to.
    async fn commit(&self, cmd: Command, request: Option<String>) -> Result<Event, Status> {
        let c = crate::proposing::propose(&self.batch, &self.fwd, cmd, None, request, true, None)
            .await
            .map_err(crate::proposing::propose_status)?;
        c.outcome.map_err(|r| match r {
            Rejection::BadLot(m) => Status::invalid_argument(format!("lot: {m}")),
            Rejection::NoSuchLot => Status::not_found(r.to_string()),
            Rejection::LotInUse(_) => Status::failed_precondition(r.to_string()),
            Rejection::BadGroup(m) => Status::invalid_argument(format!("group: {m}")),
            Rejection::NoSuchGroup(_) => Status::not_found(r.to_string()),
            Rejection::NoSuchExtension(_) => Status::invalid_argument(format!("ext: {r}")),
            Rejection::Gone(_) | Rejection::NoLease(_) => Status::not_found(r.to_string()),
            Rejection::OutOfRange { .. } | Rejection::RequestIdReused(_) => {
                Status::invalid_argument(r.to_string())
            }
            r => Status::failed_precondition(r.to_string()),
        })
    }

    fn parked_in(&self, key: &LotKey) -> usize {
        self.sm.data.read().unwrap().orbit.occupied(key).count()
    }
}

/// Keep `grpc.health.v1` in step with the node: serving (overall and the admin service) while
/// it knows a leader; and say when the leader changes.
pub(crate) async fn health_loop(
    raft: Raft,
    reporter: tonic_health::server::HealthReporter,
    mut closed: tokio::sync::watch::Receiver<bool>,
) {
    let mut metrics = raft.metrics();
    let mut serving = None;
    let mut leader = None;
    let mut published = std::time::Instant::now() - Duration::from_secs(1);
    let mut followers = crate::followers::Followers::default();
    crate::node_metrics::register(metrics.borrow().id);
    loop {
        let (id, known, term, applied, last, matched) = {
            let m = metrics.borrow();
            let applied = m.last_applied.map_or(0, |l| l.index);
            let last = m.last_log_index.unwrap_or(0);
            // The leader's view of each member's log (none on a follower).
            let matched: std::collections::BTreeMap<_, _> = m
                .replication
                .iter()
                .flatten()
                .map(|(n, l)| (*n, l.map(|l| l.index)))
                .collect();
            (
                m.id,
                m.current_leader,
                m.current_term,
                applied,
                last,
                matched,
            )
        };
        // Raft stopped on its own (a storage error): no longer serving, whatever it knew.
        let stopped = metrics.borrow().running_state.is_err();
        let known = known.filter(|_| !stopped);
        let leading = known == Some(id);
        for said in followers.look(std::time::Instant::now(), leading, last, &matched) {
            match said {
                crate::followers::Said::Silent { node, for_ } => warn!(
                    node = id,
                    member = node,
                    secs = for_.as_secs(),
                    "a registry member is not taking the log"
                ),
                crate::followers::Said::Back { node } => {
                    info!(
                        node = id,
                        member = node,
                        "a registry member takes the log again"
                    )
                }
            }
        }
        // The loop wakes on every entry; a scrape needs no more than a value a second.
        if published.elapsed() >= Duration::from_secs(1) || known != leader {
            crate::node_metrics::publish(id, known, term, applied, last);
            published = std::time::Instant::now();
        }
        // Leadership changes at INFO (openraft's own lines are for debugging elections).
        if known != leader {
            if leader.is_some() {
                metrics::counter!("orbit_registry_leader_changes_total", "node" => id.to_string())
                    .increment(1);
            }
            match known {
                Some(l) => info!(node = id, leader = l, term, "registry leader known"),
                None => info!(node = id, was = ?leader, term, "registry leader lost"),
            }
            leader = known;
        }
        let now = known.is_some();
        if serving != Some(now) {
            serving = Some(now);
            let status = if now {
                tonic_health::ServingStatus::Serving
            } else {
                tonic_health::ServingStatus::NotServing
            };
            reporter.set_service_status("", status).await;
            reporter
                .set_service_status("orbit.admin.v1.Admin", status)
                .await;
        }
        if stopped {
            return;
        }
        let mut gone = false;
        tokio::select! {
            r = metrics.changed() => gone = r.is_err(),
            _ = closed.wait_for(|c| *c) => return,
            // Metrics change on every entry; a slow tick is enough to notice a lost leader.
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        if gone {
            // Raft is gone: say so to health checks before this loop ends.
            for service in ["", "orbit.admin.v1.Admin"] {
                reporter
                    .set_service_status(service, tonic_health::ServingStatus::NotServing)
                    .await;
            }
            return;
        }
    }
}
