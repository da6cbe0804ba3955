//! Which traces are recorded: decided when a trace starts, before its first span exists, so
//! that the spans of the traces not recorded never reach the exporter's layer.
//!
//! `tracing-opentelemetry` builds an OpenTelemetry span for every span it sees and asks the
//! sampler only when that span starts: at 1% sampling, 99% of that work is thrown away (the
//! benchmark measured tracing at 1% costing 10–28% of the call rate). As a per-layer filter on
//! that layer, [`Sampling`] lets through only the spans of recorded traces.

use std::cell::Cell;

use tracing::subscriber::Interest;
use tracing::{Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Filter};
use tracing_subscriber::registry::LookupSpan;

thread_local! {
    /// The decision for the span being made on this thread, when it was made before the span
    /// (a carried context, a parent other than the current span).
    static DECIDED: Cell<Option<bool>> = const { Cell::new(None) };
}

/// Make a span with its recording decided beforehand (`None`: the filter's own rule).
pub(crate) fn decided<T>(decision: Option<bool>, make: impl FnOnce() -> T) -> T {
    /// Puts the decision before back, also when `make` panics: a worker thread outlives the
    /// task, and a decision left behind would hold for every span it makes after.
    struct Restore(Option<bool>);
    impl Drop for Restore {
        fn drop(&mut self) {
            DECIDED.set(self.0);
        }
    }
    let _restore = Restore(DECIDED.replace(decision));
    make()
}

/// The per-layer filter for the exporter's layer. A span is recorded when it was decided so
/// beforehand (see the crate's functions), else when the span it is made in is recorded; a
/// span made in no span starts a trace, recorded with probability `ratio`. A log line goes
/// with its span.
#[derive(Debug, Clone, Copy)]
pub struct Sampling {
    ratio: f64,
}

impl Sampling {
    /// Record `ratio` (0 to 1) of the traces that start in this process.
    pub fn new(ratio: f64) -> Self {
        Self {
            ratio: ratio.clamp(0.0, 1.0),
        }
    }

    fn starts_recorded(&self) -> bool {
        self.ratio >= 1.0 || (self.ratio > 0.0 && rand::random::<f64>() < self.ratio)
    }
}

impl<S> Filter<S> for Sampling
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn enabled(&self, meta: &Metadata<'_>, cx: &Context<'_, S>) -> bool {
        if !meta.is_span() {
            // With its own span, when this filter let that through: not with a recorded span
            // further out, which belongs to another trace (a trunk request's call inside a
            // SIP request's span).
            return cx
                .current_span()
                .id()
                .is_some_and(|id| cx.span(id).is_some());
        }
        if let Some(d) = DECIDED.get() {
            return d;
        }
        // The span it is made in, whether this filter let that one through or not.
        match cx.current_span().id() {
            Some(id) => cx.span(id).is_some(),
            None => self.starts_recorded(),
        }
    }

    fn callsite_enabled(&self, _: &'static Metadata<'static>) -> Interest {
        // Decided span by span, never once for a call site.
        Interest::sometimes()
    }
    // A span no layer wants is still made (tracing-subscriber makes a span unless every
    // per-layer filter is told "never" for its call site), so an unrecorded span still stands
    // between its children and the dice: they follow it. The tests check that.
    //
    // The span this filter asks about is the current span, whatever the level and target
    // filter in front of it made of that one: a DEBUG or openraft span in between would read
    // as "not recorded". None of Orbit's traced spans is made inside one without its decision
    // given (`registry.apply` inside openraft's apply is `continuing`).
}
