//! A small client for Twilio's Messages API: `POST /2010-04-01/Accounts/{Sid}/Messages.json`.
//!
//! Used when a reply cannot travel in the webhook's answer (the agent was too slow).
//! Twilio answers errors with JSON `{"code", "message", "more_info", "status"}`; a 429
//! or a 5xx is worth another try, anything else 4xx is final.

use crate::config::Secret;
use crate::reply::ReplyMessage;
use serde::Deserialize;
use std::time::Duration;
use thiserror::Error;

/// Who pays for the message and which credentials say so.
#[derive(Debug, Clone)]
pub struct ApiCredentials {
    pub account_sid: String,
    /// The account SID with the auth token, or an API key SID with its secret.
    pub username: String,
    pub password: Secret,
}

/// Where an outgoing message comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sender {
    /// The number (or WhatsApp sender) the user wrote to.
    Number(String),
    /// A Messaging Service, which picks the number.
    MessagingService(String),
}

#[derive(Debug, Error)]
pub enum SendError {
    #[error("Twilio refused the message: {status} error {code}: {message}")]
    Refused {
        status: u16,
        code: u32,
        message: String,
    },
    #[error("Twilio did not accept the message after {attempts} attempts: {last}")]
    GaveUp { attempts: u32, last: String },
}

#[derive(Debug, Deserialize)]
struct TwilioError {
    code: Option<u32>,
    message: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct SentMessage {
    pub sid: String,
}

#[derive(Debug, Clone)]
pub struct MessagesApi {
    client: reqwest::Client,
    base_url: String,
    credentials: ApiCredentials,
    attempts: u32,
    first_backoff: Duration,
}

impl MessagesApi {
    pub fn new(base_url: &str, credentials: ApiCredentials) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        Ok(Self {
            client,
            base_url: base_url.trim_end_matches('/').to_owned(),
            credentials,
            attempts: 4,
            first_backoff: Duration::from_millis(250),
        })
    }

    /// Shorter waits between tries, for tests.
    pub fn with_backoff(mut self, first_backoff: Duration, attempts: u32) -> Self {
        self.first_backoff = first_backoff;
        self.attempts = attempts.max(1);
        self
    }

    /// Sends one message to `to`, retrying 429, 5xx and network failures with backoff.
    pub async fn send(
        &self,
        to: &str,
        from: &Sender,
        message: &ReplyMessage,
        status_callback: Option<&str>,
    ) -> Result<SentMessage, SendError> {
        let url = format!(
            "{}/2010-04-01/Accounts/{}/Messages.json",
            self.base_url, self.credentials.account_sid
        );
        let mut form: Vec<(&str, &str)> = vec![("To", to)];
        match from {
            Sender::Number(number) => form.push(("From", number)),
            Sender::MessagingService(sid) => form.push(("MessagingServiceSid", sid)),
        }
        if !message.body.is_empty() {
            form.push(("Body", &message.body));
        }
        form.extend(message.media.iter().map(|url| ("MediaUrl", url.as_str())));
        if let Some(callback) = status_callback {
            form.push(("StatusCallback", callback));
        }
        let mut backoff = self.first_backoff;
        let mut last = String::new();
        for attempt in 1..=self.attempts {
            if attempt > 1 {
                tokio::time::sleep(backoff).await;
                backoff = backoff.saturating_mul(2);
            }
            let response = self
                .client
                .post(&url)
                .basic_auth(
                    &self.credentials.username,
                    Some(self.credentials.password.expose()),
                )
                .form(&form)
                .send()
                .await;
            let response = match response {
                Ok(response) => response,
                Err(error) => {
                    last = format!("network error: {error}");
                    continue;
                }
            };
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            if status.is_success() {
                return serde_json::from_str(&body).map_err(|e| SendError::GaveUp {
                    attempts: attempt,
                    last: format!("unreadable answer: {e}"),
                });
            }
            let error: TwilioError = serde_json::from_str(&body).unwrap_or(TwilioError {
                code: None,
                message: None,
            });
            let code = error.code.unwrap_or(0);
            let text = error
                .message
                .unwrap_or_else(|| body.chars().take(200).collect());
            if status.as_u16() == 429 || status.is_server_error() {
                last = format!("HTTP {} error {code}: {text}", status.as_u16());
                continue;
            }
            return Err(SendError::Refused {
                status: status.as_u16(),
                code,
                message: text,
            });
        }
        Err(SendError::GaveUp {
            attempts: self.attempts,
            last,
        })
    }
}
