//! Start-up in one place: the bridge built from its settings (state store, agents,
//! outbox, hand-over, background tasks), served until a signal, and stopped so that no
//! owed reply is lost. `http/` only routes and answers.

use crate::agent::{Agent, Clients};
use crate::config::TwilioSettings;
use crate::config::{ReplyMode, Settings};
use crate::conversation::{
    AgentRoute, AgentRoutes, Conversations, Delivery, Messages, Ours, Waits,
};
use crate::http::{metrics_router, router, AppState, PublicUrl};
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::state::StateStore;
use crate::twilio::messages_api::{ApiCredentials, MessagesApi};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use hardened_http::{listen, shutdown_signal};

/// After the grace, how long the turns still at work get to leave their replies to the
/// other instances.
const HAND_OVER_WAIT: Duration = Duration::from_secs(1);

/// The routes at work: each route's agent (routes on one endpoint share its client),
/// and the way its replies go, through one outbox for all that need it.
fn agent_routes(
    settings: &Settings,
    agents: &[Arc<Agent>],
    state: &StateStore,
    metrics: &Arc<Metrics>,
) -> Result<AgentRoutes, SetupError> {
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
    for (route, agent) in settings.routes.iter().zip(agents) {
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
            agent: Arc::clone(agent) as _,
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
    #[error("making the agents' clients stopped: {0}")]
    AgentTask(tokio::task::JoinError),
    #[error(transparent)]
    State(#[from] crate::state::OpenError),
    #[error("cannot create the HTTP client for Twilio's API: {0}")]
    HttpClient(reqwest::Error),
    #[error(transparent)]
    Handoff(#[from] crate::handoff::SetupError),
}

/// The agents' clients being made, beside the rest of start-up and then beside serving.
pub struct AgentClients(JoinHandle<Result<(), crate::agent::AgentError>>);

impl AgentClients {
    /// Makes every agent's client, on a task of its own.
    fn make(agents: &[Arc<Agent>]) -> Self {
        let agents = agents.to_vec();
        Self(tokio::spawn(async move {
            for agent in agents {
                agent.make_client().await?;
            }
            Ok(())
        }))
    }

    /// Resolves once every client is made, or with the first that could not be.
    pub async fn made(self) -> Result<(), SetupError> {
        match self.0.await {
            Ok(made) => made.map_err(SetupError::Agent),
            Err(task) => Err(SetupError::AgentTask(task)),
        }
    }
}

/// Builds the bridge described by `settings`: the state store, the routes, the outbox,
/// hand-over, and the background tasks (quiet hand-overs, turns left by dead
/// instances). The agents' clients are still being made when it returns: the bridge can
/// serve meanwhile, and must stop if [`AgentClients::made`] fails.
pub async fn build(settings: &Settings) -> Result<(Arc<AppState>, AgentClients), SetupError> {
    // First, so that making them overlaps everything else start-up does.
    let clients = Clients::default();
    let agents: Vec<Arc<Agent>> = settings
        .routes
        .iter()
        .map(|route| Arc::new(Agent::new(&route.agent, &clients)))
        .collect();
    let made = AgentClients::make(&agents);
    let metrics = Arc::new(Metrics::new());
    let state =
        StateStore::open(&settings.state, settings.rate_limits, Arc::clone(&metrics)).await?;
    let routes = agent_routes(settings, &agents, &state, &metrics)?;
    let handoff = match &settings.handoff {
        Some(handoff) => Some(crate::handoff::Handoff::new(
            handoff.clone(),
            state.clone(),
            Arc::clone(&metrics),
        )?),
        None => None,
    };
    let shared = state.is_shared();
    let outbound_state = state.clone();
    let privacy = settings.privacy_token.as_ref().map(|_| {
        Arc::new(crate::privacy::Privacy::new(
            state.clone(),
            crate::privacy::PrivacyParts {
                accounts: accounts_of(settings),
                senders: senders_of(settings),
                session_key: settings.session_key.clone(),
                handoff: handoff.clone(),
            },
        ))
    });
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
        Ours {
            accounts: std::iter::once(settings.twilio.account_sid.clone())
                .chain(settings.twilio.other_accounts.iter().map(|a| a.sid.clone()))
                .collect(),
            session_key: settings.session_key.clone(),
        },
        handoff,
        Waits::new(
            settings.state.lease,
            settings.handoff.as_ref().map(|h| h.retry_for),
        ),
    );
    if let Some(handoff) = &settings.handoff {
        let every = (handoff.ttl / 10).clamp(Duration::from_millis(500), Duration::from_secs(60));
        tokio::spawn(Arc::clone(&conversations).end_quiet_handoffs(every));
    }
    if shared {
        // Turns left behind by an instance that died are taken over by the others;
        // those an instance let go at shutdown, within a second.
        let every =
            (settings.state.lease / 3).clamp(Duration::from_millis(100), Duration::from_secs(1));
        tokio::spawn(Arc::clone(&conversations).take_over_expired(every));
    }
    let outbound = settings.outbound.as_ref().map(|outbound| {
        crate::outbound::Outbound::new(
            Arc::clone(&conversations),
            outbound_state,
            Arc::clone(&metrics),
            crate::outbound::OutboundParts {
                account_sid: settings.twilio.account_sid.clone(),
                default_service: settings.replies.messaging_service_sid.clone(),
                per_second: outbound.per_second,
                session_key: settings.session_key.clone(),
                lease: settings.state.lease,
            },
        )
    });
    if let (Some(outbound), true) = (&outbound, shared) {
        // Queued outbound work left behind by an instance that died is sent by the
        // others; what an instance left at shutdown, within a second.
        let every =
            (settings.state.lease / 3).clamp(Duration::from_millis(100), Duration::from_secs(1));
        tokio::spawn(Arc::clone(outbound).take_over_queued(every));
    }
    let public_url = PublicUrl::new(&settings.twilio, cloud_run_host(&settings.twilio).await);
    let app = Arc::new(AppState {
        twilio: settings.twilio.clone(),
        public_url,
        conversations,
        metrics,
        shutdown_grace: settings.replies.shutdown_grace,
        limits: settings.limits,
        handoff_token: settings.handoff.as_ref().map(|h| h.token.clone()),
        metrics_access: settings.metrics.clone(),
        outbound,
        outbound_token: settings.outbound.as_ref().map(|o| o.token.clone()),
        privacy,
        privacy_token: settings.privacy_token.clone(),
    });
    Ok((app, made))
}

/// Every account the configuration names: the main one, the others, the routes'.
fn accounts_of(settings: &Settings) -> Vec<String> {
    let mut accounts: Vec<String> = std::iter::once(settings.twilio.account_sid.clone())
        .chain(settings.twilio.other_accounts.iter().map(|a| a.sid.clone()))
        .chain(
            settings
                .routes
                .iter()
                .filter_map(|route| route.matcher.account_sid.clone()),
        )
        .collect();
    accounts.sort();
    accounts.dedup();
    accounts
}

/// Every sender the configuration names: the routes' numbers and Messaging Services,
/// and `TWILIO_MESSAGING_SERVICE_SID`.
fn senders_of(settings: &Settings) -> Vec<String> {
    let mut senders: Vec<String> = settings
        .routes
        .iter()
        .flat_map(|route| {
            [
                route.matcher.to.clone(),
                route.matcher.messaging_service_sid.clone(),
            ]
        })
        .flatten()
        .chain(settings.replies.messaging_service_sid.clone())
        .collect();
    senders.sort();
    senders.dedup();
    senders
}

/// On Cloud Run with no `TWILIO_WEBHOOK_URL`, the host of the service's own URL, asked
/// of the metadata server once (each request bounded by its timeout). If it cannot
/// tell, the bridge still serves, on the listed hosts or else any, and says so.
async fn cloud_run_host(twilio: &TwilioSettings) -> Option<String> {
    let cloud_run = twilio.cloud_run.as_ref()?;
    let service = cloud_run.service.as_deref()?;
    if twilio.webhook_url.is_some() {
        return None;
    }
    match crate::gcp_metadata::cloud_run_host(&cloud_run.metadata_host, service).await {
        Ok(host) => {
            tracing::info!(
                host,
                "webhooks are accepted for this Cloud Run service's own URL"
            );
            Some(host)
        }
        Err(error) => {
            let fallback = match twilio.webhook_hosts.is_empty() {
                true => "from any host the request names: a webhook signed for another host of the same account would be accepted; set TWILIO_WEBHOOK_URL or TWILIO_WEBHOOK_HOSTS",
                false => "only for the hosts of TWILIO_WEBHOOK_HOSTS",
            };
            tracing::warn!("cannot tell this Cloud Run service's own URL ({error}): webhooks are accepted {fallback}");
            None
        }
    }
}

/// The listener of `/metrics` on `METRICS_PORT` (on `ip`), if it is set.
pub fn metrics_listener(
    settings: &Settings,
    ip: std::net::IpAddr,
) -> std::io::Result<Option<TcpListener>> {
    settings
        .metrics
        .port
        .map(|port| listen(SocketAddr::new(ip, port)))
        .transpose()
}

/// Serves `state` on `listener` (and `/metrics` alone on `metrics`, with
/// `METRICS_PORT`) until `shutdown` resolves, then stops accepting and lets requests
/// in flight finish.
pub async fn serve(
    listener: TcpListener,
    metrics: Option<TcpListener>,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // `/metrics` stays readable while the public side drains.
    let (metrics_stop, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
    let metrics_server = metrics.map(|listener| {
        tokio::spawn(hardened_http::serve(
            listener,
            metrics_router(Arc::clone(&state)),
            state.limits,
            None,
            async {
                let _ = metrics_stopped.await;
            },
        ))
    });
    let conversations = Arc::clone(&state.conversations);
    let grace = state.shutdown_grace;
    let signalled = Arc::new(std::sync::OnceLock::new());
    let signalled_at = Arc::clone(&signalled);
    let shutdown = async move {
        shutdown.await;
        let _ = signalled_at.set(std::time::Instant::now());
        conversations.begin_shutdown(grace);
    };
    let observer: Arc<dyn hardened_http::Observer> = Arc::clone(&state.metrics) as _;
    hardened_http::serve(
        listener,
        router(Arc::clone(&state)),
        state.limits,
        Some(observer),
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
    let _ = metrics_stop.send(());
    if let Some(server) = metrics_server {
        if let Ok(Err(error)) = server.await {
            tracing::warn!(%error, "the metrics listener failed");
        }
    }
    Ok(())
}

/// A bridge running on a background task, for tests and the demo.
pub struct RunningBridge {
    pub addr: SocketAddr,
    /// Where `/metrics` is served, with `METRICS_PORT` (on the loopback).
    pub metrics_addr: Option<SocketAddr>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

impl RunningBridge {
    pub async fn start(settings: &Settings, listener: TcpListener) -> anyhow::Result<Self> {
        let addr = listener.local_addr()?;
        let metrics = metrics_listener(settings, std::net::Ipv4Addr::LOCALHOST.into())?;
        let metrics_addr = metrics.as_ref().map(TcpListener::local_addr).transpose()?;
        let (state, clients) = build(settings).await?;
        clients.made().await?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, metrics, state, async {
            let _ = stopped.await;
        }));
        Ok(Self {
            addr,
            metrics_addr,
            stop,
            task,
        })
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
