//! Sending spans out: OpenTelemetry's SDK with its OTLP exporter over HTTP, as
//! [`TraceExport`] (read in `config::traces`) says.
//!
//! The exporter sends through the bridge's own reqwest client, run on the bridge's
//! runtime ([`OnRuntime`]): its own `reqwest` features would bring a second reqwest
//! and hyper into the binary, for the same requests.
//!
//! To Google's own OTLP endpoint (the Telemetry API, `telemetry.googleapis.com`),
//! each export carries a token of the Application Default Credentials (on Cloud Run,
//! the service account's), and the spans the resource attribute `gcp.project_id`
//! that says which project's Cloud Trace they go to.

use crate::config::{OtlpProtocol, SamplerSetting, TraceExport};
use google_cloud_auth::credentials::CacheableResource;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use std::time::Duration;

/// How long one export may take, as the SDK's own default.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// Google's OTLP endpoint, which takes Google credentials.
const GOOGLE_OTLP_HOST: &str = "telemetry.googleapis.com";
/// What a token for the Telemetry API needs to write spans.
const TRACE_APPEND_SCOPE: &str = "https://www.googleapis.com/auth/trace.append";

/// The exporting pipeline, installed: its tracer for the `tracing` layer, and its
/// provider to flush at shutdown.
pub struct Export {
    pub tracer: SdkTracer,
    provider: SdkTracerProvider,
}

/// Why the exporter could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("cannot build the HTTP client for trace export: {0}")]
    Client(reqwest::Error),
    #[error("cannot build the OTLP trace exporter: {0}")]
    Exporter(String),
    #[error("trace export needs a Tokio runtime to send on")]
    NoRuntime,
    #[error(
        "cannot find credentials for {GOOGLE_OTLP_HOST} (Application Default Credentials): {0}"
    )]
    Credentials(String),
}

impl Export {
    /// Builds the pipeline `settings` describe, its spans of the bridge's `project`;
    /// must run inside the bridge's runtime, which the exporter's requests then run on.
    pub fn start(settings: &TraceExport, project: Option<&str>) -> Result<Self, ExportError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| ExportError::NoRuntime)?;
        let client = crate::tls::shared(reqwest::Client::builder())
            .timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(ExportError::Client)?;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(OnRuntime {
                client,
                runtime,
                google: google_credentials(&settings.endpoint)?,
            })
            .with_endpoint(settings.endpoint.clone())
            .with_protocol(match settings.protocol {
                OtlpProtocol::HttpProtobuf => Protocol::HttpBinary,
                OtlpProtocol::HttpJson => Protocol::HttpJson,
            })
            .with_headers(settings.headers.clone())
            .build()
            .map_err(|e| ExportError::Exporter(e.to_string()))?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(sampler(&settings.sampler))
            .with_resource(resource(settings, project))
            .build();
        let tracer = provider.tracer("twilio-dialogflow");
        Ok(Export { tracer, provider })
    }

    /// A handle that flushes and stops the pipeline.
    pub fn flusher(&self) -> Flusher {
        Flusher(self.provider.clone())
    }
}

/// Flushes the spans not yet sent and stops exporting: at shutdown, after the last
/// request's work.
#[derive(Clone)]
pub struct Flusher(SdkTracerProvider);

impl Flusher {
    /// Sends what is left, waiting on a blocking thread: the exporter's requests run
    /// on this runtime, which must go on meanwhile.
    pub async fn flush(self) {
        let provider = self.0;
        let done = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        if let Ok(Err(error)) = done {
            tracing::warn!(%error, "the last spans were not all exported");
        }
    }
}

/// The resource the spans are of: the service, and to Google's endpoint the project.
fn resource(settings: &TraceExport, project: Option<&str>) -> Resource {
    let builder = Resource::builder().with_service_name(settings.service_name.clone());
    match (is_google(&settings.endpoint), project) {
        (true, Some(project)) => builder
            .with_attribute(opentelemetry::KeyValue::new(
                "gcp.project_id",
                project.to_owned(),
            ))
            .build(),
        _ => builder.build(),
    }
}

/// Whether `endpoint` is Google's OTLP endpoint.
pub fn is_google(endpoint: &str) -> bool {
    reqwest::Url::parse(endpoint).is_ok_and(|url| url.host_str() == Some(GOOGLE_OTLP_HOST))
}

/// The Application Default Credentials, for Google's endpoint only: no other
/// collector is sent a Google token.
fn google_credentials(
    endpoint: &str,
) -> Result<Option<google_cloud_auth::credentials::Credentials>, ExportError> {
    if !is_google(endpoint) {
        return Ok(None);
    }
    google_cloud_auth::credentials::Builder::default()
        .with_scopes([TRACE_APPEND_SCOPE])
        .build()
        .map(Some)
        .map_err(|e| ExportError::Credentials(e.to_string()))
}

/// The bridge's reqwest client as the exporter's HTTP client. The SDK's batch
/// processor exports from a thread of its own with no runtime; the request is run on
/// the bridge's runtime and awaited from there.
#[derive(Debug)]
struct OnRuntime {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
    /// To Google's endpoint: whose token each export carries.
    google: Option<google_cloud_auth::credentials::Credentials>,
}

#[async_trait::async_trait]
impl HttpClient for OnRuntime {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let mut request = reqwest::Request::try_from(request)?;
        let client = self.client.clone();
        let google = self.google.clone();
        let sent = self.runtime.spawn(async move {
            if let Some(credentials) = google {
                // Cached by the credentials until shortly before the token expires.
                match credentials.headers(Default::default()).await? {
                    CacheableResource::New { data, .. } => request.headers_mut().extend(data),
                    CacheableResource::NotModified => {}
                }
            }
            let response = client.execute(request).await?;
            let status = response.status();
            let headers = response.headers().clone();
            let body = response.bytes().await?;
            Ok::<_, HttpError>((status, headers, body))
        });
        let (status, headers, body) = sent.await??;
        let mut response = Response::new(body);
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        Ok(response)
    }
}

/// The SDK's sampler for `setting`.
fn sampler(setting: &SamplerSetting) -> Sampler {
    let parent_based = |root: Sampler| Sampler::ParentBased(Box::new(root));
    match *setting {
        SamplerSetting::AlwaysOn => Sampler::AlwaysOn,
        SamplerSetting::AlwaysOff => Sampler::AlwaysOff,
        SamplerSetting::Ratio(r) => Sampler::TraceIdRatioBased(r),
        SamplerSetting::ParentBasedAlwaysOn => parent_based(Sampler::AlwaysOn),
        SamplerSetting::ParentBasedAlwaysOff => parent_based(Sampler::AlwaysOff),
        SamplerSetting::ParentBasedRatio(r) => parent_based(Sampler::TraceIdRatioBased(r)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_googles_endpoint_gets_google_credentials_and_the_project() {
        assert!(is_google("https://telemetry.googleapis.com/v1/traces"));
        for other in [
            "http://collector:4318/v1/traces",
            "https://telemetry.googleapis.com.example/v1/traces",
            "https://example.com/telemetry.googleapis.com/v1/traces",
        ] {
            assert!(!is_google(other), "{other}");
            assert!(google_credentials(other).unwrap().is_none(), "{other}");
        }
        let settings = |endpoint: &str| TraceExport {
            endpoint: endpoint.into(),
            protocol: OtlpProtocol::HttpProtobuf,
            headers: Default::default(),
            service_name: "bridge".into(),
            sampler: SamplerSetting::AlwaysOn,
        };
        let project_of = |resource: Resource| {
            resource
                .get(&opentelemetry::Key::from_static_str("gcp.project_id"))
                .map(|v| v.to_string())
        };
        let google = settings("https://telemetry.googleapis.com/v1/traces");
        assert_eq!(project_of(resource(&google, Some("p1"))), Some("p1".into()));
        let collector = settings("http://collector:4318/v1/traces");
        assert_eq!(project_of(resource(&collector, Some("p1"))), None);
    }
}
