//! Many instances, one truth: two `serve` processes sharing one real Redis, in front of
//! the emulators. A message is answered once, a conversation's turns keep their order,
//! owed replies outlive the instance that owed them, and an outage of Redis costs no
//! answer.

use crate::helpers::*;
use stand_ins::chat::{Outgoing, Phone, PhoneReply};
use stand_ins::emulator::Emulator;
use std::time::{Duration, Instant};

/// One `serve` process and a phone that writes to it.
pub(crate) struct Instance {
    pub(crate) serve: Running,
    pub(crate) phone: Phone,
}

/// The emulators, a Redis, and the instances sharing it.
struct Cluster {
    redis: RedisServer,
    instances: Vec<Instance>,
    local: Local,
}

/// Two instances with `REPLY_MODE=reply_mode`, sharing one Redis with a 2 s lease.
async fn cluster(reply_mode: &str) -> Cluster {
    cluster_with(reply_mode, &[("STATE_LEASE", "2s")]).await
}

/// Two instances with `REPLY_MODE=reply_mode` and `settings`, sharing one Redis.
async fn cluster_with(reply_mode: &str, settings: &[(&str, &str)]) -> Cluster {
    let redis = RedisServer::start().await;
    let (local, instances) = instances_on(&redis.url(), reply_mode, settings).await;
    Cluster {
        redis,
        instances,
        local,
    }
}

/// The emulators, and two instances with `REPLY_MODE=reply_mode` and `settings`
/// sharing the store at `url`.
pub(crate) async fn instances_on(
    url: &str,
    reply_mode: &str,
    settings: &[(&str, &str)],
) -> (Local, Vec<Instance>) {
    let mut all = vec![
        ("REPLY_MODE", reply_mode),
        ("REPLY_DEADLINE", "1s"),
        (
            "AGENT_TIMEOUT",
            if reply_mode == "twiml" { "10s" } else { "35s" },
        ),
        ("STATE_URL", url),
    ];
    all.extend_from_slice(settings);
    let local = Local::start(&all).await;
    let mut instances = Vec::new();
    for _ in 0..2 {
        let (serve, phone) = local.serve(&[]).await;
        instances.push(Instance { serve, phone });
    }
    (local, instances)
}

pub(crate) fn says(text: &str, message_sid: &str) -> Outgoing {
    Outgoing {
        body: text.into(),
        message_sid: Some(message_sid.into()),
        ..Default::default()
    }
}

/// The texts the agent was asked, in the order it was asked.
pub(crate) fn asked(emulator: &Emulator) -> Vec<String> {
    emulator
        .requests()
        .iter()
        .filter_map(|r| {
            r.body["queryInput"]["text"]["text"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

pub(crate) async fn webhook(
    instance: &Instance,
    message: &Outgoing,
) -> Vec<bridge::reply::ReplyMessage> {
    match instance
        .phone
        .send(message)
        .await
        .expect("the instance answers")
    {
        PhoneReply::Messages(messages) => messages,
        PhoneReply::Refused { status, reason } => panic!("refused with {status}: {reason}"),
    }
}

#[tokio::test]
async fn a_message_delivered_to_two_instances_is_answered_once() {
    let cluster = cluster("twiml").await;
    let [a, b] = &cluster.instances[..] else {
        panic!()
    };
    // At the same time: the second waits for the first delivery's answer.
    let message = says("a bit slow", "SM0000000000000000000000000000000a");
    let (first, second) = tokio::join!(webhook(a, &message), webhook(b, &message));
    assert_eq!(texts(&first), vec!["Slowly but surely"]);
    assert_eq!(first, second);
    // One after the other: the first delivery's answer, again.
    let message = says("hi", "SM0000000000000000000000000000000b");
    let first = webhook(a, &message).await;
    let again = webhook(b, &message).await;
    assert_eq!(texts(&first), vec!["Hello from the agent"]);
    assert_eq!(first, again);
    assert_eq!(asked(&cluster.local.emulator), vec!["a bit slow", "hi"]);
}

/// On one server, a webhook's admission and its bucket's mark go out in one pipeline:
/// one round trip before the agent is asked, counted as the admission's. The first
/// finds the scripts not yet loaded and sends each alone, which loads them; the mark
/// lands either way (a sweeper would find the conversation).
#[tokio::test]
async fn on_one_server_a_webhook_waits_for_one_round_trip_before_the_agent() {
    let cluster = cluster("twiml").await;
    let a = &cluster.instances[0];
    for sid in [
        "SM00000000000000000000000000000001",
        "SM00000000000000000000000000000002",
        "SM00000000000000000000000000000003",
    ] {
        let replies = webhook(a, &says("hi", sid)).await;
        assert_eq!(texts(&replies), vec!["Hello from the agent"]);
    }
    let metrics = metrics_at(&a.phone.url).await;
    assert!(
        metrics.contains(r#"twilio_dialogflow_state_calls_total{op="admit"} 3"#),
        "{metrics}"
    );
    assert!(!metrics.contains(r#"op="mark""#), "{metrics}");
    let marks = cluster.redis.keys("twilio-dialogflow:{b:*}:marks").await;
    assert_eq!(marks.len(), 1, "{marks:?}");
}

#[tokio::test]
async fn a_conversation_keeps_its_order_across_instances() {
    let cluster = cluster("api").await;
    let [a, b] = &cluster.instances[..] else {
        panic!()
    };
    // The first answer is slow; the second message reaches the other instance while
    // the agent has the first.
    webhook(a, &says("a bit slow", "SM0000000000000000000000000000001a")).await;
    agent_asked(&cluster.local.emulator, 1).await;
    webhook(b, &says("hi", "SM0000000000000000000000000000001b")).await;
    let sent = cluster.local.twilio.wait_for(2).await;
    let bodies: Vec<&str> = sent.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, vec!["Slowly but surely", "Hello from the agent"]);
    assert_eq!(asked(&cluster.local.emulator), vec!["a bit slow", "hi"]);
}

#[tokio::test]
async fn an_instance_killed_with_replies_owed_leaves_them_to_the_other() {
    let mut cluster = cluster("api").await;
    let a = &cluster.instances[0];
    // Owed by the first instance: a slow answer, and a quick one queued behind it.
    webhook(a, &says("slow", "SM0000000000000000000000000000002a")).await;
    webhook(a, &says("hi", "SM0000000000000000000000000000002b")).await;
    agent_asked(&cluster.local.emulator, 1).await;
    // No SIGTERM, no drain: what Cloud Run does to an instance out of memory.
    let killed = Instant::now();
    drop(cluster.instances.remove(0));
    let sent = cluster.local.twilio.wait_for(2).await;
    let took = killed.elapsed();
    let bodies: Vec<&str> = sent.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, vec!["Finally", "Hello from the agent"]);
    // The lease (2 s) runs out, the other instance asks the slow agent again (3 s).
    assert!(took < Duration::from_secs(9), "delivered after {took:?}");
    let b = &mut cluster.instances[0];
    let taken = b
        .serve
        .find_line(|line| {
            line.contains("took over the turn of an instance that died")
                .then_some(())
        })
        .await;
    assert_eq!(taken, ());
    // Every turn finished: nothing is left behind in Redis but the remembered messages.
    turns_finished(&cluster.redis).await;
    // Exactly once: nothing more follows (no turn is left to take over).
    quiet_window(Duration::from_millis(500)).await;
    assert_eq!(cluster.local.twilio.sent().len(), 2);
}

/// Waits (10 s at most) until the store holds no turn: every one finished, none left
/// for an instance to take over and send again.
pub(crate) async fn turns_finished(store: &impl SharedStore) {
    eventually("every turn finished", Duration::from_secs(10), || async {
        ready_if(store.open_turns().await, Vec::is_empty)
    })
    .await;
}

/// User `n`'s number.
pub(crate) fn user(n: usize) -> String {
    format!("+1555000{n:04}")
}

/// A phone of user `n` (its own conversation) writing to `instance`.
pub(crate) fn user_phone(instance: &Instance, n: usize) -> Phone {
    Phone::new(
        &instance.phone.url,
        ACCOUNT_SID,
        AUTH_TOKEN,
        &user(n),
        OUR_NUMBER,
    )
    .unwrap()
}

#[tokio::test]
async fn at_sigterm_owed_replies_are_left_to_the_other_instance_at_once() {
    let redis = RedisServer::start().await;
    at_sigterm_owed_replies_go_to_the_other_instance(&redis, "sigterm").await;
}

/// Two instances on `store`, keys under `prefix`: one stopped with SIGTERM while it
/// owes two replies (one at the agent, one queued behind it) leaves both to the other
/// at once, and each is sent once.
pub(crate) async fn at_sigterm_owed_replies_go_to_the_other_instance(
    store: &impl SharedStore,
    prefix: &str,
) {
    // A lease far longer than the grace: the hand-over must not wait for it to run out.
    let settings = [
        ("STATE_LEASE", "20s"),
        ("SHUTDOWN_GRACE", "1s"),
        ("STATE_PREFIX", prefix),
    ];
    let (local, mut instances) = instances_on(&store.url(), "api", &settings).await;
    let a = &instances[0];
    webhook(a, &says("slow", "SM0000000000000000000000000000006a")).await;
    webhook(a, &says("hi", "SM0000000000000000000000000000006b")).await;
    agent_asked(&local.emulator, 1).await;
    let stopping = Instant::now();
    let mut a = instances.remove(0);
    a.serve.signal("TERM");
    a.serve
        .find_line(|line| {
            line.contains("this message's replies are left to the other instances")
                .then_some(())
        })
        .await;
    let sent = local.twilio.wait_for(2).await;
    let took = stopping.elapsed();
    let bodies: Vec<&str> = sent.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, vec!["Finally", "Hello from the agent"]);
    // Grace (1 s), a sweep (1 s), the slow agent asked again (3 s): not the 20 s lease.
    assert!(took < Duration::from_secs(9), "delivered after {took:?}");
    turns_finished(store).await;
    quiet_window(Duration::from_millis(500)).await;
    assert_eq!(local.twilio.sent().len(), 2);
}

#[tokio::test]
async fn an_outage_of_redis_costs_no_answer_and_dedup_comes_back() {
    let mut cluster = cluster("twiml").await;
    cluster.redis.stop();
    for (i, instance) in cluster.instances.iter().enumerate() {
        let replies = webhook(
            instance,
            &says("hi", &format!("SM00000000000000000000000000003{i:03}")),
        )
        .await;
        assert_eq!(texts(&replies), vec!["Hello from the agent"]);
    }
    cluster.redis.restart().await;
    // Once the instances are connected again, a message delivered to both is answered
    // once again.
    let [a, b] = &cluster.instances[..] else {
        panic!()
    };
    let emulator = &cluster.local.emulator;
    let mut n = 0;
    eventually("deduplication back", Duration::from_secs(15), || {
        n += 1;
        let message = says("hi", &format!("SM00000000000000000000000000004{n:03}"));
        async move {
            let before = asked(emulator).len();
            let first = webhook(a, &message).await;
            let second = webhook(b, &message).await;
            assert_eq!(texts(&first), vec!["Hello from the agent"]);
            assert_eq!(first, second);
            let asked = asked(emulator).len() - before;
            ready_if(asked, |asked| *asked == 1).map_err(|asked| format!("{asked} agent calls"))
        }
    })
    .await;
    // The outage is counted: each instance handled at least one message on its own.
    let metrics = metrics_at(&a.phone.url).await;
    let fallbacks = metrics
        .lines()
        .find_map(|line| line.strip_prefix("twilio_dialogflow_state_fallbacks_total "))
        .and_then(|value| value.trim().parse::<f64>().ok());
    assert!(fallbacks.is_some_and(|n| n >= 1.0), "{metrics}");
}

/// A CA and a server certificate for 127.0.0.1 signed by it, made with openssl in `dir`:
/// a private CA, as Memorystore's in-transit encryption has.
fn certificates(dir: &std::path::Path) {
    certificates_naming(dir, "/CN=127.0.0.1", "IP:127.0.0.1");
}

/// As [`certificates`], the server's certificate with `subject` and `alt_names` (its
/// subjectAltName, as openssl writes it: `IP:10.0.0.3`, `DNS:redis.example`).
pub(crate) fn certificates_naming(dir: &std::path::Path, subject: &str, alt_names: &str) {
    let openssl = |args: &[&str]| {
        let status = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl is installed (./test.sh installs it)");
        assert!(status.success(), "openssl {args:?}");
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        subject,
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(dir.join("san.ext"), format!("subjectAltName={alt_names}\n")).unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "san.ext",
        "-out",
        "server.pem",
    ]);
}

#[tokio::test]
async fn a_tls_store_with_a_private_ca_and_a_password_is_checked_and_used() {
    let dir = WorkDir::with_dotenv("");
    certificates(&dir.0);
    let file = |name: &str| dir.0.join(name).display().to_string();
    let redis = RedisServer::start_tls(&dir.0, &["--requirepass", "s3cret-pass"]).await;
    let url = format!("rediss://default:s3cret-pass@127.0.0.1:{}", redis.port);
    let ca = file("ca.pem");
    // `check` connects and says what it found, without the password.
    let (emulator, _) = start_emulator(AGENT).await;
    let emulator_host = emulator.addr().to_string();
    let mut envs = check_envs(&emulator_host, &url);
    envs.push(("STATE_CA_FILE", &ca));
    let (code, out) = output_of(dir.command(&["check"], &envs)).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("state: Redis 7"), "{out}");
    assert!(out.contains("(TLS), round trip"), "{out}");
    assert!(out.contains("rediss://default:***@127.0.0.1"), "{out}");
    assert!(!out.contains("s3cret-pass"), "{out}");
    // The bridge uses it: a re-delivery is answered from the store.
    let stack = start("CX", |vars| {
        vars.insert("STATE_URL".into(), url.clone());
        vars.insert("STATE_CA_FILE".into(), ca.clone());
    })
    .await;
    let message = says("hi", "SM0000000000000000000000000000005a");
    assert_eq!(
        texts(&stack.send(&message).await),
        vec!["Hello from the agent"]
    );
    assert_eq!(
        texts(&stack.send(&message).await),
        vec!["Hello from the agent"]
    );
    assert_eq!(stack.agent_requests().len(), 1);
    let metrics = stack.metrics().await;
    assert!(!metrics.contains("state_errors_total{"), "{metrics}");
}

#[tokio::test]
async fn a_store_that_is_down_is_reported_by_check() {
    let dir = WorkDir::with_dotenv("");
    let (emulator, _) = start_emulator(AGENT).await;
    let emulator_host = emulator.addr().to_string();
    let url = format!("redis://127.0.0.1:{}", free_port());
    let envs = check_envs(&emulator_host, &url);
    let command = dir.command(&["check"], &envs);
    let (code, out) = output_of(command).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("state: cannot reach the store"), "{out}");
}

#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
struct PendingMenu {
    choices: Vec<String>,
}

impl bridge::state::Record for PendingMenu {
    const KIND: &'static str = "menu";
}

const MENU: bridge::state::Slot<PendingMenu> =
    bridge::state::Slot::new("menu", Duration::from_millis(1500));

/// The typed per-conversation records, on both stores.
#[tokio::test]
async fn conversation_records_are_typed_and_expire_in_both_stores() {
    let redis = RedisServer::start().await;
    let metrics = std::sync::Arc::new(bridge::metrics::Metrics::new());
    let mut vars = std::collections::HashMap::new();
    for (name, value) in [
        ("AGENT_TYPE", "ES"),
        ("GCP_PROJECT", "p"),
        ("TWILIO_ACCOUNT_SID", ACCOUNT_SID),
        ("TWILIO_AUTH_TOKEN", AUTH_TOKEN),
    ] {
        vars.insert(name.to_owned(), value.to_owned());
    }
    let local = bridge::config::Settings::from_vars(&vars).unwrap();
    vars.insert("STATE_URL".into(), redis.url());
    let shared = bridge::config::Settings::from_vars(&vars).unwrap();
    let session = bridge::session::SessionId::for_conversation(
        &local.session_key,
        ACCOUNT_SID,
        USER,
        OUR_NUMBER,
    );
    for settings in [local, shared] {
        let store = open_store(&settings, &metrics).await;
        let menu = PendingMenu {
            choices: vec!["Small".into(), "Large".into()],
        };
        store.set(&MENU, &session, &menu).await;
        assert_eq!(store.get(&MENU, &session).await, Ok(Some(menu)));
        store.remove(&MENU, &session).await;
        assert_eq!(store.get(&MENU, &session).await, Ok(None));
        store
            .set(&MENU, &session, &PendingMenu { choices: vec![] })
            .await;
        if store.is_shared() {
            // In Redis, under the prefix, in its conversation's hash slot (tagged with
            // the session), with no phone number in the key.
            let keys = redis.keys("*").await;
            assert_eq!(keys.len(), 1, "{keys:?}");
            assert_eq!(
                keys[0],
                format!("twilio-dialogflow:{{{}}}:r:menu", session.as_str()),
                "{keys:?}"
            );
            assert!(!keys[0].contains("555"), "{keys:?}");
        }
        // The time passing is what is tested: past the slot's 1.5 s, the record is gone.
        tokio::time::sleep(Duration::from_millis(1600)).await;
        assert_eq!(store.get(&MENU, &session).await, Ok(None), "expired");
    }
    // A record the bridge cannot read is an error, counted, and left as it is.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let key = format!("twilio-dialogflow:{{{}}}:r:menu", session.as_str());
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg(r#"{"v":1,"choices":7}"#)
        .query_async(&mut connection)
        .await
        .unwrap();
    let settings = {
        let mut vars = vars.clone();
        vars.insert("STATE_URL".into(), redis.url());
        bridge::config::Settings::from_vars(&vars).unwrap()
    };
    let store = open_store(&settings, &metrics).await;
    assert!(store.get(&MENU, &session).await.is_err());
    let left: Option<String> = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(left.as_deref(), Some(r#"{"v":1,"choices":7}"#));
    assert!(
        metrics
            .render()
            .contains(r#"state_records_unreadable_total{kind="menu"} 1"#),
        "{}",
        metrics.render()
    );
}

#[tokio::test]
async fn the_rate_limit_holds_across_instances() {
    let redis = RedisServer::start().await;
    the_rate_limit_holds_across_instances_on(&redis, "rate").await;
}

/// Two instances on `store`, keys under `prefix`: a conversation's pace
/// (`RATE_LIMIT_PER_CONVERSATION`) is counted across both.
pub(crate) async fn the_rate_limit_holds_across_instances_on(
    store: &impl SharedStore,
    prefix: &str,
) {
    let settings = [
        ("RATE_LIMIT_PER_CONVERSATION", "2"),
        ("STATE_PREFIX", prefix),
    ];
    let (local, instances) = instances_on(&store.url(), "twiml", &settings).await;
    let [a, b] = &instances[..] else { panic!() };
    let replies = [
        webhook(a, &says("hi", "SM0000000000000000000000000000007a")).await,
        webhook(b, &says("hi", "SM0000000000000000000000000000007b")).await,
        webhook(a, &says("hi", "SM0000000000000000000000000000007c")).await,
        webhook(b, &says("hi", "SM0000000000000000000000000000007d")).await,
    ];
    let shown: Vec<Vec<&str>> = replies.iter().map(|r| texts(r)).collect();
    assert_eq!(
        shown,
        vec![
            vec!["Hello from the agent"],
            vec!["Hello from the agent"],
            vec![bridge::config::DEFAULT_RATE_LIMIT_MESSAGE],
            vec![],
        ]
    );
    assert_eq!(asked(&local.emulator).len(), 2);
}

#[tokio::test]
async fn the_agent_budget_holds_across_instances() {
    let redis = RedisServer::start().await;
    the_agent_budget_holds_across_instances_on(&redis, "budget").await;
}

/// Two instances on `store`, keys under `prefix`: `AGENT_CALLS_PER_HOUR` is one
/// budget for every conversation on every instance.
pub(crate) async fn the_agent_budget_holds_across_instances_on(
    store: &impl SharedStore,
    prefix: &str,
) {
    let settings = [("AGENT_CALLS_PER_HOUR", "2"), ("STATE_PREFIX", prefix)];
    let (local, instances) = instances_on(&store.url(), "twiml", &settings).await;
    let [a, b] = &instances[..] else { panic!() };
    // Four people, each in a conversation of their own, two on each instance.
    let mut shown = Vec::new();
    for (n, instance) in [a, b, b, a].into_iter().enumerate() {
        let message = says("hi", &sid("SM", 0xb0d6_0000 + n as u128));
        match user_phone(instance, n).send(&message).await.unwrap() {
            PhoneReply::Messages(replies) => shown.push(texts(&replies).join("|")),
            refused => panic!("{refused:?}"),
        }
    }
    let limited = bridge::config::DEFAULT_RATE_LIMIT_MESSAGE;
    assert_eq!(
        shown,
        vec![
            "Hello from the agent",
            "Hello from the agent",
            limited,
            limited
        ]
    );
    assert_eq!(asked(&local.emulator).len(), 2);
}

#[tokio::test]
async fn a_store_that_restarts_empty_mid_turn_loses_no_reply() {
    let mut cluster = cluster("api").await;
    let a = &cluster.instances[0];
    webhook(a, &says("slow", "SM0000000000000000000000000000008a")).await;
    agent_asked(&cluster.local.emulator, 1).await;
    // Redis forgets everything while the agent thinks (no persistence, a failover).
    cluster.redis.stop();
    cluster.redis.restart().await;
    let sent = cluster.local.twilio.wait_for(1).await;
    assert_eq!(sent[0].body, "Finally");
    turns_finished(&cluster.redis).await;
    quiet_window(Duration::from_millis(500)).await;
    assert_eq!(cluster.local.twilio.sent().len(), 1, "sent once");
    // The conversation goes on.
    let b = &cluster.instances[1];
    webhook(b, &says("hi", "SM0000000000000000000000000000008b")).await;
    let sent = cluster.local.twilio.wait_for(2).await;
    assert_eq!(sent[1].body, "Hello from the agent");
}

/// The environment of a `check` of the store at `state_url`, for the test agent on the
/// emulator at `emulator_host`.
fn check_envs<'a>(emulator_host: &'a str, state_url: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("AGENT_TYPE", "CX"),
        ("AGENT_ID", "test-agent"),
        ("GCP_PROJECT", "test-project"),
        ("TWILIO_ACCOUNT_SID", ACCOUNT_SID),
        ("TWILIO_AUTH_TOKEN", AUTH_TOKEN),
        ("DIALOGFLOW_EMULATOR_HOST", emulator_host),
        ("STATE_URL", state_url),
    ]
}

/// The bridge's store for `settings`, counting into `metrics`.
async fn open_store(
    settings: &bridge::config::Settings,
    metrics: &std::sync::Arc<bridge::metrics::Metrics>,
) -> bridge::state::StateStore {
    bridge::state::StateStore::open(
        &settings.state,
        settings.rate_limits,
        std::sync::Arc::clone(metrics),
    )
    .await
    .unwrap()
}
