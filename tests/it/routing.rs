//! One deployment, many numbers and agents: environments, languages, accounts, opt-out
//! keywords, Twilio's shared-key signatures and routes.

use crate::helpers::*;
use twilio_dialogflow::chat::Outgoing;

fn with(body: &str, params: &[(&str, &str)]) -> Outgoing {
    Outgoing {
        body: body.into(),
        params: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    }
}

#[tokio::test]
async fn an_environment_is_in_the_session_path_of_cx_and_es() {
    for (agent_type, path) in [
        (
            "CX",
            "/v3/projects/test-project/locations/global/agents/test-agent/environments/prod/sessions/",
        ),
        ("ES", "/v2/projects/test-project/agent/environments/prod/users/-/sessions/"),
    ] {
        let stack = start(agent_type, |vars| {
            vars.insert("AGENT_ENVIRONMENT".into(), "prod".into());
        })
        .await;
        assert_eq!(texts(&stack.say("hi").await), vec!["Hello from the agent"]);
        let asked = &stack.agent_requests()[0].path;
        assert!(asked.starts_with(path), "{agent_type}: {asked}");
    }
}

#[tokio::test]
async fn opt_out_keywords_are_twilios_to_answer_by_default() {
    let stack = start("CX", |_| {}).await;
    for keyword in ["STOP", "START", "HELP"] {
        let replies = stack.send(&with(keyword, &[("OptOutType", keyword)])).await;
        assert!(replies.is_empty(), "{keyword}: {replies:?}");
    }
    assert!(stack.agent_requests().is_empty());
    assert!(stack
        .metrics()
        .await
        .contains(r#"twilio_dialogflow_webhooks_total{outcome="opt_out"} 3"#));
    // A word that merely looks like one is a message like any other.
    assert_eq!(texts(&stack.say("hi").await), vec!["Hello from the agent"]);
}

#[tokio::test]
async fn opt_out_keywords_can_go_to_the_agent_as_events() {
    let stack = start("CX", |vars| {
        vars.insert("OPT_OUT_TO_AGENT".into(), "true".into());
    })
    .await;
    for (keyword, event) in [
        ("STOP", "twilio_opt_out"),
        ("START", "twilio_opt_in"),
        ("HELP", "twilio_help"),
    ] {
        stack.send(&with(keyword, &[("OptOutType", keyword)])).await;
        let asked = stack.agent_requests();
        let body = &asked.last().unwrap().body;
        assert_eq!(body["queryInput"]["event"]["event"], event, "{keyword}");
        assert_eq!(body["queryParams"]["payload"]["OptOutType"], keyword);
    }
}

/// "hi" from the test user, signed with `key` by `algorithm`, announced by `settings`.
async fn post_with_shared_key(
    stack: &Stack,
    settings: &str,
    algorithm: twilio_dialogflow::twilio::signature::Algorithm,
    key: &str,
) -> (u16, String) {
    let (params, _) = stack.phone.webhook(&with("hi", &[]));
    let url = stack.bridge.url();
    let signature =
        twilio_dialogflow::twilio::signature::compute_with(algorithm, key, &url, params.pairs());
    post(
        &url,
        &[
            FORM,
            ("x-twilio-signature", &signature),
            ("x-twilio-webhooks-signature-settings", settings),
        ],
        params.encode(),
    )
    .await
}

#[tokio::test]
async fn webhooks_signed_with_a_shared_key_are_checked_with_that_key() {
    use twilio_dialogflow::twilio::signature::Algorithm::{HmacSha1, HmacSha256};
    let stack = start("CX", |vars| {
        vars.insert(
            "TWILIO_WEBHOOK_KEYS".into(),
            "support=s3cr3t-key,old=older-key".into(),
        );
    })
    .await;
    let sha256 = "key=support,algorithm=HMAC_SHA256";
    let (status, body) = post_with_shared_key(&stack, sha256, HmacSha256, "s3cr3t-key").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Hello from the agent"));
    // Another key's signature, or the auth token's, does not pass for this key.
    for key in ["older-key", AUTH_TOKEN] {
        let (status, _) = post_with_shared_key(&stack, sha256, HmacSha256, key).await;
        assert_eq!(status, 403, "{key}");
    }
    let (status, reason) =
        post_with_shared_key(&stack, "key=nobody,algorithm=HMAC_SHA256", HmacSha256, "x").await;
    assert_eq!(status, 403);
    assert!(
        reason.contains("names a key this bridge does not have"),
        "{reason}"
    );
    let (status, reason) = post_with_shared_key(
        &stack,
        "key=support,algorithm=HMAC_MD5",
        HmacSha256,
        "s3cr3t-key",
    )
    .await;
    assert_eq!(status, 403);
    assert!(
        reason.contains("an algorithm this bridge does not know"),
        "{reason}"
    );
    // A shared key with SHA-1, and a plain auth-token webhook, are still accepted.
    let (status, _) =
        post_with_shared_key(&stack, "key=old,algorithm=HMAC_SHA1", HmacSha1, "older-key").await;
    assert_eq!(status, 200);
    assert_eq!(texts(&stack.say("hi").await), vec!["Hello from the agent"]);
    assert_eq!(stack.agent_requests().len(), 3);
}
