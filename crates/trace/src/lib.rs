//! W3C trace context (`traceparent`) across Orbit's processes (issue 12): what ties the spans
//! of one park, and of everything that later happens to the parked call, into one trace.
//!
//! It travels in gRPC metadata (an edge's proposal to the registry, a forwarded proposal), in
//! a `traceparent` header on the trunk between edges, in a parked call's record (a retrieve,
//! a recall or a pickup at any site joins the park's trace) and in the registry's log entries
//! (each node's apply joins its proposal's trace).
//!
//! Everything here goes through the process's global propagator. Until the daemon installs
//! one (`[telemetry] otlp_endpoint`), that is OpenTelemetry's no-op: nothing is written and
//! nothing read, so tracing off costs a lock read per call.
//!
//! Only what an authenticated peer sends is read (an edge's certificate on gRPC, a good trunk
//! signature on SIP): a phone's `traceparent` could otherwise force its requests into the
//! sampled traces.

use std::collections::HashMap;

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TraceContextExt;
use opentelemetry::{global, Context};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The header (SIP) and metadata key (gRPC) the context travels in.
pub const TRACEPARENT: &str = "traceparent";

/// The current span's context as a `traceparent` value: none when no trace is being recorded.
pub fn traceparent() -> Option<String> {
    let cx = Span::current().context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    global::get_text_map_propagator(|p| p.inject_context(&cx, &mut carrier));
    carrier.remove(TRACEPARENT)
}

/// The context a `traceparent` value names, if it is a well-formed one.
pub fn context_of(traceparent: &str) -> Option<Context> {
    if !well_formed(traceparent) {
        return None;
    }
    let carrier = HashMap::from([(TRACEPARENT.to_string(), traceparent.to_string())]);
    let cx = global::get_text_map_propagator(|p| p.extract(&carrier));
    cx.span().span_context().is_valid().then_some(cx)
}

/// `version-traceid-spanid-flags` in lowercase hex of 2, 32, 16 and 2 digits (W3C Trace
/// Context, version 00): the SDK's parser lets a short span id through.
fn well_formed(tp: &str) -> bool {
    let widths = [2, 32, 16, 2];
    let parts: Vec<&str> = tp.split('-').collect();
    parts.len() == widths.len()
        && parts
            .iter()
            .zip(widths)
            .all(|(p, w)| p.len() == w && p.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

/// Make `span` (not yet entered) a child of the context `traceparent` names when it names
/// one, else of the current span. `tracing`'s own hierarchy, which the log lines show, is
/// left as it was: a call's span stays a root there.
pub fn adopt(span: &Span, traceparent: Option<&str>) {
    let cx = traceparent
        .and_then(context_of)
        .unwrap_or_else(|| Span::current().context());
    // Fails only where no trace is recorded (no layer, a span filtered out): nothing to do.
    let _ = span.set_parent(cx);
}

/// Make `span` (not yet entered) a child of the context a gRPC request's metadata carries,
/// else of the current span.
pub fn adopt_remote(span: &Span, md: &tonic::metadata::MetadataMap) {
    let cx = extract(md).unwrap_or_else(|| Span::current().context());
    let _ = span.set_parent(cx);
}

/// Link `span` (not yet entered) to the span a `traceparent` names: one span done for many
/// (a log entry carrying many proposals).
pub fn link(span: &Span, traceparent: &str) {
    if let Some(cx) = context_of(traceparent) {
        span.add_link(cx.span().span_context().clone());
    }
}

/// Write the current span's context into a gRPC request's metadata.
pub fn inject<T>(req: &mut tonic::Request<T>) {
    let cx = Span::current().context();
    if cx.span().span_context().is_valid() {
        global::get_text_map_propagator(|p| {
            p.inject_context(&cx, &mut MetadataCarrier(req.metadata_mut()))
        });
    }
}

/// The context a gRPC request's metadata carries, if any.
fn extract(md: &tonic::metadata::MetadataMap) -> Option<Context> {
    let cx = global::get_text_map_propagator(|p| p.extract(&MetadataRead(md)));
    cx.span().span_context().is_valid().then_some(cx)
}

struct MetadataCarrier<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataCarrier<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            value.parse(),
        ) {
            self.0.insert(k, v);
        }
    }
}

struct MetadataRead<'a>(&'a tonic::metadata::MetadataMap);

impl Extractor for MetadataRead<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|k| match k {
                tonic::metadata::KeyRef::Ascii(k) => Some(k.as_str()),
                tonic::metadata::KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_subscriber::layer::SubscriberExt;

    /// A subscriber that records OpenTelemetry spans (nowhere), with the W3C propagator.
    fn recording() -> tracing::subscriber::DefaultGuard {
        global::set_text_map_propagator(TraceContextPropagator::new());
        let tracer = SdkTracerProvider::builder().build().tracer("test");
        let sub =
            tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(tracer));
        tracing::subscriber::set_default(sub)
    }

    #[test]
    fn a_span_adopted_from_a_traceparent_continues_that_trace() {
        let _g = recording();
        let parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let span = tracing::info_span!("retrieve");
        adopt(&span, Some(parent));
        let tp = span.in_scope(traceparent).expect("a trace is recorded");
        assert!(
            tp.starts_with("00-0af7651916cd43dd8448eb211c80319c-"),
            "{tp}"
        );
        assert!(!tp.contains("b7ad6b7169203331"), "a span of its own: {tp}");
        // Through gRPC metadata: the same trace on the other side.
        let mut req = tonic::Request::new(());
        span.in_scope(|| inject(&mut req));
        let cx = extract(req.metadata()).expect("carried");
        assert_eq!(
            format!("{:032x}", cx.span().span_context().trace_id()),
            "0af7651916cd43dd8448eb211c80319c"
        );
    }

    #[test]
    fn malformed_or_absent_context_starts_nothing_foreign() {
        let _g = recording();
        for bad in [
            "",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333-01",
            "zz-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\nVia: x",
        ] {
            assert!(context_of(bad).is_none(), "{bad:?}");
        }
        assert!(extract(&tonic::metadata::MetadataMap::new()).is_none());
    }

    #[test]
    fn nothing_is_written_without_a_recorded_trace() {
        let sub = tracing_subscriber::registry();
        let _g = tracing::subscriber::set_default(sub);
        let span = tracing::info_span!("call");
        assert_eq!(span.in_scope(traceparent), None);
        let mut req = tonic::Request::new(());
        span.in_scope(|| inject(&mut req));
        assert!(req.metadata().is_empty());
    }
}
