//! WhatsApp's menus: reply buttons (`twilio/quick-reply`) for up to three short
//! choices, a list picker (`twilio/list-picker`) for up to ten. WhatsApp takes them
//! only as Content API contents sent by `ContentSid`, so each distinct menu is created
//! once, and its SID kept in the state store (shared between instances when Redis is
//! configured) under a hash of what it shows.
//!
//! The menu's text is not part of the content: it is the content variable `{{1}}`,
//! given with each send. So one content serves every menu of the same choices, however
//! the agent words the question, and no person's words are stored in the Content API.
//!
//! A menu that does not fit WhatsApp's limits is not cut: it is shown as a numbered
//! text menu instead ([`crate::menu`]), which loses nothing.

use crate::menu::{id_of, MenuFormat};
use crate::outbox::Messaging;
use crate::reply::ReplyMessage;
use crate::state::{Slot, StateStore};
use crate::twilio::messages_api::SendError;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::time::Duration;

/// WhatsApp's limits for session messages with buttons or lists, as Twilio documents
/// them for its Content API types.
pub const MAX_BODY_CHARS: usize = 1024;
/// Reply buttons in a message sent inside the 24-hour session, without approval.
pub const MAX_BUTTONS: usize = 3;
pub const MAX_BUTTON_TITLE_CHARS: usize = 20;
pub const MAX_LIST_ITEMS: usize = 10;
pub const MAX_ITEM_TITLE_CHARS: usize = 24;
pub const MAX_ITEM_DESCRIPTION_CHARS: usize = 72;
pub const MAX_ID_CHARS: usize = 200;

/// A menu's content, made once: its `ContentSid`.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
struct ContentSid(String);

impl crate::state::Record for ContentSid {
    const KIND: &'static str = "content";
}

/// Contents are permanent in Twilio; the SID is remembered this long, then made again.
const REMEMBERED: Slot<ContentSid> = Slot::new("content", Duration::from_secs(30 * 24 * 3600));

/// Which WhatsApp message shows a menu.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    QuickReply,
    ListPicker,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::QuickReply => "quick_reply",
            Kind::ListPicker => "list_picker",
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Kind::QuickReply => "twilio/quick-reply",
            Kind::ListPicker => "twilio/list-picker",
        }
    }
}

/// Why a menu is shown as text rather than as WhatsApp buttons or a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DoesNotFit {
    BodyTooLong,
    TooManyChoices,
    TitleTooLong,
    DescriptionTooLong,
    IdTooLong,
}

impl DoesNotFit {
    pub fn label(self) -> &'static str {
        match self {
            DoesNotFit::BodyTooLong => "body_too_long",
            DoesNotFit::TooManyChoices => "too_many_choices",
            DoesNotFit::TitleTooLong => "title_too_long",
            DoesNotFit::DescriptionTooLong => "description_too_long",
            DoesNotFit::IdTooLong => "id_too_long",
        }
    }
}

/// A menu as one Content API type: what is created, and what its SID is kept under.
#[derive(Debug, Clone, PartialEq)]
pub struct Menu {
    pub kind: Kind,
    /// The value of `types` in the Content API's create request; the body is `{{1}}`.
    pub types: Value,
    /// `ContentVariables` of the send: the body.
    pub variables: String,
}

/// The body's place in the content.
const BODY_VARIABLE: &str = "{{1}}";

impl Menu {
    /// `message`'s menu as WhatsApp shows it, or why it does not fit.
    pub fn of(message: &ReplyMessage, format: &MenuFormat) -> Result<Self, DoesNotFit> {
        let chars = |text: &str| text.chars().count();
        let body = format.body_of(message);
        if chars(body) > MAX_BODY_CHARS {
            return Err(DoesNotFit::BodyTooLong);
        }
        let choices = &message.choices;
        if choices.is_empty() || choices.len() > MAX_LIST_ITEMS {
            return Err(DoesNotFit::TooManyChoices);
        }
        let ids: Vec<String> = choices.iter().map(id_of).collect();
        if ids
            .iter()
            .any(|id| chars(id) > MAX_ID_CHARS || id.is_empty())
        {
            return Err(DoesNotFit::IdTooLong);
        }
        let buttons = choices.len() <= MAX_BUTTONS
            && choices
                .iter()
                .all(|c| chars(&c.title) <= MAX_BUTTON_TITLE_CHARS && c.description.is_none());
        if buttons {
            let actions: Vec<Value> = choices
                .iter()
                .zip(&ids)
                .map(|(c, id)| json!({"title": c.title, "id": id}))
                .collect();
            let kind = Kind::QuickReply;
            let mut types = serde_json::Map::new();
            types.insert(
                kind.content_type().into(),
                json!({"body": BODY_VARIABLE, "actions": actions}),
            );
            return Ok(Self {
                kind,
                types: Value::Object(types),
                variables: json!({"1": body}).to_string(),
            });
        }
        if choices
            .iter()
            .any(|c| chars(&c.title) > MAX_ITEM_TITLE_CHARS)
        {
            return Err(DoesNotFit::TitleTooLong);
        }
        if choices.iter().any(|c| {
            c.description
                .as_deref()
                .is_some_and(|d| chars(d) > MAX_ITEM_DESCRIPTION_CHARS)
        }) {
            return Err(DoesNotFit::DescriptionTooLong);
        }
        let items: Vec<Value> = choices
            .iter()
            .zip(&ids)
            .map(|(c, id)| match &c.description {
                Some(description) => json!({"item": c.title, "id": id, "description": description}),
                None => json!({"item": c.title, "id": id}),
            })
            .collect();
        let kind = Kind::ListPicker;
        let mut types = serde_json::Map::new();
        types.insert(
            kind.content_type().into(),
            json!({"body": BODY_VARIABLE, "button": format.button, "items": items}),
        );
        Ok(Self {
            kind,
            types: Value::Object(types),
            variables: json!({"1": body}).to_string(),
        })
    }

    /// The same menu always hashes the same, whichever instance asks.
    fn hash(&self, account_sid: &str) -> String {
        let mut hash = Sha256::new();
        hash.update(account_sid.as_bytes());
        hash.update([0]);
        hash.update(self.types.to_string().as_bytes());
        hash.finalize()
            .iter()
            .take(16)
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// Forgets the content remembered for `menu`: WhatsApp refused it (deleted, or of
/// another account), and the next menu of its kind makes a new one.
pub async fn forget(menu: &Menu, api: &dyn Messaging, state: &StateStore) {
    state
        .remove(&REMEMBERED, &menu.hash(api.account_sid()))
        .await;
}

/// What became of a menu's content.
pub enum Content {
    /// Made before (by any instance), or just now.
    Ready { sid: String, created: bool },
    /// The Content API refused or did not answer.
    Failed(SendError),
}

/// The `ContentSid` that shows `menu` for `api`'s account: the one remembered, or one
/// created now (and remembered).
pub async fn content_for(menu: &Menu, api: &dyn Messaging, state: &StateStore) -> Content {
    let hash = menu.hash(api.account_sid());
    // One remembered that cannot be read (logged and counted) is made again, and the
    // new one remembered in its place.
    if let Ok(Some(ContentSid(sid))) = state.get(&REMEMBERED, &hash).await {
        return Content::Ready {
            sid,
            created: false,
        };
    }
    let request = json!({
        "friendly_name": format!("twilio-dialogflow menu {hash}"),
        // The language of a template submitted for approval; menus are never submitted.
        "language": "en",
        "variables": {"1": "Choose one:"},
        "types": menu.types,
    });
    match api.create_content(&request).await {
        Ok(sid) => {
            let sid = ContentSid(sid);
            state.set(&REMEMBERED, &hash, &sid).await;
            Content::Ready {
                sid: sid.0,
                created: true,
            }
        }
        Err(error) => Content::Failed(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reply::Answer;

    fn menu(titles: &[&str]) -> ReplyMessage {
        ReplyMessage::menu("Size?", titles)
    }

    #[test]
    fn three_short_choices_are_buttons_ten_a_list() {
        let format = MenuFormat::default();
        let buttons = Menu::of(&menu(&["Small", "Medium", "Large"]), &format).unwrap();
        assert_eq!(buttons.kind, Kind::QuickReply);
        assert_eq!(
            buttons.types,
            json!({"twilio/quick-reply": {"body": "{{1}}", "actions": [
                {"title": "Small", "id": "Small"}, {"title": "Medium", "id": "Medium"}, {"title": "Large", "id": "Large"}
            ]}})
        );
        let titles: Vec<String> = (1..=10).map(|i| format!("Topping {i}")).collect();
        let titles: Vec<&str> = titles.iter().map(String::as_str).collect();
        let list = Menu::of(&menu(&titles), &format).unwrap();
        assert_eq!(list.kind, Kind::ListPicker);
        assert_eq!(list.types["twilio/list-picker"]["button"], "Choose");
        assert_eq!(
            list.types["twilio/list-picker"]["items"][9]["item"],
            "Topping 10"
        );
    }

    #[test]
    fn the_words_are_a_variable_so_one_content_serves_every_wording() {
        let format = MenuFormat::default();
        let mut one = menu(&["Small", "Large"]);
        let mut other = one.clone();
        one.body = "Hi Ann, which size for order 123?".into();
        other.body = "Which size?".into();
        let (one, other) = (
            Menu::of(&one, &format).unwrap(),
            Menu::of(&other, &format).unwrap(),
        );
        assert_eq!(one.types, other.types);
        assert_eq!(one.hash("AC1"), other.hash("AC1"));
        assert_ne!(one.hash("AC1"), one.hash("AC2"), "contents are per account");
        assert_eq!(
            one.variables,
            r#"{"1":"Hi Ann, which size for order 123?"}"#
        );
    }

    #[test]
    fn a_long_button_title_or_a_description_makes_a_list() {
        let format = MenuFormat::default();
        let long = Menu::of(&menu(&["A button title too long", "B"]), &format).unwrap();
        assert_eq!(long.kind, Kind::ListPicker);
        let mut described = menu(&["Pepperoni"]);
        described.choices[0].description = Some("spicy".into());
        described.choices[0].answer = Some(Answer::Event("pepperoni".into()));
        let list = Menu::of(&described, &format).unwrap();
        assert_eq!(
            list.types["twilio/list-picker"]["items"][0],
            json!({"item": "Pepperoni", "id": "event:pepperoni", "description": "spicy"})
        );
    }

    #[test]
    fn what_does_not_fit_says_why() {
        let format = MenuFormat::default();
        let eleven: Vec<String> = (1..=11).map(|i| i.to_string()).collect();
        let eleven: Vec<&str> = eleven.iter().map(String::as_str).collect();
        assert_eq!(
            Menu::of(&menu(&eleven), &format),
            Err(DoesNotFit::TooManyChoices)
        );
        assert_eq!(
            Menu::of(
                &menu(&["a", "b", "c", "A title of twenty-eight chars"]),
                &format
            ),
            Err(DoesNotFit::TitleTooLong)
        );
        let mut long_body = menu(&["a"]);
        long_body.body = "x".repeat(MAX_BODY_CHARS + 1);
        assert_eq!(Menu::of(&long_body, &format), Err(DoesNotFit::BodyTooLong));
        let mut described = menu(&["a"]);
        described.choices[0].description = Some("d".repeat(73));
        assert_eq!(
            Menu::of(&described, &format),
            Err(DoesNotFit::DescriptionTooLong)
        );
        let mut long_id = menu(&["a"]);
        long_id.choices[0].answer = Some(Answer::Text("v".repeat(201)));
        assert_eq!(Menu::of(&long_id, &format), Err(DoesNotFit::IdTooLong));
    }

    #[test]
    fn a_menu_without_words_gets_the_prompt() {
        let mut bare = menu(&["Yes", "No"]);
        bare.body.clear();
        let buttons = Menu::of(&bare, &MenuFormat::default()).unwrap();
        assert_eq!(buttons.variables, r#"{"1":"Choose one:"}"#);
    }
}
