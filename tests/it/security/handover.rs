//! The hand-over API and the hand-over's own gaps: the token checked before the body,
//! STOP ending a hand-over, the sweeper that cannot lose `handoff.ended`, a rate limit
//! while with a person, no redirects followed, idempotent sends, and a repeat delivery
//! whose wait for another instance is bounded.

use crate::handoff::{
    conversation_of, desk_call, desk_call_with, desk_writes, people_stack, say, with_people, Desk,
    AGENT_WITH_PEOPLE, TOKEN,
};
use crate::helpers::*;
use serde_json::{json, Value};
use stand_ins::chat::Outgoing;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Starts a hand-over on `stack` (the agent hands over on "talk to a person"); returns
/// its conversation id once the desk has `handoff.started`.
async fn hand_over(stack: &Stack, desk: &Desk) -> String {
    say(stack, "talk to a person", 1).await;
    conversation_of(&desk.wait_for(1).await[0])
}

/// Posts to `/handoff/{conversation}/messages` with `token`, its JSON body a byte every
/// 100 ms and never finished; returns the answer's head, read while the body still drips.
async fn dribble_a_human_send(stack: &Stack, conversation: &str, token: &str) -> String {
    let address = stack
        .bridge
        .url()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let (mut reading, mut writing) = tokio::io::split(stream);
    // Under the body limit, so that only the token or a clock can refuse it early.
    let head = format!(
        "POST /handoff/{conversation}/messages HTTP/1.1\r\nhost: {address}\r\n\
         authorization: Bearer {token}\r\ncontent-type: application/json\r\n\
         content-length: 60000\r\n\r\n{{\"text\": \""
    );
    writing.write_all(head.as_bytes()).await.unwrap();
    let dribbling = tokio::spawn(async move {
        for _ in 0..60_000 {
            if writing.write_all(b"a").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut answer = Vec::new();
    let mut buffer = [0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(20), async {
        while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
            match reading.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    assert!(
        !dribbling.is_finished(),
        "the body was still being sent when the answer came"
    );
    dribbling.abort();
    assert!(read.is_ok(), "no answer while the body dribbled");
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn a_wrong_token_is_refused_before_a_dribbled_body_is_read() {
    let (desk, url) = Desk::start().await;
    let stack = people_stack("CX", &url, &[]).await;
    let conversation = hand_over(&stack, &desk).await;
    let answer = dribble_a_human_send(&stack, &conversation, "not-the-token-at-all").await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
}

#[tokio::test]
async fn a_right_token_with_a_dribbled_body_is_cut_at_the_request_deadline() {
    let (desk, url) = Desk::start().await;
    let stack = people_stack("CX", &url, &[("REQUEST_TIMEOUT", "2s")]).await;
    let conversation = hand_over(&stack, &desk).await;
    let answer = dribble_a_human_send(&stack, &conversation, TOKEN).await;
    // The client was too slow; its JSON was never wrong.
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
}

#[tokio::test]
async fn stop_during_a_hand_over_ends_it_and_the_desk_cannot_write_until_start() {
    let (desk, url) = Desk::start().await;
    let stack = people_stack("CX", &url, &[]).await;
    let conversation = hand_over(&stack, &desk).await;
    let (status, _) = stack
        .post_webhook(&with("STOP", &[("OptOutType", "STOP")]))
        .await;
    assert_eq!(status, 200);
    let events = desk.wait_for(2).await;
    assert_eq!(
        (events[1]["type"].as_str(), events[1]["reason"].as_str()),
        (Some("handoff.ended"), Some("opted_out")),
        "{events:?}"
    );
    assert_eq!(conversation_of(&events[1]), conversation);
    // Twilio would refuse the send (21610): the bridge refuses it first, and says why.
    let sent = stack.twilio.sent().len();
    let (status, answer) =
        desk_writes(&stack, &conversation, json!({"text": "Still there?"})).await;
    assert_eq!(status, 409, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap_or_default()
            .contains("opted out"),
        "{answer}"
    );
    assert_eq!(stack.twilio.sent().len(), sent, "nothing reached Twilio");
    // Back in (START), a new hand-over may be written to again.
    let (status, _) = stack
        .post_webhook(&with("START", &[("OptOutType", "START")]))
        .await;
    assert_eq!(status, 200);
    say(&stack, "talk to a person", 1).await;
    desk.wait_for(3).await;
    let (status, answer) =
        desk_writes(&stack, &conversation, json!({"text": "Welcome back"})).await;
    assert_eq!((status, answer), (200, json!({"sent": 1})));
}

#[tokio::test]
async fn the_sweeper_delivers_handoff_ended_after_a_failed_sweep() {
    let redis = RedisServer::start().await;
    let (desk, url) = Desk::start().await;
    let stack = start_with_agent(
        AGENT_WITH_PEOPLE,
        "CX",
        |vars: &mut HashMap<String, String>| {
            with_people(&url)(vars);
            vars.insert("STATE_URL".into(), redis.url());
            vars.insert("HANDOFF_TTL".into(), "1s".into());
            // One sweep's delivery gives up within a second.
            vars.insert("HANDOFF_RETRY_FOR".into(), "1s".into());
        },
    )
    .await;
    hand_over(&stack, &desk).await;
    // The desk fails while the hand-over runs out: the first sweep's `handoff.ended`
    // is dropped.
    *desk.down.lock().unwrap() = true;
    const DROPPED: &str = r#"twilio_dialogflow_handoff_events_total{result="dropped"}"#;
    eventually("a sweep that gave up", Duration::from_secs(15), || async {
        ready_if(series_value(&stack.metrics().await, DROPPED), |n| *n >= 1.0)
    })
    .await;
    *desk.down.lock().unwrap() = false;
    let events = desk.wait_for(2).await;
    assert_eq!(
        (events[1]["type"].as_str(), events[1]["reason"].as_str()),
        (Some("handoff.ended"), Some("expired")),
        "{events:?}"
    );
}

#[tokio::test]
async fn a_flood_while_with_a_person_is_refused_past_the_hand_over_limit() {
    let (desk, url) = Desk::start().await;
    let stack = people_stack(
        "CX",
        &url,
        &[
            ("HANDOFF_RATE_LIMIT", "3"),
            ("RATE_LIMIT_MESSAGE", "Slow down, please"),
        ],
    )
    .await;
    hand_over(&stack, &desk).await;
    for n in 0..3 {
        say(&stack, &format!("message {n}"), 0).await;
    }
    desk.wait_for(4).await;
    // Past the limit: told to slow down, once, and the desk hears nothing more.
    assert_eq!(say(&stack, "message 3", 1).await, vec!["Slow down, please"]);
    say(&stack, "message 4", 0).await;
    const LIMITED: &str = r#"twilio_dialogflow_rate_limited_total{limit="handoff"}"#;
    eventually("both refused", Duration::from_secs(10), || async {
        ready_if(series_value(&stack.metrics().await, LIMITED), |n| *n >= 2.0)
    })
    .await;
    let received = desk
        .kinds()
        .iter()
        .filter(|kind| *kind == "message.received")
        .count();
    assert_eq!(received, 3, "{:?}", desk.events());
}

/// A server answering every request with a 307 to `target`, counting them.
async fn redirecting_to(target: &str) -> (String, Arc<Mutex<usize>>) {
    let hits = Arc::new(Mutex::new(0usize));
    let counted = Arc::clone(&hits);
    let target = target.to_owned();
    let app = axum::Router::new().fallback(move || {
        let counted = Arc::clone(&counted);
        let target = target.clone();
        async move {
            *counted.lock().unwrap() += 1;
            (
                axum::http::StatusCode::TEMPORARY_REDIRECT,
                [(axum::http::header::LOCATION, target)],
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/events", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, hits)
}

#[tokio::test]
async fn the_hand_over_client_does_not_follow_redirects() {
    let (target, target_url) = Desk::start().await;
    let (url, hits) = redirecting_to(&target_url).await;
    let stack = people_stack(
        "CX",
        &url,
        &[("HANDOFF_UNAVAILABLE_MESSAGE", "No one can take over")],
    )
    .await;
    say(&stack, "talk to a person", 1).await;
    // The redirect is a refusal: the hand-over is given up, and the person told.
    let sent = stack.twilio.wait_for(2).await;
    assert_eq!(sent[1].body, "No one can take over");
    assert!(*hits.lock().unwrap() >= 1);
    assert_eq!(*target.attempts.lock().unwrap(), 0, "the target was called");
}

/// The human side's send with an `Idempotency-Key`: status and JSON answer.
async fn desk_sends_once(
    stack: &Stack,
    conversation: &str,
    key: &str,
    body: Value,
) -> (u16, Value) {
    desk_call_with(
        stack,
        &format!("{conversation}/messages"),
        TOKEN,
        &[("idempotency-key", key)],
        body,
    )
    .await
}

#[tokio::test]
async fn the_same_idempotency_key_sends_once() {
    let (desk, url) = Desk::start().await;
    let stack = people_stack("CX", &url, &[]).await;
    let conversation = hand_over(&stack, &desk).await;
    let sent = stack.twilio.sent().len();
    let key = "3f2c9a4e-send-1";
    let first = desk_sends_once(&stack, &conversation, key, json!({"text": "On its way"})).await;
    let again = desk_sends_once(&stack, &conversation, key, json!({"text": "On its way"})).await;
    assert_eq!(first, (200, json!({"sent": 1})));
    assert_eq!(again, first, "the same answer again");
    assert_eq!(stack.twilio.sent().len(), sent + 1, "sent once");
    let (status, answer) = desk_sends_once(
        &stack,
        &conversation,
        key,
        json!({"text": "Something else"}),
    )
    .await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(stack.twilio.sent().len(), sent + 1);
    // Another key is another message; and without one, each call sends.
    let other = desk_sends_once(
        &stack,
        &conversation,
        "another",
        json!({"text": "On its way"}),
    )
    .await;
    assert_eq!(other, (200, json!({"sent": 1})));
    let (status, _) = desk_call(
        &stack,
        &format!("{conversation}/messages"),
        TOKEN,
        json!({"text": "No key"}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(stack.twilio.sent().len(), sent + 3);
}

#[tokio::test]
async fn a_repeat_whose_first_delivery_never_finishes_is_answered_within_the_bound() {
    let redis = RedisServer::start().await;
    let stack = start("CX", set(&[("STATE_URL", &redis.url())])).await;
    // Another instance claimed the message and never finished it (it hangs, or died
    // before its lease was written).
    let sid = "SM5e0f1b2c3d4e5f60718293a4b5c6d7e8";
    let client = redis::Client::open(redis.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("SET")
        .arg(stored_message_key(sid))
        .arg("pending:another-instance-0:1")
        .arg("EX")
        .arg(3600)
        .query_async::<()>(&mut connection)
        .await
        .unwrap();
    let repeat = Outgoing {
        body: "hi".into(),
        message_sid: Some(sid.into()),
        ..Default::default()
    };
    let answered = tokio::time::timeout(Duration::from_secs(30), stack.post_webhook(&repeat)).await;
    let (status, twiml) = answered.expect("the repeat's wait for the first delivery is bounded");
    assert_eq!(status, 200);
    assert!(!twiml.contains("<Message"), "{twiml}");
    assert!(stack.agent_requests().is_empty(), "the agent was not asked");
    stack
        .assert_metrics_show(r#"twilio_dialogflow_repeat_waits_expired_total 1"#)
        .await;
}
