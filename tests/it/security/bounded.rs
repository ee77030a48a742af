//! Bounded requests: a client that trickles its body, or sends headers by the hundred
//! kilobytes, cannot hold a slot or the memory for long; and `/metrics` is the
//! operator's, not the public's.

use crate::helpers::*;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A Twilio-shaped message id, so the webhook is refused for nothing else.
const MESSAGE_SID: &str = "SM0123456789abcdef0123456789abcdef";

/// The bridge's address, from the phone `Local::serve` gave.
fn addr_of(phone: &stand_ins::chat::Phone) -> SocketAddr {
    phone
        .url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .unwrap()
}

/// A client that sends a webhook's headers at once and, once the bridge reads its body
/// (it says `100 Continue`, and counts in `reading`), the body a byte a second: what
/// the server answered before it closed the connection, or `None` if it was still
/// open after `give_up`.
async fn trickle(addr: SocketAddr, give_up: Duration, reading: Arc<AtomicUsize>) -> Option<String> {
    let mut stream = TcpStream::connect(addr).await.ok()?;
    let headers = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\nX-Twilio-Signature: x\r\nContent-Length: 200\r\nExpect: 100-continue\r\n\r\n"
    );
    stream.write_all(headers.as_bytes()).await.ok()?;
    let mut answer = Vec::new();
    let mut buffer = [0u8; 1024];
    let started = tokio::time::Instant::now();
    while !String::from_utf8_lossy(&answer).contains("100 Continue\r\n\r\n") {
        match tokio::time::timeout(give_up, stream.read(&mut buffer)).await {
            Ok(Ok(n)) if n > 0 => answer.extend_from_slice(&buffer[..n]),
            _ => return Some(String::from_utf8_lossy(&answer).into_owned()),
        }
    }
    answer.clear();
    reading.fetch_add(1, Ordering::Relaxed);
    let body = format!("MessageSid={MESSAGE_SID}&Body=").repeat(8);
    let mut next = 0;
    while started.elapsed() < give_up {
        tokio::select! {
            read = stream.read(&mut buffer) => match read {
                Ok(0) | Err(_) => return Some(String::from_utf8_lossy(&answer).into_owned()),
                Ok(n) => answer.extend_from_slice(&buffer[..n]),
            },
            () = tokio::time::sleep(Duration::from_secs(1)) => {
                if stream.write_all(&body.as_bytes()[next..next + 1]).await.is_err() {
                    return Some(String::from_utf8_lossy(&answer).into_owned());
                }
                next += 1;
            }
        }
    }
    None
}

/// `GET /health` on a connection of its own: whether the bridge answered it.
async fn served(addr: SocketAddr) -> bool {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    client
        .get(format!("http://{addr}/health"))
        .send()
        .await
        .is_ok_and(|response| response.status() == 200)
}

#[tokio::test]
async fn bodies_trickled_past_the_request_deadline_are_cut_and_their_slots_freed() {
    let local = Local::start(&[
        ("REPLY_MODE", "twiml"),
        ("MAX_CONNECTIONS", "4"),
        // Never silent that long: one byte comes every second.
        ("BODY_TIMEOUT", "3s"),
        ("REQUEST_TIMEOUT", "4s"),
    ])
    .await;
    let (_serve, phone) = local.serve(&["prlimit", "--nofile=1024:1024"]).await;
    let addr = addr_of(&phone);
    // Long past the deadline: without it, each would hold its slot all that time.
    let give_up = Duration::from_secs(20);
    let reading = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..4)
        .map(|_| tokio::spawn(trickle(addr, give_up, Arc::clone(&reading))))
        .collect();
    eventually(
        "the bridge reads the four trickling bodies",
        Duration::from_secs(5),
        || async { ready_if(reading.load(Ordering::Relaxed), |n| *n == 4) },
    )
    .await;
    eventually(
        "the four trickling clients hold every slot",
        Duration::from_secs(5),
        || async { ready_if(served(addr).await, |served| !served) },
    )
    .await;
    eventually(
        "a slot freed after the request deadline",
        Duration::from_secs(10),
        || async { ready_if(served(addr).await, |served| *served) },
    )
    .await;
    // An honest webhook is answered at once.
    assert_eq!(
        texts(&ask(&phone, "hi").await),
        vec!["Hello from the agent"]
    );
    for client in clients {
        let answer = client.await.unwrap();
        let answer = answer.expect("the trickling client was cut off");
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(
            answer.to_ascii_lowercase().contains("connection: close"),
            "{answer}"
        );
    }
    assert!(
        local.emulator.requests().len() == 1,
        "only the honest one asked"
    );
    let metrics = metrics_at(&format!("http://{addr}/")).await;
    assert_eq!(
        series_value(
            &metrics,
            r#"twilio_dialogflow_connections_closed_total{reason="request_timeout"}"#
        ),
        4.0,
        "{metrics}"
    );
    assert_eq!(
        series_value(
            &metrics,
            r#"twilio_dialogflow_webhooks_total{outcome="request_timeout"}"#
        ),
        4.0,
        "{metrics}"
    );
}

/// A request whose one header holds `padding` bytes, written while the answer is read
/// (the server may answer and close before it has all of it): the answer's status line.
async fn status_with_header_of(addr: SocketAddr, padding: usize) -> String {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut reading, mut writing) = stream.into_split();
    let request = format!(
        "GET /health HTTP/1.1\r\nHost: {addr}\r\nX-Padding: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(padding)
    );
    let writer = tokio::spawn(async move {
        let _ = writing.write_all(request.as_bytes()).await;
        writing
    });
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), reading.read_to_end(&mut answer)).await;
    drop(writer.await);
    let answer = String::from_utf8_lossy(&answer).into_owned();
    answer.lines().next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn headers_past_32_kib_get_431_and_ordinary_ones_are_served() {
    let stack = start("CX", |_| {}).await;
    let addr = stack.bridge.addr;
    assert_eq!(
        status_with_header_of(addr, 300 * 1024).await,
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
    assert_eq!(
        status_with_header_of(addr, 40 * 1024).await,
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
    assert_eq!(
        status_with_header_of(addr, 8 * 1024).await,
        "HTTP/1.1 200 OK"
    );
    assert_eq!(stack.replies_to("hi").await, ["Hello from the agent"]);
}

/// The resident memory of process `pid`, in KiB.
fn resident_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A client that sends 300 KiB of headers, never ending them, then a byte a second:
/// true once the server has closed the connection.
async fn big_headers(addr: SocketAddr, give_up: Duration) -> bool {
    let Ok(stream) = TcpStream::connect(addr).await else {
        return false;
    };
    let (mut reading, mut writing) = stream.into_split();
    let started = tokio::time::Instant::now();
    let dripping = tokio::spawn(async move {
        let head = format!(
            "POST / HTTP/1.1\r\nHost: bridge\r\nX-Padding: {}",
            "a".repeat(300 * 1024)
        );
        if writing.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        while started.elapsed() < give_up {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if writing.write_all(b"a").await.is_err() {
                return;
            }
        }
    });
    let mut sink = [0u8; 1024];
    let closed = tokio::time::timeout(give_up, async {
        loop {
            match reading.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok();
    dripping.abort();
    closed
}

#[tokio::test]
async fn many_clients_dribbling_huge_headers_hold_little_memory() {
    let local = Local::start(&[("REPLY_MODE", "twiml"), ("HEADER_TIMEOUT", "30s")]).await;
    let (serve, phone) = local.serve(&["prlimit", "--nofile=1024:1024"]).await;
    let addr = addr_of(&phone);
    // Warm: the first webhook's allocations are not the flood's.
    assert_eq!(
        texts(&ask(&phone, "hi").await),
        vec!["Hello from the agent"]
    );
    let before = resident_kib(serve.id());
    let give_up = Duration::from_secs(15);
    let clients: Vec<_> = (0..200)
        .map(|_| tokio::spawn(big_headers(addr, give_up)))
        .collect();
    // 200 × 300 KiB is 60 MiB were they buffered; refused at 32 KiB, about 3 MiB.
    let bound_kib = 12 * 1024;
    let mut grown = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline
        && !clients.iter().all(tokio::task::JoinHandle::is_finished)
    {
        grown = grown.max(resident_kib(serve.id()).saturating_sub(before));
        assert!(
            grown < bound_kib,
            "the bridge grew by {grown} KiB while clients dribbled huge headers"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut closed = 0;
    for client in clients {
        closed += usize::from(client.await.unwrap());
    }
    grown = grown.max(resident_kib(serve.id()).saturating_sub(before));
    assert!(grown < bound_kib, "the bridge grew by {grown} KiB");
    assert_eq!(closed, 200, "every client refused and closed");
    // And it lives on.
    assert_eq!(
        texts(&ask(&phone, "hi").await),
        vec!["Hello from the agent"]
    );
}

#[tokio::test]
async fn metrics_on_their_own_port_are_not_on_the_public_one() {
    let local = Local::start(&[("REPLY_MODE", "twiml"), ("METRICS_PORT", "0")]).await;
    let mut serve = Running::spawn(&mut local.dir.command(&["serve"], &[]), Output::Stderr);
    let (port, metrics_port) = serve
        .find_line(|line| {
            let port = listening_port(line)?;
            let entry: serde_json::Value = serde_json::from_str(line).ok()?;
            Some((port, entry["metrics_port"].as_u64()))
        })
        .await;
    let metrics_port = metrics_port.expect("the bridge says where /metrics is");
    let phone = phone_at(port);
    assert_eq!(
        texts(&ask(&phone, "hi").await),
        vec!["Hello from the agent"]
    );
    let public = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap();
    assert_eq!(public.status(), 404);
    let own = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .await
        .unwrap();
    assert_shows_one_answered(own).await;
}

/// Fails unless `response` is the metrics, showing the one webhook answered.
async fn assert_shows_one_answered(response: reqwest::Response) {
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert_eq!(
        series_value(
            &text,
            r#"twilio_dialogflow_webhooks_total{outcome="answered"}"#
        ),
        1.0,
        "{text}"
    );
}

#[tokio::test]
async fn metrics_on_the_public_port_need_the_token() {
    const TOKEN: &str = "metrics-token-0123456789";
    let stack = start("CX", set(&[("METRICS_TOKEN", TOKEN)])).await;
    assert_eq!(stack.replies_to("hi").await, ["Hello from the agent"]);
    let url = format!("{}metrics", stack.bridge.url());
    let client = reqwest::Client::new();
    let without = client.get(&url).send().await.unwrap();
    assert_eq!(without.status(), 401);
    assert_eq!(without.headers()["www-authenticate"], "Bearer");
    let wrong = client
        .get(&url)
        .bearer_auth("metrics-token-0123456780")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let right = client.get(&url).bearer_auth(TOKEN).send().await.unwrap();
    assert_shows_one_answered(right).await;
}

#[tokio::test]
async fn check_says_what_bounds_the_connections_and_warns_of_open_metrics() {
    let local = Local::start(&[("REPLY_MODE", "twiml"), ("BODY_TIMEOUT", "3s")]).await;
    let (code, out) = output_of(local.dir.command(&["check", "--offline"], &[])).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("warning: /metrics is open to anyone"), "{out}");
    let line = |name: &str| {
        out.lines()
            .find(|line| line.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in:\n{out}"))
            .to_owned()
    };
    assert!(line("REQUEST_TIMEOUT").ends_with("8s"), "{out}");
    assert!(line("MAX_HEADER_BYTES").ends_with("32768"), "{out}");
    assert!(line("MAX_CONNECTIONS").contains("limit"), "{out}");
    let local = Local::start(&[("REPLY_MODE", "twiml"), ("METRICS_PORT", "9464")]).await;
    let (code, out) = output_of(local.dir.command(&["check", "--offline"], &[])).await;
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("/metrics is open"), "{out}");
}
