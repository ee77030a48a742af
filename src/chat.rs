//! A terminal phone: sends messages to a bridge as Twilio would, and shows the reply as
//! the phone would.
//!
//! Each message becomes an incoming-message webhook with the parameters Twilio sends,
//! signed with the account's auth token exactly as Twilio signs it, so it works against
//! any bridge, local or deployed, that knows that token.

use crate::reply::ReplyMessage;
use crate::twilio::signature;
use crate::twilio::webhook::FormParams;
use anyhow::{bail, Context};
use quick_xml::events::Event;
use quick_xml::Reader;
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Who is texting whom, and with which account's credentials.
#[derive(Debug, Clone)]
pub struct Phone {
    client: reqwest::Client,
    pub url: String,
    pub account_sid: String,
    auth_token: String,
    pub from: String,
    pub to: String,
}

/// What came back for one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PhoneReply {
    /// The bridge answered with TwiML: these messages reach the phone.
    Messages(Vec<ReplyMessage>),
    /// The bridge refused the webhook.
    Refused { status: u16, reason: String },
}

/// One message to send.
#[derive(Debug, Clone, Default)]
pub struct Outgoing {
    pub body: String,
    pub media: Vec<String>,
    /// Re-use this MessageSid, as Twilio does when it re-delivers.
    pub message_sid: Option<String>,
}

impl Phone {
    pub fn new(
        url: &str,
        account_sid: &str,
        auth_token: &str,
        from: &str,
        to: &str,
    ) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .user_agent("TwilioProxy/1.1")
            // Twilio gives up on a webhook after 15 seconds.
            .timeout(Duration::from_secs(15))
            .build()
            .context("cannot create the HTTP client")?;
        Ok(Self {
            client,
            url: url.to_owned(),
            account_sid: account_sid.to_owned(),
            auth_token: auth_token.to_owned(),
            from: from.to_owned(),
            to: to.to_owned(),
        })
    }

    /// The webhook Twilio would post for `message`, and its signature.
    pub fn webhook(&self, message: &Outgoing) -> (FormParams, String) {
        let sid = message.message_sid.clone().unwrap_or_else(new_message_sid);
        let mut params: Vec<(String, String)> = vec![
            ("ToCountry".into(), "US".into()),
            ("SmsMessageSid".into(), sid.clone()),
            ("NumMedia".into(), message.media.len().to_string()),
            ("SmsSid".into(), sid.clone()),
            ("SmsStatus".into(), "received".into()),
            ("Body".into(), message.body.clone()),
            ("To".into(), self.to.clone()),
            ("NumSegments".into(), "1".into()),
            ("MessageSid".into(), sid),
            ("AccountSid".into(), self.account_sid.clone()),
            ("From".into(), self.from.clone()),
            ("ApiVersion".into(), "2010-04-01".into()),
        ];
        if let Some(number) = self.from.strip_prefix("whatsapp:") {
            params.push(("ProfileName".into(), "Terminal Phone".into()));
            params.push(("WaId".into(), number.trim_start_matches('+').into()));
        }
        for (i, url) in message.media.iter().enumerate() {
            params.push((format!("MediaUrl{i}"), url.clone()));
            params.push((format!("MediaContentType{i}"), content_type_of(url).into()));
        }
        let signature = signature::compute(&self.auth_token, &self.url, &params);
        (FormParams::from_pairs(params), signature)
    }

    pub async fn send(&self, message: &Outgoing) -> anyhow::Result<PhoneReply> {
        let (params, signature) = self.webhook(message);
        let response = self
            .client
            .post(&self.url)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-twilio-signature", signature)
            .body(params.encode())
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.url))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .context("cannot read the bridge's answer")?;
        if !status.is_success() {
            return Ok(PhoneReply::Refused {
                status: status.as_u16(),
                reason: text.trim().to_owned(),
            });
        }
        Ok(PhoneReply::Messages(parse_twiml(&text)?))
    }
}

/// The messages a TwiML `<Response>` sends back to the sender.
pub fn parse_twiml(xml: &str) -> anyhow::Result<Vec<ReplyMessage>> {
    let mut reader = Reader::from_str(xml);
    let mut messages = Vec::new();
    let mut current: Option<ReplyMessage> = None;
    let mut element: Option<Element> = None;
    let mut saw_response = false;
    loop {
        match reader
            .read_event()
            .context("the bridge's answer is not well-formed XML")?
        {
            Event::Start(start) | Event::Empty(start) if start.name().as_ref() == b"Response" => {
                saw_response = true
            }
            Event::Start(start) => match start.name().as_ref() {
                b"Message" => current = Some(ReplyMessage::default()),
                b"Body" => element = Some(Element::Body),
                b"Media" => {
                    element = Some(Element::Media);
                    if let Some(message) = current.as_mut() {
                        message.media.push(String::new());
                    }
                }
                _ => {}
            },
            Event::Text(text) => {
                let text = text.xml_content().context("bad text in TwiML")?;
                append(&mut current, element, &text);
            }
            Event::GeneralRef(reference) => {
                let resolved = match reference
                    .resolve_char_ref()
                    .context("bad character reference in TwiML")?
                {
                    Some(c) => c.to_string(),
                    None => match reference.as_ref() {
                        b"amp" => "&".into(),
                        b"lt" => "<".into(),
                        b"gt" => ">".into(),
                        b"quot" => "\"".into(),
                        b"apos" => "'".into(),
                        other => bail!("unknown entity &{};", String::from_utf8_lossy(other)),
                    },
                };
                append(&mut current, element, &resolved);
            }
            Event::CData(data) => append(&mut current, element, &String::from_utf8_lossy(&data)),
            Event::End(end) => match end.name().as_ref() {
                b"Message" => messages.extend(current.take()),
                b"Body" | b"Media" => element = None,
                _ => {}
            },
            Event::Eof => break,
            _ => {}
        }
    }
    if !saw_response {
        bail!("the bridge's answer is not TwiML: no <Response>");
    }
    Ok(messages)
}

#[derive(Debug, Clone, Copy)]
enum Element {
    Body,
    Media,
}

/// Text arrives in pieces (split at entities); each piece joins the body or the URL of
/// the `<Media>` being read.
fn append(current: &mut Option<ReplyMessage>, element: Option<Element>, text: &str) {
    let Some(message) = current.as_mut() else {
        return;
    };
    match (element, message.media.last_mut()) {
        (Some(Element::Media), Some(url)) => url.push_str(text),
        // Plain text directly in <Message> is its body, as Twilio reads it.
        _ => message.body.push_str(text),
    }
}

/// A fresh `SM…` id, unique enough for a terminal phone.
fn new_message_sid() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut hash = Sha256::new();
    hash.update(nanos.to_be_bytes());
    hash.update(std::process::id().to_be_bytes());
    hash.update(COUNTER.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    let digest = hash.finalize();
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("SM{hex}")
}

fn content_type_of(url: &str) -> &'static str {
    let path = url
        .split(['?', '#'])
        .next()
        .unwrap_or(url)
        .to_ascii_lowercase();
    match path.rsplit('.').next() {
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("png") => "image/png",
        Some("gif") => "image/gif",
        Some("mp4") => "video/mp4",
        Some("pdf") => "application/pdf",
        Some("ogg") => "audio/ogg",
        _ => "application/octet-stream",
    }
}

/// How a reply looks on the phone.
pub fn show(reply: &PhoneReply) -> String {
    match reply {
        PhoneReply::Messages(messages) if messages.is_empty() => "  (no reply)".to_owned(),
        PhoneReply::Messages(messages) => messages
            .iter()
            .map(|m| {
                let mut lines: Vec<String> = m.body.lines().map(|l| format!("< {l}")).collect();
                lines.extend(m.media.iter().map(|url| format!("< [media] {url}")));
                lines.join("\n")
            })
            .collect::<Vec<_>>()
            .join("\n"),
        PhoneReply::Refused { status, reason } => format!("! refused with HTTP {status}: {reason}"),
    }
}

/// Reads one line of the terminal phone: `/media URL [text]` sends an MMS, anything
/// else is the text of an SMS.
pub fn parse_line(line: &str) -> Outgoing {
    match line.strip_prefix("/media ") {
        Some(rest) => {
            let (url, body) = rest.trim().split_once(' ').unwrap_or((rest.trim(), ""));
            Outgoing {
                body: body.trim().to_owned(),
                media: vec![url.to_owned()],
                message_sid: None,
            }
        }
        None => Outgoing {
            body: line.to_owned(),
            ..Outgoing::default()
        },
    }
}

/// Runs the phone over stdin/stdout until end of input or `/quit`.
pub async fn run(phone: &Phone, prompt: bool) -> anyhow::Result<()> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut stdout = tokio::io::stdout();
    if prompt {
        stdout
            .write_all(format!("Texting {} as {}. Type a message; /media URL [text] sends a picture; /quit ends.\n", phone.to, phone.from).as_bytes())
            .await?;
    }
    loop {
        if prompt {
            stdout.write_all(b"> ").await?;
            stdout.flush().await?;
        }
        let Some(line) = lines.next_line().await? else {
            break;
        };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if line == "/quit" {
            break;
        }
        let reply = phone.send(&parse_line(line)).await?;
        stdout
            .write_all(format!("{}\n", show(&reply)).as_bytes())
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_twiml_as_the_phone_shows_it() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?><Response><Message><Body>Fish &amp; chips &#x1F35F;</Body><Media>https://x/a.jpg?w=1&amp;h=2</Media></Message><Message>plain</Message></Response>"#;
        assert_eq!(
            parse_twiml(xml).unwrap(),
            vec![
                ReplyMessage {
                    body: "Fish & chips 🍟".into(),
                    media: vec!["https://x/a.jpg?w=1&h=2".into()]
                },
                ReplyMessage::text("plain"),
            ]
        );
        assert_eq!(parse_twiml("<Response/>").unwrap(), vec![]);
        assert!(parse_twiml("<html>oops</html>").is_err());
        assert!(parse_twiml("<Response><Message>").is_ok_and(|m| m.is_empty()));
    }

    #[test]
    fn webhooks_are_signed_like_twilio_signs_them() {
        let phone = Phone::new(
            "https://bot.example/",
            "AC1",
            "token",
            "whatsapp:+15551234567",
            "whatsapp:+14155238886",
        )
        .unwrap();
        let (params, sig) = phone.webhook(&Outgoing {
            body: "hi".into(),
            media: vec!["https://m/p.png".into()],
            message_sid: Some("SM1".into()),
        });
        assert!(signature::is_valid(
            &["token"],
            "https://bot.example/",
            params.pairs(),
            &sig
        ));
        assert_eq!(params.get("MessageSid"), Some("SM1"));
        assert_eq!(params.get("MediaContentType0"), Some("image/png"));
        assert_eq!(params.get("WaId"), Some("15551234567"));
    }

    #[test]
    fn lines_become_sms_or_mms() {
        let mms = parse_line("/media https://m/p.jpg look at this");
        assert_eq!(
            (mms.body.as_str(), mms.media),
            ("look at this", vec!["https://m/p.jpg".to_owned()])
        );
        assert_eq!(parse_line("hello").body, "hello");
        assert_ne!(new_message_sid(), new_message_sid());
    }
}
