//! Finding 5: the URL a signature is checked against must not be the client's to choose.
//! A webhook Twilio signed for one host of an account must not be accepted by a bridge
//! serving another: behind a trusted proxy only the value the proxy appended counts, a
//! host list or Cloud Run's own URL pins the host, and an unpinned bridge says so.

use crate::helpers::*;
use stand_ins::chat::{Outgoing, Phone};

fn hi() -> Outgoing {
    Outgoing {
        body: "hi".into(),
        ..Default::default()
    }
}

/// "hi", signed by Twilio for `signed_url`, posted to the bridge with `headers`.
async fn signed_for(stack: &Stack, signed_url: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let phone = Phone::new(signed_url, ACCOUNT_SID, AUTH_TOKEN, USER, OUR_NUMBER).unwrap();
    post_from(&phone, &stack.bridge.url(), &hi(), headers).await
}

#[tokio::test]
async fn behind_one_trusted_proxy_only_the_value_it_appended_counts() {
    let stack = start("CX", set(&[("TRUST_PROXY", "true")])).await;
    // The client sends its own X-Forwarded-* first; our proxy appends the real ones.
    let forwarded = [
        ("x-forwarded-proto", "http, https"),
        ("x-forwarded-host", "attacker.example, bot.example.com"),
    ];
    // A webhook the same account's Twilio signed for the client's host: refused.
    let (status, body) = signed_for(&stack, "http://attacker.example/", &forwarded).await;
    assert_eq!(status, 403, "{body}");
    assert!(stack.agent_requests().is_empty());
    // The one Twilio signed for the host our proxy saw is accepted.
    let (status, body) = signed_for(&stack, "https://bot.example.com/", &forwarded).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Hello from the agent"), "{body}");
}

#[tokio::test]
async fn with_two_trusted_proxies_the_second_value_from_the_right_counts() {
    let stack = start("CX", set(&[("TRUST_PROXY", "2")])).await;
    // The client's value, then the outer proxy's (the public host), then the inner's.
    let forwarded = [
        ("x-forwarded-proto", "http, https, http"),
        (
            "x-forwarded-host",
            "attacker.example, bot.example.com, lb.internal",
        ),
    ];
    for refused in ["http://attacker.example/", "http://lb.internal/"] {
        let (status, body) = signed_for(&stack, refused, &forwarded).await;
        assert_eq!(status, 403, "{refused}: {body}");
    }
    assert!(stack.agent_requests().is_empty());
    let (status, body) = signed_for(&stack, "https://bot.example.com/", &forwarded).await;
    assert_eq!(status, 200, "{body}");
    // A proxy may append a header line of its own rather than a value: the same.
    let lines = [
        ("x-forwarded-proto", "https"),
        ("x-forwarded-proto", "http"),
        ("x-forwarded-host", "attacker.example"),
        ("x-forwarded-host", "bot.example.com"),
        ("x-forwarded-host", "lb.internal"),
    ];
    let (status, body) = signed_for(&stack, "https://bot.example.com/", &lines).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = signed_for(&stack, "http://attacker.example/", &lines).await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn a_webhook_for_a_host_not_listed_is_refused_before_its_signature() {
    let stack = start("CX", set(&[("TWILIO_WEBHOOK_HOSTS", "a.example")])).await;
    // Signed by the account's Twilio, for the host it was sent to: not ours.
    let (status, reason) = signed_for(&stack, "http://b.example/", &[("host", "b.example")]).await;
    assert_eq!(status, 403, "{reason}");
    assert!(reason.contains("TWILIO_WEBHOOK_HOSTS"), "{reason}");
    assert!(stack.agent_requests().is_empty());
    // Refused before the signature is even checked: an unsigned one is refused the same.
    let (params, _) = stack.phone.webhook(&hi());
    let (status, same) = post(
        &stack.bridge.url(),
        &[FORM, ("host", "b.example"), ("x-twilio-signature", "x")],
        params.encode(),
    )
    .await;
    assert_eq!((status, same.as_str()), (403, reason.as_str()));
    stack
        .assert_metrics_show(r#"twilio_dialogflow_webhooks_total{outcome="unknown_host"} 2"#)
        .await;
    // The listed host is answered; its port does not matter.
    let (status, body) = signed_for(&stack, "http://a.example/", &[("host", "a.example")]).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = signed_for(
        &stack,
        "http://A.example:8443/",
        &[("host", "A.example:8443")],
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

/// A stand-in for the metadata server of a Cloud Run service in project number
/// `123456789012`, region `europe-west1`.
async fn cloud_run_metadata_server() -> std::net::SocketAddr {
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::get;
    let google = |answer: &'static str| {
        move |headers: HeaderMap| async move {
            match headers.get("metadata-flavor").and_then(|v| v.to_str().ok()) {
                Some("Google") => (StatusCode::OK, answer),
                _ => (StatusCode::FORBIDDEN, "missing Metadata-Flavor"),
            }
        }
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route(
            "/computeMetadata/v1/project/numeric-project-id",
            get(google("123456789012")),
        )
        .route(
            "/computeMetadata/v1/instance/region",
            get(google("projects/123456789012/regions/europe-west1")),
        );
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

#[tokio::test]
async fn on_cloud_run_only_the_services_own_url_is_accepted() {
    let metadata = cloud_run_metadata_server().await.to_string();
    let stack = start(
        "CX",
        set(&[("K_SERVICE", "bridge"), ("GCE_METADATA_HOST", &metadata)]),
    )
    .await;
    let own = "bridge-123456789012.europe-west1.run.app";
    // As Cloud Run's front end forwards it: the public Host, and the scheme it took.
    let front = |host: &'static str| [("host", host), ("x-forwarded-proto", "https")];
    let (status, body) = signed_for(&stack, &format!("https://{own}/"), &front(own)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Hello from the agent"), "{body}");
    // Another service of the same account, whose webhook is replayed here.
    let other = "other-123456789012.europe-west1.run.app";
    let (status, reason) = signed_for(&stack, &format!("https://{other}/"), &front(other)).await;
    assert_eq!(status, 403, "{reason}");
    assert_eq!(stack.agent_requests().len(), 1);
}

#[tokio::test]
async fn on_cloud_run_the_listed_hosts_are_accepted_too() {
    let metadata = cloud_run_metadata_server().await.to_string();
    let stack = start(
        "CX",
        set(&[
            ("K_SERVICE", "bridge"),
            ("GCE_METADATA_HOST", &metadata),
            ("TWILIO_WEBHOOK_HOSTS", "bot.example.com"),
        ]),
    )
    .await;
    let headers = [("host", "bot.example.com"), ("x-forwarded-proto", "https")];
    let (status, body) = signed_for(&stack, "https://bot.example.com/", &headers).await;
    assert_eq!(status, 200, "{body}");
    let own = "bridge-123456789012.europe-west1.run.app";
    let headers = [("host", own), ("x-forwarded-proto", "https")];
    let (status, body) = signed_for(&stack, &format!("https://{own}/"), &headers).await;
    assert_eq!(status, 200, "{body}");
}

const UNPINNED: &str = "nothing pins the URL Twilio signs";

#[tokio::test]
async fn check_warns_when_nothing_pins_the_url() {
    let dir = WorkDir::with_dotenv("");
    let base = [
        ("TWILIO_ACCOUNT_SID", ACCOUNT_SID),
        ("TWILIO_AUTH_TOKEN", AUTH_TOKEN),
        ("GCP_PROJECT", "p"),
        ("AGENT_ID", "agent"),
    ];
    let (code, out) = output_of(dir.command(&["check", "--offline"], &base)).await;
    assert_eq!(code, 0, "{out}");
    let warning = out
        .lines()
        .find(|line| line.starts_with("warning:") && line.contains(UNPINNED))
        .unwrap_or_else(|| panic!("no warning in:\n{out}"));
    assert!(warning.contains("TWILIO_WEBHOOK_URL"), "{warning}");
    assert!(warning.contains("TWILIO_WEBHOOK_HOSTS"), "{warning}");
    // Either setting pins it: no warning.
    for pin in [
        ("TWILIO_WEBHOOK_URL", "https://bot.example.com/"),
        ("TWILIO_WEBHOOK_HOSTS", "bot.example.com"),
    ] {
        let mut vars = base.to_vec();
        vars.push(pin);
        let (code, out) = output_of(dir.command(&["check", "--offline"], &vars)).await;
        assert_eq!(code, 0, "{out}");
        assert!(!out.contains(UNPINNED), "{pin:?}: {out}");
        assert!(out.contains(pin.0), "{out}");
    }
}

#[tokio::test]
async fn serve_warns_at_start_up_when_nothing_pins_the_url() {
    let local = Local::start(&[]).await;
    let mut command = local.dir.command(&["serve"], &[]);
    let mut serve = Running::spawn(&mut command, Output::Stderr);
    let warning = serve
        .find_line(|line| {
            let entry: serde_json::Value = serde_json::from_str(line).ok()?;
            let message = entry["message"].as_str()?;
            (entry["severity"] == "WARNING" && message.contains(UNPINNED))
                .then(|| message.to_owned())
        })
        .await;
    assert!(warning.contains("TWILIO_WEBHOOK_URL"), "{warning}");
    assert!(warning.contains("another host"), "{warning}");
}
