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
use hyper::body::{Bytes, Frame, Incoming, SizeHint};
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
    /// A request's body may fall silent for this long at most.
    pub body: Duration,
    /// A request's headers and body together must arrive within this, counted from its
    /// first byte.
    pub request: Duration,
    /// How long a keep-alive connection may rest between requests.
    pub idle: Duration,
    /// Open connections at most; past it, the one resting longest is closed.
    pub max_connections: usize,
    /// A request's start line and headers, in bytes, at most; past it, 431.
    pub max_header_bytes: usize,
}

pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(15);
/// The body timeout and five seconds more: a body that pauses once for almost the body
/// timeout still arrives, and a client that trickles holds its slot 20 s, not for ever.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// Twilio's webhooks carry a few headers of a few hundred bytes; browsers and proxies
/// stay well under 16 KiB. hyper's own default is about 400 KiB.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 32 * 1024;
/// The least `max_header_bytes` can be: hyper's smallest read buffer.
pub const MIN_MAX_HEADER_BYTES: usize = 8 * 1024;
/// What [`Limits::default`] counts for one request's body when it derives the
/// connection cap; a server that takes larger bodies derives its own.
pub const DEFAULT_BODY_ALLOWANCE: usize = 64 * 1024;
/// Longer than the idle timeout of common load balancers (60 s), so that they close
/// first and never send a request on a connection being closed.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(75);

impl Default for Limits {
    fn default() -> Self {
        Self {
            header: DEFAULT_HEADER_TIMEOUT,
            body: DEFAULT_BODY_TIMEOUT,
            request: DEFAULT_REQUEST_TIMEOUT,
            idle: DEFAULT_IDLE_TIMEOUT,
            max_connections: default_max_connections(),
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
        }
    }
}

/// The connection cap this process can afford with the default limits; see
/// [`ConnectionCap`].
pub fn default_max_connections() -> usize {
    let per_connection = per_connection_bytes(DEFAULT_MAX_HEADER_BYTES, DEFAULT_BODY_ALLOWANCE);
    ConnectionCap::of_this_process(per_connection).max
}

/// Memory one connection holds besides its request's headers and body: hyper's write
/// buffer and state, its task, the socket's buffers in the kernel (charged to the
/// cgroup too), and the work its request starts.
pub const CONNECTION_OVERHEAD_BYTES: u64 = 64 * 1024;

/// The most memory one connection can hold: its headers, its body, and the overhead.
pub fn per_connection_bytes(max_header_bytes: usize, max_body_bytes: usize) -> u64 {
    max_header_bytes as u64 + max_body_bytes as u64 + CONNECTION_OVERHEAD_BYTES
}

/// Fewer connections than this would make the server useless; a limit so low is a
/// mistake better seen in the log than obeyed.
const MIN_CONNECTIONS: usize = 16;

/// What bounds the connection cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapBound {
    /// Half the open-files limit, less a reserve: each webhook in flight also holds a
    /// connection to the agent, and the process needs files of its own.
    OpenFiles { files: usize },
    /// Half the memory limit (the rest is the process's own), over the most one
    /// connection can hold.
    Memory { limit: u64, per_connection: u64 },
}

/// How many connections the server may hold, and what bounds it: the lower of what the
/// open-files limit and the memory limit (a container's cgroup) allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionCap {
    pub max: usize,
    pub bound: CapBound,
}

impl ConnectionCap {
    /// The cap for `files` open files and `memory_limit` bytes (`None`: no limit), each
    /// connection holding up to `per_connection` bytes. Pure.
    pub fn derive(files: usize, memory_limit: Option<u64>, per_connection: u64) -> Self {
        let by_files = Self {
            max: (files / 2).saturating_sub(32).max(MIN_CONNECTIONS),
            bound: CapBound::OpenFiles { files },
        };
        let Some(limit) = memory_limit else {
            return by_files;
        };
        let by_memory = (limit / 2) / per_connection.max(1);
        let by_memory = usize::try_from(by_memory)
            .unwrap_or(usize::MAX)
            .max(MIN_CONNECTIONS);
        if by_memory < by_files.max {
            Self {
                max: by_memory,
                bound: CapBound::Memory {
                    limit,
                    per_connection,
                },
            }
        } else {
            by_files
        }
    }

    /// The cap for this process's open-files limit and its cgroup's memory limit.
    pub fn of_this_process(per_connection: u64) -> Self {
        Self::derive(open_files_limit(), memory_limit(), per_connection)
    }
}

impl std::fmt::Display for ConnectionCap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.bound {
            CapBound::OpenFiles { files } => write!(
                f,
                "{} (half the open-files limit, {files}, less a reserve)",
                self.max
            ),
            CapBound::Memory {
                limit,
                per_connection,
            } => write!(
                f,
                "{} (half the memory limit, {} MiB, at {} KiB a connection)",
                self.max,
                limit / (1024 * 1024),
                per_connection / 1024
            ),
        }
    }
}

/// The memory limit of this process's cgroup (v2 `memory.max`, or v1
/// `memory.limit_in_bytes`), as Cloud Run and other containers set it; `None` when
/// there is none or it cannot be read.
pub fn memory_limit() -> Option<u64> {
    [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .find_map(|path| parse_memory_limit(&std::fs::read_to_string(path).ok()?))
}

/// A cgroup's memory limit: `max` (v2) or a number near `i64::MAX` (v1) is no limit.
fn parse_memory_limit(text: &str) -> Option<u64> {
    let limit: u64 = text.trim().parse().ok()?;
    // cgroup v1 says "unlimited" as the largest page-aligned i64.
    (limit < 1 << 60).then_some(limit)
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
    /// Headers and body not complete within the request timeout (a trickling client).
    RequestTimeout,
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
            Closed::RequestTimeout => "request_timeout",
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
            request_timeout: limits.request,
        };
        let mut builder = http1::Builder::new();
        // Our own clocks (below) do what hyper's header timer would. Headers past the
        // limit get 431 and the connection closes; hyper's read buffer, which would
        // otherwise grow to about 400 KiB for a client dribbling headers, stays as small.
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(None)
            .max_header_size(limits.max_header_bytes)
            .max_buf_size(limits.max_header_bytes.max(MIN_MAX_HEADER_BYTES));
        let connection = graceful.watch(builder.serve_connection(io, service));
        let connections = Arc::clone(&connections);
        let observer = observer.clone();
        tokio::spawn(async move {
            let closed = tokio::select! {
                _ = connection => None,
                reason = watchdog(&state, limits) => Some(reason),
            };
            // A request cut by its deadline was answered (408) and closed by hyper.
            let closed = closed.or_else(|| state.timed_out().then_some(Closed::RequestTimeout));
            if let Some(reason) = closed {
                count(&observer, reason);
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
    /// When the request being read had its first byte.
    reading_since: AtomicU64,
    /// The request's body is still to be read.
    body_pending: AtomicBool,
    /// The request's deadline passed before its body was read.
    timed_out: AtomicBool,
    shed: Notify,
}

/// The instant times of [`ConnectionState`] count from.
fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// After the request's deadline, how long a handler that holds the body without reading
/// it has before the connection is closed under it: time to answer 408 when it reads.
const ANSWER_GRACE: Duration = Duration::from_secs(1);

impl ConnectionState {
    fn new(id: u64) -> Self {
        let state = Self {
            id,
            busy: AtomicBool::new(false),
            requests: AtomicU64::new(0),
            resting_since: AtomicU64::new(0),
            first_byte: AtomicU64::new(0),
            reading_since: AtomicU64::new(0),
            body_pending: AtomicBool::new(false),
            timed_out: AtomicBool::new(false),
            shed: Notify::new(),
        };
        state.resting_since.store(state.now(), Ordering::Relaxed);
        state
    }

    fn now(&self) -> u64 {
        // At least 1, so that 0 keeps meaning "not yet".
        (epoch().elapsed().as_millis() as u64).max(1)
    }

    /// When the request being read must have arrived whole.
    fn request_deadline(&self, limit: Duration) -> tokio::time::Instant {
        let since = Duration::from_millis(self.reading_since.load(Ordering::Relaxed));
        tokio::time::Instant::from_std(epoch() + since + limit)
    }

    fn timed_out(&self) -> bool {
        self.timed_out.load(Ordering::Relaxed)
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
        // Its first byte; or now, for a request whose bytes came while the one before
        // was answered.
        let first_byte = match self.first_byte.load(Ordering::Relaxed) {
            0 => self.now(),
            at => at,
        };
        self.reading_since.store(first_byte, Ordering::Relaxed);
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
        let recheck = Duration::from_secs(1);
        let now = self.now();
        if self.busy.load(Ordering::Relaxed) {
            // Once its body is read, a request is bounded by the handler's own timeouts;
            // until then by the request timeout, which the body itself enforces when it
            // is read (see `TimedBody`), and this when it is not.
            if !self.body_pending.load(Ordering::Relaxed) {
                return Ok(recheck);
            }
            let since = self.reading_since.load(Ordering::Relaxed);
            let deadline = since + (limits.request + ANSWER_GRACE).as_millis() as u64;
            if now >= deadline {
                return Err(Closed::RequestTimeout);
            }
            return Ok(Duration::from_millis(deadline - now).min(recheck));
        }
        let first_byte = self.first_byte.load(Ordering::Relaxed);
        let (since, limit, reason) = if first_byte != 0 {
            (
                first_byte,
                limits.header.min(limits.request),
                Closed::HeaderTimeout,
            )
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
    request_timeout: Duration,
}

impl hyper::service::Service<hyper::Request<Incoming>> for Tracked {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn call(&self, request: hyper::Request<Incoming>) -> Self::Future {
        self.state.request_started();
        let router = self.router.clone();
        let state = Arc::clone(&self.state);
        let request_timeout = self.request_timeout;
        Box::pin(async move {
            let request = request
                .map(|body| axum::body::Body::new(TimedBody::new(body, &state, request_timeout)));
            let mut response = router.oneshot(request).await;
            if state.timed_out() {
                // The rest of the body is never read: the connection cannot carry
                // another request.
                if let Ok(response) = &mut response {
                    response.headers_mut().insert(
                        hyper::header::CONNECTION,
                        hyper::header::HeaderValue::from_static("close"),
                    );
                }
            }
            state.request_ended();
            response
        })
    }
}

/// Reading a request's body past its deadline failed with this: the request's headers
/// and body did not arrive within the request timeout. A server answers it with 408.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestTimeout(pub Duration);

impl std::fmt::Display for RequestTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the request did not arrive within {:?}", self.0)
    }
}

impl std::error::Error for RequestTimeout {}

/// A request's body, which fails with [`RequestTimeout`] once the request's deadline
/// passes however steadily its bytes trickle, and tells the connection's clock when
/// it is read or let go.
struct TimedBody {
    inner: Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
    limit: Duration,
    state: Arc<ConnectionState>,
    finished: bool,
}

impl TimedBody {
    fn new(inner: Incoming, state: &Arc<ConnectionState>, limit: Duration) -> Self {
        let finished = hyper::body::Body::is_end_stream(&inner);
        state.body_pending.store(!finished, Ordering::Relaxed);
        Self {
            deadline: Box::pin(tokio::time::sleep_until(state.request_deadline(limit))),
            inner,
            limit,
            state: Arc::clone(state),
            finished,
        }
    }

    fn finish(&mut self) {
        self.finished = true;
        self.state.body_pending.store(false, Ordering::Relaxed);
    }
}

impl hyper::body::Body for TimedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        if this.finished {
            return Poll::Ready(None);
        }
        // Before the next piece, however soon it came: a steady trickle must not
        // outlast the deadline.
        if this.deadline.as_mut().poll(cx).is_ready() {
            this.finish();
            this.state.timed_out.store(true, Ordering::Relaxed);
            return Poll::Ready(Some(Err(Box::new(RequestTimeout(this.limit)))));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(None) => {
                this.finish();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(error))) => {
                this.finish();
                Poll::Ready(Some(Err(Box::new(error))))
            }
            Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.finished || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for TimedBody {
    fn drop(&mut self) {
        // A handler that let the body go will not read it: hyper reads no more of it.
        self.finish();
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
            request: Duration::from_millis(150),
            idle: Duration::from_millis(300),
            max_connections: 4,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
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

    #[test]
    fn a_request_whose_body_is_pending_is_timed_from_its_first_byte() {
        let state = ConnectionState::new(0);
        state.received();
        state.request_started();
        state.body_pending.store(true, Ordering::Relaxed);
        assert!(state.due(limits()).is_ok());
        std::thread::sleep(limits().request + ANSWER_GRACE + Duration::from_millis(20));
        assert_eq!(state.due(limits()), Err(Closed::RequestTimeout));
        state.body_pending.store(false, Ordering::Relaxed);
        assert!(
            state.due(limits()).is_ok(),
            "once read, the handler's own timeouts bound it"
        );
    }

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn the_cap_is_the_lower_of_what_files_and_memory_allow() {
        let per_connection = per_connection_bytes(32 * 1024, 64 * 1024);
        assert_eq!(per_connection, 160 * 1024);
        // Cloud Run's 512 MiB: 256 MiB for connections, 1 638 of them.
        let cap = ConnectionCap::derive(65_536, Some(512 * MIB), per_connection);
        assert_eq!(cap.max, 1638);
        assert_eq!(
            cap.bound,
            CapBound::Memory {
                limit: 512 * MIB,
                per_connection
            }
        );
        assert!(cap.to_string().contains("512 MiB"), "{cap}");
        // Few files and much memory: the files bound it.
        let cap = ConnectionCap::derive(1024, Some(8 * 1024 * MIB), per_connection);
        assert_eq!(cap.max, 480);
        assert_eq!(cap.bound, CapBound::OpenFiles { files: 1024 });
        // No memory limit: the files alone.
        assert_eq!(ConnectionCap::derive(1024, None, per_connection).max, 480);
        // A tiny limit still leaves a usable server.
        assert_eq!(
            ConnectionCap::derive(1024, Some(MIB), per_connection).max,
            MIN_CONNECTIONS
        );
    }

    #[test]
    fn a_cgroup_memory_limit_is_read_in_either_version() {
        assert_eq!(parse_memory_limit("536870912\n"), Some(512 * MIB));
        assert_eq!(parse_memory_limit("max\n"), None, "v2: no limit");
        assert_eq!(
            parse_memory_limit("9223372036854771712\n"),
            None,
            "v1: no limit"
        );
        assert_eq!(parse_memory_limit(""), None);
    }
}
