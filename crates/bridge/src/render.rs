//! How replies go out: decided once, here, per channel and per way.
//!
//! A reply is a message as it is (text and media), a content template (by
//! `ContentSid`, only through the Messages API), a menu as WhatsApp buttons or a list
//! (made with the Content API, only through the Messages API, only on WhatsApp), or a
//! menu written out as numbered text (everywhere else, and whenever WhatsApp's own
//! does not fit). TwiML carries neither templates nor contents.
//!
//! Pure: the turn renders its replies before they are recorded, so that what is
//! recorded is what is sent, one message per reply (a takeover resumes at a message);
//! the outbox asks [`form`] what each reply is and sends it so. The fallbacks that
//! only sending finds (the Content API fails, WhatsApp refuses a content) are the
//! outbox's, and end in [`menu_as_text`] too.

use crate::menu::MenuFormat;
use crate::reply::{fit_to_limits, ReplyMessage};
use crate::whatsapp::Menu;

/// Where the person reads the replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// SMS or MMS: text and media only.
    Sms,
    /// WhatsApp: also buttons, lists and templates.
    WhatsApp,
}

impl Channel {
    /// The channel of an address as Twilio writes it (`whatsapp:+1…`, `+1…`).
    pub fn of_address(address: &str) -> Self {
        match address.starts_with("whatsapp:") {
            true => Channel::WhatsApp,
            false => Channel::Sms,
        }
    }
}

/// Which way the replies travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    /// In the webhook's TwiML answer.
    Twiml,
    /// Through the Messages API.
    Api,
}

/// How one reply goes out.
#[derive(Debug, Clone, PartialEq)]
pub enum Form {
    /// As it is: text and media.
    Message,
    /// A content template, by its `ContentSid`.
    Template,
    /// A menu as WhatsApp buttons or a list, its picture (if any) first, on its own.
    Content(Menu),
    /// A menu written out as numbered text, and why (the label of
    /// `menus_as_text_total{reason}`).
    Text(&'static str),
    /// Cannot travel this way (a template in TwiML): left out, and said.
    LeftOut,
}

/// How `message` goes out `way` on `channel`.
pub fn form(message: &ReplyMessage, channel: Channel, way: Way, format: &MenuFormat) -> Form {
    if message.template.is_some() {
        return match way {
            Way::Twiml => Form::LeftOut,
            Way::Api => Form::Template,
        };
    }
    if message.choices.is_empty() {
        return Form::Message;
    }
    match (way, channel) {
        (Way::Twiml, _) => Form::Text("twiml"),
        (Way::Api, Channel::Sms) => Form::Text("channel"),
        (Way::Api, Channel::WhatsApp) => match Menu::of(message, format) {
            Ok(menu) => Form::Content(menu),
            Err(reason) => Form::Text(reason.label()),
        },
    }
}

/// Whether any of `replies` can travel only through the Messages API (a template, or
/// a WhatsApp menu): the webhook then answers empty at once.
pub fn needs_api(replies: &[ReplyMessage], channel: Channel) -> bool {
    replies
        .iter()
        .any(|m| m.template.is_some() || (!m.choices.is_empty() && channel == Channel::WhatsApp))
}

/// `message`'s menu written out as numbered text, in as many messages as its length
/// needs.
pub fn menu_as_text(message: &ReplyMessage, format: &MenuFormat) -> Vec<ReplyMessage> {
    fit_to_limits(vec![format.as_text(message)])
}

/// Replies as they go out: what each became, and what was made of them.
#[derive(Debug, Default, PartialEq)]
pub struct Rendered {
    /// One message per reply sent, within Twilio's limits.
    pub replies: Vec<ReplyMessage>,
    /// Why each menu written out as text was (for `menus_as_text_total{reason}`).
    pub as_text: Vec<&'static str>,
    /// How many replies cannot travel this way and were left out.
    pub left_out: usize,
}

/// `replies` as they go out `way` on `channel`: menus that go as text written out,
/// what cannot travel left out; templates and WhatsApp contents stay whole, for the
/// outbox to send by [`form`].
pub fn render(
    replies: &[ReplyMessage],
    channel: Channel,
    way: Way,
    format: &MenuFormat,
) -> Rendered {
    let mut rendered = Rendered::default();
    let mut out = Vec::with_capacity(replies.len());
    for message in replies {
        match form(message, channel, way, format) {
            Form::Message | Form::Template | Form::Content(_) => out.push(message.clone()),
            Form::Text(reason) => {
                rendered.as_text.push(reason);
                out.push(format.as_text(message));
            }
            Form::LeftOut => rendered.left_out += 1,
        }
    }
    rendered.replies = fit_to_limits(out);
    rendered
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reply::Template;

    fn format() -> MenuFormat {
        MenuFormat::default()
    }

    fn template() -> ReplyMessage {
        ReplyMessage {
            template: Some(Template {
                sid: "HX1".into(),
                variables: None,
                choices: Vec::new(),
            }),
            ..ReplyMessage::default()
        }
    }

    #[test]
    fn channels_are_read_from_addresses() {
        assert_eq!(
            Channel::of_address("whatsapp:+15551234567"),
            Channel::WhatsApp
        );
        assert_eq!(Channel::of_address("+15551234567"), Channel::Sms);
    }

    #[test]
    fn a_menu_is_whatsapps_own_only_through_the_api_on_whatsapp() {
        let menu = ReplyMessage::menu("Size?", &["Small", "Large"]);
        let format = format();
        assert!(matches!(
            form(&menu, Channel::WhatsApp, Way::Api, &format),
            Form::Content(_)
        ));
        assert_eq!(
            form(&menu, Channel::Sms, Way::Api, &format),
            Form::Text("channel")
        );
        assert_eq!(
            form(&menu, Channel::WhatsApp, Way::Twiml, &format),
            Form::Text("twiml")
        );
        let titles: Vec<String> = (1..=11).map(|n| format!("Choice {n}")).collect();
        let titles: Vec<&str> = titles.iter().map(String::as_str).collect();
        let long = ReplyMessage::menu("Which?", &titles);
        assert_eq!(
            form(&long, Channel::WhatsApp, Way::Api, &format),
            Form::Text("too_many_choices")
        );
    }

    #[test]
    fn templates_go_only_through_the_api_and_plain_messages_anywhere() {
        let format = format();
        assert_eq!(
            form(&template(), Channel::Sms, Way::Api, &format),
            Form::Template
        );
        assert_eq!(
            form(&template(), Channel::Sms, Way::Twiml, &format),
            Form::LeftOut
        );
        let hello = ReplyMessage::text("hello");
        for (channel, way) in [(Channel::Sms, Way::Twiml), (Channel::WhatsApp, Way::Api)] {
            assert_eq!(form(&hello, channel, way, &format), Form::Message);
        }
    }

    #[test]
    fn rendering_writes_menus_out_and_leaves_out_what_cannot_travel() {
        let format = format();
        let menu = ReplyMessage::menu("Size?", &["Small", "Large"]);
        let replies = vec![ReplyMessage::text("Hi"), menu.clone(), template()];
        let twiml = render(&replies, Channel::WhatsApp, Way::Twiml, &format);
        assert_eq!(
            twiml.replies,
            vec![ReplyMessage::text("Hi"), format.as_text(&menu)]
        );
        assert_eq!((twiml.as_text, twiml.left_out), (vec!["twiml"], 1));
        let sms = render(&replies, Channel::Sms, Way::Api, &format);
        assert_eq!(sms.replies.len(), 3);
        assert!(sms.replies[1].choices.is_empty());
        assert_eq!(sms.replies[2], template());
        assert_eq!(sms.as_text, vec!["channel"]);
        let whatsapp = render(&replies, Channel::WhatsApp, Way::Api, &format);
        assert_eq!(
            whatsapp.replies, replies,
            "contents and templates stay whole"
        );
        assert!(whatsapp.as_text.is_empty());
    }

    #[test]
    fn only_templates_and_whatsapp_menus_need_the_api() {
        let menu = vec![ReplyMessage::menu("Size?", &["Small"])];
        assert!(needs_api(&menu, Channel::WhatsApp));
        assert!(!needs_api(&menu, Channel::Sms));
        assert!(needs_api(&[template()], Channel::Sms));
        assert!(!needs_api(&[ReplyMessage::text("hi")], Channel::WhatsApp));
    }
}
