//! The HTTP side of the emulator: which URL is which method, and the detectIntent
//! handler for CX v3 and ES v2.

use super::agent_file::{AgentDefinition, Fault, Intent, Reply};
use super::matcher;
use super::sessions::{Sessions, DEFAULT_TTL};
use super::wire::{self, EnumEncoding, GoogleError, Query};
use super::RecordedRequest;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

const RECORD_AT_MOST: usize = 1000;

pub struct Shared {
    pub agent: AgentDefinition,
    pub sessions: Sessions,
    /// The latest requests, for tests to inspect; bounded so that a long benchmark or
    /// demo does not grow the emulator.
    pub recorded: Mutex<VecDeque<RecordedRequest>>,
    /// For each intent, how many more matches fail (`fail_first`).
    failures_left: Vec<AtomicU32>,
    responses: AtomicU64,
}

impl Shared {
    pub fn new(agent: AgentDefinition) -> Arc<Self> {
        let failures_left = agent
            .intents
            .iter()
            .map(|i| AtomicU32::new(i.fail_first.unwrap_or(u32::MAX)))
            .collect();
        Arc::new(Self {
            agent,
            sessions: Sessions::default(),
            recorded: Mutex::default(),
            failures_left,
            responses: AtomicU64::new(0),
        })
    }
}

pub fn router(shared: Arc<Shared>) -> Router {
    // The `:detectIntent` verb sits inside the last path segment, which axum's path
    // patterns cannot split; every request goes through one handler that reads the path.
    Router::new().fallback(handle).with_state(shared)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    Cx,
    Es,
}

/// A detectIntent URL, taken apart.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    api: Api,
    project: String,
    location: String,
    agent_id: Option<String>,
    session: String,
}

fn parse_path(path: &str) -> Option<Target> {
    let (resource, verb) = path.rsplit_once(':')?;
    if verb != "detectIntent" {
        return None;
    }
    let segments: Vec<&str> = resource.trim_start_matches('/').split('/').collect();
    let session = resource
        .trim_start_matches('/')
        .split_once('/')?
        .1
        .to_owned();
    match segments.as_slice() {
        ["v3", "projects", p, "locations", l, "agents", a, "sessions", _]
        | ["v3", "projects", p, "locations", l, "agents", a, "environments", _, "sessions", _] => {
            Some(Target {
                api: Api::Cx,
                project: p.to_string(),
                location: l.to_string(),
                agent_id: Some(a.to_string()),
                session,
            })
        }
        ["v2", "projects", p, "agent", "sessions", _]
        | ["v2", "projects", p, "agent", "environments", _, "users", _, "sessions", _] => {
            Some(Target {
                api: Api::Es,
                project: p.to_string(),
                location: "global".into(),
                agent_id: None,
                session,
            })
        }
        ["v2", "projects", p, "locations", l, "agent", "sessions", _]
        | ["v2", "projects", p, "locations", l, "agent", "environments", _, "users", _, "sessions", _] => {
            Some(Target {
                api: Api::Es,
                project: p.to_string(),
                location: l.to_string(),
                agent_id: None,
                session,
            })
        }
        _ => None,
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let query = uri.query().unwrap_or_default().to_owned();
    let target = match parse_path(&path) {
        Some(target) if method == Method::POST => target,
        _ => {
            return GoogleError::not_found(format!("Method not found: {method} {path}"))
                .into_response()
        }
    };
    let body: Value = match serde_json::from_slice(&body) {
        Ok(body) => body,
        Err(error) => {
            return GoogleError::invalid_argument(format!("Invalid JSON payload received. {error}"))
                .into_response()
        }
    };
    {
        let mut recorded = shared
            .recorded
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if recorded.len() == RECORD_AT_MOST {
            recorded.pop_front();
        }
        recorded.push_back(RecordedRequest {
            path,
            query: query.clone(),
            body: body.clone(),
        });
    }
    match detect_intent(&shared, &target, &body, EnumEncoding::from_query(&query)).await {
        Ok(response) => Json(response).into_response(),
        Err(Refusal::Google(error)) => error.into_response(),
        Err(Refusal::Fault(fault)) => misbehave(fault).await,
    }
}

/// What the agent answers instead of a response.
enum Refusal {
    Google(GoogleError),
    Fault(Fault),
}

impl From<GoogleError> for Refusal {
    fn from(error: GoogleError) -> Self {
        Refusal::Google(error)
    }
}

async fn misbehave(fault: Fault) -> Response {
    let json = [(header::CONTENT_TYPE, "application/json; charset=utf-8")];
    match fault {
        Fault::Http { status, body } => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
            [(header::CONTENT_TYPE, "text/html; charset=UTF-8")],
            body,
        )
            .into_response(),
        Fault::Garbage => (StatusCode::OK, json, "{\"queryResult\": [garbage").into_response(),
        Fault::Close => {
            // A chunked answer whose stream fails: hyper cuts the connection mid-body.
            let parts: [Result<Bytes, std::io::Error>; 2] = [
                Ok(Bytes::from_static(b"{\"responseId\": \"")),
                Err(std::io::Error::other("the agent went away")),
            ];
            (
                StatusCode::OK,
                json,
                Body::from_stream(futures_util::stream::iter(parts)),
            )
                .into_response()
        }
        Fault::Hang => std::future::pending().await,
    }
}

async fn detect_intent(
    shared: &Shared,
    target: &Target,
    body: &Value,
    enums: EnumEncoding,
) -> Result<Value, Refusal> {
    let agent = &shared.agent;
    let known = target.project == agent.project
        && target.location == agent.location
        && target
            .agent_id
            .as_deref()
            .is_none_or(|id| id == agent.agent_id);
    if !known {
        let name = match target.api {
            Api::Cx => format!(
                "projects/{}/locations/{}/agents/{}",
                target.project,
                target.location,
                target.agent_id.as_deref().unwrap_or_default()
            ),
            Api::Es => format!("projects/{}/agent", target.project),
        };
        return Err(Refusal::Google(GoogleError::not_found(format!(
            "com.google.apps.framework.request.NotFoundException: Agent '{name}' does not exist."
        ))));
    }
    let (query, language) = wire::read_query(body)?;
    let params = body.get("queryParams");
    let channel = params
        .and_then(|p| p.get("channel"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let ttl = params
        .and_then(|p| p.get("sessionTtl"))
        .and_then(wire::read_duration)
        .unwrap_or(DEFAULT_TTL);
    let matched = match &query {
        Query::Text(text) => matcher::match_text(&agent.intents, text),
        Query::Event(event) => matcher::match_event(&agent.intents, event).map(|i| (i, 1.0)),
    };
    let intent = matched.map(|(index, _)| (index, &agent.intents[index]));
    if let Some((index, intent)) = intent {
        if let Some(delay) = intent.delay_ms {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if intent.error.is_some() || intent.fault.is_some() {
            let failing = shared.failures_left[index]
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                    left.checked_sub(1)
                })
                .is_ok();
            if failing {
                if let Some(fault) = &intent.fault {
                    return Err(Refusal::Fault(fault.clone()));
                }
                if let Some(error) = &intent.error {
                    return Err(Refusal::Google(GoogleError::new(
                        error.code,
                        &error.status,
                        error.message.clone(),
                    )));
                }
            }
        }
    }
    // CX carries an event's parameters in `queryParams.parameters`, ES in the event
    // itself (`queryInput.event.parameters`); either way they fill the session's.
    let request_parameters: Map<String, Value> = [
        params.and_then(|p| p.get("parameters")),
        body.pointer("/queryInput/event/parameters"),
    ]
    .into_iter()
    .flatten()
    .filter_map(Value::as_object)
    .flat_map(|m| m.clone())
    .collect();
    let parameters = shared
        .sessions
        .update(&target.session, ttl, Instant::now(), |session| {
            session.extend(request_parameters);
            if let (Some((_, intent)), Query::Text(text)) = (intent, &query) {
                if let Some(capture) = &intent.capture {
                    if let Some(value) = matcher::capture(&capture.values, text) {
                        session.insert(capture.parameter.clone(), json!(value));
                    }
                }
            }
            session.clone()
        });
    let replies: &[Reply] = match intent {
        Some((_, intent)) => &intent.replies,
        None if matches!(query, Query::Event(_)) => &[],
        None => &agent.fallback.replies,
    };
    let response_id = format!(
        "emulator-{:016x}",
        shared.responses.fetch_add(1, Ordering::Relaxed)
    );
    let language = language.unwrap_or_else(|| agent.language.clone());
    let confidence = matched.map_or(1.0, |(_, c)| c);
    let answer = Answer {
        agent,
        response_id,
        query: &query,
        language: &language,
        intent,
        confidence,
        replies,
        parameters: &parameters,
        enums,
    };
    Ok(match target.api {
        Api::Cx => cx_response(answer, channel),
        Api::Es => es_response(answer),
    })
}

/// What the emulator answers a query with, before either API's shape is put on it.
struct Answer<'a> {
    agent: &'a AgentDefinition,
    response_id: String,
    query: &'a Query,
    language: &'a str,
    intent: Option<(usize, &'a Intent)>,
    confidence: f32,
    replies: &'a [Reply],
    parameters: &'a Map<String, Value>,
    enums: EnumEncoding,
}

/// A stable, UUID-shaped id for the intent at `index`.
fn intent_id(index: usize) -> String {
    format!("{index:08x}-0000-4000-8000-{index:012x}")
}

/// The message's text (templates filled) or payload, shaped alike in CX and ES; quick
/// replies and cards as ES messages, or as CX agents write them: Messenger's
/// `richContent` in a custom payload.
fn content(reply: &Reply, parameters: &Map<String, Value>, cx: bool) -> Map<String, Value> {
    let mut message = Map::new();
    if let Some(text) = &reply.text {
        message.insert("text".into(), json!({"text": [fill(text, parameters)]}));
    } else if let Some(payload) = &reply.payload {
        message.insert("payload".into(), Value::Object(payload.clone()));
    } else if let Some(quick) = &reply.quick_replies {
        if cx {
            let options: Vec<Value> = quick.replies.iter().map(|r| json!({"text": r})).collect();
            let mut items = Vec::new();
            if !quick.title.is_empty() {
                items.push(json!({"type": "info", "title": fill(&quick.title, parameters)}));
            }
            items.push(json!({"type": "chips", "options": options}));
            message.insert("payload".into(), json!({"richContent": [items]}));
        } else {
            message.insert(
                "quickReplies".into(),
                json!({"title": fill(&quick.title, parameters), "quickReplies": quick.replies}),
            );
        }
    } else if let Some(metadata) = &reply.handoff {
        if cx {
            message.insert(
                "liveAgentHandoff".into(),
                json!({"metadata": Value::Object(metadata.clone())}),
            );
        } else {
            message.insert(
                "payload".into(),
                json!({"twilio": {"handoff": Value::Object(metadata.clone())}}),
            );
        }
    } else if let Some(card) = &reply.card {
        if cx {
            let mut items = Vec::new();
            if !card.image.is_empty() {
                items.push(json!({"type": "image", "rawUrl": card.image}));
            }
            items.push(json!({"type": "info", "title": card.title, "subtitle": card.subtitle}));
            let options: Vec<Value> = card
                .buttons
                .iter()
                .map(|b| match b.postback.starts_with("http") {
                    true => json!({"text": b.text, "link": b.postback}),
                    false => json!({"text": b.text}),
                })
                .collect();
            if !options.is_empty() {
                items.push(json!({"type": "chips", "options": options}));
            }
            message.insert("payload".into(), json!({"richContent": [items]}));
        } else {
            let buttons: Vec<Value> = card
                .buttons
                .iter()
                .map(|b| json!({"text": b.text, "postback": b.postback}))
                .collect();
            message.insert(
                "card".into(),
                json!({"title": card.title, "subtitle": card.subtitle, "imageUri": card.image, "buttons": buttons}),
            );
        }
    }
    message
}

/// Replaces `$session.params.NAME` with the parameter's value, or nothing.
fn fill(template: &str, parameters: &Map<String, Value>) -> String {
    const MARK: &str = "$session.params.";
    let mut out = String::new();
    let mut rest = template;
    while let Some(at) = rest.find(MARK) {
        out.push_str(&rest[..at]);
        let after = &rest[at + MARK.len()..];
        let end = after
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '-'))
            .unwrap_or(after.len());
        match parameters.get(&after[..end]) {
            Some(Value::String(value)) => out.push_str(value),
            Some(other) => out.push_str(&other.to_string()),
            None => {}
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

fn cx_response(answer: Answer<'_>, channel: &str) -> Value {
    let intent = answer.intent;
    let agent_name = format!(
        "projects/{}/locations/{}/agents/{}",
        answer.agent.project, answer.agent.location, answer.agent.agent_id
    );
    let messages: Vec<Value> = answer
        .replies
        .iter()
        .filter(|r| r.platform.is_none())
        .filter(|r| r.channel.as_deref().is_none_or(|c| c == channel))
        .map(|reply| {
            let mut message = content(reply, answer.parameters, true);
            if let Some(channel) = &reply.channel {
                message.insert("channel".into(), json!(channel));
            }
            message.insert(
                "responseType".into(),
                answer.enums.write(HANDLER.0, HANDLER.1),
            );
            Value::Object(message)
        })
        .collect();
    let match_type = match (intent, answer.query) {
        (Some(_), Query::Text(_)) => wire::MATCH_INTENT,
        (_, Query::Event(_)) => wire::MATCH_EVENT,
        (None, Query::Text(_)) => wire::MATCH_NO_MATCH,
    };
    let intent_json = intent.map(|(index, intent)| {
        json!({"name": format!("{agent_name}/intents/{}", intent_id(index)), "displayName": intent.name})
    });
    let mut result = Map::new();
    match answer.query {
        Query::Text(text) => result.insert("text".into(), json!(text)),
        Query::Event(event) => result.insert("triggerEvent".into(), json!(event)),
    };
    result.insert("languageCode".into(), json!(answer.language));
    result.insert(
        "parameters".into(),
        Value::Object(answer.parameters.clone()),
    );
    result.insert("responseMessages".into(), Value::Array(messages));
    result.insert(
        "currentPage".into(),
        json!({"name": format!("{agent_name}/flows/00000000-0000-0000-0000-000000000000/pages/START_PAGE"), "displayName": "Start Page"}),
    );
    let mut matched = json!({"matchType": answer.enums.write(match_type.0, match_type.1), "confidence": answer.confidence});
    if let Some(intent_json) = &intent_json {
        result.insert("intent".into(), intent_json.clone());
        result.insert("intentDetectionConfidence".into(), json!(answer.confidence));
        matched["intent"] = intent_json.clone();
    }
    result.insert("match".into(), matched);
    json!({"responseId": answer.response_id, "queryResult": result})
}

const HANDLER: (&str, i32) = wire::HANDLER_PROMPT;

fn es_response(answer: Answer<'_>) -> Value {
    let intent = answer.intent;
    let agent_name = match answer.agent.location.as_str() {
        "global" => format!("projects/{}/agent", answer.agent.project),
        location => format!(
            "projects/{}/locations/{location}/agent",
            answer.agent.project
        ),
    };
    let messages: Vec<Value> = answer
        .replies
        .iter()
        .filter(|r| r.channel.is_none())
        .map(|reply| {
            let mut message = content(reply, answer.parameters, false);
            // PLATFORM_UNSPECIFIED is the default value, which proto3 JSON leaves out.
            if let Some(platform) = &reply.platform {
                let number = wire::platform_number(platform).unwrap_or(0);
                if number != 0 {
                    message.insert("platform".into(), answer.enums.write(platform, number));
                }
            }
            Value::Object(message)
        })
        .collect();
    let fulfillment_text = answer
        .replies
        .iter()
        .find(|r| {
            r.channel.is_none()
                && r.platform
                    .as_deref()
                    .is_none_or(|p| p == "PLATFORM_UNSPECIFIED")
        })
        .and_then(|r| r.text.as_deref())
        .map(|t| fill(t, answer.parameters))
        .unwrap_or_default();
    let query_text = match answer.query {
        Query::Text(text) => text.clone(),
        Query::Event(event) => event.clone(),
    };
    let mut result = json!({
        "queryText": query_text,
        "languageCode": answer.language,
        "parameters": answer.parameters,
        "allRequiredParamsPresent": true,
        "fulfillmentText": fulfillment_text,
        "fulfillmentMessages": messages,
    });
    match intent {
        Some((index, intent)) => {
            result["intent"] = json!({"name": format!("{agent_name}/intents/{}", intent_id(index)), "displayName": intent.name});
            result["intentDetectionConfidence"] = json!(answer.confidence);
        }
        None if matches!(answer.query, Query::Text(_)) => {
            result["intent"] = json!({"name": format!("{agent_name}/intents/{}", intent_id(usize::MAX >> 16)), "displayName": "Default Fallback Intent", "isFallback": true});
            result["intentDetectionConfidence"] = json!(1.0);
        }
        None => {}
    }
    json!({"responseId": answer.response_id, "queryResult": result})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_detect_intent_path() {
        let cx = parse_path("/v3/projects/p/locations/global/agents/a/sessions/s1:detectIntent")
            .unwrap();
        assert_eq!(
            (cx.api, cx.agent_id.as_deref(), cx.session.as_str()),
            (
                Api::Cx,
                Some("a"),
                "projects/p/locations/global/agents/a/sessions/s1"
            )
        );
        let env = parse_path(
            "/v3/projects/p/locations/l/agents/a/environments/e/sessions/s:detectIntent",
        )
        .unwrap();
        assert_eq!(env.location, "l");
        let es = parse_path("/v2/projects/p/agent/sessions/s:detectIntent").unwrap();
        assert_eq!((es.api, es.location.as_str()), (Api::Es, "global"));
        let regional =
            parse_path("/v2/projects/p/locations/europe-west2/agent/sessions/s:detectIntent")
                .unwrap();
        assert_eq!(regional.location, "europe-west2");
        assert!(parse_path("/v2/projects/p/agent/sessions/s:streamingDetectIntent").is_none());
        assert!(parse_path("/v2/projects/p/agent/intents").is_none());
    }

    #[test]
    fn fills_session_parameters() {
        let mut params = Map::new();
        params.insert("size".into(), json!("large"));
        params.insert("count".into(), json!(2));
        assert_eq!(
            fill("A $session.params.size pizza", &params),
            "A large pizza"
        );
        assert_eq!(
            fill("$session.params.count, $session.params.missing.", &params),
            "2, ."
        );
    }
}
