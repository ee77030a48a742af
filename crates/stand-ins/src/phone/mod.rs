//! `twilio-dialogflow phone`: a phone in the browser, to try every conversation (SMS,
//! WhatsApp buttons and lists, pictures, hand-over) on a local web page.
//!
//! The page talks only to this small server; the server does what `chat` and `desk` do:
//! it signs and sends the webhooks (`chat::Phone`), reads replies from the webhook's
//! TwiML and from the Messages API stand-in (`chat::ApiInbox`), takes the bridge's
//! signed hand-over events and answers through its hand-over API (`desk`). What
//! happens is one ordered log ([`log`]) that the page reads. The page's files are in
//! the binary: it works with no network.

mod assets;
mod log;
mod phones;

pub use phones::{Channel, Wiring};

use crate::chat::Outgoing;
use crate::desk::{self, HumanSide};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use log::Log;
use phones::{PhoneError, Phones};
use serde::Deserialize;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// The helpdesk half: where the bridge's hand-over events arrive, the secret they are
/// signed with, and the bridge's hand-over API.
pub struct DeskWiring {
    pub listener: TcpListener,
    pub secret: String,
    pub human: HumanSide,
}

/// How long a page's request for new events waits for one: under the server's
/// request deadline.
const EVENTS_PATIENCE: Duration = Duration::from_secs(15);

#[derive(Clone)]
struct App {
    log: Arc<Log>,
    phones: Arc<Phones>,
    human: Option<HumanSide>,
    /// Where the page is served: a request naming another host is refused, so that no
    /// other site can reach the phone through a name that resolves to this machine.
    served_at: SocketAddr,
}

/// A running web phone.
pub struct WebPhone {
    addr: SocketAddr,
    phones: Arc<Phones>,
    log: Arc<Log>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl WebPhone {
    /// Serves the page on `listener`, with phones wired by `wiring` and, given
    /// `desk`, the helpdesk pane.
    pub fn start(
        listener: TcpListener,
        wiring: Wiring,
        desk: Option<DeskWiring>,
    ) -> anyhow::Result<Self> {
        let served_at = listener.local_addr()?;
        let log = Arc::new(Log::default());
        let phones = Phones::new(wiring, log.clone());
        let human = match desk {
            Some(desk) => {
                let (sender, mut events) = tokio::sync::mpsc::unbounded_channel::<Value>();
                let _receiver = desk::receive(desk.listener, &desk.secret, sender)?;
                let desk_log = log.clone();
                tokio::spawn(async move {
                    while let Some(event) = events.recv().await {
                        let shown = desk::show(&event);
                        desk_log.push(json!({"kind": "desk", "event": event, "shown": shown}));
                    }
                });
                Some(desk.human)
            }
            None => None,
        };
        let app = App {
            log: log.clone(),
            phones: phones.clone(),
            human,
            served_at,
        };
        let router = Router::new()
            .route("/", get(assets::page))
            .route("/phone.css", get(assets::style))
            .route("/phone.js", get(assets::script))
            .route("/media/{name}", get(assets::media))
            .route("/api/events", get(events))
            .route("/api/phones", post(add_phone))
            .route("/api/phones/{phone}/messages", post(send))
            .route("/api/desk/{conversation}/messages", post(desk_say))
            .route("/api/desk/{conversation}/end", post(desk_end))
            .layer(axum::middleware::from_fn_with_state(app.clone(), same_host))
            .with_state(app);
        let task =
            hardened_http::spawn_with_default_limits(listener, router, std::future::pending());
        Ok(Self {
            addr: served_at,
            phones,
            log,
            task,
        })
    }

    /// The page's address.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// Adds a phone on `channel`; returns its number on the page (from 0).
    pub fn add_phone(&self, channel: Channel) -> anyhow::Result<usize> {
        self.phones.add(channel)
    }

    /// Everything the page has shown so far, as events.
    pub fn events(&self) -> Vec<Value> {
        self.log.all()
    }

    /// Serves until the server fails.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await??;
        Ok(())
    }
}

/// Refuses a request whose `Host` is not the address the page is served at (or
/// `localhost` on it), unless the phone listens on every address.
async fn same_host(State(app): State<App>, request: Request, next: Next) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let port = app.served_at.port();
    let allowed = app.served_at.ip().is_unspecified()
        || host == app.served_at.to_string()
        || host == format!("localhost:{port}");
    if !allowed {
        return (StatusCode::MISDIRECTED_REQUEST, "not this phone's host").into_response();
    }
    next.run(request).await
}

#[derive(Deserialize)]
struct After {
    #[serde(default)]
    after: u64,
}

async fn events(State(app): State<App>, Query(after): Query<After>) -> Json<Value> {
    let events = app.log.after(after.after, EVENTS_PATIENCE).await;
    Json(json!({"events": events, "desk": app.human.is_some()}))
}

#[derive(Deserialize)]
struct NewPhone {
    channel: Channel,
}

async fn add_phone(State(app): State<App>, Json(new): Json<NewPhone>) -> Response {
    match app.phones.add(new.channel) {
        Ok(index) => (StatusCode::CREATED, Json(json!({"phone": index}))).into_response(),
        Err(error) => failed(StatusCode::INTERNAL_SERVER_ERROR, &format!("{error:#}")),
    }
}

/// What the person does on a phone: types (with a picture's URL or not), taps a
/// choice, or shares a place.
#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum Action {
    Text {
        body: String,
        #[serde(default)]
        media: Option<String>,
    },
    Tap {
        message: String,
        choice: usize,
    },
    Location {
        latitude: f64,
        longitude: f64,
        #[serde(default)]
        label: String,
    },
}

async fn send(
    State(app): State<App>,
    Path(phone): Path<usize>,
    Json(action): Json<Action>,
) -> Response {
    let outcome = match action {
        Action::Text { body, media } => {
            let media: Vec<String> = media.into_iter().filter(|m| !m.trim().is_empty()).collect();
            if body.trim().is_empty() && media.is_empty() {
                Err(PhoneError::Invalid("nothing to send"))
            } else {
                let message = Outgoing {
                    body,
                    media,
                    ..Outgoing::default()
                };
                app.phones.send(phone, message, json!({}))
            }
        }
        Action::Tap { message, choice } => app
            .phones
            .tap(&message, choice)
            .and_then(|(tap, title)| app.phones.send(phone, tap, json!({"tapped": title}))),
        Action::Location {
            latitude,
            longitude,
            label,
        } => {
            if !(-90.0..=90.0).contains(&latitude) || !(-180.0..=180.0).contains(&longitude) {
                Err(PhoneError::Invalid("not a place on Earth"))
            } else {
                let message = Outgoing::location(latitude, longitude, &label);
                let shown = json!({"location": {"latitude": latitude, "longitude": longitude, "label": label}});
                app.phones.send(phone, message, shown)
            }
        }
    };
    match outcome {
        Ok(()) => StatusCode::ACCEPTED.into_response(),
        Err(error @ PhoneError::NoPhone(_)) => failed(StatusCode::NOT_FOUND, &error.to_string()),
        Err(error) => failed(StatusCode::UNPROCESSABLE_ENTITY, &error.to_string()),
    }
}

#[derive(Deserialize)]
struct DeskText {
    text: String,
}

async fn desk_say(
    State(app): State<App>,
    Path(conversation): Path<String>,
    Json(said): Json<DeskText>,
) -> Response {
    let Some(human) = &app.human else {
        return failed(StatusCode::NOT_FOUND, "this phone has no desk");
    };
    if said.text.trim().is_empty() {
        return failed(StatusCode::UNPROCESSABLE_ENTITY, "nothing to send");
    }
    app.phones.desk_said(&said.text);
    match human.say(&conversation, &said.text, &[]).await {
        Ok(_) => {
            app.log.push(
                json!({"kind": "desk-said", "conversation": conversation, "text": said.text}),
            );
            StatusCode::NO_CONTENT.into_response()
        }
        Err(error) => failed(StatusCode::BAD_GATEWAY, &format!("{error:#}")),
    }
}

async fn desk_end(State(app): State<App>, Path(conversation): Path<String>) -> Response {
    let Some(human) = &app.human else {
        return failed(StatusCode::NOT_FOUND, "this phone has no desk");
    };
    match human.end(&conversation).await {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(error) => failed(StatusCode::BAD_GATEWAY, &format!("{error:#}")),
    }
}

fn failed(status: StatusCode, why: &str) -> Response {
    (status, Json(json!({"error": why}))).into_response()
}
