//! Numbered menus where buttons cannot go: SMS, TwiML, menus too big for WhatsApp.

use super::*;

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
        assert_eq!(stack.replies_to(" 2 ").await, ["Size medium"]);
        assert_eq!(last_asked(&stack), "Medium", "the choice, not the number");
        stack.say("order").await;
        assert_eq!(stack.replies_to("LARGE!").await, ["Size large"]);
        // No menu pending now: a number is sent as typed.
        assert_eq!(stack.replies_to("2").await, ["Not understood"]);
        assert_eq!(last_asked(&stack), "2");
        // A choice with an event asks the event; one with a value asks the value.
        let toppings = stack.say("toppings").await;
        assert_eq!(
            texts(&toppings),
            vec!["Which topping?\n1 Margherita: Tomato and basil\n2 Pepperoni\n3 Mushroom"]
        );
        assert_eq!(stack.replies_to("2").await, ["Pepperoni by event"]);
        assert_eq!(last_asked(&stack), "event:pepperoni_event");
        stack.say("toppings").await;
        assert_eq!(stack.replies_to("mushroom").await, ["Mushroom by value"]);
        assert!(stack.twilio.contents().is_empty(), "no content for SMS");
        stack
            .assert_metrics_show(r#"twilio_dialogflow_choices_picked_total{kind="number"} 2"#)
            .await;
    }
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
    stack
        .assert_metrics_show(r#"twilio_dialogflow_menus_as_text_total{reason="title_too_long"} 1"#)
        .await;
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
async fn messenger_lists_buttons_descriptions_and_accordions_on_sms() {
    let stack = rich_stack("CX", |_| {}).await;
    let shown = stack.say("messenger more").await;
    assert_eq!(
        texts(&shown),
        vec![
            "Toppings\nPick one\nWebsite: https://p.example\nAllergens\ngluten\n1 Pepperoni: spicy"
        ]
    );
    assert_eq!(stack.replies_to("1").await, ["Pepperoni by event"]);
    let es = rich_stack("ES", |_| {}).await;
    assert_eq!(es.replies_to("wrapped").await, ["Wrapped?\n1 Yes · 2 No"]);
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
