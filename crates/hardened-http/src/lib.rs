//! The HTTP/1 server under the bridge and the emulators: hyper, with the limits that
//! keep a slow or silent client from holding the service.
//!
//! hyper closes a connection whose headers are late, but its one timer runs from the
//! moment it is ready to read, so it cannot tell a keep-alive connection resting between
//! requests (which load balancers hold for minutes) from a client dribbling its headers
//! a byte at a time. Each connection here keeps its own clock instead:
//! - a new connection must complete its first request's headers within `header`;
//! - once bytes of a request arrive, its headers must be complete within `header`;
//! - a keep-alive connection may rest for `idle` between requests;
//! - a request's body must arrive within `body` (then 408, and the connection closes;
//!   see [`body_timeout_layer`] and the 408 rejection);
//! - at most `max_connections` are open: a new one first closes the one resting
//!   longest, and is refused only when every open connection is busy with a request.
//!
//! Every close for these reasons is reported to the server's [`Observer`].
//!
//! The crate knows nothing of the bridge: the bridge and the local stand-ins both serve
//! through it, and the bridge counts what it reports.

use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tower::ServiceExt;

/// The connection limits; see the module's documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A request's headers must be complete this long after the connection opened, or
    /// after its first byte.
    pub header: Duration,
    /// A request's body must arrive within this.
    pub body: Duration,
    /// How long a keep-alive connection may rest between requests.
    pub idle: Duration,
    /// Open connections at most; past it, the one resting longest is closed.
    pub max_connections: usize,
}

pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(15);
/// Longer than the idle timeout of common load balancers (60 s), so that they close
/// first and never send a request on a connection being closed.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(75);

impl Default for Limits {
    fn default() -> Self {
        Self {
            header: DEFAULT_HEADER_TIMEOUT,
            body: DEFAULT_BODY_TIMEOUT,
            idle: DEFAULT_IDLE_TIMEOUT,
            max_connections: default_max_connections(),
        }
    }
}

/// Half the process's file-descriptor limit, less a reserve: each webhook in flight
/// also holds a connection to the agent, and the process needs files of its own.
pub fn default_max_connections() -> usize {
    (open_files_limit() / 2).saturating_sub(32).max(16)
}

/// The soft limit on open files (`ulimit -n`), as Linux reports it; 1024 elsewhere.
pub fn open_files_limit() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| {
            limits.lines().find_map(|line| {
                let soft = line
                    .strip_prefix("Max open files")?
                    .split_whitespace()
                    .next()?;
                soft.parse().ok()
            })
        })
        .unwrap_or(1024)
}

/// What the server tells about its connections, for metrics.
pub trait Observer: Send + Sync {
    fn opened(&self);
    fn ended(&self);
    fn closed(&self, reason: Closed);
}

/// Connections the kernel may hold for us before we accept them. A burst larger than
/// the queue is dropped by the kernel, and its clients retry only seconds later; the
/// kernel caps it at `net.core.somaxconn` (4096 on current Linux).
const BACKLOG: u32 = 4096;

/// A listener on `addr` with a queue for bursts of connections.
pub fn listen(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    // A restarted bridge can listen again at once, as tokio's own bind does.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// The layer that gives a request's body `limits.body` to arrive; a body that does not
/// fails to read with [`tower_http::timeout::TimeoutError`], which the bridge answers
/// with 408 (see `rejection.rs`).
pub fn body_timeout_layer(limits: &Limits) -> tower_http::timeout::RequestBodyTimeoutLayer {
    tower_http::timeout::RequestBodyTimeoutLayer::new(limits.body)
}

/// Why a connection was closed by the server's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// Headers not complete in time (a silent or dribbling client).
    HeaderTimeout,
    /// Rested longer than the idle timeout between requests.
    IdleTimeout,
    /// Closed to make room for a new connection.
    Shed,
    /// A new connection refused: every open one was busy.
    Refused,
}

impl Closed {
    pub fn label(self) -> &'static str {
        match self {
            Closed::HeaderTimeout => "header_timeout",
            Closed::IdleTimeout => "idle_timeout",
            Closed::Shed => "shed",
            Closed::Refused => "refused",
        }
    }
}

/// Serves `router` on `listener` within `limits` until `shutdown` resolves, then stops
/// accepting and lets the requests in flight finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    observer: Option<Arc<dyn Observer>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let connections = Arc::new(Connections::default());
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    let mut accept_errors_logged = Instant::now() - Duration::from_secs(60);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors, or the peer left before the accept: wait
                    // a moment rather than spin.
                    if accept_errors_logged.elapsed() > Duration::from_secs(5) {
                        tracing::warn!(%error, "cannot accept a connection");
                        accept_errors_logged = Instant::now();
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        if connections.len() >= limits.max_connections && !connections.shed_one() {
            count(&observer, Closed::Refused);
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        let state = connections.open();
        if let Some(observer) = &observer {
            observer.opened();
        }
        let io = TokioIo::new(Watched {
            stream,
            state: Arc::clone(&state),
        });
        let service = Tracked {
            router: router.clone(),
            state: Arc::clone(&state),
        };
        let mut builder = http1::Builder::new();
        // Our own clocks (below) do what hyper's header timer would.
        builder.timer(TokioTimer::new()).header_read_timeout(None);
        let connection = graceful.watch(builder.serve_connection(io, service));
        let connections = Arc::clone(&connections);
        let observer = observer.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = connection => {}
                reason = watchdog(&state, limits) => count(&observer, reason),
            }
            connections.close(state.id);
            if let Some(observer) = &observer {
                observer.ended();
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Serves `app` with the default limits (and its bodies' timeout) on a task of its own,
/// until `shutdown`: the local stand-ins (the emulators) are as hard to hold as the
/// bridge.
pub fn spawn_with_default_limits(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<std::io::Result<()>> {
    let limits = Limits::default();
    let app = app.layer(body_timeout_layer(&limits));
    tokio::spawn(serve(listener, app, limits, None, shutdown))
}

fn count(observer: &Option<Arc<dyn Observer>>, reason: Closed) {
    if let Some(observer) = observer {
        observer.closed(reason);
    }
}

/// Resolves when `state`'s connection must close, with why.
async fn watchdog(state: &ConnectionState, limits: Limits) -> Closed {
    loop {
        let wait = match state.due(limits) {
            Ok(wait) => wait,
            Err(reason) => return reason,
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = state.shed.notified() => return Closed::Shed,
        }
    }
}

/// The open connections, to find the one resting longest when the server is full.
#[derive(Default)]
struct Connections {
    open: Mutex<HashMap<u64, Arc<ConnectionState>>>,
    next_id: AtomicU64,
}

impl Connections {
    fn len(&self) -> usize {
        lock(&self.open).len()
    }

    fn open(&self) -> Arc<ConnectionState> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(ConnectionState::new(id));
        lock(&self.open).insert(id, Arc::clone(&state));
        state
    }

    fn close(&self, id: u64) {
        lock(&self.open).remove(&id);
    }

    /// Closes the connection that has rested longest without a request in progress;
    /// false if every connection is busy.
    fn shed_one(&self) -> bool {
        let mut open = lock(&self.open);
        let oldest = open
            .values()
            .filter(|state| !state.busy.load(Ordering::Relaxed))
            .min_by_key(|state| state.resting_since())
            .map(|state| state.id);
        let Some(id) = oldest else {
            return false;
        };
        if let Some(state) = open.remove(&id) {
            // Its task counts it as shed when it wakes up.
            state.shed.notify_one();
        }
        true
    }
}

/// One connection's clock. Times are milliseconds since the server's epoch, so that
/// connections can be compared.
struct ConnectionState {
    id: u64,
    /// A request is being read or answered.
    busy: AtomicBool,
    /// Requests whose headers were complete.
    requests: AtomicU64,
    /// When the connection last started to rest (opening, or the end of a response).
    resting_since: AtomicU64,
    /// When the first byte since then arrived (0: none yet).
    first_byte: AtomicU64,
    shed: Notify,
}

impl ConnectionState {
    fn new(id: u64) -> Self {
        let state = Self {
            id,
            busy: AtomicBool::new(false),
            requests: AtomicU64::new(0),
            resting_since: AtomicU64::new(0),
            first_byte: AtomicU64::new(0),
            shed: Notify::new(),
        };
        state.resting_since.store(state.now(), Ordering::Relaxed);
        state
    }

    fn now(&self) -> u64 {
        static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        let epoch = EPOCH.get_or_init(Instant::now);
        // At least 1, so that 0 keeps meaning "not yet".
        (epoch.elapsed().as_millis() as u64).max(1)
    }

    fn resting_since(&self) -> u64 {
        self.resting_since.load(Ordering::Relaxed)
    }

    fn received(&self) {
        if !self.busy.load(Ordering::Relaxed) && self.first_byte.load(Ordering::Relaxed) == 0 {
            self.first_byte.store(self.now(), Ordering::Relaxed);
        }
    }

    fn request_started(&self) {
        self.busy.store(true, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.first_byte.store(0, Ordering::Relaxed);
    }

    fn request_ended(&self) {
        self.resting_since.store(self.now(), Ordering::Relaxed);
        self.first_byte.store(0, Ordering::Relaxed);
        self.busy.store(false, Ordering::Relaxed);
    }

    /// How long until the limits must be looked at again, or why the connection must
    /// close now.
    fn due(&self, limits: Limits) -> Result<Duration, Closed> {
        // A busy connection is bounded by the body timeout and the handler's own.
        let recheck = Duration::from_secs(1);
        if self.busy.load(Ordering::Relaxed) {
            return Ok(recheck);
        }
        let now = self.now();
        let first_byte = self.first_byte.load(Ordering::Relaxed);
        let (since, limit, reason) = if first_byte != 0 {
            (first_byte, limits.header, Closed::HeaderTimeout)
        } else if self.requests.load(Ordering::Relaxed) == 0 {
            (self.resting_since(), limits.header, Closed::HeaderTimeout)
        } else {
            (self.resting_since(), limits.idle, Closed::IdleTimeout)
        };
        let deadline = since + limit.as_millis() as u64;
        if now >= deadline {
            return Err(reason);
        }
        Ok(Duration::from_millis(deadline - now).min(recheck))
    }
}

/// The connection's socket, telling its clock when bytes arrive.
struct Watched {
    stream: TcpStream,
    state: Arc<ConnectionState>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.state.received();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// The router, telling the connection's clock when a request starts and ends.
#[derive(Clone)]
struct Tracked {
    router: Router,
    state: Arc<ConnectionState>,
}

impl hyper::service::Service<hyper::Request<Incoming>> for Tracked {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn call(&self, request: hyper::Request<Incoming>) -> Self::Future {
        self.state.request_started();
        let router = self.router.clone();
        let state = Arc::clone(&self.state);
        Box::pin(async move {
            let response = router.oneshot(request.map(axum::body::Body::new)).await;
            state.request_ended();
            response
        })
    }
}

/// Resolves on Ctrl-C or SIGTERM (what Cloud Run sends before stopping an instance).
///
/// The handlers are installed when this is called, not when the future is first
/// polled: a SIGTERM sent as soon as the server says it listens would otherwise meet
/// the default action, which kills the process without a drain. Call it before
/// saying so.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let (interrupt, terminate) = {
        use tokio::signal::unix::{signal, SignalKind};
        (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let received = |handler: std::io::Result<tokio::signal::unix::Signal>,
                            name: &'static str| async move {
                match handler {
                    Ok(mut signal) => {
                        signal.recv().await;
                    }
                    Err(error) => {
                        tracing::error!(%error, "cannot listen for {name}");
                        std::future::pending::<()>().await;
                    }
                }
            };
            tokio::select! {
                () = received(interrupt, "Ctrl-C") => {},
                () = received(terminate, "SIGTERM") => {},
            }
        }
        #[cfg(not(unix))]
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
        tracing::info!("shutting down: finishing requests in flight");
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            header: Duration::from_millis(100),
            body: Duration::from_millis(100),
            idle: Duration::from_millis(300),
            max_connections: 4,
        }
    }

    #[test]
    fn a_new_connection_has_the_header_timeout_then_rests_for_the_idle_timeout() {
        let state = ConnectionState::new(0);
        assert!(state.due(limits()).is_ok());
        std::thread::sleep(Duration::from_millis(120));
        assert_eq!(state.due(limits()), Err(Closed::HeaderTimeout));
        state.request_started();
        std::thread::sleep(Duration::from_millis(120));
        assert!(
            state.due(limits()).is_ok(),
            "a busy connection is not timed here"
        );
        state.request_ended();
        std::thread::sleep(Duration::from_millis(120));
        assert!(
            state.due(limits()).is_ok(),
            "resting within the idle timeout"
        );
        state.received();
        std::thread::sleep(Duration::from_millis(120));
        assert_eq!(
            state.due(limits()),
            Err(Closed::HeaderTimeout),
            "bytes of a next request started the header clock"
        );
    }

    #[test]
    fn the_connection_resting_longest_is_shed_first_and_busy_ones_never() {
        let connections = Connections::default();
        let first = connections.open();
        std::thread::sleep(Duration::from_millis(5));
        let second = connections.open();
        second.request_started();
        assert!(connections.shed_one());
        assert_eq!(connections.len(), 1);
        assert!(lock(&connections.open).contains_key(&second.id));
        assert!(!connections.shed_one(), "the busy one stays");
        drop(first);
    }
}
