//! Where the process reads the system's root certificates from.
//!
//! Every TLS client verifies with the platform's roots (rustls-platform-verifier, which
//! reads them with rustls-native-certs). Left to itself that reads the system bundle
//! *and* every file of the certificate directory: on Debian the same ~150 certificates
//! twice, 150 files opened and parsed, about half of the official Dialogflow client's
//! construction and so of the time from start to the first reply. The bundle alone
//! holds the same roots wherever the directory is made from it (`update-ca-certificates`,
//! `update-ca-trust`), so the bridge points `SSL_CERT_FILE` at it, unless the operator
//! chose either variable: `SSL_CERT_DIR` still adds a directory when set.

use std::ffi::OsStr;
use std::path::PathBuf;

/// The bundle to read alone, when neither variable is set and one is found.
fn bundle_alone(set: impl Fn(&str) -> bool, found: Option<PathBuf>) -> Option<PathBuf> {
    if set("SSL_CERT_FILE") || set("SSL_CERT_DIR") {
        return None;
    }
    found.filter(|bundle| bundle.is_file())
}

/// Points `SSL_CERT_FILE` at the system bundle when the operator chose neither variable.
///
/// # Safety
/// Changes the process's environment: call it before any other thread starts.
pub unsafe fn read_bundle_alone() {
    let set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
    if let Some(bundle) = bundle_alone(set, openssl_probe::probe().cert_file) {
        std::env::set_var(OsStr::new("SSL_CERT_FILE"), bundle);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn existing_file() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")
    }

    #[test]
    fn the_bundle_found_is_read_alone_when_neither_variable_is_set() {
        assert_eq!(
            bundle_alone(|_| false, Some(existing_file())),
            Some(existing_file())
        );
    }

    #[test]
    fn an_operators_choice_of_either_variable_stands() {
        for chosen in ["SSL_CERT_FILE", "SSL_CERT_DIR"] {
            assert_eq!(
                bundle_alone(|name| name == chosen, Some(existing_file())),
                None
            );
        }
    }

    #[test]
    fn without_a_bundle_on_disk_the_platforms_own_search_stands() {
        assert_eq!(bundle_alone(|_| false, None), None);
        assert_eq!(
            bundle_alone(|_| false, Some(PathBuf::from("/no/such/bundle.crt"))),
            None
        );
    }
}
