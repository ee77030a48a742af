//! The custom payloads agents answer with, read into [`ReplyMessage`]s.
//!
//! Three families are understood, from both agent types, because agents get ported
//! between CX and ES with their payloads unchanged:
//! - ours (the Node sample's, extended): `{"body", "media", "choices"}`, or a Content
//!   API template `{"contentSid", "contentVariables", "contentChoices"}` (the choices
//!   its buttons offer, read like `choices`); in ES under a `twilio` key;
//! - Dialogflow Messenger's `richContent` (chips, button, list, info, image,
//!   description, accordion), which CX agents are written with;
//! - the ES rich message shapes (`quickReplies`, `card`, `image`) inside the `twilio`
//!   payload, since ES has no Twilio platform of its own.
//!
//! Anything else is another integration's payload: not an error, and not sent.

use super::HandoffRequest;
use crate::reply::{Answer, Choice, ReplyMessage, Template};
use serde_json::{Map, Value};

/// The messages a custom payload asks for: none when it is meant for something else.
pub fn replies_from_payload(payload: &Map<String, Value>) -> Vec<ReplyMessage> {
    let object = match payload.get("twilio") {
        Some(Value::Object(inner)) => inner,
        _ => payload,
    };
    if let Some(Value::Array(groups)) = object.get("richContent") {
        return rich_content(groups);
    }
    let mut replies = Vec::new();
    if let Some(template) = template(object) {
        replies.push(ReplyMessage {
            template: Some(template),
            ..ReplyMessage::default()
        });
    }
    if let Some(Value::Object(quick)) = object.get("quickReplies") {
        replies.push(quick_replies(
            text_of(quick.get("title")),
            strings(quick.get("quickReplies")),
        ));
    }
    if let Some(Value::Object(card)) = object.get("card") {
        let buttons = match card.get("buttons") {
            Some(Value::Array(buttons)) => buttons
                .iter()
                .filter_map(Value::as_object)
                .map(|b| (text_of(b.get("text")), text_of(b.get("postback"))))
                .collect(),
            _ => Vec::new(),
        };
        replies.push(card_message(
            &text_of(card.get("title")),
            &text_of(card.get("subtitle")),
            &text_of(card.get("imageUri")),
            buttons,
        ));
    }
    if let Some(Value::Object(image)) = object.get("image") {
        let url = text_of(image.get("imageUri"));
        if !url.is_empty() {
            replies.push(ReplyMessage::media(vec![url]));
        }
    }
    let message = ReplyMessage {
        body: text_of(object.get("body")),
        media: match object.get("media") {
            Some(Value::String(url)) => vec![url.clone()],
            Some(Value::Array(urls)) => urls
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            _ => Vec::new(),
        },
        choices: match object.get("choices") {
            Some(Value::Array(choices)) => choices.iter().filter_map(choice).collect(),
            _ => Vec::new(),
        },
        template: None,
    };
    replies.push(message);
    replies.retain(|m| !m.is_empty());
    replies
}

/// The hand-over a payload asks for, `{"handoff": {...}}` (CX) or `{"twilio":
/// {"handoff": {...}}}` (ES), with its metadata; `"handoff": true` has none.
pub fn handoff_from_payload(payload: &Map<String, Value>) -> Option<HandoffRequest> {
    let object = match payload.get("twilio") {
        Some(Value::Object(inner)) => inner,
        _ => payload,
    };
    let metadata = match object.get("handoff")? {
        Value::Object(metadata) => metadata.clone(),
        Value::Bool(true) => Map::new(),
        _ => return None,
    };
    Some(HandoffRequest {
        metadata,
        trigger: "payload",
    })
}

/// Text variants of one message: Dialogflow returns one at run time, but an agent may
/// send several lines; they stay together in one message.
pub fn reply_from_text(lines: &[String]) -> Option<ReplyMessage> {
    let message = ReplyMessage::text(lines.join("\n"));
    (!message.is_empty()).then_some(message)
}

/// An ES quick-replies message: a question and its answers.
pub fn quick_replies(title: String, replies: Vec<String>) -> ReplyMessage {
    ReplyMessage {
        body: title,
        choices: replies
            .into_iter()
            .filter(|r| !r.trim().is_empty())
            .map(Choice::titled)
            .collect(),
        ..ReplyMessage::default()
    }
}

/// An ES card: title and subtitle as text, its image as media, and its buttons as
/// choices, except those whose postback is a link, which are written out.
pub fn card_message(
    title: &str,
    subtitle: &str,
    image: &str,
    buttons: Vec<(String, String)>,
) -> ReplyMessage {
    let mut lines: Vec<String> = [title, subtitle]
        .into_iter()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    let mut choices = Vec::new();
    for (text, postback) in buttons {
        if is_link(&postback) {
            lines.push(format!("{text}: {postback}"));
        } else if !text.is_empty() {
            choices.push(Choice {
                answer: (!postback.is_empty() && postback != text)
                    .then_some(Answer::Text(postback)),
                ..Choice::titled(text)
            });
        }
    }
    ReplyMessage {
        body: lines.join("\n"),
        media: [image]
            .into_iter()
            .filter(|u| !u.is_empty())
            .map(str::to_owned)
            .collect(),
        choices,
        template: None,
    }
}

fn is_link(text: &str) -> bool {
    text.starts_with("https://") || text.starts_with("http://")
}

fn text_of(value: Option<&Value>) -> String {
    match value {
        Some(Value::String(text)) => text.clone(),
        _ => String::new(),
    }
}

fn strings(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

/// `{"contentSid": "HX…", "contentVariables": {...} or "{...}", "contentChoices": [...]}`.
/// A button's id (set in the content) is its choice's `value`, `event:NAME` for its
/// `event`, or its title: the same ids the bridge gives the buttons it makes.
fn template(object: &Map<String, Value>) -> Option<Template> {
    let sid = object.get("contentSid")?.as_str()?.trim();
    if sid.is_empty() {
        return None;
    }
    let variables = match object.get("contentVariables") {
        Some(Value::Object(map)) => Some(Value::Object(map.clone()).to_string()),
        Some(Value::String(text)) if !text.trim().is_empty() => Some(text.clone()),
        _ => None,
    };
    let choices = match object.get("contentChoices") {
        Some(Value::Array(choices)) => choices.iter().filter_map(choice).collect(),
        _ => Vec::new(),
    };
    Some(Template {
        sid: sid.to_owned(),
        variables,
        choices,
    })
}

/// One of our payload's choices: `"Small"`, or `{"title", "description", "value"}`
/// (the text the agent gets) or `{"title", "event"}` (an event instead).
fn choice(value: &Value) -> Option<Choice> {
    match value {
        Value::String(title) if !title.trim().is_empty() => Some(Choice::titled(title.clone())),
        Value::Object(fields) => {
            let title = text_of(fields.get("title"));
            if title.trim().is_empty() {
                return None;
            }
            let description = Some(text_of(fields.get("description"))).filter(|d| !d.is_empty());
            let answer = match (fields.get("event"), fields.get("value")) {
                (Some(event), _) => event_name(event).map(Answer::Event),
                (None, Some(Value::String(value))) if !value.is_empty() => {
                    Some(Answer::Text(value.clone()))
                }
                _ => None,
            };
            Some(Choice {
                title,
                description,
                answer,
            })
        }
        _ => None,
    }
}

/// An event given as `"name"`, or as Messenger's `{"event": "name", ...}` (CX) or
/// `{"name": "name", ...}` (ES).
fn event_name(value: &Value) -> Option<String> {
    match value {
        Value::String(name) if !name.is_empty() => Some(name.clone()),
        Value::Object(fields) => fields
            .get("event")
            .or_else(|| fields.get("name"))
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .map(str::to_owned),
        _ => None,
    }
}

/// An item's picture: `image.src.rawUrl` in the current Messenger, `image.rawUrl` in
/// the first.
fn image_of(item: &Map<String, Value>) -> Option<String> {
    let image = item.get("image")?.as_object()?;
    let url = image
        .get("src")
        .and_then(Value::as_object)
        .map(|src| text_of(src.get("rawUrl")))
        .filter(|url| !url.is_empty())
        .unwrap_or_else(|| text_of(image.get("rawUrl")));
    (!url.is_empty()).then_some(url)
}

/// An item's link: `link` (or an info's `actionLink`) in the first Messenger,
/// `anchor.href` in the current one.
fn link_of(item: &Map<String, Value>) -> String {
    let anchor = item
        .get("anchor")
        .and_then(Value::as_object)
        .map(|anchor| text_of(anchor.get("href")))
        .unwrap_or_default();
    [
        text_of(item.get("link")),
        text_of(item.get("actionLink")),
        anchor,
    ]
    .into_iter()
    .find(|l| !l.is_empty())
    .unwrap_or_default()
}

/// Messenger's `richContent`: a list of cards, each a list of items. Each card becomes
/// one message: its words as text, its images as media, its chips, buttons and list
/// items as choices.
fn rich_content(groups: &[Value]) -> Vec<ReplyMessage> {
    groups
        .iter()
        .filter_map(Value::as_array)
        .map(|items| {
            let mut message = ReplyMessage::default();
            let mut lines = Vec::new();
            for item in items.iter().filter_map(Value::as_object) {
                rich_item(item, &mut lines, &mut message);
            }
            message.body = lines.join("\n");
            message
        })
        .filter(|m| !m.is_empty())
        .collect()
}

fn rich_item(item: &Map<String, Value>, lines: &mut Vec<String>, message: &mut ReplyMessage) {
    let field = |name: &str| text_of(item.get(name));
    let mut push = |text: String| {
        if !text.trim().is_empty() {
            lines.push(text);
        }
    };
    let kind = field("type");
    match kind.as_str() {
        "info" => {
            push(field("title"));
            push(field("subtitle"));
            push(link_of(item));
            message.media.extend(image_of(item));
        }
        "description" => {
            push(field("title"));
            strings(item.get("text")).into_iter().for_each(&mut push);
        }
        "accordion" => {
            push(field("title"));
            push(field("subtitle"));
            push(field("text"));
            message.media.extend(image_of(item));
        }
        "image" => {
            let url = field("rawUrl");
            if !url.is_empty() {
                message.media.push(url);
            }
        }
        "chips" => {
            let options = match item.get("options") {
                Some(Value::Array(options)) => options.as_slice(),
                _ => &[],
            };
            for option in options.iter().filter_map(Value::as_object) {
                let text = text_of(option.get("text"));
                let link = link_of(option);
                if text.trim().is_empty() {
                    continue;
                }
                if link.is_empty() {
                    message.choices.push(Choice::titled(text));
                } else {
                    push(format!("{text}: {link}"));
                }
            }
        }
        "button" | "list" => {
            let title = if kind == "button" {
                field("text")
            } else {
                field("title")
            };
            let link = link_of(item);
            let event = item.get("event").and_then(event_name);
            if title.trim().is_empty() {
                return;
            }
            match event {
                Some(event) => message.choices.push(Choice {
                    title,
                    description: Some(field("subtitle")).filter(|s| !s.is_empty()),
                    answer: Some(Answer::Event(event)),
                }),
                None if !link.is_empty() => push(format!("{title}: {link}")),
                None => message.choices.push(Choice {
                    description: Some(field("subtitle")).filter(|s| !s.is_empty()),
                    ..Choice::titled(title)
                }),
            }
        }
        "divider" => {}
        other => {
            tracing::info!(
                rich_content_type = other,
                "a richContent item of a type the bridge does not show was skipped"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn choice(title: &str, description: Option<&str>, answer: Option<Answer>) -> Choice {
        Choice {
            title: title.into(),
            description: description.map(Into::into),
            answer,
        }
    }

    fn read(value: Value) -> Vec<ReplyMessage> {
        match value {
            Value::Object(map) => replies_from_payload(&map),
            _ => unreachable!("test payloads are objects"),
        }
    }

    #[test]
    fn reads_cx_and_es_spellings() {
        let want = vec![ReplyMessage {
            body: "Menu".into(),
            media: vec!["https://x/menu.jpg".into()],
            ..ReplyMessage::default()
        }];
        assert_eq!(
            read(json!({"body": "Menu", "media": "https://x/menu.jpg"})),
            want
        );
        assert_eq!(
            read(json!({"twilio": {"body": "Menu", "media": ["https://x/menu.jpg"]}})),
            want
        );
    }

    #[test]
    fn ignores_payloads_for_other_integrations() {
        assert_eq!(read(json!({"facebook": {"attachment": {}}})), vec![]);
        assert_eq!(read(json!({"body": 3, "media": {"url": "x"}})), vec![]);
    }

    #[test]
    fn our_choices_and_templates() {
        let got = read(json!({
            "body": "Size?",
            "choices": ["Small", {"title": "Large", "description": "14 inch", "value": "large"},
                        {"title": "Help", "event": "help"}, {"nope": 1}, ""]
        }));
        assert_eq!(got.len(), 1);
        assert_eq!(
            got[0].choices,
            vec![
                Choice::titled("Small"),
                choice("Large", Some("14 inch"), Some(Answer::Text("large".into()))),
                choice("Help", None, Some(Answer::Event("help".into()))),
            ]
        );
        let template =
            read(json!({"twilio": {"contentSid": "HX1", "contentVariables": {"1": "Ann"}}}));
        assert_eq!(
            template[0].template,
            Some(Template {
                sid: "HX1".into(),
                variables: Some(r#"{"1":"Ann"}"#.into()),
                choices: Vec::new(),
            })
        );
        let offering = read(json!({"contentSid": "HX1", "contentChoices": [
            "Yes", {"title": "Help", "event": "help"}, {"title": "No", "value": "no_thanks"}
        ]}));
        assert_eq!(
            offering[0].template.as_ref().map(|t| t.choices.clone()),
            Some(vec![
                Choice::titled("Yes"),
                choice("Help", None, Some(Answer::Event("help".into()))),
                choice("No", None, Some(Answer::Text("no_thanks".into()))),
            ])
        );
    }

    #[test]
    fn messenger_rich_content_becomes_one_message_per_card() {
        let got = read(json!({"richContent": [
            [
                {"type": "info", "title": "Pizzabot", "subtitle": "Fresh pizza", "actionLink": "https://p.example"},
                {"type": "image", "rawUrl": "https://p.example/p.png", "accessibilityText": "a pizza"},
                {"type": "chips", "options": [{"text": "Small"}, {"text": "Site", "link": "https://p.example"}]},
                {"type": "divider"},
                {"type": "carousel"}
            ],
            [
                {"type": "description", "title": "Toppings", "text": ["Pick one", "or two"]},
                {"type": "list", "title": "Pepperoni", "subtitle": "spicy", "event": {"event": "pepperoni", "languageCode": "en"}},
                {"type": "button", "text": "Call us", "anchor": {"href": "tel:+1"}},
                {"type": "button", "text": "Help", "event": {"name": "help"}},
                {"type": "accordion", "title": "Allergens", "text": "gluten", "image": {"src": {"rawUrl": "https://p.example/a.png"}}}
            ]
        ]}));
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[0].body,
            "Pizzabot\nFresh pizza\nhttps://p.example\nSite: https://p.example"
        );
        assert_eq!(got[0].media, vec!["https://p.example/p.png".to_string()]);
        assert_eq!(got[0].choices, vec![Choice::titled("Small")]);
        assert_eq!(
            got[1].body,
            "Toppings\nPick one\nor two\nCall us: tel:+1\nAllergens\ngluten"
        );
        assert_eq!(got[1].media, vec!["https://p.example/a.png".to_string()]);
        assert_eq!(
            got[1].choices,
            vec![
                choice(
                    "Pepperoni",
                    Some("spicy"),
                    Some(Answer::Event("pepperoni".into()))
                ),
                choice("Help", None, Some(Answer::Event("help".into())))
            ]
        );
    }

    #[test]
    fn es_shapes_inside_the_twilio_payload() {
        let got = read(json!({"twilio": {
            "quickReplies": {"title": "Size?", "quickReplies": ["Small", "Large"]},
            "card": {"title": "Pepperoni", "subtitle": "$11", "imageUri": "https://p/p.png",
                     "buttons": [{"text": "Order", "postback": "order pepperoni"}, {"text": "Web", "postback": "https://p"}]}
        }}));
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].body, "Size?");
        assert_eq!(
            got[0].choices,
            vec![Choice::titled("Small"), Choice::titled("Large")]
        );
        assert_eq!(got[1].body, "Pepperoni\n$11\nWeb: https://p");
        assert_eq!(got[1].media, vec!["https://p/p.png".to_string()]);
        assert_eq!(
            got[1].choices[0].answer(),
            Answer::Text("order pepperoni".into())
        );
    }

    #[test]
    fn hand_over_payloads() {
        let metadata = |value: Value| match value {
            Value::Object(map) => handoff_from_payload(&map).map(|h| h.metadata),
            _ => unreachable!(),
        };
        assert_eq!(
            metadata(json!({"handoff": {"queue": "billing"}})).map(|m| m.len()),
            Some(1)
        );
        assert_eq!(
            metadata(json!({"twilio": {"handoff": true}})),
            Some(Map::new())
        );
        assert_eq!(metadata(json!({"handoff": false})), None);
        assert_eq!(metadata(json!({"body": "hi"})), None);
        // A hand-over payload sends nothing by itself.
        assert_eq!(read(json!({"handoff": {"queue": "billing"}})), vec![]);
    }

    #[test]
    fn joins_text_lines() {
        assert_eq!(
            reply_from_text(&["a".into(), "b".into()]),
            Some(ReplyMessage::text("a\nb"))
        );
        assert_eq!(reply_from_text(&[]), None);
    }
}
