//! The URL Twilio requested, which is what its signature covers.
//!
//! Behind a proxy or load balancer (Cloud Run, ngrok, nginx), the request that reaches
//! us has another scheme and often another host than the URL Twilio called, and the
//! signature check fails unless the public URL is rebuilt. Three sources, in order of
//! trust: the URL the operator configured, the proxy's `X-Forwarded-*` headers when the
//! operator says the proxy is trusted, and otherwise the request itself.

use crate::config::TwilioSettings;
use axum::http::{header, HeaderMap, Uri};

pub fn public_url(settings: &TwilioSettings, headers: &HeaderMap, uri: &Uri) -> Option<String> {
    let path_and_query = uri.path_and_query().map_or("/", |pq| pq.as_str());
    if let Some(configured) = &settings.webhook_url {
        // Twilio appends nothing to the configured URL, but an operator who configured
        // `https://host/?key=v` in Twilio and only `https://host/` here still means it.
        return Some(match uri.query() {
            Some(query) if !configured.contains('?') => format!("{configured}?{query}"),
            _ => configured.clone(),
        });
    }
    let forwarded = |name: &str| first_value(headers, name);
    let (scheme, host) = if settings.trust_proxy {
        (
            forwarded("x-forwarded-proto").unwrap_or("http"),
            forwarded("x-forwarded-host")
                .or_else(|| first_value(headers, header::HOST.as_str()))?,
        )
    } else {
        ("http", first_value(headers, header::HOST.as_str())?)
    };
    Some(format!("{scheme}://{host}{path_and_query}"))
}

/// The first of a comma-separated header's values: the one the outermost proxy set.
fn first_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let value = headers.get(name)?.to_str().ok()?;
    value
        .split(',')
        .next()
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn settings(webhook_url: Option<&str>, trust_proxy: bool) -> TwilioSettings {
        TwilioSettings {
            account_sid: "AC".into(),
            auth_tokens: vec![Secret::new("t")],
            webhook_url: webhook_url.map(str::to_owned),
            trust_proxy,
            webhook_keys: Default::default(),
            other_accounts: Vec::new(),
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (header::HeaderName::from_static(k), v.parse().unwrap()))
            .collect()
    }

    #[test]
    fn configured_url_wins_and_keeps_the_query() {
        let uri: Uri = "/?tenant=a".parse().unwrap();
        let h = headers(&[("host", "internal:8080")]);
        assert_eq!(
            public_url(&settings(Some("https://bot.example.com/"), false), &h, &uri).unwrap(),
            "https://bot.example.com/?tenant=a"
        );
        assert_eq!(
            public_url(
                &settings(Some("https://bot.example.com/?x=1"), false),
                &h,
                &uri
            )
            .unwrap(),
            "https://bot.example.com/?x=1"
        );
    }

    #[test]
    fn trusted_proxy_headers_rebuild_the_public_url() {
        let uri: Uri = "/".parse().unwrap();
        let h = headers(&[
            ("host", "10.0.0.7:8080"),
            ("x-forwarded-proto", "https, http"),
            ("x-forwarded-host", "bridge-abc-uc.a.run.app"),
        ]);
        assert_eq!(
            public_url(&settings(None, true), &h, &uri).unwrap(),
            "https://bridge-abc-uc.a.run.app/"
        );
        // Untrusted, the same headers are ignored: anyone can send them.
        assert_eq!(
            public_url(&settings(None, false), &h, &uri).unwrap(),
            "http://10.0.0.7:8080/"
        );
    }

    #[test]
    fn no_host_no_url() {
        assert_eq!(
            public_url(
                &settings(None, false),
                &HeaderMap::new(),
                &"/".parse().unwrap()
            ),
            None
        );
    }
}
