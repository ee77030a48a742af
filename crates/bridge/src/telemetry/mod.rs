//! Traces: the trace each webhook belongs to ([`context`]), carried with its work and
//! with the work it leaves behind ([`request`]), exported with OpenTelemetry when an
//! OTLP endpoint is set ([`export`]), and named in every log line of that work
//! ([`crate::logging`]).
//!
//! Spans are `tracing` spans of target [`SPANS`], which only the OpenTelemetry layer
//! wants: with export off no layer does, so they are never built (a `tracing` callsite
//! no layer is interested in costs one load of its cached interest).

pub mod context;
pub mod export;
pub mod request;

pub use export::{Export, ExportError, Flusher};
pub use request::{Later, Trace};

/// The target of every span the bridge records for traces.
pub const SPANS: &str = "bridge::span";

/// The project that Cloud Logging files a request's trace under: the one the bridge
/// runs in, as the metadata server tells (asked only on Google Cloud: on Cloud Run, or
/// where `GCE_METADATA_HOST` names one), else the configured `GCP_PROJECT`.
pub async fn trace_project(vars: &crate::config::Vars) -> Option<String> {
    let host = vars
        .get("GCE_METADATA_HOST")
        .map(|h| h.trim())
        .filter(|h| !h.is_empty());
    if crate::config::on_cloud_run(vars) || host.is_some() {
        let host = host.unwrap_or(crate::gcp_metadata::DEFAULT_HOST);
        if let Ok(project) = crate::gcp_metadata::project_id(host).await {
            return Some(project);
        }
    }
    crate::config::project_of(vars).map(str::to_owned)
}
