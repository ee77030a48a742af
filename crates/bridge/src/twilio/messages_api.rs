//! A small client for Twilio's Messages API: `POST /2010-04-01/Accounts/{Sid}/Messages.json`,
//! with the two calls that go with WhatsApp's rich messages: creating Content API
//! content (`POST /v1/Content`) and the typing indicator (`POST /v2/Indicators/Typing.json`).
//!
//! Used when a reply cannot travel in the webhook's answer (the agent was too slow, or
//! the reply is a WhatsApp menu).
//! Twilio answers errors with JSON `{"code", "message", "more_info", "status"}`; a 429
//! or a 5xx is worth another try, any other 4xx is final.

use crate::config::Secret;
use crate::reply::ReplyMessage;
use crate::retry::{Backoff, GaveUp, RetryPolicy, Stop, Verdict};
use crate::telemetry::SPANS;
use serde::Deserialize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tracing::Instrument;

/// Who pays for the message and which credentials say so.
#[derive(Debug, Clone)]
pub struct ApiCredentials {
    pub account_sid: String,
    /// The account SID with the auth token, or an API key SID with its secret.
    pub username: String,
    /// Tried in order: after a 401, the next one (the secondary auth token, while the
    /// primary is being rotated out) is used from then on.
    pub passwords: Vec<Secret>,
}

/// Where an outgoing message comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sender {
    /// The number (or WhatsApp sender) the user wrote to.
    Number(String),
    /// A Messaging Service, which picks the number.
    MessagingService(String),
}

/// Why a message was not sent. Twilio's own error text is left out on purpose: it
/// often quotes the phone number ("The 'To' number +1555… is not valid").
#[derive(Debug, Error)]
pub enum SendError {
    #[error("Twilio refused the message: HTTP {status}, Twilio error {code} ({more_info})")]
    Refused {
        status: u16,
        code: u32,
        more_info: String,
    },
    #[error("Twilio did not accept the message after {attempts} attempts: {last}")]
    GaveUp {
        attempts: u32,
        last: String,
        /// The last answer's HTTP status and Twilio error code, if there was an answer.
        status: Option<u16>,
        code: Option<u32>,
    },
    /// The request went out but no answer came back: Twilio may have sent the message,
    /// so it is not sent again.
    #[error("no answer from Twilio after the request was sent ({0}); the message may or may not have gone out")]
    Unknown(String),
}

impl SendError {
    /// The HTTP status of Twilio's last answer, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            SendError::Refused { status, .. } => Some(*status),
            SendError::GaveUp { status, .. } => *status,
            SendError::Unknown(_) => None,
        }
    }

    /// What Twilio's error code means and what to do, when known.
    pub fn hint(&self) -> Option<&'static str> {
        self.code().and_then(super::errors::hint)
    }

    /// Twilio refused the content itself: the same words as plain text could go out.
    pub fn content_refused(&self) -> bool {
        matches!(self, SendError::Refused { code, .. } if super::errors::content_refused(*code))
    }

    /// Twilio's error code (`21610`, `63016`, …), if its answer had one.
    pub fn code(&self) -> Option<u32> {
        match self {
            SendError::Refused { code, .. } => Some(*code).filter(|c| *c != 0),
            SendError::GaveUp { code, .. } => *code,
            SendError::Unknown(_) => None,
        }
    }
}

#[derive(Debug, Deserialize)]
struct TwilioError {
    code: Option<u32>,
    more_info: Option<String>,
}

/// The longest wait a 429's `Retry-After` may ask for before the next try.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(5);

/// Idle connections kept to Twilio at most. A burst of replies opens a connection per
/// send in flight (HTTP/1.1); past the burst, this many stay for the next one and the
/// rest close at once instead of holding their buffers (and Twilio's TLS state) for
/// reqwest's 90 s idle timeout.
const IDLE_CONNECTIONS: usize = 32;

/// Four tries, 250 ms apart and doubling.
const RETRY: RetryPolicy = RetryPolicy::new(Backoff::exponential(
    Duration::from_millis(250),
    Duration::from_secs(4),
))
.with_attempt_limit(4);

/// Why one try failed.
#[derive(Debug)]
enum Attempt {
    /// Worth another try: Twilio did not take the request (a 429, a 5xx, a connection
    /// that could not be made, a rotated token).
    Transient {
        last: String,
        /// Twilio's answer, if there was one.
        status: Option<u16>,
        code: Option<u32>,
        retry_after: Option<Duration>,
    },
    /// Not tried again: refused, or the request may have been taken.
    Final(SendError),
}

impl Attempt {
    fn verdict(&self) -> Verdict {
        match self {
            Attempt::Transient {
                retry_after: Some(after),
                ..
            } => Verdict::RetryAfter(*after),
            Attempt::Transient { .. } => Verdict::Retry,
            Attempt::Final(_) => Verdict::Final,
        }
    }
}

#[derive(Debug, Clone)]
pub struct MessagesApi {
    client: reqwest::Client,
    base_url: String,
    content_base_url: String,
    messaging_base_url: String,
    credentials: ApiCredentials,
    retry: RetryPolicy,
    /// Which of the passwords Twilio took last.
    password: Arc<AtomicUsize>,
}

impl MessagesApi {
    /// A client of the Messages API at `base_url`, whose requests may take `timeout`.
    pub fn new(
        base_url: &str,
        credentials: ApiCredentials,
        timeout: Duration,
    ) -> Result<Self, reqwest::Error> {
        let client = crate::tls::shared(reqwest::Client::builder())
            .timeout(timeout)
            .pool_max_idle_per_host(IDLE_CONNECTIONS)
            .build()?;
        Ok(Self {
            client,
            base_url: base_url.trim_end_matches('/').to_owned(),
            content_base_url: base_url.trim_end_matches('/').to_owned(),
            messaging_base_url: base_url.trim_end_matches('/').to_owned(),
            credentials,
            retry: RETRY,
            password: Arc::default(),
        })
    }

    /// Another retry policy for sends (shorter waits, for tests).
    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The Content API and the Messaging v2 API at their own base URLs (by default,
    /// the Messages API's: the local stand-in serves all three).
    pub fn with_hosts(mut self, content_base_url: &str, messaging_base_url: &str) -> Self {
        self.content_base_url = content_base_url.trim_end_matches('/').to_owned();
        self.messaging_base_url = messaging_base_url.trim_end_matches('/').to_owned();
        self
    }

    /// The account the client sends for.
    pub fn account_sid(&self) -> &str {
        &self.credentials.account_sid
    }

    /// Sends one message to `to`: its text and media, or its template. A 429, a 5xx or
    /// a connection that could not be made is tried again with backoff (or after the
    /// 429's `Retry-After`, up to 5 s); anything else is final, and a request that went
    /// out unanswered is never repeated, so that no one gets a reply twice.
    pub async fn send(
        &self,
        to: &str,
        from: &Sender,
        message: &ReplyMessage,
        status_callback: Option<&str>,
    ) -> Result<Option<String>, SendError> {
        let url = format!(
            "{}/2010-04-01/Accounts/{}/Messages.json",
            self.base_url, self.credentials.account_sid
        );
        let mut form: Vec<(&str, &str)> = vec![("To", to)];
        match from {
            Sender::Number(number) => form.push(("From", number)),
            Sender::MessagingService(sid) => form.push(("MessagingServiceSid", sid)),
        }
        match &message.template {
            Some(template) => {
                form.push(("ContentSid", &template.sid));
                if let Some(variables) = &template.variables {
                    form.push(("ContentVariables", variables));
                }
            }
            None => {
                if !message.body.is_empty() {
                    form.push(("Body", &message.body));
                }
                form.extend(message.media.iter().map(|url| ("MediaUrl", url.as_str())));
            }
        }
        if let Some(callback) = status_callback {
            form.push(("StatusCallback", callback));
        }
        // Created. Its SID, when the answer has one, lets a later status be matched.
        let kind = match (&message.template, message.media.is_empty()) {
            (Some(_), _) => "template",
            (None, true) => "text",
            (None, false) => "media",
        };
        let span = tracing::info_span!(
            target: SPANS,
            "twilio.messages.create",
            otel.kind = "client",
            message.kind = kind,
            otel.status_code = tracing::field::Empty,
        );
        let response = self
            .call(|client| client.post(&url).form(&form))
            .instrument(span.clone())
            .await
            .inspect_err(|_| {
                span.record("otel.status_code", "error");
            })?;
        #[derive(Deserialize)]
        struct Created {
            sid: Option<String>,
        }
        Ok(response.json::<Created>().await.ok().and_then(|c| c.sid))
    }

    /// Creates a Content API content (`POST /v1/Content`) and returns its `HX…` SID.
    pub async fn create_content(&self, content: &serde_json::Value) -> Result<String, SendError> {
        let url = format!("{}/v1/Content", self.content_base_url);
        // Once: creating is not idempotent, and a menu not made now goes as text.
        let response = self
            .call_with(self.retry.with_attempt_limit(1), |client| {
                client.post(&url).json(content)
            })
            .instrument(
                tracing::info_span!(target: SPANS, "twilio.content.create", otel.kind = "client"),
            )
            .await?;
        #[derive(Deserialize)]
        struct Created {
            sid: String,
        }
        let created: Created = response
            .json()
            .await
            .map_err(|_| SendError::Unknown("the Content API's answer has no sid".into()))?;
        Ok(created.sid)
    }

    /// Shows "typing…" to the WhatsApp sender of `message_sid` (Twilio's typing
    /// indicator, in public beta): once, no retries, it only matters now.
    pub async fn typing(&self, message_sid: &str) -> Result<(), SendError> {
        let url = format!("{}/v2/Indicators/Typing.json", self.messaging_base_url);
        let form = [("messageId", message_sid), ("channel", "whatsapp")];
        self.call_with(self.retry.with_attempt_limit(1), |client| {
            client.post(&url).form(&form)
        })
        .instrument(tracing::info_span!(target: SPANS, "twilio.typing", otel.kind = "client"))
        .await
        .map(drop)
    }

    async fn call(
        &self,
        request: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, SendError> {
        self.call_with(self.retry, request).await
    }

    /// Makes the request `request` builds, as [`MessagesApi::send`] says, and returns
    /// Twilio's successful answer.
    async fn call_with(
        &self,
        retry: RetryPolicy,
        request: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, SendError> {
        let attempt = |_| self.attempt(&request);
        match retry.run(Attempt::verdict, attempt).await {
            Ok(response) => Ok(response),
            Err(GaveUp {
                error: Attempt::Final(error),
                ..
            }) => Err(error),
            Err(GaveUp {
                error:
                    Attempt::Transient {
                        last, status, code, ..
                    },
                attempts,
                stop,
            }) => {
                debug_assert_ne!(stop, Stop::Final);
                Err(SendError::GaveUp {
                    attempts,
                    last,
                    status,
                    code,
                })
            }
        }
    }

    /// One try of the request `request` builds.
    async fn attempt(
        &self,
        request: &impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, Attempt> {
        let password = self.password.load(Ordering::Relaxed);
        let response = request(&self.client)
            .basic_auth(
                &self.credentials.username,
                self.credentials.passwords.get(password).map(Secret::expose),
            )
            .send()
            .await;
        let response = match response {
            Ok(response) => response,
            // Nothing went out: safe to try again.
            Err(error) if error.is_connect() => {
                return Err(Attempt::Transient {
                    last: "could not connect".into(),
                    status: None,
                    code: None,
                    retry_after: None,
                })
            }
            Err(error) if error.is_timeout() => {
                return Err(Attempt::Final(SendError::Unknown("timeout".into())))
            }
            Err(_) => return Err(Attempt::Final(SendError::Unknown("connection lost".into()))),
        };
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let retry_after = retry_after(response.headers());
        if status == reqwest::StatusCode::UNAUTHORIZED
            && password + 1 < self.credentials.passwords.len()
        {
            // The token was rotated: the secondary is the account's token now.
            let _ = self.password.compare_exchange(
                password,
                password + 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            return Err(Attempt::Transient {
                last: "HTTP 401 with the primary auth token".into(),
                status: Some(401),
                code: None,
                retry_after,
            });
        }
        let body = response.text().await.unwrap_or_default();
        let error: TwilioError = serde_json::from_str(&body).unwrap_or(TwilioError {
            code: None,
            more_info: None,
        });
        let code = error.code.unwrap_or(0);
        if status.as_u16() == 429 || status.is_server_error() {
            return Err(Attempt::Transient {
                last: format!("HTTP {}, Twilio error {code}", status.as_u16()),
                status: Some(status.as_u16()),
                code: error.code,
                retry_after,
            });
        }
        Err(Attempt::Final(SendError::Refused {
            status: status.as_u16(),
            code,
            more_info: error.more_info.unwrap_or_default(),
        }))
    }
}

/// A `Retry-After` in seconds, capped, if there is one.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;
    use axum::routing::post;

    /// A Messages API that answers every request with `status` and `body`.
    async fn twilio_answering(status: StatusCode, body: &'static str) -> MessagesApi {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new().fallback(post(move || async move { (status, body) }));
        tokio::spawn(async move { axum::serve(listener, app).await });
        let credentials = ApiCredentials {
            account_sid: "AC1".into(),
            username: "AC1".into(),
            passwords: vec![Secret::new("token")],
        };
        MessagesApi::new(&base, credentials, Duration::from_secs(10))
            .unwrap()
            .with_retry_policy(
                RetryPolicy::new(Backoff::constant(Duration::from_millis(1))).with_attempt_limit(2),
            )
    }

    async fn send_hi(api: &MessagesApi) -> Result<(), SendError> {
        let from = Sender::Number("+18005550000".into());
        api.send("+15551234567", &from, &ReplyMessage::text("hi"), None)
            .await
            .map(drop)
    }

    #[tokio::test]
    async fn a_refusal_keeps_twilio_code_and_leaves_out_its_text_with_the_number() {
        let api = twilio_answering(
            StatusCode::BAD_REQUEST,
            r#"{"code": 21211, "message": "The 'To' number +15551234567 is not a valid phone number.", "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400}"#,
        )
        .await;
        let error = send_hi(&api).await.unwrap_err();
        let shown = error.to_string();
        assert!(
            shown.contains("21211") && shown.contains("HTTP 400"),
            "{shown}"
        );
        assert!(!shown.contains("5551234567"), "{shown}");
    }

    #[tokio::test]
    async fn any_success_is_sent_even_when_the_answer_is_not_json() {
        let api = twilio_answering(StatusCode::CREATED, "<not json>").await;
        let sent = send_hi(&api).await;
        assert!(sent.is_ok(), "{sent:?}");
    }

    #[tokio::test]
    async fn a_5xx_is_tried_again_and_given_up_on_with_the_last_answer() {
        let api = twilio_answering(
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"code": 20500, "message": "Internal Server Error", "status": 503}"#,
        )
        .await;
        let error = send_hi(&api).await.unwrap_err();
        assert!(
            matches!(
                error,
                SendError::GaveUp {
                    attempts: 2,
                    status: Some(503),
                    code: Some(20500),
                    ..
                }
            ),
            "{error:?}"
        );
    }
}
