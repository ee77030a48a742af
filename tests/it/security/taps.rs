//! Taps checked against what was offered, and the records of sent menus kept apart by
//! account.
//!
//! A WhatsApp tap names its choice by an id (`ButtonPayload`, `ListId`) that the
//! person's client sends: a modified client, or a tap replayed from another flow, can
//! send any id. The agent gets a choice's event or value only for an id of the menu
//! this conversation is waiting on; any other tap is the text it showed, and counted.
//! With this process's state and with Redis alike.
//!
//! A menu sent by `ContentSid` is remembered until Twilio reports on it, so that a
//! refusal sends it again as text: a status callback of another account, signed with
//! that account's own token, must not reach it.

use crate::helpers::*;
use stand_ins::chat::{Outgoing, Phone};
use stand_ins::messages_api::SentMessage;
use std::collections::HashMap;
use std::time::Duration;

const TAPS_AGENT: &str = r#"
project: taps-project
location: global
agent_id: taps-agent
language: en
intents:
  - name: account
    phrases: ["my account"]
    replies:
      - payload:
          body: "What now?"
          choices:
            - { title: "Close it", event: delete_my_account_confirmed }
            - { title: "Keep it", value: "keep my account" }
  - name: size
    phrases: ["order"]
    replies:
      - quick_replies: { title: "What size?", replies: [Small, Large] }
  - name: deleted
    events: [delete_my_account_confirmed]
    replies: [{ text: "Account deleted" }]
  - name: kept
    phrases: ["keep my account"]
    replies: [{ text: "Account kept" }]
  - name: size.picked
    phrases: ["small", "large"]
    replies: [{ text: "Size picked" }]
  - name: confirm
    phrases: ["confirm"]
    replies:
      - payload:
          contentSid: "HXabcdef0123456789abcdef0123456789"
          contentChoices: [{ title: "Yes", event: confirmed }, { title: "No", value: "not now" }]
  - name: promo
    phrases: ["promo"]
    replies:
      - payload: { contentSid: "HXabcdef0123456789abcdef0123456789" }
  - name: confirmed
    events: [confirmed]
    replies: [{ text: "Confirmed" }]
fallback:
  replies: [{ text: "Not understood" }]
"#;

/// The agent's own content, with buttons the bridge did not make.
const TEMPLATE_SID: &str = "HXabcdef0123456789abcdef0123456789";

/// The id the bridge gives the "Close it" button: the event it asks for.
const CLOSE_ID: &str = "event:delete_my_account_confirmed";

const UNOFFERED: &str = r#"twilio_dialogflow_taps_unoffered_total{channel="whatsapp"}"#;

/// Where the conversation's state is kept.
enum Store {
    Local,
    Redis(RedisServer),
}

impl Store {
    async fn each() -> [Store; 2] {
        [Store::Local, Store::Redis(RedisServer::start().await)]
    }

    fn label(&self) -> &'static str {
        match self {
            Store::Local => "local",
            Store::Redis(_) => "redis",
        }
    }

    /// The bridge's `STATE_URL`: none for this process's state.
    fn state_url(&self) -> Option<String> {
        match self {
            Store::Local => None,
            Store::Redis(redis) => Some(redis.url()),
        }
    }
}

/// The taps agent behind a bridge that sends its replies through the Messages API
/// (WhatsApp buttons travel only there), keeping its state in `store`.
async fn taps_stack(store: &Store) -> Stack {
    taps_stack_on(store.state_url(), |_| {}).await
}

/// [`taps_stack`] with its state at `state_url` (none: in process), and `tweak`
/// applied to the bridge's configuration.
async fn taps_stack_on(
    state_url: Option<String>,
    tweak: impl FnOnce(&mut HashMap<String, String>),
) -> Stack {
    start_with_agent(TAPS_AGENT, "CX", |vars| {
        vars.insert("REPLY_MODE".into(), "api".into());
        vars.insert("AGENT_TIMEOUT".into(), "5s".into());
        if let Some(url) = state_url {
            vars.insert("STATE_URL".into(), url);
        }
        tweak(vars);
    })
    .await
}

/// Sends `message` from `phone` (the webhook answers empty: the replies go through
/// the API); returns the one reply sent after those already there.
async fn answer_to(stack: &Stack, phone: &Phone, message: &Outgoing) -> SentMessage {
    let before = stack.twilio.sent().len();
    let (status, twiml) = post_from(phone, &stack.bridge.url(), message, &[]).await;
    assert_eq!(status, 200, "{twiml}");
    let sent = stack.twilio.wait_for(before + 1).await;
    assert_eq!(sent.len(), before + 1, "one reply: {sent:#?}");
    sent[before].clone()
}

/// What the agent was asked last: its text, or `event:NAME`.
fn last_asked(stack: &Stack) -> String {
    let requests = stack.agent_requests();
    let input = &requests.last().expect("the agent was asked").body["queryInput"];
    match input["text"]["text"].as_str() {
        Some(text) => text.to_owned(),
        None => format!("event:{}", input["event"]["event"].as_str().unwrap_or("")),
    }
}

/// Taps "Close it" from `phone`; fails unless the tap reached the agent as the text it
/// showed, not the event its id names, and so was not understood.
async fn assert_close_tap_is_text(stack: &Stack, phone: &Phone, label: &str) {
    let reply = answer_to(stack, phone, &tap_button("Close it", CLOSE_ID)).await;
    assert_eq!(last_asked(stack), "Close it", "{label}");
    assert_eq!(reply.body, "Not understood", "{label}");
}

async fn unoffered(stack: &Stack) -> f64 {
    series_value(&stack.metrics().await, UNOFFERED)
}

#[tokio::test]
async fn a_forged_event_tap_with_no_menu_pending_reaches_the_agent_as_its_text() {
    for store in Store::each().await {
        let label = store.label();
        let stack = taps_stack(&store).await;
        let phone = stack.whatsapp_phone_of(USER);
        // No menu was ever sent to this conversation.
        assert_close_tap_is_text(&stack, &phone, label).await;
        // A list item the same: its title, never the event.
        let reply = answer_to(&stack, &phone, &pick_item("Close it", CLOSE_ID)).await;
        assert_eq!(last_asked(&stack), "Close it", "{label}");
        assert_eq!(reply.body, "Not understood", "{label}");
        // A payload with no title to show: the payload's text, still not an event.
        let bare = with(
            "",
            &[("MessageType", "button"), ("ButtonPayload", CLOSE_ID)],
        );
        answer_to(&stack, &phone, &bare).await;
        assert_eq!(last_asked(&stack), CLOSE_ID, "{label}: as text");
        assert!(
            stack
                .agent_requests()
                .iter()
                .all(|r| r.body["queryInput"].get("event").is_none()),
            "{label}: no event reached the agent"
        );
        assert_eq!(unoffered(&stack).await, 3.0, "{label}");
    }
}

#[tokio::test]
async fn a_tap_on_the_menu_that_was_offered_is_still_its_choice() {
    for store in Store::each().await {
        let label = store.label();
        let stack = taps_stack(&store).await;
        let phone = stack.whatsapp_phone_of(USER);
        let menu = answer_to(&stack, &phone, &says("my account")).await;
        assert!(menu.content_sid.is_some(), "{label}: sent as buttons");
        let reply = answer_to(&stack, &phone, &tap_button("Close it", CLOSE_ID)).await;
        assert_eq!(last_asked(&stack), CLOSE_ID, "{label}: the button's event");
        assert_eq!(reply.body, "Account deleted", "{label}");
        // A choice with a value: the value, as before.
        answer_to(&stack, &phone, &says("my account")).await;
        let reply = answer_to(&stack, &phone, &tap_button("Keep it", "keep my account")).await;
        assert_eq!(reply.body, "Account kept", "{label}");
        let metrics = stack.metrics().await;
        assert_eq!(
            series_value(
                &metrics,
                r#"twilio_dialogflow_choices_picked_total{kind="button"}"#
            ),
            2.0,
            "{label}: {metrics}"
        );
        assert_eq!(series_value(&metrics, UNOFFERED), 0.0, "{label}");
    }
}

#[tokio::test]
async fn taps_of_a_replaced_or_answered_menu_or_of_another_conversation_are_text() {
    for store in Store::each().await {
        let label = store.label();
        let stack = taps_stack(&store).await;
        let phone = stack.whatsapp_phone_of(USER);
        // A second menu replaces the first: the first one's buttons are no longer offered.
        answer_to(&stack, &phone, &says("my account")).await;
        answer_to(&stack, &phone, &says("order")).await;
        assert_close_tap_is_text(&stack, &phone, label).await;
        // A menu answered once is not answered again by the same tap replayed.
        answer_to(&stack, &phone, &says("my account")).await;
        let reply = answer_to(&stack, &phone, &tap_button("Close it", CLOSE_ID)).await;
        assert_eq!(reply.body, "Account deleted", "{label}");
        assert_close_tap_is_text(&stack, &phone, label).await;
        // Another person was offered the menu; this one was not.
        let other = stack.whatsapp_phone_of("+15551230002");
        answer_to(&stack, &other, &says("my account")).await;
        assert_close_tap_is_text(&stack, &phone, label).await;
        // The other person's own tap is theirs to make.
        let reply = answer_to(&stack, &other, &tap_button("Close it", CLOSE_ID)).await;
        assert_eq!(reply.body, "Account deleted", "{label}");
        assert_eq!(unoffered(&stack).await, 3.0, "{label}");
    }
}

#[tokio::test]
async fn a_tap_on_a_menu_that_expired_is_text() {
    let redis = RedisServer::start().await;
    let stack = taps_stack_on(Some(redis.url()), set(&[("MENU_TTL", "1s")])).await;
    let phone = stack.whatsapp_phone_of(USER);
    answer_to(&stack, &phone, &says("my account")).await;
    assert_eq!(redis.keys("*:r:menu").await.len(), 1, "the menu waits");
    // The store forgets it after MENU_TTL: what the test waits for, not a time.
    eventually("the menu to expire", Duration::from_secs(10), || async {
        ready_if(redis.keys("*:r:menu").await, Vec::is_empty)
    })
    .await;
    assert_close_tap_is_text(&stack, &phone, "expired").await;
    assert_eq!(unoffered(&stack).await, 1.0);
}

#[tokio::test]
async fn a_template_offers_only_the_taps_the_agent_declared_for_it() {
    for store in Store::each().await {
        let label = store.label();
        let stack = taps_stack(&store).await;
        stack
            .twilio
            .register_template(TEMPLATE_SID, "Shall we go on?");
        let phone = stack.whatsapp_phone_of(USER);
        let sent = answer_to(&stack, &phone, &says("confirm")).await;
        assert_eq!(sent.content_sid.as_deref(), Some(TEMPLATE_SID), "{label}");
        // Its buttons' ids were declared with it (`contentChoices`): a tap is its choice.
        let reply = answer_to(&stack, &phone, &tap_button("Yes", "event:confirmed")).await;
        assert_eq!(last_asked(&stack), "event:confirmed", "{label}");
        assert_eq!(reply.body, "Confirmed", "{label}");
        // The same content sent with nothing declared: its taps are what they showed.
        answer_to(&stack, &phone, &says("promo")).await;
        let reply = answer_to(&stack, &phone, &tap_button("Yes", "event:confirmed")).await;
        assert_eq!(last_asked(&stack), "Yes", "{label}");
        assert_eq!(reply.body, "Not understood", "{label}");
        assert_eq!(unoffered(&stack).await, 1.0, "{label}");
    }
}

/// The status callback Twilio posts when WhatsApp refused the content `message_sid`
/// of `account_sid` (63021: the content is not valid for WhatsApp).
fn refused(account_sid: &str, message_sid: &str) -> Vec<(String, String)> {
    pairs(&[
        ("AccountSid", account_sid),
        ("ApiVersion", "2010-04-01"),
        ("ErrorCode", "63021"),
        ("MessageSid", message_sid),
        ("MessageStatus", "undelivered"),
        ("SmsSid", message_sid),
        ("SmsStatus", "undelivered"),
    ])
}

#[tokio::test]
async fn a_status_callback_of_another_account_cannot_send_a_menu_again() {
    const OTHER: &str = "ACfedcba9876543210fedcba9876543210";
    const OTHER_TOKEN: &str = "other-account-token";
    for store in Store::each().await {
        let label = store.label();
        let stack = taps_stack_on(store.state_url(), |vars| {
            // A second account the bridge serves, with its own token.
            vars.insert(format!("TWILIO_AUTH_TOKEN__{OTHER}"), OTHER_TOKEN.into());
        })
        .await;
        stack.twilio.accept_also(OTHER, OTHER_TOKEN);
        let phone = stack.whatsapp_phone_of(USER);
        let menu = answer_to(&stack, &phone, &says("order")).await;
        assert!(menu.content_sid.is_some(), "{label}: sent as buttons");
        let callback = menu.status_callback.clone().expect("a status callback");
        // The other account signs, with its own token, a refusal of this account's menu.
        let forged = refused(OTHER, &menu.sid);
        let (status, body) = post_signed_as(&callback, &callback, OTHER_TOKEN, forged).await;
        assert_eq!(
            status, 200,
            "{label}: a valid callback of that account: {body}"
        );
        eventually(
            "the other account's callback handled",
            Duration::from_secs(10),
            || async {
                let metrics = stack.metrics().await;
                let series = r#"twilio_dialogflow_deliveries_failed_total{twilio_error="63021"}"#;
                ready_if(metrics, |m| series_value(m, series) >= 1.0)
            },
        )
        .await;
        quiet_window(Duration::from_millis(500)).await;
        let sent = stack.twilio.sent();
        assert_eq!(
            sent.len(),
            1,
            "{label}: nothing sent again for the other account's callback: {sent:#?}"
        );
        if let Store::Redis(redis) = &store {
            let kept = redis.keys("*:r:sent_menu").await;
            assert_eq!(kept.len(), 1, "{kept:?}");
            assert!(
                kept[0].contains(&format!("{{{ACCOUNT_SID}:{}}}", menu.sid)),
                "kept under the account and the SID: {kept:?}"
            );
        }
        // The account that sent the menu: its refusal sends the menu again as text.
        let own = refused(ACCOUNT_SID, &menu.sid);
        let (status, body) = post_signed_as(&callback, &callback, AUTH_TOKEN, own).await;
        assert_eq!(status, 200, "{label}: {body}");
        let sent = stack.twilio.wait_for(2).await;
        assert_eq!(sent.len(), 2, "{label}: {sent:#?}");
        assert_eq!(sent[1].body, "What size?\n1 Small · 2 Large", "{label}");
        assert_eq!(sent[1].account_sid, ACCOUNT_SID, "{label}");
    }
}
