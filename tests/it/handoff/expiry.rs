//! Quiet hand-overs end by themselves, once, on any instance.

use super::*;

#[tokio::test]
async fn a_quiet_hand_over_ends_by_itself_and_the_agent_says_welcome_back() {
    let (desk, url) = Desk::start().await;
    let stack = people_stack(
        "ES",
        &url,
        &[("HANDOFF_TTL", "1s"), ("HANDOFF_RETURN_EVENT", "true")],
    )
    .await;
    say(&stack, "talk to a person", 1).await;
    let conversation = conversation_of(&desk.wait_for(1).await[0]);
    // Nobody writes: the helpdesk is told all the same.
    let events = desk.wait_for(2).await;
    assert_eq!(
        (events[1]["type"].as_str(), events[1]["reason"].as_str()),
        (Some("handoff.ended"), Some("expired")),
        "{events:?}"
    );
    let (status, _) = desk_writes(&stack, &conversation, json!({"text": "still there?"})).await;
    assert_eq!(status, 404, "the hand-over is over");
    // The agent hears of it first, then the message.
    assert_eq!(
        say(&stack, "hello", 2).await,
        vec!["Welcome back", "Hello from the agent"]
    );
}

#[tokio::test]
async fn a_hand_over_holds_across_instances() {
    let redis = RedisServer::start().await;
    a_hand_over_holds_across_instances_on(&redis, "handover").await;
}

/// Two instances on `store`, keys under `prefix`: a hand-over started through one is
/// followed, answered and ended through the other.
pub(crate) async fn a_hand_over_holds_across_instances_on(store: &impl SharedStore, prefix: &str) {
    let (desk, url) = Desk::start().await;
    let shared = |vars: &mut HashMap<String, String>| {
        with_people(&url)(vars);
        vars.extend(sharing(store, prefix));
    };
    let one = start_with_agent(AGENT_WITH_PEOPLE, "CX", shared).await;
    let other = start_with_agent(AGENT_WITH_PEOPLE, "CX", shared).await;
    say(&one, "talk to a person", 1).await;
    let conversation = conversation_of(&desk.wait_for(1).await[0]);
    // The other instance sends the person's message to the desk, not to its agent.
    say_as(&other, &other.phone, "are you there?", 0).await;
    let events = desk.wait_for(2).await;
    assert_eq!(events[1]["message"]["text"], "are you there?");
    assert!(other.agent_requests().is_empty());
    // The desk may answer through either instance.
    let (status, _) = desk_writes(&other, &conversation, json!({"text": "Yes!"})).await;
    assert_eq!(status, 200);
    assert_eq!(other.twilio.wait_for(1).await[0].body, "Yes!");
    let (status, _) = desk_call(&one, &format!("{conversation}/end"), TOKEN, json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(
        say_as(&other, &other.phone, "hello", 1).await,
        vec!["Hello from the agent"]
    );
}

#[tokio::test]
async fn a_hand_over_expires_after_the_ttl_and_the_person_is_back_with_the_agent() {
    let (desk, url) = Desk::start().await;
    // Hand-overs keep time in whole seconds: a TTL of 1 s could run out between the
    // two messages below, 2 s cannot.
    let stack = people_stack("CX", &url, &[("HANDOFF_TTL", "2s")]).await;
    say(&stack, "talk to a person", 1).await;
    say(&stack, "still there?", 0).await;
    desk.wait_for(2).await;
    // Quiet for the TTL, the hand-over ends: the sweep (every 500 ms) tells the desk.
    // Waiting for that, not for a guess at how long it takes, the person then writes
    // to the agent.
    let events = desk.wait_for(3).await;
    assert_eq!(
        (events[2]["type"].as_str(), events[2]["reason"].as_str()),
        (Some("handoff.ended"), Some("expired"))
    );
    assert_eq!(say(&stack, "hello", 1).await, vec!["Hello from the agent"]);
}

/// How many times each of two instances has looked for hand-overs due to end (each
/// sweep asks the store once).
async fn sweeps(one: &Stack, other: &Stack) -> (f64, f64) {
    const DUE: &str = r#"twilio_dialogflow_state_calls_total{op="due"}"#;
    (metric(DUE, one).await, metric(DUE, other).await)
}

#[tokio::test]
async fn with_two_instances_a_quiet_hand_over_is_ended_once() {
    let redis = RedisServer::start().await;
    with_two_instances_a_quiet_hand_over_is_ended_once_on(&redis, "quiet").await;
}

/// Two instances on `store`, keys under `prefix`, both sweeping: a quiet hand-over is
/// ended by one of them, and the helpdesk told once.
pub(crate) async fn with_two_instances_a_quiet_hand_over_is_ended_once_on(
    store: &impl SharedStore,
    prefix: &str,
) {
    let (desk, url) = Desk::start().await;
    let shared = |vars: &mut HashMap<String, String>| {
        with_people(&url)(vars);
        vars.extend(sharing(store, prefix));
        vars.insert("HANDOFF_TTL".into(), "1s".into());
    };
    let one = start_with_agent(AGENT_WITH_PEOPLE, "CX", shared).await;
    let other = start_with_agent(AGENT_WITH_PEOPLE, "CX", shared).await;
    say(&one, "talk to a person", 1).await;
    // Quiet for the TTL (1 s, on a clock of whole seconds), it is ended by the sweep of
    // one instance or the other (each every 500 ms).
    desk.wait_for(2).await;
    assert_eq!(desk.kinds(), vec!["handoff.started", "handoff.ended"]);
    // Once: each instance has since looked at the schedule again (two calls, so one
    // whole sweep began after the end), and neither found it due a second time.
    let before = sweeps(&one, &other).await;
    eventually(
        "a sweep of each instance",
        Duration::from_secs(10),
        || async {
            ready_if(sweeps(&one, &other).await, |now| {
                now.0 >= before.0 + 2.0 && now.1 >= before.1 + 2.0
            })
        },
    )
    .await;
    assert_eq!(
        metric(EXPIRED, &one).await + metric(EXPIRED, &other).await,
        1.0
    );
    assert_eq!(desk.kinds(), vec!["handoff.started", "handoff.ended"]);
}
