//! The Content API (<https://www.twilio.com/docs/content/content-api-resources>):
//! `POST /v1/Content` creates a content, `GET /v1/Content/{Sid}` fetches one, with the
//! limits Twilio documents for `twilio/text`, `twilio/quick-reply` and
//! `twilio/list-picker` ([`super::limits`]); and what a send by `ContentSid` needs of
//! it: its body, and the `ContentVariables` filled in.

use super::errors::TwilioError;
use super::limits::{
    BUTTON_TITLE_CHARS, CONTENT_BODY_CHARS, ID_CHARS, ITEM_CHARS, ITEM_DESCRIPTION_CHARS,
    LIST_BUTTON_CHARS, LIST_ITEMS, QUICK_REPLY_ACTIONS,
};
use super::{account_of, misbehave, CreatedContent, Shared};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

/// What a content's message reads as in the message list: its body.
pub(super) fn body_of_content(types: &Value) -> String {
    types
        .as_object()
        .and_then(|types| types.values().find_map(|t| t.get("body")?.as_str()))
        .unwrap_or_default()
        .to_owned()
}

/// `ContentVariables` as Twilio takes them: a JSON object of non-empty strings.
pub(super) fn variables_are_valid(variables: &str) -> bool {
    serde_json::from_str::<Map<String, Value>>(variables).is_ok_and(|map| {
        map.values()
            .all(|v| v.as_str().is_some_and(|s| !s.is_empty()))
    })
}

/// `{{1}}`, `{{2}}`… replaced by the send's `ContentVariables`.
pub(super) fn fill_variables(body: &str, variables: &str) -> String {
    let values: Map<String, Value> = serde_json::from_str(variables).unwrap_or_default();
    values.iter().fold(body.to_owned(), |body, (name, value)| {
        body.replace(
            &format!("{{{{{name}}}}}"),
            value.as_str().unwrap_or_default(),
        )
    })
}

/// How a content type's entries are checked: the list they are in, how many it takes,
/// and the field that names each and its longest.
struct Entries {
    list: &'static str,
    most: usize,
    title: &'static str,
    title_max: usize,
    id_required: bool,
}

/// Twilio's limits for the content types the stand-in serves, checked as the Content
/// API checks them: the problem, if any.
fn content_problem(types: &Value) -> Option<String> {
    let chars = |v: &Value| v.as_str().map_or(0, |s| s.chars().count());
    let types = types.as_object()?;
    if types.is_empty() {
        return Some("types must name at least one content type".into());
    }
    for (kind, content) in types {
        let body = content.get("body").map_or(0, chars);
        if body == 0 || body > CONTENT_BODY_CHARS {
            return Some(format!(
                "{kind}: body must be 1 to {CONTENT_BODY_CHARS} characters"
            ));
        }
        let entries = match kind.as_str() {
            "twilio/quick-reply" => Entries {
                list: "actions",
                most: QUICK_REPLY_ACTIONS,
                title: "title",
                title_max: BUTTON_TITLE_CHARS,
                id_required: false,
            },
            "twilio/list-picker" => Entries {
                list: "items",
                most: LIST_ITEMS,
                title: "item",
                title_max: ITEM_CHARS,
                id_required: true,
            },
            "twilio/text" => continue,
            other => {
                return Some(format!(
                    "content type {other} is not served by the stand-in"
                ))
            }
        };
        let Entries {
            list: name,
            most,
            title,
            title_max,
            id_required,
        } = entries;
        let list = content.get(name).and_then(Value::as_array);
        let Some(list) = list.filter(|l| !l.is_empty() && l.len() <= most) else {
            return Some(format!("{kind}: {name} must be 1 to {most}"));
        };
        for entry in list {
            let t = entry.get(title).map_or(0, chars);
            if t == 0 || t > title_max {
                return Some(format!(
                    "{kind}: {title} must be 1 to {title_max} characters"
                ));
            }
            let id = entry.get("id").map(chars);
            if id.is_some_and(|id| id > ID_CHARS) || (id_required && id.unwrap_or(0) == 0) {
                return Some(format!("{kind}: id must be 1 to {ID_CHARS} characters"));
            }
            // Twilio's table marks an item's description required, yet takes items
            // without one; only its length is held to the limit.
            if entry
                .get("description")
                .is_some_and(|d| chars(d) > ITEM_DESCRIPTION_CHARS)
            {
                return Some(format!(
                    "{kind}: description must be at most {ITEM_DESCRIPTION_CHARS} characters"
                ));
            }
        }
        if kind == "twilio/list-picker"
            && content
                .get("button")
                .is_none_or(|b| chars(b) == 0 || chars(b) > LIST_BUTTON_CHARS)
        {
            return Some(format!(
                "{kind}: button must be 1 to {LIST_BUTTON_CHARS} characters"
            ));
        }
    }
    None
}

fn content_json(content: &CreatedContent) -> Value {
    json!({
        "sid": content.sid,
        "account_sid": content.account_sid,
        "friendly_name": content.friendly_name,
        "language": "en",
        "variables": {},
        "types": content.types,
        "url": format!("https://content.twilio.com/v1/Content/{}", content.sid),
    })
}

/// `POST /v1/Content`: creates a content, as the Content API does.
pub(super) async fn create(
    State(shared): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let failure = {
        let mut recorded = shared.lock();
        (!recorded.content_failures.is_empty()).then(|| recorded.content_failures.remove(0))
    };
    if let Some(fault) = failure {
        return misbehave(fault).await;
    }
    let Some(account) = account_of(&headers, &shared.credentials) else {
        return TwilioError::unauthenticated().into_response();
    };
    let request: Value = match serde_json::from_slice(&body) {
        Ok(value) => value,
        Err(_) => return TwilioError::invalid_parameter("Invalid JSON").into_response(),
    };
    let types = request.get("types").cloned().unwrap_or_default();
    if request
        .get("language")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return TwilioError::invalid_parameter("language is required").into_response();
    }
    if let Some(problem) = content_problem(&types) {
        return TwilioError::invalid_parameter(problem).into_response();
    }
    let content = {
        let mut recorded = shared.lock();
        let content = CreatedContent {
            sid: format!("HX{:032x}", recorded.contents.len() + 1),
            account_sid: account,
            friendly_name: request
                .get("friendly_name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            types,
        };
        recorded.contents.push(content.clone());
        content
    };
    shared.changed.notify_waiters();
    (StatusCode::CREATED, Json(content_json(&content))).into_response()
}

/// `GET /v1/Content/{Sid}`.
pub(super) async fn fetch(
    State(shared): State<Shared>,
    Path(sid): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let Some(account) = account_of(&headers, &shared.credentials) else {
        return TwilioError::unauthenticated().into_response();
    };
    let content = shared
        .lock()
        .contents
        .iter()
        .find(|c| c.sid == sid && c.account_sid == account)
        .cloned();
    match content {
        Some(content) => Json(content_json(&content)).into_response(),
        None => TwilioError::not_found(uri.path()).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_contents_to_twilios_limits() {
        let buttons = |title: &str, id: &str| json!({"twilio/quick-reply": {"body": "Pick", "actions": [{"title": title, "id": id}]}});
        let list = |item: &str, id: &str, description: &str, button: &str| {
            json!({"twilio/list-picker": {"body": "Pick", "button": button,
                "items": [{"item": item, "id": id, "description": description}]}})
        };
        assert_eq!(content_problem(&buttons(&"b".repeat(20), "x")), None);
        assert!(content_problem(&buttons(&"b".repeat(21), "x")).is_some());
        assert!(content_problem(&buttons("b", &"i".repeat(201))).is_some());
        assert_eq!(
            content_problem(&list(&"i".repeat(24), "x", "d", "Choose")),
            None
        );
        assert!(content_problem(&list(&"i".repeat(25), "x", "d", "Choose")).is_some());
        assert!(content_problem(&list("i", "", "d", "Choose")).is_some());
        assert!(content_problem(&list("i", "x", &"d".repeat(73), "Choose")).is_some());
        assert!(content_problem(&list("i", "x", "d", &"c".repeat(21))).is_some());
        let eleven: Vec<Value> = (0..11)
            .map(|i| json!({"title": i.to_string(), "id": i.to_string()}))
            .collect();
        assert!(content_problem(
            &json!({"twilio/quick-reply": {"body": "Pick", "actions": eleven}})
        )
        .is_some());
        assert!(content_problem(&json!({"twilio/text": {"body": "x".repeat(1025)}})).is_some());
        assert_eq!(
            content_problem(&json!({"twilio/text": {"body": "x".repeat(1024)}})),
            None
        );
    }

    #[test]
    fn fills_variables() {
        assert_eq!(
            fill_variables("{{1}}, pick {{2}}", r#"{"1": "Hi", "2": "one"}"#),
            "Hi, pick one"
        );
        assert!(variables_are_valid(r#"{"1": "a"}"#));
        assert!(!variables_are_valid(r#"{"1": ""}"#));
        assert!(!variables_are_valid("[1]"));
    }
}
