//! `orbit-bench otlp-sink`: a real OTLP/gRPC trace receiver for the observe benchmark, where
//! the processes under load send their spans. It counts the spans and export requests it is
//! sent and prints them when its stdin closes (the benchmark ends it so).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};

#[derive(Clone, Default)]
struct Sink {
    spans: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
}

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let n: usize = req
            .get_ref()
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        self.spans.fetch_add(n as u64, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// Serve at `listen` until stdin closes; then print what was received.
pub fn run(listen: SocketAddr) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let sink = Sink::default();
    let served = sink.clone();
    rt.block_on(async move {
        let eof = async {
            let _ = tokio::task::spawn_blocking(|| {
                let mut buf = [0u8; 64];
                while std::io::Read::read(&mut std::io::stdin(), &mut buf).is_ok_and(|n| n > 0) {}
            })
            .await;
        };
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(served))
            .serve_with_shutdown(listen, eof)
            .await
    })?;
    println!(
        "spans {} requests {}",
        sink.spans.load(Ordering::Relaxed),
        sink.requests.load(Ordering::Relaxed)
    );
    Ok(())
}
