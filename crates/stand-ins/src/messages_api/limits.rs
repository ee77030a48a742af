//! Twilio's documented limits, written here from Twilio's documentation and never
//! taken from the bridge: a limit the bridge gets wrong must make the stand-in refuse,
//! so that a test catches it. Each cites the page it comes from.

/// `Body` of a message: "The text content of the outgoing message. Can be up to 1,600
/// characters in length"; longer is refused with 21617.
/// <https://www.twilio.com/docs/messaging/api/message-resource#create-a-message-resource>,
/// <https://www.twilio.com/docs/api/errors/21617>
pub const MESSAGE_BODY_CHARS: usize = 1600;

/// `MediaUrl`s of a message: "up to 10 media files"; more is refused with 21623.
/// <https://www.twilio.com/docs/messaging/api/media-resource>,
/// <https://www.twilio.com/docs/api/errors/21623>
pub const MESSAGE_MEDIA: usize = 10;

/// An E.164 number has at most 15 digits after the `+`.
/// <https://www.twilio.com/docs/glossary/what-e164>
pub const E164_DIGITS: usize = 15;

/// The channel prefixes a `To` may carry before its address ("a channel address,
/// e.g. whatsapp:+15552229999"), from the Messages resource's `To` parameter.
/// <https://www.twilio.com/docs/messaging/api/message-resource#create-a-message-resource>
pub const CHANNEL_PREFIXES: [&str; 3] = ["whatsapp:", "messenger:", "rcs:"];

/// `twilio/quick-reply` and `twilio/list-picker`: `body` "Maximum length: 1,024
/// characters".
/// <https://www.twilio.com/docs/content/twilio-quick-reply>,
/// <https://www.twilio.com/docs/content/twiliolist-picker>
pub const CONTENT_BODY_CHARS: usize = 1024;

/// `twilio/quick-reply`: "between 1 and 10 quick-reply buttons".
/// <https://www.twilio.com/docs/content/twilio-quick-reply>
pub const QUICK_REPLY_ACTIONS: usize = 10;

/// `twilio/quick-reply` on WhatsApp: "When you send an in-session WhatsApp message that
/// does not require template approval, only three buttons are allowed"; the send is
/// refused with 63021.
/// <https://www.twilio.com/docs/content/twilio-quick-reply>,
/// <https://www.twilio.com/docs/api/errors/63021>
pub const WHATSAPP_SESSION_BUTTONS: usize = 3;

/// A quick-reply button's `title`: 20 characters (Content API common components,
/// `QUICK_REPLY`).
/// <https://www.twilio.com/docs/content/content-types-overview#common-components>
pub const BUTTON_TITLE_CHARS: usize = 20;

/// An `id` of a button or list item: "Maximum length: 200 characters".
/// <https://www.twilio.com/docs/content/twiliolist-picker>,
/// <https://www.twilio.com/docs/content/content-types-overview#common-components>
pub const ID_CHARS: usize = 200;

/// `twilio/list-picker`: `items` "Minimum: 1 item, Maximum: 10 items".
/// <https://www.twilio.com/docs/content/twiliolist-picker>
pub const LIST_ITEMS: usize = 10;

/// `twilio/list-picker`: an item's `item` "Maximum length: 24 characters".
/// <https://www.twilio.com/docs/content/twiliolist-picker>
pub const ITEM_CHARS: usize = 24;

/// `twilio/list-picker`: an item's `description` "Maximum length: 72 characters".
/// <https://www.twilio.com/docs/content/twiliolist-picker>
pub const ITEM_DESCRIPTION_CHARS: usize = 72;

/// `twilio/list-picker`: the `button` that opens the list, 20 characters as WhatsApp's
/// list button.
/// <https://www.twilio.com/docs/content/twiliolist-picker>
pub const LIST_BUTTON_CHARS: usize = 20;

/// WhatsApp's customer service window: "A messaging session starts when a user sends
/// your application a message, and lasts for 24 hours from the most recently received
/// message"; a free-form (non-template) message outside it fails with 63016.
/// <https://www.twilio.com/docs/whatsapp/key-concepts#the-24-hour-window-or-24-hour-customer-service-window>,
/// <https://www.twilio.com/docs/api/errors/63016>
pub const WHATSAPP_SESSION_WINDOW_SECS: u64 = 24 * 3600;

/// The messages that opt a person out of a sender's SMS, as Twilio handles them by
/// default for long codes ("STOP, UNSUBSCRIBE, END, QUIT, STOPALL, REVOKE, OPTOUT, and
/// CANCEL"); a send to a person who opted out is refused with 21610.
/// <https://www.twilio.com/docs/messaging/tutorials/advanced-opt-out>,
/// <https://help.twilio.com/articles/223134027>,
/// <https://www.twilio.com/docs/api/errors/21610>
pub const OPT_OUT_KEYWORDS: [&str; 8] = [
    "STOP",
    "UNSUBSCRIBE",
    "END",
    "QUIT",
    "STOPALL",
    "REVOKE",
    "OPTOUT",
    "CANCEL",
];

/// The messages that opt a person back in ("START, YES, UNSTOP").
/// <https://help.twilio.com/articles/223134027>
pub const OPT_IN_KEYWORDS: [&str; 3] = ["START", "YES", "UNSTOP"];
