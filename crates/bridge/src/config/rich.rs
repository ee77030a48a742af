//! How menus and WhatsApp's rich messages are shown.

use super::error::Problem;
use super::values::parse_duration;
use super::vars::Reader;
use crate::menu::MenuFormat;
use std::time::Duration;

/// How menus and WhatsApp's rich messages are shown.
#[derive(Debug, Clone)]
pub struct RichSettings {
    pub menu: MenuFormat,
    /// How long a menu waits for its answer ("2", or a choice's title).
    pub menu_ttl: Duration,
    /// Show "typing…" on WhatsApp when the agent has not answered this fast; never
    /// when `None` (`TYPING_AFTER=0`).
    pub typing_after: Option<Duration>,
}

const DEFAULT_MENU_TTL: Duration = Duration::from_secs(60 * 60);
const DEFAULT_TYPING_AFTER: Duration = Duration::from_secs(1);
/// WhatsApp's limit for the button that opens a list.
const MAX_MENU_BUTTON_CHARS: usize = 20;

pub(super) fn read(reader: &mut Reader<'_>) -> RichSettings {
    let defaults = MenuFormat::default();
    let item = reader.text_or("MENU_ITEM", &defaults.item);
    let prompt = reader.text_or("MENU_PROMPT", &defaults.prompt);
    let button = reader.text_or("MENU_BUTTON", &defaults.button);
    if !item.contains("{title}") && !item.contains("{number}") {
        reader.fail_var(
            "MENU_ITEM",
            Problem::invalid("must contain {number} or {title}", &item),
        );
    }
    if button.chars().count() > MAX_MENU_BUTTON_CHARS {
        reader.fail_var(
            "MENU_BUTTON",
            Problem::invalid(format!("must be at most {MAX_MENU_BUTTON_CHARS} characters: WhatsApp refuses a longer list button"), &button),
        );
    }
    RichSettings {
        menu: MenuFormat {
            item,
            prompt,
            button,
        },
        menu_ttl: reader.parsed_or("MENU_TTL", parse_duration, DEFAULT_MENU_TTL),
        typing_after: reader
            .parsed("TYPING_AFTER", |v| match v {
                "0" => Ok(None),
                v => parse_duration(v).map(Some),
            })
            .unwrap_or(Some(DEFAULT_TYPING_AFTER)),
    }
}
