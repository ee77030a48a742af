//! `X-Twilio-Signature`: computing and checking it.
//!
//! Twilio signs a webhook with HMAC-SHA1, keyed by the account's auth token, over the
//! full URL it requested followed by every POST parameter, sorted by name, written as
//! name then value with nothing between. Repeated names contribute each distinct value
//! once, sorted, as Twilio's SDKs do. The result is sent base64-encoded.
//!
//! Twilio's SDKs accept a signature computed over the URL with or without an explicit
//! port, because what Twilio signs depends on how the URL was typed in its console; we
//! try the same variants. Everything here is pure, so the SDKs' own test vectors can
//! check it.
//!
//! With a Webhooks configuration SharedKey (public beta), Twilio signs with that key
//! instead, names it and the algorithm in `X-Twilio-Webhooks-Signature-Settings:
//! key=NAME,algorithm=HMAC_SHA256`, and only the hash changes: the signed string is the
//! same.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;

type HmacSha1 = Hmac<Sha1>;
type HmacSha256 = Hmac<sha2::Sha256>;

/// The hash a signature is made with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    HmacSha1,
    HmacSha256,
}

impl Algorithm {
    /// As `X-Twilio-Webhooks-Signature-Settings` names it.
    pub fn parse(name: &str) -> Option<Self> {
        match name.trim() {
            "HMAC_SHA1" => Some(Algorithm::HmacSha1),
            "HMAC_SHA256" => Some(Algorithm::HmacSha256),
            _ => None,
        }
    }
}

/// What `X-Twilio-Webhooks-Signature-Settings` says: the SharedKey's name and the
/// algorithm (`key=NAME,algorithm=HMAC_SHA256`); `None` if it says neither.
pub fn signature_settings(header: &str) -> (Option<&str>, Option<&str>) {
    let mut key = None;
    let mut algorithm = None;
    for part in header.split(',') {
        match part.split_once('=').map(|(k, v)| (k.trim(), v.trim())) {
            Some(("key", value)) => key = Some(value),
            Some(("algorithm", value)) => algorithm = Some(value),
            _ => {}
        }
    }
    (key, algorithm)
}

/// The signature Twilio would send for `url` and form `params`, signed with `auth_token`.
pub fn compute(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    compute_with(Algorithm::HmacSha1, auth_token, url, params)
}

/// The signature of `url` and `params` with `key` and `algorithm`.
pub fn compute_with(
    algorithm: Algorithm,
    key: &str,
    url: &str,
    params: &[(String, String)],
) -> String {
    BASE64.encode(digest(algorithm, key, &signed_string(url, params)))
}

/// Whether `signature` is the SharedKey signature of this request with `key`.
pub fn is_valid_with(
    algorithm: Algorithm,
    key: &str,
    url: &str,
    params: &[(String, String)],
    signature: &str,
) -> bool {
    let Ok(given) = BASE64.decode(signature.trim()) else {
        return false;
    };
    // The parameters are sorted once; the URL as given is what Twilio signed nearly
    // always, so the other variants are only spelt out when it does not match.
    let sorted = sorted_params(params);
    let matches = |candidate: &str| match algorithm {
        Algorithm::HmacSha1 => signed_mac::<HmacSha1>(key, candidate, &sorted)
            .verify_slice(&given)
            .is_ok(),
        Algorithm::HmacSha256 => signed_mac::<HmacSha256>(key, candidate, &sorted)
            .verify_slice(&given)
            .is_ok(),
    };
    matches(url) || url_variants(url).iter().skip(1).any(|v| matches(v))
}

/// The MAC of `url` followed by the parameters as [`sorted_params`] lays them out.
fn signed_mac<M: Mac + hmac::digest::KeyInit>(key: &str, url: &str, sorted: &[u8]) -> M {
    let mut mac = keyed::<M>(key, url.as_bytes());
    mac.update(sorted);
    mac
}

fn digest(algorithm: Algorithm, key: &str, message: &[u8]) -> Vec<u8> {
    match algorithm {
        Algorithm::HmacSha1 => keyed::<HmacSha1>(key, message)
            .finalize()
            .into_bytes()
            .to_vec(),
        Algorithm::HmacSha256 => keyed::<HmacSha256>(key, message)
            .finalize()
            .into_bytes()
            .to_vec(),
    }
}

fn keyed<M: Mac + hmac::digest::KeyInit>(key: &str, message: &[u8]) -> M {
    let Ok(mut mac) = <M as hmac::digest::KeyInit>::new_from_slice(key.as_bytes()) else {
        unreachable!("HMAC takes keys of any length")
    };
    mac.update(message);
    mac
}

/// The URL, then each parameter's name and value, sorted by name (a repeated name's
/// distinct values sorted too).
fn signed_string(url: &str, params: &[(String, String)]) -> Vec<u8> {
    let mut out = url.as_bytes().to_vec();
    out.extend_from_slice(&sorted_params(params));
    out
}

/// Each parameter's name and value, sorted by name then value, a pair repeated exactly
/// counted once: what follows the URL in the signed string.
fn sorted_params(params: &[(String, String)]) -> Vec<u8> {
    let mut pairs: Vec<(&str, &str)> = params
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    pairs.sort_unstable();
    pairs.dedup();
    let len = pairs.iter().map(|(n, v)| n.len() + v.len()).sum();
    let mut out = Vec::with_capacity(len);
    for (name, value) in pairs {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(value.as_bytes());
    }
    out
}

/// Whether `signature` is what Twilio sends for this request with any of `auth_tokens`.
///
/// The comparison is constant-time so that timing reveals nothing about the expected
/// value.
pub fn is_valid(
    auth_tokens: &[&str],
    url: &str,
    params: &[(String, String)],
    signature: &str,
) -> bool {
    auth_tokens
        .iter()
        .any(|token| is_valid_with(Algorithm::HmacSha1, token, url, params, signature))
}

/// The URL as given, without its port, and with the scheme's default port.
///
/// Done on the string rather than through a URL parser, because a parser would
/// normalise case and escapes that Twilio signed as they were.
fn url_variants(url: &str) -> Vec<String> {
    let mut variants = vec![url.to_owned()];
    let Some((scheme, rest)) = url.split_once("://") else {
        return variants;
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let (userinfo, host_port) = match authority.rsplit_once('@') {
        Some((user, host_port)) => (Some(user), host_port),
        None => (None, authority),
    };
    let (host, port) = split_port(host_port);
    let rebuild = |port: Option<&str>| {
        let mut out = format!("{scheme}://");
        if let Some(user) = userinfo {
            out.push_str(user);
            out.push('@');
        }
        out.push_str(host);
        if let Some(port) = port {
            out.push(':');
            out.push_str(port);
        }
        out.push_str(tail);
        out
    };
    match port {
        Some(_) => variants.push(rebuild(None)),
        None => {
            let default_port = match scheme.to_ascii_lowercase().as_str() {
                "https" => Some("443"),
                "http" => Some("80"),
                _ => None,
            };
            if default_port.is_some() {
                variants.push(rebuild(default_port));
            }
        }
    }
    if tail == "/" {
        // A bare host typed in Twilio's console (`https://bot.example.com`) is requested
        // as `/` but signed as typed, without the slash.
        let bare: Vec<String> = variants
            .iter()
            .map(|v| v.trim_end_matches('/').to_owned())
            .collect();
        variants.extend(bare);
    }
    variants
}

/// Splits `host:port`, minding IPv6 literals such as `[::1]:8080`.
fn split_port(host_port: &str) -> (&str, Option<&str>) {
    let search_from = host_port.rfind(']').unwrap_or(0);
    match host_port[search_from..].rfind(':') {
        Some(i) => {
            let at = search_from + i;
            let port = &host_port[at + 1..];
            if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) {
                (&host_port[..at], Some(port))
            } else {
                (host_port, None)
            }
        }
        None => (host_port, None),
    }
}

#[cfg(test)]
mod tests {
    //! Vectors from the request-validator test suites of Twilio's official SDKs
    //! (twilio-csharp, twilio-python, twilio-php): auth token `12345`.
    use super::*;

    const TOKEN: &str = "12345";
    const URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";

    fn params() -> Vec<(String, String)> {
        // Deliberately not in alphabetical order.
        [
            ("CallSid", "CA1234567890ABCDE"),
            ("From", "+14158675309"),
            ("Digits", "1234"),
            ("To", "+18005551212"),
            ("Caller", "+14158675309"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// HMAC-SHA256 over the same signed string (Twilio: "only the hash changes"),
    /// computed with Python's standard `hmac`, which gives the SDK vector above with
    /// SHA-1: the public SDKs had no SHA-256 vectors when this was written.
    const SHA256_VECTOR: &str = "033hgUJA9M/hXIZsYjwkerEP/DBm35nEri5FhCYjA5s=";
    const SHA256_VECTOR_WITH_PORT: &str = "grxRoa/VNtXxd524NGLxIdev83nh23xhrRUVm50Umq4=";

    #[test]
    fn shared_key_signatures_are_hmac_sha256_over_the_same_string() {
        assert_eq!(
            compute_with(Algorithm::HmacSha256, TOKEN, URL, &params()),
            SHA256_VECTOR
        );
        assert!(is_valid_with(
            Algorithm::HmacSha256,
            TOKEN,
            URL,
            &params(),
            SHA256_VECTOR
        ));
        // Signed with the port written, checked against the URL without it.
        assert!(is_valid_with(
            Algorithm::HmacSha256,
            TOKEN,
            URL,
            &params(),
            SHA256_VECTOR_WITH_PORT
        ));
        // The SHA-1 signature is not a SHA-256 one, nor another key's.
        assert!(!is_valid_with(
            Algorithm::HmacSha256,
            TOKEN,
            URL,
            &params(),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
        assert!(!is_valid_with(
            Algorithm::HmacSha256,
            "other",
            URL,
            &params(),
            SHA256_VECTOR
        ));
    }

    #[test]
    fn the_settings_header_names_the_key_and_the_algorithm() {
        assert_eq!(
            signature_settings("key=support-bot,algorithm=HMAC_SHA256"),
            (Some("support-bot"), Some("HMAC_SHA256"))
        );
        assert_eq!(
            signature_settings(" algorithm=HMAC_SHA1 , key=k "),
            (Some("k"), Some("HMAC_SHA1"))
        );
        assert_eq!(signature_settings("nonsense"), (None, None));
        assert_eq!(Algorithm::parse("HMAC_SHA512"), None);
    }

    #[test]
    fn computes_the_sdk_vector() {
        assert_eq!(
            compute(TOKEN, URL, &params()),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        );
    }

    #[test]
    fn repeated_names_use_each_distinct_value_once_sorted() {
        let repeated: Vec<(String, String)> = [
            ("Sid", "CA123"),
            ("SidAccount", "AC123"),
            ("Digits", "5678"),
            ("Digits", "1234"),
            ("Digits", "1234"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(
            compute(TOKEN, URL, &repeated),
            "IK+Dwps556ElfBT0I3Rgjkr1wJU="
        );
    }

    #[test]
    fn accepts_sdk_vectors_over_url_variants() {
        let cases = [
            (URL, "RSOYDt4T1cUTdK1PDd93/VVr8B8="),
            (
                "https://MyCompany.com/myapp.php?foo=1&bar=2",
                "g9IN/x4Cft2g517EjYvEvM/W7LU=",
            ),
            (
                "https://MyCompany.com:1234/myapp.php?foo=1&bar=2",
                "PCqOZm8cnu/L6+u5i5fuEd+Iac4=",
            ),
            (
                "http://MyCompany.com/myapp.php?foo=1&bar=2",
                "XY7AlKOKL6im4yWyX84gldUrtis=",
            ),
            (
                "http://username:password@MyCompany.com/myapp.php?foo=1&bar=2",
                "PJ08CxXr7KLPjEQCTc8LkUSMwSM=",
            ),
            (
                "HTTP://username:password@MyCompany.com/myapp.php?foo=1&bar=2",
                "hy/l8pca+LFms4cvRdv8uiP6NGc=",
            ),
            (
                "http://Username:Password@MyCompany.com/myapp.php?foo=1&bar=2",
                "SkTSKyDJH9kUlhItI0slbgZ1UsI=",
            ),
            // Signed without the port Twilio was given: the port is removed.
            (
                "https://mycompany.com:1234/myapp.php?foo=1&bar=2",
                "RSOYDt4T1cUTdK1PDd93/VVr8B8=",
            ),
            (
                "http://mycompany.com:1234/myapp.php?foo=1&bar=2",
                "Zmvh+3yNM1Phv2jhDCwEM3q5ebU=",
            ),
            // Signed with the scheme's default port: the port is added.
            (URL, "kvajT1Ptam85bY51eRf/AJRuM3w="),
            (
                "http://mycompany.com/myapp.php?foo=1&bar=2",
                "0ZXoZLH/DfblKGATFgpif+LLRf4=",
            ),
            (
                "https://mycompany.com:1234/myapp.php?foo=1&bar=2",
                "CYn1h0gLBdNxDGkKJg6hYohgeD8=",
            ),
        ];
        for (url, signature) in cases {
            assert!(
                is_valid(&[TOKEN], url, &params(), signature),
                "{url} with {signature}"
            );
        }
    }

    #[test]
    fn rejects_sdk_negative_vectors() {
        let cases = [
            (
                "https://MyCompany.com/myapp.php?foo=1&bar=2",
                "RSOYDt4T1cUTdK1PDd93/VVr8B8=",
            ),
            (
                "https://MyCompany.com:1234/myapp.php?foo=1&bar=2",
                "RSOYDt4T1cUTdK1PDd93/VVr8B8=",
            ),
            (
                "http://MyCompany.com/myapp.php?foo=1&bar=2",
                "RSOYDt4T1cUTdK1PDd93/VVr8B8=",
            ),
            (URL, "NOTRSOYDt4T1cUTdK1PDd93/VVr8B8="),
            (URL, "FAIL"),
            (URL, ""),
        ];
        for (url, signature) in cases {
            assert!(
                !is_valid(&[TOKEN], url, &params(), signature),
                "{url} with {signature}"
            );
        }
    }

    #[test]
    fn any_change_breaks_the_signature() {
        let good = "RSOYDt4T1cUTdK1PDd93/VVr8B8=";
        let mut tampered = params();
        tampered[2].1 = "9999".into();
        assert!(!is_valid(&[TOKEN], URL, &tampered, good));
        let mut extra = params();
        extra.push(("Body".into(), "hi".into()));
        assert!(!is_valid(&[TOKEN], URL, &extra, good));
        assert!(!is_valid(&["54321"], URL, &params(), good));
        assert!(!is_valid(&[TOKEN], &format!("{URL}&x=1"), &params(), good));
    }

    #[test]
    fn a_second_token_also_validates() {
        let good = "RSOYDt4T1cUTdK1PDd93/VVr8B8=";
        assert!(is_valid(&["old-token", TOKEN], URL, &params(), good));
    }

    #[test]
    fn url_variants_keep_case_credentials_and_ipv6() {
        assert_eq!(
            url_variants("http://[::1]:8080/x?y=1"),
            vec!["http://[::1]:8080/x?y=1", "http://[::1]/x?y=1"]
        );
        assert_eq!(
            url_variants("https://u:p@Host.example"),
            vec!["https://u:p@Host.example", "https://u:p@Host.example:443"]
        );
        assert_eq!(url_variants("not a url"), vec!["not a url"]);
        assert_eq!(
            url_variants("https://bot.example.com/"),
            vec![
                "https://bot.example.com/",
                "https://bot.example.com:443/",
                "https://bot.example.com",
                "https://bot.example.com:443"
            ]
        );
    }
}
