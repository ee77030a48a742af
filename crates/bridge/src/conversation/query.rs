//! What the agent is asked for a message: its text cut to what Dialogflow takes, the
//! choice a tap or a typed answer picks, a location's or media's event; and the
//! payload its webhooks see. Pure but for counting the choices picked and the taps no
//! menu offered.
//!
//! A tap names its choice by an id the person's client sends, which anyone can forge:
//! it is a choice (an event, or the choice's value) only when the conversation's
//! pending menu offered that id. Any other tap is what the person saw on the button,
//! as text, like anything typed.

use crate::agent::{QueryInput, LOCATION_EVENT, MEDIA_EVENT};
use crate::menu::PendingMenu;
use crate::metrics::Metrics;
use crate::reply::Answer;
use crate::twilio::webhook::IncomingMessage;
use serde_json::{Map, Value};

/// Dialogflow refuses text queries longer than this (CX and ES `TextInput.text`).
pub const MAX_QUERY_CHARS: usize = 256;

/// What to ask the agent: the choice a tap or a typed answer to the `pending` menu
/// picks, a shared location's event, or the message as it came. A tap on a choice
/// `pending` did not offer (no menu, one that expired or was replaced, one of another
/// conversation, or an id made up) is its title as text, and counted.
pub(super) fn input_of(
    message: &IncomingMessage,
    pending: Option<&PendingMenu>,
    metrics: &Metrics,
) -> Option<QueryInput> {
    if let Some(tap) = &message.tap {
        let how = match message.params.get("ListId") {
            Some(_) => "list",
            None => "button",
        };
        let offered = tap
            .id
            .as_deref()
            .and_then(|id| pending.and_then(|menu| menu.offered(id)));
        if let Some(choice) = offered {
            metrics.choice_picked(how);
            return Some(input_for(choice.answer()));
        }
        let channel = message.channel();
        metrics.tap_unoffered(channel);
        tracing::info!(
            message_sid = message.message_sid.as_deref(),
            channel,
            "a tap on a choice no pending menu offered: the agent is asked the text it showed"
        );
        let seen = tap.title.trim();
        if seen.is_empty() {
            return query_input(message);
        }
        return Some(QueryInput::Text(cut_to_query(seen).to_owned()));
    }
    if message.location.is_some() {
        return Some(QueryInput::Event(LOCATION_EVENT.to_owned()));
    }
    if let Some(choice) = pending.and_then(|menu| menu.pick(&message.body)) {
        let how = match message.body.trim().parse::<usize>() {
            Ok(_) => "number",
            Err(_) => "title",
        };
        metrics.choice_picked(how);
        return Some(input_for(choice.answer()));
    }
    query_input(message)
}

/// The text, cut to what Dialogflow accepts (the whole body is in the payload); or,
/// for media without words, the media event; or nothing to ask.
pub fn query_input(message: &IncomingMessage) -> Option<QueryInput> {
    let text = message.body.trim();
    if !text.is_empty() {
        return Some(QueryInput::Text(cut_to_query(text).to_owned()));
    }
    (!message.media.is_empty()).then(|| QueryInput::Event(MEDIA_EVENT.to_owned()))
}

/// `text` cut to what Dialogflow takes.
fn cut_to_query(text: &str) -> &str {
    match text.char_indices().nth(MAX_QUERY_CHARS) {
        Some((cut, _)) => &text[..cut],
        None => text,
    }
}

/// Every webhook parameter, as the agent's webhooks will see it in the query payload;
/// with a shared location, also `location` (`latitude`, `longitude`, `address`,
/// `label`) as numbers and text.
pub fn payload_of(message: &IncomingMessage) -> Map<String, Value> {
    let mut payload: Map<String, Value> = message
        .params
        .pairs()
        .iter()
        .map(|(name, value)| (name.clone(), Value::String(value.clone())))
        .collect();
    if let Some(location) = &message.location {
        payload.insert(
            "location".into(),
            serde_json::json!({
                "latitude": location.latitude,
                "longitude": location.longitude,
                "address": location.address,
                "label": location.label,
            }),
        );
    }
    payload
}

/// A picked choice as the agent's input.
fn input_for(answer: Answer) -> QueryInput {
    match answer {
        Answer::Text(text) => QueryInput::Text(cut_to_query(&text).to_owned()),
        Answer::Event(event) => QueryInput::Event(event),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reply::{Choice, ReplyMessage};
    use crate::twilio::webhook::FormParams;

    fn tap(params: &[(&str, &str)]) -> IncomingMessage {
        let mut all = vec![
            ("AccountSid", "AC0123456789abcdef0123456789abcdef"),
            ("MessageSid", "SM0123456789abcdef0123456789abcdef"),
            ("From", "whatsapp:+15551234567"),
            ("To", "whatsapp:+18005550000"),
        ];
        all.extend_from_slice(params);
        IncomingMessage::from_verified(FormParams::of(&all), "AC0123456789abcdef0123456789abcdef")
            .expect("a message")
    }

    fn menu() -> PendingMenu {
        let mut offered = ReplyMessage::menu("Sure?", &["Keep it"]);
        offered.choices.push(Choice {
            answer: Some(Answer::Event("close".into())),
            ..Choice::titled("Close it")
        });
        PendingMenu::of(&[offered]).expect("a menu")
    }

    fn unoffered(metrics: &Metrics) -> bool {
        metrics
            .render()
            .contains(r#"taps_unoffered_total{channel="whatsapp"} 1"#)
    }

    #[test]
    fn a_tap_is_a_choice_only_if_the_pending_menu_offered_it() {
        let button = tap(&[("ButtonText", "Close it"), ("ButtonPayload", "event:close")]);
        let metrics = Metrics::new();
        assert_eq!(
            input_of(&button, Some(&menu()), &metrics),
            Some(QueryInput::Event("close".into()))
        );
        assert!(!unoffered(&metrics));
        for pending in [None, Some(PendingMenu { choices: vec![] })] {
            let metrics = Metrics::new();
            assert_eq!(
                input_of(&button, pending.as_ref(), &metrics),
                Some(QueryInput::Text("Close it".into())),
                "what the button showed"
            );
            assert!(unoffered(&metrics));
        }
        let made_up = tap(&[("ListTitle", "Keep it"), ("ListId", "event:delete")]);
        let metrics = Metrics::new();
        assert_eq!(
            input_of(&made_up, Some(&menu()), &metrics),
            Some(QueryInput::Text("Keep it".into()))
        );
        assert!(unoffered(&metrics));
        let untitled = tap(&[("ButtonPayload", "event:delete")]);
        assert_eq!(
            input_of(&untitled, None, &Metrics::new()),
            Some(QueryInput::Text("event:delete".into())),
            "the payload as text, never its event"
        );
    }
}
