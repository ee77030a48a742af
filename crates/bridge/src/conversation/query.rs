//! What the agent is asked for a message: its text cut to what Dialogflow takes, the
//! choice a tap or a typed answer picks, a location's or media's event; and the
//! payload its webhooks see. Pure but for counting the choices picked.

use crate::agent::{QueryInput, LOCATION_EVENT, MEDIA_EVENT};
use crate::menu::{answer_of_id, PendingMenu};
use crate::metrics::Metrics;
use crate::reply::Answer;
use crate::twilio::webhook::IncomingMessage;
use serde_json::{Map, Value};

/// Dialogflow refuses text queries longer than this (CX and ES `TextInput.text`).
pub const MAX_QUERY_CHARS: usize = 256;

/// What to ask the agent: the choice a tap or a typed answer to the `pending` menu
/// picks, a shared location's event, or the message as it came.
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
        metrics.choice_picked(how);
        return Some(input_for(match &tap.id {
            Some(id) => answer_of_id(id),
            None => Answer::Text(tap.title.clone()),
        }));
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
