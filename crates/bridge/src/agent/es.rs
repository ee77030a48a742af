//! Dialogflow ES v2 through the official client.

use super::payload::{
    card_message, handoff_from_payload, quick_replies, replies_from_payload, reply_from_text,
};
use super::{endpoint_and_credentials, AgentAnswer, AgentError, AgentQuery, QueryInput};
use crate::config::{AgentSettings, Endpoint};
use crate::reply::ReplyMessage;
use crate::retry::gax::GaxPolicies;
use google_cloud_dialogflow_v2::client::Sessions;
use google_cloud_dialogflow_v2::model::intent::message::{Message, Platform};
use google_cloud_dialogflow_v2::model::{
    intent, DetectIntentRequest, EventInput, QueryParameters, QueryResult, TextInput,
};

/// The official ES sessions client of one endpoint.
pub type Client = Sessions;

pub async fn connect(endpoint: &Endpoint) -> Result<Client, AgentError> {
    Ok(endpoint_and_credentials(endpoint, Sessions::builder())
        .build()
        .await?)
}

#[derive(Clone, Debug)]
pub struct EsAgent {
    client: Sessions,
    /// `projects/P[/locations/L]/agent[/environments/E/users/-]`: where its sessions are.
    sessions_path: String,
    language_code: String,
}

impl EsAgent {
    pub fn new(client: Client, settings: &AgentSettings) -> Self {
        let agent = match settings.location.as_str() {
            "global" => format!("projects/{}/agent", settings.project),
            location => format!("projects/{}/locations/{location}/agent", settings.project),
        };
        Self {
            client,
            sessions_path: match &settings.environment {
                Some(environment) => format!("{agent}/environments/{environment}/users/-"),
                None => agent,
            },
            language_code: settings.language_code.clone(),
        }
    }

    pub async fn detect_intent(
        &self,
        query: &AgentQuery,
        retry: GaxPolicies,
    ) -> Result<AgentAnswer, AgentError> {
        let request = self
            .client
            .detect_intent()
            .with_request(self.request(query));
        // Boxed where it is made: the official client's request state is kilobytes, and
        // every layer above that awaits it inline would hold, and move, all of it.
        let response = Box::pin(retry.apply(request).send()).await?;
        Ok(response
            .query_result
            .as_ref()
            .map(answer)
            .unwrap_or_default())
    }

    fn request(&self, query: &AgentQuery) -> DetectIntentRequest {
        let language = query.language.as_deref().unwrap_or(&self.language_code);
        let input = google_cloud_dialogflow_v2::model::QueryInput::new();
        let input = match &query.input {
            QueryInput::Text(text) => {
                input.set_text(TextInput::new().set_text(text).set_language_code(language))
            }
            QueryInput::Event(event) => input.set_event(
                EventInput::new()
                    .set_name(event)
                    .set_language_code(language)
                    .set_parameters(query.parameters.clone()),
            ),
        };
        DetectIntentRequest::new()
            .set_session(format!("{}/sessions/{}", self.sessions_path, query.session))
            .set_query_input(input)
            .set_query_params(QueryParameters::new().set_payload(query.payload.clone()))
    }
}

/// The replies, and the hand-over a custom payload of the default platform asks for.
fn answer(result: &QueryResult) -> AgentAnswer {
    let handoff = result
        .fulfillment_messages
        .iter()
        .filter(|m| m.platform == Platform::Unspecified)
        .find_map(|m| match m.message.as_ref()? {
            Message::Payload(payload) => handoff_from_payload(payload),
            _ => None,
        });
    AgentAnswer {
        replies: replies(result),
        handoff,
    }
}

/// Messages of the default platform, in order; other platforms' (Slack, Facebook, …) are
/// for other integrations. An agent with only a `fulfillmentText` still answers.
fn replies(result: &QueryResult) -> Vec<ReplyMessage> {
    let messages: Vec<&intent::Message> = result
        .fulfillment_messages
        .iter()
        .filter(|m| m.platform == Platform::Unspecified)
        .collect();
    if messages.is_empty() {
        return reply_from_text(std::slice::from_ref(&result.fulfillment_text))
            .into_iter()
            .collect();
    }
    messages
        .into_iter()
        .flat_map(|m| match m.message.as_ref() {
            Some(Message::Text(text)) => reply_from_text(&text.text).into_iter().collect(),
            Some(Message::Payload(payload)) => replies_from_payload(payload),
            Some(Message::QuickReplies(quick)) => {
                vec![quick_replies(
                    quick.title.clone(),
                    quick.quick_replies.clone(),
                )]
            }
            Some(Message::Card(card)) => vec![card_message(
                &card.title,
                &card.subtitle,
                &card.image_uri,
                card.buttons
                    .iter()
                    .map(|b| (b.text.clone(), b.postback.clone()))
                    .collect(),
            )],
            Some(Message::Image(image)) if !image.image_uri.is_empty() => {
                vec![ReplyMessage::media(vec![image.image_uri.clone()])]
            }
            Some(other) => {
                tracing::info!(
                    message_type = message_type(other),
                    "an ES message of a type the bridge does not show was skipped"
                );
                Vec::new()
            }
            None => Vec::new(),
        })
        .filter(|m: &ReplyMessage| !m.is_empty())
        .collect()
}

/// The message's type as the API names it, for the log line of a skipped one.
fn message_type(message: &Message) -> &'static str {
    match message {
        Message::Text(_) => "text",
        Message::Image(_) => "image",
        Message::QuickReplies(_) => "quickReplies",
        Message::Card(_) => "card",
        Message::Payload(_) => "payload",
        Message::SimpleResponses(_) => "simpleResponses",
        Message::BasicCard(_) => "basicCard",
        Message::Suggestions(_) => "suggestions",
        Message::LinkOutSuggestion(_) => "linkOutSuggestion",
        Message::ListSelect(_) => "listSelect",
        Message::CarouselSelect(_) => "carouselSelect",
        Message::BrowseCarouselCard(_) => "browseCarouselCard",
        Message::TableCard(_) => "tableCard",
        Message::MediaContent(_) => "mediaContent",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn text(platform: Platform, line: &str) -> intent::Message {
        intent::Message::new()
            .set_platform(platform)
            .set_text(intent::message::Text::new().set_text([line]))
    }

    #[test]
    fn keeps_default_platform_messages_and_twilio_payloads() {
        let payload = match json!({"twilio": {"body": "menu", "media": "https://x/m.jpg"}}) {
            serde_json::Value::Object(map) => map,
            _ => unreachable!(),
        };
        let result = QueryResult::new()
            .set_fulfillment_text("one")
            .set_fulfillment_messages([
                text(Platform::Unspecified, "one"),
                text(Platform::Slack, "slack only"),
                intent::Message::new().set_payload(payload),
            ]);
        assert_eq!(
            replies(&result),
            vec![
                ReplyMessage::text("one"),
                ReplyMessage {
                    body: "menu".into(),
                    media: vec!["https://x/m.jpg".into()],
                    ..ReplyMessage::default()
                }
            ]
        );
    }

    #[test]
    fn reads_quick_replies_cards_and_images_of_the_default_platform() {
        let result = QueryResult::new().set_fulfillment_messages([
            intent::Message::new().set_quick_replies(
                intent::message::QuickReplies::new()
                    .set_title("Size?")
                    .set_quick_replies(["Small", "Large"]),
            ),
            intent::Message::new().set_card(
                intent::message::Card::new()
                    .set_title("Pepperoni")
                    .set_image_uri("https://x/p.jpg")
                    .set_buttons([intent::message::card::Button::new()
                        .set_text("Order")
                        .set_postback("order pepperoni")]),
            ),
            intent::Message::new()
                .set_image(intent::message::Image::new().set_image_uri("https://x/i.jpg")),
            intent::Message::new()
                .set_platform(Platform::Slack)
                .set_image(intent::message::Image::new().set_image_uri("https://x/slack.jpg")),
        ]);
        let got = replies(&result);
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].body, "Size?");
        assert_eq!(got[0].choices.len(), 2);
        assert_eq!(got[1].media, vec!["https://x/p.jpg".to_string()]);
        assert_eq!(
            got[1].choices[0].answer(),
            crate::reply::Answer::Text("order pepperoni".into())
        );
        assert_eq!(got[2], ReplyMessage::media(vec!["https://x/i.jpg".into()]));
    }

    #[test]
    fn falls_back_to_fulfillment_text() {
        let result = QueryResult::new().set_fulfillment_text("hello");
        assert_eq!(replies(&result), vec![ReplyMessage::text("hello")]);
    }
}
