//! A terminal phone: sends messages to a bridge as Twilio would, and shows the reply as
//! the phone would.
//!
//! Each message becomes an incoming-message webhook with the parameters Twilio sends,
//! signed with the account's auth token exactly as Twilio signs it, so it works against
//! any bridge, local or deployed, that knows that token.

use anyhow::{bail, Context};
use bridge::reply::ReplyMessage;
use bridge::twilio::signature;
use bridge::twilio::webhook::FormParams;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

mod inbox;
mod line;
mod menu;
mod twiml;

pub use inbox::{ApiInbox, Arrival};
pub use line::{parse_line, Line, USAGE};
pub use menu::{MenuItem, PhoneMenu};
pub use twiml::parse_twiml;

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

/// `number` as a WhatsApp address.
pub fn whatsapp(number: &str) -> String {
    match number.strip_prefix("whatsapp:") {
        Some(_) => number.to_owned(),
        None => format!("whatsapp:{number}"),
    }
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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outgoing {
    pub body: String,
    pub media: Vec<String>,
    /// Re-use this MessageSid, as Twilio does when it re-delivers.
    pub message_sid: Option<String>,
    /// Parameters Twilio adds in some cases (`OptOutType`, `FromCountry`,
    /// `MessagingServiceSid`, …), each replacing one of the phone's own.
    pub params: Vec<(String, String)>,
}

impl Outgoing {
    /// A shared place, as WhatsApp sends it: `MessageType=location` with its
    /// coordinates and, when it has one, its label.
    pub fn location(latitude: f64, longitude: f64, label: &str) -> Self {
        let mut params = vec![
            ("MessageType".to_owned(), "location".to_owned()),
            ("Latitude".to_owned(), latitude.to_string()),
            ("Longitude".to_owned(), longitude.to_string()),
        ];
        if !label.is_empty() {
            params.push(("Label".to_owned(), label.to_owned()));
        }
        Self {
            params,
            ..Self::default()
        }
    }
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
        for (name, value) in &message.params {
            params.retain(|(existing, _)| existing != name);
            params.push((name.clone(), value.clone()));
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

/// A fresh `SM…` id, unique enough for a terminal phone.
pub fn new_message_sid() -> String {
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
        Some("svg") => "image/svg+xml",
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

/// A phone in use: what it sends, and what it shows of the replies, from the webhook's
/// answer or, when that is empty, through the Messages API.
pub struct Session {
    phone: Phone,
    inbox: Option<ApiInbox>,
    /// The buttons or list last shown, to `/tap`.
    menu: Option<PhoneMenu>,
    /// Whether the messages sent before the phone started were put aside.
    started: bool,
}

/// How often a phone waiting for its person looks for messages the business sent.
const UNASKED_EVERY: Duration = Duration::from_secs(1);

impl Session {
    pub fn new(phone: Phone, inbox: Option<ApiInbox>) -> Self {
        Self {
            phone,
            inbox,
            menu: None,
            started: false,
        }
    }

    /// The messages that came through the Messages API since the last look, unasked
    /// (a reminder, a notification the business started), as the phone shows them;
    /// `None` when there are none. The first look puts aside what came before the
    /// phone started.
    pub async fn unasked(&mut self) -> anyhow::Result<Option<String>> {
        let Some(inbox) = &mut self.inbox else {
            return Ok(None);
        };
        if !self.started {
            inbox.mark_seen().await?;
            self.started = true;
            return Ok(None);
        }
        let mut replies = Vec::new();
        let mut menu = None;
        for arrival in inbox.arrivals().await? {
            // The last message with buttons or a list is the one to tap.
            menu = arrival.menu.or(menu);
            replies.push(arrival.reply);
        }
        if replies.is_empty() {
            return Ok(None);
        }
        Ok(Some(self.shown_from_api(
            replies,
            menu,
            "(from the business, unasked, through the Messages API)",
        )))
    }

    /// How `replies` that came through the API look, their menu (now the one to tap)
    /// below them, and `note`.
    fn shown_from_api(
        &mut self,
        replies: Vec<ReplyMessage>,
        menu: Option<PhoneMenu>,
        note: &str,
    ) -> String {
        let mut shown = show(&PhoneReply::Messages(replies));
        if let Some(menu) = &menu {
            shown.push('\n');
            shown.push_str(&menu.show());
            shown.push_str("\n  (/tap N to tap one)");
        }
        self.menu = menu;
        format!("{shown}\n  {note}")
    }

    /// The webhook of a tap on the `number`th button or item last shown; or why not.
    pub fn tap(&self, number: usize) -> Result<Outgoing, String> {
        let Some(menu) = &self.menu else {
            return Err("! no buttons or list to tap: they come with a WhatsApp reply (chat --whatsapp, with the Messages API stand-in)".to_owned());
        };
        menu.tap(number)
            .ok_or_else(|| format!("! there is no choice {number}: 1 to {}", menu.items.len()))
    }

    /// Sends `message` and returns what the phone shows of the replies.
    pub async fn exchange(&mut self, message: &Outgoing) -> anyhow::Result<String> {
        // What the business sent unasked since the last look comes first on screen.
        // A listing that fails now will fail below too, and say so there.
        let earlier = self.unasked().await.ok().flatten();
        if let Some(inbox) = &self.inbox {
            // Twilio knows of each message it carries; the local stand-in is told.
            // Anywhere else there is nobody to tell, which is no failure.
            let _ = inbox.report(&self.phone, message).await;
        }
        let shown = self.exchange_only(message).await?;
        Ok(match earlier {
            Some(earlier) => format!("{earlier}\n{shown}"),
            None => shown,
        })
    }

    /// Sends `message` and returns what the phone shows of its replies alone.
    async fn exchange_only(&mut self, message: &Outgoing) -> anyhow::Result<String> {
        let reply = self.phone.send(message).await?;
        match (&reply, &mut self.inbox) {
            (PhoneReply::Messages(messages), Some(inbox)) if messages.is_empty() => {
                match inbox.new_replies().await {
                    Ok((replies, _)) if replies.is_empty() => {
                        Ok("  (no reply, in the webhook's answer or through the Messages API)"
                            .to_owned())
                    }
                    Ok((replies, menu)) => {
                        Ok(self.shown_from_api(replies, menu, "(through the Messages API)"))
                    }
                    Err(error) => Ok(format!(
                        "  (no reply in the webhook's answer; cannot read the Messages API: {error:#})"
                    )),
                }
            }
            _ if matches!(&reply, PhoneReply::Messages(m) if !m.is_empty()) => {
                // A reply in the webhook's answer: no buttons on screen any more.
                self.menu = None;
                Ok(show(&reply))
            }
            (PhoneReply::Messages(messages), None) if messages.is_empty() => Ok(
                "  (no reply in the webhook's answer: with REPLY_MODE=api or auto it follows through the Messages API)"
                    .to_owned(),
            ),
            _ => Ok(show(&reply)),
        }
    }

    /// Sends `message` and prints what comes back.
    pub async fn send(&mut self, message: &Outgoing) -> anyhow::Result<()> {
        let shown = self.exchange(message).await?;
        println!("{shown}");
        Ok(())
    }

    /// Runs the phone over stdin/stdout until end of input or `/quit`. `prompt`: a
    /// person types at a terminal; otherwise each line read is echoed, so that the
    /// output reads as a conversation.
    pub async fn run(&mut self, prompt: bool) -> anyhow::Result<()> {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        let mut stdout = tokio::io::stdout();
        if prompt {
            let hello = format!(
                "Texting {} as {}. {USAGE}\n",
                self.phone.to, self.phone.from
            );
            stdout.write_all(hello.as_bytes()).await?;
        }
        // What came before the phone started is not news.
        let _ = self.unasked().await;
        let mut look = tokio::time::interval(UNASKED_EVERY);
        look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if prompt {
                stdout.write_all(b"> ").await?;
                stdout.flush().await?;
            }
            // While the person has not typed, what the business sends shows as it
            // arrives.
            let line = loop {
                tokio::select! {
                    line = lines.next_line() => break line?,
                    _ = look.tick() => {
                        if let Ok(Some(shown)) = self.unasked().await {
                            let redraw = if prompt { "\r" } else { "" };
                            stdout.write_all(format!("{redraw}{shown}\n").as_bytes()).await?;
                            if prompt {
                                stdout.write_all(b"> ").await?;
                            }
                            stdout.flush().await?;
                        }
                    }
                }
            };
            let Some(line) = line else {
                break;
            };
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            if !prompt {
                stdout.write_all(format!("> {line}\n").as_bytes()).await?;
            }
            let shown = match parse_line(line) {
                Line::Quit => break,
                Line::Help => USAGE.to_owned(),
                Line::Unknown(command) => {
                    format!("! {command} is not a command of the phone, and was not sent. {USAGE} (//text sends /text.)")
                }
                Line::Send(message) => self.exchange(&message).await?,
                Line::Tap(number) => match self.tap(number) {
                    Ok(message) => self.exchange(&message).await?,
                    Err(why) => why,
                },
            };
            stdout.write_all(format!("{shown}\n").as_bytes()).await?;
            stdout.flush().await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            params: vec![("FromCountry".into(), "FR".into())],
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
        assert_eq!(params.get("FromCountry"), Some("FR"));
    }
}
