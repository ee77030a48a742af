//! `GET /metrics` counts what really happened.

use crate::helpers::*;
use stand_ins::chat::Outgoing;

#[tokio::test]
async fn metrics_count_real_requests() {
    let stack = start("CX", |_| {}).await;
    stack.say("hi").await;
    stack.say("denied").await;
    let repeated = Outgoing {
        body: "menu".into(),
        message_sid: Some("SM0000000000000000000000000000beef".into()),
        ..Default::default()
    };
    stack.send(&repeated).await;
    stack.send(&repeated).await;
    let forger = stack.phone_signing_as(ACCOUNT_SID, "wrong");
    forger
        .send(&Outgoing {
            body: "hi".into(),
            ..Default::default()
        })
        .await
        .unwrap();

    let text = stack.metrics().await;
    let value = |series: &str| -> f64 {
        text.lines()
            .find_map(|line| {
                line.strip_prefix(series)
                    .and_then(|rest| rest.trim().parse().ok())
            })
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    };
    for (series, expected) in [
        (
            r#"twilio_dialogflow_webhooks_total{outcome="answered"}"#,
            3.0,
        ),
        (
            r#"twilio_dialogflow_webhooks_total{outcome="fallback"}"#,
            1.0,
        ),
        (
            r#"twilio_dialogflow_webhooks_total{outcome="bad_signature"}"#,
            1.0,
        ),
        (
            r#"twilio_dialogflow_agent_errors_total{status="PERMISSION_DENIED"}"#,
            1.0,
        ),
        ("twilio_dialogflow_duplicates_suppressed_total", 1.0),
        // hi (1) + fallback (1) + menu twice (2 + 2).
        (
            r#"twilio_dialogflow_replies_sent_total{route="webhook"}"#,
            6.0,
        ),
        // Three agent calls: hi, denied, menu once.
        ("twilio_dialogflow_agent_latency_seconds_count", 3.0),
    ] {
        assert_eq!(value(series), expected, "{series}");
    }
}
