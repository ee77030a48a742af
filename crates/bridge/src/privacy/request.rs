//! The body of `POST /privacy/erase`, read into typed values: `{"person": "+15551230001"}`
//! or `whatsapp:+…`, and an optional `"sender"` (one of our numbers, a WhatsApp sender,
//! or a Messaging Service SID) that limits the erasure to it.

use crate::outbound::request::{Address, Channel};
use serde_json::Value;

/// Why a body is not an erasure request. Its messages never repeat the values given
/// (a number is never logged nor echoed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadRequest {
    #[error("the body must be a JSON object: {{\"person\": \"+15551230001\"}}")]
    NotJson,
    #[error("the body has a field this endpoint does not take: {0}")]
    UnknownField(String),
    #[error("person is required: an E.164 number, +15551230001, or whatsapp:+15551230001")]
    NoPerson,
    #[error("person must be an E.164 number, +15551230001, or whatsapp:+15551230001")]
    BadPerson,
    #[error("sender must be one of our numbers (+E.164 or whatsapp:+E.164) or a Messaging Service SID (MG and 32 hex digits)")]
    BadSender,
}

impl BadRequest {
    /// The `error` of the JSON answer: a fixed code.
    pub fn code(&self) -> &'static str {
        match self {
            BadRequest::NotJson => "bad_json",
            BadRequest::UnknownField(_) => "unknown_field",
            BadRequest::NoPerson | BadRequest::BadPerson => "invalid_person",
            BadRequest::BadSender => "invalid_sender",
        }
    }
}

/// Whom to erase, and from which sender (all of them when `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EraseRequest {
    pub person: Address,
    pub sender: Option<Sender>,
}

/// A sender of ours: a number (SMS and its WhatsApp sender alike when written
/// without `whatsapp:`), or a Messaging Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sender {
    Number(Address),
    Service(String),
}

impl EraseRequest {
    pub fn parse(body: &[u8]) -> Result<Self, BadRequest> {
        let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(body) else {
            return Err(BadRequest::NotJson);
        };
        if let Some(unknown) = fields
            .keys()
            .find(|k| !matches!(k.as_str(), "person" | "sender"))
        {
            return Err(BadRequest::UnknownField(unknown.clone()));
        }
        let person = match fields.get("person") {
            None | Some(Value::Null) => return Err(BadRequest::NoPerson),
            Some(Value::String(person)) => {
                Address::parse(person.trim()).ok_or(BadRequest::BadPerson)?
            }
            Some(_) => return Err(BadRequest::BadPerson),
        };
        let sender = match fields.get("sender") {
            None | Some(Value::Null) => None,
            Some(Value::String(sender)) => Some(Sender::parse(sender.trim())?),
            Some(_) => return Err(BadRequest::BadSender),
        };
        Ok(Self { person, sender })
    }

    /// The person as Twilio writes them: a number written without `whatsapp:` is the
    /// same person on SMS and on WhatsApp, and both are erased.
    pub fn person_addresses(&self) -> Vec<String> {
        addresses(&self.person)
    }
}

impl Sender {
    pub fn parse(value: &str) -> Result<Self, BadRequest> {
        if let Some(address) = Address::parse(value) {
            return Ok(Sender::Number(address));
        }
        let service = value
            .strip_prefix("MG")
            .is_some_and(|hex| hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()));
        match service {
            true => Ok(Sender::Service(value.to_owned())),
            false => Err(BadRequest::BadSender),
        }
    }

    /// The sender as Twilio writes it in `To` (or `MessagingServiceSid`).
    pub fn addresses(&self) -> Vec<String> {
        match self {
            Sender::Number(address) => addresses(address),
            Sender::Service(sid) => vec![sid.clone()],
        }
    }
}

fn addresses(address: &Address) -> Vec<String> {
    let twilio = address.twilio();
    match address.channel {
        Channel::Sms => vec![format!("whatsapp:{twilio}"), twilio],
        Channel::WhatsApp => vec![twilio],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<EraseRequest, BadRequest> {
        EraseRequest::parse(body.as_bytes())
    }

    #[test]
    fn a_number_is_the_person_on_sms_and_whatsapp() {
        let request = parse(r#"{"person": "+15551230001"}"#).unwrap();
        assert_eq!(request.sender, None);
        assert_eq!(
            request.person_addresses(),
            ["whatsapp:+15551230001", "+15551230001"]
        );
        let whatsapp = parse(r#"{"person": " whatsapp:+15551230001 "}"#).unwrap();
        assert_eq!(whatsapp.person_addresses(), ["whatsapp:+15551230001"]);
    }

    #[test]
    fn a_sender_limits_it_to_one_number_or_service() {
        let request = parse(r#"{"person": "+15551230001", "sender": "+15557770000"}"#).unwrap();
        assert_eq!(
            request.sender.map(|s| s.addresses()),
            Some(vec!["whatsapp:+15557770000".into(), "+15557770000".into()])
        );
        let service = "MG0123456789abcdef0123456789abcdef";
        let request = parse(&format!(
            r#"{{"person": "+15551230001", "sender": "{service}"}}"#
        ))
        .unwrap();
        assert_eq!(request.sender, Some(Sender::Service(service.into())));
        let null = parse(r#"{"person": "+15551230001", "sender": null}"#).unwrap();
        assert_eq!(null.sender, None);
    }

    #[test]
    fn anything_else_is_refused_without_echoing_it() {
        for (body, refusal) in [
            ("", BadRequest::NotJson),
            ("[]", BadRequest::NotJson),
            (r#""+15551230001""#, BadRequest::NotJson),
            ("{}", BadRequest::NoPerson),
            (r#"{"person": null}"#, BadRequest::NoPerson),
            (r#"{"person": 15551230001}"#, BadRequest::BadPerson),
            (r#"{"person": "15551230001"}"#, BadRequest::BadPerson),
            (r#"{"person": "+0551230001"}"#, BadRequest::BadPerson),
            (r#"{"person": "+1555"}"#, BadRequest::BadPerson),
            (r#"{"person": "sms:+15551230001"}"#, BadRequest::BadPerson),
            (
                r#"{"person": "+15551230001", "sender": "MG123"}"#,
                BadRequest::BadSender,
            ),
            (
                r#"{"person": "+15551230001", "sender": 5}"#,
                BadRequest::BadSender,
            ),
            (
                r#"{"person": "+15551230001", "phone": "+15551230002"}"#,
                BadRequest::UnknownField("phone".into()),
            ),
        ] {
            let refused = parse(body).unwrap_err();
            assert_eq!(refused, refusal, "{body}");
            assert!(!refused.to_string().contains("5551230002"), "{refused}");
        }
    }
}
