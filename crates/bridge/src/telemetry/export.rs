//! Sending spans out: OpenTelemetry's SDK with its OTLP exporter over HTTP, only when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set.
//!
//! The standard variables are read from the environment over `.env`, like every
//! other setting: `OTEL_SDK_DISABLED`, `OTEL_TRACES_EXPORTER` (`otlp` or `none`), the
//! endpoint, `OTEL_EXPORTER_OTLP_PROTOCOL` (`http/protobuf` or
//! `http/json`), `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_SERVICE_NAME` and
//! `OTEL_TRACES_SAMPLER`/`_ARG`. The SDK itself reads the rest from the process
//! environment (`OTEL_RESOURCE_ATTRIBUTES`, `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_BSP_*`,
//! the `…_TRACES_…` forms of headers and timeout).
//!
//! The exporter sends through the bridge's own reqwest client, run on the bridge's
//! runtime ([`OnRuntime`]): its own `reqwest` features would bring a second reqwest
//! and hyper into the binary, for the same requests.

use crate::config::Vars;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use std::collections::HashMap;
use std::time::Duration;

/// How long one export may take, as the SDK's own default.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// The service's name when `OTEL_SERVICE_NAME` names none (and not on Cloud Run).
const SERVICE_NAME: &str = "twilio-dialogflow";

/// Where and how spans are exported, read from the standard variables.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportSettings {
    /// The full URL spans are posted to (`…/v1/traces`).
    pub endpoint: String,
    pub protocol: Protocol,
    pub headers: HashMap<String, String>,
    pub service_name: String,
    pub sampler: SamplerSetting,
}

/// `OTEL_TRACES_SAMPLER` and its argument, as the specification names them.
#[derive(Debug, Clone, PartialEq)]
pub enum SamplerSetting {
    AlwaysOn,
    AlwaysOff,
    Ratio(f64),
    ParentBasedAlwaysOn,
    ParentBasedAlwaysOff,
    ParentBasedRatio(f64),
}

/// Why a standard variable cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{variable}: {problem}")]
pub struct ExportSettingError {
    pub variable: &'static str,
    pub problem: String,
}

impl ExportSettings {
    /// The export `vars` ask for, or none when no endpoint is set.
    pub fn from_vars(vars: &Vars) -> Result<Option<Self>, ExportSettingError> {
        let get = |name: &str| vars.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());
        // The specification's switches: the SDK off, or no trace exporter.
        if get("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        match get("OTEL_TRACES_EXPORTER") {
            None | Some("otlp") => {}
            Some("none") => return Ok(None),
            Some(other) => {
                return Err(ExportSettingError {
                    variable: "OTEL_TRACES_EXPORTER",
                    problem: format!("{other:?} is not supported: use otlp (the default) or none"),
                })
            }
        }
        let endpoint = match (
            get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
            get("OTEL_EXPORTER_OTLP_ENDPOINT"),
        ) {
            // The signal's own endpoint is used as it is; the general one gets the
            // signal's path, as the specification says.
            (Some(traces), _) => traces.to_owned(),
            (None, Some(base)) => format!("{}/v1/traces", base.trim_end_matches('/')),
            (None, None) => return Ok(None),
        };
        let variable = match get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            Some(_) => "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            None => "OTEL_EXPORTER_OTLP_ENDPOINT",
        };
        match reqwest::Url::parse(&endpoint) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => {}
            _ => {
                return Err(ExportSettingError {
                    variable,
                    problem: format!("{endpoint:?} is not an http:// or https:// URL"),
                })
            }
        }
        let protocol_var = match get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") {
            Some(_) => "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            None => "OTEL_EXPORTER_OTLP_PROTOCOL",
        };
        let protocol = match get(protocol_var) {
            None | Some("http/protobuf") => Protocol::HttpBinary,
            Some("http/json") => Protocol::HttpJson,
            Some(other) => {
                return Err(ExportSettingError {
                    variable: protocol_var,
                    problem: format!(
                        "{other:?} is not supported: use http/protobuf (the default) or http/json"
                    ),
                })
            }
        };
        let headers_var = match get("OTEL_EXPORTER_OTLP_TRACES_HEADERS") {
            Some(_) => "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
            None => "OTEL_EXPORTER_OTLP_HEADERS",
        };
        let headers = get(headers_var)
            .map(|list| parse_headers(list).ok_or(headers_var))
            .transpose()
            .map_err(|variable| ExportSettingError {
                variable,
                problem: "not a list of key=value pairs separated by commas".into(),
            })?
            .unwrap_or_default();
        let service_name = get("OTEL_SERVICE_NAME")
            .or_else(|| get("K_SERVICE"))
            .unwrap_or(SERVICE_NAME)
            .to_owned();
        let sampler =
            SamplerSetting::parse(get("OTEL_TRACES_SAMPLER"), get("OTEL_TRACES_SAMPLER_ARG"))?;
        Ok(Some(ExportSettings {
            endpoint,
            protocol,
            headers,
            service_name,
            sampler,
        }))
    }
}

impl SamplerSetting {
    fn parse(name: Option<&str>, arg: Option<&str>) -> Result<Self, ExportSettingError> {
        let ratio = || match arg {
            None => Ok(1.0),
            Some(arg) => arg
                .parse::<f64>()
                .ok()
                .filter(|r| (0.0..=1.0).contains(r))
                .ok_or_else(|| ExportSettingError {
                    variable: "OTEL_TRACES_SAMPLER_ARG",
                    problem: format!("{arg:?} is not a ratio between 0 and 1"),
                }),
        };
        Ok(match name {
            None | Some("parentbased_always_on") => SamplerSetting::ParentBasedAlwaysOn,
            Some("always_on") => SamplerSetting::AlwaysOn,
            Some("always_off") => SamplerSetting::AlwaysOff,
            Some("traceidratio") => SamplerSetting::Ratio(ratio()?),
            Some("parentbased_always_off") => SamplerSetting::ParentBasedAlwaysOff,
            Some("parentbased_traceidratio") => SamplerSetting::ParentBasedRatio(ratio()?),
            Some(other) => {
                return Err(ExportSettingError {
                    variable: "OTEL_TRACES_SAMPLER",
                    problem: format!("{other:?} is not one of always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off, parentbased_traceidratio"),
                })
            }
        })
    }

    fn sampler(&self) -> Sampler {
        let parent_based = |root: Sampler| Sampler::ParentBased(Box::new(root));
        match *self {
            SamplerSetting::AlwaysOn => Sampler::AlwaysOn,
            SamplerSetting::AlwaysOff => Sampler::AlwaysOff,
            SamplerSetting::Ratio(r) => Sampler::TraceIdRatioBased(r),
            SamplerSetting::ParentBasedAlwaysOn => parent_based(Sampler::AlwaysOn),
            SamplerSetting::ParentBasedAlwaysOff => parent_based(Sampler::AlwaysOff),
            SamplerSetting::ParentBasedRatio(r) => parent_based(Sampler::TraceIdRatioBased(r)),
        }
    }
}

/// `key1=value1,key2=value2`, values percent-decoded, as the specification writes them.
fn parse_headers(list: &str) -> Option<HashMap<String, String>> {
    list.split(',')
        .filter(|pair| !pair.trim().is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=')?;
            let key = key.trim();
            if key.is_empty() {
                return None;
            }
            let value: String = form_urlencoded::parse(
                format!("v={}", value.trim().replace('+', "%2B")).as_bytes(),
            )
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
            Some((key.to_owned(), value))
        })
        .collect()
}

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
    pub fn start(settings: &ExportSettings) -> Result<Self, ExportError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| ExportError::NoRuntime)?;
        let client = crate::tls::shared(reqwest::Client::builder())
            .timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(ExportError::Client)?;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(OnRuntime { client, runtime })
            .with_endpoint(settings.endpoint.clone())
            .with_protocol(settings.protocol)
            .with_headers(settings.headers.clone())
            .build()
            .map_err(|e| ExportError::Exporter(e.to_string()))?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(settings.sampler.sampler())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vars {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn no_endpoint_no_export() {
        assert_eq!(ExportSettings::from_vars(&vars(&[])), Ok(None));
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");
        for off in [
            ("OTEL_SDK_DISABLED", "TRUE"),
            ("OTEL_TRACES_EXPORTER", "none"),
        ] {
            assert_eq!(ExportSettings::from_vars(&vars(&[endpoint, off])), Ok(None));
        }
        assert!(
            ExportSettings::from_vars(&vars(&[endpoint, ("OTEL_SDK_DISABLED", "false")]))
                .unwrap()
                .is_some()
        );
        assert_eq!(
            ExportSettings::from_vars(&vars(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")])),
            Ok(None)
        );
    }

    #[test]
    fn the_general_endpoint_gets_the_signals_path_the_signals_own_does_not() {
        let general = ExportSettings::from_vars(&vars(&[(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "http://collector:4318/",
        )]))
        .unwrap()
        .unwrap();
        assert_eq!(general.endpoint, "http://collector:4318/v1/traces");
        assert_eq!(general.protocol, Protocol::HttpBinary);
        assert_eq!(general.sampler, SamplerSetting::ParentBasedAlwaysOn);
        assert_eq!(general.service_name, "twilio-dialogflow");
        let own = ExportSettings::from_vars(&vars(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://t.example/x"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "x-goog-user-project=p1, a=b%20c",
            ),
            ("OTEL_SERVICE_NAME", "bridge-eu"),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(own.endpoint, "https://t.example/x");
        assert_eq!(own.protocol, Protocol::HttpJson);
        assert_eq!(own.headers["x-goog-user-project"], "p1");
        assert_eq!(own.headers["a"], "b c");
        assert_eq!(own.service_name, "bridge-eu");
        assert_eq!(own.sampler, SamplerSetting::ParentBasedRatio(0.25));
    }

    #[test]
    fn what_cannot_be_honoured_is_refused_by_name() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");
        for (pair, variable) in [
            (
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                "OTEL_EXPORTER_OTLP_PROTOCOL",
            ),
            (
                ("OTEL_TRACES_SAMPLER", "jaeger_remote"),
                "OTEL_TRACES_SAMPLER",
            ),
            (
                ("OTEL_TRACES_SAMPLER", "traceidratio"),
                "OTEL_TRACES_SAMPLER_ARG",
            ),
            (
                ("OTEL_EXPORTER_OTLP_HEADERS", "novalue"),
                "OTEL_EXPORTER_OTLP_HEADERS",
            ),
        ] {
            let mut given = vars(&[endpoint, pair]);
            if variable == "OTEL_TRACES_SAMPLER_ARG" {
                given.insert(variable.into(), "1.5".into());
            }
            let error = ExportSettings::from_vars(&given).unwrap_err();
            assert_eq!(error.variable, variable, "{pair:?}");
        }
        let error =
            ExportSettings::from_vars(&vars(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")]))
                .unwrap_err();
        assert_eq!(error.variable, "OTEL_EXPORTER_OTLP_ENDPOINT");
    }
}
