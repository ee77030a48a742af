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

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, PoisonError};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    #[error("cannot read the agent file {path}: {source}")]
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
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
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

/// `twilio-dialogflow emulator`: serves the agent file on 127.0.0.1:`port` until
/// Ctrl-C or SIGTERM.
pub async fn run(agent_path: &Path, port: u16) -> anyhow::Result<()> {
    let agent = AgentDefinition::load(agent_path)?;
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;
    let agent_id = agent.agent_id().to_owned();
    let project = agent.project().to_owned();
    let emulator = Emulator::start(agent, listener).await?;
    println!(
        "Dialogflow emulator for agent {agent_id} (project {project}) listening on http://{addr} (set DIALOGFLOW_EMULATOR_HOST={addr})"
    );
    crate::http::shutdown_signal().await;
    emulator.shutdown().await;
    Ok(())
}
