//! The command itself: `demo`, `chat` piped, and `serve` refusing a bad configuration.

use crate::helpers::*;
use std::io::Write;
use std::process::{Command, Stdio};

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
        "< Order placed: a medium pepperoni pizza",
        "< [media] https://demo.twilio.com/owl.png",
        "< Thanks for the picture!",
        "< Sorry, I can't answer right now.",
        "! refused with HTTP 403",
        "< 1 Small · 2 Medium · 3 Large",
        "< [ Small ] [ Medium ] [ Large ]",
        "hand-over started (sms, live_agent_handoff)",
        "desk ▸ [",
        "< So sorry! It leaves the oven in 5 minutes.",
        "hand-over ended (desk)",
        "< Welcome back! Pizzabot here again.",
        "business ◂ POST /outbound",
        "< Reminder: your table at Pizzabot is booked for 7:30 pm. Reply 1 to confirm, 2 to move it.",
        "(sent first by the business, through the Messages API)",
        "> 1\n< Confirmed: see you at 7:30 pm!",
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
            .write_all(b"hi\n/media https://m.example/p.jpg\n/typo\nmenu\n")
            .unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    // Piped, each line read is echoed, so the output reads as a conversation; a typo'd
    // command is the phone's to refuse, never sent to the agent.
    assert_eq!(
        lines[..5],
        [
            "> hi",
            "< Hello from the agent",
            "> /media https://m.example/p.jpg",
            "< Nice picture",
            "> /typo"
        ],
        "{stdout}"
    );
    assert!(lines[5].starts_with("! /typo is not a command"), "{stdout}");
    assert_eq!(
        lines[6..],
        [
            "> menu",
            "< Here is the menu",
            "< Menu card",
            "< [media] https://example.com/menu.jpg",
            "< [media] https://example.com/drinks.jpg"
        ],
        "{stdout}"
    );
    assert_eq!(stack.agent_requests().len(), 3);
}

#[test]
fn serve_names_every_bad_variable_before_listening() {
    let dir = WorkDir::with_dotenv("AGENT_TYPE=CX\nSESSION_TTL=soon\n");
    let output = dir
        .command(
            &["serve"],
            &[("PORT", "not-a-port"), ("GCE_METADATA_HOST", "127.0.0.1:9")],
        )
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
}

fn check(envs: &[(&str, String)], args: &[&str]) -> (i32, String) {
    let dir = WorkDir::with_dotenv("");
    let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let output = dir
        .command(&[&["check"], args].concat(), &envs)
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

fn check_env(emulator_host: String) -> Vec<(&'static str, String)> {
    vec![
        ("AGENT_TYPE", "CX".into()),
        ("AGENT_ID", "test-agent".into()),
        ("GCP_PROJECT", "test-project".into()),
        ("TWILIO_ACCOUNT_SID", ACCOUNT_SID.into()),
        ("TWILIO_AUTH_TOKEN", AUTH_TOKEN.into()),
        ("AGENT_TIMEOUT", "1s".into()),
        ("DIALOGFLOW_EMULATOR_HOST", emulator_host),
    ]
}

#[tokio::test]
async fn check_asks_the_agent_and_shows_the_answer() {
    let (emulator, _) = start_emulator(AGENT).await;
    let host = emulator.addr().to_string();
    let (code, out) =
        tokio::task::spawn_blocking(move || check(&check_env(host), &["--text", "menu"]))
            .await
            .unwrap();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("configuration: ok"), "{out}");
    // Every setting as resolved, named as its variable, the secrets masked.
    for line in [
        "TWILIO_AUTH_TOKEN            set (15 characters)",
        "AGENT_TYPE                   CX",
        "SESSION_TTL                  the agent's default",
        "REPLY_MODE                   auto",
        "TWILIO_API_BASE_URL          https://api.twilio.com",
        "TRUST_PROXY                  false",
    ] {
        assert!(out.contains(line), "{line:?} in {out}");
    }
    assert!(!out.contains(AUTH_TOKEN), "{out}");
    assert!(
        out.contains("< Here is the menu\n  < Menu card\n  < [media] https://example.com/menu.jpg"),
        "{out}"
    );
    assert_eq!(
        emulator.requests()[0].body["queryInput"]["text"]["text"],
        "menu"
    );
}

#[tokio::test]
async fn check_reports_each_bad_setting() {
    let mut env = check_env("127.0.0.1:9".into());
    env.retain(|(k, _)| *k != "TWILIO_AUTH_TOKEN" && *k != "AGENT_ID");
    env.push(("REPLY_MODE", "sometimes".into()));
    env.push(("TWILIO_WEBHOOK_URL", "bot.example.com".into()));
    let (code, out) = tokio::task::spawn_blocking(move || check(&env, &["--offline"]))
        .await
        .unwrap();
    assert_eq!(code, 2);
    for name in [
        "TWILIO_AUTH_TOKEN",
        "TWILIO_WEBHOOK_URL",
        "REPLY_MODE",
        "AGENT_ID",
    ] {
        assert!(
            out.contains(&format!("configuration error: {name}:")),
            "{name} in {out}"
        );
    }
}

#[tokio::test]
async fn check_offline_does_not_call_the_agent_and_unreachable_agent_fails() {
    let env = check_env("127.0.0.1:9".into());
    let offline_env = env.clone();
    let (code, out) = tokio::task::spawn_blocking(move || check(&offline_env, &["--offline"]))
        .await
        .unwrap();
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("agent: asked"));
    let (code, out) = tokio::task::spawn_blocking(move || check(&env, &[]))
        .await
        .unwrap();
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("agent: asked \"hello\", failed after"),
        "{out}"
    );
}

#[test]
fn serve_stops_when_the_agents_client_cannot_be_made() {
    // The client is made while the bridge already serves; one that cannot be made still
    // stops it, with the reason, as when it was made before serving.
    let dir = WorkDir::with_dotenv(
        "AGENT_TYPE=CX\nAGENT_ID=a\nGCP_PROJECT=p\nTWILIO_ACCOUNT_SID=AC00000000000000000000000000000000\nTWILIO_AUTH_TOKEN=t\n\
         PORT=0\nREPLY_MODE=twiml\nTWILIO_WEBHOOK_HOSTS=bot.example.com\n",
    );
    let output = dir
        .command(
            &["serve"],
            &[
                (
                    "GOOGLE_APPLICATION_CREDENTIALS",
                    "/no/such/credentials.json",
                ),
                ("GCE_METADATA_HOST", "127.0.0.1:9"),
            ],
        )
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot set up the Dialogflow client"),
        "{stderr}"
    );
}

#[test]
fn serve_logs_as_dotenv_says_and_stops_on_sigterm() {
    // The host pinned and SESSION_KEY set, as a deployment should: nothing to warn of
    // before it listens.
    let dir = WorkDir::with_dotenv(
        "AGENT_TYPE=CX\nAGENT_ID=a\nGCP_PROJECT=p\nTWILIO_ACCOUNT_SID=AC00000000000000000000000000000000\nTWILIO_AUTH_TOKEN=t\n\
         DIALOGFLOW_EMULATOR_HOST=127.0.0.1:9\nPORT=0\nLOG_FORMAT=json\nREPLY_MODE=twiml\n\
         TWILIO_WEBHOOK_HOSTS=bot.example.com\nSESSION_KEY=0123456789abcdef0123456789abcdef\n",
    );
    let mut child = dir
        .command(&["serve"], &[])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    // The first line past the warnings the settings deserve (such as /metrics open).
    let mut first_line = String::new();
    loop {
        first_line.clear();
        std::io::BufRead::read_line(&mut stderr, &mut first_line).unwrap();
        if !first_line.contains(r#""severity":"WARNING""#) {
            break;
        }
    }
    // What Cloud Run sends before it stops an instance.
    let terminated = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(terminated.success());
    // If it does not stop, it is killed, and the test fails instead of hanging.
    let pid = child.id().to_string();
    std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(10));
        let _ = Command::new("kill").args(["-KILL", &pid]).status();
    });
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    let exit = child.wait().unwrap();
    let entry: serde_json::Value =
        serde_json::from_str(&first_line).unwrap_or_else(|e| panic!("{e}: {first_line}"));
    assert_eq!(entry["severity"], "INFO", "{first_line}");
    assert_eq!(entry["message"], "bridge listening", "{first_line}");
    assert!(exit.success(), "{exit:?}: {rest}");
    assert!(rest.contains("shutting down"), "{rest}");
}

#[tokio::test]
async fn check_warns_when_the_endpoint_is_not_the_agents_location() {
    // The classic mistake with the Node sample: a regional agent, the global endpoint.
    let mut env = check_env("127.0.0.1:9".into());
    env.retain(|(k, _)| *k != "DIALOGFLOW_EMULATOR_HOST");
    env.push(("AGENT_LOCATION", "europe-west2".into()));
    env.push(("DF_ENDPOINT", "dialogflow.googleapis.com".into()));
    // A Cloud Run job: the service's defaults, as `serve` reads them there.
    env.push(("CLOUD_RUN_JOB", "check".into()));
    let (code, out) = tokio::task::spawn_blocking(move || check(&env, &["--offline"]))
        .await
        .unwrap();
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(
            "warning: AGENT_LOCATION is europe-west2 but DF_ENDPOINT is dialogflow.googleapis.com"
        ) && out.contains("europe-west2-dialogflow.googleapis.com"),
        "{out}"
    );
    assert!(out.contains("TRUST_PROXY                  true"), "{out}");
}

/// A routes file and no agent variables: the agent variables set are still read, and
/// a bad one refused (they fill the routes' gaps).
fn routes_file_without_agent_variables(extra: &[(&'static str, &'static str)]) -> WorkDir {
    let dir = WorkDir::with_dotenv("");
    std::fs::write(
        dir.0.join("routes.yaml"),
        "routes:\n  - name: france\n    match: { to: \"+33170000001\" }\n    agent: { type: CX, project: p, id: a }\n",
    )
    .unwrap();
    let mut dotenv = format!(
        "TWILIO_ACCOUNT_SID={ACCOUNT_SID}\nTWILIO_AUTH_TOKEN={AUTH_TOKEN}\nROUTES_FILE=routes.yaml\nPORT=0\n"
    );
    for (name, value) in extra {
        dotenv.push_str(&format!("{name}={value}\n"));
    }
    std::fs::write(dir.0.join(".env"), dotenv).unwrap();
    dir
}

/// The command's output; killed if it has not ended in `seconds` (a `serve` that took
/// a bad configuration would listen for ever), so that the test fails instead of hanging.
fn output_within_seconds(mut command: Command, seconds: u64) -> std::process::Output {
    use std::io::Read;
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let read_all = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            pipe.read_to_end(&mut bytes).unwrap();
            bytes
        })
    };
    let stdout = read_all(Box::new(child.stdout.take().unwrap()));
    let stderr = read_all(Box::new(child.stderr.take().unwrap()));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    std::process::Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// The configuration errors a command printed, on stderr (`serve`) or stdout (`check`).
fn configuration_errors(output: &std::process::Output) -> Vec<String> {
    [&output.stdout, &output.stderr]
        .iter()
        .flat_map(|out| {
            String::from_utf8_lossy(out)
                .lines()
                .filter(|line| line.starts_with("configuration error: "))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn with_a_routes_file_a_bad_agent_variable_stops_serve_and_check() {
    let dir = routes_file_without_agent_variables(&[
        ("SESSION_TTL", "banana"),
        ("AGENT_TIMEOUT", "999h"),
    ]);
    let env = [("GCE_METADATA_HOST", "127.0.0.1:9")];
    for args in [&["serve"][..], &["check", "--offline"]] {
        let output = output_within_seconds(dir.command(args, &env), 20);
        let errors = configuration_errors(&output);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {errors:?}");
        assert_eq!(errors.len(), 2, "{args:?}: {errors:?}");
        assert!(
            errors[0].starts_with("configuration error: SESSION_TTL: must be a duration"),
            "{args:?}: {errors:?}"
        );
        assert!(
            errors[1].starts_with("configuration error: AGENT_TIMEOUT: must be at most 7 days"),
            "{args:?}: {errors:?}"
        );
    }
    // Without them, the same routes file is a configuration that serves.
    let dir = routes_file_without_agent_variables(&[]);
    let output = dir.command(&["check", "--offline"], &env).output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{:?}",
        configuration_errors(&output)
    );
}

#[test]
fn check_reports_the_errors_serve_refuses_to_start_with() {
    // A bad value of each kind, in the variables and in the routes file, and a project
    // the metadata server cannot tell.
    let dir = WorkDir::with_dotenv(
        "AGENT_TYPE=CX\nSESSION_TTL=soon\nREPLY_MODE=sometimes\nTWILIO_WEBHOOK_URL=bot.example.com\n\
         STATE_URL=http://user:pw@redis\nHANDOFF_TOKEN=short\nROUTES_FILE=routes.yaml\n",
    );
    std::fs::write(
        dir.0.join("routes.yaml"),
        "routes:\n  - name: \"bad name\"\n    match: {}\n    agent: { type: DX }\n    session_ttl: forever\n",
    )
    .unwrap();
    let env = [("PORT", "eighty"), ("GCE_METADATA_HOST", "127.0.0.1:9")];
    let serve = output_within_seconds(dir.command(&["serve"], &env), 20);
    let check = dir.command(&["check", "--offline"], &env).output().unwrap();
    assert_eq!(serve.status.code(), Some(2));
    assert_eq!(check.status.code(), Some(2));
    let (serve, check) = (configuration_errors(&serve), configuration_errors(&check));
    assert!(serve.len() >= 10, "{serve:#?}");
    assert_eq!(serve, check);
    assert!(
        serve
            .iter()
            .any(|line| line.contains("GCP_PROJECT: is required but not set")
                && line.contains("the metadata server 127.0.0.1:9")),
        "{serve:#?}"
    );
    assert!(
        !serve.iter().any(|line| line.contains(":pw@")),
        "{serve:#?}"
    );
}

#[tokio::test]
async fn chat_shows_what_the_business_sends_unasked_and_tells_the_stand_in_who_wrote() {
    let stack = start("CX", set(&[("REPLY_MODE", "api")])).await;
    // The stand-in holds WhatsApp's window: the phone must tell it who wrote.
    stack.twilio.keep_session_windows();
    let mut chat = Command::new(BIN);
    chat.args([
        "chat",
        "--whatsapp",
        "--url",
        &stack.bridge.url(),
        "--from",
        USER,
        "--to",
        OUR_NUMBER,
        "--api-url",
        &stack.twilio.base_url(),
    ])
    .env("TWILIO_ACCOUNT_SID", ACCOUNT_SID)
    .env("TWILIO_AUTH_TOKEN", AUTH_TOKEN)
    .stdin(Stdio::piped());
    let mut chat = Running::spawn(&mut chat, Output::Stdout);
    chat.write_line("hi");
    chat.find_line(|line| (line == "< Hello from the agent").then_some(()))
        .await;
    let client = reqwest::Client::new();
    let messages = format!(
        "{}/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json",
        stack.twilio.base_url()
    );
    let reply = stack.twilio.sent().last().unwrap().sid.clone();
    let fetched: serde_json::Value = client
        .get(messages.replace("Messages.json", &format!("Messages/{reply}.json")))
        .basic_auth(ACCOUNT_SID, Some(AUTH_TOKEN))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        fetched["status"], "delivered",
        "the phone told the stand-in the person wrote, so the reply was in the window: {fetched}"
    );
    // The business writes with no new message of the person: the phone shows it.
    let sent = client
        .post(&messages)
        .basic_auth(ACCOUNT_SID, Some(AUTH_TOKEN))
        .form(&[
            ("To", format!("whatsapp:{USER}")),
            ("From", format!("whatsapp:{OUR_NUMBER}")),
            ("Body", "Reminder: your table is booked for 7 pm.".into()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status().as_u16(), 201);
    chat.find_line(|line| (line == "< Reminder: your table is booked for 7 pm.").then_some(()))
        .await;
    chat.find_line(|line| line.contains("(from the business, unasked").then_some(()))
        .await;
}
