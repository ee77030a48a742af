//! Sending spans out: OpenTelemetry's SDK with its OTLP exporter over HTTP, as
//! [`TraceExport`] (read in `config::traces`) says.
//!
//! The exporter sends through the bridge's own reqwest client, run on the bridge's
//! runtime ([`OnRuntime`]): its own `reqwest` features would bring a second reqwest
//! and hyper into the binary, for the same requests.

use crate::config::{OtlpProtocol, SamplerSetting, TraceExport};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use std::time::Duration;

/// How long one export may take, as the SDK's own default.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

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
}

impl Export {
    /// Builds the pipeline `settings` describe; must run inside the bridge's runtime,
    /// which the exporter's requests then run on.
    pub fn start(settings: &TraceExport) -> Result<Self, ExportError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| ExportError::NoRuntime)?;
        let client = crate::tls::shared(reqwest::Client::builder())
            .timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(ExportError::Client)?;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(OnRuntime { client, runtime })
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
            .with_resource(
                Resource::builder()
                    .with_service_name(settings.service_name.clone())
                    .build(),
            )
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

/// The bridge's reqwest client as the exporter's HTTP client. The SDK's batch
/// processor exports from a thread of its own with no runtime; the request is run on
/// the bridge's runtime and awaited from there.
#[derive(Debug)]
struct OnRuntime {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl HttpClient for OnRuntime {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let request = reqwest::Request::try_from(request)?;
        let client = self.client.clone();
        let sent = self.runtime.spawn(async move {
            let response = client.execute(request).await?;
            let status = response.status();
            let headers = response.headers().clone();
            let body = response.bytes().await?;
            Ok::<_, reqwest::Error>((status, headers, body))
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
