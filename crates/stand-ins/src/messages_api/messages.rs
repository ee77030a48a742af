//! The Messages resource (<https://www.twilio.com/docs/messaging/api/message-resource>):
//! create (`POST …/Messages.json`), fetch (`GET …/Messages/{Sid}.json`) and list
//! (`GET …/Messages.json?To=…`), each answering Twilio's Message JSON, and refusing
//! what Twilio refuses with Twilio's codes ([`super::limits`]).

use super::content::{body_of_content, fill_variables, variables_are_valid};
use super::errors::TwilioError;
use super::limits::{
    CHANNEL_PREFIXES, E164_DIGITS, MESSAGE_BODY_CHARS, MESSAGE_MEDIA, WHATSAPP_SESSION_BUTTONS,
};
use super::{authorized, dates, misbehave, segments, Misbehaviour, SentMessage, Shared};
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

/// A message the stand-in took, with what Twilio keeps about it besides.
#[derive(Debug, Clone)]
pub(super) struct StoredMessage {
    pub sent: SentMessage,
    /// Seconds since the Unix epoch.
    pub created: u64,
    /// How it failed after it was taken, if it did.
    pub failure: Option<Failure>,
}

/// A message taken, then not delivered: how Twilio reports it, on its status callback
/// and when fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Failure {
    /// `failed`: never sent (e.g. 63016, outside WhatsApp's window); `undelivered`:
    /// sent, and the carrier or WhatsApp refused it.
    pub status: &'static str,
    pub code: u32,
}

/// The statuses Twilio reports to a message's `StatusCallback`, in order
/// (<https://www.twilio.com/docs/messaging/guides/track-outbound-message-status>):
/// queued, sent, then delivered, and read when a WhatsApp user opens it; or failed
/// (never sent) or undelivered (sent, not delivered).
fn statuses(whatsapp: bool, failure: Option<Failure>) -> Vec<&'static str> {
    match failure {
        Some(Failure {
            status: "failed", ..
        }) => vec!["queued", "failed"],
        Some(failure) => vec!["queued", "sent", failure.status],
        None if whatsapp => vec!["queued", "sent", "delivered", "read"],
        None => vec!["queued", "sent", "delivered"],
    }
}

/// Where a message is in Twilio's life of a message, as the stand-in shows it: queued
/// when the create answers, then at once delivered (or undelivered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Queued,
    Settled,
}

/// What a create asks, read from its form and checked as Twilio checks it.
#[derive(Debug, PartialEq, Eq)]
struct MessageRequest {
    to: String,
    from: Option<String>,
    messaging_service_sid: Option<String>,
    body: String,
    media: Vec<String>,
    status_callback: Option<String>,
    content_sid: Option<String>,
    content_variables: Option<String>,
}

impl MessageRequest {
    fn parse(form: &[u8]) -> Result<Self, TwilioError> {
        let mut to = None;
        let mut request = MessageRequest {
            to: String::new(),
            from: None,
            messaging_service_sid: None,
            body: String::new(),
            media: Vec::new(),
            status_callback: None,
            content_sid: None,
            content_variables: None,
        };
        for (name, value) in form_urlencoded::parse(form).into_owned() {
            match name.as_str() {
                "To" => to = Some(value),
                "From" => request.from = Some(value),
                "MessagingServiceSid" => request.messaging_service_sid = Some(value),
                "Body" => request.body = value,
                "MediaUrl" => request.media.push(value),
                "StatusCallback" => request.status_callback = Some(value),
                "ContentSid" => request.content_sid = Some(value),
                "ContentVariables" => request.content_variables = Some(value),
                _ => {}
            }
        }
        request.to = to.ok_or_else(TwilioError::to_required)?;
        if !is_address(&request.to) {
            return Err(TwilioError::invalid_to(&request.to));
        }
        if request.from.is_none() && request.messaging_service_sid.is_none() {
            return Err(TwilioError::from_required());
        }
        if let Some(variables) = &request.content_variables {
            if request.content_sid.is_none() {
                return Err(TwilioError::content_sid_required());
            }
            if !variables_are_valid(variables) {
                return Err(TwilioError::invalid_content_variables());
            }
        }
        if request.body.chars().count() > MESSAGE_BODY_CHARS {
            return Err(TwilioError::body_too_long(MESSAGE_BODY_CHARS));
        }
        if request.media.len() > MESSAGE_MEDIA {
            return Err(TwilioError::too_much_media(MESSAGE_MEDIA));
        }
        Ok(request)
    }

    fn to_whatsapp(&self) -> bool {
        self.to.starts_with("whatsapp:")
    }
}

/// A recipient Twilio can send to: an E.164 number, alone or after a channel prefix
/// (`whatsapp:+…`, `rcs:+…`), or a Messenger user's id (`messenger:…`).
fn is_address(to: &str) -> bool {
    match CHANNEL_PREFIXES
        .iter()
        .find_map(|prefix| Some((*prefix, to.strip_prefix(prefix)?)))
    {
        Some(("messenger:", id)) => !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric()),
        Some((_, number)) => is_e164(number),
        None => is_e164(to),
    }
}

/// `+` and 1 to 15 digits, the first not 0.
fn is_e164(number: &str) -> bool {
    number.strip_prefix('+').is_some_and(|digits| {
        (1..=E164_DIGITS).contains(&digits.len())
            && digits.chars().all(|c| c.is_ascii_digit())
            && !digits.starts_with('0')
    })
}

/// The path of a message, as Twilio writes its `uri`.
fn message_path(account: &str, sid: &str) -> String {
    format!("/2010-04-01/Accounts/{account}/Messages/{sid}.json")
}

/// Twilio's Message resource JSON for `stored`, as a create (`Queued`) or a later
/// fetch or list (`Settled`) shows it.
fn resource(stored: &StoredMessage, status: Status) -> Value {
    let m = &stored.sent;
    let created = dates::rfc2822(stored.created);
    let (status, date_sent, error_code) = match (status, stored.failure) {
        (Status::Queued, _) => ("queued", Value::Null, None),
        (Status::Settled, None) => ("delivered", json!(created), None),
        (Status::Settled, Some(Failure { status, code })) => {
            let sent = (status != "failed").then(|| json!(created));
            (status, sent.unwrap_or(Value::Null), Some(code))
        }
    };
    // WhatsApp bills by message, not by SMS segment: Twilio reports one.
    let num_segments = if m.to.starts_with("whatsapp:") {
        1
    } else {
        segments::count(&m.body)
    };
    let uri = message_path(&m.account_sid, &m.sid);
    json!({
        "account_sid": m.account_sid,
        "api_version": "2010-04-01",
        "body": m.body,
        "date_created": created,
        "date_sent": date_sent,
        "date_updated": created,
        "direction": "outbound-api",
        "error_code": error_code,
        "error_message": error_code.map(|code| format!("Twilio error {code}")),
        "from": m.from,
        "messaging_service_sid": m.messaging_service_sid,
        "num_media": m.media.len().to_string(),
        "num_segments": num_segments.to_string(),
        "price": null,
        "price_unit": "USD",
        "sid": m.sid,
        "status": status,
        "subresource_uris": {
            "media": format!("/2010-04-01/Accounts/{}/Messages/{}/Media.json", m.account_sid, m.sid),
            "feedback": format!("/2010-04-01/Accounts/{}/Messages/{}/Feedback.json", m.account_sid, m.sid),
        },
        "to": m.to,
        "uri": uri,
        // Not in Twilio's resource: the stand-in says which content a message showed,
        // so that the terminal phone can draw its buttons.
        "content_sid": m.content_sid,
        // Nor this: Twilio lists media in the Media subresource; the web phone shows
        // them as pictures.
        "media_urls": m.media,
    })
}

/// `POST /2010-04-01/Accounts/{Sid}/Messages.json`.
pub(super) async fn create(
    State(shared): State<Shared>,
    Path(account): Path<String>,
    headers: HeaderMap,
    form: Bytes,
) -> Response {
    let failure = {
        let mut recorded = shared.lock();
        recorded.attempts += 1;
        (!recorded.failures.is_empty()).then(|| recorded.failures.remove(0))
    };
    shared.changed.notify_waiters();
    let fail_later = match failure {
        Some(Misbehaviour::FailLater { code }) => Some(code),
        Some(fault) => return misbehave(fault).await,
        None => None,
    };
    if !authorized(&headers, &shared.credentials) {
        return TwilioError::unauthenticated().into_response();
    }
    let mut request = match MessageRequest::parse(&form) {
        Ok(request) => request,
        Err(refusal) => return refusal.into_response(),
    };
    if let Some(sid) = &request.content_sid {
        match content_body(&shared, &account, sid, &request) {
            Ok(body) => request.body = body,
            Err(refusal) => return refusal.into_response(),
        }
    }
    if request.body.is_empty() && request.media.is_empty() {
        return TwilioError::nothing_to_send().into_response();
    }
    let stored = {
        let mut recorded = shared.lock();
        let now = recorded.now();
        let senders: Vec<&String> = request
            .from
            .iter()
            .chain(&request.messaging_service_sid)
            .collect();
        if senders
            .iter()
            .any(|sender| recorded.people.opted_out(&request.to, sender))
        {
            return TwilioError::unsubscribed_recipient().into_response();
        }
        // Outside the window only an approved template may start the conversation;
        // WhatsApp refuses the rest after Twilio took it, so it fails later.
        let approved = request
            .content_sid
            .as_ref()
            .is_some_and(|sid| recorded.templates.iter().any(|(known, _)| known == sid));
        let outside_window = recorded.session_windows
            && request.to_whatsapp()
            && !approved
            && !senders
                .iter()
                .any(|sender| recorded.people.in_session(&request.to, sender, now));
        let failure = match (outside_window, fail_later) {
            (true, _) => Some(Failure {
                status: "failed",
                code: OUTSIDE_WINDOW,
            }),
            (false, Some(code)) => Some(Failure {
                status: "undelivered",
                code,
            }),
            (false, None) => None,
        };
        let stored = StoredMessage {
            sent: SentMessage {
                sid: format!("SM{:032x}", recorded.sent.len() + 1),
                account_sid: account.clone(),
                to: request.to,
                from: request.from,
                messaging_service_sid: request.messaging_service_sid,
                body: request.body,
                media: request.media,
                status_callback: request.status_callback,
                content_sid: request.content_sid,
                content_variables: request.content_variables,
            },
            created: now,
            failure,
        };
        recorded.sent.push(stored.clone());
        stored
    };
    shared.changed.notify_waiters();
    if let Some(callback) = stored.sent.status_callback.clone() {
        let token = shared.token_of(&account);
        tokio::spawn(report_statuses(callback, token, stored.clone()));
    }
    (StatusCode::CREATED, Json(resource(&stored, Status::Queued))).into_response()
}

/// The body a send by `sid` shows: its content's, or its approved template's, with
/// the send's variables filled in.
fn content_body(
    shared: &Shared,
    account: &str,
    sid: &str,
    request: &MessageRequest,
) -> Result<String, TwilioError> {
    let (content, template) = {
        let recorded = shared.lock();
        (
            recorded
                .contents
                .iter()
                .find(|c| c.sid == sid && c.account_sid == account)
                .cloned(),
            recorded
                .templates
                .iter()
                .find(|(known, _)| known == sid)
                .map(|(_, body)| body.clone()),
        )
    };
    let variables = request.content_variables.as_deref().unwrap_or("{}");
    match (content, template) {
        (Some(content), _) => {
            let buttons = content.types["twilio/quick-reply"]["actions"]
                .as_array()
                .map_or(0, Vec::len);
            if buttons > WHATSAPP_SESSION_BUTTONS && request.to_whatsapp() {
                return Err(TwilioError::channel_invalid_content(&format!(
                    "more than {WHATSAPP_SESSION_BUTTONS} quick reply buttons"
                )));
            }
            Ok(fill_variables(&body_of_content(&content.types), variables))
        }
        (None, Some(body)) => Ok(fill_variables(&body, variables)),
        (None, None) => Err(TwilioError::invalid_content_sid()),
    }
}

/// `GET /2010-04-01/Accounts/{Sid}/Messages/{MessageSid}.json`.
pub(super) async fn fetch(
    State(shared): State<Shared>,
    Path((account, file)): Path<(String, String)>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    if !authorized(&headers, &shared.credentials) {
        return TwilioError::unauthenticated().into_response();
    }
    let stored = file.strip_suffix(".json").and_then(|sid| {
        shared
            .lock()
            .sent
            .iter()
            .find(|m| m.sent.sid == sid && m.sent.account_sid == account)
            .cloned()
    });
    match stored {
        Some(stored) => Json(resource(&stored, Status::Settled)).into_response(),
        None => TwilioError::not_found(uri.path()).into_response(),
    }
}

/// `GET …/Messages.json?To=…`: Twilio's list of messages, newest first, as the terminal
/// phone reads back the replies sent through the API. Only the `To` filter is served.
pub(super) async fn list(
    State(shared): State<Shared>,
    Path(account): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    if !authorized(&headers, &shared.credentials) {
        return TwilioError::unauthenticated().into_response();
    }
    let to = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(name, _)| name == "To")
        .map(|(_, value)| value.into_owned());
    let messages: Vec<Value> = shared
        .lock()
        .sent
        .iter()
        .rev()
        .filter(|m| m.sent.account_sid == account)
        .filter(|m| to.as_ref().is_none_or(|to| *to == m.sent.to))
        .map(|m| resource(m, Status::Settled))
        .collect();
    let uri = format!("/2010-04-01/Accounts/{account}/Messages.json?PageSize=50&Page=0");
    Json(json!({
        "messages": messages,
        "page": 0,
        "page_size": 50,
        "start": 0,
        "end": messages.len().saturating_sub(1),
        "uri": uri,
        "first_page_uri": uri,
        "next_page_uri": null,
        "previous_page_uri": null,
    }))
    .into_response()
}

/// Twilio's 63016: a free-form WhatsApp message outside the 24-hour window.
/// <https://www.twilio.com/docs/api/errors/63016>
const OUTSIDE_WINDOW: u32 = 63016;

/// Posts the status callbacks Twilio posts for a message it took, one at a time in
/// their order, each signed as Twilio signs its requests (with the bridge's public
/// signer, the one piece of the bridge a stand-in may use besides starting it).
async fn report_statuses(callback: String, token: String, stored: StoredMessage) {
    let client = reqwest::Client::new();
    let message = &stored.sent;
    for status in statuses(message.to.starts_with("whatsapp:"), stored.failure) {
        let mut params: Vec<(String, String)> = vec![
            ("MessageSid".into(), message.sid.clone()),
            ("SmsSid".into(), message.sid.clone()),
            ("AccountSid".into(), message.account_sid.clone()),
            ("To".into(), message.to.clone()),
            ("MessageStatus".into(), status.into()),
            ("SmsStatus".into(), status.into()),
            ("ApiVersion".into(), "2010-04-01".into()),
        ];
        if let Some(from) = &message.from {
            params.push(("From".into(), from.clone()));
        }
        if let Some(service) = &message.messaging_service_sid {
            params.push(("MessagingServiceSid".into(), service.clone()));
        }
        if let Some(failure) = stored.failure.filter(|f| f.status == status) {
            params.push(("ErrorCode".into(), failure.code.to_string()));
        }
        let signature = bridge::twilio::signature::compute(&token, &callback, &params);
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params.iter())
            .finish();
        let posted = client
            .post(&callback)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-twilio-signature", signature)
            .body(body)
            .send()
            .await;
        if posted.is_err() {
            // Nobody listens there: the next statuses would not be heard either.
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<MessageRequest, u32> {
        let form = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        MessageRequest::parse(form.as_bytes()).map_err(|e| e.code)
    }

    #[test]
    fn takes_numbers_and_channel_addresses() {
        for to in [
            "+15551230001",
            "+442071838750",
            "whatsapp:+15551230001",
            "rcs:+15551230001",
            "messenger:1234567890",
        ] {
            assert!(is_address(to), "{to}");
        }
        for to in [
            "not-a-number",
            "15551230001",
            "+",
            "+0123",
            "+1234567890123456",
            "+1 555 123",
            "whatsapp:15551230001",
            "whatsapp:",
            "messenger:",
            "sms:+15551230001",
        ] {
            assert!(!is_address(to), "{to}");
        }
    }

    #[test]
    fn statuses_follow_twilios_order() {
        assert_eq!(statuses(false, None), ["queued", "sent", "delivered"]);
        assert_eq!(
            statuses(true, None),
            ["queued", "sent", "delivered", "read"]
        );
        let outside = Failure {
            status: "failed",
            code: OUTSIDE_WINDOW,
        };
        assert_eq!(statuses(true, Some(outside)), ["queued", "failed"]);
        let refused = Failure {
            status: "undelivered",
            code: 63024,
        };
        assert_eq!(
            statuses(true, Some(refused)),
            ["queued", "sent", "undelivered"]
        );
    }

    #[test]
    fn refuses_as_twilio_does() {
        let ok = [("To", "+15551230001"), ("From", "+15557770000")];
        assert!(parse(&[ok[0], ok[1], ("Body", "hi")]).is_ok());
        assert_eq!(parse(&[ok[1], ("Body", "hi")]), Err(21604));
        assert_eq!(
            parse(&[("To", "not-a-number"), ok[1], ("Body", "hi")]),
            Err(21211)
        );
        assert_eq!(parse(&[ok[0], ("Body", "hi")]), Err(21603));
        let longest = "x".repeat(1600);
        assert!(parse(&[ok[0], ok[1], ("Body", &longest)]).is_ok());
        let too_long = "x".repeat(1601);
        assert_eq!(parse(&[ok[0], ok[1], ("Body", &too_long)]), Err(21617));
        // Characters, not bytes.
        let accented = "é".repeat(1600);
        assert!(parse(&[ok[0], ok[1], ("Body", &accented)]).is_ok());
        let mut eleven: Vec<(&str, &str)> = ok.to_vec();
        eleven.extend(std::iter::repeat_n(
            ("MediaUrl", "https://example.com/a.jpg"),
            11,
        ));
        assert_eq!(parse(&eleven), Err(21623));
        assert!(parse(&eleven[..12]).is_ok());
        assert_eq!(
            parse(&[ok[0], ok[1], ("ContentVariables", "{}")]),
            Err(21654)
        );
        assert_eq!(
            parse(&[
                ok[0],
                ok[1],
                ("ContentSid", "HX1"),
                ("ContentVariables", r#"{"1": 2}"#)
            ]),
            Err(21656)
        );
    }
}
