//! Traces over OTLP (`[telemetry] otlp_endpoint`, issue 12): the `tracing` spans of the SIP
//! transactions, calls, parks, retrieves, recalls, pickups and registry commands, as
//! OpenTelemetry spans sent to a collector over gRPC, and the W3C propagator that carries the
//! trace context between processes (`orbit-trace`). Off unless an endpoint is set.

use std::time::Duration;

use anyhow::{Context, Result};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider,
};
use opentelemetry_sdk::Resource;

/// Spans waiting to be sent; beyond this a burst's spans are dropped, not queued without end.
const QUEUE: usize = 8192;
/// How often the waiting spans are sent.
const EVERY: Duration = Duration::from_secs(1);

/// The process's tracer: its provider, to be flushed at exit.
pub struct Tracing {
    pub provider: SdkTracerProvider,
}

/// Start exporting to `endpoint` (`http://host:4317`), sampling `ratio` of the traces that
/// start here (a trace that arrives sampled from another process stays sampled). `instance`
/// names this process in every span (`service.instance.id`). Within a tokio runtime: the
/// exporter's gRPC channel lives there.
pub fn start(endpoint: &str, ratio: f64, instance: &str) -> Result<Tracing> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_timeout(Duration::from_secs(5))
        .build()
        .with_context(|| format!("telemetry otlp_endpoint {endpoint:?}"))?;
    let batch = BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_max_queue_size(QUEUE)
                .with_scheduled_delay(EVERY)
                .build(),
        )
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(batch)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            ratio,
        ))))
        .with_resource(
            Resource::builder()
                .with_service_name("orbitd")
                .with_attribute(KeyValue::new("service.instance.id", instance.to_string()))
                .build(),
        )
        .build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    Ok(Tracing { provider })
}

impl Tracing {
    /// The layer that turns `tracing` spans into this provider's spans.
    pub fn layer<S>(&self) -> impl tracing_subscriber::Layer<S>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        // Every span pays for this layer, sampled or not (the decision comes at its end):
        // no busy/idle clocks on each enter and exit.
        tracing_opentelemetry::layer()
            .with_tracer(self.provider.tracer("orbitd"))
            .with_threads(false)
            .with_location(false)
            .with_tracked_inactivity(false)
    }

    /// Send what is waiting, at exit.
    pub fn flush(self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "traces not all sent");
        }
    }
}
