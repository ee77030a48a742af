//! A request's trace, as its work carries it: the span of the webhook, and the ids its
//! log lines name (also when no trace is exported, for Cloud Run records the trace of
//! every request it fronts).
//!
//! The ids travel with the work as a task-local value, not by looking up the current
//! span while a line is written: with export off no span is built at all, and the log
//! formatter cannot ask the subscriber it runs inside.

use super::context;
use super::SPANS;
use axum::http::HeaderMap;
use futures_util::future::Either;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use std::cell::Cell;
use std::future::Future;
use tokio::task::futures::TaskLocalFuture;
use tracing::instrument::Instrumented;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

tokio::task_local! {
    // A cell: work linked to its origin only once it has read it names the origin
    // from then on.
    static CURRENT: Cell<Trace>;
}

/// The trace and span a piece of work belongs to: what its log lines name, and what
/// work it leaves behind links back to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trace {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub sampled: bool,
}

impl Trace {
    /// The trace of the work running now, if it runs inside a request's.
    pub fn current() -> Option<Trace> {
        CURRENT.try_with(Cell::get).ok()
    }

    /// The trace as `traceparent` writes it, to keep with work another instance may
    /// take over.
    pub fn to_traceparent(&self) -> String {
        let flags = if self.sampled { "01" } else { "00" };
        format!("00-{}-{}-{flags}", self.trace_id, self.span_id)
    }

    /// The trace [`Trace::to_traceparent`] wrote, if `value` is one.
    pub fn from_traceparent(value: &str) -> Option<Trace> {
        let mut parts = value.split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if version != "00" || parts.next().is_some() || trace.len() != 32 || span.len() != 16 {
            return None;
        }
        let trace = Trace {
            trace_id: TraceId::from_hex(trace).ok()?,
            span_id: SpanId::from_hex(span).ok()?,
            sampled: u8::from_str_radix(flags, 16).ok()? & 1 == 1,
        };
        (trace.trace_id != TraceId::INVALID && trace.span_id != SpanId::INVALID).then_some(trace)
    }

    /// The span context to link to, from work that outlives this one.
    pub fn span_context(&self) -> SpanContext {
        let flags = match self.sampled {
            true => TraceFlags::SAMPLED,
            false => TraceFlags::default(),
        };
        SpanContext::new(
            self.trace_id,
            self.span_id,
            flags,
            true,
            TraceState::default(),
        )
    }

    fn of(span: &SpanContext) -> Trace {
        Trace {
            trace_id: span.trace_id(),
            span_id: span.span_id(),
            sampled: span.is_sampled(),
        }
    }

    /// The ids of `span` once built (export on), else those of `fallback`.
    fn of_span(span: &tracing::Span, fallback: Trace) -> Trace {
        if span.is_disabled() {
            return fallback;
        }
        let context = span.context();
        let built = context.span().span_context().clone();
        match built.is_valid() {
            true => Trace::of(&built),
            false => fallback,
        }
    }
}

/// `work` in its span and trace: the one future a request's work is wrapped in.
///
/// Made by plain functions, not `async fn`s: an `async fn` that awaits a future it
/// was given keeps that future twice in its own (the argument and the wrapper it
/// awaits), and a webhook's work is most of what a conversation in flight holds.
pub type InTrace<F> = TaskLocalFuture<Cell<Trace>, Instrumented<F>>;

/// A request's span and trace, read from its headers before its work starts: the
/// caller's trace if the headers name one (see [`context::caller`]), else a new one.
/// Read first, so that the work can own the request (and drop it before it waits).
pub struct RequestTrace {
    span: tracing::Span,
    trace: Trace,
}

impl RequestTrace {
    /// A webhook's: with export on, its work runs in the span `webhook`, the caller's
    /// span its parent.
    pub fn webhook(headers: &HeaderMap) -> Self {
        let span = tracing::info_span!(target: SPANS, "webhook", otel.kind = "server");
        Self::of(span, headers)
    }

    /// A status callback's (`POST /status`), in the span `status`: Twilio's callbacks
    /// carry no trace, so each starts one (a proxy's header is continued).
    pub fn status_callback(headers: &HeaderMap) -> Self {
        let span = tracing::info_span!(target: SPANS, "status", otel.kind = "server");
        Self::of(span, headers)
    }

    /// A call to the hand-over API's (`/handoff/{conversation}/…`), in the span
    /// `handoff.request`: the helpdesk's trace, if it sends one.
    pub fn handoff_request(headers: &HeaderMap) -> Self {
        let span = tracing::info_span!(target: SPANS, "handoff.request", otel.kind = "server");
        Self::of(span, headers)
    }

    /// A call to the outbound API's (`POST /outbound`), in the span `outbound.request`.
    pub fn outbound_request(headers: &HeaderMap) -> Self {
        let span = tracing::info_span!(target: SPANS, "outbound.request", otel.kind = "server");
        Self::of(span, headers)
    }

    fn of(span: tracing::Span, headers: &HeaderMap) -> Self {
        let caller = context::caller(headers);
        if let Some(caller) = caller.as_ref().filter(|c| c.span_id() != SpanId::INVALID) {
            let _ = span
                .set_parent(opentelemetry::Context::new().with_remote_span_context(caller.clone()));
        }
        // Export off: the log lines name the caller's span (Cloud Run's own, which it
        // records), or new ids that at least join this request's lines.
        let fallback = match caller {
            Some(caller) if caller.span_id() != SpanId::INVALID => Trace::of(&caller),
            Some(caller) => Trace {
                span_id: new_span_id(),
                ..Trace::of(&caller)
            },
            None => Trace {
                trace_id: new_trace_id(),
                span_id: new_span_id(),
                sampled: false,
            },
        };
        let trace = Trace::of_span(&span, fallback);
        Self { span, trace }
    }

    /// Runs `work` in the request's span and trace.
    pub fn run<F: Future>(self, work: F) -> InTrace<F> {
        CURRENT.scope(Cell::new(self.trace), work.instrument(self.span))
    }
}

/// Work that goes on after the webhook that started it answered.
#[derive(Debug, Clone, Copy)]
pub enum Later {
    /// A turn whose replies go through the Messages API.
    Reply,
    /// A turn taken over from an instance that died or stopped.
    Takeover,
    /// An outbound message the business started.
    Outbound,
    /// A hand-over looked at for having gone quiet, and ended if it has.
    QuietHandoff,
}

/// Runs `work`, left behind by the request whose trace is `origin`, in a trace of its
/// own, linked to the request's: it lives past the webhook's answer, so it is not a
/// child of it. With export off, its log lines name `origin`.
pub fn linked<F: Future>(later: Later, origin: Option<Trace>, work: F) -> InTrace<F> {
    // A span's name is fixed where it is written: one line each.
    let span = match later {
        Later::Reply => tracing::info_span!(target: SPANS, parent: None, "reply"),
        Later::Takeover => tracing::info_span!(target: SPANS, parent: None, "takeover"),
        Later::Outbound => tracing::info_span!(target: SPANS, parent: None, "outbound"),
        Later::QuietHandoff => {
            tracing::info_span!(target: SPANS, parent: None, "handoff.quiet")
        }
    };
    if let Some(origin) = origin {
        span.add_link(origin.span_context());
    }
    let fallback = origin.unwrap_or_else(|| Trace {
        trace_id: new_trace_id(),
        span_id: new_span_id(),
        sampled: false,
    });
    let trace = Trace::of_span(&span, fallback);
    CURRENT.scope(Cell::new(trace), work.instrument(span))
}

/// Links the work running now to `origin`, the request that left it, once it has
/// learnt which that was (a turn taken over reads it from the state store). With
/// export off, its log lines name `origin` from now on.
pub fn link_to(origin: Trace) {
    let span = tracing::Span::current();
    match span.is_disabled() {
        false => span.add_link(origin.span_context()),
        true => {
            let _ = CURRENT.try_with(|current| current.set(origin));
        }
    }
}

/// Runs `work`, spawned by the request's (a turn on its own task), in the request's
/// trace and under the span current now.
pub fn carried<F: Future>(work: F) -> impl Future<Output = F::Output> {
    let work = work.in_current_span();
    match Trace::current() {
        Some(trace) => Either::Left(CURRENT.scope(Cell::new(trace), work)),
        None => Either::Right(work),
    }
}

fn new_trace_id() -> TraceId {
    TraceId::from_bytes(rand::random::<u128>().max(1).to_be_bytes())
}

fn new_span_id() -> SpanId {
    SpanId::from_bytes(rand::random::<u64>().max(1).to_be_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[tokio::test]
    async fn a_webhook_without_export_carries_the_callers_ids() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-cloud-trace-context",
            HeaderValue::from_static("105445aa7843bc8bf206b12000100000/1;o=1"),
        );
        let trace = RequestTrace::webhook(&headers)
            .run(async { Trace::current() })
            .await
            .unwrap();
        assert_eq!(
            trace.trace_id.to_string(),
            "105445aa7843bc8bf206b12000100000"
        );
        assert_eq!(trace.span_id.to_string(), "0000000000000001");
        assert!(trace.sampled);
        assert_eq!(Trace::current(), None);
    }

    #[tokio::test]
    async fn a_webhook_with_a_malformed_header_starts_a_new_trace() {
        let mut headers = HeaderMap::new();
        headers.insert("traceparent", HeaderValue::from_static("00-zz-zz-01"));
        let first = RequestTrace::webhook(&headers)
            .run(async { Trace::current() })
            .await
            .unwrap();
        let second = RequestTrace::webhook(&headers)
            .run(async { Trace::current() })
            .await
            .unwrap();
        assert_ne!(first.trace_id, TraceId::INVALID);
        assert_ne!(first.span_id, SpanId::INVALID);
        assert_ne!(first.trace_id, second.trace_id);
    }

    #[tokio::test]
    async fn work_left_behind_names_its_origin_and_spawned_work_keeps_it() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "traceparent",
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        let (origin, spawned) = RequestTrace::webhook(&headers)
            .run(async {
                let spawned = tokio::spawn(carried(async { Trace::current() }));
                (Trace::current(), spawned.await.unwrap())
            })
            .await;
        assert_eq!(spawned, origin);
        let later = linked(Later::Reply, origin, async { Trace::current() }).await;
        assert_eq!(later, origin);
        let taken_over = linked(Later::Takeover, None, async {
            let before = Trace::current();
            link_to(origin.unwrap());
            (before, Trace::current())
        })
        .await;
        assert_ne!(taken_over.0, origin);
        assert_eq!(taken_over.1, origin);
    }

    #[test]
    fn a_trace_kept_in_the_store_reads_back() {
        let trace = Trace {
            trace_id: TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            span_id: SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            sampled: true,
        };
        let kept = trace.to_traceparent();
        assert_eq!(
            kept,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        assert_eq!(Trace::from_traceparent(&kept), Some(trace));
        for bad in [
            "",
            "00-zz-00f067aa0ba902b7-01",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        ] {
            assert_eq!(Trace::from_traceparent(bad), None, "{bad}");
        }
    }
}
