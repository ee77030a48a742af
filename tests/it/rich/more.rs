//! Templates, other rich shapes, locations, typing, and menus across instances.

use super::*;

#[tokio::test]
async fn templates_are_sent_by_content_sid_and_need_the_api() {
    let stack = rich_stack("CX", api_mode).await;
    stack.twilio.register_template(
        "HX0123456789abcdef0123456789abcdef",
        "Hello {{1}}, we miss you",
    );
    let phone = whatsapp_phone(&stack);
    let sent = through_api(&stack, &phone, &says("template"), 1).await;
    assert_eq!(
        sent[0].content_sid.as_deref(),
        Some("HX0123456789abcdef0123456789abcdef")
    );
    assert_eq!(sent[0].content_variables.as_deref(), Some(r#"{"1":"Ann"}"#));
    assert_eq!(sent[0].body, "Hello Ann, we miss you");
    stack
        .assert_metrics_show(r#"twilio_dialogflow_rich_messages_sent_total{kind="template"} 1"#)
        .await;
    // TwiML cannot carry a template: nothing is sent, and the webhook still succeeds.
    let twiml_only = rich_stack("CX", |_| {}).await;
    let (status, twiml) = post_from(
        &whatsapp_phone(&twiml_only),
        &twiml_only.bridge.url(),
        &says("template"),
        &[],
    )
    .await;
    assert_eq!(
        (status, twiml.contains("<Message>")),
        (200, false),
        "{twiml}"
    );
}

#[tokio::test]
async fn messenger_rich_content_and_es_cards_become_menus() {
    let cx = rich_stack("CX", |_| {}).await;
    assert_eq!(cx.replies_to("messenger").await, ["Pizzabot\n1 Yes · 2 No"]);
    assert_eq!(cx.replies_to("2").await, ["Not understood"]);
    assert_eq!(last_asked(&cx), "No");
    for agent_type in ["CX", "ES"] {
        let stack = rich_stack(agent_type, |_| {}).await;
        let card = stack.say("card").await;
        assert_eq!(card.len(), 1, "{card:?}");
        assert_eq!(
            card[0].body, "Pepperoni\n$11\n1 Order pepperoni",
            "{agent_type}"
        );
        assert_eq!(card[0].media, vec!["https://example.com/p.jpg".to_string()]);
        assert_eq!(stack.replies_to("1").await, ["Pepperoni ordered"]);
    }
}

#[tokio::test]
async fn a_shared_location_reaches_the_agent_as_an_event_with_the_place() {
    for agent_type in ["CX", "ES"] {
        let stack = rich_stack(agent_type, |_| {}).await;
        let place = Outgoing {
            params: vec![
                ("MessageType".into(), "location".into()),
                ("Latitude".into(), "52.3731".into()),
                ("Longitude".into(), "4.8922".into()),
                ("Address".into(), "Dam 1, Amsterdam".into()),
                ("Label".into(), "Our shop".into()),
            ],
            ..Default::default()
        };
        let reply = send_from(&whatsapp_phone(&stack), &place).await;
        assert_eq!(texts(&reply), vec!["Location received"], "{agent_type}");
        assert_eq!(last_asked(&stack), "event:twilio_location");
        let requests = stack.agent_requests();
        let payload = &requests.last().unwrap().body["queryParams"]["payload"];
        assert_eq!(
            payload["location"],
            serde_json::json!({"latitude": 52.3731, "longitude": 4.8922, "address": "Dam 1, Amsterdam", "label": "Our shop"})
        );
    }
}

#[tokio::test]
async fn whatsapp_shows_typing_while_a_slow_agent_thinks() {
    let stack = rich_stack("CX", |vars| {
        api_mode(vars);
        vars.insert("TYPING_AFTER".into(), "300ms".into());
    })
    .await;
    let phone = whatsapp_phone(&stack);
    let slow = Outgoing {
        message_sid: Some(format!("SM{:032x}", 7)),
        ..says("slow")
    };
    let sent = through_api(&stack, &phone, &slow, 1).await;
    assert_eq!(sent[0].body, "Slow answer");
    assert_eq!(stack.twilio.typing(), vec![format!("SM{:032x}", 7)]);
    // A quick answer shows no typing; nor does SMS.
    through_api(&stack, &phone, &says("order"), 1).await;
    let sms = stack.phone_of("+15550001111");
    through_api(&stack, &sms, &says("slow"), 1).await;
    assert_eq!(stack.twilio.typing().len(), 1);
    // Off with 0.
    let off = rich_stack("CX", |vars| {
        api_mode(vars);
        vars.insert("TYPING_AFTER".into(), "0".into());
    })
    .await;
    through_api(&off, &whatsapp_phone(&off), &says("slow"), 1).await;
    assert!(off.twilio.typing().is_empty());
}

#[tokio::test]
async fn a_menu_sent_by_one_instance_is_answered_on_another() {
    let redis = RedisServer::start().await;
    a_menu_sent_by_one_instance_is_answered_on_another_on(&redis, "menus").await;
}

/// Two instances on `store`, keys under `prefix`: a numbered menu sent by one is
/// answered with a number at the other, and then forgotten.
pub(crate) async fn a_menu_sent_by_one_instance_is_answered_on_another_on(
    store: &impl SharedStore,
    prefix: &str,
) {
    let shared = |vars: &mut HashMap<String, String>| vars.extend(sharing(store, prefix));
    let one = rich_stack("CX", shared).await;
    let other = rich_stack("CX", shared).await;
    assert_eq!(one.replies_to("order").await.len(), 1);
    let menus = store.keys(&format!("{prefix}:*:r:menu")).await;
    assert_eq!(menus.len(), 1, "the menu is in the store: {menus:?}");
    assert_eq!(other.replies_to("3").await, ["Size large"]);
    assert_eq!(last_asked(&other), "Large");
    let keys = store.keys(&format!("{prefix}:*:r:menu")).await;
    assert!(keys.is_empty(), "answered, the menu is gone: {keys:?}");
}

#[tokio::test]
async fn instances_share_the_menus_contents() {
    let redis = RedisServer::start().await;
    let one = rich_stack("CX", |vars| {
        api_mode(vars);
        vars.insert("STATE_URL".into(), redis.url());
    })
    .await;
    // The other instance sends through the same account (the same stand-in).
    let twilio = one.twilio.base_url();
    let other = rich_stack("CX", |vars| {
        api_mode(vars);
        vars.insert("STATE_URL".into(), redis.url());
        vars.insert("TWILIO_API_BASE_URL".into(), twilio.clone());
    })
    .await;
    through_api(&one, &whatsapp_phone(&one), &says("order"), 1).await;
    let phone = Phone::new(
        &other.bridge.url(),
        ACCOUNT_SID,
        AUTH_TOKEN,
        "whatsapp:+15550004444",
        &format!("whatsapp:{OUR_NUMBER}"),
    )
    .unwrap();
    let (status, _) = post_from(&phone, &other.bridge.url(), &says("order"), &[]).await;
    assert_eq!(status, 200);
    let sent = one.twilio.wait_for(2).await;
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[1].to, "whatsapp:+15550004444");
    assert_eq!(sent[1].content_sid, sent[0].content_sid);
    assert_eq!(
        one.twilio.contents().len(),
        1,
        "made once for both instances"
    );
}

#[tokio::test]
async fn a_failing_typing_indicator_changes_nothing() {
    let stack = rich_stack("CX", |vars| {
        api_mode(vars);
        vars.insert("TYPING_AFTER".into(), "100ms".into());
        vars.insert(
            "TWILIO_MESSAGING_BASE_URL".into(),
            format!("http://127.0.0.1:{}", free_port()),
        );
    })
    .await;
    let sent = through_api(&stack, &whatsapp_phone(&stack), &says("slow"), 1).await;
    assert_eq!(sent[0].body, "Slow answer");
}
