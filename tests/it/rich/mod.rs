//! Rich conversations: the agent's choices as WhatsApp reply buttons and lists (made
//! once in the Content API stand-in) or as numbered menus, and the person's taps and
//! typed answers back to the agent as those choices; templates, locations, and the
//! typing indicator.

pub(crate) mod more;
mod sms;
mod whatsapp;

use crate::helpers::*;
use stand_ins::chat::{Outgoing, Phone};
use stand_ins::emulator::RecordedRequest;
use stand_ins::messages_api::{Misbehaviour, SentMessage};
use std::collections::HashMap;
use std::time::Duration;

const RICH_AGENT: &str = r#"
project: rich-project
location: global
agent_id: rich-agent
language: en
intents:
  - name: size
    phrases: ["order"]
    replies:
      - quick_replies: { title: "What size?", replies: [Small, Medium, Large] }
  - name: size.picked
    phrases: ["small", "medium", "large"]
    capture: { parameter: size, values: [small, medium, large] }
    replies:
      - text: "Size $session.params.size"
  - name: toppings
    phrases: ["toppings"]
    replies:
      - payload:
          body: "Which topping?"
          choices:
            - { title: Margherita, description: "Tomato and basil" }
            - { title: Pepperoni, event: pepperoni_event }
            - { title: Mushroom, value: "the mushroom one" }
  - name: pepperoni
    events: [pepperoni_event]
    replies: [{ text: "Pepperoni by event" }]
  - name: mushroom
    phrases: ["the mushroom one"]
    replies: [{ text: "Mushroom by value" }]
  - name: long
    phrases: ["long titles"]
    replies:
      - payload: { body: "Pick", choices: ["A choice title far longer than WhatsApp allows", "Two"] }
  - name: template
    phrases: ["template"]
    replies:
      - payload: { contentSid: "HX0123456789abcdef0123456789abcdef", contentVariables: { "1": "Ann" } }
  - name: messenger
    phrases: ["messenger"]
    replies:
      - payload: { richContent: [[{ type: info, title: "Pizzabot" }, { type: chips, options: [{ text: "Yes" }, { text: "No" }] }]] }
  - name: card
    phrases: ["card"]
    replies:
      - card: { title: "Pepperoni", subtitle: "$11", image: "https://example.com/p.jpg", buttons: [{ text: "Order pepperoni", postback: "order pepperoni" }] }
  - name: ordered
    phrases: ["order pepperoni"]
    replies: [{ text: "Pepperoni ordered" }]
  - name: location
    events: [twilio_location]
    replies: [{ text: "Location received" }]
  - name: four
    phrases: ["four sizes"]
    replies:
      - payload: { body: "Size?", choices: [S, M, L, XL] }
  - name: eleven
    phrases: ["eleven toppings"]
    replies:
      - payload: { body: "Topping?", choices: [a, b, c, d, e, f, g, h, i, j, k] }
  - name: wordy
    phrases: ["wordy menu"]
    replies:
      - payload:
          body: "Pick a long one"
          choices:
            - { title: "First", description: "LONG" }
            - { title: "Second", description: "LONG" }
  - name: picture.menu
    phrases: ["picture menu"]
    replies:
      - payload: { body: "Like it?", media: "https://example.com/p.jpg", choices: [Yes, No] }
  - name: messenger.more
    phrases: ["messenger more"]
    replies:
      - payload:
          richContent:
            - - { type: description, title: "Toppings", text: ["Pick one"] }
              - { type: list, title: "Pepperoni", subtitle: "spicy", event: { event: pepperoni_event } }
              - { type: button, text: "Website", link: "https://p.example" }
              - { type: accordion, title: "Allergens", text: "gluten" }
              - { type: carousel }
  - name: es.wrapped
    phrases: ["wrapped"]
    replies:
      - payload: { twilio: { quickReplies: { title: "Wrapped?", quickReplies: [Yes, No] } } }
  - name: slow.size
    phrases: ["slow order"]
    delay_ms: 600
    replies:
      - quick_replies: { title: "What size?", replies: [Small, Medium, Large] }
  - name: slow
    phrases: ["slow"]
    delay_ms: 1500
    replies: [{ text: "Slow answer" }]
fallback:
  replies: [{ text: "Not understood" }]
"#;

fn api_mode(vars: &mut HashMap<String, String>) {
    vars.insert("REPLY_MODE".into(), "api".into());
    vars.insert("AGENT_TIMEOUT".into(), "5s".into());
}

async fn rich_stack(agent_type: &str, tweak: impl FnOnce(&mut HashMap<String, String>)) -> Stack {
    start_with_agent(RICH_AGENT, agent_type, tweak).await
}

/// A WhatsApp sender writing to the stack's WhatsApp number.
fn whatsapp_phone(stack: &Stack) -> Phone {
    stack.whatsapp_phone_of(USER)
}

/// What the agent was asked last: its text, or `event:NAME`.
fn last_asked(stack: &Stack) -> String {
    let requests = stack.agent_requests();
    let request: &RecordedRequest = requests.last().expect("the agent was asked");
    let input = &request.body["queryInput"];
    if let Some(text) = input["text"]["text"].as_str() {
        return text.to_owned();
    }
    let event = input["event"]["event"]
        .as_str()
        .or_else(|| input["event"]["name"].as_str())
        .unwrap_or_default();
    format!("event:{event}")
}

/// Sends `message` from `phone`: the webhook must answer empty, the replies come
/// through the Messages API stand-in; returns the `count` messages sent after those
/// already there.
async fn through_api(
    stack: &Stack,
    phone: &Phone,
    message: &Outgoing,
    count: usize,
) -> Vec<SentMessage> {
    let before = stack.twilio.sent().len();
    let (status, twiml) = post_from(phone, &stack.bridge.url(), message, &[]).await;
    assert_eq!(status, 200, "{twiml}");
    assert!(!twiml.contains("<Message>"), "{twiml}");
    let sent = stack.twilio.wait_for(before + count).await;
    assert_eq!(sent.len(), before + count, "{sent:#?}");
    sent[before..].to_vec()
}

fn long_agent() -> String {
    RICH_AGENT.replace("\"LONG\"", &format!("{:?}", "words ".repeat(150)))
}
