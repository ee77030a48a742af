//! Finding 6: accounts kept apart. A SharedKey is one account's, whatever its name; a
//! route answers its own account's webhooks, not those of a sub-account that writes to
//! its number.

use crate::helpers::*;
use crate::routing::{with_french_route, FRENCH_NUMBER};
use bridge::twilio::signature::Algorithm;
use stand_ins::chat::Phone;

/// A sub-account the bridge takes webhooks of, with its own token.
const SUB: &str = "AC11111111111111111111111111111111";
const SUB_TOKEN: &str = "sub-token";

/// "hi" from `account`'s webhook, signed with the SharedKey `name` holding `key`.
async fn signed_with_key(stack: &Stack, account: &str, name: &str, key: &str) -> (u16, String) {
    let phone = stack.phone_signing_as(account, "unused");
    let settings = format!("key={name},algorithm=HMAC_SHA256");
    post_with_shared_key(&phone, &settings, Algorithm::HmacSha256, key).await
}

#[tokio::test]
async fn one_key_name_in_two_accounts_verifies_each_accounts_own_webhooks() {
    let stack = start("CX", |vars| {
        vars.insert(format!("TWILIO_AUTH_TOKEN__{SUB}"), SUB_TOKEN.into());
        vars.insert("TWILIO_WEBHOOK_KEYS".into(), "support=main-key".into());
        vars.insert(
            format!("TWILIO_WEBHOOK_KEYS__{SUB}"),
            "support=sub-key".into(),
        );
    })
    .await;
    for (account, key) in [(ACCOUNT_SID, "main-key"), (SUB, "sub-key")] {
        let (status, body) = signed_with_key(&stack, account, "support", key).await;
        assert_eq!(status, 200, "{account}: {body}");
        assert!(body.contains("Hello from the agent"), "{body}");
    }
    // Each key verifies its own account only.
    for (account, key) in [(ACCOUNT_SID, "sub-key"), (SUB, "main-key")] {
        let (status, _) = signed_with_key(&stack, account, "support", key).await;
        assert_eq!(status, 403, "{account} signed with {key}");
    }
    assert_eq!(stack.agent_requests().len(), 2);
}

#[tokio::test]
async fn one_key_name_twice_for_one_account_refuses_to_start() {
    let main_again = format!("TWILIO_WEBHOOK_KEYS__{ACCOUNT_SID}");
    for (keys, places) in [
        (
            vec![
                ("TWILIO_WEBHOOK_KEYS", "support=first-secret"),
                (main_again.as_str(), "support=second-secret"),
            ],
            vec!["TWILIO_WEBHOOK_KEYS", main_again.as_str()],
        ),
        (
            vec![(
                "TWILIO_WEBHOOK_KEYS",
                "support=first-secret,support=second-secret",
            )],
            vec!["TWILIO_WEBHOOK_KEYS"],
        ),
    ] {
        let dir = WorkDir::with_dotenv("");
        let mut vars = vec![
            ("TWILIO_ACCOUNT_SID", ACCOUNT_SID),
            ("TWILIO_AUTH_TOKEN", AUTH_TOKEN),
            ("GCP_PROJECT", "p"),
            ("AGENT_ID", "agent"),
            ("PORT", "0"),
        ];
        vars.extend(keys);
        // Bounded: a bridge that takes the configuration serves until stopped.
        let mut serve = std::process::Command::new("timeout");
        serve
            .args(["30", BIN, "serve"])
            .current_dir(&dir.0)
            .env_clear()
            .envs(vars.iter().copied());
        let output = tokio::task::spawn_blocking(move || serve.output().unwrap())
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        let error = stderr
            .lines()
            .find(|line| line.contains("configuration error") && line.contains("support"))
            .unwrap_or_else(|| panic!("no error about the key in:\n{stderr}"));
        for place in places {
            assert!(error.contains(place), "{place} in {error}");
        }
        assert!(error.contains(ACCOUNT_SID), "{error}");
        assert!(!stderr.contains("secret"), "secrets shown: {stderr}");
    }
}

/// The bridge with the main account's route for `FRENCH_NUMBER` (`extra` added to its
/// fields), the default route, and a sub-account it takes webhooks of.
async fn a_route_and_a_sub_account(extra: &str) -> (Stack, stand_ins::emulator::Emulator, WorkDir) {
    with_french_route("", extra, |vars| {
        vars.insert(format!("TWILIO_AUTH_TOKEN__{SUB}"), SUB_TOKEN.into());
    })
    .await
}

fn writing_to_french_number(stack: &Stack, account: &str, token: &str) -> Phone {
    Phone::new(&stack.bridge.url(), account, token, USER, FRENCH_NUMBER).unwrap()
}

#[tokio::test]
async fn a_sub_accounts_webhook_to_another_accounts_number_is_not_that_routes() {
    let (stack, french, _dir) = a_route_and_a_sub_account("").await;
    // The main account's own webhook takes its route.
    let main = writing_to_french_number(&stack, ACCOUNT_SID, AUTH_TOKEN);
    assert_eq!(texts(&ask(&main, "hi").await), vec!["Bonjour de l'agent"]);
    // The sub-account's, to the same number: not the French route's; the default one.
    let sub = writing_to_french_number(&stack, SUB, SUB_TOKEN);
    assert_eq!(texts(&ask(&sub, "hi").await), vec!["Hello from the agent"]);
    assert_eq!(
        french.requests().len(),
        1,
        "the French agent heard only its own"
    );
    assert_eq!(stack.agent_requests().len(), 1);
}

#[tokio::test]
async fn a_route_that_says_any_account_answers_a_sub_accounts_webhook() {
    let (stack, french, _dir) = a_route_and_a_sub_account("    any_account: true").await;
    let sub = writing_to_french_number(&stack, SUB, SUB_TOKEN);
    assert_eq!(texts(&ask(&sub, "hi").await), vec!["Bonjour de l'agent"]);
    let main = writing_to_french_number(&stack, ACCOUNT_SID, AUTH_TOKEN);
    assert_eq!(texts(&ask(&main, "hi").await), vec!["Bonjour de l'agent"]);
    assert_eq!(french.requests().len(), 2);
    assert!(stack.agent_requests().is_empty());
}

#[tokio::test]
async fn a_route_for_the_sub_accounts_number_names_its_account() {
    // A sub-account's own route says so with match.account_sid: then only its webhooks.
    let (stack, french, _dir) =
        a_route_and_a_sub_account(&format!("  - name: sub\n    match: {{ to: \"+33170000002\", account_sid: {SUB} }}\n    agent: {{ type: CX, project: test-project, id: test-agent }}")).await;
    let sub = Phone::new(&stack.bridge.url(), SUB, SUB_TOKEN, USER, "+33170000002").unwrap();
    assert_eq!(texts(&ask(&sub, "hi").await), vec!["Hello from the agent"]);
    stack
        .assert_metrics_show(r#"twilio_dialogflow_routed_webhooks_total{route="sub"} 1"#)
        .await;
    assert!(french.requests().is_empty());
}
