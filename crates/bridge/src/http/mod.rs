//! The bridge's HTTP side: the router and what its handlers share. What builds that
//! state, and serves and stops it, is `startup.rs`.

mod bearer;
mod handoff;
mod outbound;
mod privacy;
mod public_url;
mod rejection;
mod webhook;

use crate::config::{ConnectionLimits, MetricsSettings, TwilioSettings};
use crate::conversation::Conversations;
use crate::metrics::Metrics;
use crate::telemetry::request::RequestTrace;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;
use std::time::Duration;

pub use public_url::PublicUrl;
pub use rejection::Rejection;

pub use crate::config::MAX_BODY_BYTES;

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
    /// Where `/metrics` is served, and the token it needs.
    pub metrics_access: MetricsSettings,
    /// Messages the business starts, when `OUTBOUND_TOKEN` is set.
    pub outbound: Option<Arc<crate::outbound::Outbound>>,
    /// The bearer token of `/outbound`; `None`: the endpoint does not exist.
    pub outbound_token: Option<crate::config::Secret>,
    /// Erasing a person, when `PRIVACY_TOKEN` is set.
    pub privacy: Option<Arc<crate::privacy::Privacy>>,
    /// The bearer token of `/privacy/erase`; `None`: the endpoint does not exist.
    pub privacy_token: Option<crate::config::Secret>,
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
        ))
        // Outside the token's check: a refused call is in the trace too.
        .route_layer(axum::middleware::from_fn(traced_handoff));
    // Without OUTBOUND_TOKEN, `/outbound` does not exist: 404, as for any unknown path.
    let business_side = match state.outbound.is_some() {
        true => Router::new()
            .route("/outbound", post(outbound::create))
            .route("/outbound/{id}", get(outbound::status))
            .route_layer(axum::middleware::from_fn_with_state(
                Arc::clone(&state),
                outbound::require_token,
            )),
        false => Router::new(),
    };
    // Without PRIVACY_TOKEN, `/privacy/erase` does not exist: 404.
    let privacy_side = match state.privacy.is_some() {
        true => Router::new()
            .route("/privacy/erase", post(privacy::erase))
            .route_layer(axum::middleware::from_fn_with_state(
                Arc::clone(&state),
                privacy::require_token,
            )),
        false => Router::new(),
    };
    // With a port of its own, `/metrics` is not here: the public port answers 404.
    let metrics_here = state.metrics_access.port.is_none();
    let router = Router::new()
        .route("/", post(webhook::incoming))
        .route(
            "/status",
            post(webhook::status).layer(axum::middleware::from_fn(traced_status)),
        )
        .merge(human_side)
        .merge(business_side)
        .merge(privacy_side)
        .route("/healthz", get(|| async { "ok\n" }))
        // Cloud Run keeps some paths ending in `z` for itself: from outside, `/healthz`
        // may never reach the container.
        .route("/health", get(|| async { "ok\n" }));
    let router = match metrics_here {
        true => router.route("/metrics", get(metrics)),
        false => router,
    };
    router
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(body_timeout)
        .with_state(state)
}

/// The router of `METRICS_PORT`'s listener: `/metrics` alone.
pub fn metrics_router(state: Arc<AppState>) -> Router {
    let body_timeout = hardened_http::body_timeout_layer(&state.limits);
    Router::new()
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(body_timeout)
        .with_state(state)
}

/// `GET /metrics`; with `METRICS_TOKEN`, only for its bearer, checked first.
async fn metrics(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Some(token) = &state.metrics_access.token {
        if !bearer::carries(&headers, Some(token)) {
            tracing::warn!("a read of /metrics without the right bearer token was refused");
            return bearer::challenge(
                (
                    StatusCode::UNAUTHORIZED,
                    "Authorization: Bearer METRICS_TOKEN is required\n",
                )
                    .into_response(),
            );
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// A status callback, in its trace (`RequestTrace::status_callback`).
async fn traced_status(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    RequestTrace::status_callback(request.headers())
        .run(next.run(request))
        .await
}

/// A call to the hand-over API, in its trace (`RequestTrace::handoff_request`).
async fn traced_handoff(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    RequestTrace::handoff_request(request.headers())
        .run(next.run(request))
        .await
}
