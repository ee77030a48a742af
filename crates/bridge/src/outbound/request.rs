//! What `POST /outbound` asks, read once into typed values: the person (`to`), the
//! sender, what to send (an agent event, text, or a template) and the idempotency key.
//! Each field is checked where it is read, and a refusal names it.

use crate::handoff::idempotency::IdempotencyKey;
use crate::reply::{ReplyMessage, Template, MAX_MEDIA};
use serde_json::{Map, Value};

/// Ten messages' worth, as the human side may send: more is not a message.
pub const MAX_TEXT_CHARS: usize = 10 * crate::reply::MAX_BODY_CHARS;

/// Dialogflow's limit on an event name (CX and ES alike accept these characters).
const MAX_EVENT_CHARS: usize = 150;

/// The fields a request may carry: any other is refused, so that a typo is not a
/// silently ignored option.
const FIELDS: [&str; 8] = [
    "to",
    "from",
    "messaging_service_sid",
    "event",
    "text",
    "media",
    "template",
    "idempotency_key",
];

/// A phone number in E.164 (`+` and 8 to 15 digits, the first not 0), on SMS or on
/// WhatsApp (`whatsapp:+…`). Never logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub channel: Channel,
    /// `+15551234567`.
    number: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Sms,
    WhatsApp,
}

impl Address {
    /// `None` when `value` is not `+E164` or `whatsapp:+E164`.
    pub fn parse(value: &str) -> Option<Self> {
        let (channel, number) = match value.strip_prefix("whatsapp:") {
            Some(number) => (Channel::WhatsApp, number),
            None => (Channel::Sms, value),
        };
        let digits = number.strip_prefix('+')?;
        let e164 = (8..=15).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0');
        e164.then(|| Self {
            channel,
            number: number.to_owned(),
        })
    }

    /// As Twilio writes it in `To`/`From`: `+1555…` or `whatsapp:+1555…`.
    pub fn twilio(&self) -> String {
        match self.channel {
            Channel::Sms => self.number.clone(),
            Channel::WhatsApp => format!("whatsapp:{}", self.number),
        }
    }
}

/// Where the message comes from, as the request names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SenderChoice {
    /// A number or WhatsApp sender of ours.
    Number(Address),
    /// A Messaging Service (`MG…`), which picks the number.
    Service(String),
    /// Neither: the configured default, if there is one.
    Default,
}

/// What goes out.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Content {
    /// The agent is asked with this event in the person's session; its answer goes out.
    Event {
        name: String,
        parameters: Map<String, Value>,
    },
    /// Text and media, sent as they are.
    Text { text: String, media: Vec<String> },
    /// An approved template: `ContentSid` and `ContentVariables`.
    Template {
        content_sid: String,
        variables: Map<String, Value>,
    },
}

impl Content {
    /// For metrics and the record: `event`, `text` or `template`.
    pub fn kind(&self) -> &'static str {
        match self {
            Content::Event { .. } => "event",
            Content::Text { .. } => "text",
            Content::Template { .. } => "template",
        }
    }

    /// The message to send as it is; `None` for an event, which the agent answers.
    pub fn message(&self) -> Option<ReplyMessage> {
        match self {
            Content::Event { .. } => None,
            Content::Text { text, media } => Some(ReplyMessage {
                body: text.clone(),
                media: media.clone(),
                ..ReplyMessage::default()
            }),
            Content::Template {
                content_sid,
                variables,
            } => Some(ReplyMessage {
                template: Some(Template {
                    sid: content_sid.clone(),
                    variables: (!variables.is_empty())
                        .then(|| Value::Object(variables.clone()).to_string()),
                    choices: Vec::new(),
                }),
                ..ReplyMessage::default()
            }),
        }
    }
}

/// One request, read.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboundRequest {
    pub to: Address,
    pub sender: SenderChoice,
    pub content: Content,
    pub idempotency_key: Option<IdempotencyKey>,
    /// A hash of what was asked, to tell a retry from a key used again for another.
    pub fingerprint: String,
}

/// Why a request was refused before anything was done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct BadRequest {
    pub problem: Problem,
    /// The field at fault, when one is.
    pub field: Option<&'static str>,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// The body is not a JSON object.
    BadJson,
    /// A field is missing, unknown, of the wrong type or out of its range.
    BadField,
    /// A number is not E.164.
    NotE164,
}

impl Problem {
    /// The `error` of the JSON answer.
    pub fn code(self) -> &'static str {
        match self {
            Problem::BadJson => "bad_json",
            Problem::BadField => "bad_field",
            Problem::NotE164 => "invalid_number",
        }
    }
}

fn bad(field: &'static str, message: impl Into<String>) -> BadRequest {
    BadRequest {
        problem: Problem::BadField,
        field: Some(field),
        message: message.into(),
    }
}

impl OutboundRequest {
    /// Reads `body`; `header_key` is the `Idempotency-Key` header, if any (the field and
    /// the header may both be given only if they agree).
    pub fn parse(body: &[u8], header_key: Option<&str>) -> Result<Self, BadRequest> {
        let value: Value = serde_json::from_slice(body).map_err(|error| BadRequest {
            problem: Problem::BadJson,
            field: None,
            message: format!("the body is not JSON: {error}"),
        })?;
        let Value::Object(fields) = value else {
            return Err(BadRequest {
                problem: Problem::BadJson,
                field: None,
                message: "the body must be a JSON object".to_owned(),
            });
        };
        if let Some(unknown) = fields.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            let message = format!(
                "unknown field {unknown:?}; the fields are {}",
                FIELDS.join(", ")
            );
            return Err(BadRequest {
                problem: Problem::BadField,
                field: FIELDS.iter().find(|f| **f == unknown).copied(),
                message,
            });
        }
        let to = address(&fields, "to")?
            .ok_or_else(|| bad("to", "to is required: the person, +E164 or whatsapp:+E164"))?;
        let sender = sender(&fields, &to)?;
        let content = content(&fields)?;
        let idempotency_key = idempotency_key(&fields, header_key)?;
        let fingerprint = fingerprint(&fields);
        Ok(Self {
            to,
            sender,
            content,
            idempotency_key,
            fingerprint,
        })
    }
}

/// The string field `name`, if present; a refusal if it is not a string.
fn string<'a>(
    fields: &'a Map<String, Value>,
    name: &'static str,
) -> Result<Option<&'a str>, BadRequest> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(value)) => Ok(Some(value)),
        Some(_) => Err(bad(name, format!("{name} must be a string"))),
    }
}

fn address(fields: &Map<String, Value>, name: &'static str) -> Result<Option<Address>, BadRequest> {
    let Some(value) = string(fields, name)? else {
        return Ok(None);
    };
    Address::parse(value).map(Some).ok_or_else(|| BadRequest {
        problem: Problem::NotE164,
        field: Some(name),
        message: format!("{name} must be an E.164 number, +15551234567, or whatsapp:+15551234567"),
    })
}

fn sender(fields: &Map<String, Value>, to: &Address) -> Result<SenderChoice, BadRequest> {
    let from = address(fields, "from")?;
    let service = string(fields, "messaging_service_sid")?;
    match (from, service) {
        (Some(_), Some(_)) => Err(bad("from", "give from or messaging_service_sid, not both")),
        (Some(from), None) if from.channel != to.channel => Err(bad(
            "from",
            "from and to must be on the same channel: both whatsapp: or neither",
        )),
        (Some(from), None) => Ok(SenderChoice::Number(from)),
        (None, Some(sid)) if is_sid(sid, "MG") => Ok(SenderChoice::Service(sid.to_owned())),
        (None, Some(_)) => Err(bad(
            "messaging_service_sid",
            "messaging_service_sid must be MG followed by 32 hexadecimal digits",
        )),
        (None, None) => Ok(SenderChoice::Default),
    }
}

fn content(fields: &Map<String, Value>) -> Result<Content, BadRequest> {
    let given: Vec<&str> = ["event", "text", "template"]
        .into_iter()
        .filter(|name| fields.get(*name).is_some_and(|v| !v.is_null()))
        .collect();
    let media = fields.get("media").filter(|v| !v.is_null());
    if media.is_some() && !given.contains(&"text") && given.len() == 1 {
        return Err(bad("media", "media goes with text only"));
    }
    match given.as_slice() {
        ["event"] => event(fields.get("event")),
        ["text"] => text(fields, media),
        ["template"] => template(fields.get("template")),
        [_] => Err(bad("event", "one of event, text or template is required")),
        [] if media.is_some() => text(fields, media),
        [] => Err(bad("event", "one of event, text or template is required")),
        [_, second, ..] => Err(BadRequest {
            problem: Problem::BadField,
            field: ["event", "text", "template"]
                .into_iter()
                .find(|name| name == second),
            message: "give exactly one of event, text or template".to_owned(),
        }),
    }
}

fn event(value: Option<&Value>) -> Result<Content, BadRequest> {
    let Some(Value::Object(event)) = value else {
        return Err(bad(
            "event",
            "event must be an object: {\"name\": \"...\", \"parameters\": {...}}",
        ));
    };
    if let Some(unknown) = event
        .keys()
        .find(|k| !matches!(k.as_str(), "name" | "parameters"))
    {
        return Err(bad(
            "event",
            format!("event has an unknown field {unknown:?}: it takes name and parameters"),
        ));
    }
    let name = match event.get("name") {
        Some(Value::String(name)) => name,
        _ => return Err(bad("event", "event.name is required, a string")),
    };
    let fits = (1..=MAX_EVENT_CHARS).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if !fits {
        return Err(bad(
            "event",
            format!("event.name must be 1 to {MAX_EVENT_CHARS} letters, digits, _, - or ."),
        ));
    }
    let parameters = match event.get("parameters") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(parameters)) => parameters.clone(),
        Some(_) => return Err(bad("event", "event.parameters must be an object")),
    };
    Ok(Content::Event {
        name: name.clone(),
        parameters,
    })
}

fn text(fields: &Map<String, Value>, media: Option<&Value>) -> Result<Content, BadRequest> {
    let text = string(fields, "text")?.unwrap_or_default().to_owned();
    if text.chars().count() > MAX_TEXT_CHARS {
        return Err(bad(
            "text",
            format!("text must be at most {MAX_TEXT_CHARS} characters (sent as up to 10 messages)"),
        ));
    }
    let media = match media {
        None => Vec::new(),
        Some(Value::Array(urls)) => urls
            .iter()
            .map(|url| match url {
                Value::String(url) if url.starts_with("https://") || url.starts_with("http://") => {
                    Ok(url.clone())
                }
                _ => Err(bad("media", "media must be http(s) URLs")),
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err(bad("media", "media must be an array of http(s) URLs")),
    };
    if media.len() > MAX_MEDIA {
        return Err(bad(
            "media",
            format!("media must be at most {MAX_MEDIA} URLs"),
        ));
    }
    if text.trim().is_empty() && media.is_empty() {
        return Err(bad(
            "text",
            "nothing to send: text is empty and there is no media",
        ));
    }
    Ok(Content::Text { text, media })
}

fn template(value: Option<&Value>) -> Result<Content, BadRequest> {
    let Some(Value::Object(template)) = value else {
        return Err(bad(
            "template",
            "template must be an object: {\"content_sid\": \"HX...\", \"variables\": {\"1\": \"...\"}}",
        ));
    };
    if let Some(unknown) = template
        .keys()
        .find(|k| !matches!(k.as_str(), "content_sid" | "variables"))
    {
        return Err(bad(
            "template",
            format!(
                "template has an unknown field {unknown:?}: it takes content_sid and variables"
            ),
        ));
    }
    let content_sid = match template.get("content_sid") {
        Some(Value::String(sid)) if is_sid(sid, "HX") => sid.clone(),
        _ => {
            return Err(bad(
                "template",
                "template.content_sid must be HX followed by 32 hexadecimal digits",
            ))
        }
    };
    let variables = match template.get("variables") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(variables)) if variables.values().all(Value::is_string) => {
            variables.clone()
        }
        Some(_) => {
            return Err(bad(
                "template",
                "template.variables must be an object of strings: {\"1\": \"...\"}",
            ))
        }
    };
    Ok(Content::Template {
        content_sid,
        variables,
    })
}

fn idempotency_key(
    fields: &Map<String, Value>,
    header: Option<&str>,
) -> Result<Option<IdempotencyKey>, BadRequest> {
    let field = string(fields, "idempotency_key")?;
    let value = match (field, header) {
        (Some(field), Some(header)) if field != header => {
            return Err(bad(
                "idempotency_key",
                "idempotency_key and the Idempotency-Key header differ",
            ))
        }
        (Some(value), _) | (None, Some(value)) => value,
        (None, None) => return Ok(None),
    };
    IdempotencyKey::parse(value).map(Some).ok_or_else(|| {
        bad(
            "idempotency_key",
            "idempotency_key must be 1 to 255 visible ASCII characters",
        )
    })
}

/// What was asked, without the key: the same request retried hashes the same.
fn fingerprint(fields: &Map<String, Value>) -> String {
    let asked: Map<String, Value> = fields
        .iter()
        .filter(|(name, _)| name.as_str() != "idempotency_key")
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    // serde_json's map is ordered by key: the same fields give the same text.
    crate::handoff::idempotency::digest_of(&[Value::Object(asked).to_string().as_str()])
}

fn is_sid(value: &str, prefix: &str) -> bool {
    value.len() == 34
        && value.starts_with(prefix)
        && value[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<OutboundRequest, BadRequest> {
        OutboundRequest::parse(json.as_bytes(), None)
    }

    fn field_of(json: &str) -> (Problem, Option<&'static str>) {
        let refused = parse(json).unwrap_err();
        (refused.problem, refused.field)
    }

    const HX: &str = "HX0123456789abcdef0123456789abcdef";

    #[test]
    fn numbers_are_e164_on_sms_or_whatsapp() {
        assert_eq!(
            Address::parse("+15551234567").unwrap().twilio(),
            "+15551234567"
        );
        let whatsapp = Address::parse("whatsapp:+447700900123").unwrap();
        assert_eq!(whatsapp.channel, Channel::WhatsApp);
        assert_eq!(whatsapp.twilio(), "whatsapp:+447700900123");
        for bad in [
            "15551234567",
            "+0555123456",
            "+1555",
            "+1555123456789012",
            "+1 555 123",
            "sms:+15551234567",
            "",
        ] {
            assert!(Address::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn each_kind_reads() {
        let event = parse(r#"{"to": "+15551234567", "event": {"name": "reminder", "parameters": {"day": "Monday"}}}"#).unwrap();
        assert_eq!(event.content.kind(), "event");
        assert_eq!(event.sender, SenderChoice::Default);
        let text = parse(r#"{"to": "whatsapp:+15551234567", "from": "whatsapp:+15557770000", "text": "hi", "media": ["https://x/1.jpg"]}"#).unwrap();
        assert_eq!(
            text.content.message().unwrap().media,
            vec!["https://x/1.jpg"]
        );
        let template = parse(&format!(r#"{{"to": "+15551234567", "messaging_service_sid": "MG0123456789abcdef0123456789abcdef", "template": {{"content_sid": "{HX}", "variables": {{"1": "Ada"}}}}}}"#)).unwrap();
        let sent = template.content.message().unwrap().template.unwrap();
        assert_eq!(sent.sid, HX);
        assert_eq!(sent.variables.as_deref(), Some(r#"{"1":"Ada"}"#));
    }

    #[test]
    fn a_refusal_names_its_field() {
        assert_eq!(field_of("not json").0, Problem::BadJson);
        assert_eq!(field_of("[1]").0, Problem::BadJson);
        assert_eq!(
            field_of(r#"{"text": "hi"}"#),
            (Problem::BadField, Some("to"))
        );
        assert_eq!(
            field_of(r#"{"to": "5551234567", "text": "hi"}"#),
            (Problem::NotE164, Some("to"))
        );
        assert_eq!(
            field_of(r#"{"to": "+15551234567", "from": "+1", "text": "hi"}"#),
            (Problem::NotE164, Some("from"))
        );
        assert_eq!(
            field_of(r#"{"to": "+15551234567", "from": "whatsapp:+15557770000", "text": "hi"}"#),
            (Problem::BadField, Some("from"))
        );
        assert_eq!(
            field_of(r#"{"to": "+15551234567", "messaging_service_sid": "MG1", "text": "hi"}"#),
            (Problem::BadField, Some("messaging_service_sid"))
        );
        assert_eq!(
            field_of(r#"{"to": "+15551234567"}"#),
            (Problem::BadField, Some("event"))
        );
        assert_eq!(
            field_of(r#"{"to": "+15551234567", "text": "hi", "event": {"name": "x"}}"#).1,
            Some("text")
        );
        assert_eq!(
            field_of(r#"{"to": "+15551234567", "event": {"name": "no spaces"}}"#),
            (Problem::BadField, Some("event"))
        );
        assert_eq!(
            field_of(r#"{"to": "+15551234567", "event": {"name": "x", "parameters": [1]}}"#).1,
            Some("event")
        );
        assert_eq!(
            field_of(r#"{"to": "+15551234567", "text": ""}"#).1,
            Some("text")
        );
        assert_eq!(
            field_of(r#"{"to": "+15551234567", "text": "hi", "media": ["ftp://x"]}"#).1,
            Some("media")
        );
        assert_eq!(
            field_of(r#"{"to": "+15551234567", "template": {"content_sid": "HX1"}}"#).1,
            Some("template")
        );
        assert_eq!(field_of(&format!(r#"{{"to": "+15551234567", "template": {{"content_sid": "{HX}", "variables": {{"1": 2}}}}}}"#)).1, Some("template"));
        assert_eq!(
            field_of(r#"{"to": "+15551234567", "text": "hi", "idempotency_key": ""}"#).1,
            Some("idempotency_key")
        );
        assert_eq!(
            field_of(r#"{"to": "+15551234567", "text": "hi", "colour": "blue"}"#),
            (Problem::BadField, None)
        );
    }

    #[test]
    fn the_key_comes_from_the_field_or_the_header() {
        let body = br#"{"to": "+15551234567", "text": "hi"}"#;
        assert!(OutboundRequest::parse(body, Some("k1"))
            .unwrap()
            .idempotency_key
            .is_some());
        let both = br#"{"to": "+15551234567", "text": "hi", "idempotency_key": "k2"}"#;
        assert!(OutboundRequest::parse(both, Some("k1")).is_err());
        let one = OutboundRequest::parse(both, None).unwrap();
        let other = OutboundRequest::parse(body, Some("k2")).unwrap();
        assert_eq!(
            one.fingerprint, other.fingerprint,
            "the key is not part of what was asked"
        );
    }
}
