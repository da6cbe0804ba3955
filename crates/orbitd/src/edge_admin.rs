//! An edge's admin listener (`[edge.admin] listen`): `orbit.admin.v1.EdgeAdmin` (its calls,
//! its registrations, hanging a call up) and `grpc.health.v1` (serving while the edge takes
//! new calls), under the edge's mutual TLS. The edge's core answers through its driver
//! (`AdminAsk`); this is the gRPC side only.

use std::time::Duration;

use orbit_edge::driver::AdminAsk;
use orbit_registry::admin_pb as pb;
use orbit_registry::identity::Access;
use tokio::sync::{mpsc, oneshot};
use tonic::{Request, Response, Status};
use tracing::info;

struct EdgeAdmin {
    id: String,
    tls: bool,
    core: mpsc::Sender<AdminAsk>,
}

impl EdgeAdmin {
    /// Ask the edge's core, which answers between its inputs.
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> AdminAsk) -> Result<T, Status> {
        let (tx, rx) = oneshot::channel();
        let asked = async {
            self.core.send(make(tx)).await.ok()?;
            rx.await.ok()
        };
        // A core too busy to take the question, or to answer it, bounds the wait too.
        match tokio::time::timeout(Duration::from_secs(5), asked).await {
            Ok(Some(t)) => Ok(t),
            Ok(None) => Err(Status::unavailable("the edge is stopping")),
            Err(_) => Err(Status::deadline_exceeded("the edge did not answer")),
        }
    }
}

#[tonic::async_trait]
impl pb::edge_admin_server::EdgeAdmin for EdgeAdmin {
    async fn list_calls(
        &self,
        req: Request<pb::ListCallsRequest>,
    ) -> Result<Response<pb::ListCallsResponse>, Status> {
        Access::of(&req, self.tls)?.read()?;
        let calls = self
            .ask(AdminAsk::Calls)
            .await?
            .into_iter()
            .map(|c| pb::EdgeCall {
                id: c.id,
                caller: c.caller,
                callee: c.callee,
                state: c.state.into(),
                seconds: c.secs,
                slot: c.slot.unwrap_or(0),
            })
            .collect();
        Ok(Response::new(pb::ListCallsResponse {
            edge: self.id.clone(),
            calls,
        }))
    }

    async fn hang_up_call(
        &self,
        req: Request<pb::HangUpCallRequest>,
    ) -> Result<Response<pb::HangUpCallResponse>, Status> {
        let by = Access::of(&req, self.tls)?;
        by.admin()?;
        let id = req.into_inner().id;
        if !self.ask(|tx| AdminAsk::HangUp(id, tx)).await? {
            return Err(Status::not_found(format!("no call {id} at {}", self.id)));
        }
        info!(%by, call = id, "call hung up through the edge's admin API");
        Ok(Response::new(pb::HangUpCallResponse {}))
    }

    async fn list_registrations(
        &self,
        req: Request<pb::ListRegistrationsRequest>,
    ) -> Result<Response<pb::ListRegistrationsResponse>, Status> {
        Access::of(&req, self.tls)?.read()?;
        let ext = req.into_inner().ext;
        let registrations = self
            .ask(AdminAsk::Registrations)
            .await?
            .into_iter()
            .filter(|r| ext.is_empty() || r.ext == ext)
            .map(|r| pb::Registration {
                ext: r.ext,
                contact: r.contact,
                transport: r.transport.into(),
                source: r.source.to_string(),
                expires_seconds: r.expires_secs,
            })
            .collect();
        Ok(Response::new(pb::ListRegistrationsResponse {
            edge: self.id.clone(),
            registrations,
        }))
    }
}

/// Serve edge `id`'s admin listener on `listen` (mutual TLS with `tls`, else plaintext, which
/// config allows on loopback only) until the edge's core stops (drops the receiver returned,
/// which it reads questions from).
pub fn start(
    id: String,
    listen: std::net::SocketAddr,
    tls: Option<&orbit_registry::Tls>,
    rt: &tokio::runtime::Handle,
) -> anyhow::Result<mpsc::Receiver<AdminAsk>> {
    let (tx, rx) = mpsc::channel(64);
    let svc = EdgeAdmin {
        id: id.clone(),
        tls: tls.is_some(),
        core: tx.clone(),
    };
    let mut server = tonic::transport::Server::builder();
    if let Some(t) = tls {
        server = server.tls_config(t.server())?;
    }
    let std_listener = std::net::TcpListener::bind(listen)
        .map_err(|e| anyhow::anyhow!("binding the edge's admin listener {listen}: {e}"))?;
    std_listener.set_nonblocking(true)?;
    let tx_closed = tx.clone();
    rt.spawn(async move {
        let (health, health_svc) = tonic_health::server::health_reporter();
        tokio::spawn(health_loop(health, tx));
        let listener = match tokio::net::TcpListener::from_std(std_listener) {
            Ok(l) => l,
            Err(e) => return tracing::error!(error = %e, "edge admin listener"),
        };
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let stopped = tx_closed.clone();
        let r = server
            .add_service(pb::edge_admin_server::EdgeAdminServer::new(svc))
            .add_service(health_svc)
            .serve_with_incoming_shutdown(incoming, async move { stopped.closed().await })
            .await;
        if let Err(e) = r {
            tracing::error!(error = %e, "edge admin listener stopped");
        }
    });
    info!(edge = %id, %listen, "edge admin listener");
    Ok(rx)
}

/// Keep `grpc.health.v1` in step with the edge: serving while it takes new calls (a
/// readiness probe, a load balancer's check), not while it drains or its lease is not known
/// to hold; once the core is gone, not serving.
async fn health_loop(reporter: tonic_health::server::HealthReporter, core: mpsc::Sender<AdminAsk>) {
    let mut last = None;
    loop {
        let (tx, rx) = oneshot::channel();
        // A core with its queue full is not ready either (and is not waited on).
        let ready = core.try_send(AdminAsk::Ready(tx)).is_ok()
            && matches!(
                tokio::time::timeout(Duration::from_secs(2), rx).await,
                Ok(Ok(true))
            );
        let status = if ready {
            tonic_health::ServingStatus::Serving
        } else {
            tonic_health::ServingStatus::NotServing
        };
        // Only changes: every Watch client is sent each one.
        if last != Some(status) {
            reporter.set_service_status("", status).await;
            reporter
                .set_service_status("orbit.admin.v1.EdgeAdmin", status)
                .await;
            last = Some(status);
        }
        if core.is_closed() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
