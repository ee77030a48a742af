//! The URL Twilio requested, which is what its signature covers.
//!
//! Behind a proxy or load balancer (Cloud Run, ngrok, nginx), the request that reaches
//! us has another scheme and often another host than the URL Twilio called, and the
//! signature check fails unless the public URL is rebuilt. Three sources, in order of
//! trust: the URL the operator configured, the `X-Forwarded-*` values our own proxies
//! appended when the operator says how many there are, and otherwise the request itself.
//!
//! A URL rebuilt from the request is the client's to choose: a webhook Twilio signed for
//! another host of the same account (another service, another deployment) would verify
//! here too. So the host is checked against the hosts the bridge answers for (the host
//! list, and on Cloud Run the service's own URL) before the signature is; only when
//! nothing pins it is any host taken, and start-up warns of it.

use super::rejection::Rejection;
use crate::config::TwilioSettings;
use axum::http::{header, HeaderMap, Uri};
use std::num::NonZeroUsize;

/// How the URL a webhook was signed for is found, decided once at start-up.
#[derive(Debug, Clone)]
pub struct PublicUrl {
    /// `TWILIO_WEBHOOK_URL`: the URL, whatever the request says.
    configured: Option<String>,
    /// How many proxies of ours append to `X-Forwarded-*` (`TRUST_PROXY`).
    trusted_hops: Option<NonZeroUsize>,
    /// The hosts webhooks may be sent to, lower case; empty: any (nothing pins them).
    hosts: Vec<String>,
}

impl PublicUrl {
    /// From the settings, and the host of this Cloud Run service's own URL when the
    /// metadata server told it.
    pub fn new(settings: &TwilioSettings, cloud_run_host: Option<String>) -> Self {
        Self {
            configured: settings.webhook_url.clone(),
            trusted_hops: settings.trust_proxy,
            hosts: settings
                .webhook_hosts
                .iter()
                .cloned()
                .chain(cloud_run_host)
                .collect(),
        }
    }

    /// The URL Twilio signed for this request, if it was sent to a host of ours.
    pub fn of(&self, headers: &HeaderMap, uri: &Uri) -> Result<String, Rejection> {
        let path_and_query = uri.path_and_query().map_or("/", |pq| pq.as_str());
        if let Some(configured) = &self.configured {
            // Twilio appends nothing to the configured URL, but an operator who configured
            // `https://host/?key=v` in Twilio and only `https://host/` here still means it.
            return Ok(match uri.query() {
                Some(query) if !configured.contains('?') => format!("{configured}?{query}"),
                _ => configured.clone(),
            });
        }
        let request_host = || last_value(headers, header::HOST.as_str(), NonZeroUsize::MIN);
        let (scheme, host) = match self.trusted_hops {
            Some(hops) => (
                last_value(headers, "x-forwarded-proto", hops).unwrap_or("http"),
                last_value(headers, "x-forwarded-host", hops).or_else(request_host),
            ),
            None => ("http", request_host()),
        };
        let host = host.ok_or(Rejection::NoHost)?;
        if !self.hosts.is_empty() && !self.hosts.iter().any(|h| *h == name_of(host)) {
            return Err(Rejection::UnknownHost);
        }
        Ok(format!("{scheme}://{host}{path_and_query}"))
    }
}

/// The value `hops` from the right of a header's comma-separated values, over all its
/// lines: what the outermost of `hops` proxies of ours appended, each appending its own.
/// With fewer values than that, a proxy of ours set the header instead of appending to
/// it, and the left-most value is still one of ours.
fn last_value<'a>(headers: &'a HeaderMap, name: &str, hops: NonZeroUsize) -> Option<&'a str> {
    let values: Vec<&str> = headers
        .get_all(name)
        .iter()
        .filter_map(|line| line.to_str().ok())
        .flat_map(|line| line.split(','))
        .map(str::trim)
        .collect();
    let index = values.len().saturating_sub(hops.get());
    values.get(index).copied().filter(|v| !v.is_empty())
}

/// The host name of a `Host` value, lower case, without its port: the port a proxy
/// or Twilio's URL names does not change whose host it is.
fn name_of(host: &str) -> String {
    let name = match host.rsplit_once(':') {
        // Not the colons of an IPv6 literal, `[::1]`.
        Some((name, port)) if !port.contains(']') => name,
        _ => host,
    };
    name.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn settings(webhook_url: Option<&str>, trust_proxy: usize) -> TwilioSettings {
        TwilioSettings {
            account_sid: "AC".into(),
            auth_tokens: vec![Secret::new("t")],
            webhook_url: webhook_url.map(str::to_owned),
            trust_proxy: NonZeroUsize::new(trust_proxy),
            webhook_hosts: Vec::new(),
            cloud_run: None,
            webhook_keys: Default::default(),
            other_accounts: Vec::new(),
        }
    }

    fn url(settings: &TwilioSettings, h: &HeaderMap, uri: &str) -> Result<String, Rejection> {
        PublicUrl::new(settings, None).of(h, &uri.parse().unwrap())
    }

    /// The URL of `/` rebuilt from `h`, trusting `hops` proxies and no configured URL.
    fn behind(hops: usize, h: &HeaderMap) -> String {
        url(&settings(None, hops), h, "/").unwrap()
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(header::HeaderName::from_static(k), v.parse().unwrap());
        }
        map
    }

    #[test]
    fn configured_url_wins_and_keeps_the_query() {
        let h = headers(&[("host", "internal:8080")]);
        assert_eq!(
            url(
                &settings(Some("https://bot.example.com/"), 0),
                &h,
                "/?tenant=a"
            )
            .unwrap(),
            "https://bot.example.com/?tenant=a"
        );
        assert_eq!(
            url(
                &settings(Some("https://bot.example.com/?x=1"), 0),
                &h,
                "/?tenant=a"
            )
            .unwrap(),
            "https://bot.example.com/?x=1"
        );
    }

    #[test]
    fn trusted_proxy_headers_rebuild_the_public_url() {
        let h = headers(&[
            ("host", "10.0.0.7:8080"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "bridge-abc-uc.a.run.app"),
        ]);
        assert_eq!(behind(1, &h), "https://bridge-abc-uc.a.run.app/");
        // Untrusted, the same headers are ignored: anyone can send them.
        assert_eq!(behind(0, &h), "http://10.0.0.7:8080/");
    }

    #[test]
    fn only_the_values_our_proxies_appended_count() {
        let h = headers(&[
            ("host", "10.0.0.7:8080"),
            ("x-forwarded-proto", "http, https"),
            ("x-forwarded-host", "client.example, outer.example"),
            ("x-forwarded-host", "inner.example"),
        ]);
        assert_eq!(behind(1, &h), "https://inner.example/");
        assert_eq!(behind(2, &h), "http://outer.example/");
        // More hops than values: the left-most, which a proxy of ours set.
        assert_eq!(behind(5, &h), "http://client.example/");
    }

    #[test]
    fn a_host_not_listed_is_refused() {
        let mut listed = settings(None, 0);
        listed.webhook_hosts = vec!["a.example".into()];
        let public = PublicUrl::new(&listed, Some("svc-1.europe-west1.run.app".into()));
        let of = |host: &'static str| public.of(&headers(&[("host", host)]), &"/".parse().unwrap());
        assert!(matches!(of("b.example"), Err(Rejection::UnknownHost)));
        assert!(matches!(of("a.example.evil"), Err(Rejection::UnknownHost)));
        assert_eq!(of("A.Example:8443").unwrap(), "http://A.Example:8443/");
        assert_eq!(
            of("svc-1.europe-west1.run.app").unwrap(),
            "http://svc-1.europe-west1.run.app/"
        );
    }

    #[test]
    fn host_names_lose_their_port_not_their_ipv6_colons() {
        assert_eq!(name_of("Bot.Example.com:443"), "bot.example.com");
        assert_eq!(name_of("bot.example.com."), "bot.example.com");
        assert_eq!(name_of("[::1]:8080"), "[::1]");
        assert_eq!(name_of("[::1]"), "[::1]");
    }

    #[test]
    fn no_host_no_url() {
        assert!(matches!(
            url(&settings(None, 0), &HeaderMap::new(), "/"),
            Err(Rejection::NoHost)
        ));
    }
}
