//! Erasing a person (`POST /privacy/erase`, `twilio-dialogflow erase`), through real
//! `serve` processes in front of the emulator, the Messages API stand-in and a recording
//! helpdesk, on this process's store and on a real Redis shared by two instances.
//!
//! Two people write: the first has a pending menu and an outbound message; the second
//! has a numbered menu, a hand-over the desk answers with an idempotency key, outbound
//! messages with their statuses and idempotency keys, and then sends STOP. The second
//! is erased: nothing in the store names them or is derived from them (but the
//! opt-out, under their keyed conversation id), the first is untouched, the opt-out
//! still refuses an outbound message, the desk hears `person.erased`, a bad token
//! changes nothing, and a second erasure removes nothing.

use crate::handoff::{Desk, SECRET, TOKEN as HANDOFF_TOKEN};
use crate::helpers::*;
use crate::outbound::{post_outbound_at, OUTBOUND_TOKEN};
use bridge::session::{SessionId, SessionKey};
use serde_json::{json, Value};
use stand_ins::chat::Phone;
use std::collections::BTreeMap;
use std::time::Duration;

const PRIVACY_TOKEN: &str = "privacy-token-0123456789";
/// The person erased.
const ERASED: &str = "+15551230002";
/// Their number as any store or log would show it, whatever the prefix.
const ERASED_DIGITS: &str = "5551230002";

const AGENT: &str = r#"
project: privacy-project
location: global
agent_id: privacy-agent
language: en
intents:
  - name: hello
    phrases: ["hello"]
    replies: [{ text: "Hello" }]
  - name: order
    phrases: ["order"]
    replies:
      - payload:
          body: "What size?"
          choices:
            - { title: Small, value: "small" }
            - { title: Large, value: "large" }
  - name: size
    phrases: ["small", "large"]
    replies: [{ text: "Noted" }]
  - name: human
    phrases: ["talk to a person"]
    replies:
      - text: "Getting a person"
      - handoff: { queue: billing }
fallback:
  replies: [{ text: "Not understood" }]
"#;

/// The bridge's instances under test, and what they run in front of.
struct Bridges {
    local: Local,
    /// `serve` processes: one on this process's store, two sharing a Redis.
    instances: Vec<(Running, String)>,
    desk: Desk,
}

impl Bridges {
    async fn start(store: &[(&str, &str)], count: usize) -> Self {
        let (desk, desk_url) = Desk::start().await;
        let mut settings = vec![
            ("REPLY_MODE", "api"),
            ("AGENT_TIMEOUT", "5s"),
            ("OUTBOUND_TOKEN", OUTBOUND_TOKEN),
            ("HANDOFF_URL", desk_url.as_str()),
            ("HANDOFF_SECRET", SECRET),
            ("HANDOFF_TOKEN", HANDOFF_TOKEN),
            ("PRIVACY_TOKEN", PRIVACY_TOKEN),
        ];
        settings.extend_from_slice(store);
        let local = Local::with_agent(AGENT, &settings).await;
        let mut instances = Vec::new();
        for _ in 0..count {
            let (serve, port) = local.serve_on_port(&[]).await;
            instances.push((serve, format!("http://127.0.0.1:{port}/")));
        }
        Self {
            local,
            instances,
            desk,
        }
    }

    /// The base URL of instance `n`, ending in `/`.
    fn url(&self, n: usize) -> &str {
        &self.instances[n % self.instances.len()].1
    }

    fn phone(&self, n: usize, person: &str) -> Phone {
        Phone::new(self.url(n), ACCOUNT_SID, AUTH_TOKEN, person, OUR_NUMBER).unwrap()
    }

    /// `person` writes `text` to instance `n`; waits for `replies` more messages sent
    /// through the Messages API.
    async fn says(&self, n: usize, person: &str, text: &str, replies: usize) {
        self.says_with(n, person, text, &[], replies).await;
    }

    async fn says_with(
        &self,
        n: usize,
        person: &str,
        text: &str,
        params: &[(&str, &str)],
        replies: usize,
    ) {
        let before = self.local.twilio.sent().len();
        let (status, answer) = post_from(
            &self.phone(n, person),
            self.url(n),
            &with(text, params),
            &[],
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        self.local.twilio.wait_for(before + replies).await;
    }

    async fn erase(&self, n: usize, token: Option<&str>, body: Value) -> (u16, Value) {
        let mut request = reqwest::Client::new()
            .post(format!("{}privacy/erase", self.url(n)))
            .json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn outbound(&self, n: usize, to: &str, key: Option<&str>) -> (u16, Value) {
        let headers: Vec<(&str, &str)> = key.map(|k| ("idempotency-key", k)).into_iter().collect();
        let body = json!({"to": to, "from": OUR_NUMBER, "text": "Your order shipped"});
        post_outbound_at(
            self.url(n),
            Some(OUTBOUND_TOKEN),
            &headers,
            &body.to_string(),
        )
        .await
    }

    /// `GET /outbound/{id}`: status and answer.
    async fn report(&self, n: usize, id: &str) -> (u16, Value) {
        let response = reqwest::Client::new()
            .get(format!("{}outbound/{id}", self.url(n)))
            .bearer_auth(OUTBOUND_TOKEN)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// An outbound text to `to`, once Twilio reported it delivered: its id.
    async fn delivered(&self, n: usize, to: &str, key: &str) -> String {
        let (status, answer) = self.outbound(n, to, Some(key)).await;
        assert_eq!(status, 202, "{answer}");
        let id = answer["id"].as_str().unwrap().to_owned();
        eventually(
            &format!("outbound {id} delivered"),
            Duration::from_secs(10),
            || async {
                let (_, report) = self.report(n, &id).await;
                ready_if(report, |r| {
                    matches!(r["status"].as_str(), Some("delivered" | "read"))
                })
            },
        )
        .await;
        id
    }
}

/// Runs `command` to its end: its exit code, and what it wrote to both streams.
async fn run(mut command: std::process::Command) -> (i32, String) {
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    (output.status.code().unwrap_or(-1), text)
}

fn key() -> SessionKey {
    SessionKey::derived_from_auth_token(AUTH_TOKEN)
}

/// Every id the bridge derives from `person` on the test account: their conversations
/// with our number on SMS and WhatsApp, and their own id.
fn ids_of(person: &str) -> Vec<SessionId> {
    let whatsapp = format!("whatsapp:{person}");
    let mut ids = Vec::new();
    for from in [person, whatsapp.as_str()] {
        for to in [OUR_NUMBER.to_owned(), format!("whatsapp:{OUR_NUMBER}")] {
            ids.push(SessionId::for_conversation(&key(), ACCOUNT_SID, from, &to));
        }
        ids.push(SessionId::for_person(&key(), ACCOUNT_SID, from));
    }
    ids
}

/// Whether `text` holds the erased person's number or an id derived from it.
fn derived_from_erased(text: &str) -> bool {
    text.contains(ERASED_DIGITS) || ids_of(ERASED).iter().any(|id| text.contains(id.as_str()))
}

fn conversation_of(person: &str) -> SessionId {
    SessionId::for_conversation(&key(), ACCOUNT_SID, person, OUR_NUMBER)
}

/// Both people's data, as the scenario makes it: the outbound ids of the first person
/// and of the erased one.
async fn make_data(bridges: &Bridges) -> (String, String) {
    // The first person: a pending menu, and an outbound message.
    bridges.says(0, USER, "order", 1).await;
    let kept = bridges.delivered(1, USER, "order-1-shipped").await;
    // The erased person: a numbered menu, then a hand-over the desk answers with an
    // idempotency key, outbound messages with statuses and keys, and STOP.
    bridges.says(1, ERASED, "order", 1).await;
    bridges.says(0, ERASED, "talk to a person", 1).await;
    let events = bridges.desk.wait_for(1).await;
    let conversation = events[0]["conversation"].as_str().unwrap().to_owned();
    assert_eq!(conversation, conversation_of(ERASED).as_str());
    let before = bridges.local.twilio.sent().len();
    let response = reqwest::Client::new()
        .post(format!("{}handoff/{conversation}/messages", bridges.url(1)))
        .bearer_auth(HANDOFF_TOKEN)
        .header("idempotency-key", "desk-reply-1")
        .json(&json!({"text": "Hi, this is Ana from billing"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    bridges.local.twilio.wait_for(before + 1).await;
    bridges.says(1, ERASED, "my bill is wrong", 0).await;
    bridges.desk.wait_for(2).await;
    let erased = bridges.delivered(0, ERASED, "order-2-shipped").await;
    bridges
        .says_with(0, ERASED, "STOP", &[("OptOutType", "STOP")], 0)
        .await;
    // The STOP ended the hand-over: the desk heard it.
    eventually("handoff.ended", Duration::from_secs(10), || async {
        ready_if(bridges.desk.kinds(), |kinds| {
            kinds.contains(&"handoff.ended".to_owned())
        })
    })
    .await;
    (kept, erased)
}

/// The scenario's checks on both stores; `redis`, when the store is shared, to scan.
async fn erase_scenario(bridges: &Bridges, redis: Option<Shared<'_>>) {
    let (kept, erased) = make_data(bridges).await;
    let dump_before = match &redis {
        Some(redis) => Some(dump(redis).await),
        None => None,
    };

    // A missing or wrong token changes nothing.
    for token in [
        None,
        Some("privacy-token-0123456789x"),
        Some(OUTBOUND_TOKEN),
    ] {
        let (status, answer) = bridges.erase(1, token, json!({"person": ERASED})).await;
        assert_eq!(status, 401, "{token:?}: {answer}");
    }
    let (status, answer) = bridges
        .erase(1, Some(PRIVACY_TOKEN), json!({"who": ERASED}))
        .await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (400, Some("unknown_field"))
    );
    assert!(!answer.to_string().contains(ERASED_DIGITS), "{answer}");
    if let (Some(redis), Some(before)) = (&redis, &dump_before) {
        let person = |dump: &BTreeMap<String, String>| -> BTreeMap<String, String> {
            dump.iter()
                .filter(|(k, v)| derived_from_erased(k) || derived_from_erased(v))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        let before = person(before);
        assert!(!before.is_empty());
        assert_eq!(
            person(&dump(redis).await),
            before,
            "refused calls changed the store"
        );
    }
    assert_eq!(bridges.report(0, &erased).await.0, 200, "still there");

    // The erasure.
    let events_before = bridges.desk.events().len();
    let (status, answer) = bridges
        .erase(1, Some(PRIVACY_TOKEN), json!({"person": ERASED}))
        .await;
    assert_eq!(status, 200, "{answer}");
    let removed: BTreeMap<String, u64> = serde_json::from_value(answer["removed"].clone()).unwrap();
    for kind in [
        "handoff_records",
        "last_message_times",
        "outbound_requests",
        "outbound_statuses",
        "idempotency_entries",
    ] {
        assert!(
            removed.get(kind).is_some_and(|n| *n > 0),
            "{kind}: {answer}"
        );
    }
    assert_eq!(answer["opt_out_kept"], true, "{answer}");
    assert!(answer["total"].as_u64().unwrap() > 0);
    assert!(!answer.to_string().contains(ERASED_DIGITS), "{answer}");

    // The desk hears it, by conversation id, never the number.
    let events = bridges.desk.wait_for(events_before + 1).await;
    let erasures: Vec<&Value> = events[events_before..]
        .iter()
        .filter(|e| e["type"] == "person.erased")
        .collect();
    assert_eq!(erasures.len(), 1, "{events:?}");
    assert_eq!(
        erasures[0]["conversation"],
        conversation_of(ERASED).as_str()
    );
    assert!(!erasures[0].to_string().contains(ERASED_DIGITS));

    if let Some(redis) = &redis {
        let after = dump(redis).await;
        let derived: Vec<String> = ids_of(ERASED)
            .iter()
            .map(|id| id.as_str().to_owned())
            .collect();
        let opted_out = format!("{{{}}}:r:opted_out", conversation_of(ERASED));
        for (key, value) in &after {
            assert!(
                !key.contains(ERASED_DIGITS) && !value.contains(ERASED_DIGITS),
                "the number is still in {key}: {value}"
            );
            for id in &derived {
                let kept_opt_out = key.ends_with(&opted_out);
                assert!(
                    kept_opt_out || (!key.contains(id.as_str()) && !value.contains(id.as_str())),
                    "{key} is derived from the person: {value}"
                );
            }
        }
        assert!(
            after.keys().any(|k| k.ends_with(&opted_out)),
            "the opt-out is kept: {:?}",
            after.keys().collect::<Vec<_>>()
        );
        // The first person's records are all still there.
        let first = conversation_of(USER);
        let of_first: Vec<&String> = after
            .keys()
            .filter(|k| k.contains(first.as_str()))
            .collect();
        let before = dump_before.unwrap();
        let of_first_before: Vec<&String> = before
            .keys()
            .filter(|k| k.contains(first.as_str()))
            .collect();
        assert!(of_first_before.iter().any(|k| k.ends_with(":r:menu")));
        for key in of_first_before {
            assert!(of_first.contains(&key), "{key} of the other person went");
        }
    }

    // Again: nothing is left to remove, and the answer says so.
    let (status, again) = bridges
        .erase(0, Some(PRIVACY_TOKEN), json!({"person": ERASED}))
        .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["total"], 0, "{again}");
    assert_eq!(again["removed"], json!({}), "{again}");
    assert!(again["message"].as_str().unwrap().starts_with("nothing"));

    // What the bridge answers about them now: no hand-over, no outbound request.
    assert_eq!(bridges.report(0, &erased).await.0, 404);
    let response = reqwest::Client::new()
        .post(format!(
            "{}handoff/{}/end",
            bridges.url(0),
            conversation_of(ERASED)
        ))
        .bearer_auth(HANDOFF_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 404, "no hand-over is left");
    // The other person's data is untouched.
    assert_eq!(bridges.report(1, &kept).await.0, 200);

    // The opt-out still holds: an outbound message to them is refused.
    let (status, answer) = bridges.outbound(0, ERASED, None).await;
    assert_eq!((status, &answer["error"]), (409, &json!("opted_out")));
}

/// The shared store under test: one server, or a cluster.
enum Shared<'a> {
    Server(&'a RedisServer),
    Cluster(&'a RedisCluster),
}

/// Every key of the store and its value, as text (each type read as it is), read
/// from the node that holds it.
async fn dump(store: &Shared<'_>) -> BTreeMap<String, String> {
    let by_node = match store {
        Shared::Server(redis) => vec![(redis.port, redis.keys("*").await)],
        Shared::Cluster(cluster) => cluster.keys_by_master("*").await,
    };
    let mut all = BTreeMap::new();
    for (port, keys) in by_node {
        all.extend(dump_node(port, keys).await);
    }
    all
}

async fn dump_node(port: u16, keys: Vec<String>) -> BTreeMap<String, String> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let mut all = BTreeMap::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(&mut connection)
            .await
            .unwrap();
        let command = match kind.as_str() {
            "string" => redis::cmd("GET").arg(&key).clone(),
            "hash" => redis::cmd("HGETALL").arg(&key).clone(),
            "set" => redis::cmd("SMEMBERS").arg(&key).clone(),
            "zset" => redis::cmd("ZRANGE")
                .arg(&key)
                .arg(0)
                .arg(-1)
                .arg("WITHSCORES")
                .clone(),
            "list" => redis::cmd("LRANGE").arg(&key).arg(0).arg(-1).clone(),
            "none" => continue,
            other => panic!("a key of a type the bridge does not write: {other}"),
        };
        let value: redis::Value = command.query_async(&mut connection).await.unwrap();
        all.insert(key, format!("{value:?}"));
    }
    all
}

#[tokio::test]
async fn erasing_a_person_on_this_processs_store() {
    let bridges = Bridges::start(&[], 1).await;
    erase_scenario(&bridges, None).await;

    // The command line, against the running bridge: a bad token is a clear error; the
    // right one erases what is left (the refused request the scenario ended with),
    // then nothing.
    let erase = |token: &str| {
        bridges.local.dir.command(
            &["erase", ERASED, "--url", bridges.url(0)],
            &[("PRIVACY_TOKEN", token)],
        )
    };
    let (code, output) = run(erase("privacy-token-wrong-0000")).await;
    assert_ne!(code, 0, "{output}");
    assert!(output.contains("refused PRIVACY_TOKEN"), "{output}");
    let (code, output) = run(erase(PRIVACY_TOKEN)).await;
    assert_eq!(code, 0, "{output}");
    assert!(output.contains("outbound_requests"), "{output}");
    assert!(output.contains("opt-out was kept"), "{output}");
    let (code, output) = run(erase(PRIVACY_TOKEN)).await;
    assert_eq!(code, 0, "{output}");
    assert!(
        output.contains("Nothing was kept of this person"),
        "{output}"
    );
    assert!(!output.contains(ERASED_DIGITS), "{output}");
}

#[tokio::test]
async fn erasing_a_person_on_a_shared_store_across_instances() {
    let redis = RedisServer::start().await;
    let url = redis.url();
    let bridges = Bridges::start(&[("STATE_URL", url.as_str())], 2).await;
    erase_scenario(&bridges, Some(Shared::Server(&redis))).await;
}

#[tokio::test]
async fn erasing_a_person_on_a_redis_cluster() {
    let cluster = RedisCluster::start().await;
    let url = cluster.url_not_holding(&stored_message_key("SM")).await;
    let bridges = Bridges::start(&[("STATE_URL", url.as_str())], 2).await;
    erase_scenario(&bridges, Some(Shared::Cluster(&cluster))).await;
}

#[tokio::test]
async fn without_a_privacy_token_there_is_no_endpoint() {
    let local = Local::with_agent(AGENT, &[]).await;
    let (_serve, port) = local.serve_on_port(&[]).await;
    let url = format!("http://127.0.0.1:{port}/");
    let response = reqwest::Client::new()
        .post(format!("{url}privacy/erase"))
        .bearer_auth(PRIVACY_TOKEN)
        .json(&json!({"person": ERASED}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 404);
    let (code, output) = run(local.dir.command(
        &["erase", ERASED, "--url", &url],
        &[("PRIVACY_TOKEN", PRIVACY_TOKEN)],
    ))
    .await;
    assert_ne!(code, 0, "{output}");
    assert!(output.contains("no /privacy/erase (404)"), "{output}");
}
