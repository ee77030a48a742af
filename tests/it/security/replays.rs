//! Finding 4: a signed webhook replayed as a new message. Twilio's signature joins names
//! and values with nothing between them, so the SIDs' shape is what tells one message
//! from another; and a message id is remembered for as long as a replay could matter.

use crate::helpers::*;
use bridge::twilio::signature;
use bridge::twilio::webhook::FormParams;
use stand_ins::chat::{Outgoing, PhoneReply};
use std::time::Duration;

/// The phone's webhook for `body` with message `message_sid`, sent through a Messaging
/// Service.
fn through_a_service(body: &str, message_sid: &str) -> Outgoing {
    Outgoing {
        body: body.into(),
        message_sid: Some(message_sid.into()),
        params: vec![("MessagingServiceSid".into(), sid("MG", 0x5e1))],
        ..Default::default()
    }
}

#[tokio::test]
async fn a_message_sid_that_swallowed_the_next_parameter_is_refused() {
    let stack = start("CX", |_| {}).await;
    let message_sid = sid("SM", 0xb0d);
    let message = through_a_service("hi", &message_sid);
    let (status, _) = stack.post_webhook(&message).await;
    assert_eq!(status, 200);
    assert_eq!(stack.agent_requests().len(), 1);

    // Sorted, `MessageSid` and `MessagingServiceSid` sit side by side in the signed
    // string: `MessageSidSM…MessagingServiceSidMG…`. One parameter holding both reads the
    // same, so the captured signature still verifies.
    let (params, captured_signature) = stack.phone.webhook(&message);
    let service = params.get("MessagingServiceSid").unwrap().to_owned();
    let shifted: Vec<(String, String)> = params
        .pairs()
        .iter()
        .filter(|(name, _)| name != "MessagingServiceSid")
        .map(|(name, value)| match name.as_str() {
            "MessageSid" => (name.clone(), format!("{value}MessagingServiceSid{service}")),
            _ => (name.clone(), value.clone()),
        })
        .collect();
    assert_eq!(
        signature::compute(AUTH_TOKEN, &stack.bridge.url(), &shifted),
        captured_signature,
        "the shifted form carries the captured signature"
    );
    let (status, reason) = post(
        &stack.bridge.url(),
        &[FORM, ("x-twilio-signature", &captured_signature)],
        FormParams::from_pairs(shifted).encode(),
    )
    .await;
    assert_eq!(status, 400, "{reason}");
    assert!(reason.contains("MessageSid"), "{reason}");
    assert_eq!(stack.agent_requests().len(), 1, "the agent was asked again");
    stack
        .assert_metrics_show(r#"outcome="malformed_sid""#)
        .await;
}

/// A message, answered; delivered again within the repeat window, the same answer; then
/// replayed once its answer is forgotten (`REPEAT_WINDOW=1s`), but within
/// `REPLAY_WINDOW`: answered with nothing, and the agent is not asked again.
async fn a_replay_after_the_repeat_window_is_refused(state_url: Option<&str>) {
    let mut settings = vec![("REPEAT_WINDOW", "1s")];
    settings.extend(state_url.map(|url| ("STATE_URL", url)));
    let stack = start("CX", set(&settings)).await;
    let message = Outgoing {
        body: "hi".into(),
        message_sid: Some(sid("SM", 0x1e5)),
        ..Default::default()
    };
    let first = stack.send(&message).await;
    assert_eq!(texts(&first), ["Hello from the agent"]);
    // Twilio's re-delivery: the same answer, as ever.
    assert_eq!(stack.send(&message).await, first);
    assert_eq!(stack.agent_requests().len(), 1);
    // Past the repeat window: the answer is forgotten, the message is not.
    quiet_window(Duration::from_millis(2100)).await;
    let replayed = stack.send(&message).await;
    assert_eq!(replayed, [], "a replay was answered: {replayed:?}");
    assert_eq!(stack.agent_requests().len(), 1, "the agent was asked again");
    // A new message of the same conversation is still answered.
    assert_eq!(
        texts(
            &stack
                .send(&Outgoing {
                    body: "hi".into(),
                    ..Default::default()
                })
                .await
        ),
        ["Hello from the agent"]
    );
}

#[tokio::test]
async fn a_replay_after_the_repeat_window_is_refused_with_local_state() {
    a_replay_after_the_repeat_window_is_refused(None).await;
}

#[tokio::test]
async fn a_replay_after_the_repeat_window_is_refused_with_redis() {
    let redis = RedisServer::start().await;
    a_replay_after_the_repeat_window_is_refused(Some(&redis.url())).await;
    // What the store keeps of the message: its answer is gone; a marker, of a few
    // bytes, stays for the whole replay window (24 h by default).
    let client = redis::Client::open(redis.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let message_key = stored_message_key(&sid("SM", 0x1e5));
    let answer: Option<String> = redis::cmd("GET")
        .arg(&message_key)
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(answer, None);
    let ttl: i64 = redis::cmd("TTL")
        .arg(format!("{message_key}:seen"))
        .query_async(&mut connection)
        .await
        .unwrap();
    assert!(ttl > 23 * 3600 && ttl <= 24 * 3600, "{ttl}");
}

/// This process's store keeps the answers of the last 20 000 messages; a message pushed
/// out of them by newer ones is still known as handled.
#[tokio::test]
async fn a_replay_after_more_newer_messages_than_answers_kept_is_refused() {
    const NEWER: u128 = 20_001;
    // The newer messages come from another person, past its pace after two: they are
    // admitted and remembered, and cost no agent call.
    let stack = start("CX", set(&[("RATE_LIMIT_PER_CONVERSATION", "2")])).await;
    let message = Outgoing {
        body: "hi".into(),
        message_sid: Some(sid("SM", 0x01d)),
        ..Default::default()
    };
    assert_eq!(texts(&stack.send(&message).await), ["Hello from the agent"]);
    let other = stack.phone_of("+15559990000");
    // Sixteen senders at a time, each taking the next message.
    let next = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(1));
    let mut senders = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (other, next) = (other.clone(), std::sync::Arc::clone(&next));
        senders.spawn(async move {
            let mut refused = Vec::new();
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if u128::from(n) > NEWER {
                    return refused;
                }
                let message = Outgoing {
                    body: "filler".into(),
                    message_sid: Some(sid("SM", 0x1_0000_0000 + u128::from(n))),
                    ..Default::default()
                };
                match other.send(&message).await.expect("bridge reachable") {
                    PhoneReply::Messages(_) => {}
                    refused_with => refused.push(refused_with),
                }
            }
        });
    }
    let newer: Vec<PhoneReply> = senders.join_all().await.concat();
    assert_eq!(newer, [], "newer messages were refused");
    let asked = stack.agent_requests().len();
    let replayed = stack.send(&message).await;
    assert_eq!(replayed, [], "a replay was answered: {replayed:?}");
    assert_eq!(
        stack.agent_requests().len(),
        asked,
        "the agent was asked again"
    );
}
