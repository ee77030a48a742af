//! An admission whose answer is lost after the server took it, against a real
//! `redis-server`: between the bridge and the server, a proxy forwards the admission,
//! lets the server run it, and closes the connection instead of passing the answer on
//! (a master that failed before answering, or a connection that closed after the
//! write).

use super::super::SharedState;
use crate::config::Settings;
use crate::metrics::Metrics;
use crate::session::SessionId;
use crate::state::{Admission, Held, Json, MessageKey};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixStream};

const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";
/// The turn of the admission whose answer the proxy loses.
const LOSE_MY_ANSWER: &str = "lose-my-answer";

/// A `redis-server` on a Unix socket of its own (no port to race for), stopped and
/// removed when dropped.
struct Server {
    child: std::process::Child,
    dir: PathBuf,
}

impl Server {
    async fn start() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "bridge-admission-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("redis.sock");
        let child = std::process::Command::new("redis-server")
            .args(["--port", "0", "--save", "", "--appendonly", "no"])
            .arg("--unixsocket")
            .arg(&socket)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        let server = Self { child, dir };
        for _ in 0..200 {
            if UnixStream::connect(server.socket()).await.is_ok() {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("redis-server did not listen on {}", socket.display());
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("redis.sock")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TCP proxy to the server that, once, loses the answer to the first request that
/// carries [`LOSE_MY_ANSWER`]: the request reaches the server, which runs it; its
/// answer (and anything after it on that connection) is dropped, and the connection
/// closed. Every other connection and request goes through untouched.
struct LosingProxy {
    url: String,
    lost: Arc<AtomicBool>,
}

impl LosingProxy {
    async fn start(socket: PathBuf) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("redis://{}", listener.local_addr().unwrap());
        let lost = Arc::new(AtomicBool::new(false));
        let losing = Arc::clone(&lost);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = UnixStream::connect(&socket).await else {
                    continue;
                };
                tokio::spawn(forward(client, server, Arc::clone(&losing)));
            }
        });
        Self { url, lost }
    }

    fn lost_an_answer(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }
}

/// One connection through the proxy.
async fn forward(client: TcpStream, server: UnixStream, lost: Arc<AtomicBool>) {
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_server, mut to_server) = server.into_split();
    // Set once the marked request went to the server, on this connection.
    let marked = Arc::new(tokio::sync::Notify::new());
    let sent_marked = Arc::clone(&marked);
    let requests = async move {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let Ok(n) = from_client.read(&mut buffer).await else {
                return;
            };
            if n == 0 || to_server.write_all(&buffer[..n]).await.is_err() {
                return;
            }
            let carries = buffer[..n]
                .windows(LOSE_MY_ANSWER.len())
                .any(|w| w == LOSE_MY_ANSWER.as_bytes());
            if carries && !lost.swap(true, Ordering::SeqCst) {
                marked.notify_one();
                // Keep the server's side open until the answers are lost.
                std::future::pending::<()>().await;
            }
        }
    };
    let answers = async move {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let n = tokio::select! {
                read = from_server.read(&mut buffer) => match read {
                    Ok(n) if n > 0 => n,
                    _ => return,
                },
                () = sent_marked.notified() => {
                    // The server answers the marked request (it ran): that answer,
                    // and any other in flight, is lost with the connection.
                    let _ = from_server.read(&mut buffer).await;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    return;
                }
            };
            if to_client.write_all(&buffer[..n]).await.is_err() {
                return;
            }
        }
    };
    // Either side ending ends the connection: both halves are dropped.
    tokio::select! {
        () = requests => {}
        () = answers => {}
    }
}

fn settings(url: &str) -> Settings {
    let vars = [
        ("AGENT_TYPE", "ES"),
        ("GCP_PROJECT", "p"),
        ("TWILIO_ACCOUNT_SID", ACCOUNT),
        ("TWILIO_AUTH_TOKEN", "token"),
        ("STATE_URL", url),
        ("STATE_CLUSTER", "off"),
        ("STATE_TIMEOUT", "2s"),
    ];
    Settings::from_vars(
        &vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
    .unwrap()
}

fn message(n: u32) -> MessageKey {
    MessageKey {
        account_sid: ACCOUNT.to_owned(),
        message_sid: format!("SM{n:032x}"),
    }
}

/// What the store holds of `session`'s conversation: how many turns were taken, how
/// many are done, and which are open.
async fn conversation(
    connection: &mut redis::aio::MultiplexedConnection,
    state: &SharedState,
    session: &SessionId,
) -> (u64, u64, Vec<String>) {
    let fields: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
        .arg(state.layout.conversation(session))
        .query_async(connection)
        .await
        .unwrap();
    let number = |name: &str| fields.get(name).map_or(0, |v| v.parse().unwrap());
    let mut open: Vec<String> = fields
        .keys()
        .filter(|field| field.ends_with(":token"))
        .cloned()
        .collect();
    open.sort();
    (number("next"), number("done"), open)
}

/// A store behind a [`LosingProxy`] to a new server, its scripts loaded (a first turn
/// made and finished): the answer lost is then a script's that ran.
struct Setup {
    _server: Server,
    proxy: LosingProxy,
    state: Arc<SharedState>,
    settings: Settings,
    connection: redis::aio::MultiplexedConnection,
}

impl Setup {
    async fn new() -> Self {
        let server = Server::start().await;
        let proxy = LosingProxy::start(server.socket()).await;
        let settings = settings(&proxy.url);
        let state = SharedState::open(
            &settings.state,
            settings.rate_limits,
            Arc::new(Metrics::new()),
        )
        .await
        .unwrap();
        let client = redis::Client::open(proxy.url.as_str()).unwrap();
        let connection = client.get_multiplexed_async_connection().await.unwrap();
        let setup = Self {
            _server: server,
            proxy,
            state,
            settings,
            connection,
        };
        let warm = setup.session("+15550000001");
        let Admission::First(first) = setup
            .state
            .admit(Some(message(1)), warm, Json::from(""), true, &[])
            .await
        else {
            panic!("a first delivery")
        };
        let Held::Shared(first) = first.held else {
            panic!("admitted in the store")
        };
        first.finish(Some(Json::from("{}"))).await;
        assert!(!setup.proxy.lost_an_answer());
        setup
    }

    fn session(&self, from: &str) -> SessionId {
        SessionId::for_conversation(&self.settings.session_key, ACCOUNT, from, "+15550009999")
    }

    /// The conversation's turns taken, turns done, and open turns.
    async fn conversation(&mut self, session: &SessionId) -> (u64, u64, Vec<String>) {
        conversation(&mut self.connection, &self.state, session).await
    }
}

#[tokio::test]
async fn an_admission_whose_answer_was_lost_is_admitted_again_as_the_same_turn() {
    let mut setup = Setup::new().await;
    let lossy = setup.session("+15550000002");
    let admitted = setup
        .state
        .admit(
            Some(message(2)),
            lossy,
            Json::from(LOSE_MY_ANSWER),
            true,
            &[],
        )
        .await;
    assert!(
        setup.proxy.lost_an_answer(),
        "the server ran it, its answer was lost"
    );
    // The turn the server made is this instance's, to work and finish: not a second
    // turn, not a repeat of itself, not this process's own state beside a turn left
    // in the store for another instance to answer again once its lease runs out.
    let Admission::First(ticket) = admitted else {
        panic!("the message was taken for a repeat of itself")
    };
    let Held::Shared(ticket) = ticket.held else {
        panic!("handled with this process's state: the store keeps a turn nobody works")
    };
    let (next, done, open) = setup.conversation(&lossy).await;
    assert_eq!((next, done, open), (1, 0, vec!["1:token".to_owned()]));
    ticket.finish(Some(Json::from("{\"answered\":1}"))).await;
    let (next, done, open) = setup.conversation(&lossy).await;
    assert_eq!((next, done, open.len()), (1, 1, 0), "{open:?}");
    // A re-delivery now gets the one outcome.
    let again = setup
        .state
        .admit(Some(message(2)), lossy, Json::from(""), true, &[])
        .await;
    assert!(matches!(again, Admission::Repeat(_)));
}

#[tokio::test]
async fn a_turn_of_no_message_whose_answer_was_lost_is_not_made_twice() {
    // The human side of a hand-over writing: a turn with no MessageSid to claim.
    let mut setup = Setup::new().await;
    let lossy = setup.session("+15550000003");
    let admitted = setup
        .state
        .admit(None, lossy, Json::from(LOSE_MY_ANSWER), false, &[])
        .await;
    assert!(
        setup.proxy.lost_an_answer(),
        "the server ran it, its answer was lost"
    );
    let Admission::First(ticket) = admitted else {
        panic!("a turn of no message is never a repeat")
    };
    let Held::Shared(ticket) = ticket.held else {
        panic!("handled with this process's state")
    };
    // One turn: a second would hold the conversation up until its lease ran out.
    let (next, done, open) = setup.conversation(&lossy).await;
    assert_eq!((next, done, open), (1, 0, vec!["1:token".to_owned()]));
    ticket.finish(None).await;
    let (next, done, open) = setup.conversation(&lossy).await;
    assert_eq!((next, done, open.len()), (1, 1, 0), "{open:?}");
}

#[test]
fn an_answer_may_be_lost_only_after_the_request_may_have_reached_the_server() {
    use super::answer_lost;
    use crate::retry::Verdict;
    use crate::state::StoreError;
    use redis::{ErrorKind, RedisError, ServerErrorKind};
    let io =
        |kind: std::io::ErrorKind| StoreError::Redis(RedisError::from(std::io::Error::from(kind)));
    let server = |kind: ServerErrorKind, text: &'static str| {
        StoreError::Redis(RedisError::from((ErrorKind::Server(kind), text)))
    };
    let lost = [
        StoreError::Timeout(Duration::from_millis(300)),
        io(std::io::ErrorKind::BrokenPipe),
        io(std::io::ErrorKind::ConnectionReset),
        io(std::io::ErrorKind::UnexpectedEof),
        server(ServerErrorKind::TryAgain, "TRYAGAIN"),
        server(ServerErrorKind::ClusterDown, "CLUSTERDOWN"),
    ];
    for error in &lost {
        assert_eq!(answer_lost(error), Verdict::Retry, "{error}");
    }
    let answered_or_never_sent = [
        // Before the first connection: nothing was sent.
        StoreError::Timeout(Duration::ZERO),
        io(std::io::ErrorKind::ConnectionRefused),
        server(ServerErrorKind::ResponseError, "ERR a script failed"),
        StoreError::Corrupt("admit answered []".into()),
    ];
    for error in &answered_or_never_sent {
        assert_eq!(answer_lost(error), Verdict::Final, "{error}");
    }
}
