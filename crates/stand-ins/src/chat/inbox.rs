//! Replies that came through the Messages API, read back from its list.

use super::*;
use serde::Deserialize;

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
    inbound_url: String,
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
    /// The local stand-in says where its media are (Twilio lists them in a
    /// subresource).
    #[serde(default)]
    media_urls: Vec<String>,
    #[serde(default)]
    status: String,
}

/// One message the phone received through the Messages API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arrival {
    pub sid: String,
    pub reply: ReplyMessage,
    /// Twilio's status of it: `delivered`, `undelivered`, …
    pub status: String,
    /// Its buttons or list, when it was sent by a content that has some.
    pub menu: Option<PhoneMenu>,
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
        let client = crate::http_client(Duration::from_secs(5))?;
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
            inbound_url: format!("{}/stand-in/Inbound", base_url.trim_end_matches('/')),
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
    pub(super) async fn mark_seen(&mut self) -> anyhow::Result<()> {
        let listed = self.list().await?;
        self.seen.extend(listed.into_iter().map(|m| m.sid));
        Ok(())
    }

    /// Tells the local stand-in that the person sent `message` from `phone`, as
    /// Twilio knows of each message it carries: its WhatsApp window opens, STOP and
    /// START count. Twilio itself serves no such URL, and answers 404.
    pub(crate) async fn report(&self, phone: &Phone, message: &Outgoing) -> anyhow::Result<()> {
        let mut form = vec![
            ("From", phone.from.as_str()),
            ("To", phone.to.as_str()),
            ("Body", message.body.as_str()),
        ];
        if let Some((_, service)) = message
            .params
            .iter()
            .find(|(name, _)| name == "MessagingServiceSid")
        {
            form.push(("MessagingServiceSid", service));
        }
        let response = self
            .client
            .post(&self.inbound_url)
            .basic_auth(&self.account_sid, Some(&self.auth_token))
            .form(&form)
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.inbound_url))?;
        if !response.status().is_success() {
            bail!("{} answered HTTP {}", self.inbound_url, response.status());
        }
        Ok(())
    }

    /// The messages that arrived since the last look, oldest first, each with its
    /// buttons or list.
    pub async fn arrivals(&mut self) -> anyhow::Result<Vec<Arrival>> {
        let mut arrived = Vec::new();
        for message in self.list().await? {
            if !self.seen.insert(message.sid.clone()) {
                continue;
            }
            let menu = match &message.content_sid {
                Some(sid) => self.content(sid).await?.map(|(_, menu)| menu),
                None => None,
            };
            let count = message.num_media.parse::<usize>().unwrap_or(0);
            let media = match message.media_urls.len() {
                0 => (1..=count).map(|i| format!("#{i}")).collect(),
                _ => message.media_urls,
            };
            arrived.push(Arrival {
                sid: message.sid,
                reply: ReplyMessage {
                    body: message.body,
                    media,
                    ..ReplyMessage::default()
                },
                status: message.status,
                menu,
            });
        }
        Ok(arrived)
    }

    /// The new messages, once they stop coming; none after [`API_REPLY_PATIENCE`];
    /// and the buttons or list of the last one that had some.
    pub(super) async fn new_replies(
        &mut self,
    ) -> anyhow::Result<(Vec<ReplyMessage>, Option<PhoneMenu>)> {
        let started = tokio::time::Instant::now();
        let mut replies = Vec::new();
        let mut menu = None;
        let mut last_arrival = None;
        loop {
            for arrival in self.arrivals().await? {
                menu = arrival.menu.or(menu);
                replies.push(arrival.reply);
                last_arrival = Some(tokio::time::Instant::now());
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
