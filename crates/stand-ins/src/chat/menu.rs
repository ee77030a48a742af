//! WhatsApp reply buttons and list pickers as the phone shows and taps them.

use super::Outgoing;

/// WhatsApp reply buttons or a list, as the phone shows them and taps them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhoneMenu {
    /// A list opens with this button; `None`: reply buttons.
    pub list_button: Option<String>,
    pub items: Vec<MenuItem>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MenuItem {
    pub title: String,
    pub id: String,
    pub description: Option<String>,
}

impl PhoneMenu {
    /// The buttons or list of a Content API content's `types`, with its body.
    pub fn of_content(types: &serde_json::Value) -> Option<(String, Self)> {
        let text = |v: &serde_json::Value, name: &str| {
            v.get(name).and_then(|t| t.as_str()).map(str::to_owned)
        };
        let items = |content: &serde_json::Value, list: &str, title: &str| -> Vec<MenuItem> {
            content
                .get(list)
                .and_then(|l| l.as_array())
                .map(|entries| {
                    entries
                        .iter()
                        .map(|e| MenuItem {
                            title: text(e, title).unwrap_or_default(),
                            id: text(e, "id").unwrap_or_default(),
                            description: text(e, "description"),
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        if let Some(quick) = types.get("twilio/quick-reply") {
            let menu = Self {
                list_button: None,
                items: items(quick, "actions", "title"),
            };
            return Some((text(quick, "body").unwrap_or_default(), menu));
        }
        let list = types.get("twilio/list-picker")?;
        let menu = Self {
            list_button: Some(text(list, "button").unwrap_or_default()),
            items: items(list, "items", "item"),
        };
        Some((text(list, "body").unwrap_or_default(), menu))
    }

    /// `[ Small ] [ Medium ] [ Large ]`, or a list's button and its numbered items.
    pub fn show(&self) -> String {
        match &self.list_button {
            None => {
                let buttons: Vec<String> = self
                    .items
                    .iter()
                    .map(|i| format!("[ {} ]", i.title))
                    .collect();
                format!("< {}", buttons.join(" "))
            }
            Some(button) => {
                let mut lines = vec![format!("< [ {button} ▾ ]")];
                lines.extend(self.items.iter().enumerate().map(
                    |(n, item)| match &item.description {
                        Some(description) => {
                            format!("<   {}. {} — {description}", n + 1, item.title)
                        }
                        None => format!("<   {}. {}", n + 1, item.title),
                    },
                ));
                lines.join("\n")
            }
        }
    }

    /// The webhook Twilio sends when the `number`th (from 1) button or item is tapped.
    pub fn tap(&self, number: usize) -> Option<Outgoing> {
        let item = self.items.get(number.checked_sub(1)?)?;
        let params = match self.list_button {
            None => vec![
                ("MessageType".to_owned(), "button".to_owned()),
                ("ButtonText".to_owned(), item.title.clone()),
                ("ButtonPayload".to_owned(), item.id.clone()),
            ],
            Some(_) => vec![
                ("MessageType".to_owned(), "interactive".to_owned()),
                ("ListId".to_owned(), item.id.clone()),
                ("ListTitle".to_owned(), item.title.clone()),
            ],
        };
        Some(Outgoing {
            body: item.title.clone(),
            params,
            ..Outgoing::default()
        })
    }
}
