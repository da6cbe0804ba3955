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
    ratio: f64,
}

/// Start exporting to `endpoint` (`http://host:4317`), recording `ratio` of the traces that
/// start here (a trace that arrives recorded from another process stays recorded). `instance`
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
    // Which traces are recorded is decided before their spans exist (`orbit_trace::Sampling`,
    // in `layer`): the provider is handed only those.
    let provider = SdkTracerProvider::builder()
        .with_span_processor(batch)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
        .with_resource(
            Resource::builder()
                .with_service_name("orbitd")
                .with_attribute(KeyValue::new("service.instance.id", instance.to_string()))
                .build(),
        )
        .build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    Ok(Tracing { provider, ratio })
}

impl Tracing {
    /// The layer that turns the spans of recorded traces into this provider's spans, and
    /// the warnings and errors inside them into their events. The INFO spans only, and none
    /// of openraft's: the log lines' `RUST_LOG` does not change what is traced.
    pub fn layer<S>(&self) -> impl tracing_subscriber::Layer<S>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        use tracing_subscriber::filter::FilterExt as _;
        use tracing_subscriber::Layer as _;
        let wanted = tracing_subscriber::filter::filter_fn(|m| {
            let level = if m.is_span() {
                tracing::Level::INFO
            } else {
                tracing::Level::WARN
            };
            *m.level() <= level && !m.target().starts_with("openraft")
        });
        // Parents from `tracing`'s own tree, not from a context attached on every enter; no
        // busy/idle clocks on each enter and exit.
        tracing_opentelemetry::layer()
            .with_tracer(self.provider.tracer("orbitd"))
            .with_context_activation(false)
            .with_threads(false)
            .with_location(false)
            .with_tracked_inactivity(false)
            .with_filter(wanted.and(orbit_trace::Sampling::new(self.ratio)))
    }

    /// Send what is waiting, at exit.
    pub fn flush(self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "traces not all sent");
        }
    }
}
