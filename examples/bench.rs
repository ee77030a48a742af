//! The benchmark harness: cold start, memory, throughput and latency of the bridge, and
//! the same load against a bare HTTP server as the ceiling of this machine.
//!
//!     cargo build --release --features jemalloc && cargo run --release --features jemalloc --example bench
//!
//! It starts `target/release/twilio-dialogflow` as separate processes (the emulator and
//! the bridge), so that what is measured is the real binary, and drives it with signed
//! webhooks over loopback. Everything shares one machine; the table says so. With a
//! `redis-server` on the PATH, the load is run again with the state in Redis, and with
//! `redis-cli` too, on a Redis Cluster of three masters.
//!
//! It prints the headline figures first, each with its target and the figure of the
//! README's last table (`bench/previous.tsv`), so that a slower change shows in review;
//! then every row it measured.

use bridge::twilio::signature;
use bridge::twilio::webhook::FormParams;
use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ACCOUNT_SID: &str = "AC00000000000000000000000000000000";
const AUTH_TOKEN: &str = "bench-token";
const TWIML: &str = r#"<?xml version="1.0" encoding="UTF-8"?><Response><Message><Body>Hello! This is a benchmark reply with an emoji 🍕 &amp; an ampersand.</Body></Message></Response>"#;

const SLOW_TWIML: &str = r#"<?xml version="1.0" encoding="UTF-8"?><Response><Message><Body>That took a second.</Body></Message></Response>"#;

// The same allocator as the bridge, so that the bare server is measured like it.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
    if args.get(1).map(String::as_str) == Some("load") {
        // Load alone against a running bridge, for profiling it: `load URL CONCURRENCY SECONDS`.
        let url = args.get(2).ok_or("load URL CONCURRENCY SECONDS")?;
        let concurrency: usize = args.get(3).ok_or("CONCURRENCY")?.parse()?;
        let seconds: u64 = args.get(4).ok_or("SECONDS")?.parse()?;
        let result = runtime.block_on(load(url, concurrency, Duration::from_secs(seconds)));
        println!("{}", result.summary());
        return Ok(());
    }
    if args.get(1).map(String::as_str) == Some("paced") {
        // `paced URL RATE SECONDS`: an open loop at a fixed rate against a running bridge.
        let url = args.get(2).ok_or("paced URL RATE SECONDS")?;
        let rate: f64 = args.get(3).ok_or("RATE")?.parse()?;
        let seconds: u64 = args.get(4).ok_or("SECONDS")?.parse()?;
        let result = runtime.block_on(paced(url, rate, 128, Duration::from_secs(seconds)));
        println!("{}", result.summary());
        return Ok(());
    }
    if args.get(1).map(String::as_str) == Some("in-flight") {
        // `in-flight URL N`: N slow conversations at once against a running bridge.
        let url = args.get(2).ok_or("in-flight URL N")?;
        let conversations: u64 = args.get(3).ok_or("N")?.parse()?;
        let answered = runtime.block_on(in_flight(url, conversations))?;
        println!("{answered} of {conversations} answered");
        return Ok(());
    }
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
            axum::routing::post(|body: axum::body::Bytes| async move {
                // Holds a "slow" message for a second, as the bridge's 1 s agent does.
                if body.windows(9).any(|w| w == b"Body=slow") {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    return ([("content-type", "text/xml; charset=utf-8")], SLOW_TWIML);
                }
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
    /// User plus system CPU time used so far.
    fn cpu(&self) -> Duration {
        cpu_of(&format!("/proc/{}/stat", self.0.id()))
    }

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

/// utime + stime of `/proc/PID/stat`, in clock ticks of 10 ms (Linux's USER_HZ).
fn cpu_of(stat_path: &str) -> Duration {
    let stat = std::fs::read_to_string(stat_path).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces: the
    // first is field 3 (state), so utime (field 14) and stime (15) are the 12th and 13th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let ticks = field(11) + field(12);
    Duration::from_millis(ticks * 10)
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
            "{} is missing: run `cargo build --release --features jemalloc` first",
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
    spawn_bridge_with(binary, port, emulator, &[])
}

/// The bridge, with `vars` added to the benchmark's configuration or overriding it.
fn spawn_bridge_with(
    binary: &Path,
    port: u16,
    emulator: SocketAddr,
    vars: &[(&str, &str)],
) -> Result<Proc> {
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
        // The load reuses senders: every request must reach the agent.
        .env("RATE_LIMIT_PER_CONVERSATION", "off")
        .env("DIALOGFLOW_EMULATOR_HOST", emulator.to_string())
        .env("TWILIO_API_BASE_URL", "http://127.0.0.1:9")
        // Last, so that they override the above.
        .envs(vars.iter().copied())
        // Logging as in production: one line per webhook, here into /dev/null.
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

/// The middle value; with an even count, the mean of the two middle ones.
fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    let middle = values.len() / 2;
    if values.len().is_multiple_of(2) {
        (values[middle - 1] + values[middle]) / 2
    } else {
        values[middle]
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

struct Load {
    requests: u64,
    rps: f64,
    p50: Duration,
    p99: Duration,
    errors: u64,
}

impl Load {
    /// What the profiling modes print.
    fn summary(&self) -> String {
        format!(
            "{:.0} requests/s, p50 {}, p99 {}, {} errors",
            self.rps,
            ms(self.p50),
            ms(self.p99),
            self.errors
        )
    }

    /// The run's figures from the latencies of its successful requests.
    fn of(mut latencies: Vec<Duration>, elapsed: Duration, errors: u64) -> Self {
        latencies.sort();
        let (p50, p99) = match latencies.is_empty() {
            true => (Duration::ZERO, Duration::ZERO),
            false => (percentile(&latencies, 0.50), percentile(&latencies, 0.99)),
        };
        Load {
            requests: latencies.len() as u64,
            rps: latencies.len() as f64 / elapsed.as_secs_f64(),
            p50,
            p99,
            errors,
        }
    }
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
    Load::of(all, started.elapsed(), errors.load(Ordering::Relaxed))
}

/// Webhooks at a fixed `rate` for `duration`, sent on schedule whatever the answers
/// (an open loop, as people write), at most `outstanding` at once.
///
/// A closed loop at a saturating concurrency measures throughput as much as latency:
/// by Little's law its latency is concurrency / throughput, so a store that costs a
/// third of the throughput adds half the latency whatever its own. At a rate both
/// set-ups sustain, the latency added is the store's.
async fn paced(url: &str, rate: f64, outstanding: usize, duration: Duration) -> Load {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(outstanding)
        .build()
        .unwrap_or_default();
    let slots = Arc::new(tokio::sync::Semaphore::new(outstanding));
    let errors = Arc::new(AtomicU64::new(0));
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(1.0)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut requests = Vec::new();
    let mut from = 0u64;
    while started.elapsed() < duration {
        ticks.tick().await;
        let scheduled = Instant::now();
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            break;
        };
        let (client, url, errors) = (client.clone(), url.to_owned(), Arc::clone(&errors));
        from += 1;
        // A thousand senders in turn, so that every conversation stays free.
        let sender = from % 1000;
        requests.push(tokio::spawn(async move {
            let _slot = slot;
            match post(&client, &url, sender, "hi").await {
                // From the moment it was due: a request held back by the cap counts.
                Ok(_) => Some(scheduled.elapsed()),
                Err(_) => {
                    errors.fetch_add(1, Ordering::Relaxed);
                    None
                }
            }
        }));
    }
    let mut all = Vec::new();
    for request in requests {
        if let Ok(Some(latency)) = request.await {
            all.push(latency);
        }
    }
    Load::of(all, started.elapsed(), errors.load(Ordering::Relaxed))
}

/// CPU per request with every webhook's spans exported (OTLP over HTTP, to a sink in
/// this process that takes them and answers at once) beside export off, one bridge
/// after the other at concurrency 16: what the spans cost when on, and that off costs
/// what it did.
async fn traces_exported(
    binary: &Path,
    emulator: SocketAddr,
    seconds: u64,
    rows: &mut Vec<(String, String, String)>,
) -> Result<()> {
    let sink = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let endpoint = format!("http://{}", sink.local_addr()?);
    let accepted = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(|| async {
            (
                [("content-type", "application/x-protobuf")],
                Vec::<u8>::new(),
            )
        }),
    );
    tokio::spawn(async move { axum::serve(sink, accepted).await });
    let mut per_request = Vec::new();
    for vars in [
        vec![],
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_TRACES_SAMPLER", "always_on"),
        ],
    ] {
        let port = free_port()?;
        let url = format!("http://127.0.0.1:{port}/");
        let bridge = spawn_bridge_with(binary, port, emulator, &vars)?;
        wait_for_port(([127, 0, 0, 1], port).into()).await;
        let before = bridge.cpu();
        let loaded = load(&url, 16, Duration::from_secs(seconds)).await;
        let cpu = bridge.cpu() - before;
        per_request.push(cpu.as_secs_f64() * 1e6 / loaded.requests.max(1) as f64);
    }
    rows.push((
        "CPU per request, concurrency 16: bridge, traces off / exported".into(),
        format!("{:.0} / {:.0} µs", per_request[0], per_request[1]),
        String::new(),
    ));
    Ok(())
}

/// `conversations` senders each send one message the agent takes a second to answer, all
/// at once; returns how many got the agent's reply.
async fn in_flight(url: &str, conversations: u64) -> Result<usize> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(conversations as usize)
        .build()?;
    let requests: Vec<_> = (0..conversations)
        .map(|from| {
            let (client, url) = (client.clone(), url.to_owned());
            tokio::spawn(async move { post(&client, &url, from, "slow").await })
        })
        .collect();
    let mut answered = 0;
    for request in requests {
        if matches!(request.await, Ok(Ok(twiml)) if twiml.contains("That took a second")) {
            answered += 1;
        }
    }
    Ok(answered)
}

/// The p99 the Redis store adds: in closed loops at each concurrency (saturating the
/// machine), and at a fixed rate both set-ups sustain.
#[derive(Default)]
struct RedisAdded {
    saturated: Vec<(usize, Duration)>,
    /// The rate, and the p99 added at it.
    paced: Option<(f64, Duration)>,
    /// At that rate, the p99 of the one store round trip in a webhook's path (the
    /// admission), by the bridge's own histogram: the bucket bound it falls under.
    admission_p99: Option<f64>,
}

/// The same load with the state in a local `redis-server` (`STATE_URL`), beside the
/// in-process figures of this run: throughput, p99, the store's round trips per webhook
/// (the scripts the bridge runs, counted by the server), and the bridge's memory.
async fn shared_state(
    binary: &Path,
    emulator: SocketAddr,
    seconds: u64,
    in_process: &[(usize, f64, Duration)],
    rows: &mut Vec<(String, String, String)>,
) -> Result<RedisAdded> {
    let redis_port = free_port()?;
    let Ok(child) = Command::new("redis-server")
        .args(["--port", &redis_port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()
    else {
        rows.push((
            "shared state (Redis)".into(),
            "skipped: no redis-server".into(),
            String::new(),
        ));
        return Ok(RedisAdded::default());
    };
    let redis = Proc(child);
    wait_for_port(([127, 0, 0, 1], redis_port).into()).await;
    let redis_url = format!("redis://127.0.0.1:{redis_port}");
    let port = free_port()?;
    let url = format!("http://127.0.0.1:{port}/");
    let bridge = spawn_bridge_with(binary, port, emulator, &[("STATE_URL", &redis_url)])?;
    wait_for_port(([127, 0, 0, 1], port).into()).await;
    let client = redis::Client::open(redis_url.as_str())?;
    let mut connection = client.get_multiplexed_async_connection().await?;
    let mut added = RedisAdded::default();
    let mut capacity = None;
    for &(concurrency, rps, p99) in in_process {
        let calls_before = store_round_trips(&url).await?;
        let before = (bridge.cpu(), redis.cpu());
        let shared = load(&url, concurrency, Duration::from_secs(seconds)).await;
        let round_trips =
            (store_round_trips(&url).await? - calls_before) as f64 / shared.requests.max(1) as f64;
        let cpu = (bridge.cpu() - before.0, redis.cpu() - before.1);
        rows.push((
            format!("Redis state, concurrency {concurrency}: requests/s (errors)"),
            format!("{:.0} ({})", shared.rps, shared.errors),
            String::new(),
        ));
        rows.push((
            format!("Redis / in-process throughput, concurrency {concurrency}"),
            format!("{:.0} %", 100.0 * shared.rps / rps),
            ">= 60 %".into(),
        ));
        added
            .saturated
            .push((concurrency, shared.p99.saturating_sub(p99)));
        capacity = capacity.or(Some(shared.rps));
        rows.push((
            format!("Redis state, concurrency {concurrency}: p99 (added to in-process)"),
            format!(
                "{} (+{})",
                ms(shared.p99),
                ms(shared.p99.saturating_sub(p99))
            ),
            "< 2 ms added".into(),
        ));
        rows.push((
            format!("Redis state, concurrency {concurrency}: store round trips per webhook"),
            format!("{round_trips:.2}"),
            "<= 2".into(),
        ));
        rows.push((
            format!("CPU per request, concurrency {concurrency}: bridge / redis-server"),
            format!(
                "{:.0} / {:.0} µs",
                cpu.0.as_secs_f64() * 1e6 / shared.requests.max(1) as f64,
                cpu.1.as_secs_f64() * 1e6 / shared.requests.max(1) as f64
            ),
            String::new(),
        ));
    }
    if let Some(capacity) = capacity {
        // Half of what the bridge on Redis sustains, up to 128 requests at once.
        let rate = (capacity / 2.0).floor().max(1.0);
        let duration = Duration::from_secs(seconds);
        let before = metrics_of(&url).await?;
        let shared = paced(&url, rate, 128, duration).await;
        added.admission_p99 = call_p99(&before, &metrics_of(&url).await?, "admit");
        let local_port = free_port()?;
        let local_bridge = spawn_bridge(binary, local_port, emulator)?;
        wait_for_port(([127, 0, 0, 1], local_port).into()).await;
        let local = paced(
            &format!("http://127.0.0.1:{local_port}/"),
            rate,
            128,
            duration,
        )
        .await;
        drop(local_bridge);
        rows.push((
            format!("at a fixed {rate:.0} requests/s (≤ 128 at once): p50 / p99, in-process"),
            format!(
                "{} / {} ({} errors)",
                ms(local.p50),
                ms(local.p99),
                local.errors
            ),
            String::new(),
        ));
        rows.push((
            format!("at a fixed {rate:.0} requests/s (≤ 128 at once): p50 / p99, Redis (added)"),
            format!(
                "{} / {} (+{}) ({} errors)",
                ms(shared.p50),
                ms(shared.p99),
                ms(shared.p99.saturating_sub(local.p99)),
                shared.errors
            ),
            "< 2 ms added".into(),
        ));
        added.paced = Some((rate, shared.p99.saturating_sub(local.p99)));
        rows.push((
            format!("at a fixed {rate:.0} requests/s: the admission's round trip p99 (the bridge's state_call_seconds)"),
            added
                .admission_p99
                .map_or("over 1 s".to_owned(), |p99| format!("≤ {:.2} ms", p99 * 1e3)),
            "< 2 ms".into(),
        ));
    }
    let conversations: u64 = redis::cmd("DBSIZE").query_async(&mut connection).await?;
    rows.push((
        format!("bridge RSS after the load, Redis state ({conversations} keys in Redis)"),
        format!("{:.1} MiB", bridge.rss_kib("VmRSS:") as f64 / 1024.0),
        "flat".into(),
    ));
    Ok(added)
}

/// The same load with the state in a local Redis Cluster of three masters (no
/// replicas), made as the tests make theirs (`redis-cli --cluster create`), the bridge
/// told one node: requests/s as a share of the in-process figure, the store's round
/// trips per webhook and the p99 added. Skipped without `redis-server` and `redis-cli`.
async fn cluster_state(
    binary: &Path,
    emulator: SocketAddr,
    seconds: u64,
    in_process: &[(usize, f64, Duration)],
    rows: &mut Vec<(String, String, String)>,
) -> Result<()> {
    let skipped = |rows: &mut Vec<(String, String, String)>, why: &str| {
        rows.push((
            "shared state (Redis Cluster, 3 masters)".into(),
            format!("skipped: {why}"),
            String::new(),
        ));
    };
    let dir = std::env::temp_dir().join(format!("bench-cluster-{}", std::process::id()));
    let mut nodes = Vec::new();
    let mut addresses = Vec::new();
    for n in 0..3 {
        let node_dir = dir.join(format!("node-{n}"));
        std::fs::create_dir_all(&node_dir)?;
        // The bus on a port of its own: a free port plus 10000 may be past 65535.
        let (port, bus) = (free_port()?, free_port()?);
        let Ok(child) = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--cluster-enabled",
                "yes",
                "--cluster-port",
                &bus.to_string(),
            ])
            .args(["--cluster-config-file", "nodes.conf"])
            .arg("--dir")
            .arg(&node_dir)
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
        else {
            skipped(rows, "no redis-server");
            return Ok(());
        };
        nodes.push(Proc(child));
        addresses.push(format!("127.0.0.1:{port}"));
    }
    for address in &addresses {
        wait_for_port(address.parse()?).await;
    }
    let created = Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&addresses)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !created.is_ok_and(|status| status.success()) {
        skipped(rows, "redis-cli --cluster create failed");
        return Ok(());
    }
    for address in &addresses {
        let client = redis::Client::open(format!("redis://{address}"))?;
        let mut connection = client.get_multiplexed_async_connection().await?;
        loop {
            let info: String = redis::cmd("CLUSTER")
                .arg("INFO")
                .query_async(&mut connection)
                .await?;
            if info.contains("cluster_state:ok") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let store_url = format!("redis://{}", addresses[0]);
    let port = free_port()?;
    let url = format!("http://127.0.0.1:{port}/");
    let bridge = spawn_bridge_with(binary, port, emulator, &[("STATE_URL", &store_url)])?;
    wait_for_port(([127, 0, 0, 1], port).into()).await;
    for &(concurrency, rps, p99) in in_process {
        let calls_before = store_round_trips(&url).await?;
        let shared = load(&url, concurrency, Duration::from_secs(seconds)).await;
        let round_trips =
            (store_round_trips(&url).await? - calls_before) as f64 / shared.requests.max(1) as f64;
        rows.push((
            format!("Cluster state, concurrency {concurrency}: requests/s (errors)"),
            format!("{:.0} ({})", shared.rps, shared.errors),
            String::new(),
        ));
        rows.push((
            format!("Cluster / in-process throughput, concurrency {concurrency}"),
            format!("{:.0} %", 100.0 * shared.rps / rps),
            String::new(),
        ));
        rows.push((
            format!("Cluster state, concurrency {concurrency}: p99 (added to in-process)"),
            format!(
                "{} (+{})",
                ms(shared.p99),
                ms(shared.p99.saturating_sub(p99))
            ),
            String::new(),
        ));
        rows.push((
            format!("Cluster state, concurrency {concurrency}: store round trips per webhook"),
            format!("{round_trips:.2}"),
            "<= 2".into(),
        ));
    }
    drop(bridge);
    drop(nodes);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// How many round trips the bridge has made to the store, by its own count
/// (`state_calls_total` in its `/metrics`): the server's command statistics would count
/// the commands the scripts run inside too.
async fn store_round_trips(bridge_url: &str) -> Result<u64> {
    Ok(metrics_of(bridge_url)
        .await?
        .lines()
        .filter(|line| line.starts_with("twilio_dialogflow_state_calls_total{"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64)
}

async fn metrics_of(bridge_url: &str) -> Result<String> {
    Ok(reqwest::get(format!("{bridge_url}metrics"))
        .await?
        .text()
        .await?)
}

/// The p99 of the store calls `op` made between two readings of the bridge's
/// `/metrics`, from `state_call_seconds`: the least bucket bound under which 99 % of
/// them fell (`None` without calls, or past the last bound).
fn call_p99(before: &str, after: &str, op: &str) -> Option<f64> {
    let buckets = |metrics: &str| -> Vec<(f64, f64)> {
        let label = format!(",op=\"{op}\"}} ");
        metrics
            .lines()
            .filter_map(|line| {
                line.strip_prefix("twilio_dialogflow_state_call_seconds_bucket{le=\"")
            })
            .filter_map(|rest| {
                let (bound, rest) = rest.split_once('"')?;
                let count = rest.strip_prefix(&label)?;
                Some((bound.parse().ok()?, count.trim().parse().ok()?))
            })
            .collect()
    };
    let (before, after) = (buckets(before), buckets(after));
    let count_at = |bound: f64| {
        let of = |buckets: &[(f64, f64)]| {
            buckets
                .iter()
                .find(|(b, _)| *b == bound)
                .map_or(0.0, |(_, c)| *c)
        };
        of(&after) - of(&before)
    };
    let total = after.iter().map(|(_, c)| *c).fold(0.0, f64::max)
        - before.iter().map(|(_, c)| *c).fold(0.0, f64::max);
    if total <= 0.0 {
        return None;
    }
    after
        .iter()
        .map(|(bound, _)| *bound)
        .filter(|bound| bound.is_finite())
        .find(|bound| count_at(*bound) >= 0.99 * total)
}

/// The headline figures: each measure of the table the README keeps, with its target,
/// printed beside the figure of the README's last table (`bench/previous.tsv`) so that a
/// change that makes one worse shows in review.
#[derive(Default)]
struct Headlines(Vec<Headline>);

struct Headline {
    /// Its key in `bench/previous.tsv`.
    key: &'static str,
    measure: String,
    now: String,
    target: &'static str,
}

impl Headlines {
    fn add(
        &mut self,
        key: &'static str,
        measure: impl Into<String>,
        now: String,
        target: &'static str,
    ) {
        self.0.push(Headline {
            key,
            measure: measure.into(),
            now,
            target,
        });
    }

    /// Prints the figures beside the previous ones; a key with no previous figure shows
    /// a dash.
    fn print(&self, previous: &HashMap<String, String>) {
        let measure_width = self
            .0
            .iter()
            .map(|h| h.measure.chars().count())
            .max()
            .unwrap_or(0);
        let now_width = self
            .0
            .iter()
            .map(|h| h.now.chars().count())
            .max()
            .unwrap_or(0)
            .max(5);
        let previous_of = |key: &str| previous.get(key).map_or("—", String::as_str);
        let previous_width = self
            .0
            .iter()
            .map(|h| previous_of(h.key).chars().count())
            .max()
            .unwrap_or(0)
            .max(8);
        println!(
            "{:measure_width$}  {:>now_width$}  {:>previous_width$}  target",
            "measure", "today", "previous"
        );
        for headline in &self.0 {
            println!(
                "{:measure_width$}  {:>now_width$}  {:>previous_width$}  {}",
                headline.measure,
                headline.now,
                previous_of(headline.key),
                headline.target
            );
        }
    }
}

/// The previous figures by key, from `bench/previous.tsv`: `key<TAB>figure<TAB>source`,
/// `#` starting a comment line. A missing file is no figures, said once.
fn previous_figures() -> HashMap<String, String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/previous.tsv");
    let Ok(text) = std::fs::read_to_string(&path) else {
        eprintln!(
            "{} is missing: no previous figures to compare",
            path.display()
        );
        return HashMap::new();
    };
    parse_previous(&text)
}

fn parse_previous(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .filter_map(|line| {
            let mut fields = line.split('\t');
            let key = fields.next()?.trim();
            let figure = fields.next()?.trim();
            (!key.is_empty() && !figure.is_empty()).then(|| (key.to_owned(), figure.to_owned()))
        })
        .collect()
}

/// How long a person waits for the fallback when every call to the agent fails at once
/// (503), in the default reply mode (`auto`: in the webhook's answer within
/// `REPLY_DEADLINE`, else through the Messages API, here the stand-in): from the
/// webhook's post to the fallback, whichever way it came.
async fn failing_agent_fallback(binary: &Path, emulator: SocketAddr) -> Result<Duration> {
    let twilio = stand_ins::messages_api::MessagesEmulator::start(
        tokio::net::TcpListener::bind("127.0.0.1:0").await?,
        ACCOUNT_SID,
        AUTH_TOKEN,
    )?;
    let port = free_port()?;
    let url = format!("http://127.0.0.1:{port}/");
    let _bridge = spawn_bridge_with(
        binary,
        port,
        emulator,
        &[
            ("REPLY_MODE", "auto"),
            ("TWILIO_API_BASE_URL", &twilio.base_url()),
        ],
    )?;
    wait_for_port(([127, 0, 0, 1], port).into()).await;
    let client = reqwest::Client::new();
    let started = Instant::now();
    let twiml = post(&client, &url, 1, "outage").await?;
    // The fallback as the webhook's answer carries it: XML-escaped.
    let fallback = bridge::twilio::twiml::render(&[bridge::reply::ReplyMessage::text(
        bridge::config::DEFAULT_FALLBACK_MESSAGE,
    )]);
    if twiml != fallback {
        // The stand-in waits a minute at most.
        let sent = twilio.wait_for(1).await;
        if !sent
            .iter()
            .any(|m| m.body == bridge::config::DEFAULT_FALLBACK_MESSAGE)
        {
            return Err("the failing agent's fallback never came".into());
        }
    }
    Ok(started.elapsed())
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
    let emulator_proc = Proc(
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

    let mut headlines = Headlines::default();

    // Cold start: spawn to the first TwiML reply, measured from outside the process.
    let mut starts = Vec::new();
    for _ in 0..10 {
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
    headlines.add(
        "cold_start",
        "cold start, spawn to first TwiML reply (median of 10)",
        ms(cold),
        "< 10 ms",
    );

    // The bare server: the same HTTP stack with no work, the ceiling of this machine.
    let bare_port = free_port()?;
    let bare_proc = Proc(
        Command::new(std::env::current_exe()?)
            .args(["bare", &bare_port.to_string()])
            .stdout(Stdio::null())
            .spawn()?,
    );
    let bare_url = format!("http://127.0.0.1:{bare_port}/");
    wait_for_port(([127, 0, 0, 1], bare_port).into()).await;

    // Memory: idle, then 1000 conversations in flight against a 1 s agent.
    let port = free_port()?;
    let url = format!("http://127.0.0.1:{port}/");
    let bridge = spawn_bridge(&binary, port, emulator)?;
    wait_for_port(([127, 0, 0, 1], port).into()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = bridge.rss_kib("VmRSS:");
    // Most of it is the binary's own pages, which the kernel maps around each fault and
    // can drop and read again: the anonymous part is the memory the bridge made.
    let idle_anonymous = bridge.rss_kib("RssAnon:");
    let answered = in_flight(&url, 1000).await?;
    let peak = bridge.rss_kib("VmHWM:");
    drop(bridge);
    headlines.add(
        "idle_rss",
        "RSS idle after start (of it anonymous)",
        format!(
            "{:.1} MiB ({:.1} MiB)",
            idle as f64 / 1024.0,
            idle_anonymous as f64 / 1024.0
        ),
        "< 12 MiB",
    );
    headlines.add(
        "peak_rss_in_flight",
        format!("peak RSS, 1000 conversations in flight, 1 s agent ({answered} answered)"),
        format!("{:.1} MiB", peak as f64 / 1024.0),
        "< 64 MiB",
    );
    let bare_idle = bare_proc.rss_kib("VmRSS:");
    let bare_answered = in_flight(&bare_url, 1000).await?;
    rows.push((
        format!("bare server: RSS idle / 1000 requests held 1 s ({bare_answered} answered)"),
        format!(
            "{:.1} / {:.1} MiB",
            bare_idle as f64 / 1024.0,
            bare_proc.rss_kib("VmHWM:") as f64 / 1024.0
        ),
        String::new(),
    ));

    // Throughput and latency: the bridge against the bare server.
    let mut in_process = Vec::new();
    let port = free_port()?;
    let bridge_url = format!("http://127.0.0.1:{port}/");
    let bridge = spawn_bridge(&binary, port, emulator)?;
    wait_for_port(([127, 0, 0, 1], port).into()).await;
    for concurrency in [16, 128] {
        let before = (bridge.cpu(), emulator_proc.cpu(), cpu_of("/proc/self/stat"));
        let bridged = load(&bridge_url, concurrency, Duration::from_secs(seconds)).await;
        let bridged_cpu = (
            bridge.cpu() - before.0,
            emulator_proc.cpu() - before.1,
            cpu_of("/proc/self/stat") - before.2,
        );
        let before = (bare_proc.cpu(), cpu_of("/proc/self/stat"));
        let bare = load(&bare_url, concurrency, Duration::from_secs(seconds)).await;
        let bare_cpu = (
            bare_proc.cpu() - before.0,
            cpu_of("/proc/self/stat") - before.1,
        );
        let per_request = |cpu: Duration, load: &Load| {
            format!(
                "{:.0} µs",
                cpu.as_secs_f64() * 1e6 / load.requests.max(1) as f64
            )
        };
        in_process.push((concurrency, bridged.rps, bridged.p99));
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
            format!("CPU per request, concurrency {concurrency}: bridge / emulator / load"),
            format!(
                "{} / {} / {}",
                per_request(bridged_cpu.0, &bridged),
                per_request(bridged_cpu.1, &bridged),
                per_request(bridged_cpu.2, &bridged)
            ),
            String::new(),
        ));
        rows.push((
            format!("CPU per request, concurrency {concurrency}: bare server / load"),
            format!(
                "{} / {}",
                per_request(bare_cpu.0, &bare),
                per_request(bare_cpu.1, &bare)
            ),
            String::new(),
        ));
        rows.push((
            format!("bridge / bare throughput, concurrency {concurrency}"),
            format!("{:.0} %", 100.0 * bridged.rps / bare.rps),
            ">= 50 %".into(),
        ));
        if concurrency == 16 {
            let micros =
                |cpu: Duration, load: &Load| cpu.as_secs_f64() * 1e6 / load.requests.max(1) as f64;
            let (bridge_us, bare_us) = (micros(bridged_cpu.0, &bridged), micros(bare_cpu.0, &bare));
            headlines.add(
                "cpu_per_request_16",
                "CPU per request, concurrency 16: bridge / bare server",
                format!(
                    "{bridge_us:.0} / {bare_us:.0} µs ({:.1}×)",
                    bridge_us / bare_us.max(1.0)
                ),
                "<= 5×",
            );
            rows.push((
                "p99 added latency, concurrency 16".into(),
                ms(bridged.p99.saturating_sub(bare.p99)),
                "< 5 ms".into(),
            ));
        }
    }

    let bridge_rss = bridge.rss_kib("VmRSS:");
    drop(bridge);
    rows.push((
        "bridge RSS after the load, in-process state".into(),
        format!("{:.1} MiB", bridge_rss as f64 / 1024.0),
        String::new(),
    ));
    let added = shared_state(&binary, emulator, seconds, &in_process, &mut rows).await?;
    cluster_state(&binary, emulator, seconds, &in_process, &mut rows).await?;
    traces_exported(&binary, emulator, seconds, &mut rows).await?;
    headlines.add(
        "redis_p99_added",
        "Redis state: p99 added at concurrency 16 / 128 (closed loops, saturated)",
        if added.saturated.is_empty() {
            "skipped".to_owned()
        } else {
            added
                .saturated
                .iter()
                .map(|&(_, p99)| format!("+{}", ms(p99)))
                .collect::<Vec<_>>()
                .join(" / ")
        },
        "< 2 ms at both",
    );
    headlines.add(
        "redis_p99_added_paced",
        match added.paced {
            Some((rate, _)) => format!(
                "Redis state: p99 added at a fixed {rate:.0} requests/s (half its capacity)"
            ),
            None => "Redis state: p99 added at a fixed rate".to_owned(),
        },
        added
            .paced
            .map_or("skipped".to_owned(), |(_, p99)| format!("+{}", ms(p99))),
        "< 2 ms",
    );
    headlines.add(
        "redis_admission_p99",
        "Redis state: the store's round trip in a webhook's path (the admission), p99 at that rate",
        match (added.paced, added.admission_p99) {
            (None, _) => "skipped".to_owned(),
            (Some(_), Some(p99)) => format!("≤ {:.2} ms", p99 * 1e3),
            (Some(_), None) => "over 1 s".to_owned(),
        },
        "< 2 ms",
    );
    headlines.add(
        "failing_agent_fallback",
        "agent failing fast (every call 503): the fallback, REPLY_MODE=auto",
        format!(
            "{:.1} s",
            failing_agent_fallback(&binary, emulator)
                .await?
                .as_secs_f64()
        ),
        "<= 10 s",
    );

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
    let allocator = if cfg!(feature = "jemalloc") {
        "jemalloc"
    } else {
        "the system's (the README's figures are with --features jemalloc)"
    };
    println!("Allocator of the bare server and, if built alike, the bridge: {allocator}.");
    println!(
        "The load generator, the bridge, the emulator and the bare server share this machine."
    );
    println!("Load: {seconds} s per run, signed webhooks over loopback, agent answering at once (REPLY_MODE=twiml, info logs).\n");
    println!("Issue 21's figures, today and in the README's last table (bench/previous.tsv):\n");
    headlines.print(&previous_figures());
    println!("\nEvery row measured:\n");
    let width = rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(0);
    println!("{:width$}  {:>22}  target", "measure", "result");
    for (name, value, target) in rows {
        println!("{name:width$}  {value:>22}  {target}");
    }
    Ok(())
}
