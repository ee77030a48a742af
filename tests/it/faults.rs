//! Hostile traffic and flaky dependencies: what the person sees (a reply, or the
//! fallback, in time), that the bridge lives on, and that nothing owed disappears
//! without a word.

use crate::helpers::*;
use stand_ins::chat::{Outgoing, Phone};
use stand_ins::messages_api::{MessagesEmulator, Misbehaviour};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The test agent, and intents that misbehave as Google's side can.
fn faulty_agent() -> String {
    format!(
        "{AGENT}{}",
        r#"
  - name: bad gateway then fine
    phrases: ["gateway"]
    fault: { kind: http, status: 502, body: "<html><body>502 Bad Gateway</body></html>" }
    fail_first: 2
    replies:
      - text: "Recovered"
  - name: always bad gateway
    phrases: ["outage"]
    fault: { kind: http, status: 502, body: "<html>Server Error</html>" }
  - name: throttled once
    phrases: ["throttled"]
    fault: { kind: http, status: 429, body: "Too Many Requests" }
    fail_first: 1
    replies:
      - text: "After the throttle"
  - name: garbage
    phrases: ["garbage"]
    fault: { kind: garbage }
  - name: cut
    phrases: ["cut"]
    fault: { kind: close }
  - name: hang
    phrases: ["hang"]
    fault: { kind: hang }
"#
    )
    .replace("fallback:\n  replies:\n    - text: \"Sorry, what?\"\n", "")
        + "fallback:\n  replies:\n    - text: \"Sorry, what?\"\n"
}

fn failed_with(metrics: &str, status: &str) -> f64 {
    series_value(
        metrics,
        &format!("twilio_dialogflow_agent_errors_total{{status=\"{status}\"}}"),
    )
}

#[tokio::test]
async fn a_front_end_502_page_is_retried_and_the_person_gets_the_answer() {
    let stack = start_with_agent(&faulty_agent(), "CX", set(&[("AGENT_TIMEOUT", "5s")])).await;
    assert_eq!(stack.replies_to("gateway").await, ["Recovered"]);
    assert_eq!(stack.agent_requests().len(), 3);
    let stack = start_with_agent(&faulty_agent(), "CX", set(&[("AGENT_TIMEOUT", "5s")])).await;
    let started = Instant::now();
    assert_eq!(stack.replies_to("throttled").await, ["After the throttle"]);
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "a 429 waits longer before asking again"
    );
}

#[tokio::test]
async fn an_agent_that_keeps_failing_fast_gets_the_fallback_within_the_retry_window() {
    // The API mode's 35 s agent timeout is for a slow answer, not for repeated failures.
    let stack = start_with_agent(
        &faulty_agent(),
        "CX",
        set(&[
            ("REPLY_MODE", "api"),
            ("AGENT_TIMEOUT", "35s"),
            ("AGENT_RETRY_WINDOW", "2s"),
        ]),
    )
    .await;
    let started = Instant::now();
    stack.say("outage").await;
    let sent = stack.twilio.wait_for(1).await;
    assert_eq!(sent[0].body, bridge::config::DEFAULT_FALLBACK_MESSAGE);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "fallback after {:?}",
        started.elapsed()
    );
    assert!(stack.agent_requests().len() > 2, "asked again meanwhile");
    assert!(failed_with(&stack.metrics().await, "UNAVAILABLE") >= 1.0);
}

/// How long the person waits for the fallback from an agent that answers every call
/// with a 502 at once, replies going in `mode` with that mode's default timeouts and a
/// 15 s `AGENT_RETRY_WINDOW`; and how many times the agent was asked meanwhile.
async fn fallback_from_a_dead_agent_in(mode: &'static str) -> (Duration, usize) {
    let stack = start_with_agent(&faulty_agent(), "CX", |vars| {
        vars.remove("AGENT_TIMEOUT");
        set(&[("REPLY_MODE", mode), ("AGENT_RETRY_WINDOW", "15s")])(vars);
    })
    .await;
    let started = Instant::now();
    let in_webhook = stack.replies_to("outage").await;
    let fallback = bridge::config::DEFAULT_FALLBACK_MESSAGE;
    if in_webhook.is_empty() {
        // Not in the webhook's answer: through the Messages API.
        let sent = stack.twilio.wait_for(1).await;
        assert_eq!(
            sent.first().map(|m| m.body.as_str()),
            Some(fallback),
            "{mode}"
        );
    } else {
        assert_eq!(in_webhook, [fallback], "{mode}");
    }
    (started.elapsed(), stack.agent_requests().len())
}

#[tokio::test]
async fn an_agent_down_for_the_turn_gets_the_fallback_within_ten_seconds_in_every_mode() {
    // Fast failures in a row say the agent is down for this turn: the person is not
    // kept waiting for the whole retry window (nor, in twiml mode, the agent timeout).
    let (twiml, api, auto) = tokio::join!(
        fallback_from_a_dead_agent_in("twiml"),
        fallback_from_a_dead_agent_in("api"),
        fallback_from_a_dead_agent_in("auto"),
    );
    for (mode, (took, asked)) in [("twiml", twiml), ("api", api), ("auto", auto)] {
        assert!(
            took < Duration::from_secs(10),
            "{mode}: the fallback after {took:?}"
        );
        assert!(asked > 2, "{mode}: asked again meanwhile, {asked} in all");
    }
}

#[tokio::test]
async fn garbage_a_cut_answer_and_silence_are_not_asked_again() {
    let stack = start_with_agent(&faulty_agent(), "CX", |_| {}).await;
    for (text, class) in [("garbage", "BAD_RESPONSE"), ("cut", "CONNECTION")] {
        let before = stack.agent_requests().len();
        assert_eq!(
            stack.replies_to(text).await,
            [bridge::config::DEFAULT_FALLBACK_MESSAGE],
            "{text}"
        );
        // The agent may have taken the turn: it is not played twice.
        assert_eq!(stack.agent_requests().len(), before + 1, "{text}");
        assert_eq!(failed_with(&stack.metrics().await, class), 1.0, "{text}");
    }
    // No answer at all: the fallback at AGENT_TIMEOUT (2 s here).
    let started = Instant::now();
    assert_eq!(
        stack.replies_to("hang").await,
        [bridge::config::DEFAULT_FALLBACK_MESSAGE]
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(4),
        "{took:?}"
    );
    assert_eq!(failed_with(&stack.metrics().await, "TIMEOUT"), 1.0);
    // And the bridge lives on.
    assert_eq!(stack.replies_to("hi").await, ["Hello from the agent"]);
}

fn api_mode(vars: &mut std::collections::HashMap<String, String>) {
    vars.insert("REPLY_MODE".into(), "api".into());
    vars.insert("AGENT_TIMEOUT".into(), "35s".into());
    vars.insert("TWILIO_API_TIMEOUT".into(), "1s".into());
}

#[tokio::test]
async fn the_messages_api_throttling_with_retry_after_is_waited_for() {
    let stack = start("CX", api_mode).await;
    stack
        .twilio
        .misbehave_next(&[Misbehaviour::Throttle { retry_after: 2 }]);
    let started = Instant::now();
    stack.say("hi").await;
    let sent = stack.twilio.wait_for(1).await;
    assert_eq!(sent[0].body, "Hello from the agent");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "Retry-After honoured: {:?}",
        started.elapsed()
    );
    assert_eq!(stack.twilio.attempts(), 2);
}

#[tokio::test]
async fn a_send_that_went_out_unanswered_is_never_sent_again() {
    for fault in [Misbehaviour::Hang, Misbehaviour::Close] {
        let stack = start("CX", api_mode).await;
        stack.twilio.misbehave_next(&[fault]);
        stack.say("hi").await;
        // The next reply of the conversation still goes, after the lost one.
        stack.say("tricky").await;
        let sent = stack.twilio.wait_for(1).await;
        assert_eq!(
            sent.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(),
            vec!["Fish & <chips> \"quoted\" 🍟"],
            "{fault:?}"
        );
        assert_eq!(stack.twilio.attempts(), 2, "{fault:?}: one try each");
        let metrics = stack.metrics().await;
        assert_eq!(
            series_value(
                &metrics,
                r#"twilio_dialogflow_replies_failed_total{status="none",twilio_error="none"}"#
            ),
            1.0,
            "{metrics}"
        );
        assert_eq!(
            series_value(
                &metrics,
                r#"twilio_dialogflow_replies_sent_total{route="api"}"#
            ),
            1.0
        );
    }
}

#[tokio::test]
async fn replies_go_out_with_an_api_key() {
    const KEY_SID: &str = "SK0123456789abcdef0123456789abcdef";
    let twilio = MessagesEmulator::start(
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        KEY_SID,
        "the-key-secret",
    )
    .unwrap();
    let base = twilio.base_url();
    let stack = start("CX", |vars| {
        api_mode(vars);
        vars.insert("TWILIO_API_BASE_URL".into(), base);
        vars.insert("TWILIO_API_KEY_SID".into(), KEY_SID.into());
        vars.insert("TWILIO_API_KEY_SECRET".into(), "the-key-secret".into());
    })
    .await;
    stack.say("hi").await;
    let sent = twilio.wait_for(1).await;
    assert_eq!(sent[0].body, "Hello from the agent");
    assert_eq!(sent[0].account_sid, ACCOUNT_SID);
}

#[tokio::test]
async fn at_the_end_of_the_grace_the_replies_not_sent_are_named() {
    let local = Local::start(&[("REPLY_MODE", "api"), ("SHUTDOWN_GRACE", "500ms")]).await;
    let (mut serve, phone) = local.serve(&[]).await;
    let message = Outgoing {
        message_sid: Some("SM0000000000000000000000000000105e".into()),
        ..says("slow")
    };
    send_from(&phone, &message).await;
    agent_asked(&local.emulator, 1).await;
    serve.signal("TERM");
    let named = serve
        .find_line(|line| {
            let entry: serde_json::Value = serde_json::from_str(line).ok()?;
            (entry["message"] == "shutting down: the reply to this message was not sent")
                .then(|| entry["message_sid"].as_str().map(str::to_owned))?
        })
        .await;
    assert_eq!(named, "SM0000000000000000000000000000105e");
    assert!(local.twilio.sent().is_empty());
}

/// Writes `request` raw and reads what comes back until the connection closes.
async fn raw(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn request_smuggling_patterns_are_refused_before_the_agent() {
    let stack = start("CX", |_| {}).await;
    let (params, signature) = stack.phone.webhook(&says("hi"));
    let body = params.encode();
    let both = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\nX-Twilio-Signature: {signature}\r\nContent-Length: {len}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{body}",
        addr = stack.bridge.addr,
        len = body.len()
    );
    let twice = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\nX-Twilio-Signature: {signature}\r\nContent-Length: {len}\r\nContent-Length: 5\r\n\r\n{body}",
        addr = stack.bridge.addr,
        len = body.len()
    );
    for request in [both, twice] {
        // Refused, or read by Transfer-Encoding alone as RFC 9112 says; either way the
        // connection closes, so the bytes after the first request are never a second.
        let answer = raw(stack.bridge.addr, request.as_bytes()).await;
        assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{answer}");
        assert!(
            answer.starts_with("HTTP/1.1 400") || answer.starts_with("HTTP/1.1 403"),
            "{answer}"
        );
    }
    assert!(stack.agent_requests().is_empty());
    assert_eq!(stack.replies_to("hi").await, ["Hello from the agent"]);
}

#[tokio::test]
async fn a_body_that_does_not_arrive_gets_408_and_the_connection_closes() {
    let stack = start("CX", set(&[("BODY_TIMEOUT", "1s")])).await;
    let started = Instant::now();
    let request = format!(
        "POST / HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-www-form-urlencoded\r\nX-Twilio-Signature: x\r\nContent-Length: 100\r\n\r\nBody=",
        stack.bridge.addr
    );
    let answer = raw(stack.bridge.addr, request.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(stack.agent_requests().is_empty());
    assert_eq!(
        series_value(
            &stack.metrics().await,
            r#"twilio_dialogflow_webhooks_total{outcome="body_timeout"}"#
        ),
        1.0
    );
}

#[tokio::test]
async fn status_callbacks_of_another_account_are_refused() {
    let stack = start("CX", |_| {}).await;
    let url = format!("{}status", stack.bridge.url());
    let (status, reason) = post_signed(
        &url,
        &url,
        &[
            ("MessageSid", sid("SM", 1).as_str()),
            ("MessageStatus", "delivered"),
            ("AccountSid", "ACffffffffffffffffffffffffffffffff"),
        ],
    )
    .await;
    assert_eq!(
        (status, reason.trim()),
        (403, "the webhook is for another Twilio account")
    );
}

/// A client that opens a connection and sends nothing, or its headers a byte a second:
/// when the server closed it, measured from when it opened. `connected` counts the
/// clients past their attempt to connect.
async fn abuse(
    addr: std::net::SocketAddr,
    dribble: bool,
    give_up: Duration,
    connected: Arc<AtomicUsize>,
) -> Option<Duration> {
    let opened = Instant::now();
    let stream = TcpStream::connect(addr).await;
    connected.fetch_add(1, Ordering::Relaxed);
    let mut stream = stream.ok()?;
    let headers =
        b"POST / HTTP/1.1\r\nHost: bridge\r\nContent-Type: application/x-www-form-urlencoded\r\n";
    let mut next = 0;
    let mut buffer = [0u8; 256];
    while opened.elapsed() < give_up {
        tokio::select! {
            read = stream.read(&mut buffer) => match read {
                // Closed by the server (or an answer, then closed).
                Ok(0) | Err(_) => return Some(opened.elapsed()),
                Ok(_) => {}
            },
            () = tokio::time::sleep(Duration::from_secs(1)) => {
                if dribble && next < headers.len() {
                    if stream.write_all(&headers[next..next + 1]).await.is_err() {
                        return Some(opened.elapsed());
                    }
                    next += 1;
                }
            }
        }
    }
    None
}

#[tokio::test]
async fn silent_and_dribbling_connections_cannot_take_the_bridge_down() {
    let local = Local::start(&[
        ("REPLY_MODE", "twiml"),
        ("HEADER_TIMEOUT", "3s"),
        ("IDLE_TIMEOUT", "5s"),
    ])
    .await;
    // The bridge may open 1024 files, as with a low `ulimit -n`.
    let (_serve, phone) = local.serve(&["prlimit", "--nofile=1024:1024"]).await;
    let addr: std::net::SocketAddr = phone
        .url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .unwrap();
    let give_up = Duration::from_secs(3 + 5 + 2);
    let mut abusers = Vec::new();
    let connected = Arc::new(AtomicUsize::new(0));
    for i in 0..2500 {
        let connected = Arc::clone(&connected);
        abusers.push(tokio::spawn(abuse(addr, i >= 2000, give_up, connected)));
        if i % 100 == 99 {
            tokio::task::yield_now().await;
        }
    }
    // Once they have all connected, and the bridge has taken each in (open, or closed
    // by its limits), a real webhook must still be answered, at once: none comes
    // after it to push it out, and it waits in no queue behind them.
    eventually(
        "every abuser connected",
        Duration::from_secs(20),
        || async { ready_if(connected.load(Ordering::Relaxed), |n| *n == 2500) },
    )
    .await;
    let client = reqwest::Client::new();
    let url = format!("http://{addr}/metrics");
    eventually(
        "the bridge took every abuser in",
        Duration::from_secs(20),
        || async {
            let metrics = match client.get(&url).send().await {
                Ok(response) => response.text().await.unwrap_or_default(),
                Err(error) => return Err(error.to_string()),
            };
            let closed = ["header_timeout", "idle_timeout", "shed", "refused"]
                .iter()
                .map(|reason| {
                    series_value(
                        &metrics,
                        &format!(
                            "twilio_dialogflow_connections_closed_total{{reason=\"{reason}\"}}"
                        ),
                    )
                })
                .sum::<f64>();
            // The connection asking is open too.
            let taken = series_value(&metrics, "twilio_dialogflow_connections_open") - 1.0 + closed;
            ready_if(taken, |taken| *taken >= 2500.0).map_err(|taken| format!("{taken} taken in"))
        },
    )
    .await;
    let phone = Phone::new(
        &format!("http://{addr}/"),
        ACCOUNT_SID,
        AUTH_TOKEN,
        USER,
        OUR_NUMBER,
    )
    .unwrap();
    let started = Instant::now();
    let replies = send_from(&phone, &says("hi")).await;
    let took = started.elapsed();
    assert_eq!(texts(&replies), vec!["Hello from the agent"]);
    assert!(took < Duration::from_secs(1), "answered after {took:?}");
    // Every abusive connection is closed within its timeout (3 s) and 5 s more.
    let mut open = 0;
    let mut latest = Duration::ZERO;
    for abuser in abusers {
        match abuser.await.unwrap() {
            Some(closed) => latest = latest.max(closed),
            None => open += 1,
        }
    }
    let metrics = metrics_at(&format!("http://{addr}/")).await;
    assert_eq!(
        open, 0,
        "connections still open after {give_up:?} (the others by {latest:?}):\n{metrics}"
    );
    let closed = series_value(
        &metrics,
        r#"twilio_dialogflow_connections_closed_total{reason="header_timeout"}"#,
    ) + series_value(
        &metrics,
        r#"twilio_dialogflow_connections_closed_total{reason="shed"}"#,
    );
    assert!(closed >= 2500.0, "{metrics}");
}

#[tokio::test]
async fn a_conversation_past_its_rate_limit_is_told_once_and_the_agent_is_spared() {
    let stack = start("CX", set(&[("RATE_LIMIT_PER_CONVERSATION", "3")])).await;
    for _ in 0..3 {
        assert_eq!(stack.replies_to("hi").await, ["Hello from the agent"]);
    }
    assert_eq!(
        stack.replies_to("hi").await,
        [bridge::config::DEFAULT_RATE_LIMIT_MESSAGE]
    );
    assert!(stack.say("hi").await.is_empty(), "told once, then nothing");
    assert_eq!(stack.agent_requests().len(), 3);
    // Someone else is not held back.
    let other = stack.phone_of("+15550009999");
    assert_eq!(
        texts(&ask(&other, "hi").await),
        vec!["Hello from the agent"]
    );
    let metrics = stack.metrics().await;
    assert_eq!(
        series_value(
            &metrics,
            r#"twilio_dialogflow_rate_limited_total{limit="conversation"}"#
        ),
        2.0
    );
    assert_eq!(
        series_value(
            &metrics,
            r#"twilio_dialogflow_webhooks_total{outcome="rate_limited"}"#
        ),
        2.0
    );
}

#[tokio::test]
async fn the_agent_call_budget_holds_for_every_conversation() {
    let stack = start("CX", set(&[("AGENT_CALLS_PER_HOUR", "2")])).await;
    assert_eq!(stack.replies_to("hi").await, ["Hello from the agent"]);
    let other = stack.phone_of("+15550009999");
    assert_eq!(
        texts(&ask(&other, "hi").await),
        vec!["Hello from the agent"]
    );
    assert_eq!(
        stack.replies_to("hi").await,
        [bridge::config::DEFAULT_RATE_LIMIT_MESSAGE]
    );
    assert_eq!(stack.agent_requests().len(), 2);
}
