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

use crate::config::Vars;

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
    let format = LogFormat::from_vars(vars);
    let filter = vars
        .get("RUST_LOG")
        .and_then(|directives| EnvFilter::try_new(directives).ok())
        .unwrap_or_else(|| EnvFilter::new(format!("{default_level},redis=error")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colour codes only for a person at a terminal, never into a file or a pipe.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .event_format(CloudLogging {
                project: crate::config::project_of(vars).map(str::to_owned),
            })
            .try_init(),
    };
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
        writeln!(writer, "{}", entry(event, self.project.as_deref()))
    }
}

/// The JSON entry for `event`. A `trace` field (the trace id of Cloud Run's
/// `X-Cloud-Trace-Context`) becomes the entry's trace, which files the line under its
/// request in the Logs Explorer.
pub fn entry(event: &Event<'_>, project: Option<&str>) -> Value {
    let mut fields = Fields(Map::new());
    event.record(&mut fields);
    let mut entry = fields.0;
    match (entry.remove("trace"), project) {
        (Some(Value::String(trace)), Some(project)) if !trace.is_empty() => {
            entry.insert(
                "logging.googleapis.com/trace".into(),
                Value::String(format!("projects/{project}/traces/{trace}")),
            );
        }
        _ => {}
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

    #[test]
    fn entries_carry_severity_message_and_fields() {
        let buffer = Buffer::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(buffer.clone())
            .event_format(CloudLogging {
                project: Some("my-project".into()),
            })
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(
                message_sid = "SM1",
                agent_ms = 12u64,
                duplicate = false,
                trace = "105445aa7843bc8bf206b12000100000",
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
        assert_eq!(
            entry["logging.googleapis.com/trace"],
            "projects/my-project/traces/105445aa7843bc8bf206b12000100000"
        );
    }
}
