//! What the agent answered, as messages to send, shaped to Twilio's limits.
//!
//! A Twilio message carries at most 1600 characters of body and 10 media URLs
//! (Twilio Messaging API reference). Rather than let Twilio refuse a long answer, we
//! split it into several messages, at whitespace where we can, so that nothing the
//! agent said is lost.

/// Characters in one message's body.
pub const MAX_BODY_CHARS: usize = 1600;
/// Media URLs on one message.
pub const MAX_MEDIA: usize = 10;

/// One message to the user: text, media, or both; with choices to pick from, or an
/// approved Content API template instead.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct ReplyMessage {
    pub body: String,
    pub media: Vec<String>,
    /// Shown as WhatsApp buttons or a list where they fit, as a numbered menu otherwise
    /// ([`crate::menu`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub choices: Vec<Choice>,
    /// Sent as it is, by its `ContentSid`: only through the Messages API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<Template>,
}

/// One choice of a menu.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Choice {
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// What the agent is asked when the person picks it; its title when none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<Answer>,
}

impl Choice {
    pub fn titled(title: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            description: None,
            answer: None,
        }
    }

    /// What the agent is asked when this is picked.
    pub fn answer(&self) -> Answer {
        self.answer
            .clone()
            .unwrap_or_else(|| Answer::Text(self.title.clone()))
    }
}

/// What a picked choice asks the agent.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Answer {
    Text(String),
    /// A Dialogflow event (a CX `richContent` item's `event`).
    Event(String),
}

/// A Content API content (`HX…`) with its variables, sent as is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Template {
    pub sid: String,
    /// `ContentVariables`: a JSON object, as text.
    pub variables: Option<String>,
    /// The choices its buttons or list items offer, as the agent declared them (the
    /// bridge does not read the content): a tap is one of them only if its id is one
    /// of theirs ([`crate::menu::id_of`]). None declared: its taps are text.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub choices: Vec<Choice>,
}

impl ReplyMessage {
    pub fn text(body: impl Into<String>) -> Self {
        Self {
            body: body.into(),
            ..Self::default()
        }
    }

    pub fn is_empty(&self) -> bool {
        self.body.trim().is_empty()
            && self.media.is_empty()
            && self.choices.is_empty()
            && self.template.is_none()
    }

    /// A question and its choices, by title.
    pub fn menu(body: impl Into<String>, titles: &[&str]) -> Self {
        Self {
            body: body.into(),
            choices: titles.iter().map(|t| Choice::titled(*t)).collect(),
            ..Self::default()
        }
    }

    pub fn media(urls: Vec<String>) -> Self {
        Self {
            media: urls,
            ..Self::default()
        }
    }

    /// Carries more than text and media: a menu or a template.
    pub fn is_rich(&self) -> bool {
        !self.choices.is_empty() || self.template.is_some()
    }
}

/// Splits every message that exceeds Twilio's limits into several that do not, in
/// order; drops messages with nothing to say. Menus and templates stay whole: how
/// they are shown depends on the channel ([`crate::menu`]).
pub fn fit_to_limits(messages: Vec<ReplyMessage>) -> Vec<ReplyMessage> {
    messages
        .into_iter()
        .filter(|m| !m.is_empty())
        .flat_map(|m| {
            if m.is_rich() {
                vec![m]
            } else {
                split_message(m)
            }
        })
        .collect()
}

fn split_message(message: ReplyMessage) -> Vec<ReplyMessage> {
    let mut parts: Vec<ReplyMessage> = split_body(&message.body)
        .into_iter()
        .map(ReplyMessage::text)
        .collect();
    let mut media = message.media.chunks(MAX_MEDIA);
    // The first batch of media goes with the last piece of text, so a long caption is
    // followed by its picture; further media follow in messages of their own.
    match (parts.last_mut(), media.next()) {
        (Some(last), Some(first_batch)) => last.media = first_batch.to_vec(),
        (None, Some(first_batch)) => parts.push(ReplyMessage::media(first_batch.to_vec())),
        (_, None) => {}
    }
    parts.extend(media.map(|batch| ReplyMessage::media(batch.to_vec())));
    parts
}

/// Splits `body` into pieces of at most [`MAX_BODY_CHARS`] characters whose
/// concatenation is `body`, less any piece of whitespace alone (Twilio would send it as
/// a blank message). A piece ends after the last whitespace that fits, or, in a run with
/// no whitespace at all, at the limit.
pub fn split_body(body: &str) -> Vec<String> {
    if body.trim().is_empty() {
        return Vec::new();
    }
    let mut pieces = Vec::new();
    let mut rest = body;
    while rest.chars().count() > MAX_BODY_CHARS {
        let limit = rest
            .char_indices()
            .nth(MAX_BODY_CHARS)
            .map_or(rest.len(), |(i, _)| i);
        let window = &rest[..limit];
        let cut = window
            .char_indices()
            .filter(|(_, c)| c.is_whitespace())
            .map(|(i, c)| i + c.len_utf8())
            .next_back()
            .filter(|&i| i > 0)
            .unwrap_or(limit);
        pieces.push(rest[..cut].to_owned());
        rest = &rest[cut..];
    }
    pieces.push(rest.to_owned());
    pieces.retain(|piece| !piece.trim().is_empty());
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_messages_pass_unchanged() {
        let messages = vec![
            ReplyMessage::text("hi"),
            ReplyMessage::text("  "),
            ReplyMessage::text("there"),
        ];
        assert_eq!(
            fit_to_limits(messages),
            vec![ReplyMessage::text("hi"), ReplyMessage::text("there")]
        );
    }

    #[test]
    fn whitespace_left_over_by_a_split_is_no_message() {
        let body = format!("{}\n", "x".repeat(MAX_BODY_CHARS));
        assert_eq!(split_body(&body), vec!["x".repeat(MAX_BODY_CHARS)]);
    }

    #[test]
    fn long_bodies_split_at_whitespace_losing_nothing() {
        let word = "pizza ";
        let body = word.repeat(700); // 4200 characters
        let pieces = split_body(&body);
        assert_eq!(pieces.len(), 3);
        assert!(pieces.iter().all(|p| p.chars().count() <= MAX_BODY_CHARS));
        assert!(
            pieces.iter().all(|p| p.ends_with(' ')),
            "cut after whitespace"
        );
        assert_eq!(pieces.concat(), body);
    }

    #[test]
    fn a_run_without_whitespace_is_cut_at_the_limit_on_a_char_boundary() {
        let body = "🍕".repeat(MAX_BODY_CHARS + 5);
        let pieces = split_body(&body);
        assert_eq!(
            pieces.iter().map(|p| p.chars().count()).collect::<Vec<_>>(),
            vec![1600, 5]
        );
        assert_eq!(pieces.concat(), body);
    }

    #[test]
    fn many_media_are_spread_over_messages() {
        let media: Vec<String> = (0..23)
            .map(|i| format!("https://example.com/{i}.jpg"))
            .collect();
        let out = fit_to_limits(vec![ReplyMessage {
            body: "look".into(),
            media: media.clone(),
            ..ReplyMessage::default()
        }]);
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].body, "look");
        assert_eq!(
            out.iter().map(|m| m.media.len()).collect::<Vec<_>>(),
            vec![10, 10, 3]
        );
        assert_eq!(
            out.into_iter().flat_map(|m| m.media).collect::<Vec<_>>(),
            media
        );
    }

    #[test]
    fn media_only_message_is_kept() {
        let out = fit_to_limits(vec![ReplyMessage::media(vec!["https://x/1.png".into()])]);
        assert_eq!(
            out,
            vec![ReplyMessage::media(vec!["https://x/1.png".into()])]
        );
    }
}
