//! What the server's TLS certificate names, for `check` to say when verification fails:
//! Memorystore names a node by its IP address (in its CN, or an IP subjectAltName), and
//! a URL that dials a name the certificate does not carry fails with little to go on.
//!
//! The certificate is read in a handshake that is never finished: the verifier keeps
//! the certificate and refuses it, so nothing is ever sent to an unverified server.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// The names a certificate carries: its subject's common names, and its
/// subjectAltName entries (the only ones TLS clients match, rustls included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateNames {
    pub common_names: Vec<String>,
    /// `IP 10.0.0.3`, `DNS redis.example`, as openssl shows them.
    pub alt_names: Vec<String>,
}

impl fmt::Display for CertificateNames {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self
            .common_names
            .iter()
            .map(|cn| format!("CN {cn}"))
            .chain(self.alt_names.iter().cloned())
            .collect();
        match names.is_empty() {
            true => f.write_str("no name"),
            false => f.write_str(&names.join(", ")),
        }
    }
}

/// The names on the certificate the server at `host:port` shows, within `within`.
pub async fn presented_by(
    host: &str,
    port: u16,
    within: Duration,
) -> Result<CertificateNames, String> {
    let builder = rustls::ClientConfig::builder();
    let schemes = builder
        .crypto_provider()
        .signature_verification_algorithms
        .supported_schemes();
    let keeper = Arc::new(Keeper {
        schemes,
        seen: Mutex::new(None),
    });
    let config = builder
        .dangerous()
        .with_custom_certificate_verifier(keeper.clone())
        .with_no_client_auth();
    let name = ServerName::try_from(host.to_owned()).map_err(|e| e.to_string())?;
    let handshake = async {
        let tcp = tokio::net::TcpStream::connect((host, port))
            .await
            .map_err(|e| e.to_string())?;
        // Always refused by the keeper: only the certificate it kept matters.
        let _ = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await;
        Ok::<(), String>(())
    };
    tokio::time::timeout(within, handshake)
        .await
        .map_err(|_| format!("no TLS handshake within {within:?}"))??;
    let seen = keeper
        .seen
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    names_of(&seen.ok_or("the server showed no certificate")?)
}

/// The names in a DER certificate.
fn names_of(der: &[u8]) -> Result<CertificateNames, String> {
    let (_, certificate) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("unreadable certificate: {e}"))?;
    let common_names = certificate
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(str::to_owned))
        .collect();
    let alt_names = match certificate.subject_alternative_name() {
        Ok(Some(extension)) => extension
            .value
            .general_names
            .iter()
            .filter_map(|name| {
                use x509_parser::extensions::GeneralName;
                match name {
                    GeneralName::DNSName(dns) => Some(format!("DNS {dns}")),
                    GeneralName::IPAddress(bytes) => ip_of(bytes).map(|ip| format!("IP {ip}")),
                    _ => None,
                }
            })
            .collect(),
        _ => Vec::new(),
    };
    Ok(CertificateNames {
        common_names,
        alt_names,
    })
}

fn ip_of(bytes: &[u8]) -> Option<std::net::IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(std::net::IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(std::net::IpAddr::from),
        _ => None,
    }
}

/// Keeps the server's certificate and refuses it.
#[derive(Debug)]
struct Keeper {
    schemes: Vec<SignatureScheme>,
    seen: Mutex<Option<Vec<u8>>>,
}

impl ServerCertVerifier for Keeper {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.seen.lock().unwrap_or_else(PoisonError::into_inner) = Some(end_entity.to_vec());
        Err(read_only())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(read_only())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(read_only())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes.clone()
    }
}

/// Every check of the probe's handshake fails: the certificate is read for its names,
/// and nothing is ever sent over a connection it did not verify.
fn read_only() -> rustls::Error {
    rustls::Error::General("read only for its names".into())
}
