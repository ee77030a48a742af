//! Finding 4: a signed webhook replayed as a new message. Twilio's signature joins names
//! and values with nothing between them, so the SIDs' shape is what tells one message
//! from another; and a message id is remembered for as long as a replay could matter.

use crate::helpers::*;
use bridge::twilio::signature;
use bridge::twilio::webhook::FormParams;
use stand_ins::chat::Outgoing;

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
