//! The trace a webhook belongs to: the caller's, from W3C `traceparent` (with
//! `tracestate`) or Cloud Run's `X-Cloud-Trace-Context`, else a new one.
//!
//! A header that cannot be read never fails a webhook: the request then starts a new
//! trace, as if it had come with none.

use axum::http::HeaderMap;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry_http::HeaderExtractor;
use opentelemetry_sdk::propagation::TraceContextPropagator;

/// Cloud Run's own trace header: `TRACE_ID/SPAN_ID;o=OPTIONS`, the span id in decimal.
const CLOUD_TRACE: &str = "x-cloud-trace-context";

/// The span context of the caller that started this request, if its headers carry one
/// that can be read. `traceparent` wins over `X-Cloud-Trace-Context`, as it does for
/// Google's own front ends (Cloud Run sends both, naming the same trace).
pub fn caller(headers: &HeaderMap) -> Option<SpanContext> {
    w3c(headers).or_else(|| cloud_trace(headers))
}

/// `traceparent` and `tracestate`, read by OpenTelemetry's W3C propagator.
fn w3c(headers: &HeaderMap) -> Option<SpanContext> {
    if !headers.contains_key("traceparent") {
        return None;
    }
    let context = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    let span = context.span().span_context().clone();
    span.is_valid().then_some(span)
}

/// `X-Cloud-Trace-Context: TRACE_ID/SPAN_ID;o=1`: 32 hex digits, a decimal 64-bit span
/// id, `o=1` when the request is traced. The span id and options may be missing.
fn cloud_trace(headers: &HeaderMap) -> Option<SpanContext> {
    let value = headers.get(CLOUD_TRACE)?.to_str().ok()?.trim();
    let (ids, options) = match value.split_once(';') {
        Some((ids, options)) => (ids, Some(options)),
        None => (value, None),
    };
    let (trace, span) = match ids.split_once('/') {
        Some((trace, span)) => (trace, Some(span)),
        None => (ids, None),
    };
    if trace.len() != 32 || !trace.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let trace_id = TraceId::from_hex(trace).ok()?;
    // A trace id of zeros is invalid, as it is in W3C's header.
    if trace_id == TraceId::INVALID {
        return None;
    }
    // Without a span id the request still belongs to the trace; the webhook's span is
    // then its root (a remote parent needs a span id, so none is made up).
    let span_id = match span {
        Some(span) if !span.is_empty() => {
            SpanId::from_bytes(span.parse::<u64>().ok()?.to_be_bytes())
        }
        _ => SpanId::INVALID,
    };
    let sampled = options.is_some_and(|o| o.trim() == "o=1");
    let flags = match sampled {
        true => TraceFlags::SAMPLED,
        false => TraceFlags::default(),
    };
    Some(SpanContext::new(
        trace_id,
        span_id,
        flags,
        true,
        TraceState::default(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn traceparent_names_the_callers_trace_and_span() {
        let caller = caller(&headers(&[
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("tracestate", "congo=t61rcWkgMzE"),
        ]))
        .unwrap();
        assert_eq!(
            caller.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(caller.span_id().to_string(), "00f067aa0ba902b7");
        assert!(caller.is_sampled());
        assert!(caller.is_remote());
        assert_eq!(caller.trace_state().get("congo"), Some("t61rcWkgMzE"));
    }

    #[test]
    fn cloud_run_header_names_the_trace_and_its_decimal_span() {
        let caller = caller(&headers(&[(
            "x-cloud-trace-context",
            "105445aa7843bc8bf206b12000100000/1;o=1",
        )]))
        .unwrap();
        assert_eq!(
            caller.trace_id().to_string(),
            "105445aa7843bc8bf206b12000100000"
        );
        assert_eq!(caller.span_id().to_string(), "0000000000000001");
        assert!(caller.is_sampled());
        let unsampled = super::caller(&headers(&[(
            "x-cloud-trace-context",
            "105445aa7843bc8bf206b12000100000/18446744073709551615;o=0",
        )]))
        .unwrap();
        assert_eq!(unsampled.span_id().to_string(), "ffffffffffffffff");
        assert!(!unsampled.is_sampled());
        let trace_only = super::caller(&headers(&[(
            "x-cloud-trace-context",
            "105445aa7843bc8bf206b12000100000",
        )]))
        .unwrap();
        assert_eq!(trace_only.span_id(), SpanId::INVALID);
    }

    #[test]
    fn traceparent_wins_over_cloud_runs_header() {
        let caller = caller(&headers(&[
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            (
                "x-cloud-trace-context",
                "105445aa7843bc8bf206b12000100000/1;o=1",
            ),
        ]))
        .unwrap();
        assert_eq!(
            caller.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
    }

    #[test]
    fn a_malformed_traceparent_falls_back_to_cloud_runs_header() {
        let caller = caller(&headers(&[
            ("traceparent", "00-nothex-00f067aa0ba902b7-01"),
            (
                "x-cloud-trace-context",
                "105445aa7843bc8bf206b12000100000/1;o=1",
            ),
        ]))
        .unwrap();
        assert_eq!(
            caller.trace_id().to_string(),
            "105445aa7843bc8bf206b12000100000"
        );
    }

    #[test]
    fn malformed_headers_name_no_caller() {
        for (name, value) in [
            ("traceparent", ""),
            ("traceparent", "garbage"),
            (
                "traceparent",
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            ),
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            ),
            (
                "traceparent",
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("x-cloud-trace-context", ""),
            ("x-cloud-trace-context", "/1;o=1"),
            ("x-cloud-trace-context", "nothex/1;o=1"),
            (
                "x-cloud-trace-context",
                "105445aa7843bc8bf206b12000100000x/1;o=1",
            ),
            (
                "x-cloud-trace-context",
                "00000000000000000000000000000000/1;o=1",
            ),
            (
                "x-cloud-trace-context",
                "105445aa7843bc8bf206b12000100000/-1;o=1",
            ),
            (
                "x-cloud-trace-context",
                "105445aa7843bc8bf206b12000100000/99999999999999999999;o=1",
            ),
        ] {
            assert!(
                caller(&headers(&[(name, value)])).is_none(),
                "{name}: {value:?}"
            );
        }
        let mut binary = HeaderMap::new();
        binary.insert(
            "x-cloud-trace-context",
            HeaderValue::from_bytes(b"\xff\xfe/1").unwrap(),
        );
        assert!(caller(&binary).is_none());
    }
}
