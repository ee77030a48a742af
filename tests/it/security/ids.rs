//! Finding 2: the conversation id revealed the phone number. It was an unkeyed SHA-256
//! of (AccountSid, From, To), so trying every number of an area code found the sender.
//! Now it is keyed with `SESSION_KEY` (or, without it, a key derived from the auth
//! token, with a warning).

use crate::helpers::*;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::{Digest, Sha256};

/// The id the bridge gave a conversation before ids were keyed, as anyone can compute
/// it for every number.
fn unkeyed_id(account_sid: &str, from: &str, to: &str) -> String {
    let mut hash = Sha256::new();
    for part in ["twilio-dialogflow/session/v1", account_sid, from, to] {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part.as_bytes());
    }
    URL_SAFE_NO_PAD.encode(&hash.finalize()[..27])
}

/// The session ids of the agent's requests (CX: `…/sessions/{id}:detectIntent`).
fn sessions_of(emulator: &stand_ins::emulator::Emulator) -> Vec<String> {
    emulator
        .requests()
        .iter()
        .filter_map(|r| {
            let (_, rest) = r.path.split_once("/sessions/")?;
            Some(rest.split(':').next()?.to_owned())
        })
        .collect()
}

/// The session id the agent sees for the test user's "hi", with `SESSION_KEY` = `key`.
async fn session_under(key: Option<&str>) -> String {
    let stack = start("CX", |vars| {
        if let Some(key) = key {
            vars.insert("SESSION_KEY".into(), key.into());
        }
    })
    .await;
    stack.say("hi").await;
    let sessions = sessions_of(&stack.emulator);
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    sessions[0].clone()
}

#[tokio::test]
async fn with_a_session_key_the_agent_never_sees_the_unkeyed_hash() {
    let unkeyed = unkeyed_id(ACCOUNT_SID, USER, OUR_NUMBER);
    let one = session_under(Some("0123456789abcdef0123456789abcdef-one")).await;
    let other = session_under(Some("0123456789abcdef0123456789abcdef-two")).await;
    for id in [&one, &other] {
        assert_eq!(id.len(), 36, "{id}");
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{id}"
        );
        assert_ne!(*id, unkeyed, "the id is the unkeyed hash of the number");
    }
    assert_ne!(one, other, "two keys gave the same id");
    // The same key, the same id: a conversation survives a restart.
    assert_eq!(
        one,
        session_under(Some("0123456789abcdef0123456789abcdef-one")).await
    );
    // Nor is it the hash of today's code without a key.
    assert_ne!(session_under(None).await, unkeyed);
}

#[tokio::test]
async fn a_short_session_key_is_refused_at_start_up() {
    let local = Local::start(&[("SESSION_KEY", "too-short")]).await;
    // Killed when the test ends, should it start after all.
    let mut serve = Running::spawn(&mut local.dir.command(&["serve"], &[]), Output::Stderr);
    let stderr = serve
        .find_line(|line| {
            line.contains("configuration error")
                .then(|| line.to_owned())
        })
        .await;
    assert!(
        stderr.contains("SESSION_KEY") && stderr.contains("at least 32 bytes"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("too-short"),
        "the secret was shown: {stderr}"
    );
}

#[tokio::test]
async fn without_a_session_key_bridges_with_the_same_settings_agree_and_warn() {
    // The Node sample's `.env`: no SESSION_KEY.
    let local = Local::start(&[]).await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        let mut serve = Running::spawn(&mut local.dir.command(&["serve"], &[]), Output::Stderr);
        let warning = serve
            .find_line(|line| line.contains("SESSION_KEY").then(|| line.to_owned()))
            .await;
        assert!(warning.contains("TWILIO_AUTH_TOKEN"), "{warning}");
        let port = serve.find_line(listening_port).await;
        let before = sessions_of(&local.emulator).len();
        ask(&phone_at(port), "hi").await;
        let sessions = sessions_of(&local.emulator);
        assert_eq!(sessions.len(), before + 1, "{sessions:?}");
        ids.push(sessions[before].clone());
    }
    assert_eq!(
        ids[0], ids[1],
        "two instances gave one conversation two ids"
    );
    assert_ne!(ids[0], unkeyed_id(ACCOUNT_SID, USER, OUR_NUMBER));
    // `check` says it too.
    let (code, out) = output_of(local.dir.command(&["check", "--offline"], &[])).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("warning: SESSION_KEY is not set"), "{out}");
}
