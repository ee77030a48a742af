//! The bridge's HTTP side: the router and what its handlers share. What builds that
//! state, and serves and stops it, is `startup.rs`.

mod handoff;
mod public_url;
mod rejection;
mod webhook;

use crate::config::{ConnectionLimits, TwilioSettings};
use crate::conversation::Conversations;
use crate::metrics::Metrics;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;
use std::time::Duration;

pub use public_url::PublicUrl;
pub use rejection::Rejection;

/// Twilio's webhooks are a few KiB; anything far larger is not from Twilio.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What every request handler shares.
pub struct AppState {
    pub twilio: TwilioSettings,
    /// How the URL a webhook was signed for is found, and the hosts it may name.
    pub public_url: PublicUrl,
    pub conversations: Arc<Conversations>,
    pub metrics: Arc<Metrics>,
    /// How long replies still owed at shutdown may take.
    pub shutdown_grace: Duration,
    pub limits: ConnectionLimits,
    /// The bearer token of the hand-over API; `None`: hand-over is off.
    pub handoff_token: Option<crate::config::Secret>,
}

pub fn router(state: Arc<AppState>) -> Router {
    let body_timeout = hardened_http::body_timeout_layer(&state.limits);
    // The token is checked before a handler's extractors read the body: a caller
    // without it cannot make the bridge wait for, or hold, a body at all.
    let human_side = Router::new()
        .route("/handoff/{conversation}/messages", post(handoff::messages))
        .route("/handoff/{conversation}/end", post(handoff::end))
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            handoff::require_token,
        ));
    Router::new()
        .route("/", post(webhook::incoming))
        .route("/status", post(webhook::status))
        .merge(human_side)
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
