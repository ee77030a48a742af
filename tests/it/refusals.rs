//! What the bridge refuses, and how it finds the URL Twilio signed. A refused webhook
//! never reaches the agent.

use crate::helpers::*;
use stand_ins::chat::{Outgoing, Phone, PhoneReply};

fn hi() -> Outgoing {
    Outgoing {
        body: "hi".into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn health_check_answers() {
    let stack = start("CX", |_| {}).await;
    for path in ["healthz", "health"] {
        let response = reqwest::get(format!("{}{path}", stack.bridge.url()))
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
}

#[tokio::test]
async fn a_webhook_without_signature_is_refused() {
    let stack = start("CX", |_| {}).await;
    let (params, _) = stack.phone.webhook(&hi());
    let (status, reason) = post(&stack.bridge.url(), &[FORM], params.encode()).await;
    assert_eq!(
        (status, reason.trim()),
        (403, "missing X-Twilio-Signature header")
    );
    assert!(stack.agent_requests().is_empty());
}

#[tokio::test]
async fn a_tampered_webhook_is_refused() {
    let stack = start("CX", |_| {}).await;
    let (params, signature) = stack.phone.webhook(&hi());
    let tampered = params.encode().replace("Body=hi", "Body=ho");
    let (status, reason) = post(
        &stack.bridge.url(),
        &[FORM, ("x-twilio-signature", &signature)],
        tampered,
    )
    .await;
    assert_eq!(
        (status, reason.trim()),
        (403, "X-Twilio-Signature does not match this request")
    );
    assert!(stack.agent_requests().is_empty());
}

#[tokio::test]
async fn a_webhook_signed_with_another_token_is_refused() {
    let stack = start("CX", |_| {}).await;
    let forger = stack.phone_signing_as(ACCOUNT_SID, "not-the-token");
    let reply = forger.send(&hi()).await.unwrap();
    assert!(matches!(reply, PhoneReply::Refused { status: 403, .. }));
    assert!(stack.agent_requests().is_empty());
}

#[tokio::test]
async fn the_secondary_token_is_accepted_during_a_rotation() {
    let stack = start("CX", set(&[("TWILIO_AUTH_TOKEN_SECONDARY", "next-token")])).await;
    let rotated = stack.phone_signing_as(ACCOUNT_SID, "next-token");
    assert!(matches!(rotated.send(&hi()).await.unwrap(), PhoneReply::Messages(m) if m.len() == 1));
}

#[tokio::test]
async fn another_accounts_webhook_is_refused() {
    let stack = start("CX", |_| {}).await;
    let other = stack.phone_signing_as("ACffffffffffffffffffffffffffffffff", AUTH_TOKEN);
    let reply = other.send(&hi()).await.unwrap();
    assert_eq!(
        reply,
        PhoneReply::Refused {
            status: 403,
            reason: "the webhook is for another Twilio account".into()
        }
    );
    assert!(stack.agent_requests().is_empty());
}

#[tokio::test]
async fn a_webhook_without_sender_is_refused() {
    let stack = start("CX", |_| {}).await;
    let url = stack.bridge.url();
    let (status, reason) =
        post_signed(&url, &url, &[("AccountSid", ACCOUNT_SID), ("Body", "hi")]).await;
    assert_eq!(
        (status, reason.trim()),
        (400, "missing required parameter From")
    );
    assert!(stack.agent_requests().is_empty());
}

#[tokio::test]
async fn only_forms_are_accepted() {
    let stack = start("CX", |_| {}).await;
    let (status, _) = post(
        &stack.bridge.url(),
        &[
            ("content-type", "application/json"),
            ("x-twilio-signature", "x"),
        ],
        "{}",
    )
    .await;
    assert_eq!(status, 415);
    assert!(stack.agent_requests().is_empty());
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let stack = start("CX", |_| {}).await;
    let body = format!("Body={}", "a".repeat(70 * 1024));
    let (status, reason) = post(
        &stack.bridge.url(),
        &[FORM, ("x-twilio-signature", "x")],
        body,
    )
    .await;
    assert_eq!(status, 413);
    assert!(reason.contains("over 64 KiB"), "{reason}");
    assert!(stack.agent_requests().is_empty());
    // Counted like every other refusal.
    stack
        .assert_metrics_show(r#"twilio_dialogflow_webhooks_total{outcome="too_large"} 1"#)
        .await;
}

/// A webhook Twilio signed for the public HTTPS URL, as a proxy forwards it to us.
async fn through_a_proxy(trust_proxy: &str) -> (Stack, u16, String) {
    let stack = start("CX", |vars| {
        vars.insert("TRUST_PROXY".into(), trust_proxy.into());
    })
    .await;
    let public = Phone::new(
        "https://bot.example.com/",
        ACCOUNT_SID,
        AUTH_TOKEN,
        USER,
        OUR_NUMBER,
    )
    .unwrap();
    let forwarded = [
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "bot.example.com"),
    ];
    let (status, body) = post_from(&public, &stack.bridge.url(), &hi(), &forwarded).await;
    (stack, status, body)
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_public_url_is_rebuilt() {
    let (_stack, status, body) = through_a_proxy("true").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Hello from the agent"));
}

#[tokio::test]
async fn untrusted_forwarded_headers_are_ignored() {
    // Anyone can send these headers: without TRUST_PROXY they do not count.
    let (stack, status, _) = through_a_proxy("false").await;
    assert_eq!(status, 403);
    assert!(stack.agent_requests().is_empty());
}

/// A bridge configured with `TWILIO_WEBHOOK_URL=https://bot.example.com/twilio`, as it
/// is behind a domain of its own.
async fn behind_a_domain() -> Stack {
    start(
        "CX",
        set(&[("TWILIO_WEBHOOK_URL", "https://bot.example.com/twilio")]),
    )
    .await
}

/// Posts "hi" to `url`, signed as Twilio signs it when it was given `twilio_url`.
async fn post_as_sent_to(twilio_url: &str, url: &str) -> (u16, String) {
    let public = Phone::new(twilio_url, ACCOUNT_SID, AUTH_TOKEN, USER, OUR_NUMBER).unwrap();
    post_from(&public, url, &hi(), &[]).await
}

#[tokio::test]
async fn a_configured_webhook_url_is_what_signatures_are_checked_against() {
    let stack = behind_a_domain().await;
    let (status, _) = post_as_sent_to("https://bot.example.com/twilio", &stack.bridge.url()).await;
    assert_eq!(status, 200);
    // A signature over the local URL no longer counts.
    assert!(matches!(
        stack.phone.send(&hi()).await.unwrap(),
        PhoneReply::Refused { status: 403, .. }
    ));
}

#[tokio::test]
async fn a_bare_host_url_signed_without_its_slash_is_accepted() {
    // Twilio signs the URL as typed in its console: `https://host`, no slash, although
    // the request is for `/`.
    let stack = start("CX", |_| {}).await;
    let bare = stack.bridge.url().trim_end_matches('/').to_owned();
    let phone = Phone::new(&bare, ACCOUNT_SID, AUTH_TOKEN, USER, OUR_NUMBER).unwrap();
    let reply = phone.send(&hi()).await.unwrap();
    assert!(matches!(reply, PhoneReply::Messages(_)), "{reply:?}");
}

#[tokio::test]
async fn the_query_string_of_the_request_joins_a_configured_url_without_one() {
    let stack = behind_a_domain().await;
    // Twilio was given `…/twilio?tenant=a`; the operator configured the URL without it.
    let (status, body) = post_as_sent_to(
        "https://bot.example.com/twilio?tenant=a",
        &format!("{}?tenant=a", stack.bridge.url()),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Hello from the agent"));
}
