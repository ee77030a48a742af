//! Dialogflow CX v3 through the official client.

use super::payload::{handoff_from_payload, replies_from_payload, reply_from_text};
use super::{
    endpoint_and_credentials, AgentAnswer, AgentError, AgentQuery, HandoffRequest, QueryInput,
};
use crate::config::{AgentSettings, Endpoint};
use crate::reply::ReplyMessage;
use crate::retry::gax::GaxPolicies;
use google_cloud_dialogflow_cx_v3::client::Sessions;
use google_cloud_dialogflow_cx_v3::model::{
    response_message, DetectIntentRequest, EventInput, QueryParameters, ResponseMessage, TextInput,
};
use std::time::Duration;

/// The channel whose channel-specific responses we send, as the Node sample did.
pub const CHANNEL: &str = "TWILIO";

/// The official CX sessions client of one endpoint.
pub type Client = Sessions;

pub async fn connect(endpoint: &Endpoint) -> Result<Client, AgentError> {
    Ok(endpoint_and_credentials(endpoint, Sessions::builder())
        .build()
        .await?)
}

#[derive(Clone, Debug)]
pub struct CxAgent {
    client: Sessions,
    /// `projects/P/locations/L/agents/A[/environments/E]`: where its sessions are.
    sessions_path: String,
    language_code: String,
    session_ttl: Option<google_cloud_wkt::Duration>,
}

impl CxAgent {
    pub fn new(
        client: Client,
        settings: &AgentSettings,
        agent_id: &str,
        session_ttl: Option<Duration>,
    ) -> Self {
        let agent = format!(
            "projects/{}/locations/{}/agents/{agent_id}",
            settings.project, settings.location
        );
        Self {
            client,
            sessions_path: match &settings.environment {
                Some(environment) => format!("{agent}/environments/{environment}"),
                None => agent,
            },
            language_code: settings.language_code.clone(),
            session_ttl: session_ttl
                .map(|ttl| google_cloud_wkt::Duration::clamp(ttl.as_secs() as i64, 0)),
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
            .map(|result| answer(&result.response_messages))
            .unwrap_or_default())
    }

    fn request(&self, query: &AgentQuery) -> DetectIntentRequest {
        let input = google_cloud_dialogflow_cx_v3::model::QueryInput::new()
            .set_language_code(query.language.as_deref().unwrap_or(&self.language_code));
        let input = match &query.input {
            QueryInput::Text(text) => input.set_text(TextInput::new().set_text(text)),
            QueryInput::Event(event) => input.set_event(EventInput::new().set_event(event)),
        };
        let params = QueryParameters::new()
            .set_channel(CHANNEL)
            .set_payload(query.payload.clone())
            .set_or_clear_session_ttl(self.session_ttl);
        // Session parameters: the agent's next turns in this session see them.
        let params = match query.parameters.is_empty() {
            true => params,
            false => params.set_parameters(query.parameters.clone()),
        };
        DetectIntentRequest::new()
            .set_session(format!("{}/sessions/{}", self.sessions_path, query.session))
            .set_query_input(input)
            .set_query_params(params)
    }
}

/// The messages to send: text responses and Twilio payloads of our channel or of no
/// channel, in the agent's order. Other kinds (audio, handoff, …) mean nothing in a text
/// message.
fn answer(messages: &[ResponseMessage]) -> AgentAnswer {
    let ours = || {
        messages
            .iter()
            .filter(|m| m.channel.is_empty() || m.channel == CHANNEL)
    };
    let handoff = ours().find_map(|m| match m.message.as_ref()? {
        response_message::Message::LiveAgentHandoff(handoff) => Some(HandoffRequest {
            metadata: handoff.metadata.clone().unwrap_or_default(),
            trigger: "live_agent_handoff",
        }),
        response_message::Message::Payload(payload) => handoff_from_payload(payload),
        _ => None,
    });
    AgentAnswer {
        replies: replies(messages),
        handoff,
    }
}

fn replies(messages: &[ResponseMessage]) -> Vec<ReplyMessage> {
    messages
        .iter()
        .filter(|m| m.channel.is_empty() || m.channel == CHANNEL)
        .flat_map(|m| match m.message.as_ref() {
            Some(response_message::Message::Text(text)) => {
                reply_from_text(&text.text).into_iter().collect()
            }
            Some(response_message::Message::Payload(payload)) => replies_from_payload(payload),
            _ => Vec::new(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn text(channel: &str, line: &str) -> ResponseMessage {
        ResponseMessage::new()
            .set_channel(channel)
            .set_text(response_message::Text::new().set_text([line]))
    }

    #[test]
    fn keeps_our_channel_and_channel_less_messages_in_order() {
        let payload = match json!({"body": "menu", "media": "https://x/m.jpg"}) {
            serde_json::Value::Object(map) => map,
            _ => unreachable!(),
        };
        let messages = vec![
            text("", "one"),
            text("FACEBOOK", "not for us"),
            ResponseMessage::new()
                .set_channel(CHANNEL)
                .set_payload(payload),
            text(CHANNEL, "three"),
        ];
        assert_eq!(
            replies(&messages),
            vec![
                ReplyMessage::text("one"),
                ReplyMessage {
                    body: "menu".into(),
                    media: vec!["https://x/m.jpg".into()],
                    ..ReplyMessage::default()
                },
                ReplyMessage::text("three"),
            ]
        );
    }
}
