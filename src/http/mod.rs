//! The bridge's HTTP server: the router, its shared state, and how it starts and stops.

mod handoff;
mod public_url;
mod rejection;
pub mod server;
mod webhook;

use crate::agent::Agent;
use crate::agent::Clients;
use crate::config::{ConnectionLimits, ReplyMode, Settings, TwilioSettings};
use crate::conversation::{AgentRoute, AgentRoutes, Conversations, Delivery, Messages};
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::state::StateStore;
use crate::twilio::messages_api::{ApiCredentials, MessagesApi};
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use public_url::public_url;
pub use rejection::Rejection;

/// After the grace, how long the turns still at work get to leave their replies to the
/// other instances.
const HAND_OVER_WAIT: Duration = Duration::from_secs(1);

/// Twilio's webhooks are a few KiB; anything far larger is not from Twilio.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What every request handler shares.
pub struct AppState {
    pub twilio: TwilioSettings,
    pub conversations: Arc<Conversations>,
    pub metrics: Arc<Metrics>,
    /// How long replies still owed at shutdown may take.
    pub shutdown_grace: Duration,
    pub limits: ConnectionLimits,
    /// The bearer token of the hand-over API; `None`: hand-over is off.
    pub handoff_token: Option<crate::config::Secret>,
}

/// The routes at work: each route's agent (routes on one endpoint share its client),
/// and the way its replies go, through one outbox for all that need it.
async fn agent_routes(
    settings: &Settings,
    state: &StateStore,
    metrics: &Arc<Metrics>,
) -> Result<AgentRoutes, SetupError> {
    let clients = Clients::default();
    let replies = &settings.replies;
    let needs_api = settings
        .routes
        .iter()
        .any(|route| route.reply_mode != ReplyMode::Twiml);
    let outbox = if needs_api {
        // Each account sends its replies with its own credentials.
        let twilio = &settings.twilio;
        let accounts = std::iter::once((
            &twilio.account_sid,
            &replies.api_username,
            &replies.api_passwords,
        ))
        .chain(
            twilio
                .other_accounts
                .iter()
                .map(|a| (&a.sid, &a.api_username, &a.api_passwords)),
        );
        let mut apis = std::collections::HashMap::new();
        for (sid, username, passwords) in accounts {
            let credentials = ApiCredentials {
                account_sid: sid.clone(),
                username: username.clone(),
                passwords: passwords.clone(),
            };
            let api = MessagesApi::new(&replies.api_base_url, credentials, replies.api_timeout)
                .map_err(SetupError::HttpClient)?
                .with_hosts(&replies.content_base_url, &replies.messaging_base_url);
            apis.insert(sid.clone(), api);
        }
        let service = replies
            .messaging_service_sid
            .clone()
            .map(|sid| (twilio.account_sid.clone(), sid));
        Some(Outbox::new(
            apis,
            service,
            settings.rich.menu.clone(),
            state.clone(),
            Arc::clone(metrics),
        ))
    } else {
        None
    };
    let mut routes = Vec::new();
    for route in &settings.routes {
        let delivery = match (route.reply_mode, &outbox) {
            (ReplyMode::Api, Some(outbox)) => Delivery::Api(Arc::clone(outbox)),
            (ReplyMode::Auto, Some(outbox)) => Delivery::Auto {
                deadline: replies.deadline,
                outbox: Arc::clone(outbox),
            },
            _ => Delivery::Twiml,
        };
        let agent = AgentRoute {
            name: route.name.as_str().into(),
            agent: Agent::connect_with(&route.agent, &clients).await?,
            languages: route.languages.clone(),
            fallback: route.fallback_message.clone(),
            delivery,
        };
        routes.push((route.matcher.clone(), agent));
    }
    Ok(AgentRoutes::new(routes))
}

/// Why the bridge could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Agent(#[from] crate::agent::AgentError),
    #[error(transparent)]
    State(#[from] crate::state::OpenError),
    #[error("cannot create the HTTP client for Twilio's API: {0}")]
    HttpClient(reqwest::Error),
    #[error(transparent)]
    Handoff(#[from] crate::handoff::SetupError),
}

impl AppState {
    /// Connects to the agent described by `settings`.
    pub async fn connect(settings: &Settings) -> Result<Arc<Self>, SetupError> {
        let metrics = Arc::new(Metrics::new());
        let state =
            StateStore::open(&settings.state, settings.rate_limits, Arc::clone(&metrics)).await?;
        let routes = agent_routes(settings, &state, &metrics).await?;
        let handoff = match &settings.handoff {
            Some(handoff) => Some(crate::handoff::Handoff::new(
                handoff.clone(),
                state.clone(),
                Arc::clone(&metrics),
            )?),
            None => None,
        };
        let shared = state.is_shared();
        let conversations = Conversations::new(
            routes,
            Messages {
                rate_limited: settings.rate_limit_message.clone(),
                opt_out_to_agent: settings.opt_out_to_agent,
                menu: settings.rich.menu.clone(),
                menu_ttl: settings.rich.menu_ttl,
                typing_after: settings.rich.typing_after,
            },
            state,
            Arc::clone(&metrics),
            std::iter::once(settings.twilio.account_sid.clone())
                .chain(settings.twilio.other_accounts.iter().map(|a| a.sid.clone()))
                .collect(),
            handoff,
        );
        if let Some(handoff) = &settings.handoff {
            let every =
                (handoff.ttl / 10).clamp(Duration::from_millis(500), Duration::from_secs(60));
            tokio::spawn(Arc::clone(&conversations).end_quiet_handoffs(every));
        }
        if shared {
            // Turns left behind by an instance that died are taken over by the others;
            // those an instance let go at shutdown, within a second.
            let every = (settings.state.lease / 3)
                .clamp(Duration::from_millis(100), Duration::from_secs(1));
            tokio::spawn(Arc::clone(&conversations).take_over_expired(every));
        }
        Ok(Arc::new(Self {
            twilio: settings.twilio.clone(),
            conversations,
            metrics,
            shutdown_grace: settings.replies.shutdown_grace,
            limits: settings.limits,
            handoff_token: settings.handoff.as_ref().map(|h| h.token.clone()),
        }))
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    let body_timeout = server::body_timeout_layer(&state.limits);
    Router::new()
        .route("/", post(webhook::incoming))
        .route("/status", post(webhook::status))
        .route("/handoff/{conversation}/messages", post(handoff::messages))
        .route("/handoff/{conversation}/end", post(handoff::end))
        .route("/healthz", get(|| async { "ok\n" }))
        // Cloud Run keeps some paths ending in `z` for itself: from outside, `/healthz`
        // may never reach the container.
        .route("/health", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(body_timeout)
        .with_state(state)
}

async fn metrics(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
) -> impl axum::response::IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

/// Serves `state` on `listener` until `shutdown` resolves, then stops accepting and
/// lets requests in flight finish.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let conversations = Arc::clone(&state.conversations);
    let grace = state.shutdown_grace;
    let signalled = Arc::new(std::sync::OnceLock::new());
    let signalled_at = Arc::clone(&signalled);
    let shutdown = async move {
        shutdown.await;
        let _ = signalled_at.set(std::time::Instant::now());
        conversations.begin_shutdown(grace);
    };
    server::serve(
        listener,
        router(Arc::clone(&state)),
        state.limits,
        Some(Arc::clone(&state.metrics)),
        shutdown,
    )
    .await?;
    let since_signal = signalled.get().map_or(Duration::ZERO, |at| at.elapsed());
    // Replies already owed are still sent; the turns that cannot finish in the time
    // left are handed to the other instances, or named, so that nothing disappears
    // silently.
    let grace_left = state.shutdown_grace.saturating_sub(since_signal);
    let until = tokio::time::Instant::now() + grace_left;
    let mut owed = false;
    for outbox in state.conversations.outboxes() {
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        owed |= !outbox.drain(left).await.is_empty();
    }
    if owed {
        state.conversations.hand_over(HAND_OVER_WAIT).await;
    }
    Ok(())
}

/// A bridge running on a background task, for tests and the demo.
pub struct RunningBridge {
    pub addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

impl RunningBridge {
    pub async fn start(settings: &Settings, listener: TcpListener) -> anyhow::Result<Self> {
        let addr = listener.local_addr()?;
        let state = AppState::connect(settings).await?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, state, async {
            let _ = stopped.await;
        }));
        Ok(Self { addr, stop, task })
    }

    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// Stops like SIGTERM does: no new connections, requests in flight finish.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.task.await??;
        Ok(())
    }
}

/// Resolves on Ctrl-C or SIGTERM (what Cloud Run sends before stopping an instance).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}
