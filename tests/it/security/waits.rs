//! Every wait for another turn is bounded. A message behind a turn that never finishes
//! (its instance alive but lost) is answered, out of order, once its bound has passed.
//! The human side's call behind a message whose agent never answers is refused within
//! its bound (503 and `Retry-After`), and sends nothing.

use crate::handoff::{
    conversation_of, desk_call, say, with_people, Desk, AGENT_WITH_PEOPLE, TOKEN,
};
use crate::helpers::*;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;

/// The hand-over agent, with a question its agent never answers.
fn agent_that_hangs() -> String {
    AGENT_WITH_PEOPLE.replace(
        "fallback:",
        "  - name: hang\n    phrases: [\"hang\"]\n    fault: { kind: hang }\nfallback:",
    )
}

/// The human side writes into `conversation`: status, `Retry-After` and JSON answer,
/// or `None` if no answer came within `patience`.
async fn desk_writes_within(
    stack: &Stack,
    conversation: &str,
    patience: Duration,
) -> Option<(u16, Option<String>, Value)> {
    let call = reqwest::Client::new()
        .post(format!(
            "{}handoff/{conversation}/messages",
            stack.bridge.url()
        ))
        .bearer_auth(TOKEN)
        .json(&json!({"text": "Are you still there?"}))
        .send();
    let response = tokio::time::timeout(patience, call).await.ok()?.unwrap();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Some((
        status,
        retry_after,
        response.json().await.unwrap_or(Value::Null),
    ))
}

/// A conversation handed over and given back, whose next message is held by an agent
/// that never answers (within AGENT_TIMEOUT, two minutes): the human side's call then
/// waits behind it. With `STATE_LEASE=2s`, its bound is two seconds.
async fn held_by_a_stuck_turn(state_url: Option<String>) {
    let (desk, url) = Desk::start().await;
    let stack = start_with_agent(
        &agent_that_hangs(),
        "CX",
        |vars: &mut HashMap<String, String>| {
            with_people(&url)(vars);
            vars.insert("AGENT_TIMEOUT".into(), "120s".into());
            vars.insert("STATE_LEASE".into(), "2s".into());
            if let Some(state_url) = state_url {
                vars.insert("STATE_URL".into(), state_url);
            }
        },
    )
    .await;
    say(&stack, "talk to a person", 1).await;
    let conversation = conversation_of(&desk.wait_for(1).await[0]);
    let (status, _) = desk_call(&stack, &format!("{conversation}/end"), TOKEN, json!({})).await;
    assert_eq!(status, 200);
    // Back with the agent, which never answers this one: the turn holds the
    // conversation for as long as AGENT_TIMEOUT.
    say(&stack, "hang", 0).await;
    eventually("the agent asked", Duration::from_secs(10), || async {
        ready_if(stack.agent_requests(), |asked| {
            asked.iter().any(|r| r.body.to_string().contains("hang"))
        })
    })
    .await;
    let sent = stack.twilio.sent().len();
    // Well past the bound, well short of the agent's timeout: before, the call hung
    // until the agent's turn ended.
    let answer = desk_writes_within(&stack, &conversation, Duration::from_secs(30)).await;
    let (status, retry_after, body) = answer
        .expect("the human side's call was answered within its bound, not held by the stuck turn");
    assert_eq!(status, 503, "{body}");
    assert_eq!(retry_after.as_deref(), Some("5"));
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("earlier message") && e.contains("nothing was sent")),
        "{body}"
    );
    assert_eq!(stack.twilio.sent().len(), sent, "nothing reached Twilio");
    stack
        .assert_metrics_show(
            r#"twilio_dialogflow_turn_waits_expired_total{waiting="human_side"} 1"#,
        )
        .await;
}

#[tokio::test]
async fn the_human_sides_wait_behind_a_stuck_turn_is_bounded() {
    held_by_a_stuck_turn(None).await;
}

#[tokio::test]
async fn the_human_sides_wait_behind_a_stuck_turn_is_bounded_with_redis() {
    let redis = RedisServer::start().await;
    held_by_a_stuck_turn(Some(redis.url())).await;
}

/// Sets up, in the shared store, a turn of `session` held by an instance that is alive
/// but lost: its lease runs far in the future, and it never finishes.
async fn stuck_turn_of(redis: &RedisServer, session: &str) {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    // A turn is fields of its conversation's hash: the one here has a token, and a
    // lease that never runs out.
    let conversation = format!("twilio-dialogflow:{{{session}}}:c");
    let seq: u64 = redis::cmd("HINCRBY")
        .arg(&conversation)
        .arg("next")
        .arg(1)
        .query_async(&mut connection)
        .await
        .unwrap();
    redis::cmd("HSET")
        .arg(&conversation)
        .arg(format!("{seq}:token"))
        .arg("another-instance-0")
        .arg(format!("{seq}:lease"))
        .arg(u64::MAX / 2)
        .query_async::<()>(&mut connection)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_message_behind_a_turn_that_never_finishes_is_answered_after_the_bound() {
    let redis = RedisServer::start().await;
    let stack = start(
        "CX",
        set(&[
            ("STATE_URL", &redis.url()),
            ("REPLY_MODE", "api"),
            ("AGENT_TIMEOUT", "1s"),
            ("STATE_LEASE", "1s"),
        ]),
    )
    .await;
    say(&stack, "hello", 1).await;
    let conversations = redis.keys("twilio-dialogflow:{*}:c").await;
    let [conversation] = conversations.as_slice() else {
        panic!("one conversation: {conversations:?}")
    };
    let session = conversation
        .trim_start_matches("twilio-dialogflow:{")
        .trim_end_matches("}:c");
    stuck_turn_of(&redis, session).await;
    // Before, the message waited for as long as the stuck turn lasted: for good.
    let (status, _) = stack
        .post_webhook(&stand_ins::chat::Outgoing {
            body: "hi".into(),
            ..Default::default()
        })
        .await;
    assert_eq!(status, 200);
    let replies = eventually(
        "the answer, out of order",
        Duration::from_secs(20),
        || async { ready_if(stack.twilio.sent(), |sent| sent.len() >= 2) },
    )
    .await;
    assert_eq!(replies[1].body, "Hello from the agent");
    // At least once: on a loaded machine the first turn's own wait may run out too.
    let expired = r#"twilio_dialogflow_turn_waits_expired_total{waiting="message"}"#;
    eventually(
        "the expired wait counted",
        Duration::from_secs(10),
        || async { ready_if(series_value(&stack.metrics().await, expired), |n| *n >= 1.0) },
    )
    .await;
}
