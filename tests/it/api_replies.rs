//! Replies that cannot wait for the webhook: sent through Twilio's Messages API
//! (the local emulator of it), in order, once.

use crate::helpers::*;
use stand_ins::chat::Outgoing;
use stand_ins::messages_api::SentMessage;
use std::time::{Duration, Instant};

const EMPTY: &str = r#"<?xml version="1.0" encoding="UTF-8"?><Response/>"#;

/// Replies in `mode`, with `more` settings besides.
fn mode<'a>(
    mode: &'a str,
    more: &'a [(&'a str, &'a str)],
) -> impl FnOnce(&mut std::collections::HashMap<String, String>) + 'a {
    move |vars| {
        set(&[
            ("REPLY_MODE", mode),
            ("REPLY_DEADLINE", "1s"),
            ("AGENT_TIMEOUT", "35s"),
        ])(vars);
        set(more)(vars);
    }
}

/// The raw TwiML answer, and how long it took.
async fn webhook(stack: &Stack, message: &Outgoing) -> (String, Duration) {
    let started = Instant::now();
    let (status, body) = stack.post_webhook(message).await;
    assert_eq!(status, 200, "{body}");
    (body, started.elapsed())
}

fn bodies(sent: &[SentMessage]) -> Vec<&str> {
    sent.iter().map(|m| m.body.as_str()).collect()
}

#[tokio::test]
async fn a_slow_agents_reply_still_reaches_the_user_through_the_api() {
    // The agent takes 1.5 s, more than the webhook may wait (as an agent taking 20 s
    // would be, for Twilio's 15 s).
    let stack = start("CX", mode("auto", &[("REPLY_DEADLINE", "300ms")])).await;
    let (twiml, took) = webhook(&stack, &says("glacial")).await;
    assert_eq!(twiml, EMPTY);
    assert!(
        took < Duration::from_millis(1200),
        "the webhook answered at the deadline, took {took:?}"
    );
    let sent = stack.twilio.wait_for(2).await;
    assert_eq!(
        bodies(&sent),
        vec!["Sorry for the wait", "Here is your answer"]
    );
    let first = &sent[0];
    assert_eq!(first.to, USER);
    assert_eq!(first.from.as_deref(), Some(OUR_NUMBER));
    assert_eq!(first.account_sid, ACCOUNT_SID);
    assert_eq!(
        first.status_callback.as_deref(),
        Some(format!("{}status", stack.bridge.url()).as_str())
    );
}

#[tokio::test]
async fn a_quick_agent_answers_in_the_webhook_in_auto_mode() {
    let stack = start("CX", mode("auto", &[])).await;
    let (twiml, _) = webhook(&stack, &says("hi")).await;
    assert!(
        twiml.contains("<Body>Hello from the agent</Body>"),
        "{twiml}"
    );
    assert!(stack.twilio.sent().is_empty());
    assert_eq!(stack.twilio.attempts(), 0);
}

#[tokio::test]
async fn api_mode_answers_the_webhook_at_once_and_sends_media_too() {
    let stack = start("CX", mode("api", &[])).await;
    let (twiml, _) = webhook(&stack, &says("menu")).await;
    assert_eq!(twiml, EMPTY);
    let sent = stack.twilio.wait_for(2).await;
    assert_eq!(bodies(&sent), vec!["Here is the menu", "Menu card"]);
    assert_eq!(
        sent[1].media,
        vec![
            "https://example.com/menu.jpg",
            "https://example.com/drinks.jpg"
        ]
    );
}

#[tokio::test]
async fn a_messaging_service_can_send_the_replies() {
    let stack = start(
        "CX",
        mode(
            "api",
            &[(
                "TWILIO_MESSAGING_SERVICE_SID",
                "MG0123456789abcdef0123456789abcdef",
            )],
        ),
    )
    .await;
    webhook(&stack, &says("hi")).await;
    let sent = stack.twilio.wait_for(1).await;
    assert_eq!(sent[0].from, None);
    assert_eq!(
        sent[0].messaging_service_sid.as_deref(),
        Some("MG0123456789abcdef0123456789abcdef")
    );
}

#[tokio::test]
async fn replies_keep_going_out_while_the_auth_token_is_rotated() {
    // The primary token was just rotated out in Twilio: the secondary is the account's.
    let stack = start(
        "CX",
        mode(
            "api",
            &[
                ("TWILIO_AUTH_TOKEN", "rotated-out"),
                ("TWILIO_AUTH_TOKEN_SECONDARY", AUTH_TOKEN),
            ],
        ),
    )
    .await;
    webhook(&stack, &says("hi")).await;
    let sent = stack.twilio.wait_for(1).await;
    assert_eq!(bodies(&sent), vec!["Hello from the agent"]);
    assert_eq!(stack.twilio.attempts(), 2);
    // From then on, the secondary goes first.
    webhook(&stack, &says("menu")).await;
    assert_eq!(stack.twilio.wait_for(3).await.len(), 3);
    assert_eq!(stack.twilio.attempts(), 4);
}

#[tokio::test]
async fn a_failing_messages_api_is_retried() {
    let stack = start("CX", mode("api", &[])).await;
    stack.twilio.fail_next(&[500, 429]);
    webhook(&stack, &says("hi")).await;
    let sent = stack.twilio.wait_for(1).await;
    assert_eq!(bodies(&sent), vec!["Hello from the agent"]);
    assert_eq!(stack.twilio.attempts(), 3);
}

#[tokio::test]
async fn a_messages_api_that_keeps_failing_is_given_up_on_and_the_next_reply_still_goes() {
    let stack = start("CX", mode("api", &[])).await;
    stack.twilio.fail_next(&[503, 503, 503, 503]);
    webhook(&stack, &says("hi")).await;
    webhook(&stack, &says("tricky")).await;
    let sent = stack.twilio.wait_for(1).await;
    // Four tries for the first reply, then the second reply goes through.
    assert_eq!(bodies(&sent), vec!["Fish & <chips> \"quoted\" 🍟"]);
    assert_eq!(stack.twilio.attempts(), 5);
    // Counted with Twilio's status and error code.
    assert!(
        stack.metrics().await.contains(
            r#"twilio_dialogflow_replies_failed_total{status="503",twilio_error="20500"} 1"#
        ),
        "{}",
        stack.metrics().await
    );
}

#[tokio::test]
async fn a_redelivery_in_flight_makes_no_second_agent_call_nor_second_reply() {
    let stack = start("CX", mode("auto", &[])).await;
    let message = Outgoing {
        message_sid: Some("SM000000000000000000000000000000aa".into()),
        ..says("slow")
    };
    let ((first, _), (second, _)) =
        tokio::join!(webhook(&stack, &message), webhook(&stack, &message));
    assert_eq!((first.as_str(), second.as_str()), (EMPTY, EMPTY));
    let sent = stack.twilio.wait_for(1).await;
    // A third delivery after the reply went out changes nothing either.
    let (third, _) = webhook(&stack, &message).await;
    assert_eq!(third, EMPTY);
    assert_eq!(bodies(&sent), vec!["Finally"]);
    assert_eq!(stack.agent_requests().len(), 1);
    assert_eq!(stack.twilio.sent().len(), 1);
}

#[tokio::test]
async fn replies_of_one_conversation_keep_their_order_while_others_do_not_wait() {
    let stack = start("CX", mode("api", &[])).await;
    // One person sends a question the agent is slow on, then a quick one.
    webhook(&stack, &says("a bit slow")).await;
    webhook(&stack, &says("hi")).await;
    // Meanwhile someone else asks something quick.
    let other = stack.phone_of("+15559990000");
    post_from(&other, &stack.bridge.url(), &says("tricky"), &[]).await;
    let sent = stack.twilio.wait_for(3).await;
    let to_user: Vec<&str> = sent
        .iter()
        .filter(|m| m.to == USER)
        .map(|m| m.body.as_str())
        .collect();
    assert_eq!(to_user, vec!["Slowly but surely", "Hello from the agent"]);
    // The other conversation did not wait behind the slow one.
    assert_eq!(sent[0].to, "+15559990000");
}

#[tokio::test]
async fn shutdown_still_sends_the_replies_owed() {
    let stack = start("CX", mode("api", &[])).await;
    webhook(&stack, &says("a bit slow")).await;
    let Stack {
        bridge,
        twilio,
        emulator,
        ..
    } = stack;
    bridge.shutdown().await.unwrap();
    drop(emulator);
    // Shutdown returned only after the owed reply went out.
    assert_eq!(bodies(&twilio.sent()), vec!["Slowly but surely"]);
}

#[tokio::test]
async fn status_callbacks_are_signature_checked() {
    let stack = start("CX", mode("api", &[])).await;
    let url = format!("{}status", stack.bridge.url());
    let message_sid = sid("SM", 1);
    let params = [
        ("MessageSid", message_sid.as_str()),
        ("MessageStatus", "undelivered"),
        ("ErrorCode", "30003"),
        ("AccountSid", ACCOUNT_SID),
    ];
    let (status, _) = post_signed(&url, &url, &params).await;
    assert_eq!(status, 200);
    let (status, _) = post(
        &url,
        &[FORM, ("x-twilio-signature", "forged")],
        format!("MessageSid={message_sid}&MessageStatus=undelivered"),
    )
    .await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn shutdown_cuts_the_webhooks_wait_short_and_sends_the_reply_through_the_api() {
    let stack = start("CX", mode("auto", &[("REPLY_DEADLINE", "10s")])).await;
    let message = Outgoing {
        message_sid: Some("SM000000000000000000000000000000bb".into()),
        ..says("slow")
    };
    // The message, and Twilio delivering it again while the first is still waiting.
    let deliver = || {
        let (phone, url, message) = (stack.phone.clone(), stack.bridge.url(), message.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let answer = post_from(&phone, &url, &message, &[]).await;
            (answer, started.elapsed())
        })
    };
    let waiting = deliver();
    agent_asked(&stack.emulator, 1).await;
    // The repeat's connection is open, and the server then answers its request even
    // if it starts to stop (it only refuses new connections): three with the one
    // reading the metrics, kept open for every look.
    let repeat = deliver();
    let metrics = reqwest::Client::new();
    let url = format!("{}metrics", stack.bridge.url());
    eventually(
        "the repeat's connection",
        Duration::from_secs(10),
        || async {
            let metrics = metrics
                .get(&url)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let open = series_value(&metrics, "twilio_dialogflow_connections_open");
            ready_if(open, |open| *open >= 3.0)
        },
    )
    .await;
    let Stack {
        bridge,
        twilio,
        emulator,
        ..
    } = stack;
    let stopping = Instant::now();
    bridge.shutdown().await.unwrap();
    let ((status, twiml), took) = waiting.await.unwrap();
    assert_eq!((status, twiml.as_str()), (200, EMPTY));
    assert!(
        took < Duration::from_secs(3),
        "the webhook did not wait for the 3 s agent: {took:?}"
    );
    let ((status, twiml), took) = repeat.await.unwrap();
    assert_eq!((status, twiml.as_str()), (200, EMPTY));
    assert!(took < Duration::from_secs(2), "the repeat waited: {took:?}");
    // One agent call, one reply, through the API.
    assert_eq!(emulator.requests().len(), 1);
    assert_eq!(bodies(&twilio.sent()), vec!["Finally"]);
    assert!(
        stopping.elapsed() < Duration::from_secs(8),
        "stopped within the grace period"
    );
    drop(emulator);
}

#[tokio::test]
async fn status_callbacks_are_checked_against_the_configured_url() {
    // Behind a domain of its own, Twilio calls (and signs) the callback URL the bridge
    // gave it, beside the configured webhook URL, not the URL the request arrived on.
    let stack = start(
        "CX",
        mode(
            "api",
            &[("TWILIO_WEBHOOK_URL", "https://bot.example.com/twilio/")],
        ),
    )
    .await;
    let message_sid = sid("SM", 1);
    let params = [
        ("MessageSid", message_sid.as_str()),
        ("MessageStatus", "delivered"),
        ("AccountSid", ACCOUNT_SID),
    ];
    let local = format!("{}status", stack.bridge.url());
    for (signed_url, expected) in [
        ("https://bot.example.com/twilio/status", 200),
        (local.as_str(), 403),
    ] {
        let (status, _) = post_signed(&local, signed_url, &params).await;
        assert_eq!(status, expected, "signed over {signed_url}");
    }
}
