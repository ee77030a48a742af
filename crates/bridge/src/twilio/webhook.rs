//! Twilio's incoming-message webhook: the form it posts, and the message we read from it.
//!
//! A webhook is read in two steps on purpose: [`FormParams::parse`] only decodes the
//! body, so the signature can be checked over exactly what Twilio sent; only then does
//! [`IncomingMessage::from_verified`] give the fields meaning.

use thiserror::Error;

/// The decoded `application/x-www-form-urlencoded` body, in the order it came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormParams(Vec<(String, String)>);

impl FormParams {
    pub fn parse(body: &[u8]) -> Self {
        Self(form_urlencoded::parse(body).into_owned().collect())
    }

    pub fn from_pairs(pairs: Vec<(String, String)>) -> Self {
        Self(pairs)
    }

    /// A form of `pairs` as the unit tests write them.
    #[cfg(test)]
    pub(crate) fn of(pairs: &[(&str, &str)]) -> Self {
        Self(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    pub fn pairs(&self) -> &[(String, String)] {
        &self.0
    }

    /// The first value of `name`, if any.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn encode(&self) -> String {
        form_urlencoded::Serializer::new(String::new())
            .extend_pairs(self.0.iter())
            .finish()
    }
}

/// Why a signed webhook still cannot be handled.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum WebhookError {
    #[error("missing required parameter {0}")]
    Missing(&'static str),
    #[error("the webhook is for another Twilio account")]
    WrongAccount,
    /// Twilio's SIDs are two capital letters and 32 lowercase hex digits. Checking the
    /// shape closes a gap the signature leaves: it joins names and values with nothing
    /// between them, so a form whose `MessageSid` swallowed the next parameter still
    /// verifies, and would read as a new message.
    #[error("{0} is not a Twilio SID (two capital letters and 32 lowercase hex digits)")]
    MalformedSid(String),
}

/// Refuses a form in which a SID parameter (`MessageSid`, `SmsSid`, `SmsMessageSid`,
/// `AccountSid`, `MessagingServiceSid`, any `…Sid`) is present, not empty, and not
/// shaped like one of Twilio's SIDs.
pub fn check_sid_shapes(params: &FormParams) -> Result<(), WebhookError> {
    for (name, value) in params.pairs() {
        if is_sid_parameter(name) && !value.is_empty() && !is_sid(value) {
            return Err(WebhookError::MalformedSid(name.clone()));
        }
    }
    Ok(())
}

/// A parameter named like Twilio names its SIDs: letters ending in `Sid`. Only such names
/// are echoed in the refusal, so it never repeats arbitrary text from the request.
fn is_sid_parameter(name: &str) -> bool {
    name.len() <= 64
        && name.len() > 3
        && name.ends_with("Sid")
        && name.bytes().all(|b| b.is_ascii_alphabetic())
}

/// Two ASCII capital letters and 32 lowercase hex digits: the 34 characters of every SID
/// Twilio mints (<https://www.twilio.com/docs/glossary/what-is-a-sid>).
pub fn is_sid(value: &str) -> bool {
    let bytes = value.as_bytes();
    bytes.len() == 34
        && bytes[..2].iter().all(u8::is_ascii_uppercase)
        && bytes[2..]
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
}

/// One piece of media attached to an MMS or WhatsApp message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media {
    pub url: String,
    pub content_type: Option<String>,
}

/// A message a person sent to one of the account's numbers, read from a webhook whose
/// signature has been checked.
#[derive(Debug, Clone)]
pub struct IncomingMessage {
    /// Twilio's id of the message; the same on a re-delivery.
    pub message_sid: Option<String>,
    pub account_sid: String,
    /// The sender: `+15551234567`, or `whatsapp:+15551234567` on WhatsApp.
    pub from: String,
    /// The number (or WhatsApp sender) the person wrote to.
    pub to: String,
    pub body: String,
    pub media: Vec<Media>,
    /// A STOP, START or HELP keyword that Twilio's opt-out handling recognised.
    pub opt_out: Option<OptOut>,
    /// A WhatsApp button tapped or list item picked.
    pub tap: Option<Tap>,
    /// A location shared on WhatsApp.
    pub location: Option<Location>,
    /// Every parameter of the webhook, handed to the agent as the query payload.
    pub params: FormParams,
}

/// A WhatsApp reply button tapped (`ButtonText`, `ButtonPayload`) or list item picked
/// (`ListTitle`, `ListId`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tap {
    /// What the person saw.
    pub title: String,
    /// The button's or item's id: what the sender of the menu set, as the person's
    /// client sends it back. Anyone can send any id: it is a choice only if the
    /// conversation's pending menu offered it (`conversation::query`).
    pub id: Option<String>,
}

impl Tap {
    fn of(params: &FormParams) -> Option<Self> {
        let present = |name| {
            params
                .get(name)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let (title, id) = match present("ListId").or_else(|| present("ListTitle")) {
            Some(_) => (present("ListTitle"), present("ListId")),
            None => (present("ButtonText"), present("ButtonPayload")),
        };
        match (title, id) {
            (None, None) => None,
            (title, id) => Some(Self {
                title: title.or_else(|| id.clone()).unwrap_or_default(),
                id,
            }),
        }
    }
}

/// A location shared on WhatsApp: `Latitude`, `Longitude`, and for a place, its
/// `Address` and `Label`.
#[derive(Debug, Clone, PartialEq)]
pub struct Location {
    pub latitude: f64,
    pub longitude: f64,
    pub address: Option<String>,
    pub label: Option<String>,
}

impl Location {
    fn of(params: &FormParams) -> Option<Self> {
        let number = |name| {
            params
                .get(name)?
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|n| n.is_finite())
        };
        let text = |name| {
            params
                .get(name)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let latitude = number("Latitude").filter(|l| (-90.0..=90.0).contains(l))?;
        let longitude = number("Longitude").filter(|l| (-180.0..=180.0).contains(l))?;
        Some(Self {
            latitude,
            longitude,
            address: text("Address"),
            label: text("Label"),
        })
    }
}

/// The opt-out keywords Twilio's Advanced Opt-Out recognises (`OptOutType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptOut {
    /// STOP and its synonyms: Twilio blocks further messages to the sender.
    Stop,
    /// START: the sender opts back in.
    Start,
    /// HELP: Twilio answers with the help text.
    Help,
}

impl OptOut {
    fn parse(value: &str) -> Option<Self> {
        match value.trim().to_ascii_uppercase().as_str() {
            "STOP" => Some(OptOut::Stop),
            "START" => Some(OptOut::Start),
            "HELP" => Some(OptOut::Help),
            _ => None,
        }
    }

    /// The event the agent gets with `OPT_OUT_TO_AGENT=true`.
    pub fn event(self) -> &'static str {
        match self {
            OptOut::Stop => "twilio_opt_out",
            OptOut::Start => "twilio_opt_in",
            OptOut::Help => "twilio_help",
        }
    }
}

impl IncomingMessage {
    /// Reads the message from a verified webhook of the account `expected_account_sid`.
    pub fn from_verified(
        params: FormParams,
        expected_account_sid: &str,
    ) -> Result<Self, WebhookError> {
        let required = |name: &'static str| {
            params
                .get(name)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
                .ok_or(WebhookError::Missing(name))
        };
        let account_sid = required("AccountSid")?;
        let from = required("From")?;
        if account_sid != expected_account_sid {
            return Err(WebhookError::WrongAccount);
        }
        let media = media_of(&params);
        Ok(Self {
            message_sid: params
                .get("MessageSid")
                .or_else(|| params.get("SmsMessageSid"))
                .filter(|v| !v.is_empty())
                .map(str::to_owned),
            account_sid,
            from,
            to: params.get("To").unwrap_or_default().to_owned(),
            body: params.get("Body").unwrap_or_default().to_owned(),
            media,
            opt_out: params.get("OptOutType").and_then(OptOut::parse),
            tap: Tap::of(&params),
            location: Location::of(&params),
            params,
        })
    }

    /// `whatsapp` for WhatsApp, `sms` otherwise: safe to log, unlike the numbers.
    pub fn channel(&self) -> &'static str {
        if self.from.starts_with("whatsapp:") {
            "whatsapp"
        } else {
            "sms"
        }
    }
}

/// `MediaUrl0..N` with their `MediaContentType0..N`. `NumMedia` says how many, but the
/// URLs are what matter, so a missing or wrong count does not hide media.
fn media_of(params: &FormParams) -> Vec<Media> {
    let announced: usize = params
        .get("NumMedia")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    (0..announced.clamp(10, 100))
        .filter_map(|i| {
            let url = params
                .get(&format!("MediaUrl{i}"))
                .filter(|u| !u.is_empty())?;
            Some(Media {
                url: url.to_owned(),
                content_type: params
                    .get(&format!("MediaContentType{i}"))
                    .map(str::to_owned),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plus_and_percent_escapes() {
        let params = FormParams::parse(b"From=%2B15551234567&Body=hello+world+%26+more");
        assert_eq!(params.get("From"), Some("+15551234567"));
        assert_eq!(params.get("Body"), Some("hello world & more"));
        assert_eq!(FormParams::parse(params.encode().as_bytes()), params);
    }

    #[test]
    fn reads_a_whatsapp_image() {
        let message = IncomingMessage::from_verified(
            FormParams::of(&[
                ("AccountSid", "AC1"),
                ("From", "whatsapp:+15551234567"),
                ("To", "whatsapp:+14155238886"),
                ("MessageSid", "MM1"),
                ("NumMedia", "1"),
                ("MediaUrl0", "https://api.twilio.com/media/1"),
                ("MediaContentType0", "image/jpeg"),
                ("Body", ""),
            ]),
            "AC1",
        )
        .unwrap();
        assert_eq!(message.channel(), "whatsapp");
        assert_eq!(message.message_sid.as_deref(), Some("MM1"));
        assert_eq!(message.body, "");
        assert_eq!(
            message.media,
            vec![Media {
                url: "https://api.twilio.com/media/1".into(),
                content_type: Some("image/jpeg".into())
            }]
        );
    }

    #[test]
    fn reads_taps_and_locations() {
        let read = |pairs: &[(&str, &str)]| {
            let mut all = vec![("AccountSid", "AC1"), ("From", "whatsapp:+1")];
            all.extend_from_slice(pairs);
            IncomingMessage::from_verified(FormParams::of(&all), "AC1").unwrap()
        };
        let button = read(&[("ButtonText", "Small"), ("ButtonPayload", "small")]);
        assert_eq!(
            button.tap,
            Some(Tap {
                title: "Small".into(),
                id: Some("small".into())
            })
        );
        let item = read(&[("ListId", "event:pepperoni"), ("ListTitle", "Pepperoni")]);
        assert_eq!(item.tap.map(|t| t.id), Some(Some("event:pepperoni".into())));
        let place = read(&[
            ("Latitude", "52.37"),
            ("Longitude", "4.89"),
            ("Address", "Dam 1"),
            ("Label", "Shop"),
        ]);
        assert_eq!(
            place.location,
            Some(Location {
                latitude: 52.37,
                longitude: 4.89,
                address: Some("Dam 1".into()),
                label: Some("Shop".into())
            })
        );
        assert_eq!(
            read(&[("Latitude", "95"), ("Longitude", "4")]).location,
            None
        );
        assert_eq!(read(&[("Body", "hi")]).tap, None);
    }

    #[test]
    fn sid_parameters_must_have_twilio_s_shape() {
        let account = "AC0123456789abcdef0123456789abcdef";
        let message = "SM0123456789abcdef0123456789abcdef";
        let service = "MG0123456789abcdef0123456789abcdef";
        let good = FormParams::of(&[
            ("AccountSid", account),
            ("MessageSid", message),
            ("SmsSid", message),
            ("MessagingServiceSid", service),
            ("OriginalRepliedMessageSid", ""),
            ("Body", "not a SID"),
        ]);
        assert_eq!(check_sid_shapes(&good), Ok(()));
        // The boundary moved: `MessageSid` swallowed `MessagingServiceSid`.
        let swallowed = format!("{message}MessagingServiceSid{service}");
        for (name, value) in [
            ("MessageSid", swallowed.as_str()),
            ("SmsSid", "SM1"),
            ("AccountSid", "AC0123456789ABCDEF0123456789ABCDEF"),
            ("MessagingServiceSid", "mg0123456789abcdef0123456789abcdef"),
            ("ChannelInstallSid", "XE0123456789abcdef0123456789abcdeg"),
        ] {
            assert_eq!(
                check_sid_shapes(&FormParams::of(&[("AccountSid", account), (name, value)])),
                Err(WebhookError::MalformedSid(name.into())),
                "{name}={value}"
            );
        }
    }

    #[test]
    fn requires_sender_and_the_right_account() {
        let missing_from =
            IncomingMessage::from_verified(FormParams::of(&[("AccountSid", "AC1")]), "AC1");
        assert_eq!(missing_from.unwrap_err(), WebhookError::Missing("From"));
        let missing_account =
            IncomingMessage::from_verified(FormParams::of(&[("From", "+1")]), "AC1");
        assert_eq!(
            missing_account.unwrap_err(),
            WebhookError::Missing("AccountSid")
        );
        let other = IncomingMessage::from_verified(
            FormParams::of(&[("AccountSid", "AC2"), ("From", "+1")]),
            "AC1",
        );
        assert_eq!(other.unwrap_err(), WebhookError::WrongAccount);
    }
}
