//! Who may read `/metrics`: route names and volumes are the operator's business, not
//! the public's.

use super::error::Problem;
use super::values::Secret;
use super::vars::Reader;

/// Where `/metrics` is served, and the token it needs.
#[derive(Debug, Clone, Default)]
pub struct MetricsSettings {
    /// `METRICS_PORT`: `/metrics` on a listener of its own (for a sidecar, or Google's
    /// Managed Service for Prometheus), and no longer on the public port.
    pub port: Option<u16>,
    /// `METRICS_TOKEN`: `/metrics` needs `Authorization: Bearer` it.
    pub token: Option<Secret>,
}

impl MetricsSettings {
    /// Neither a port of its own nor a token: anyone who reaches the service reads them.
    pub fn is_open(&self) -> bool {
        self.port.is_none() && self.token.is_none()
    }
}

pub(super) fn read(reader: &mut Reader<'_>, public_port: u16) -> MetricsSettings {
    let port = reader.parsed("METRICS_PORT", |v| {
        v.parse::<u16>()
            .map_err(|_| "must be a port number, 0-65535".to_owned())
    });
    if let Some(port) = port {
        if port == public_port && port != 0 {
            reader.fail_var(
                "METRICS_PORT",
                Problem::Conflict(format!(
                    "is PORT ({port}): /metrics needs a port of its own, or unset it and set METRICS_TOKEN"
                )),
            );
        }
    }
    let token = reader.parsed_secret("METRICS_TOKEN", |token| match token.len() < 16 {
        true => Err("must be at least 16 characters: it guards the bridge's metrics".to_owned()),
        false => Ok(Secret::new(token)),
    });
    MetricsSettings { port, token }
}
