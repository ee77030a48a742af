//! The Google Cloud metadata server: where a bridge running on Google Cloud (Cloud Run,
//! GCE, GKE) learns its project when the configuration does not name one.
//!
//! The Node sample got `GCP_PROJECT` as a build argument, so its `.env` has none; on
//! Google Cloud the metadata server knows the project, and asking it keeps that `.env`
//! working unchanged. On Cloud Run it also knows the project number and region that
//! make the service's own URL, which pins the host webhooks are signed for.
//! `GCE_METADATA_HOST` moves the server elsewhere, as it does for
//! Google's own client libraries (and for our tests, to a local fake).

use std::time::Duration;

/// The metadata server's address, unless `GCE_METADATA_HOST` says otherwise.
pub const DEFAULT_HOST: &str = "metadata.google.internal";
/// Off Google Cloud the host does not resolve, which fails fast; this bounds the rest
/// (a network that drops the packets) so that start-up is not held up for long.
const TIMEOUT: Duration = Duration::from_secs(3);

/// Why the project could not be learnt from the metadata server.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("the metadata server {host} cannot be reached ({cause}): not on Google Cloud?")]
    Unreachable { host: String, cause: String },
    #[error("the metadata server {host} answered HTTP {status}")]
    Status { host: String, status: u16 },
    #[error("the metadata server {host} gave no {what}")]
    Empty { host: String, what: String },
    #[error("the metadata server {host} gave what is not a Cloud Run service's: {what}")]
    Unexpected { host: String, what: String },
}

/// The project this machine runs in, as the metadata server at `host` (`host:port`)
/// tells it.
pub async fn project_id(host: &str) -> Result<String, MetadataError> {
    ask(host, "project/project-id", "project id").await
}

/// The host of the Cloud Run service `service`'s own URL,
/// `{service}-{project number}.{region}.run.app`, from the project number and region
/// the metadata server at `host` tells: the URL Twilio is given when nothing else is
/// configured, found without trusting anything a request says.
pub async fn cloud_run_host(host: &str, service: &str) -> Result<String, MetadataError> {
    let (number, region) = tokio::try_join!(
        ask(host, "project/numeric-project-id", "project number"),
        ask(host, "instance/region", "region"),
    )?;
    // The region comes as `projects/NUMBER/regions/REGION`.
    let region = region.rsplit('/').next().unwrap_or_default();
    let number_ok = number.bytes().all(|b| b.is_ascii_digit());
    let region_ok = !region.is_empty()
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !number_ok || !region_ok {
        return Err(MetadataError::Unexpected {
            host: host.to_owned(),
            what: format!("project number {number:?}, region {region:?}"),
        });
    }
    Ok(format!("{service}-{number}.{region}.run.app"))
}

/// The metadata server's answer at `path` (under `/computeMetadata/v1/`), trimmed:
/// `what` it is, for the error.
async fn ask(host: &str, path: &str, what: &str) -> Result<String, MetadataError> {
    let unreachable = |cause: String| MetadataError::Unreachable {
        host: host.to_owned(),
        cause,
    };
    let client = crate::tls::shared(reqwest::Client::builder())
        .timeout(TIMEOUT)
        // The metadata server is always plain HTTP on the local network; a proxy set
        // for the internet must not see this request.
        .no_proxy()
        .build()
        .map_err(|e| unreachable(e.to_string()))?;
    let response = client
        .get(format!("http://{host}/computeMetadata/v1/{path}"))
        .header("Metadata-Flavor", "Google")
        .send()
        .await
        .map_err(|e| unreachable(without_url(&e)))?;
    let status = response.status();
    if !status.is_success() {
        return Err(MetadataError::Status {
            host: host.to_owned(),
            status: status.as_u16(),
        });
    }
    let answer = response
        .text()
        .await
        .map_err(|e| unreachable(without_url(&e)))?;
    let answer = answer.trim();
    if answer.is_empty() {
        return Err(MetadataError::Empty {
            host: host.to_owned(),
            what: what.to_owned(),
        });
    }
    Ok(answer.to_owned())
}

/// The error's own words: its URL is already named by the caller.
fn without_url(error: &reqwest::Error) -> String {
    let mut cause = std::error::Error::source(error)
        .map(ToString::to_string)
        .unwrap_or_else(|| error.to_string());
    if error.is_timeout() {
        cause = format!("no answer within {}s", TIMEOUT.as_secs());
    }
    cause
}
