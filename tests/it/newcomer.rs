//! A newcomer's path, as the README writes it: the Node sample's `.env` unchanged on
//! Google Cloud, and the three-terminal local recipe in every reply mode.

use crate::helpers::*;
use std::io::Write;
use std::process::Stdio;

/// The webhook's port, from the `bridge listening` JSON log line of `serve`.
fn listening_port(line: &str) -> Option<u16> {
    let entry: serde_json::Value = serde_json::from_str(line).ok()?;
    (entry["message"] == "bridge listening")
        .then(|| entry["port"].as_u64())?
        .map(|port| port as u16)
}

#[tokio::test]
async fn the_node_samples_env_works_unchanged_on_google_cloud() {
    // The Node sample's `.env` names no project: on Google Cloud, the metadata server
    // tells it. The agent is ES, at the global location, as that `.env` says.
    let metadata = fake_metadata_server("test-project").await;
    let (emulator, _) = start_emulator(AGENT).await;
    let dir = WorkDir::with_dotenv(include_str!("../fixtures/node-sample.env"));
    let (metadata, emulator_host) = (metadata.to_string(), emulator.addr().to_string());
    let mut serve = dir.command(
        &["serve"],
        &[
            // The two secrets, as Cloud Run passes them.
            ("TWILIO_ACCOUNT_SID", ACCOUNT_SID),
            ("TWILIO_AUTH_TOKEN", AUTH_TOKEN),
            ("GCE_METADATA_HOST", &metadata),
            ("DIALOGFLOW_EMULATOR_HOST", &emulator_host),
            ("PORT", "0"),
            ("LOG_FORMAT", "json"),
            ("REPLY_MODE", "twiml"),
        ],
    );
    let mut serve = Running::spawn(&mut serve, Output::Stderr);
    let port = serve.find_line(listening_port).await;
    let phone = phone_at(port);
    assert_eq!(
        texts(&ask(&phone, "hi").await),
        vec!["Hello from the agent"]
    );
    let path = &emulator.requests()[0].path;
    assert!(
        path.starts_with("/v2/projects/test-project/agent/sessions/"),
        "an ES query in the metadata server's project: {path}"
    );
}

#[tokio::test]
async fn off_google_cloud_a_missing_project_says_why() {
    let dir = WorkDir::with_dotenv(include_str!("../fixtures/node-sample.env"));
    let output = dir
        .command(
            &["serve"],
            &[
                ("TWILIO_ACCOUNT_SID", ACCOUNT_SID),
                ("TWILIO_AUTH_TOKEN", AUTH_TOKEN),
                // Nothing listens there, as no metadata server answers off Google Cloud.
                ("GCE_METADATA_HOST", "127.0.0.1:9"),
            ],
        )
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("configuration error: GCP_PROJECT: is required but not set")
            && stderr.contains("the metadata server 127.0.0.1:9 cannot be reached"),
        "{stderr}"
    );
}

/// The README's three terminals, with one `.env`: `emulator --twilio-port`, `serve`
/// and `chat`; the phone shows the reply whichever way it travels.
async fn three_terminals(reply_mode: &str) -> String {
    let mut dotenv = format!(
        "TWILIO_ACCOUNT_SID={ACCOUNT_SID}\nTWILIO_AUTH_TOKEN={AUTH_TOKEN}\nAGENT_TYPE=CX\nREPLY_MODE={reply_mode}\n"
    );
    let dir = WorkDir::with_dotenv(&dotenv);
    // The emulator, from anywhere: the sample agent is built in.
    let mut emulator = dir.command(&["emulator", "--port", "0", "--twilio-port", "0"], &[]);
    let mut emulator = Running::spawn(&mut emulator, Output::Stdout);
    // What the emulator says to set (the agent, then the Messages API), set in `.env`.
    for _ in 0..2 {
        let settings = emulator
            .find_line(|line| line.trim().strip_prefix("set ").map(str::to_owned))
            .await;
        for setting in settings.split_whitespace() {
            dotenv.push_str(&format!("{setting}\n"));
        }
    }
    dotenv.push_str("PORT=0\nLOG_FORMAT=json\n");
    std::fs::write(dir.0.join(".env"), &dotenv).unwrap();
    let mut serve = Running::spawn(&mut dir.command(&["serve"], &[]), Output::Stderr);
    let port = serve.find_line(listening_port).await;
    dotenv.push_str(&format!("PORT={port}\n"));
    std::fs::write(dir.0.join(".env"), &dotenv).unwrap();
    let mut chat = dir.command(&["chat"], &[]);
    let mut chat = chat
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    chat.stdin.take().unwrap().write_all(b"hi\n").unwrap();
    let output = tokio::task::spawn_blocking(move || chat.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(output.status.success());
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn the_local_recipe_works_with_replies_in_the_webhook() {
    let shown = three_terminals("twiml").await;
    assert!(shown.starts_with("> hi\n< Hi! I'm Pizzabot"), "{shown}");
    assert!(!shown.contains("Messages API"), "{shown}");
}

#[tokio::test]
async fn the_local_recipe_works_with_replies_through_the_api() {
    let shown = three_terminals("api").await;
    assert!(shown.starts_with("> hi\n< Hi! I'm Pizzabot"), "{shown}");
    assert!(shown.contains("(through the Messages API)"), "{shown}");
}

#[tokio::test]
async fn replies_the_messages_api_refuses_are_a_warning_that_names_the_failure() {
    // Twilio's API, with another account's credentials: every send is refused.
    let local = Local::with_twilio_password("another-token", &[("REPLY_MODE", "api")]).await;
    let (mut serve, phone) = local.serve(&[]).await;
    assert!(
        ask(&phone, "hi").await.is_empty(),
        "the reply goes through the API"
    );
    let entry = serve
        .find_line(|line| {
            let entry: serde_json::Value = serde_json::from_str(line).ok()?;
            entry["message"]
                .as_str()?
                .starts_with("replies not sent through the Messages API")
                .then_some(entry)
        })
        .await;
    assert_eq!(entry["severity"], "WARNING", "{entry}");
    assert_eq!(
        (entry["sent"].as_u64(), entry["replies"].as_u64()),
        (Some(0), Some(1))
    );
    assert!(
        entry["error"]
            .as_str()
            .is_some_and(|e| e.contains("HTTP 401")),
        "{entry}"
    );
}
