//! Logs: human text on a terminal, or one JSON object per line that Google Cloud
//! Logging reads as a structured entry (`severity`, `message`, and the event's fields).
//!
//! Cloud Logging takes `severity` and `message` from a JSON line on stdout/stderr; the
//! `tracing-subscriber` JSON format names them `level` and `fields.message`, so entries
//! would all show as "DEFAULT". This small formatter writes the names Cloud Logging
//! expects.

use serde_json::{Map, Value};
use std::fmt;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

use crate::config::{project_of, Vars};
use crate::telemetry::{Trace, SPANS};
use tracing_subscriber::filter::{filter_fn, FilterExt};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    /// `LOG_FORMAT` if set (`json` or `text`), else JSON on Cloud Run.
    pub fn from_vars(vars: &Vars) -> Self {
        match vars
            .get("LOG_FORMAT")
            .map(|v| v.trim().to_ascii_lowercase())
        {
            Some(v) if v == "json" => LogFormat::Json,
            Some(v) if v == "text" => LogFormat::Text,
            _ if crate::config::on_cloud_run(vars) => LogFormat::Json,
            _ => LogFormat::Text,
        }
    }
}

/// Installs the global subscriber, configured by `LOG_FORMAT` and `RUST_LOG` from
/// `vars` (the environment, over `.env` for the commands that read it); `RUST_LOG`
/// overrides `default_level`.
///
/// By default the `redis` crate says only its errors: its cluster client warns at each
/// of its retries while a master fails over (dozens a second), which the shared
/// store's own warning, at most every few seconds, already tells.
pub fn init(vars: &Vars, default_level: &str) {
    init_with(
        vars,
        default_level,
        project_of(vars).map(str::to_owned),
        None,
    );
}

/// [`init`], with the project Cloud Logging files traces under and, when traces are
/// exported, the OpenTelemetry layer that turns the bridge's spans into spans sent.
///
/// Each layer has its own filter: the log lines want events only, never spans, so
/// with export off no layer wants a span and none is built; the OpenTelemetry layer
/// wants the bridge's spans and the events that belong in them.
pub fn init_with(
    vars: &Vars,
    default_level: &str,
    project: Option<String>,
    export: Option<&crate::telemetry::Export>,
) {
    let format = LogFormat::from_vars(vars);
    let filter = vars
        .get("RUST_LOG")
        .and_then(|directives| EnvFilter::try_new(directives).ok())
        .unwrap_or_else(|| EnvFilter::new(format!("{default_level},redis=error")));
    let lines = tracing_subscriber::fmt::layer()
        // Colour codes only for a person at a terminal, never into a file or a pipe.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let lines = match format {
        LogFormat::Text => lines.boxed(),
        LogFormat::Json => lines.event_format(CloudLogging { project }).boxed(),
    }
    .with_filter(filter.and(filter_fn(written_in_logs)));
    let spans = export.map(|export| {
        tracing_opentelemetry::layer()
            .with_tracer(export.tracer.clone())
            // Every span's target is the same, and a span's busy and idle times, read
            // at each poll, cost more than they tell beside its duration.
            .with_target(false)
            .with_threads(false)
            .with_tracked_inactivity(false)
            .with_filter(filter_fn(wanted_in_traces))
    });
    let _ = tracing_subscriber::registry()
        .with(spans)
        .with(lines)
        .try_init();
}

/// What the log lines hold: events, never spans, so that with export off no layer wants
/// a span and none is built; and not the events written for the traces alone.
fn written_in_logs(metadata: &tracing::Metadata<'_>) -> bool {
    metadata.is_event() && metadata.target() != SPANS
}

/// What the exported traces hold: the bridge's spans, the events written for them
/// (retries), and the bridge's warnings and errors, as events of the span they
/// happen in.
fn wanted_in_traces(metadata: &tracing::Metadata<'_>) -> bool {
    let target = metadata.target();
    if metadata.is_span() {
        return target == SPANS;
    }
    target == SPANS || (target.starts_with("bridge") && *metadata.level() <= Level::WARN)
}

/// Formats events as Cloud Logging structured entries.
pub struct CloudLogging {
    /// The project of the trace ids in `trace` fields.
    pub project: Option<String>,
}

impl<S, N> FormatEvent<S, N> for CloudLogging
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let entry = entry(event, self.project.as_deref(), Trace::current());
        writeln!(writer, "{entry}")
    }
}

/// The JSON entry for `event`, written inside the work of a request whose trace is
/// `trace`: Cloud Logging's special fields for it file the line under that trace and
/// span in the Logs Explorer and Cloud Trace. The trace is a resource name, so it
/// needs the project; the span and the sampling decision are written without.
pub fn entry(event: &Event<'_>, project: Option<&str>, trace: Option<Trace>) -> Value {
    let mut fields = Fields(Map::new());
    event.record(&mut fields);
    let mut entry = fields.0;
    if let Some(trace) = trace {
        if let Some(project) = project {
            entry.insert(
                "logging.googleapis.com/trace".into(),
                Value::String(format!("projects/{project}/traces/{}", trace.trace_id)),
            );
        }
        entry.insert(
            "logging.googleapis.com/spanId".into(),
            Value::String(trace.span_id.to_string()),
        );
        entry.insert(
            "logging.googleapis.com/trace_sampled".into(),
            Value::Bool(trace.sampled),
        );
    }
    let message = entry
        .remove("message")
        .unwrap_or(Value::String(String::new()));
    entry.insert(
        "severity".into(),
        Value::String(severity(event.metadata().level()).into()),
    );
    entry.insert("message".into(), message);
    entry.insert(
        "target".into(),
        Value::String(event.metadata().target().into()),
    );
    Value::Object(entry)
}

fn severity(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARNING",
        Level::INFO => "INFO",
        _ => "DEBUG",
    }
}

struct Fields(Map<String, Value>);

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().into(), Value::String(value.into()));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), Value::Bool(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), Value::String(format!("{value:?}")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::fmt::MakeWriter;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    /// A subscriber writing Cloud Logging lines of project `my-project` into `buffer`.
    fn cloud_logging_into(buffer: &Buffer) -> impl tracing::Subscriber {
        tracing_subscriber::fmt()
            .with_writer(buffer.clone())
            .event_format(CloudLogging {
                project: Some("my-project".into()),
            })
            .finish()
    }

    #[test]
    fn entries_carry_severity_message_and_fields() {
        let buffer = Buffer::default();
        let subscriber = cloud_logging_into(&buffer);
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(
                message_sid = "SM1",
                agent_ms = 12u64,
                duplicate = false,
                "webhook handled"
            );
        });
        let line = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let entry: Value = serde_json::from_str(line.trim()).unwrap();
        assert_eq!(entry["severity"], "WARNING");
        assert_eq!(entry["message"], "webhook handled");
        assert_eq!(entry["message_sid"], "SM1");
        assert_eq!(entry["agent_ms"], 12);
        assert_eq!(entry["duplicate"], false);
        // Outside a request's work, a line names no trace.
        assert!(entry.get("logging.googleapis.com/trace").is_none());
        assert!(entry.get("logging.googleapis.com/spanId").is_none());
    }

    #[tokio::test]
    async fn lines_inside_a_requests_work_name_its_trace_and_span() {
        let buffer = Buffer::default();
        let subscriber = cloud_logging_into(&buffer);
        let _default = tracing::subscriber::set_default(subscriber);
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(
            "x-cloud-trace-context",
            axum::http::HeaderValue::from_static("105445aa7843bc8bf206b12000100000/20;o=1"),
        );
        crate::telemetry::request::RequestTrace::webhook(&headers)
            .run(async {
                tracing::info!("webhook handled");
            })
            .await;
        let line = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let entry: Value = serde_json::from_str(line.trim()).unwrap();
        assert_eq!(
            entry["logging.googleapis.com/trace"],
            "projects/my-project/traces/105445aa7843bc8bf206b12000100000"
        );
        assert_eq!(entry["logging.googleapis.com/spanId"], "0000000000000014");
        assert_eq!(entry["logging.googleapis.com/trace_sampled"], true);
    }

    /// A callsite for metadata made by hand: the filters are tested alone, apart from
    /// the callsite interest that every test of this binary shares (a span another test's
    /// subscriber wants is built, whatever this test's subscriber says).
    struct HandMade;
    impl tracing::callsite::Callsite for HandMade {
        fn set_interest(&self, _: tracing::subscriber::Interest) {}
        fn metadata(&self) -> &tracing::Metadata<'_> {
            &HAND_MADE_SPAN
        }
    }
    static HAND_MADE: HandMade = HandMade;
    static HAND_MADE_SPAN: tracing::Metadata<'static> =
        metadata(SPANS, tracing::metadata::Kind::SPAN);

    const fn metadata(
        target: &'static str,
        kind: tracing::metadata::Kind,
    ) -> tracing::Metadata<'static> {
        tracing::Metadata::new(
            "hand made",
            target,
            Level::INFO,
            None,
            None,
            None,
            tracing::field::FieldSet::new(&[], tracing::callsite::Identifier(&HAND_MADE)),
            kind,
        )
    }

    #[test]
    fn the_log_lines_want_no_span_so_with_export_off_none_is_built() {
        use tracing::metadata::Kind;
        assert!(!written_in_logs(&metadata(SPANS, Kind::SPAN)));
        assert!(!written_in_logs(&metadata(
            "bridge::http::webhook",
            Kind::SPAN
        )));
        assert!(written_in_logs(&metadata(
            "bridge::http::webhook",
            Kind::EVENT
        )));
        // Events written for the traces alone (a retry's) stay out of the logs.
        assert!(!written_in_logs(&metadata(SPANS, Kind::EVENT)));
        // The traces take our spans, and our warnings as events of them.
        assert!(wanted_in_traces(&metadata(SPANS, Kind::SPAN)));
        assert!(!wanted_in_traces(&metadata("hyper::proto", Kind::SPAN)));
    }
}
