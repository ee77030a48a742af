//! Rich conversations: the agent's choices as WhatsApp reply buttons and lists (made
//! once in the Content API stand-in) or as numbered menus, and the person's taps and
//! typed answers back to the agent as those choices; templates, locations, and the
//! typing indicator.

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
    Phone::new(
        &stack.bridge.url(),
        ACCOUNT_SID,
        AUTH_TOKEN,
        &format!("whatsapp:{USER}"),
        &format!("whatsapp:{OUR_NUMBER}"),
    )
    .unwrap()
}

fn says(text: &str) -> Outgoing {
    Outgoing {
        body: text.into(),
        ..Default::default()
    }
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

fn tap_button(title: &str, payload: &str) -> Outgoing {
    Outgoing {
        body: title.into(),
        params: vec![
            ("MessageType".into(), "button".into()),
            ("ButtonText".into(), title.into()),
            ("ButtonPayload".into(), payload.into()),
        ],
        ..Default::default()
    }
}

fn pick_item(title: &str, id: &str) -> Outgoing {
    Outgoing {
        body: title.into(),
        params: vec![
            ("MessageType".into(), "interactive".into()),
            ("ListId".into(), id.into()),
            ("ListTitle".into(), title.into()),
        ],
        ..Default::default()
    }
}

#[tokio::test]
async fn sms_menus_are_numbered_and_answered_by_number_or_title() {
    for agent_type in ["CX", "ES"] {
        let stack = rich_stack(agent_type, |_| {}).await;
        let menu = stack.say("order").await;
        assert_eq!(
            texts(&menu),
            vec!["What size?\n1 Small · 2 Medium · 3 Large"],
            "{agent_type}"
        );
        assert_eq!(texts(&stack.say(" 2 ").await), vec!["Size medium"]);
        assert_eq!(last_asked(&stack), "Medium", "the choice, not the number");
        stack.say("order").await;
        assert_eq!(texts(&stack.say("LARGE!").await), vec!["Size large"]);
        // No menu pending now: a number is sent as typed.
        assert_eq!(texts(&stack.say("2").await), vec!["Not understood"]);
        assert_eq!(last_asked(&stack), "2");
        // A choice with an event asks the event; one with a value asks the value.
        let toppings = stack.say("toppings").await;
        assert_eq!(
            texts(&toppings),
            vec!["Which topping?\n1 Margherita: Tomato and basil\n2 Pepperoni\n3 Mushroom"]
        );
        assert_eq!(texts(&stack.say("2").await), vec!["Pepperoni by event"]);
        assert_eq!(last_asked(&stack), "event:pepperoni_event");
        stack.say("toppings").await;
        assert_eq!(
            texts(&stack.say("mushroom").await),
            vec!["Mushroom by value"]
        );
        assert!(stack.twilio.contents().is_empty(), "no content for SMS");
        let metrics = stack.metrics().await;
        assert!(
            metrics.contains(r#"twilio_dialogflow_choices_picked_total{kind="number"} 2"#),
            "{metrics}"
        );
    }
}

#[tokio::test]
async fn whatsapp_menus_are_buttons_and_lists_made_once_and_taps_come_back() {
    for agent_type in ["CX", "ES"] {
        let stack = rich_stack(agent_type, api_mode).await;
        let phone = whatsapp_phone(&stack);
        let sent = through_api(&stack, &phone, &says("order"), 1).await;
        let contents = stack.twilio.contents();
        assert_eq!(contents.len(), 1, "{agent_type}");
        assert_eq!(
            contents[0].types,
            serde_json::json!({"twilio/quick-reply": {"body": "{{1}}", "actions": [
                {"title": "Small", "id": "Small"},
                {"title": "Medium", "id": "Medium"},
                {"title": "Large", "id": "Large"}
            ]}})
        );
        assert_eq!(
            sent[0].content_sid.as_deref(),
            Some(contents[0].sid.as_str())
        );
        assert_eq!(sent[0].to, format!("whatsapp:{USER}"));
        assert_eq!(sent[0].body, "What size?");
        assert_eq!(
            sent[0].content_variables.as_deref(),
            Some(r#"{"1":"What size?"}"#),
            "the words are a variable, not part of the content"
        );
        // The same menu again: the content made the first time is reused.
        let again = through_api(&stack, &phone, &says("order"), 1).await;
        assert_eq!(again[0].content_sid, sent[0].content_sid);
        assert_eq!(stack.twilio.contents().len(), 1, "no second content");
        // A tap: the button's payload goes to the agent.
        let answer = through_api(&stack, &phone, &tap_button("Medium", "Medium"), 1).await;
        assert_eq!(answer[0].body, "Size medium");
        assert_eq!(answer[0].content_sid, None);
        // Choices with descriptions make a list; an item's id carries its event.
        let list = through_api(&stack, &phone, &says("toppings"), 1).await;
        let contents = stack.twilio.contents();
        assert_eq!(contents.len(), 2);
        assert_eq!(
            list[0].content_sid.as_deref(),
            Some(contents[1].sid.as_str())
        );
        let picker = &contents[1].types["twilio/list-picker"];
        assert_eq!(picker["button"], "Choose");
        assert_eq!(
            picker["items"],
            serde_json::json!([
                {"item": "Margherita", "id": "Margherita", "description": "Tomato and basil"},
                {"item": "Pepperoni", "id": "event:pepperoni_event"},
                {"item": "Mushroom", "id": "the mushroom one"}
            ])
        );
        let picked = through_api(
            &stack,
            &phone,
            &pick_item("Pepperoni", "event:pepperoni_event"),
            1,
        )
        .await;
        assert_eq!(picked[0].body, "Pepperoni by event");
        assert_eq!(last_asked(&stack), "event:pepperoni_event");
        // A WhatsApp user may type the number too.
        through_api(&stack, &phone, &says("toppings"), 1).await;
        let typed = through_api(&stack, &phone, &says("3"), 1).await;
        assert_eq!(typed[0].body, "Mushroom by value");
        let metrics = stack.metrics().await;
        for line in [
            r#"twilio_dialogflow_rich_messages_sent_total{kind="quick_reply"} 2"#,
            r#"twilio_dialogflow_rich_messages_sent_total{kind="list_picker"} 2"#,
            "twilio_dialogflow_contents_created_total 2",
            r#"twilio_dialogflow_choices_picked_total{kind="button"} 1"#,
            r#"twilio_dialogflow_choices_picked_total{kind="list"} 1"#,
        ] {
            assert!(metrics.contains(line), "{line} in\n{metrics}");
        }
    }
}

#[tokio::test]
async fn whatsapp_menus_in_auto_mode_go_through_the_api_at_once() {
    let stack = rich_stack("CX", |vars| {
        vars.insert("REPLY_MODE".into(), "auto".into());
        vars.insert("REPLY_DEADLINE".into(), "5s".into());
    })
    .await;
    let phone = whatsapp_phone(&stack);
    let started = std::time::Instant::now();
    let sent = through_api(&stack, &phone, &says("order"), 1).await;
    assert!(sent[0].content_sid.is_some());
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "no wait for the deadline"
    );
    // Plain answers still travel in the webhook's answer.
    let reply = send_from(&phone, &tap_button("Small", "Small")).await;
    assert_eq!(texts(&reply), vec!["Size small"]);
}

#[tokio::test]
async fn a_menu_that_does_not_fit_whatsapp_is_numbered_text() {
    let stack = rich_stack("CX", api_mode).await;
    let phone = whatsapp_phone(&stack);
    let sent = through_api(&stack, &phone, &says("long titles"), 1).await;
    assert_eq!(
        sent[0].body,
        "Pick\n1 A choice title far longer than WhatsApp allows · 2 Two"
    );
    assert_eq!(sent[0].content_sid, None);
    assert!(stack.twilio.contents().is_empty());
    let metrics = stack.metrics().await;
    assert!(
        metrics.contains(r#"twilio_dialogflow_menus_as_text_total{reason="title_too_long"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn refused_contents_and_refused_sends_fall_back_to_the_numbered_menu() {
    let stack = rich_stack("CX", api_mode).await;
    let phone = whatsapp_phone(&stack);
    // The Content API refuses to make the menu.
    stack.twilio.misbehave_content_next(&[Misbehaviour::Refuse {
        status: 400,
        code: 20001,
    }]);
    let sent = through_api(&stack, &phone, &says("order"), 1).await;
    assert_eq!(sent[0].body, "What size?\n1 Small · 2 Medium · 3 Large");
    assert_eq!(sent[0].content_sid, None);
    // WhatsApp refuses the content when it is sent: once more, as text.
    stack.twilio.misbehave_next(&[Misbehaviour::Refuse {
        status: 400,
        code: 63021,
    }]);
    let sent = through_api(&stack, &phone, &says("order"), 1).await;
    assert_eq!(sent[0].body, "What size?\n1 Small · 2 Medium · 3 Large");
    // Outside the 24-hour window text would fail too: not tried again.
    stack.twilio.misbehave_next(&[Misbehaviour::Refuse {
        status: 400,
        code: 63016,
    }]);
    let before = stack.twilio.attempts();
    let (status, _) = post_from(&phone, &stack.bridge.url(), &says("order"), &[]).await;
    assert_eq!(status, 200);
    let metrics = wait_for_metric(&stack, r#"twilio_error="63016""#).await;
    assert_eq!(
        stack.twilio.attempts(),
        before + 1,
        "no text retry after 63016"
    );
    for line in [
        r#"twilio_dialogflow_menus_as_text_total{reason="content_failed"} 1"#,
        r#"twilio_dialogflow_menus_as_text_total{reason="send_failed"} 1"#,
        r#"twilio_dialogflow_replies_failed_total{status="400",twilio_error="63021"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
}

/// The metrics once they contain `needle` (within 10 s).
async fn wait_for_metric(stack: &Stack, needle: &str) -> String {
    eventually(
        &format!("{needle} in the metrics"),
        Duration::from_secs(10),
        || async { ready_if(stack.metrics().await, |metrics| metrics.contains(needle)) },
    )
    .await
}

#[tokio::test]
async fn templates_are_sent_by_content_sid_and_need_the_api() {
    let stack = rich_stack("CX", api_mode).await;
    stack.twilio.register_template(
        "HX0123456789abcdef0123456789abcdef",
        "Hello {{1}}, we miss you",
    );
    let phone = whatsapp_phone(&stack);
    let sent = through_api(&stack, &phone, &says("template"), 1).await;
    assert_eq!(
        sent[0].content_sid.as_deref(),
        Some("HX0123456789abcdef0123456789abcdef")
    );
    assert_eq!(sent[0].content_variables.as_deref(), Some(r#"{"1":"Ann"}"#));
    assert_eq!(sent[0].body, "Hello Ann, we miss you");
    let metrics = stack.metrics().await;
    assert!(
        metrics.contains(r#"twilio_dialogflow_rich_messages_sent_total{kind="template"} 1"#),
        "{metrics}"
    );
    // TwiML cannot carry a template: nothing is sent, and the webhook still succeeds.
    let twiml_only = rich_stack("CX", |_| {}).await;
    let (status, twiml) = post_from(
        &whatsapp_phone(&twiml_only),
        &twiml_only.bridge.url(),
        &says("template"),
        &[],
    )
    .await;
    assert_eq!(
        (status, twiml.contains("<Message>")),
        (200, false),
        "{twiml}"
    );
}

#[tokio::test]
async fn messenger_rich_content_and_es_cards_become_menus() {
    let cx = rich_stack("CX", |_| {}).await;
    assert_eq!(
        texts(&cx.say("messenger").await),
        vec!["Pizzabot\n1 Yes · 2 No"]
    );
    assert_eq!(texts(&cx.say("2").await), vec!["Not understood"]);
    assert_eq!(last_asked(&cx), "No");
    for agent_type in ["CX", "ES"] {
        let stack = rich_stack(agent_type, |_| {}).await;
        let card = stack.say("card").await;
        assert_eq!(card.len(), 1, "{card:?}");
        assert_eq!(
            card[0].body, "Pepperoni\n$11\n1 Order pepperoni",
            "{agent_type}"
        );
        assert_eq!(card[0].media, vec!["https://example.com/p.jpg".to_string()]);
        assert_eq!(texts(&stack.say("1").await), vec!["Pepperoni ordered"]);
    }
}

#[tokio::test]
async fn a_shared_location_reaches_the_agent_as_an_event_with_the_place() {
    for agent_type in ["CX", "ES"] {
        let stack = rich_stack(agent_type, |_| {}).await;
        let place = Outgoing {
            params: vec![
                ("MessageType".into(), "location".into()),
                ("Latitude".into(), "52.3731".into()),
                ("Longitude".into(), "4.8922".into()),
                ("Address".into(), "Dam 1, Amsterdam".into()),
                ("Label".into(), "Our shop".into()),
            ],
            ..Default::default()
        };
        let reply = send_from(&whatsapp_phone(&stack), &place).await;
        assert_eq!(texts(&reply), vec!["Location received"], "{agent_type}");
        assert_eq!(last_asked(&stack), "event:twilio_location");
        let requests = stack.agent_requests();
        let payload = &requests.last().unwrap().body["queryParams"]["payload"];
        assert_eq!(
            payload["location"],
            serde_json::json!({"latitude": 52.3731, "longitude": 4.8922, "address": "Dam 1, Amsterdam", "label": "Our shop"})
        );
    }
}

#[tokio::test]
async fn whatsapp_shows_typing_while_a_slow_agent_thinks() {
    let stack = rich_stack("CX", |vars| {
        api_mode(vars);
        vars.insert("TYPING_AFTER".into(), "300ms".into());
    })
    .await;
    let phone = whatsapp_phone(&stack);
    let slow = Outgoing {
        message_sid: Some(format!("SM{:032x}", 7)),
        ..says("slow")
    };
    let sent = through_api(&stack, &phone, &slow, 1).await;
    assert_eq!(sent[0].body, "Slow answer");
    assert_eq!(stack.twilio.typing(), vec![format!("SM{:032x}", 7)]);
    // A quick answer shows no typing; nor does SMS.
    through_api(&stack, &phone, &says("order"), 1).await;
    let sms = stack.phone_of("+15550001111");
    through_api(&stack, &sms, &says("slow"), 1).await;
    assert_eq!(stack.twilio.typing().len(), 1);
    // Off with 0.
    let off = rich_stack("CX", |vars| {
        api_mode(vars);
        vars.insert("TYPING_AFTER".into(), "0".into());
    })
    .await;
    through_api(&off, &whatsapp_phone(&off), &says("slow"), 1).await;
    assert!(off.twilio.typing().is_empty());
}

#[tokio::test]
async fn a_menu_sent_by_one_instance_is_answered_on_another() {
    let redis = RedisServer::start().await;
    let shared = |vars: &mut HashMap<String, String>| {
        vars.insert("STATE_URL".into(), redis.url());
    };
    let one = rich_stack("CX", shared).await;
    let other = rich_stack("CX", shared).await;
    assert_eq!(texts(&one.say("order").await).len(), 1);
    assert_eq!(texts(&other.say("3").await), vec!["Size large"]);
    assert_eq!(last_asked(&other), "Large");
    let keys = redis.keys("*:r:menu:*").await;
    assert!(keys.is_empty(), "answered, the menu is gone: {keys:?}");
}

#[tokio::test]
async fn the_content_api_stand_in_enforces_whatsapps_limits() {
    let stack = rich_stack("CX", |_| {}).await;
    let client = reqwest::Client::new();
    let create = |types: serde_json::Value| {
        let client = client.clone();
        let url = format!("{}/v1/Content", stack.twilio.base_url());
        async move {
            let response = client
                .post(url)
                .basic_auth(ACCOUNT_SID, Some(AUTH_TOKEN))
                .json(&serde_json::json!({"friendly_name": "t", "language": "en", "types": types}))
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let body: serde_json::Value = response.json().await.unwrap();
            (status, body)
        }
    };
    let button = |title: &str| serde_json::json!({"twilio/quick-reply": {"body": "Pick", "actions": [{"title": title, "id": "x"}]}});
    let item = |title: &str, description: &str| serde_json::json!({"twilio/list-picker": {"body": "Pick", "button": "Choose", "items": [{"item": title, "id": "x", "description": description}]}});
    let (ok, created) = create(button(&"b".repeat(20))).await;
    assert_eq!(ok, 201);
    assert!(created["sid"].as_str().unwrap().starts_with("HX"));
    for (types, what) in [
        (button(&"b".repeat(21)), "a button title over 20"),
        (item(&"i".repeat(25), "d"), "an item over 24"),
        (item("i", &"d".repeat(73)), "a description over 72"),
        (
            serde_json::json!({"twilio/quick-reply": {"body": "x".repeat(1025), "actions": [{"title": "a"}]}}),
            "a body over 1024",
        ),
        (
            serde_json::json!({"twilio/list-picker": {"body": "Pick", "button": "Choose", "items": (0..11).map(|i| serde_json::json!({"item": i.to_string(), "id": i.to_string()})).collect::<Vec<_>>()}}),
            "11 items",
        ),
    ] {
        let (status, body) = create(types).await;
        assert_eq!(status, 400, "{what}: {body}");
    }
    // Sends by an unknown ContentSid, or with variables that are not an object of
    // strings, are refused with Twilio's codes.
    let api = format!(
        "{}/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json",
        stack.twilio.base_url()
    );
    for (form, code) in [
        (vec![("ContentSid", "HXnope")], 21655),
        (
            vec![
                ("ContentSid", created["sid"].as_str().unwrap()),
                ("ContentVariables", "[1]"),
            ],
            21656,
        ),
    ] {
        let mut form = form;
        form.extend([
            ("To", "whatsapp:+15550001111"),
            ("From", "whatsapp:+15550002222"),
        ]);
        let response = client
            .post(&api)
            .basic_auth(ACCOUNT_SID, Some(AUTH_TOKEN))
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 400);
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["code"], code);
    }
}

#[tokio::test]
async fn the_terminal_phone_shows_buttons_and_taps_them() {
    let stack = rich_stack("CX", api_mode).await;
    let phone = whatsapp_phone(&stack);
    let inbox = stand_ins::chat::ApiInbox::new(
        &stack.twilio.base_url(),
        ACCOUNT_SID,
        AUTH_TOKEN,
        &phone.from,
    )
    .unwrap();
    let mut session = stand_ins::chat::Session::new(phone, Some(inbox));
    assert!(session.tap(1).is_err(), "nothing to tap yet");
    let shown = session.exchange(&says("order")).await.unwrap();
    assert!(
        shown.contains("< What size?\n< [ Small ] [ Medium ] [ Large ]"),
        "{shown}"
    );
    assert!(session.tap(4).is_err());
    let tap = session.tap(2).unwrap();
    assert!(tap
        .params
        .contains(&("ButtonPayload".into(), "Medium".into())));
    let shown = session.exchange(&tap).await.unwrap();
    assert!(shown.contains("< Size medium"), "{shown}");
    let shown = session.exchange(&says("toppings")).await.unwrap();
    assert!(
        shown.contains("< [ Choose ▾ ]\n<   1. Margherita — Tomato and basil\n<   2. Pepperoni"),
        "{shown}"
    );
    let pick = session.tap(2).unwrap();
    assert!(pick
        .params
        .contains(&("ListId".into(), "event:pepperoni_event".into())));
    let shown = session.exchange(&pick).await.unwrap();
    assert!(shown.contains("< Pepperoni by event"), "{shown}");
}

#[tokio::test]
async fn four_choices_make_a_whatsapp_list_and_eleven_a_numbered_menu() {
    let stack = rich_stack("CX", api_mode).await;
    let phone = whatsapp_phone(&stack);
    through_api(&stack, &phone, &says("four sizes"), 1).await;
    let contents = stack.twilio.contents();
    assert_eq!(contents.len(), 1);
    assert!(
        contents[0].types.get("twilio/list-picker").is_some(),
        "{:?}",
        contents[0].types
    );
    let eleven = through_api(&stack, &phone, &says("eleven toppings"), 1).await;
    assert!(
        eleven[0].body.starts_with("Topping?\n1 a\n2 b\n"),
        "{}",
        eleven[0].body
    );
    assert!(eleven[0].body.ends_with("\n11 k"));
    assert_eq!(
        stack.twilio.contents().len(),
        1,
        "no content for a menu that does not fit"
    );
}

#[tokio::test]
async fn a_long_numbered_menu_is_split_within_twilios_limit_losing_nothing() {
    let stack = start_with_agent(&long_agent(), "CX", |_| {}).await;
    let replies = stack.say("wordy menu").await;
    assert!(replies.len() >= 2, "{replies:?}");
    assert!(replies.iter().all(|m| m.body.chars().count() <= 1600));
    let whole: String = replies.iter().map(|m| m.body.as_str()).collect();
    assert!(whole.starts_with("Pick a long one\n1 First: words"));
    assert!(whole.contains("2 Second: words"));
    assert_eq!(whole.matches("words").count(), 300);
}

#[tokio::test]
async fn a_whatsapp_menu_with_a_picture_sends_the_picture_then_the_buttons() {
    let stack = rich_stack("CX", api_mode).await;
    let sent = through_api(&stack, &whatsapp_phone(&stack), &says("picture menu"), 2).await;
    assert_eq!(sent[0].media, vec!["https://example.com/p.jpg".to_string()]);
    assert_eq!(sent[0].content_sid, None);
    assert!(sent[1].content_sid.is_some());
    assert_eq!(sent[1].body, "Like it?");
    // If the picture is refused, the buttons still go.
    stack.twilio.misbehave_next(&[Misbehaviour::Refuse {
        status: 400,
        code: 21620,
    }]);
    let sent = through_api(&stack, &whatsapp_phone(&stack), &says("picture menu"), 1).await;
    assert!(sent[0].content_sid.is_some());
}

#[tokio::test]
async fn whatsapp_refusals_reported_by_the_status_callback_send_the_menu_as_text() {
    let stack = rich_stack("CX", api_mode).await;
    stack
        .twilio
        .misbehave_next(&[Misbehaviour::FailLater { code: 63021 }]);
    let sent = through_api(&stack, &whatsapp_phone(&stack), &says("order"), 2).await;
    assert!(
        sent[0].content_sid.is_some(),
        "taken, then reported undelivered"
    );
    assert_eq!(sent[1].body, "What size?\n1 Small · 2 Medium · 3 Large");
    assert_eq!(sent[1].content_sid, None);
    let metrics = stack.metrics().await;
    for line in [
        r#"twilio_dialogflow_menus_as_text_total{reason="status_failed"} 1"#,
        r#"twilio_dialogflow_deliveries_failed_total{twilio_error="63021"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
    // Outside the window (63016) text would fail too: counted, not sent again.
    stack
        .twilio
        .misbehave_next(&[Misbehaviour::FailLater { code: 63016 }]);
    through_api(&stack, &whatsapp_phone(&stack), &says("order"), 1).await;
    wait_for_metric(&stack, r#"twilio_error="63016"} 1"#).await;
    quiet_window(Duration::from_millis(300)).await;
    assert_eq!(stack.twilio.sent().len(), 3);
}

#[tokio::test]
async fn messenger_lists_buttons_descriptions_and_accordions_on_sms() {
    let stack = rich_stack("CX", |_| {}).await;
    let shown = stack.say("messenger more").await;
    assert_eq!(
        texts(&shown),
        vec![
            "Toppings\nPick one\nWebsite: https://p.example\nAllergens\ngluten\n1 Pepperoni: spicy"
        ]
    );
    assert_eq!(texts(&stack.say("1").await), vec!["Pepperoni by event"]);
    let es = rich_stack("ES", |_| {}).await;
    assert_eq!(
        texts(&es.say("wrapped").await),
        vec!["Wrapped?\n1 Yes · 2 No"]
    );
}

#[tokio::test]
async fn instances_share_the_menus_contents() {
    let redis = RedisServer::start().await;
    let one = rich_stack("CX", |vars| {
        api_mode(vars);
        vars.insert("STATE_URL".into(), redis.url());
    })
    .await;
    // The other instance sends through the same account (the same stand-in).
    let twilio = one.twilio.base_url();
    let other = rich_stack("CX", |vars| {
        api_mode(vars);
        vars.insert("STATE_URL".into(), redis.url());
        vars.insert("TWILIO_API_BASE_URL".into(), twilio.clone());
    })
    .await;
    through_api(&one, &whatsapp_phone(&one), &says("order"), 1).await;
    let phone = Phone::new(
        &other.bridge.url(),
        ACCOUNT_SID,
        AUTH_TOKEN,
        "whatsapp:+15550004444",
        &format!("whatsapp:{OUR_NUMBER}"),
    )
    .unwrap();
    let (status, _) = post_from(&phone, &other.bridge.url(), &says("order"), &[]).await;
    assert_eq!(status, 200);
    let sent = one.twilio.wait_for(2).await;
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[1].to, "whatsapp:+15550004444");
    assert_eq!(sent[1].content_sid, sent[0].content_sid);
    assert_eq!(
        one.twilio.contents().len(),
        1,
        "made once for both instances"
    );
}

#[tokio::test]
async fn a_failing_typing_indicator_changes_nothing() {
    let stack = rich_stack("CX", |vars| {
        api_mode(vars);
        vars.insert("TYPING_AFTER".into(), "100ms".into());
        vars.insert(
            "TWILIO_MESSAGING_BASE_URL".into(),
            format!("http://127.0.0.1:{}", free_port()),
        );
    })
    .await;
    let sent = through_api(&stack, &whatsapp_phone(&stack), &says("slow"), 1).await;
    assert_eq!(sent[0].body, "Slow answer");
}

#[tokio::test]
async fn a_tap_without_an_id_asks_the_title() {
    let stack = rich_stack("CX", api_mode).await;
    let phone = whatsapp_phone(&stack);
    let tap = Outgoing {
        body: "Large".into(),
        params: vec![("ButtonText".into(), "Large".into())],
        ..Default::default()
    };
    let sent = through_api(&stack, &phone, &tap, 1).await;
    assert_eq!(sent[0].body, "Size large");
    assert_eq!(last_asked(&stack), "Large");
}

#[tokio::test]
async fn a_number_sent_while_the_menu_is_on_its_way_answers_it() {
    // The "2" waits for the turn before it (the store's wait), and reads the menu that
    // turn left, with the same round trip.
    let redis = RedisServer::start().await;
    let stack = rich_stack("CX", |vars| {
        vars.insert("STATE_URL".into(), redis.url());
    })
    .await;
    let first = {
        let phone = stack.phone.clone();
        tokio::spawn(async move { ask(&phone, "slow order").await })
    };
    // The agent has the first question: its turn holds the conversation.
    agent_asked(&stack.emulator, 1).await;
    let second = ask(&stack.phone, "2").await;
    assert_eq!(
        texts(&first.await.unwrap()),
        vec!["What size?\n1 Small · 2 Medium · 3 Large"]
    );
    assert_eq!(texts(&second), vec!["Size medium"]);
    let metrics = stack.metrics().await;
    assert!(
        metrics.contains(r#"twilio_dialogflow_state_calls_total{op="wait_turn"}"#),
        "{metrics}"
    );
    assert!(
        !metrics.contains(r#"op="get_record""#),
        "the menu came with the turn, not a read of its own:\n{metrics}"
    );
}
