//! The dashboards and alerts of `deploy/monitoring/` name only metrics the bridge serves.
//!
//! The real `serve` runs with `/metrics` on a port of its own (as beside Cloud Run's
//! collector sidecar), answers a few webhooks, and is scraped; every query of every
//! dashboard, alert policy and alerting rule is parsed, and each metric it names must
//! be a series of a family the scrape declares. The files' shapes are checked as their
//! importers read them.

mod files;
mod names;

use crate::helpers::*;
use files::{Alert, Panel, Query};
use names::Exposition;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn repository() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn monitoring(file: &str) -> PathBuf {
    repository().join("deploy/monitoring").join(file)
}

/// Everything `deploy/monitoring/` holds, read and shape-checked.
struct Deployed {
    cloud_dashboard: Vec<Panel>,
    grafana_dashboard: Vec<Panel>,
    policies: Vec<Alert>,
    rules: Vec<Alert>,
}

impl Deployed {
    fn read() -> Self {
        let read = |file: &str| files::read(&monitoring(file)).unwrap_or_else(|e| panic!("{e}"));
        let cloud = "cloud-monitoring/dashboard.json";
        let grafana = "grafana/dashboard.json";
        let rules = "prometheus/rules.yaml";
        let mut policies = Vec::new();
        let mut policy_files: Vec<_> = std::fs::read_dir(monitoring("cloud-monitoring/alerts"))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .collect();
        policy_files.sort();
        for file in &policy_files {
            let name = file
                .strip_prefix(repository())
                .unwrap()
                .display()
                .to_string();
            let json = files::read(file).unwrap_or_else(|e| panic!("{e}"));
            policies.extend(files::alert_policy(&json, &name).unwrap_or_else(|e| panic!("{e}")));
        }
        let deployed = Self {
            cloud_dashboard: files::cloud_monitoring_dashboard(&read(cloud), cloud)
                .unwrap_or_else(|e| panic!("{e}")),
            grafana_dashboard: files::grafana_dashboard(&read(grafana), grafana)
                .unwrap_or_else(|e| panic!("{e}")),
            policies,
            rules: files::prometheus_rules(&read(rules), rules).unwrap_or_else(|e| panic!("{e}")),
        };
        assert!(
            !deployed.policies.is_empty(),
            "no alert policy in {policy_files:?}"
        );
        deployed
    }

    /// Every query of every file, as PromQL (Grafana's interval variables made
    /// durations).
    fn queries(&self) -> Vec<Query> {
        let panels = self.cloud_dashboard.iter().chain(&self.grafana_dashboard);
        let alerts = self.policies.iter().chain(&self.rules);
        panels
            .flat_map(|panel| &panel.queries)
            .chain(alerts.map(|alert| &alert.query))
            .map(|query| Query {
                place: query.place.clone(),
                promql: names::without_grafana_variables(&query.promql)
                    .unwrap_or_else(|e| panic!("{}: {e}", query.place)),
            })
            .collect()
    }
}

/// What is wrong with `queries` against `scrape`: a query that names no metric it can
/// check, or a metric the scrape has not. Empty when every name is served.
fn unknown_metrics(queries: &[Query], scrape: &Exposition) -> Vec<String> {
    let mut problems = Vec::new();
    for query in queries {
        match names::metric_names(&query.promql) {
            Err(problem) => problems.push(format!("{}: `{}` {problem}", query.place, query.promql)),
            Ok(names) if names.is_empty() => problems.push(format!(
                "{}: `{}` names no metric",
                query.place, query.promql
            )),
            Ok(names) => problems.extend(
                names
                    .into_iter()
                    .filter(|name| scrape.family_of(name).is_none())
                    .map(|name| {
                        format!(
                            "{}: names {name}, which /metrics does not have",
                            query.place
                        )
                    }),
            ),
        }
    }
    problems
}

/// The families `queries` read.
fn families_read<'a>(
    queries: impl IntoIterator<Item = &'a Query>,
    scrape: &Exposition,
) -> BTreeSet<String> {
    queries
        .into_iter()
        .flat_map(|query| {
            let promql = names::without_grafana_variables(&query.promql).unwrap();
            names::metric_names(&promql).unwrap()
        })
        .filter_map(|name| scrape.family_of(&name).map(str::to_owned))
        .collect()
}

/// The bridge's metrics, in process, each touched once so that every family shows: for
/// the checks that need no server (the black-box test scrapes a real one).
fn every_family() -> Exposition {
    let metrics = bridge::metrics::Metrics::new();
    metrics.webhook("answered");
    metrics.agent_failed(std::time::Duration::from_millis(5), "UNAVAILABLE".into());
    metrics.reply_failed(Some(401), Some(20003));
    metrics.delivery_failed(Some(30003));
    metrics.state_call("admit");
    metrics.state_call_took("admit", std::time::Duration::from_micros(400));
    metrics.state_error("admit", "timeout");
    metrics.routed("default");
    metrics.rich_sent("quick_reply");
    metrics.menu_as_text("channel");
    metrics.choice_picked("button");
    metrics.tap_unoffered("whatsapp");
    metrics.turn_wait_expired("message");
    metrics.record_unreadable("menu");
    Exposition::parse(&metrics.render())
}

fn prefixed(families: &[&str]) -> BTreeSet<String> {
    families
        .iter()
        .map(|family| format!("twilio_dialogflow_{family}"))
        .collect()
}

#[tokio::test]
async fn every_metric_the_dashboards_and_alerts_name_is_served() {
    // Families whose labels are not known in advance appear with their first event:
    // the shared store's calls and errors, an agent's error, a reply the Messages API
    // refuses (it does not take the bridge's credentials here), a delivery that failed.
    let mut redis = RedisServer::start().await;
    let local = Local::with_twilio_password(
        "not-the-bridge-s-token",
        &[
            ("REPLY_MODE", "api"),
            ("METRICS_PORT", "0"),
            ("STATE_URL", &redis.url()),
        ],
    )
    .await;
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
    ask(&phone, "hi").await;
    ask(&phone, "denied").await;
    let again = stand_ins::chat::Outgoing {
        body: "menu".into(),
        message_sid: Some(sid("SM", 0x24)),
        ..Default::default()
    };
    send_from(&phone, &again).await;
    send_from(&phone, &again).await;
    let status = format!("http://127.0.0.1:{port}/status");
    let delivered = sid("SM", 0x25);
    let callback = [
        ("MessageSid", delivered.as_str()),
        ("MessageStatus", "undelivered"),
        ("ErrorCode", "30003"),
        ("AccountSid", ACCOUNT_SID),
    ];
    assert_eq!(post_signed(&status, &status, &callback).await.0, 200);
    redis.stop();
    ask(&phone, "hi").await;

    let url = format!("http://127.0.0.1:{metrics_port}/");
    let text = eventually(
        "every event counted",
        std::time::Duration::from_secs(20),
        || async {
            let text = metrics_at(&url).await;
            let counted = [
                r#"twilio_dialogflow_replies_failed_total{status="401""#,
                "twilio_dialogflow_deliveries_failed_total{",
                "twilio_dialogflow_state_errors_total{",
                "twilio_dialogflow_agent_errors_total{",
            ]
            .iter()
            .all(|series| text.contains(series));
            ready_if(text, |_| counted)
        },
    )
    .await;
    let scrape = Exposition::parse(&text);
    let deployed = Deployed::read();
    let problems = unknown_metrics(&deployed.queries(), &scrape);
    assert!(
        problems.is_empty(),
        "{problems:#?}\nthe families /metrics has: {:#?}",
        scrape.families()
    );

    // The issue's tiles and alerts are all there.
    let shown = families_read(
        deployed
            .cloud_dashboard
            .iter()
            .flat_map(|panel| &panel.queries),
        &scrape,
    );
    let tiles = prefixed(&[
        "webhooks",
        "agent_latency_seconds",
        "agent_errors",
        "replies_sent",
        "replies_failed",
        "state_calls",
        "state_errors",
        "state_fallbacks",
        "handoff_events",
        "connections_open",
        "connections_closed",
        "rate_limited",
        "duplicates_suppressed",
    ]);
    assert!(
        shown.is_superset(&tiles),
        "missing tiles: {:?}",
        tiles.difference(&shown)
    );
    let alerted = families_read(deployed.policies.iter().map(|alert| &alert.query), &scrape);
    let alerts = prefixed(&[
        "webhooks",
        "agent_latency_seconds",
        "replies_failed",
        "state_fallbacks",
        "handoff_events",
        "connections_closed",
    ]);
    assert!(
        alerted.is_superset(&alerts),
        "missing alerts: {:?}",
        alerts.difference(&alerted)
    );
}

#[test]
fn both_dashboards_show_the_same_panels_and_both_alert_files_the_same_alerts() {
    let deployed = Deployed::read();
    let scrape = every_family();
    let by_title = |panels: &[Panel]| -> BTreeMap<String, BTreeSet<String>> {
        panels
            .iter()
            .map(|panel| (panel.title.clone(), families_read(&panel.queries, &scrape)))
            .collect()
    };
    assert_eq!(
        by_title(&deployed.cloud_dashboard),
        by_title(&deployed.grafana_dashboard),
        "the Cloud Monitoring and Grafana dashboards differ"
    );
    assert_eq!(
        deployed.cloud_dashboard.len(),
        by_title(&deployed.cloud_dashboard).len(),
        "two tiles have one title"
    );
    let by_name = |alerts: &[Alert]| -> BTreeMap<String, BTreeSet<String>> {
        alerts
            .iter()
            .map(|alert| (alert.name.clone(), families_read([&alert.query], &scrape)))
            .collect()
    };
    assert_eq!(
        by_name(&deployed.policies),
        by_name(&deployed.rules),
        "the alert policies and the Prometheus rules differ"
    );
    assert_eq!(deployed.policies.len(), by_name(&deployed.policies).len());
}

#[test]
fn every_alert_says_what_to_do_and_its_links_lead_somewhere() {
    let deployed = Deployed::read();
    for alert in deployed.policies.iter().chain(&deployed.rules) {
        assert!(
            alert.documentation.len() > 80,
            "{}: says too little to act on",
            alert.query.place
        );
        for (file, anchor) in names::doc_links(&alert.documentation) {
            let markdown = std::fs::read_to_string(repository().join(&file))
                .unwrap_or_else(|e| panic!("{}: links {file}: {e}", alert.query.place));
            assert!(
                names::heading_anchors(&markdown).contains(&anchor),
                "{}: links {file}#{anchor}, which has no such heading",
                alert.query.place
            );
        }
    }
}

#[test]
fn a_dashboard_naming_a_metric_that_does_not_exist_fails_the_check() {
    let scrape = every_family();
    let file = "cloud-monitoring/dashboard.json";
    let text = std::fs::read_to_string(monitoring(file)).unwrap();
    let read = |text: &str| {
        let json = serde_json::from_str(text).unwrap();
        let panels = files::cloud_monitoring_dashboard(&json, file).unwrap();
        let queries: Vec<Query> = panels.into_iter().flat_map(|panel| panel.queries).collect();
        unknown_metrics(&queries, &scrape)
    };
    assert_eq!(read(&text), Vec::<String>::new());

    // One letter lost, as a rename in the code would leave it.
    let misspelt = text.replace(
        "twilio_dialogflow_webhooks_total",
        "twilio_dialogflow_webhook_total",
    );
    assert_ne!(misspelt, text);
    let problems = read(&misspelt);
    assert!(
        !problems.is_empty()
            && problems
                .iter()
                .all(|problem| problem.contains("twilio_dialogflow_webhook_total")),
        "{problems:#?}"
    );
}

#[test]
fn the_sidecar_scrapes_the_port_the_guide_gives_metrics() {
    let file = "cloud-monitoring/sidecar-config.yaml";
    let config = files::read(&monitoring(file)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        config["apiVersion"], "monitoring.googleapis.com/v1beta",
        "{file}"
    );
    assert_eq!(config["kind"], "RunMonitoring", "{file}");
    let endpoints = config["spec"]["endpoints"].as_array().expect("endpoints");
    assert_eq!(endpoints.len(), 1, "{file}");
    assert_eq!(endpoints[0]["path"], "/metrics", "{file}");
    let port = endpoints[0]["port"].as_u64().expect("a port number");
    let guide = std::fs::read_to_string(repository().join("docs/monitoring.md")).unwrap();
    assert!(
        guide.contains(&format!("METRICS_PORT: \"{port}\"")),
        "docs/monitoring.md sets another METRICS_PORT than {file} scrapes ({port})"
    );
}
