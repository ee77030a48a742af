//! One deployment, many numbers and agents: environments, languages, accounts, opt-out
//! keywords, Twilio's shared-key signatures and routes.

use crate::helpers::*;
use stand_ins::emulator::Emulator;
use std::collections::HashMap;

#[tokio::test]
async fn an_environment_is_in_the_session_path_of_cx_and_es() {
    for (agent_type, path) in [
        (
            "CX",
            "/v3/projects/test-project/locations/global/agents/test-agent/environments/prod/sessions/",
        ),
        ("ES", "/v2/projects/test-project/agent/environments/prod/users/-/sessions/"),
    ] {
        let stack = start(agent_type, set(&[("AGENT_ENVIRONMENT", "prod")]))
        .await;
        assert_eq!(stack.replies_to("hi").await, ["Hello from the agent"]);
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
    assert_eq!(stack.replies_to("hi").await, ["Hello from the agent"]);
}

#[tokio::test]
async fn opt_out_keywords_can_go_to_the_agent_as_events() {
    let stack = start("CX", set(&[("OPT_OUT_TO_AGENT", "true")])).await;
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

#[tokio::test]
async fn webhooks_signed_with_a_shared_key_are_checked_with_that_key() {
    use bridge::twilio::signature::Algorithm::{HmacSha1, HmacSha256};
    let stack = start(
        "CX",
        set(&[("TWILIO_WEBHOOK_KEYS", "support=s3cr3t-key,old=older-key")]),
    )
    .await;
    let sha256 = "key=support,algorithm=HMAC_SHA256";
    let (status, body) = post_with_shared_key(&stack.phone, sha256, HmacSha256, "s3cr3t-key").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Hello from the agent"));
    // Another key's signature, or the auth token's, does not pass for this key.
    for key in ["older-key", AUTH_TOKEN] {
        let (status, _) = post_with_shared_key(&stack.phone, sha256, HmacSha256, key).await;
        assert_eq!(status, 403, "{key}");
    }
    let (status, reason) = post_with_shared_key(
        &stack.phone,
        "key=nobody,algorithm=HMAC_SHA256",
        HmacSha256,
        "x",
    )
    .await;
    assert_eq!(status, 403);
    assert!(
        reason.contains("names a key this bridge does not have"),
        "{reason}"
    );
    let (status, reason) = post_with_shared_key(
        &stack.phone,
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
    // A key signs its own account's webhooks only: not a form claiming another account.
    let other = stack.phone_signing_as("ACffffffffffffffffffffffffffffffff", AUTH_TOKEN);
    let (status, reason) = post_with_shared_key(&other, sha256, HmacSha256, "s3cr3t-key").await;
    assert_eq!(
        (status, reason.trim()),
        (403, "the webhook is for another Twilio account")
    );
    // A shared key with SHA-1, and a plain auth-token webhook, are still accepted.
    let (status, _) = post_with_shared_key(
        &stack.phone,
        "key=old,algorithm=HMAC_SHA1",
        HmacSha1,
        "older-key",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(stack.replies_to("hi").await, ["Hello from the agent"]);
    assert_eq!(stack.agent_requests().len(), 3);
}

/// A second agent, in another project, at another location, for another number.
pub(crate) const FRENCH_AGENT: &str = r#"
project: proj-fr
location: europe-west1
agent_id: agent-fr
language: fr
intents:
  - name: bonjour
    phrases: ["hi", "bonjour"]
    replies:
      - text: "Bonjour de l'agent"
"#;

/// The number the French agent's route matches.
pub(crate) const FRENCH_NUMBER: &str = "+33170000001";

/// The bridge with a routes file (in the directory returned, kept while the test runs)
/// sending `FRENCH_NUMBER` to the French agent on an emulator of its own, and
/// everything else to the default route; `agent_fields` added to the route's agent,
/// `route_fields` (YAML lines) to the route, `tweak` to the bridge's configuration.
pub(crate) async fn with_french_route(
    agent_fields: &str,
    route_fields: &str,
    tweak: impl FnOnce(&mut HashMap<String, String>),
) -> (Stack, Emulator, WorkDir) {
    let (french, _) = start_emulator(FRENCH_AGENT).await;
    let routes = format!(
        r#"
routes:
  - name: france
    match: {{ to: "{FRENCH_NUMBER}" }}
    agent: {{ type: CX, project: proj-fr, location: europe-west1, id: agent-fr, emulator_host: "{}"{agent_fields} }}
    language: fr
{route_fields}
"#,
        french.addr()
    );
    let dir = WorkDir::with_dotenv("");
    let file = dir.write("routes.yaml", &routes);
    let stack = start("CX", |vars| {
        vars.insert("ROUTES_FILE".into(), file);
        tweak(vars);
    })
    .await;
    (stack, french, dir)
}

/// The French agent's route, with an environment, a language by country and a fallback
/// message; and the default route, unless not `default_route`.
async fn two_agents(default_route: bool) -> (Stack, Emulator, WorkDir) {
    let route_fields = "    languages: { CA: en }\n    fallback_message: \"Désolé\"";
    with_french_route(", environment: prod", route_fields, |vars| {
        if !default_route {
            vars.remove("AGENT_TYPE");
            vars.remove("AGENT_ID");
        }
    })
    .await
}

#[tokio::test]
async fn two_numbers_reach_two_agents_each_in_its_language_and_environment() {
    let (stack, french, _dir) = two_agents(true).await;
    let french_phone = stand_ins::chat::Phone::new(
        &stack.bridge.url(),
        ACCOUNT_SID,
        AUTH_TOKEN,
        USER,
        "+33170000001",
    )
    .unwrap();
    assert_eq!(
        texts(&ask(&french_phone, "hi").await),
        vec!["Bonjour de l'agent"]
    );
    // The same number on WhatsApp takes the same route.
    let whatsapp = stand_ins::chat::Phone::new(
        &stack.bridge.url(),
        ACCOUNT_SID,
        AUTH_TOKEN,
        "whatsapp:+15551230001",
        "whatsapp:+33170000001",
    )
    .unwrap();
    assert_eq!(
        texts(&ask(&whatsapp, "hi").await),
        vec!["Bonjour de l'agent"]
    );
    // Any other number: the default route of today's variables.
    assert_eq!(stack.replies_to("hi").await, ["Hello from the agent"]);
    let asked = french.requests();
    assert!(
        asked[0].path.starts_with(
            "/v3/projects/proj-fr/locations/europe-west1/agents/agent-fr/environments/prod/sessions/"
        ),
        "{}",
        asked[0].path
    );
    assert_eq!(asked[0].body["queryInput"]["languageCode"], "fr");
    // A sender from Canada is asked in English on the same route.
    let canadian = with("hi", &[("FromCountry", "CA")]);
    let (status, _) = post_from(&french_phone, &stack.bridge.url(), &canadian, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(
        french.requests().last().unwrap().body["queryInput"]["languageCode"],
        "en"
    );
    assert_eq!(
        stack.agent_requests().len(),
        1,
        "the default agent heard only its own"
    );
    stack
        .assert_metrics_show(r#"twilio_dialogflow_routed_webhooks_total{route="france"} 3"#)
        .await;
    stack
        .assert_metrics_show(r#"twilio_dialogflow_routed_webhooks_total{route="default"} 1"#)
        .await;
}

#[tokio::test]
async fn a_webhook_no_route_matches_gets_200_and_no_reply() {
    let (stack, french, _dir) = two_agents(false).await;
    assert!(stack.say("hi").await.is_empty());
    assert!(french.requests().is_empty());
    assert!(stack
        .metrics()
        .await
        .contains(r#"twilio_dialogflow_webhooks_total{outcome="no_route"} 1"#));
}

#[tokio::test]
async fn a_language_by_country_for_the_default_route() {
    let stack = start("ES", set(&[("LANGUAGE_BY_COUNTRY", "FR:fr,CA:en")])).await;
    stack.send(&with("hi", &[("FromCountry", "FR")])).await;
    stack.send(&with("hi", &[("FromCountry", "US")])).await;
    let asked = stack.agent_requests();
    assert_eq!(asked[0].body["queryInput"]["text"]["languageCode"], "fr");
    assert_eq!(asked[1].body["queryInput"]["text"]["languageCode"], "en");
}

#[test]
fn check_names_each_bad_route_by_its_place_and_field() {
    let dir = WorkDir::with_dotenv("");
    std::fs::write(
        dir.0.join("routes.yaml"),
        r#"
routes:
  - name: ok
    match: { to: "+33170000001" }
    agent: { type: CX, project: p, id: a }
  - name: "bad name"
    match: {}
    agent: { type: DX, location: "europe west" }
    session_ttl: forever
"#,
    )
    .unwrap();
    let output = dir
        .command(
            &["check", "--offline"],
            &[
                ("TWILIO_ACCOUNT_SID", ACCOUNT_SID),
                ("TWILIO_AUTH_TOKEN", AUTH_TOKEN),
                ("GCE_METADATA_HOST", "127.0.0.1:9"),
                ("ROUTES_FILE", "routes.yaml"),
            ],
        )
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(2), "{out}");
    for field in [
        "routes[1].name:",
        "routes[1].match:",
        "routes[1].agent.type:",
        "routes[1].agent.project:",
        "routes[1].agent.location:",
        "routes[1].session_ttl:",
    ] {
        assert!(
            out.contains(&format!("configuration error: ROUTES_FILE: {field}")),
            "{field} in {out}"
        );
    }
    assert!(!out.contains("routes[0]"), "{out}");
}

#[tokio::test]
async fn check_asks_every_routes_agent_with_all_routes() {
    let (stack, _french, dir) = two_agents(true).await;
    let default_host = stack.emulator.addr().to_string();
    let envs = [
        ("TWILIO_ACCOUNT_SID", ACCOUNT_SID),
        ("TWILIO_AUTH_TOKEN", AUTH_TOKEN),
        ("GCP_PROJECT", "test-project"),
        ("AGENT_ID", "test-agent"),
        ("DIALOGFLOW_EMULATOR_HOST", default_host.as_str()),
        ("ROUTES_FILE", "routes.yaml"),
    ];
    let command = dir.command(&["check", "--all-routes", "--text", "hi"], &envs);
    let (code, out) = output_of(command).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("agent of route france: asked \"hi\""), "{out}");
    assert!(out.contains("< Bonjour de l'agent"), "{out}");
    assert!(
        out.contains("agent of route default: asked \"hi\""),
        "{out}"
    );
    assert!(out.contains("< Hello from the agent"), "{out}");
}

#[tokio::test]
async fn replies_come_from_the_messaging_service_the_message_came_through() {
    let stack = start(
        "CX",
        set(&[("REPLY_MODE", "api"), ("AGENT_TIMEOUT", "35s")]),
    )
    .await;
    let through_service = with(
        "hi",
        &[("MessagingServiceSid", "MG0123456789abcdef0123456789abcdef")],
    );
    stack.send(&through_service).await;
    let sent = stack.twilio.wait_for(1).await;
    assert_eq!(
        sent[0].messaging_service_sid.as_deref(),
        Some("MG0123456789abcdef0123456789abcdef")
    );
    assert_eq!(sent[0].from, None);
}

#[tokio::test]
async fn stop_past_the_rate_limit_gets_no_slow_down_reply() {
    let stack = start("CX", set(&[("RATE_LIMIT_PER_CONVERSATION", "1")])).await;
    assert_eq!(stack.replies_to("hi").await, ["Hello from the agent"]);
    assert!(stack
        .send(&with("STOP", &[("OptOutType", "STOP")]))
        .await
        .is_empty());
}

#[tokio::test]
async fn a_sub_account_is_verified_with_its_own_token_and_replies_with_its_credentials() {
    const SUB: &str = "ACffffffffffffffffffffffffffffffff";
    let stack = start("CX", |vars| {
        vars.insert("REPLY_MODE".into(), "api".into());
        vars.insert("AGENT_TIMEOUT".into(), "35s".into());
        vars.insert(format!("TWILIO_AUTH_TOKEN__{SUB}"), "sub-token".into());
    })
    .await;
    stack.twilio.accept_also(SUB, "sub-token");
    let sub = |token: &str| stack.phone_signing_as(SUB, token);
    // The sub-account's webhook, signed with its own token.
    assert!(
        ask(&sub("sub-token"), "hi").await.is_empty(),
        "through the API"
    );
    let sent = stack.twilio.wait_for(1).await;
    assert_eq!(sent[0].account_sid, SUB, "sent as the sub-account");
    assert_eq!(sent[0].body, "Hello from the agent");
    // Signed with the main account's token instead: refused, nothing asked.
    let forged = sub(AUTH_TOKEN).send(&with("hi", &[])).await.unwrap();
    assert!(
        matches!(
            forged,
            stand_ins::chat::PhoneReply::Refused { status: 403, .. }
        ),
        "{forged:?}"
    );
    assert_eq!(stack.agent_requests().len(), 1);
    // And the main account goes on as before.
    stack.say("hi").await;
    let sent = stack.twilio.wait_for(2).await;
    assert_eq!(sent[1].account_sid, ACCOUNT_SID);
}

#[test]
fn the_sample_routes_file_is_valid() {
    let dir = WorkDir::with_dotenv("");
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/routes.yaml");
    let output = dir
        .command(
            &["check", "--offline"],
            &[
                ("TWILIO_ACCOUNT_SID", ACCOUNT_SID),
                ("TWILIO_AUTH_TOKEN", AUTH_TOKEN),
                ("GCP_PROJECT", "p"),
                ("ROUTES_FILE", sample),
                ("ACME_AUTH_TOKEN", "acme-token"),
            ],
        )
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{out}");
    for route in ["france", "support-whatsapp", "client-acme"] {
        assert!(out.contains(route), "{route} in {out}");
    }
    assert!(!out.contains("acme-token"), "{out}");
}
