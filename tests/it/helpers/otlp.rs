//! A small OTLP/HTTP trace receiver, standing in for an OpenTelemetry Collector (none
//! can be installed where the tests run): it decodes what the exporter posts to
//! `/v1/traces` with the protocol's own types, and counts every connection made to it.

use axum::body::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The receiver: what it was sent, and how many connections it accepted.
#[derive(Clone)]
pub struct OtlpReceiver {
    pub addr: std::net::SocketAddr,
    requests: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
    connections: Arc<AtomicUsize>,
}

/// A listener that counts what it accepts.
struct Counting {
    listener: tokio::net::TcpListener,
    connections: Arc<AtomicUsize>,
}

impl axum::serve::Listener for Counting {
    type Io = tokio::net::TcpStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let accepted = axum::serve::Listener::accept(&mut self.listener).await;
        self.connections.fetch_add(1, Ordering::SeqCst);
        accepted
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

impl OtlpReceiver {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let kept = Arc::clone(&requests);
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: Bytes| async move {
                let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                kept.lock().unwrap().push(request);
                // An empty ExportTraceServiceResponse.
                (
                    [("content-type", "application/x-protobuf")],
                    Vec::<u8>::new(),
                )
            }),
        );
        let listener = Counting {
            listener,
            connections: Arc::clone(&connections),
        };
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            addr,
            requests,
            connections,
        }
    }

    /// `OTEL_EXPORTER_OTLP_ENDPOINT` for this receiver.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Span> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .flat_map(|r| &r.resource_spans)
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| s.spans.clone())
            .collect()
    }

    /// Every attribute value received (of resources, spans, their events and links),
    /// as text.
    pub fn attribute_values(&self) -> Vec<String> {
        let requests = self.requests.lock().unwrap();
        let mut values = Vec::new();
        for resource in requests.iter().flat_map(|r| &r.resource_spans) {
            if let Some(resource) = &resource.resource {
                collect(&resource.attributes, &mut values);
            }
            for span in resource.scope_spans.iter().flat_map(|s| &s.spans) {
                values.push(span.name.clone());
                collect(&span.attributes, &mut values);
                for event in &span.events {
                    values.push(event.name.clone());
                    collect(&event.attributes, &mut values);
                }
                for link in &span.links {
                    collect(&link.attributes, &mut values);
                }
            }
        }
        values
    }

    /// The spans, once `done` says they are all there (within 30 s).
    pub async fn wait_for(&self, done: impl Fn(&[Span]) -> bool) -> Vec<Span> {
        for _ in 0..300 {
            let spans = self.spans();
            if done(&spans) {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the spans never came; got {:#?}", self.spans());
    }
}

fn collect(attributes: &[KeyValue], into: &mut Vec<String>) {
    for attribute in attributes {
        into.push(attribute.key.clone());
        if let Some(value) = &attribute.value {
            into.push(text_of(value));
        }
    }
}

fn text_of(value: &AnyValue) -> String {
    match &value.value {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(Value::BytesValue(b)) => String::from_utf8_lossy(b).into_owned(),
        Some(Value::ArrayValue(array)) => array
            .values
            .iter()
            .map(text_of)
            .collect::<Vec<_>>()
            .join(","),
        Some(Value::KvlistValue(list)) => {
            let mut all = Vec::new();
            collect(&list.values, &mut all);
            all.join(",")
        }
        _ => String::new(),
    }
}

/// The string attribute `key` of `span`.
pub fn attribute<'a>(span: &'a Span, key: &str) -> Option<&'a str> {
    span.attributes.iter().find(|a| a.key == key).and_then(|a| {
        match a.value.as_ref()?.value.as_ref()? {
            Value::StringValue(s) => Some(s.as_str()),
            _ => None,
        }
    })
}
