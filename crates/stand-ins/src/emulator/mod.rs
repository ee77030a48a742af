//! A local, wire-faithful Dialogflow for tests, demos and benchmarks.
//!
//! It serves the REST methods the bridge uses, `detectIntent` of CX v3 and ES v2, with
//! Google's URL paths, JSON field names, error JSON and enum encodings, so that the
//! official clients work against it unchanged (`with_endpoint` and anonymous
//! credentials). It answers from an agent file (see `agent_file.rs` and
//! docs/agent-file.md) and can be told to be slow or to fail.

mod agent_file;
mod matcher;
mod routes;
mod sessions;
mod wire;

pub use agent_file::AgentDefinition;

use crate::messages_api::MessagesEmulator;
use anyhow::Context;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, PoisonError};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    #[error("cannot read the agent file {path}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid {source_name}: {message}")]
    Parse {
        source_name: String,
        message: String,
    },
    #[error("cannot serve: {0}")]
    Io(#[from] std::io::Error),
}

/// One detectIntent request as the emulator received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub path: String,
    /// The raw query string, e.g. `$alt=json;enum-encoding=int`.
    pub query: String,
    pub body: serde_json::Value,
}

/// A running emulator.
pub struct Emulator {
    addr: SocketAddr,
    shared: Arc<routes::Shared>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Emulator {
    /// Serves `agent` on an already-bound listener.
    pub async fn start(
        agent: AgentDefinition,
        listener: TcpListener,
    ) -> Result<Emulator, EmulatorError> {
        let addr = listener.local_addr()?;
        let shared = routes::Shared::new(agent);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = routes::router(Arc::clone(&shared));
        let task = hardened_http::spawn_with_default_limits(listener, app, async {
            let _ = stopped.await;
        });
        Ok(Emulator {
            addr,
            shared,
            stop,
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The detectIntent requests received so far (the latest thousand), in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared
            .recorded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }

    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// The sample agent, built in so that `emulator` and `demo` run from any directory.
pub const SAMPLE_AGENT: &str = include_str!("../../../../examples/agents/pizza.yaml");

/// A local stand-in for Twilio's Messages API, beside the emulator.
pub struct TwilioStandIn {
    pub port: u16,
    /// The credentials it accepts, the bridge's.
    pub account_sid: String,
    pub auth_token: String,
}

/// `twilio-dialogflow emulator`: serves the agent file (the sample agent without one)
/// on 127.0.0.1:`port`, and the Messages API stand-in if asked, until Ctrl-C or SIGTERM.
pub async fn run(
    agent_path: Option<&Path>,
    port: u16,
    twilio: Option<TwilioStandIn>,
) -> anyhow::Result<()> {
    let agent = match agent_path {
        Some(path) => AgentDefinition::load(path)?,
        None => AgentDefinition::from_yaml_str(SAMPLE_AGENT)?,
    };
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{port}"))?;
    let addr = listener.local_addr()?;
    let agent_id = agent.agent_id().to_owned();
    let project = agent.project().to_owned();
    let emulator = Emulator::start(agent, listener).await?;
    println!(
        "Dialogflow emulator for agent {agent_id} (project {project}) listening on http://{addr}\n  set DIALOGFLOW_EMULATOR_HOST={addr} GCP_PROJECT={project} AGENT_ID={agent_id}"
    );
    let messages = match twilio {
        Some(stand_in) => {
            let listener = TcpListener::bind(("127.0.0.1", stand_in.port))
                .await
                .with_context(|| format!("cannot listen on 127.0.0.1:{}", stand_in.port))?;
            let messages =
                MessagesEmulator::start(listener, &stand_in.account_sid, &stand_in.auth_token)?;
            // `chat` tells it of each message the person sends, so it holds WhatsApp's
            // 24-hour window as Twilio does.
            messages.keep_session_windows();
            println!(
                "Twilio Messages API stand-in for {} listening on {}\n  set TWILIO_API_BASE_URL={}",
                stand_in.account_sid,
                messages.base_url(),
                messages.base_url()
            );
            Some(messages)
        }
        None => None,
    };
    let show_sent = async {
        match &messages {
            Some(messages) => {
                messages
                    .watch(|sent| {
                        let media = sent.media.len();
                        let media = if media > 0 {
                            format!(" [+{media} media]")
                        } else {
                            String::new()
                        };
                        println!("sent to {}: {}{media}", sent.to, sent.body);
                    })
                    .await
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = hardened_http::shutdown_signal() => {}
        _ = show_sent => {}
    }
    emulator.shutdown().await;
    Ok(())
}
