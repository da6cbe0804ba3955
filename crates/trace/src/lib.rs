//! W3C trace context (`traceparent`) across Orbit's processes (issue 12): what ties the spans
//! of one park, and of everything that later happens to the parked call, into one trace.
//!
//! It travels in gRPC metadata (an edge's proposal to the registry, a forwarded proposal), in
//! a `traceparent` header on the trunk between edges, in a parked call's record (a retrieve,
//! a recall or a pickup at any site joins the park's trace) and in the registry's log entries
//! (each node's apply joins its proposal's trace).
//!
//! Whether a trace is recorded is decided once, where it starts ([`Sampling`]: a span with no
//! span around it), and then followed: a span inside a recorded one is recorded, a span that
//! continues a carried context is recorded when that context is. Spans of traces not recorded
//! never reach the exporter, so that tracing at 1% costs about 1% of tracing everything. The
//! spans that do not simply follow the span around them are made through this crate
//! ([`within`], [`continuing`], [`continuing_remote`], [`child_of`], [`linked`]), which tells
//! the filter their decision before they exist.
//!
//! Everything here goes through the process's global propagator. Until the daemon installs
//! one (`[telemetry] otlp_endpoint`), that is OpenTelemetry's no-op: nothing is written and
//! nothing read, so tracing off costs a lock read per call.
//!
//! Only what an authenticated peer sends is read (an edge's certificate on gRPC, a good trunk
//! signature on SIP): a phone's `traceparent` could otherwise force its requests into the
//! recorded traces.

mod sampling;

pub use sampling::Sampling;

use std::collections::HashMap;

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry::{global, Context};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The header (SIP) and metadata key (gRPC) the context travels in.
pub const TRACEPARENT: &str = "traceparent";

/// The current span's context as a `traceparent` value, to hand on with work: that of its
/// trace when it is recorded; else one that says "not recorded" (flags `00`), so that the
/// receiver does not start a trace of its own for the rest of this work. None while tracing
/// is off (no propagator installed): a receiver that traces then decides for itself.
pub fn traceparent() -> Option<String> {
    written(&outgoing())
}

/// [`traceparent`] only when the current span's trace is recorded: for what is stored with
/// every command (the registry's log entries), where "not recorded" would be bytes for nothing.
pub fn recorded_traceparent() -> Option<String> {
    let cx = Span::current().context();
    if is_sampled(&cx) {
        written(&cx)
    } else {
        None
    }
}

/// `cx` as the propagator writes it (nothing while tracing is off).
fn written(cx: &Context) -> Option<String> {
    let mut carrier = HashMap::new();
    global::get_text_map_propagator(|p| p.inject_context(cx, &mut carrier));
    carrier.remove(TRACEPARENT)
}

/// The context to hand on: the current span's when it is recorded, else a fresh one marked
/// not recorded (an unrecorded span has no context of its own: the exporter never saw it).
fn outgoing() -> Context {
    let cx = Span::current().context();
    if cx.span().span_context().is_valid() {
        return cx;
    }
    let ids = SpanContext::new(
        TraceId::from_bytes(rand::random::<[u8; 16]>()),
        SpanId::from_bytes(rand::random::<[u8; 8]>()),
        TraceFlags::default(),
        false,
        TraceState::default(),
    );
    Context::new().with_remote_span_context(ids)
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

/// A span (`make` makes it, not yet entered) in the trace `traceparent` carries when it
/// carries one, else in the current span's: recorded as that trace is. `tracing`'s own
/// hierarchy, which the log lines show, is left as `make` has it: a call's span stays a root
/// there.
pub fn within(traceparent: Option<&str>, make: impl FnOnce() -> Span) -> Span {
    let carried = traceparent.and_then(context_of);
    let span = sampling::decided(carried.as_ref().map(is_sampled), make);
    let cx = carried.unwrap_or_else(|| Span::current().context());
    // Fails only where no trace is recorded (no layer, a span not sampled): nothing to do.
    let _ = span.set_parent(cx);
    span
}

/// A span (`make` makes it) that continues the trace `traceparent` carries: work handed on
/// with its context (a header, a record, a log entry), recorded as that trace is. With none
/// (a sender that does not trace), decided as any other span.
pub fn continuing(traceparent: Option<&str>, make: impl FnOnce() -> Span) -> Span {
    let carried = traceparent.and_then(context_of);
    let span = sampling::decided(carried.as_ref().map(is_sampled), make);
    if let Some(cx) = carried {
        let _ = span.set_parent(cx);
    }
    span
}

/// A span that continues the trace a gRPC request's metadata carries, as [`continuing`].
pub fn continuing_remote(md: &tonic::metadata::MetadataMap, make: impl FnOnce() -> Span) -> Span {
    let carried = extract(md);
    let span = sampling::decided(carried.as_ref().map(is_sampled), make);
    if let Some(cx) = carried {
        let _ = span.set_parent(cx);
    }
    span
}

/// A span that `make` makes with `parent: parent`, other than the current span: recorded when
/// `parent` is.
pub fn child_of(parent: &Span, make: impl FnOnce() -> Span) -> Span {
    sampling::decided(Some(is_recorded(parent)), make)
}

/// A span done for many (a log entry carrying many proposals), linked to each recorded one
/// among `traceparents`: recorded when one of them is.
pub fn linked<'a>(
    traceparents: impl IntoIterator<Item = &'a str>,
    make: impl FnOnce() -> Span,
) -> Span {
    let links: Vec<Context> = traceparents
        .into_iter()
        .filter_map(context_of)
        .filter(is_sampled)
        .collect();
    let span = sampling::decided(Some(!links.is_empty()), make);
    for cx in links {
        span.add_link(cx.span().span_context().clone());
    }
    span
}

/// Whether `span`'s trace is being recorded.
pub fn is_recorded(span: &Span) -> bool {
    is_sampled(&span.context())
}

fn is_sampled(cx: &Context) -> bool {
    cx.span().span_context().is_sampled()
}

/// Write the context to hand on ([`traceparent`]'s) into a gRPC request's metadata.
pub fn inject<T>(req: &mut tonic::Request<T>) {
    global::get_text_map_propagator(|p| {
        p.inject_context(&outgoing(), &mut MetadataCarrier(req.metadata_mut()))
    });
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
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::Layer as _;

    const SAMPLED: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    const NOT_SAMPLED: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";

    /// A subscriber that exports, through [`Sampling`] at `ratio`, to memory; with the W3C
    /// propagator. As the daemon has it, minus the network.
    fn recording(
        ratio: f64,
    ) -> (
        tracing::subscriber::DefaultGuard,
        SdkTracerProvider,
        InMemorySpanExporter,
    ) {
        global::set_text_map_propagator(TraceContextPropagator::new());
        let exported = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exported.clone())
            .build();
        let layer = tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("test"))
            .with_context_activation(false)
            .with_filter(Sampling::new(ratio));
        let sub = tracing_subscriber::registry().with(layer);
        (tracing::subscriber::set_default(sub), provider, exported)
    }

    fn names(exported: &InMemorySpanExporter) -> Vec<String> {
        let mut n: Vec<String> = exported
            .get_finished_spans()
            .unwrap()
            .iter()
            .map(|s| s.name.to_string())
            .collect();
        n.sort();
        n
    }

    #[test]
    fn a_span_within_a_traceparent_continues_that_trace() {
        let (_g, _p, _e) = recording(0.0);
        let span = within(
            Some(SAMPLED),
            || tracing::info_span!(parent: None, "retrieve"),
        );
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
        let there = continuing_remote(req.metadata(), || tracing::info_span!("registry.propose"));
        assert!(is_recorded(&there));
    }

    #[test]
    fn malformed_or_absent_context_starts_nothing_foreign() {
        let (_g, _p, _e) = recording(0.0);
        for bad in [
            "",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333-01",
            "zz-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\nVia: x",
        ] {
            assert!(context_of(bad).is_none(), "{bad:?}");
            let span = continuing(Some(bad), || tracing::info_span!("trunk.request"));
            assert!(!is_recorded(&span), "{bad:?}");
        }
        assert!(extract(&tonic::metadata::MetadataMap::new()).is_none());
    }

    #[test]
    fn nothing_is_written_while_tracing_is_off() {
        global::set_text_map_propagator(opentelemetry::trace::noop::NoopTextMapPropagator::new());
        let sub = tracing_subscriber::registry();
        let _g = tracing::subscriber::set_default(sub);
        let span = tracing::info_span!("call");
        assert_eq!(span.in_scope(traceparent), None);
        let mut req = tonic::Request::new(());
        span.in_scope(|| inject(&mut req));
        assert!(req.metadata().is_empty());
    }

    #[test]
    fn a_trace_is_recorded_or_not_from_where_it_starts_to_its_last_span() {
        let (_g, provider, exported) = recording(1.0);
        {
            let root = tracing::info_span!("sip.request");
            let _in = root.enter();
            // A call: its own root in the log lines, a child in the trace.
            let call = within(None, || tracing::info_span!(parent: None, "call"));
            let _c = call.enter();
            tracing::info_span!("inner").in_scope(|| tracing::warn!("kept"));
            // Work handed on from a trace not recorded, though made inside a recorded span.
            let handed = continuing(Some(NOT_SAMPLED), || tracing::info_span!("trunk.request"));
            let _h = handed.enter();
            assert!(!is_recorded(&handed));
            // Spans inside it follow it, not the recorded span further out; so do its log
            // lines, which do not go to that span.
            let below = tracing::info_span!("below");
            assert!(!is_recorded(&below));
            tracing::error!("not the call's");
            // Unless a context says otherwise.
            let again = continuing(Some(SAMPLED), || tracing::info_span!("again"));
            assert!(is_recorded(&again));
            let unsampled = continuing(Some(NOT_SAMPLED), || tracing::info_span!("nope"));
            assert!(!is_recorded(&unsampled));
        }
        provider.force_flush().unwrap();
        assert_eq!(names(&exported), ["again", "call", "inner", "sip.request"]);
        let spans = exported.get_finished_spans().unwrap();
        let of = |n: &str| spans.iter().find(|s| s.name == n).unwrap();
        assert_eq!(
            of("call").parent_span_id,
            of("sip.request").span_context.span_id()
        );
        assert_eq!(
            of("inner").events.len(),
            1,
            "the warning goes with its span"
        );
        assert!(of("call").events.is_empty(), "{:?}", of("call").events);
    }

    #[test]
    fn unrecorded_work_is_handed_on_as_unrecorded_and_contextless_work_decided_here() {
        let (_g, _p, _e) = recording(0.0);
        let call = tracing::info_span!("call");
        // A trace not recorded says so to the next process, so that it does not start one.
        let tp = call
            .in_scope(traceparent)
            .expect("a context while tracing is on");
        assert!(tp.ends_with("-00"), "{tp}");
        assert_eq!(call.in_scope(recorded_traceparent), None);
        let mut req = tonic::Request::new(());
        call.in_scope(|| inject(&mut req));
        let there = continuing_remote(req.metadata(), || tracing::info_span!("registry.propose"));
        assert!(!is_recorded(&there));
        let there = continuing(Some(&tp), || tracing::info_span!("trunk.request"));
        assert!(!is_recorded(&there));
        // From a sender that does not trace: decided here, as a trace that starts here, or
        // as the span around it.
        drop(_g);
        let (_g, _p, _e) = recording(1.0);
        assert!(is_recorded(&continuing(None, || tracing::info_span!(
            "trunk.request"
        ))));
        let empty = tonic::metadata::MetadataMap::new();
        assert!(is_recorded(&continuing_remote(
            &empty,
            || tracing::info_span!("p")
        )));
        let recorded = tracing::info_span!("sip.request");
        let tp = recorded.in_scope(recorded_traceparent).expect("recorded");
        assert!(tp.ends_with("-01"), "{tp}");
    }

    #[test]
    fn a_decision_does_not_outlive_a_panic_while_making_its_span() {
        let (_g, _p, _e) = recording(1.0);
        let r = std::panic::catch_unwind(|| {
            continuing(Some(NOT_SAMPLED), || -> Span {
                panic!("while making the span")
            })
        });
        assert!(r.is_err());
        assert!(is_recorded(&tracing::info_span!("sip.request")));
    }

    #[test]
    fn at_ratio_zero_only_carried_traces_are_recorded() {
        let (_g, provider, exported) = recording(0.0);
        let started_here = tracing::info_span!("sip.request");
        started_here.in_scope(|| {
            let child = tracing::info_span!("call");
            assert!(!is_recorded(&child));
            // A span whose parent is given, not the current one, follows that parent.
            let parked = continuing(Some(SAMPLED), || tracing::info_span!(parent: None, "call"));
            let recall = child_of(&parked, || tracing::info_span!(parent: &parked, "recall"));
            assert!(is_recorded(&recall));
            let other = child_of(&child, || tracing::info_span!(parent: &child, "recall"));
            assert!(!is_recorded(&other));
        });
        let commit = linked([NOT_SAMPLED, "junk"], || {
            tracing::info_span!("registry.commit")
        });
        assert!(!is_recorded(&commit));
        let commit = linked([NOT_SAMPLED, SAMPLED], || {
            tracing::info_span!("registry.commit")
        });
        assert!(is_recorded(&commit));
        drop(commit);
        provider.force_flush().unwrap();
        assert_eq!(names(&exported), ["call", "recall", "registry.commit"]);
        let commit = exported.get_finished_spans().unwrap();
        let commit = commit.iter().find(|s| s.name == "registry.commit").unwrap();
        assert_eq!(commit.links.len(), 1, "linked to the recorded proposal");
    }

    #[test]
    fn traces_that_start_here_are_recorded_at_the_ratio() {
        let (_g, provider, exported) = recording(0.05);
        for _ in 0..4000 {
            tracing::info_span!("sip.request").in_scope(|| {
                // A trace's spans go together: never a child without its root.
                let _c = tracing::info_span!("call").entered();
            });
        }
        provider.force_flush().unwrap();
        let n = names(&exported);
        let roots = n.iter().filter(|n| *n == "sip.request").count();
        let calls = n.iter().filter(|n| *n == "call").count();
        assert_eq!(roots, calls);
        // Binomial(4000, 0.05): 200 expected, standard deviation 14.
        assert!(
            (120..=280).contains(&roots),
            "{roots} of 4000 recorded at 5%"
        );
    }
}
