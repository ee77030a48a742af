//! Trace export (see `crate::telemetry`): on when `OTEL_EXPORTER_OTLP_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set, configured by the variables the
//! OpenTelemetry specification names, read here like every other setting (from the
//! environment over `.env`).
//!
//! The SDK reads a few more from the process environment by itself: the
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_EXPORTER_OTLP_TIMEOUT` and `OTEL_BSP_*` ones.

use super::error::Problem;
use super::vars::{Reader, Vars};
use std::collections::HashMap;

/// The service's name when `OTEL_SERVICE_NAME` names none (and not on Cloud Run,
/// whose `K_SERVICE` then names it).
const SERVICE_NAME: &str = "twilio-dialogflow";

/// Where and how spans are exported.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceExport {
    /// The full URL spans are posted to (`…/v1/traces`).
    pub endpoint: String,
    pub protocol: OtlpProtocol,
    /// Headers sent with each export (`OTEL_EXPORTER_OTLP_HEADERS`): may hold a key.
    pub headers: HashMap<String, String>,
    pub service_name: String,
    pub sampler: SamplerSetting,
}

/// OTLP's encodings over HTTP (`OTEL_EXPORTER_OTLP_PROTOCOL`); gRPC is not built in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    HttpProtobuf,
    HttpJson,
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

/// The export `vars` ask for, if they ask for one and it can be made: for starting
/// the exporter before the settings are read, whose reading reports any problem.
pub fn trace_export(vars: &Vars) -> Option<TraceExport> {
    let mut reader = Reader::new(vars);
    read(&mut reader).filter(|_| reader.errors.is_empty())
}

/// The export the variables ask for; `None` when off (or a problem, reported).
pub(super) fn read(reader: &mut Reader<'_>) -> Option<TraceExport> {
    // The specification's switches: the SDK off, or no trace exporter.
    let disabled = reader.parsed_or("OTEL_SDK_DISABLED", parse_bool, false);
    let exporter = reader.parsed_or(
        "OTEL_TRACES_EXPORTER",
        |v| match v {
            "otlp" => Ok(true),
            "none" => Ok(false),
            _ => Err("must be otlp (the default) or none".to_owned()),
        },
        true,
    );
    let (endpoint_var, endpoint) = match (
        reader.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
        reader.get("OTEL_EXPORTER_OTLP_ENDPOINT"),
    ) {
        // The signal's own endpoint is used as it is; the general one gets the
        // signal's path, as the specification says.
        (Some(traces), _) => ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", traces.to_owned()),
        (None, Some(base)) => (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("{}/v1/traces", base.trim_end_matches('/')),
        ),
        (None, None) => return None,
    };
    if disabled || !exporter {
        return None;
    }
    let endpoint_ok = reqwest::Url::parse(&endpoint)
        .is_ok_and(|url| matches!(url.scheme(), "http" | "https") && url.has_host());
    if !endpoint_ok {
        reader.fail_var(
            endpoint_var,
            Problem::invalid("must be an http:// or https:// URL", &endpoint),
        );
    }
    let protocol_var = match reader.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") {
        Some(_) => "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        None => "OTEL_EXPORTER_OTLP_PROTOCOL",
    };
    let protocol = reader.parsed_or(
        protocol_var,
        |v| match v {
            "http/protobuf" => Ok(OtlpProtocol::HttpProtobuf),
            "http/json" => Ok(OtlpProtocol::HttpJson),
            _ => Err("must be http/protobuf (the default) or http/json".to_owned()),
        },
        OtlpProtocol::HttpProtobuf,
    );
    let headers_var = match reader.get("OTEL_EXPORTER_OTLP_TRACES_HEADERS") {
        Some(_) => "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        None => "OTEL_EXPORTER_OTLP_HEADERS",
    };
    // A header may be an API key: its value is never shown.
    let headers = reader.parsed_secret(headers_var, |list| {
        parse_headers(list).ok_or_else(|| "must be key=value pairs separated by commas".to_owned())
    });
    if reader.get(headers_var).is_some() && headers.is_none() {
        return None;
    }
    let service_name = reader
        .get("OTEL_SERVICE_NAME")
        .or_else(|| reader.get("K_SERVICE"))
        .unwrap_or(SERVICE_NAME)
        .to_owned();
    let sampler = sampler(reader)?;
    endpoint_ok.then(|| TraceExport {
        endpoint,
        protocol,
        headers: headers.unwrap_or_default(),
        service_name,
        sampler,
    })
}

fn sampler(reader: &mut Reader<'_>) -> Option<SamplerSetting> {
    let ratio = reader.parsed_or(
        "OTEL_TRACES_SAMPLER_ARG",
        |v| {
            v.parse::<f64>()
                .ok()
                .filter(|r| (0.0..=1.0).contains(r))
                .ok_or_else(|| "must be a ratio between 0 and 1".to_owned())
        },
        1.0,
    );
    let name = reader.get("OTEL_TRACES_SAMPLER");
    let sampler = match name {
        None | Some("parentbased_always_on") => SamplerSetting::ParentBasedAlwaysOn,
        Some("always_on") => SamplerSetting::AlwaysOn,
        Some("always_off") => SamplerSetting::AlwaysOff,
        Some("traceidratio") => SamplerSetting::Ratio(ratio),
        Some("parentbased_always_off") => SamplerSetting::ParentBasedAlwaysOff,
        Some("parentbased_traceidratio") => SamplerSetting::ParentBasedRatio(ratio),
        Some(other) => {
            reader.fail_var(
                "OTEL_TRACES_SAMPLER",
                Problem::invalid(
                    "must be always_on, always_off, traceidratio, parentbased_always_on (the default), parentbased_always_off or parentbased_traceidratio",
                    other,
                ),
            );
            return None;
        }
    };
    Some(sampler)
}

fn parse_bool(value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err("must be true or false".to_owned()),
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
            let value = percent_decoded(value.trim())?;
            Some((key.to_owned(), value))
        })
        .collect()
}

fn percent_decoded(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = value.get(i + 1..i + 3)?;
                decoded.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            byte => {
                decoded.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(decoded).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    fn vars(pairs: &[(&str, &str)]) -> Vars {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn read_all(pairs: &[(&str, &str)]) -> (Option<TraceExport>, Vec<String>) {
        let vars = vars(pairs);
        let mut reader = Reader::new(&vars);
        let export = read(&mut reader);
        (
            export,
            reader.errors.iter().map(ToString::to_string).collect(),
        )
    }

    const ENDPOINT: (&str, &str) = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");

    #[test]
    fn no_endpoint_or_a_switch_off_no_export() {
        assert_eq!(read_all(&[]), (None, vec![]));
        assert_eq!(
            read_all(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")]),
            (None, vec![])
        );
        for off in [
            ("OTEL_SDK_DISABLED", "TRUE"),
            ("OTEL_TRACES_EXPORTER", "none"),
        ] {
            assert_eq!(read_all(&[ENDPOINT, off]), (None, vec![]), "{off:?}");
        }
        assert!(read_all(&[ENDPOINT, ("OTEL_SDK_DISABLED", "false")])
            .0
            .is_some());
    }

    #[test]
    fn the_general_endpoint_gets_the_signals_path_the_signals_own_does_not() {
        let general = read_all(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")])
            .0
            .unwrap();
        assert_eq!(general.endpoint, "http://collector:4318/v1/traces");
        assert_eq!(general.protocol, OtlpProtocol::HttpProtobuf);
        assert_eq!(general.sampler, SamplerSetting::ParentBasedAlwaysOn);
        assert_eq!(general.service_name, "twilio-dialogflow");
        let (own, errors) = read_all(&[
            ENDPOINT,
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://t.example/x"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "x-goog-user-project=p1, a=b%20c",
            ),
            ("OTEL_SERVICE_NAME", "bridge-eu"),
            ("K_SERVICE", "bridge"),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
        ]);
        assert_eq!(errors, Vec::<String>::new());
        let own = own.unwrap();
        assert_eq!(own.endpoint, "https://t.example/x");
        assert_eq!(own.protocol, OtlpProtocol::HttpJson);
        assert_eq!(own.headers["x-goog-user-project"], "p1");
        assert_eq!(own.headers["a"], "b c");
        assert_eq!(own.service_name, "bridge-eu");
        assert_eq!(own.sampler, SamplerSetting::ParentBasedRatio(0.25));
        let on_cloud_run = read_all(&[ENDPOINT, ("K_SERVICE", "bridge")]).0.unwrap();
        assert_eq!(on_cloud_run.service_name, "bridge");
    }

    #[test]
    fn what_cannot_be_honoured_is_a_configuration_error_of_its_variable() {
        for (pair, variable) in [
            (
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                "OTEL_EXPORTER_OTLP_PROTOCOL",
            ),
            (("OTEL_TRACES_EXPORTER", "zipkin"), "OTEL_TRACES_EXPORTER"),
            (
                ("OTEL_TRACES_SAMPLER", "jaeger_remote"),
                "OTEL_TRACES_SAMPLER",
            ),
            (
                ("OTEL_TRACES_SAMPLER_ARG", "1.5"),
                "OTEL_TRACES_SAMPLER_ARG",
            ),
            (
                ("OTEL_EXPORTER_OTLP_HEADERS", "novalue"),
                "OTEL_EXPORTER_OTLP_HEADERS",
            ),
            (("OTEL_SDK_DISABLED", "maybe"), "OTEL_SDK_DISABLED"),
        ] {
            let (_, errors) = read_all(&[ENDPOINT, pair]);
            assert_eq!(errors.len(), 1, "{pair:?}: {errors:?}");
            assert!(
                errors[0].starts_with(&format!("{variable}: ")),
                "{errors:?}"
            );
        }
        let (export, errors) = read_all(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")]);
        assert!(export.is_none());
        assert!(
            errors[0].starts_with("OTEL_EXPORTER_OTLP_ENDPOINT: "),
            "{errors:?}"
        );
        // A header's value may be a key: never shown.
        let (_, errors) = read_all(&[
            ENDPOINT,
            ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=s3cret,bad"),
        ]);
        assert!(!errors[0].contains("s3cret"), "{errors:?}");
    }

    #[test]
    fn the_settings_carry_the_export_and_its_errors() {
        let errors = Settings::from_vars(&vars(&[("OTEL_TRACES_SAMPLER", "sometimes"), ENDPOINT]))
            .unwrap_err()
            .0;
        assert!(
            errors.iter().any(|e| e.place.is_var("OTEL_TRACES_SAMPLER")),
            "{errors:?}"
        );
        assert_eq!(
            trace_export(&vars(&[("OTEL_TRACES_SAMPLER", "sometimes"), ENDPOINT])),
            None
        );
    }
}
