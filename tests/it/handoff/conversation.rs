//! The person, the agent and the desk: hand-overs started, answered and given back.

use super::*;

#[tokio::test]
async fn the_agent_hands_over_and_the_person_talks_to_the_desk_and_back() {
    for (agent_type, trigger) in [("CX", "live_agent_handoff"), ("ES", "payload")] {
        let (desk, url) = Desk::start().await;
        let stack = people_stack(agent_type, &url, &[]).await;
        assert_eq!(say(&stack, "hello", 1).await, vec!["Hello from the agent"]);
        // The agent's own reply in the hand-over's turn is still sent.
        assert_eq!(
            say(&stack, "talk to a person", 1).await,
            vec!["Getting a person"]
        );
        let started = desk.wait_for(1).await.remove(0);
        assert_eq!(started["type"], "handoff.started", "{agent_type}");
        assert_eq!(started["trigger"], trigger);
        assert_eq!(started["channel"], "sms");
        assert_eq!(started["metadata"], json!({"queue": "billing"}));
        let history: Vec<(String, String)> = started["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                (
                    l["from"].as_str().unwrap().into(),
                    l["text"].as_str().unwrap().into(),
                )
            })
            .collect();
        assert_eq!(
            history,
            vec![
                ("person".into(), "hello".into()),
                ("agent".into(), "Hello from the agent".into()),
                ("person".into(), "talk to a person".into()),
                ("agent".into(), "Getting a person".into()),
            ]
        );
        assert!(started.get("address").is_none(), "no address unless asked");
        let conversation = conversation_of(&started);
        assert!(!conversation.contains("555"), "the id is not the number");
        // While with a person, messages go to the desk, in order, never to the agent.
        let asked = stack.agent_requests().len();
        say(&stack, "my order is late", 0).await;
        let picture = Outgoing {
            media: vec!["https://example.com/receipt.jpg".into()],
            ..Default::default()
        };
        post_from(&stack.phone, &stack.bridge.url(), &picture, &[]).await;
        let events = desk.wait_for(3).await;
        assert_eq!(events[1]["type"], "message.received");
        assert_eq!(events[1]["message"]["text"], "my order is late");
        assert_eq!(
            events[2]["message"]["media"][0]["url"],
            "https://example.com/receipt.jpg"
        );
        assert!(events.iter().all(|e| conversation_of(e) == conversation));
        assert_eq!(
            stack.agent_requests().len(),
            asked,
            "the agent was not asked"
        );
        // The desk answers: a wrong token sends nothing.
        let sent_before = stack.twilio.sent().len();
        let (status, _) = desk_call(
            &stack,
            &format!("{conversation}/messages"),
            "not-the-token-at-all",
            json!({"text": "Sorry!"}),
        )
        .await;
        assert_eq!(status, 401);
        let (status, _) = desk_call(&stack, &format!("{conversation}/end"), "", json!({})).await;
        assert_eq!(status, 401);
        assert_eq!(stack.twilio.sent().len(), sent_before);
        for text in ["Sorry!", "It leaves the oven now."] {
            let (status, answer) = desk_writes(&stack, &conversation, json!({"text": text})).await;
            assert_eq!((status, answer), (200, json!({"sent": 1})));
        }
        let sent = stack.twilio.wait_for(sent_before + 2).await;
        let bodies: Vec<&str> = sent[sent_before..]
            .iter()
            .map(|m| m.body.as_str())
            .collect();
        assert_eq!(bodies, vec!["Sorry!", "It leaves the oven now."]);
        assert_eq!(sent[sent_before].to, USER);
        // The desk gives the conversation back.
        let (status, _) = desk_call(&stack, &format!("{conversation}/end"), TOKEN, json!({})).await;
        assert_eq!(status, 200);
        let events = desk.wait_for(4).await;
        assert_eq!(events[3]["type"], "handoff.ended");
        assert_eq!(events[3]["reason"], "desk");
        let (status, _) = desk_writes(&stack, &conversation, json!({"text": "late"})).await;
        assert_eq!(status, 404, "no hand-over any more");
        assert_eq!(say(&stack, "hello", 1).await, vec!["Hello from the agent"]);
        let metrics = stack.metrics().await;
        for line in [
            format!(r#"twilio_dialogflow_handoffs_started_total{{trigger="{trigger}"}} 1"#),
            r#"twilio_dialogflow_handoffs_ended_total{reason="desk"} 1"#.to_owned(),
            r#"twilio_dialogflow_handoff_events_total{result="delivered"} 4"#.to_owned(),
        ] {
            assert!(metrics.contains(&line), "{line} in\n{metrics}");
        }
    }
}

#[tokio::test]
async fn a_payload_or_a_keyword_starts_a_hand_over_too() {
    let (desk, url) = Desk::start().await;
    let stack = people_stack(
        "CX",
        &url,
        &[
            ("HANDOFF_KEYWORDS", "agent, Human"),
            ("HANDOFF_INCLUDE_ADDRESS", "true"),
        ],
    )
    .await;
    assert_eq!(
        say(&stack, "payload please", 1).await,
        vec!["Passing you on"]
    );
    let started = desk.wait_for(1).await.remove(0);
    assert_eq!(
        (started["trigger"].as_str(), &started["metadata"]),
        (Some("payload"), &json!({"queue": "sales"}))
    );
    assert_eq!(started["address"], USER, "HANDOFF_INCLUDE_ADDRESS=true");
    // Another person writes a keyword: no agent, the started message, and the desk.
    let other = stack.phone_of("+15550009999");
    let asked = stack.agent_requests().len();
    let told = say_as(&stack, &other, " HUMAN ", 1).await;
    assert_eq!(told, vec!["One moment: a person will answer you here."]);
    assert_eq!(stack.agent_requests().len(), asked);
    let events = desk.wait_for(2).await;
    assert_eq!(events[1]["trigger"], "keyword");
    assert_ne!(conversation_of(&events[1]), conversation_of(&events[0]));
}

#[tokio::test]
async fn in_auto_mode_with_locations_and_past_the_rate_limit_everything_reaches_the_desk() {
    let (desk, url) = Desk::start().await;
    let stack = people_stack(
        "CX",
        &url,
        &[("REPLY_MODE", "auto"), ("RATE_LIMIT_PER_CONVERSATION", "3")],
    )
    .await;
    // auto: the agent's reply travels in the webhook's answer, the events follow.
    let reply = stack.say("talk to a person").await;
    assert_eq!(texts(&reply), vec!["Getting a person"]);
    desk.wait_for(1).await;
    for text in ["one", "two", "three", "four"] {
        let reply = stack.say(text).await;
        assert!(
            reply.is_empty(),
            "nothing from the agent or the limit: {reply:?}"
        );
    }
    let place = Outgoing {
        params: vec![
            ("Latitude".into(), "52.37".into()),
            ("Longitude".into(), "4.89".into()),
        ],
        ..Default::default()
    };
    assert!(stack.send(&place).await.is_empty());
    let events = desk.wait_for(6).await;
    let said: Vec<&str> = events[1..5]
        .iter()
        .map(|e| e["message"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(said, vec!["one", "two", "three", "four"]);
    assert_eq!(events[5]["message"]["location"]["latitude"], 52.37);
    assert!(
        stack.twilio.sent().is_empty(),
        "no \"slow down\" to someone talking to a person"
    );
}

#[tokio::test]
async fn the_human_side_sends_media_and_long_text_within_twilios_limits() {
    let (desk, url) = Desk::start().await;
    let stack = people_stack("CX", &url, &[]).await;
    say(&stack, "talk to a person", 1).await;
    let conversation = conversation_of(&desk.wait_for(1).await[0]);
    let long = "word ".repeat(700);
    let (status, answer) = desk_writes(
        &stack,
        &conversation,
        json!({"text": long, "media": ["https://example.com/receipt.jpg"]}),
    )
    .await;
    assert_eq!((status, answer), (200, json!({"sent": 3})));
    let sent = stack.twilio.wait_for(4).await;
    assert!(sent[1..].iter().all(|m| m.body.chars().count() <= 1600));
    let whole: String = sent[1..].iter().map(|m| m.body.as_str()).collect();
    assert_eq!(whole, long);
    assert_eq!(
        sent[3].media,
        vec!["https://example.com/receipt.jpg".to_string()]
    );
    for (body, problem) in [
        (json!({"text": ""}), "nothing to send"),
        (json!({"text": "x", "media": ["ftp://x"]}), "http(s) URLs"),
        (json!({"text": "x".repeat(16_001)}), "at most 16000"),
        (json!({"txt": "typo"}), "must be JSON"),
    ] {
        let (status, answer) = desk_writes(&stack, &conversation, body).await;
        assert_eq!(status, 400, "{answer}");
        assert!(
            answer["error"].as_str().unwrap().contains(problem),
            "{answer}"
        );
    }
    let (status, _) = desk_call(
        &stack,
        "not-a-conversation/messages",
        TOKEN,
        json!({"text": "x"}),
    )
    .await;
    assert_eq!(status, 404);
}
