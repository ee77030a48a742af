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
use quick_xml::events::Event;
use quick_xml::Reader;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
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

/// `number` as a WhatsApp address.
pub fn whatsapp(number: &str) -> String {
    match number.strip_prefix("whatsapp:") {
        Some(_) => number.to_owned(),
        None => format!("whatsapp:{number}"),
    }
}

/// WhatsApp reply buttons or a list, as the phone shows them and taps them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhoneMenu {
    /// A list opens with this button; `None`: reply buttons.
    pub list_button: Option<String>,
    pub items: Vec<MenuItem>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MenuItem {
    pub title: String,
    pub id: String,
    pub description: Option<String>,
}

impl PhoneMenu {
    /// The buttons or list of a Content API content's `types`, with its body.
    pub fn of_content(types: &serde_json::Value) -> Option<(String, Self)> {
        let text = |v: &serde_json::Value, name: &str| {
            v.get(name).and_then(|t| t.as_str()).map(str::to_owned)
        };
        let items = |content: &serde_json::Value, list: &str, title: &str| -> Vec<MenuItem> {
            content
                .get(list)
                .and_then(|l| l.as_array())
                .map(|entries| {
                    entries
                        .iter()
                        .map(|e| MenuItem {
                            title: text(e, title).unwrap_or_default(),
                            id: text(e, "id").unwrap_or_default(),
                            description: text(e, "description"),
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        if let Some(quick) = types.get("twilio/quick-reply") {
            let menu = Self {
                list_button: None,
                items: items(quick, "actions", "title"),
            };
            return Some((text(quick, "body").unwrap_or_default(), menu));
        }
        let list = types.get("twilio/list-picker")?;
        let menu = Self {
            list_button: Some(text(list, "button").unwrap_or_default()),
            items: items(list, "items", "item"),
        };
        Some((text(list, "body").unwrap_or_default(), menu))
    }

    /// `[ Small ] [ Medium ] [ Large ]`, or a list's button and its numbered items.
    pub fn show(&self) -> String {
        match &self.list_button {
            None => {
                let buttons: Vec<String> = self
                    .items
                    .iter()
                    .map(|i| format!("[ {} ]", i.title))
                    .collect();
                format!("< {}", buttons.join(" "))
            }
            Some(button) => {
                let mut lines = vec![format!("< [ {button} ▾ ]")];
                lines.extend(self.items.iter().enumerate().map(
                    |(n, item)| match &item.description {
                        Some(description) => {
                            format!("<   {}. {} — {description}", n + 1, item.title)
                        }
                        None => format!("<   {}. {}", n + 1, item.title),
                    },
                ));
                lines.join("\n")
            }
        }
    }

    /// The webhook Twilio sends when the `number`th (from 1) button or item is tapped.
    pub fn tap(&self, number: usize) -> Option<Outgoing> {
        let item = self.items.get(number.checked_sub(1)?)?;
        let params = match self.list_button {
            None => vec![
                ("MessageType".to_owned(), "button".to_owned()),
                ("ButtonText".to_owned(), item.title.clone()),
                ("ButtonPayload".to_owned(), item.id.clone()),
            ],
            Some(_) => vec![
                ("MessageType".to_owned(), "interactive".to_owned()),
                ("ListId".to_owned(), item.id.clone()),
                ("ListTitle".to_owned(), item.title.clone()),
            ],
        };
        Some(Outgoing {
            body: item.title.clone(),
            params,
            ..Outgoing::default()
        })
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

/// What one line typed into the terminal phone means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    Send(Outgoing),
    /// `/tap N`: the Nth WhatsApp button or list item last shown.
    Tap(usize),
    Quit,
    Help,
    /// A `/word` the phone does not know: not sent, so a typo never reaches the agent.
    Unknown(String),
}

pub const USAGE: &str = "Type a message; /media URL [text] sends a picture; /tap N taps a WhatsApp button or list item; /location LAT LON [label] shares a place; /help; /quit ends.";

/// Reads one line of the terminal phone: `/media URL [text]` sends an MMS, `/quit` and
/// `/help` are the phone's own, any other `/word` is refused, and anything else is the
/// text of an SMS (`//text` sends `/text`).
pub fn parse_line(line: &str) -> Line {
    if let Some(text) = line.strip_prefix("//") {
        return Line::Send(Outgoing {
            body: format!("/{text}"),
            ..Outgoing::default()
        });
    }
    let Some(command) = line.strip_prefix('/') else {
        return Line::Send(Outgoing {
            body: line.to_owned(),
            ..Outgoing::default()
        });
    };
    let (word, rest) = command.split_once(' ').unwrap_or((command, ""));
    match word {
        "media" if !rest.trim().is_empty() => {
            let rest = rest.trim();
            let (url, body) = rest.split_once(' ').unwrap_or((rest, ""));
            Line::Send(Outgoing {
                body: body.trim().to_owned(),
                media: vec![url.to_owned()],
                ..Outgoing::default()
            })
        }
        "tap" => match rest.trim().parse::<usize>() {
            Ok(number) => Line::Tap(number),
            Err(_) => Line::Unknown(line.to_owned()),
        },
        "location" => {
            let mut words = rest.split_whitespace();
            let (Some(latitude), Some(longitude)) = (words.next(), words.next()) else {
                return Line::Unknown(line.to_owned());
            };
            if latitude.parse::<f64>().is_err() || longitude.parse::<f64>().is_err() {
                return Line::Unknown(line.to_owned());
            }
            let label = words.collect::<Vec<_>>().join(" ");
            let mut params = vec![
                ("MessageType".to_owned(), "location".to_owned()),
                ("Latitude".to_owned(), latitude.to_owned()),
                ("Longitude".to_owned(), longitude.to_owned()),
            ];
            if !label.is_empty() {
                params.push(("Label".to_owned(), label));
            }
            Line::Send(Outgoing {
                params,
                ..Outgoing::default()
            })
        }
        "quit" | "exit" => Line::Quit,
        "help" => Line::Help,
        _ => Line::Unknown(line.to_owned()),
    }
}

/// Replies sent through Twilio's Messages API, read back from its list of messages
/// (`GET …/Messages.json?To=…`): with `REPLY_MODE=api`/`auto` against the local
/// stand-in, the phone shows them as it shows the webhook's answer.
pub struct ApiInbox {
    client: reqwest::Client,
    url: String,
    account_sid: String,
    auth_token: String,
    number: String,
    seen: HashSet<String>,
    content_url: String,
}

#[derive(Deserialize)]
struct MessagePage {
    messages: Vec<ListedMessage>,
}

#[derive(Deserialize)]
struct ListedMessage {
    sid: String,
    #[serde(default)]
    body: String,
    #[serde(default)]
    num_media: String,
    /// The local stand-in says which content a message showed.
    #[serde(default)]
    content_sid: Option<String>,
}

#[derive(Deserialize)]
struct FetchedContent {
    types: serde_json::Value,
}

/// How long the phone waits for a reply through the API: the bridge's default agent
/// timeout in those modes, and a margin.
const API_REPLY_PATIENCE: Duration = Duration::from_secs(40);
/// Once a reply came, how long to wait for the messages that follow it.
const API_REPLY_QUIET: Duration = Duration::from_millis(800);
const API_POLL_EVERY: Duration = Duration::from_millis(200);

impl ApiInbox {
    /// Reads the messages sent to `number` from the Messages API at `base_url`.
    pub fn new(
        base_url: &str,
        account_sid: &str,
        auth_token: &str,
        number: &str,
    ) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .context("cannot create the HTTP client")?;
        Ok(Self {
            client,
            url: format!(
                "{}/2010-04-01/Accounts/{account_sid}/Messages.json",
                base_url.trim_end_matches('/')
            ),
            account_sid: account_sid.to_owned(),
            auth_token: auth_token.to_owned(),
            number: number.to_owned(),
            seen: HashSet::new(),
            content_url: format!("{}/v1/Content", base_url.trim_end_matches('/')),
        })
    }

    /// The buttons or list of content `sid`, with its body.
    async fn content(&self, sid: &str) -> anyhow::Result<Option<(String, PhoneMenu)>> {
        let url = format!("{}/{sid}", self.content_url);
        let response = self
            .client
            .get(&url)
            .basic_auth(&self.account_sid, Some(&self.auth_token))
            .send()
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        if !response.status().is_success() {
            return Ok(None);
        }
        let content: FetchedContent = response
            .json()
            .await
            .with_context(|| format!("{url} did not answer a content"))?;
        Ok(PhoneMenu::of_content(&content.types))
    }

    /// The messages sent to the phone so far, oldest first.
    async fn list(&self) -> anyhow::Result<Vec<ListedMessage>> {
        let response = self
            .client
            .get(&self.url)
            .query(&[("To", &self.number)])
            .basic_auth(&self.account_sid, Some(&self.auth_token))
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.url))?;
        let status = response.status();
        if !status.is_success() {
            bail!("{} answered HTTP {status}", self.url);
        }
        let mut page: MessagePage = response
            .json()
            .await
            .with_context(|| format!("{} did not answer a list of messages", self.url))?;
        page.messages.reverse();
        Ok(page.messages)
    }

    /// Everything sent so far is old news.
    async fn mark_seen(&mut self) -> anyhow::Result<()> {
        let listed = self.list().await?;
        self.seen.extend(listed.into_iter().map(|m| m.sid));
        Ok(())
    }

    /// The new messages, once they stop coming; none after [`API_REPLY_PATIENCE`];
    /// and the buttons or list of the last one that had some.
    async fn new_replies(&mut self) -> anyhow::Result<(Vec<ReplyMessage>, Option<PhoneMenu>)> {
        let started = tokio::time::Instant::now();
        let mut replies = Vec::new();
        let mut menu = None;
        let mut last_arrival = None;
        loop {
            for message in self.list().await? {
                if self.seen.insert(message.sid) {
                    let media = message.num_media.parse::<usize>().unwrap_or(0);
                    if let Some(sid) = &message.content_sid {
                        menu = self.content(sid).await?.map(|(_, menu)| menu).or(menu);
                    }
                    replies.push(ReplyMessage {
                        body: message.body,
                        media: (1..=media).map(|i| format!("#{i}")).collect(),
                        ..ReplyMessage::default()
                    });
                    last_arrival = Some(tokio::time::Instant::now());
                }
            }
            let done = match last_arrival {
                Some(at) => at.elapsed() >= API_REPLY_QUIET,
                None => started.elapsed() >= API_REPLY_PATIENCE,
            };
            if done {
                return Ok((replies, menu));
            }
            tokio::time::sleep(API_POLL_EVERY).await;
        }
    }
}

/// A phone in use: what it sends, and what it shows of the replies, from the webhook's
/// answer or, when that is empty, through the Messages API.
pub struct Session {
    phone: Phone,
    inbox: Option<ApiInbox>,
    /// The buttons or list last shown, to `/tap`.
    menu: Option<PhoneMenu>,
}

impl Session {
    pub fn new(phone: Phone, inbox: Option<ApiInbox>) -> Self {
        Self {
            phone,
            inbox,
            menu: None,
        }
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
        if let Some(inbox) = &mut self.inbox {
            // A listing that fails now will fail below too, and say so there.
            let _ = inbox.mark_seen().await;
        }
        let reply = self.phone.send(message).await?;
        match (&reply, &mut self.inbox) {
            (PhoneReply::Messages(messages), Some(inbox)) if messages.is_empty() => {
                match inbox.new_replies().await {
                    Ok((replies, _)) if replies.is_empty() => {
                        Ok("  (no reply, in the webhook's answer or through the Messages API)"
                            .to_owned())
                    }
                    Ok((replies, menu)) => {
                        let mut shown = show(&PhoneReply::Messages(replies));
                        if let Some(menu) = &menu {
                            shown.push('\n');
                            shown.push_str(&menu.show());
                            shown.push_str("\n  (/tap N to tap one)");
                        }
                        self.menu = menu;
                        Ok(format!("{shown}\n  (through the Messages API)"))
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
    fn reads_twiml_as_the_phone_shows_it() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?><Response><Message><Body>Fish &amp; chips &#x1F35F;</Body><Media>https://x/a.jpg?w=1&amp;h=2</Media></Message><Message>plain</Message></Response>"#;
        assert_eq!(
            parse_twiml(xml).unwrap(),
            vec![
                ReplyMessage {
                    body: "Fish & chips 🍟".into(),
                    media: vec!["https://x/a.jpg?w=1&h=2".into()],
                    ..ReplyMessage::default()
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

    #[test]
    fn lines_become_sms_mms_or_the_phones_own_commands() {
        let Line::Send(mms) = parse_line("/media https://m/p.jpg look at this") else {
            panic!("an MMS")
        };
        assert_eq!(
            (mms.body.as_str(), mms.media),
            ("look at this", vec!["https://m/p.jpg".to_owned()])
        );
        let text = |line| match parse_line(line) {
            Line::Send(message) => message.body,
            other => panic!("{other:?}"),
        };
        assert_eq!(text("hello"), "hello");
        assert_eq!(text("//start"), "/start");
        assert_eq!(parse_line("/quit"), Line::Quit);
        assert_eq!(parse_line("/help"), Line::Help);
        assert_eq!(parse_line("/foo bar"), Line::Unknown("/foo bar".into()));
        assert_eq!(parse_line("/media"), Line::Unknown("/media".into()));
        assert_eq!(parse_line("/tap 2"), Line::Tap(2));
        assert_eq!(parse_line("/tap x"), Line::Unknown("/tap x".into()));
        let Line::Send(place) = parse_line("/location 52.37 4.89 Our shop") else {
            panic!("a location")
        };
        assert!(place.params.contains(&("Label".into(), "Our shop".into())));
        assert_ne!(new_message_sid(), new_message_sid());
    }
}
