//! Menus: an agent's choices as text, and a person's answer read back as one of them.
//!
//! Where WhatsApp buttons cannot carry a menu (SMS, MMS, the webhook's TwiML answer,
//! content that does not fit), it is written out as a numbered menu: "1 Small ·
//! 2 Medium · 3 Large". The menu is remembered per conversation, so that "2", or
//! "medium" typed in any case and with or without accents, is taken as that choice.

use crate::reply::{Answer, Choice, ReplyMessage};
use serde::{Deserialize, Serialize};
use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

/// A menu's wording, configurable (`MENU_ITEM`, `MENU_PROMPT`, `MENU_BUTTON`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MenuFormat {
    /// One choice: `{number}`, `{title}` and `{description}` are filled in.
    pub item: String,
    /// The text of a menu the agent gave no words for.
    pub prompt: String,
    /// The button that opens a WhatsApp list.
    pub button: String,
}

impl Default for MenuFormat {
    fn default() -> Self {
        Self {
            item: "{number} {title}".to_owned(),
            prompt: "Choose one:".to_owned(),
            button: "Choose".to_owned(),
        }
    }
}

/// Inline ("1 Small · 2 Large") while a menu is this short; one choice per line beyond,
/// or when a choice has a description.
const INLINE_AT_MOST: usize = 3;
const INLINE_SEPARATOR: &str = " · ";

impl MenuFormat {
    /// One choice as the menu writes it.
    pub fn item(&self, number: usize, choice: &Choice) -> String {
        let description = choice.description.as_deref().unwrap_or_default();
        let item = self
            .item
            .replace("{number}", &number.to_string())
            .replace("{title}", &choice.title)
            .replace("{description}", description);
        if !description.is_empty() && !self.item.contains("{description}") {
            format!("{item}: {description}")
        } else {
            item.trim_end().to_owned()
        }
    }

    /// The message's text followed by its menu: what a person sees without buttons.
    pub fn as_text(&self, message: &ReplyMessage) -> ReplyMessage {
        if message.choices.is_empty() {
            return ReplyMessage {
                choices: Vec::new(),
                ..message.clone()
            };
        }
        let items: Vec<String> = message
            .choices
            .iter()
            .enumerate()
            .map(|(i, choice)| self.item(i + 1, choice))
            .collect();
        let inline = items.len() <= INLINE_AT_MOST
            && message.choices.iter().all(|c| c.description.is_none());
        let menu = if inline {
            items.join(INLINE_SEPARATOR)
        } else {
            items.join("\n")
        };
        let body = match message.body.trim() {
            "" => menu,
            text => format!("{text}\n{menu}"),
        };
        ReplyMessage {
            body,
            media: message.media.clone(),
            choices: Vec::new(),
            template: None,
        }
    }

    /// The body a message with choices shows: the agent's words, or the prompt.
    pub fn body_of<'a>(&'a self, message: &'a ReplyMessage) -> &'a str {
        match message.body.trim() {
            "" => &self.prompt,
            _ => &message.body,
        }
    }
}

/// The menu a conversation is waiting on an answer to, kept in the state store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingMenu {
    pub choices: Vec<Choice>,
}

impl crate::state::Record for PendingMenu {
    const KIND: &'static str = "menu";
}

impl PendingMenu {
    /// The last menu of a turn's replies, if any: a message's choices, or those a
    /// template's buttons offer. An earlier one is replaced: its taps are no longer
    /// choices.
    pub fn of(replies: &[ReplyMessage]) -> Option<Self> {
        replies
            .iter()
            .rev()
            .map(|m| match &m.template {
                Some(template) => &template.choices,
                None => &m.choices,
            })
            .find(|choices| !choices.is_empty())
            .map(|choices| Self {
                choices: choices.clone(),
            })
    }

    /// The choice `text` picks: its title (case, accents, spacing and end punctuation
    /// aside), or else its number: a menu of "2", "4", "6" is answered by title.
    pub fn pick(&self, text: &str) -> Option<&Choice> {
        let typed = fold(text);
        if typed.is_empty() {
            return None;
        }
        if let Some(choice) = self.choices.iter().find(|c| fold(&c.title) == typed) {
            return Some(choice);
        }
        let number = typed.parse::<usize>().ok()?;
        number.checked_sub(1).and_then(|i| self.choices.get(i))
    }

    /// The choice whose button or list item has the id `id`: only a choice this menu
    /// offered. A tap's id is whatever the person's client sent, so it is read only as
    /// one of the ids the bridge gave, never on its own (`event:NAME` would otherwise
    /// ask the agent for any event).
    pub fn offered(&self, id: &str) -> Option<&Choice> {
        self.choices.iter().find(|choice| id_of(choice) == id)
    }
}

/// Lower case, without accents, spacing collapsed, without end punctuation.
fn fold(text: &str) -> String {
    let folded: String = text
        .nfd()
        .filter(|c| !is_combining_mark(*c))
        .flat_map(char::to_lowercase)
        .collect();
    folded
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .trim_end_matches(['.', '!', '?', ','])
        .to_owned()
}

/// The id of a choice's button or list item (`event:NAME` for an event, the text
/// otherwise): what [`PendingMenu::offered`] knows a tap by.
pub fn id_of(choice: &Choice) -> String {
    match choice.answer() {
        Answer::Event(event) => format!("{EVENT_ID_PREFIX}{event}"),
        Answer::Text(text) => text,
    }
}

const EVENT_ID_PREFIX: &str = "event:";

#[cfg(test)]
mod tests {
    use super::*;

    fn menu(titles: &[&str]) -> ReplyMessage {
        ReplyMessage::menu("Size?", titles)
    }

    #[test]
    fn short_menus_inline_long_ones_by_line() {
        let format = MenuFormat::default();
        assert_eq!(
            format.as_text(&menu(&["Small", "Medium", "Large"])).body,
            "Size?\n1 Small · 2 Medium · 3 Large"
        );
        assert_eq!(
            format.as_text(&menu(&["a", "b", "c", "d"])).body,
            "Size?\n1 a\n2 b\n3 c\n4 d"
        );
        let mut described = menu(&["Pepperoni"]);
        described.choices[0].description = Some("spicy".into());
        assert_eq!(format.as_text(&described).body, "Size?\n1 Pepperoni: spicy");
        let custom = MenuFormat {
            item: "({number}) {title}".into(),
            ..MenuFormat::default()
        };
        assert_eq!(
            custom.as_text(&menu(&["A", "B"])).body,
            "Size?\n(1) A · (2) B"
        );
    }

    #[test]
    fn a_number_or_a_title_picks_a_choice() {
        let pending = PendingMenu::of(&[menu(&["Small", "Crème brûlée"])]).unwrap();
        assert_eq!(
            pending.pick(" 2 ").map(|c| c.title.as_str()),
            Some("Crème brûlée")
        );
        assert_eq!(
            pending.pick("CREME  BRULEE!").map(|c| c.title.as_str()),
            Some("Crème brûlée")
        );
        assert_eq!(
            pending.pick("small").map(|c| c.title.as_str()),
            Some("Small")
        );
        assert_eq!(pending.pick("3"), None);
        assert_eq!(pending.pick("0"), None);
        assert_eq!(pending.pick("a small one"), None);
        let numbers = PendingMenu::of(&[menu(&["2", "4", "6"])]).unwrap();
        assert_eq!(numbers.pick("4").map(|c| c.title.as_str()), Some("4"));
        assert_eq!(numbers.pick("3").map(|c| c.title.as_str()), Some("6"));
    }

    #[test]
    fn a_tap_picks_only_a_choice_the_menu_offered() {
        let event = Choice {
            answer: Some(Answer::Event("help".into())),
            ..Choice::titled("Help")
        };
        let menu = PendingMenu {
            choices: vec![event.clone(), Choice::titled("Small")],
        };
        assert_eq!(menu.offered(&id_of(&event)), Some(&event));
        assert_eq!(
            menu.offered("event:help").map(Choice::answer),
            Some(Answer::Event("help".into()))
        );
        assert_eq!(
            menu.offered("Small").map(Choice::answer),
            Some(Answer::Text("Small".into()))
        );
        assert_eq!(menu.offered("event:delete_my_account"), None);
        assert_eq!(menu.offered("event:Small"), None);
        assert_eq!(menu.offered("small"), None, "an id is matched exactly");
        assert_eq!(menu.offered(""), None);
    }

    #[test]
    fn a_templates_declared_choices_are_a_menu_and_replace_the_one_before() {
        let template = ReplyMessage {
            template: Some(crate::reply::Template {
                sid: "HX1".into(),
                variables: None,
                choices: vec![Choice::titled("Yes")],
            }),
            ..ReplyMessage::default()
        };
        let pending = PendingMenu::of(&[menu(&["Small"]), template]).unwrap();
        assert_eq!(pending.choices, vec![Choice::titled("Yes")]);
        assert_eq!(pending.offered("Small"), None);
        let undeclared = ReplyMessage {
            template: Some(crate::reply::Template {
                sid: "HX1".into(),
                variables: None,
                choices: Vec::new(),
            }),
            ..ReplyMessage::default()
        };
        assert_eq!(PendingMenu::of(&[undeclared]), None);
    }
}
