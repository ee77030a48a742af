//! WhatsApp buttons and lists through the Content API, taps back, and what WhatsApp refuses.

use super::*;

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
    let stack = rich_stack(
        "CX",
        set(&[("REPLY_MODE", "auto"), ("REPLY_DEADLINE", "5s")]),
    )
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
