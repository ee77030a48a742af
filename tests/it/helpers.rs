//! Shared set-up for the black-box tests: a real emulator and a real bridge on free
//! ports, a stand-in for Twilio's Messages API, and a phone that signs webhooks like
//! Twilio.

use bridge::config::Settings;
use bridge::reply::ReplyMessage;
use bridge::startup::RunningBridge;
use bridge::twilio::signature;
use bridge::twilio::webhook::FormParams;
use stand_ins::chat::{Outgoing, Phone, PhoneReply};
use stand_ins::emulator::{AgentDefinition, Emulator, RecordedRequest};
use stand_ins::messages_api::MessagesEmulator;
use std::collections::HashMap;
use std::time::{Duration, Instant};

pub const ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";
pub const AUTH_TOKEN: &str = "test-auth-token";
pub const USER: &str = "+15551230001";
pub const OUR_NUMBER: &str = "+15557770000";

/// A small agent that exercises every reply the bridge handles.
pub const AGENT: &str = r#"
project: test-project
location: global
agent_id: test-agent
language: en
intents:
  - name: greeting
    phrases: ["hi", "hello"]
    replies:
      - text: "Hello from the agent"
  - name: order.size
    phrases: ["small", "medium", "large"]
    capture: { parameter: size, values: [small, medium, large] }
    replies:
      - text: "A $session.params.size pizza"
  - name: confirm
    phrases: ["what did I order"]
    replies:
      - text: "You ordered a $session.params.size pizza"
  - name: menu
    phrases: ["menu"]
    replies:
      - text: "Here is the menu"
      - payload: { body: "Menu card", media: ["https://example.com/menu.jpg", "https://example.com/drinks.jpg"] }
        channel: TWILIO
      - text: "Only for Facebook"
        channel: FACEBOOK
  - name: es.menu
    phrases: ["es menu"]
    replies:
      - text: "Here is the ES menu"
      - payload: { twilio: { body: "ES card", media: "https://example.com/es.jpg" } }
      - text: "Slack only"
        platform: SLACK
  - name: tricky
    phrases: ["tricky"]
    replies:
      - text: "Fish & <chips> \"quoted\" 🍟"
  - name: long
    phrases: ["long"]
    replies:
      - text: "LONG"
  - name: picture
    events: [twilio_media]
    replies:
      - text: "Nice picture"
  - name: broken
    phrases: ["break"]
    error: { code: 503, status: UNAVAILABLE, message: "backend unavailable" }
  - name: flaky
    phrases: ["flaky"]
    error: { code: 503, status: UNAVAILABLE, message: "try again" }
    fail_first: 2
    replies:
      - text: "Worked after retries"
  - name: busy
    phrases: ["busy"]
    error: { code: 429, status: RESOURCE_EXHAUSTED, message: "quota" }
    fail_first: 1
    replies:
      - text: "Worked after a pause"
  - name: gallery
    phrases: ["gallery"]
    replies:
      - payload: { body: "Twelve pictures", media: [GALLERY] }
  - name: denied
    phrases: ["denied"]
    error: { code: 403, status: PERMISSION_DENIED, message: "no access" }
  - name: slow
    phrases: ["slow"]
    delay_ms: 3000
    replies:
      - text: "Finally"
  - name: a bit slow
    phrases: ["a bit slow"]
    delay_ms: 700
    replies:
      - text: "Slowly but surely"
  - name: glacial
    phrases: ["glacial"]
    delay_ms: 1500
    replies:
      - text: "Sorry for the wait"
      - text: "Here is your answer"
fallback:
  replies:
    - text: "Sorry, what?"
"#;

/// Twelve picture URLs: more than one Twilio message carries.
pub fn gallery() -> Vec<String> {
    (1..=12)
        .map(|i| format!("https://example.com/{i}.jpg"))
        .collect()
}

/// A long reply, made by the test so the agent file stays readable.
pub fn long_reply() -> String {
    "pizza ".repeat(500)
}

/// How often [`eventually`] looks again.
const POLL: Duration = Duration::from_millis(20);

/// Waits until `probe` is ready (`Ok`), looking again every 20 ms, and gives what it
/// found; after `timeout`, fails the test with `what` it waited for and what the probe
/// last saw (its `Err`). A test waits for a condition with this, not for a fixed time:
/// it goes on as soon as the condition holds, and a condition that never comes fails
/// with what was there instead, rather than hanging.
pub async fn eventually<T, S, Fut>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Fut,
) -> T
where
    S: std::fmt::Debug,
    Fut: std::future::Future<Output = Result<T, S>>,
{
    let started = Instant::now();
    let mut last = None;
    loop {
        // A probe that hangs (a request no one answers) is cut short at the deadline too.
        let left = timeout.saturating_sub(started.elapsed()).max(POLL);
        match tokio::time::timeout(left, probe()).await {
            Ok(Ok(found)) => return found,
            Ok(Err(seen)) => last = Some(seen),
            Err(_) => {}
        }
        if started.elapsed() >= timeout {
            match last {
                Some(seen) => panic!("waited {timeout:?} for {what}; last seen: {seen:#?}"),
                None => panic!("waited {timeout:?} for {what}; the probe never answered"),
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Lets `window` pass, for a claim that something does *not* happen (no second reply):
/// no signal says "never", so such a claim is checked over a short window, after the
/// last thing that could have led to it was seen to happen.
pub async fn quiet_window(window: Duration) {
    tokio::time::sleep(window).await;
}

/// `value`, ready for [`eventually`] when `ready` says so: `Ok(value)`, else `Err(value)`
/// (what the failure shows).
pub fn ready_if<S>(value: S, ready: impl FnOnce(&S) -> bool) -> Result<S, S> {
    if ready(&value) {
        Ok(value)
    } else {
        Err(value)
    }
}

/// The value of `series` (its name and labels, as `/metrics` writes them) in
/// `metrics`; 0 when it is not there yet.
pub fn series_value(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| {
            line.strip_prefix(series)
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

pub struct Stack {
    pub emulator: Emulator,
    pub bridge: RunningBridge,
    pub phone: Phone,
    /// Twilio's Messages API, for replies that do not travel in the webhook's answer.
    pub twilio: MessagesEmulator,
}

pub async fn start_emulator(agent_yaml: &str) -> (Emulator, AgentDefinition) {
    let agent_yaml = agent_yaml
        .replace("\"LONG\"", &format!("{:?}", long_reply()))
        .replace("[GALLERY]", &format!("{:?}", gallery()));
    let agent = AgentDefinition::from_yaml_str(&agent_yaml).expect("test agent parses");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let emulator = Emulator::start(agent.clone(), listener)
        .await
        .expect("emulator starts");
    (emulator, agent)
}

/// Emulator + bridge for `agent_type` (`CX` or `ES`), with `tweak` applied to the
/// bridge's configuration.
pub async fn start(agent_type: &str, tweak: impl FnOnce(&mut HashMap<String, String>)) -> Stack {
    start_with_agent(AGENT, agent_type, tweak).await
}

/// [`start`], with the agent file `agent_yaml`.
pub async fn start_with_agent(
    agent_yaml: &str,
    agent_type: &str,
    tweak: impl FnOnce(&mut HashMap<String, String>),
) -> Stack {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    start_on(listener, agent_yaml, agent_type, tweak).await
}

/// [`start_with_agent`], with the bridge serving on `listener`: for a test that must
/// tell another process the bridge's address before the bridge starts.
pub async fn start_on(
    listener: tokio::net::TcpListener,
    agent_yaml: &str,
    agent_type: &str,
    tweak: impl FnOnce(&mut HashMap<String, String>),
) -> Stack {
    let (emulator, agent) = start_emulator(agent_yaml).await;
    let twilio = MessagesEmulator::start(
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        ACCOUNT_SID,
        AUTH_TOKEN,
    )
    .unwrap();
    let mut vars = stand_ins::demo::local_vars(&agent, &emulator, &twilio, ACCOUNT_SID, AUTH_TOKEN);
    vars.extend(
        [
            ("AGENT_TYPE", agent_type),
            ("SESSION_TTL", "12h"),
            ("AGENT_TIMEOUT", "2s"),
            // The Node sample's behaviour; the asynchronous modes have tests of their own.
            ("REPLY_MODE", "twiml"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    tweak(&mut vars);
    let settings = Settings::from_vars(&vars).expect("test configuration is valid");
    let bridge = RunningBridge::start(&settings, listener)
        .await
        .expect("bridge starts");
    let phone = Phone::new(&bridge.url(), ACCOUNT_SID, AUTH_TOKEN, USER, OUR_NUMBER).unwrap();
    Stack {
        emulator,
        bridge,
        phone,
        twilio,
    }
}

impl Stack {
    pub async fn say(&self, body: &str) -> Vec<ReplyMessage> {
        self.send(&Outgoing {
            body: body.into(),
            ..Default::default()
        })
        .await
    }

    pub async fn send(&self, message: &Outgoing) -> Vec<ReplyMessage> {
        send_from(&self.phone, message).await
    }

    /// The raw answer to the webhook the phone sends for `message`.
    pub async fn post_webhook(&self, message: &Outgoing) -> (u16, String) {
        post_from(&self.phone, &self.bridge.url(), message, &[]).await
    }

    /// Another person, writing to the same number.
    pub fn phone_of(&self, from: &str) -> Phone {
        Phone::new(
            &self.bridge.url(),
            ACCOUNT_SID,
            AUTH_TOKEN,
            from,
            OUR_NUMBER,
        )
        .unwrap()
    }

    pub fn agent_requests(&self) -> Vec<RecordedRequest> {
        self.emulator.requests()
    }

    /// The bridge's `GET /metrics`.
    pub async fn metrics(&self) -> String {
        reqwest::get(format!("{}metrics", self.bridge.url()))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

/// The requests `emulator` has received, once there are at least `count` (within
/// 10 s): the agent has the question, so the turn is under way.
pub async fn agent_asked(emulator: &Emulator, count: usize) -> Vec<RecordedRequest> {
    eventually(
        &format!("{count} request(s) to the agent"),
        Duration::from_secs(10),
        || async { ready_if(emulator.requests(), |asked| asked.len() >= count) },
    )
    .await
}

/// What `phone` gets back for `message`; the bridge must accept it.
pub async fn send_from(phone: &Phone, message: &Outgoing) -> Vec<ReplyMessage> {
    match phone.send(message).await.expect("bridge reachable") {
        PhoneReply::Messages(messages) => messages,
        PhoneReply::Refused { status, reason } => panic!("refused with {status}: {reason}"),
    }
}

/// What `phone` gets back for the text `body`.
pub async fn ask(phone: &Phone, body: &str) -> Vec<ReplyMessage> {
    send_from(
        phone,
        &Outgoing {
            body: body.into(),
            ..Default::default()
        },
    )
    .await
}

pub fn texts(messages: &[ReplyMessage]) -> Vec<&str> {
    messages.iter().map(|m| m.body.as_str()).collect()
}

pub const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");

/// The webhook `phone` sends for `message`, posted to `url` with `headers` besides the
/// form's and the signature: the raw answer.
pub async fn post_from(
    phone: &Phone,
    url: &str,
    message: &Outgoing,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let (params, signature) = phone.webhook(message);
    let mut all = vec![FORM, ("x-twilio-signature", signature.as_str())];
    all.extend_from_slice(headers);
    post(url, &all, params.encode()).await
}

/// A form of `params` posted to `url`, signed with the test account's token as Twilio
/// signs a request it sends to `signed_url`.
pub async fn post_signed(url: &str, signed_url: &str, params: &[(&str, &str)]) -> (u16, String) {
    let params: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let signature = signature::compute(AUTH_TOKEN, signed_url, &params);
    let body = FormParams::from_pairs(params).encode();
    post(url, &[FORM, ("x-twilio-signature", &signature)], body).await
}

/// A raw POST to the bridge, for requests no well-behaved phone would send.
pub async fn post(
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<reqwest::Body>,
) -> (u16, String) {
    let mut request = reqwest::Client::new().post(url).body(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("bridge reachable");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

/// The command under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_twilio-dialogflow");

/// A working directory of a test's own (tests run in parallel in one process), with a
/// `.env` in it; removed at the end of the test.
pub struct WorkDir(pub std::path::PathBuf);

impl WorkDir {
    pub fn with_dotenv(dotenv: &str) -> Self {
        static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "twilio-dialogflow-test-{}-{}",
            std::process::id(),
            RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(".env"), dotenv).unwrap();
        Self(dir)
    }

    /// The command in this directory, with only `envs` in its environment.
    pub fn command(&self, args: &[&str], envs: &[(&str, &str)]) -> std::process::Command {
        let mut command = std::process::Command::new(BIN);
        command
            .args(args)
            .current_dir(&self.0)
            .env_clear()
            .envs(envs.iter().copied());
        command
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process that is killed when the test ends, passed or failed, and the lines
/// it writes to the stream it was started with; the stream is read to its end, so the
/// child never blocks on it nor fails writing to it.
pub struct Running {
    child: std::process::Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
}

/// Which of a child's output streams a test reads.
pub enum Output {
    Stdout,
    Stderr,
}

impl Running {
    pub fn spawn(command: &mut std::process::Command, output: Output) -> Self {
        use std::io::BufRead;
        use std::process::Stdio;
        let mut child = match output {
            Output::Stdout => command.stdout(Stdio::piped()),
            Output::Stderr => command.stderr(Stdio::piped()),
        }
        .spawn()
        .expect("the command starts");
        let stream: Box<dyn std::io::Read + Send> = match output {
            Output::Stdout => Box::new(child.stdout.take().unwrap()),
            Output::Stderr => Box::new(child.stderr.take().unwrap()),
        };
        let (sender, lines) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stream)
                .lines()
                .map_while(Result::ok)
            {
                let _ = sender.send(line);
            }
        });
        Self { child, lines }
    }

    /// Writes `line` to the child's standard input (started with `Stdio::piped()`).
    pub fn write_line(&mut self, line: &str) {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().expect("stdin is piped");
        writeln!(stdin, "{line}").expect("the child reads its input");
        stdin.flush().expect("the child reads its input");
    }

    /// Sends the child `signal` (`TERM`, `KILL`, …), as the platform would.
    pub fn signal(&self, signal: &str) {
        let sent = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success());
    }

    /// The first thing `pick` finds in the lines still to come; panics if the stream
    /// ends, or nothing is found within 30 s.
    pub async fn find_line<T>(&mut self, mut pick: impl FnMut(&str) -> Option<T>) -> T {
        let mut seen = Vec::new();
        let search = async {
            while let Some(line) = self.lines.recv().await {
                if let Some(found) = pick(&line) {
                    return Some(found);
                }
                seen.push(line);
            }
            None
        };
        match tokio::time::timeout(std::time::Duration::from_secs(30), search).await {
            Ok(Some(found)) => found,
            _ => panic!("no such line in:\n{}", seen.join("\n")),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A stand-in for Google's metadata server, telling `project` to whoever asks with the
/// header Google's libraries send.
pub async fn fake_metadata_server(project: &'static str) -> std::net::SocketAddr {
    use axum::http::{HeaderMap, StatusCode};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route(
        "/computeMetadata/v1/project/project-id",
        axum::routing::get(move |headers: HeaderMap| async move {
            match headers.get("metadata-flavor").and_then(|v| v.to_str().ok()) {
                Some("Google") => (StatusCode::OK, project),
                _ => (StatusCode::FORBIDDEN, "missing Metadata-Flavor"),
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// A real `redis-server` on a port of its own, for as long as the test holds it: no
/// persistence, nothing shared with other tests.
pub struct RedisServer {
    pub port: u16,
    child: Option<std::process::Child>,
    /// Extra arguments (TLS), kept for a restart.
    args: Vec<String>,
}

impl RedisServer {
    pub async fn start() -> Self {
        Self::start_with(Vec::new()).await
    }

    /// A server with `args` besides the test's own (which take a port themselves when
    /// `args` name `--tls-port`).
    ///
    /// The port comes from [`free_port`], and another process on the machine (another
    /// run of these tests) may still take it first: the server then says so and stops,
    /// and it is started again on another port. Its own log decides, not a probe of the
    /// port, which could reach whichever server took it.
    pub async fn start_with(args: Vec<String>) -> Self {
        let mut failures = Vec::new();
        for _ in 0..10 {
            let mut server = Self {
                port: free_port(),
                child: None,
                args: args.clone(),
            };
            match server.launch().await {
                Ok(()) => return server,
                Err(failure) => failures.push((server.port, failure)),
            }
        }
        panic!("redis-server did not start on any of ten ports: {failures:#?}");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server again, on the same port (the bridges under test know it), empty.
    pub async fn restart(&mut self) {
        self.stop();
        if let Err(failure) = self.launch().await {
            panic!(
                "redis-server did not start again on port {}: {failure:?}",
                self.port
            );
        }
    }

    /// Starts the server on `self.port` and waits until it says it accepts connections,
    /// or until it stops (the port was taken): then the error is what it wrote.
    async fn launch(&mut self) -> Result<(), Vec<String>> {
        use std::io::BufRead;
        let tls = self.args.iter().any(|a| a == "--tls-port");
        let mut command = std::process::Command::new("redis-server");
        if tls {
            command.args(["--port", "0", "--tls-port", &self.port.to_string()]);
            command.args(self.args.iter().filter(|a| *a != "--tls-port"));
        } else {
            command.args(["--port", &self.port.to_string()]);
            command.args(&self.args);
        }
        let mut child = command
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("redis-server is installed (./test.sh installs it)");
        let log = child.stdout.take().expect("stdout is piped");
        self.child = Some(child);
        // Read to the end, so that the server never blocks writing its log.
        let (sender, mut lines) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(log).lines().map_while(Result::ok) {
                let _ = sender.send(line);
            }
        });
        let mut seen = Vec::new();
        let ready = async {
            while let Some(line) = lines.recv().await {
                if line.contains("Ready to accept connections") {
                    return true;
                }
                seen.push(line);
            }
            // The log ended: the server stopped.
            false
        };
        match tokio::time::timeout(std::time::Duration::from_secs(20), ready).await {
            Ok(true) => Ok(()),
            _ => {
                self.stop();
                Err(seen)
            }
        }
    }

    /// Stops the server, as an outage would.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// How many keys the server holds.
    pub async fn keys(&self, pattern: &str) -> Vec<String> {
        let client = redis::Client::open(self.url()).unwrap();
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        redis::cmd("KEYS")
            .arg(pattern)
            .query_async(&mut connection)
            .await
            .unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A local port nothing listens on now, and that this run of the tests has not handed
/// out before: for a server a test starts as a process of its own (`redis-server`), or
/// an address that must refuse connections.
///
/// Not a port bound to 0 and released: the kernel gives those from its ephemeral range
/// to every `bind(0)` and every outgoing connection, so the servers this run starts in
/// process (each bridge and emulator binds port 0) could take it before the child does.
/// The ports here lie below the ephemeral range, which the kernel never hands out by
/// itself; the set keeps two tests of this run from getting the same one; where each
/// run starts in the range depends on its process id, so two runs on one machine
/// rarely meet, and when they do the child fails to bind and is started again
/// elsewhere ([`RedisServer::start_with`]).
pub fn free_port() -> u16 {
    use std::sync::{Mutex, OnceLock, PoisonError};
    static HANDED_OUT: OnceLock<Mutex<(usize, std::collections::HashSet<u16>)>> = OnceLock::new();
    let (first, end) = ports_the_kernel_does_not_hand_out();
    let span = usize::from(end - first);
    let mut handed_out = HANDED_OUT
        .get_or_init(|| {
            let start = (std::process::id() as usize).wrapping_mul(7919) % span;
            Mutex::new((start, std::collections::HashSet::new()))
        })
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let (next, taken) = &mut *handed_out;
    for _ in 0..span {
        let port = first + (*next % span) as u16;
        *next += 1;
        if taken.contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            taken.insert(port);
            return port;
        }
    }
    panic!("no free local port in {first}..{end}");
}

/// Ports the kernel never hands out by itself: below its ephemeral range
/// (`ip_local_port_range`) from 10000, or above it when it starts too low.
fn ports_the_kernel_does_not_hand_out() -> (u16, u16) {
    let ephemeral: Vec<u16> = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .map(|range| {
            range
                .split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    match ephemeral[..] {
        [start, _] if start >= 12_000 => (10_000, start),
        [_, end] if end <= 63_000 => (end + 1, 65_535),
        // Everything is ephemeral (or unknown): the kernel's usual range leaves these.
        _ => (10_000, 32_768),
    }
}

/// The webhook's port, from the `bridge listening` JSON log line of `serve`.
pub fn listening_port(line: &str) -> Option<u16> {
    let entry: serde_json::Value = serde_json::from_str(line).ok()?;
    (entry["message"] == "bridge listening")
        .then(|| entry["port"].as_u64())?
        .map(|port| port as u16)
}

/// The emulators, and a directory whose `.env` points a bridge at them: for tests that
/// run `serve` as a process (its logs, signals, several instances).
pub struct Local {
    pub emulator: Emulator,
    pub twilio: MessagesEmulator,
    pub dir: WorkDir,
}

impl Local {
    /// With JSON logs, a free port, and `settings` added to the `.env`.
    pub async fn start(settings: &[(&str, &str)]) -> Self {
        Self::with_twilio_password(AUTH_TOKEN, settings).await
    }

    /// As [`Local::start`], with a Messages API that accepts only `password`.
    pub async fn with_twilio_password(password: &str, settings: &[(&str, &str)]) -> Self {
        let (emulator, agent) = start_emulator(AGENT).await;
        let twilio = MessagesEmulator::start(
            tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
            ACCOUNT_SID,
            password,
        )
        .unwrap();
        let mut vars =
            stand_ins::demo::local_vars(&agent, &emulator, &twilio, ACCOUNT_SID, AUTH_TOKEN);
        for (name, value) in [("PORT", "0"), ("LOG_FORMAT", "json")]
            .iter()
            .chain(settings)
        {
            vars.insert(name.to_string(), value.to_string());
        }
        let dotenv: String = vars.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        Self {
            emulator,
            twilio,
            dir: WorkDir::with_dotenv(&dotenv),
        }
    }

    /// `serve` in the directory (after `wrapper`, such as `prlimit --nofile=…`), once it
    /// listens, with a phone that writes to it.
    pub async fn serve(&self, wrapper: &[&str]) -> (Running, Phone) {
        let mut command = match wrapper.split_first() {
            None => self.dir.command(&["serve"], &[]),
            Some((program, args)) => {
                let mut command = std::process::Command::new(program);
                command
                    .args(args)
                    .args([BIN, "serve"])
                    .current_dir(&self.dir.0)
                    .env_clear();
                command
            }
        };
        let mut serve = Running::spawn(&mut command, Output::Stderr);
        let port = serve.find_line(listening_port).await;
        (serve, phone_at(port))
    }
}

/// The test user's phone, writing to a bridge on local `port`.
pub fn phone_at(port: u16) -> Phone {
    Phone::new(
        &format!("http://127.0.0.1:{port}/"),
        ACCOUNT_SID,
        AUTH_TOKEN,
        USER,
        OUR_NUMBER,
    )
    .unwrap()
}

/// Runs `command` to its end off the test's runtime (whose emulators answer it
/// meanwhile): its exit code and standard output.
pub async fn output_of(mut command: std::process::Command) -> (i32, String) {
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}
