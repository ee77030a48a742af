//! The benchmark harness: cold start, memory, throughput and latency of the bridge, and
//! the same load against a bare HTTP server as the ceiling of this machine.
//!
//!     cargo build --release && cargo run --release --example bench
//!
//! It starts `target/release/twilio-dialogflow` as separate processes (the emulator and
//! the bridge), so that what is measured is the real binary, and drives it with signed
//! webhooks over loopback. Everything shares one machine; the table says so.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use twilio_dialogflow::twilio::signature;
use twilio_dialogflow::twilio::webhook::FormParams;

const ACCOUNT_SID: &str = "AC00000000000000000000000000000000";
const AUTH_TOKEN: &str = "bench-token";
const TWIML: &str = r#"<?xml version="1.0" encoding="UTF-8"?><Response><Message><Body>Hello! This is a benchmark reply with an emoji 🍕 &amp; an ampersand.</Body></Message></Response>"#;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("bare") {
        let port: u16 = args.get(2).ok_or("bare PORT")?.parse()?;
        return bare_server(port);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run())
}

/// The ceiling: an axum server that reads the form and answers a fixed TwiML body.
fn bare_server(port: u16) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let app = axum::Router::new().route(
            "/",
            axum::routing::post(|_body: axum::body::Bytes| async {
                ([("content-type", "text/xml; charset=utf-8")], TWIML)
            }),
        );
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        axum::serve(listener, app).await?;
        Ok(())
    })
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    fn rss_kib(&self, field: &str) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.0.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }
}

fn free_port() -> Result<u16> {
    Ok(StdListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn binary() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let release = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("cannot find target/release")?;
    let binary = release.join("twilio-dialogflow");
    if !binary.exists() {
        return Err(format!(
            "{} is missing: run `cargo build --release` first",
            binary.display()
        )
        .into());
    }
    Ok(binary)
}

async fn wait_for_port(addr: SocketAddr) {
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn spawn_bridge(binary: &Path, port: u16, emulator: SocketAddr) -> Result<Proc> {
    let child = Command::new(binary)
        .arg("serve")
        .env_clear()
        .env("PORT", port.to_string())
        .env("AGENT_TYPE", "CX")
        .env("AGENT_ID", "bench")
        .env("GCP_PROJECT", "bench-project")
        .env("TWILIO_ACCOUNT_SID", ACCOUNT_SID)
        .env("TWILIO_AUTH_TOKEN", AUTH_TOKEN)
        .env("REPLY_MODE", "twiml")
        .env("DIALOGFLOW_EMULATOR_HOST", emulator.to_string())
        .env("TWILIO_API_BASE_URL", "http://127.0.0.1:9")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    Ok(Proc(child))
}

static SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// A signed webhook from sender `from`, with a fresh MessageSid.
fn webhook(url: &str, from: u64, body: &str) -> (String, String) {
    let n = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    let params: Vec<(String, String)> = [
        ("MessageSid", format!("SM{n:032x}")),
        ("AccountSid", ACCOUNT_SID.to_owned()),
        ("From", format!("+1555{from:07}")),
        ("To", "+15550000000".to_owned()),
        ("Body", body.to_owned()),
        ("NumMedia", "0".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let signature = signature::compute(AUTH_TOKEN, url, &params);
    (FormParams::from_pairs(params).encode(), signature)
}

async fn post(client: &reqwest::Client, url: &str, from: u64, body: &str) -> Result<String> {
    let (form, signature) = webhook(url, from, body);
    let response = client
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-twilio-signature", signature)
        .body(form)
        .send()
        .await?;
    if !response.status().is_success() {
        return Err(format!("HTTP {}", response.status()).into());
    }
    Ok(response.text().await?)
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

struct Load {
    rps: f64,
    p50: Duration,
    p99: Duration,
    errors: u64,
}

/// `concurrency` loops posting signed webhooks for `duration`.
async fn load(url: &str, concurrency: usize, duration: Duration) -> Load {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .unwrap_or_default();
    let errors = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|worker| {
            let (client, url, errors) = (client.clone(), url.to_owned(), Arc::clone(&errors));
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let t = Instant::now();
                    match post(&client, &url, worker as u64, "hi").await {
                        Ok(_) => latencies.push(t.elapsed()),
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::new();
    for worker in workers {
        all.extend(worker.await.unwrap_or_default());
    }
    let elapsed = started.elapsed();
    all.sort();
    Load {
        rps: all.len() as f64 / elapsed.as_secs_f64(),
        p50: percentile(&all, 0.50),
        p99: percentile(&all, 0.99),
        errors: errors.load(Ordering::Relaxed),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

async fn run() -> Result<()> {
    let binary = binary()?;
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let agent = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/agent.yaml");
    let emulator_port = free_port()?;
    let _emulator = Proc(
        Command::new(&binary)
            .args(["emulator", "--agent"])
            .arg(&agent)
            .args(["--port", &emulator_port.to_string()])
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .spawn()?,
    );
    let emulator: SocketAddr = ([127, 0, 0, 1], emulator_port).into();
    wait_for_port(emulator).await;
    let client = reqwest::Client::new();
    let mut rows: Vec<(String, String, String)> = Vec::new();

    // Cold start: spawn to the first TwiML reply.
    let mut starts = Vec::new();
    for _ in 0..11 {
        let port = free_port()?;
        let url = format!("http://127.0.0.1:{port}/");
        let started = Instant::now();
        let _bridge = spawn_bridge(&binary, port, emulator)?;
        loop {
            if let Ok(twiml) = post(&client, &url, 1, "hi").await {
                if twiml.contains("<Message>") {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        starts.push(started.elapsed());
    }
    let cold = median(starts);
    rows.push((
        "cold start to first TwiML reply (median of 11)".into(),
        ms(cold),
        "< 20 ms".into(),
    ));

    // Memory: idle, then 1000 conversations in flight against a 1 s agent.
    let port = free_port()?;
    let url = format!("http://127.0.0.1:{port}/");
    let bridge = spawn_bridge(&binary, port, emulator)?;
    wait_for_port(([127, 0, 0, 1], port).into()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = bridge.rss_kib("VmRSS:");
    let many = reqwest::Client::builder()
        .pool_max_idle_per_host(1000)
        .build()?;
    let in_flight: Vec<_> = (0..1000u64)
        .map(|from| {
            let (many, url) = (many.clone(), url.clone());
            tokio::spawn(async move { post(&many, &url, from, "slow").await })
        })
        .collect();
    let mut answered = 0;
    for request in in_flight {
        if matches!(request.await, Ok(Ok(twiml)) if twiml.contains("That took a second")) {
            answered += 1;
        }
    }
    let peak = bridge.rss_kib("VmHWM:");
    drop(bridge);
    rows.push((
        "RSS idle after start".into(),
        format!("{:.1} MiB", idle as f64 / 1024.0),
        "< 15 MiB".into(),
    ));
    rows.push((
        format!("peak RSS, 1000 conversations in flight ({answered} answered)"),
        format!("{:.1} MiB", peak as f64 / 1024.0),
        "< 64 MiB".into(),
    ));

    // Throughput and latency: the bridge against the bare server.
    let port = free_port()?;
    let bridge_url = format!("http://127.0.0.1:{port}/");
    let _bridge = spawn_bridge(&binary, port, emulator)?;
    wait_for_port(([127, 0, 0, 1], port).into()).await;
    let bare_port = free_port()?;
    let _bare = Proc(
        Command::new(std::env::current_exe()?)
            .args(["bare", &bare_port.to_string()])
            .stdout(Stdio::null())
            .spawn()?,
    );
    let bare_url = format!("http://127.0.0.1:{bare_port}/");
    wait_for_port(([127, 0, 0, 1], bare_port).into()).await;
    for concurrency in [16, 128] {
        let bridged = load(&bridge_url, concurrency, Duration::from_secs(seconds)).await;
        let bare = load(&bare_url, concurrency, Duration::from_secs(seconds)).await;
        rows.push((
            format!("bridge, concurrency {concurrency}: requests/s (errors)"),
            format!("{:.0} ({})", bridged.rps, bridged.errors),
            String::new(),
        ));
        rows.push((
            format!("bridge, concurrency {concurrency}: p50 / p99"),
            format!("{} / {}", ms(bridged.p50), ms(bridged.p99)),
            String::new(),
        ));
        rows.push((
            format!("bare server, concurrency {concurrency}: requests/s"),
            format!("{:.0}", bare.rps),
            String::new(),
        ));
        rows.push((
            format!("bare server, concurrency {concurrency}: p50 / p99"),
            format!("{} / {}", ms(bare.p50), ms(bare.p99)),
            String::new(),
        ));
        rows.push((
            format!("bridge / bare throughput, concurrency {concurrency}"),
            format!("{:.0} %", 100.0 * bridged.rps / bare.rps),
            ">= 50 %".into(),
        ));
        if concurrency == 16 {
            rows.push((
                "p99 added latency, concurrency 16".into(),
                ms(bridged.p99.saturating_sub(bare.p99)),
                "< 5 ms".into(),
            ));
        }
    }

    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("twilio-dialogflow benchmarks: {cores} cores, {cpu}");
    println!(
        "The load generator, the bridge, the emulator and the bare server share this machine."
    );
    println!("Load: {seconds} s per run, signed webhooks over loopback, agent answering at once (REPLY_MODE=twiml).\n");
    let width = rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(0);
    println!("{:width$}  {:>22}  target", "measure", "result");
    for (name, value, target) in rows {
        println!("{name:width$}  {value:>22}  {target}");
    }
    Ok(())
}
