//! One TLS configuration for every HTTP client the bridge makes itself (Twilio's APIs,
//! the hand-over destination): made once, its roots read when the first TLS connection
//! needs them rather than at start-up.
//!
//! reqwest verifies with the platform's roots (rustls-platform-verifier), which read
//! the whole system bundle and every file of the certificate directory each time a
//! client is built: once per client, before the port is bound. Built here once and
//! shared, and read lazily, a bridge whose replies go to a local stand-in over plain
//! HTTP never reads them, and one that talks to Twilio reads them once, off the start
//! path. The verification is the same: the platform's verifier, with reqwest's default
//! crypto provider and the ALPN it offers (HTTP/1.1).
//!
//! The official Google clients build their own HTTP client (gax offers no way to give
//! it one), so they read the roots once more each, at start-up.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, Error, SignatureScheme};
use std::sync::{Arc, OnceLock};

/// `builder` with the process's TLS configuration: its verifier, and so the roots it
/// reads, shared with every other client so made.
pub fn shared(builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
    match client_config() {
        Some(config) => builder.tls_backend_preconfigured(config),
        // Not to be had (a provider without TLS 1.2 and 1.3): reqwest's own, as before.
        None => builder,
    }
}

/// A clone of the configuration made for the process (clones share its verifier).
fn client_config() -> Option<rustls::ClientConfig> {
    static CONFIG: OnceLock<Option<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = provider();
            let mut config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
                .with_safe_default_protocol_versions()
                .ok()?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PlatformRoots::new(provider)))
                .with_no_client_auth();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Some(config)
        })
        .clone()
}

/// reqwest's choice: the process's default provider if one was installed, else its own.
fn provider() -> Arc<CryptoProvider> {
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
}

/// The platform's verifier, made (its roots read) at the first certificate to verify.
#[derive(Debug)]
struct PlatformRoots {
    provider: Arc<CryptoProvider>,
    verifier: OnceLock<Result<rustls_platform_verifier::Verifier, Error>>,
}

impl PlatformRoots {
    fn new(provider: Arc<CryptoProvider>) -> Self {
        Self {
            provider,
            verifier: OnceLock::new(),
        }
    }

    fn verifier(&self) -> Result<&rustls_platform_verifier::Verifier, Error> {
        self.verifier
            .get_or_init(|| rustls_platform_verifier::Verifier::new(Arc::clone(&self.provider)))
            .as_ref()
            .map_err(Clone::clone)
    }
}

impl ServerCertVerifier for PlatformRoots {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        self.verifier()?.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_roots_are_not_read_until_a_certificate_is_verified() {
        let roots = PlatformRoots::new(provider());
        assert!(roots.verifier.get().is_none());
        assert!(!roots.supported_verify_schemes().is_empty());
        assert!(
            roots.verifier.get().is_none(),
            "offering schemes reads none"
        );
        // A certificate that is no certificate: refused, by the verifier made for it.
        let refused = roots.verify_server_cert(
            &CertificateDer::from(vec![0u8; 8]),
            &[],
            &ServerName::try_from("example.com").expect("a DNS name"),
            &[],
            UnixTime::now(),
        );
        assert!(refused.is_err());
        assert!(roots.verifier.get().is_some());
    }

    #[test]
    fn every_client_shares_one_configuration() {
        let (a, b) = (client_config(), client_config());
        let (a, b) = (a.expect("made"), b.expect("made"));
        assert!(Arc::ptr_eq(a.crypto_provider(), b.crypto_provider()));
        assert_eq!(a.alpn_protocols, [b"http/1.1".to_vec()]);
        assert!(shared(reqwest::Client::builder()).build().is_ok());
    }
}
