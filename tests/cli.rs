//! The command itself: `demo`, `chat` piped, and `serve` refusing a bad configuration.

mod common;

use common::*;
use std::io::Write;
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_twilio-dialogflow");

#[test]
fn demo_plays_the_whole_conversation() {
    let output = Command::new(BIN)
        .arg("demo")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for line in [
        "< Hi! I'm Pizzabot 🍕.",
        "< Order placed: a large pepperoni pizza",
        "< [media] https://demo.twilio.com/owl.png",
        "< Thanks for the picture!",
        "< Sorry, I can't answer right now.",
        "! refused with HTTP 403",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
}

#[tokio::test]
async fn chat_works_piped() {
    let stack = start("CX", |_| {}).await;
    let url = stack.bridge.url();
    let output = tokio::task::spawn_blocking(move || {
        let mut child = Command::new(BIN)
            .args(["chat", "--url", &url, "--from", USER, "--to", OUR_NUMBER])
            .env("TWILIO_ACCOUNT_SID", ACCOUNT_SID)
            .env("TWILIO_AUTH_TOKEN", AUTH_TOKEN)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"hi\n/media https://m.example/p.jpg\nmenu\n")
            .unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "< Hello from the agent\n< Nice picture\n< Here is the menu\n< Menu card\n< [media] https://example.com/menu.jpg\n< [media] https://example.com/drinks.jpg\n"
    );
}

#[test]
fn serve_names_every_bad_variable_before_listening() {
    let dir = std::env::temp_dir().join(format!("twilio-dialogflow-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(".env"), "AGENT_TYPE=CX\nSESSION_TTL=soon\n").unwrap();
    let output = Command::new(BIN)
        .arg("serve")
        .current_dir(&dir)
        .env_clear()
        .env("PORT", "not-a-port")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for name in [
        "PORT",
        "TWILIO_ACCOUNT_SID",
        "TWILIO_AUTH_TOKEN",
        "GCP_PROJECT",
        "SESSION_TTL",
        "AGENT_ID",
    ] {
        assert!(
            stderr.contains(&format!("configuration error: {name}:")),
            "{name} in {stderr}"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}
