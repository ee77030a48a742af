//! Traces and the logs joined to them: a real `serve` exporting to a local OTLP
//! receiver, and its Cloud Logging lines.

use crate::helpers::*;
use opentelemetry_proto::tonic::trace::v1::Span;

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn named<'a>(spans: &'a [Span], name: &str) -> Vec<&'a Span> {
    spans.iter().filter(|s| s.name == name).collect()
}

fn one<'a>(spans: &'a [Span], name: &str) -> &'a Span {
    let found = named(spans, name);
    assert_eq!(found.len(), 1, "one {name} span in {spans:#?}");
    found[0]
}

#[tokio::test]
async fn a_webhook_continues_its_callers_trace_and_its_api_reply_links_back_to_it() {
    let receiver = OtlpReceiver::start().await;
    let local = Local::start(&[
        ("REPLY_MODE", "api"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.endpoint()),
    ])
    .await;
    let (mut serve, phone) = local.serve(&[]).await;
    let traceparent = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    // The agent fails twice, then answers: its retries are events of its span.
    let (status, _) = post_from(
        &phone,
        &phone.url,
        &says("flaky"),
        &[("traceparent", &traceparent)],
    )
    .await;
    assert_eq!(status, 200);
    let sent = local.twilio.wait_for(1).await;
    assert_eq!(sent[0].body, "Worked after retries");
    // The spans still in the batch are sent at shutdown.
    serve.signal("TERM");
    assert!(serve.exited().await.success());
    let spans = receiver
        .wait_for(|spans| {
            !named(spans, "webhook").is_empty()
                && !named(spans, "twilio.messages.create").is_empty()
        })
        .await;

    let webhook = one(&spans, "webhook");
    assert_eq!(hex(&webhook.trace_id), CALLER_TRACE);
    assert_eq!(
        hex(&webhook.parent_span_id),
        CALLER_SPAN,
        "the caller's span is the parent"
    );
    for step in ["verify", "admission"] {
        let span = one(&spans, step);
        assert_eq!(hex(&span.trace_id), CALLER_TRACE, "{step}");
        assert_eq!(
            span.parent_span_id, webhook.span_id,
            "{step} is the webhook's"
        );
    }
    assert_eq!(
        attribute(one(&spans, "admission"), "state.store"),
        Some("local")
    );

    // The reply goes on after the webhook answered: a trace of its own, linked.
    let reply = one(&spans, "reply");
    assert_ne!(hex(&reply.trace_id), CALLER_TRACE);
    assert!(reply.parent_span_id.is_empty(), "a root");
    assert!(
        reply
            .links
            .iter()
            .any(|l| hex(&l.trace_id) == CALLER_TRACE && l.span_id == webhook.span_id),
        "linked to the webhook: {:?}",
        reply.links
    );
    let agent = one(&spans, "agent");
    assert_eq!(agent.trace_id, reply.trace_id);
    assert_eq!(attribute(agent, "agent.kind"), Some("cx"));
    assert!(attribute(agent, "route").is_some_and(|r| !r.is_empty()));
    let retries = agent.events.iter().filter(|e| e.name == "retry").count();
    assert_eq!(retries, 2, "{:?}", agent.events);
    for step in ["render", "twilio.messages.create"] {
        assert_eq!(one(&spans, step).trace_id, reply.trace_id, "{step}");
    }
    assert_eq!(
        attribute(one(&spans, "twilio.messages.create"), "message.kind"),
        Some("text")
    );

    // Neither the person's words nor the agent's, nor a phone number, in any value.
    let values = receiver.attribute_values();
    assert!(
        values.iter().any(|v| v == "twilio-dialogflow"),
        "the service's name"
    );
    for secret in ["flaky", "Worked after retries", "5551230001", "5557770000"] {
        assert!(
            !values.iter().any(|v| v.contains(secret)),
            "{secret:?} in {values:?}"
        );
    }
}

#[tokio::test]
async fn log_lines_name_the_requests_trace_with_export_off_and_nothing_is_sent() {
    let receiver = OtlpReceiver::start().await;
    // The project the bridge runs in, as the metadata server tells, wins over the
    // agent's (GCP_PROJECT).
    let metadata = fake_metadata_server("run-project").await;
    let local = Local::start(&[
        ("GCE_METADATA_HOST", &metadata.to_string()),
        // Where spans would go; the specification's switch turns export off.
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.endpoint()),
        ("OTEL_TRACES_EXPORTER", "none"),
    ])
    .await;
    let (mut serve, phone) = local.serve(&[]).await;
    let trace = "105445aa7843bc8bf206b12000100000";
    let (status, body) = post_from(
        &phone,
        &phone.url,
        &says("hi"),
        &[("x-cloud-trace-context", &format!("{trace}/123;o=1"))],
    )
    .await;
    assert_eq!(status, 200);
    assert!(body.contains("Hello from the agent"), "{body}");
    let handled = |line: &str| {
        let entry: serde_json::Value = serde_json::from_str(line).ok()?;
        (entry["message"] == "webhook handled").then_some(entry)
    };
    let entry = serve.find_line(handled).await;
    assert_eq!(
        entry["logging.googleapis.com/trace"],
        format!("projects/run-project/traces/{trace}")
    );
    assert_eq!(
        entry["logging.googleapis.com/spanId"],
        format!("{:016x}", 123)
    );
    assert_eq!(entry["logging.googleapis.com/trace_sampled"], true);

    // A malformed header: the webhook is answered, in a new trace.
    let (status, _) = post_from(
        &phone,
        &phone.url,
        &says("hi"),
        &[("traceparent", "00-not-a-trace-01")],
    )
    .await;
    assert_eq!(status, 200);
    let entry = serve.find_line(handled).await;
    let fresh = entry["logging.googleapis.com/trace"].as_str().unwrap();
    assert!(fresh.starts_with("projects/run-project/traces/"), "{fresh}");
    assert!(!fresh.ends_with(trace));
    assert_eq!(
        entry["logging.googleapis.com/spanId"]
            .as_str()
            .unwrap()
            .len(),
        16
    );

    serve.signal("TERM");
    assert!(serve.exited().await.success());
    assert_eq!(receiver.connections(), 0, "nothing was sent");
}

#[tokio::test]
async fn the_always_off_sampler_sends_no_spans() {
    let receiver = OtlpReceiver::start().await;
    let local = Local::start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.endpoint()),
        ("OTEL_TRACES_SAMPLER", "always_off"),
    ])
    .await;
    let (mut serve, phone) = local.serve(&[]).await;
    let traceparent = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    let (status, body) = post_from(
        &phone,
        &phone.url,
        &says("hi"),
        &[("traceparent", &traceparent)],
    )
    .await;
    assert_eq!(status, 200);
    assert!(body.contains("Hello from the agent"), "{body}");
    serve.signal("TERM");
    assert!(serve.exited().await.success());
    assert!(receiver.spans().is_empty(), "{:#?}", receiver.spans());
}

#[tokio::test]
async fn a_turn_taken_over_by_another_instance_links_back_to_the_webhook_that_started_it() {
    let redis = RedisServer::start().await;
    let receiver = OtlpReceiver::start().await;
    let endpoint = receiver.endpoint();
    // A lease far longer than the grace: the other instance takes the turn over when
    // the first lets it go at SIGTERM.
    let settings = [
        ("STATE_LEASE", "20s"),
        ("SHUTDOWN_GRACE", "1s"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
    ];
    let (local, mut instances) =
        crate::shared_state::instances_on(&redis.url(), "api", &settings).await;
    let traceparent = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    let first = &instances[0];
    // The agent takes seconds to answer "slow": the first instance stops meanwhile.
    let (status, _) = post_from(
        &first.phone,
        &first.phone.url,
        &crate::shared_state::says("slow", &sid("SM", 0x7a)),
        &[("traceparent", &traceparent)],
    )
    .await;
    assert_eq!(status, 200);
    let mut first = instances.remove(0);
    first.serve.signal("TERM");
    assert!(first.serve.exited().await.success());
    let sent = local.twilio.wait_for(1).await;
    assert_eq!(sent[0].body, "Finally");
    let mut second = instances.remove(0);
    second.serve.signal("TERM");
    assert!(second.serve.exited().await.success());

    let spans = receiver
        .wait_for(|spans| {
            !named(spans, "webhook").is_empty() && !named(spans, "takeover").is_empty()
        })
        .await;
    let webhook = one(&spans, "webhook");
    assert_eq!(hex(&webhook.trace_id), CALLER_TRACE);
    let takeover = one(&spans, "takeover");
    assert!(
        takeover
            .links
            .iter()
            .any(|l| hex(&l.trace_id) == CALLER_TRACE && l.span_id == webhook.span_id),
        "linked to the first instance's webhook: {:?}",
        takeover.links
    );
    let sent_by = named(&spans, "twilio.messages.create");
    assert!(
        sent_by.iter().any(|s| s.trace_id == takeover.trace_id),
        "the reply was sent in the takeover's trace"
    );
}

/// A status callback and a call to the hand-over API each run in a span of their own,
/// continuing the caller's trace when it sends one (Twilio's callbacks send none; a
/// helpdesk or a proxy may); a call the token refuses is traced too.
#[tokio::test]
async fn status_callbacks_and_the_hand_over_api_are_traced() {
    let receiver = OtlpReceiver::start().await;
    let local = Local::start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.endpoint()),
        ("HANDOFF_URL", "http://127.0.0.1:9/events"),
        ("HANDOFF_SECRET", crate::handoff::SECRET),
        ("HANDOFF_TOKEN", crate::handoff::TOKEN),
    ])
    .await;
    let (mut serve, phone) = local.serve(&[]).await;
    let traceparent = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");

    let status_url = format!("{}status", phone.url);
    let params: Vec<(String, String)> = [
        ("MessageSid", "SM0000000000000000000000000000000c"),
        ("AccountSid", ACCOUNT_SID),
        ("MessageStatus", "delivered"),
        ("To", USER),
        ("From", OUR_NUMBER),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let signature = bridge::twilio::signature::compute(AUTH_TOKEN, &status_url, &params);
    let body = bridge::twilio::webhook::FormParams::from_pairs(params).encode();
    let (status, _) = post(
        &status_url,
        &[
            FORM,
            ("x-twilio-signature", &signature),
            ("traceparent", &traceparent),
        ],
        body,
    )
    .await;
    assert!((200..300).contains(&status), "{status}");

    let end_url = format!("{}handoff/no-such-conversation/end", phone.url);
    let bearer = format!("Bearer {}", crate::handoff::TOKEN);
    let (status, _) = post(
        &end_url,
        &[("authorization", &bearer), ("traceparent", &traceparent)],
        "",
    )
    .await;
    assert!((400..500).contains(&status), "{status}");
    let (status, _) = post(&end_url, &[("authorization", "Bearer wrong")], "").await;
    assert_eq!(status, 401);

    serve.signal("TERM");
    assert!(serve.exited().await.success());
    let spans = receiver
        .wait_for(|spans| {
            !named(spans, "status").is_empty() && named(spans, "handoff.request").len() == 2
        })
        .await;
    let callback = one(&spans, "status");
    assert_eq!(hex(&callback.trace_id), CALLER_TRACE);
    assert_eq!(hex(&callback.parent_span_id), CALLER_SPAN);
    let calls = named(&spans, "handoff.request");
    let continued = calls
        .iter()
        .filter(|span| hex(&span.trace_id) == CALLER_TRACE)
        .count();
    assert_eq!(continued, 1, "{calls:#?}");
    let refused = calls
        .iter()
        .find(|span| hex(&span.trace_id) != CALLER_TRACE)
        .expect("the refused call's span");
    assert!(refused.parent_span_id.is_empty(), "a root: {refused:#?}");
}
