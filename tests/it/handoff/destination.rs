//! A helpdesk that fails, goes away or stays down.

use super::*;

#[tokio::test]
async fn a_destination_failing_for_a_while_gets_every_event_once_in_order() {
    let (desk, url) = Desk::start().await;
    let stack = people_stack("CX", &url, &[]).await;
    desk.fail_next.lock().unwrap().extend([500, 502]);
    say(&stack, "talk to a person", 1).await;
    say(&stack, "one", 0).await;
    say(&stack, "two", 0).await;
    let events = desk.wait_for(3).await;
    assert_eq!(
        desk.kinds(),
        vec!["handoff.started", "message.received", "message.received"]
    );
    assert_eq!(events[1]["message"]["text"], "one");
    assert_eq!(events[2]["message"]["text"], "two");
    // Each retry of an event carries the same id: a desk can drop repeats.
    assert_eq!(*desk.attempts.lock().unwrap(), 5);
    let ids = desk.attempt_ids.lock().unwrap().clone();
    let delivered: Vec<String> = desk
        .received
        .lock()
        .unwrap()
        .iter()
        .map(|(headers, _)| headers["webhook-id"].to_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        ids[..3],
        [
            delivered[0].clone(),
            delivered[0].clone(),
            delivered[0].clone()
        ]
    );
    assert_eq!(ids[3..], delivered[1..]);
    assert_ne!(delivered[1], delivered[2]);
    stack
        .assert_metrics_show(r#"twilio_dialogflow_handoff_events_total{result="retried"} 2"#)
        .await;
}

#[tokio::test]
async fn a_destination_down_past_the_retry_time_gives_the_conversation_back() {
    let (desk, url) = Desk::start().await;
    let stack = people_stack("CX", &url, &[("HANDOFF_RETRY_FOR", "1s")]).await;
    *desk.down.lock().unwrap() = true;
    let told = say(&stack, "talk to a person", 2).await;
    assert_eq!(
        told,
        vec![
            "Getting a person",
            "Sorry, no one can take over right now. You're back with the assistant."
        ]
    );
    // Back with the agent, and never a 5xx to Twilio.
    assert_eq!(say(&stack, "hello", 1).await, vec!["Hello from the agent"]);
    let metrics = stack.metrics().await;
    for line in [
        "twilio_dialogflow_handoffs_failed_total 1",
        r#"twilio_dialogflow_handoffs_ended_total{reason="unavailable"} 1"#,
        r#"twilio_dialogflow_handoff_events_total{result="dropped"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
}

#[tokio::test]
async fn a_desk_that_goes_away_mid_hand_over_gives_the_conversation_back() {
    let (desk, url) = Desk::start().await;
    let stack = people_stack(
        "CX",
        &url,
        &[
            ("HANDOFF_RETRY_FOR", "1s"),
            ("HANDOFF_RETURN_EVENT", "true"),
        ],
    )
    .await;
    say(&stack, "talk to a person", 1).await;
    desk.wait_for(1).await;
    *desk.down.lock().unwrap() = true;
    let told = say(&stack, "hello?", 1).await;
    assert_eq!(
        told,
        vec!["Sorry, no one can take over right now. You're back with the assistant."]
    );
    assert_eq!(
        say(&stack, "hello", 2).await,
        vec!["Welcome back", "Hello from the agent"]
    );
}
