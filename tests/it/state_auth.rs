//! Authenticating to the shared store as Memorystore wants it: IAM access tokens from a
//! stand-in metadata server as the password of each new connection, TLS by the node's
//! IP address, and what `check` says of both.

use crate::helpers::*;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A stand-in for the metadata server's token endpoint: it hands out `token` to those
/// who ask with `Metadata-Flavor: Google`, and remembers what it handed out.
struct TokenServer {
    addr: std::net::SocketAddr,
    state: Arc<Mutex<Tokens>>,
}

struct Tokens {
    /// What it hands out now.
    token: String,
    /// Every token handed out, in order.
    served: Vec<String>,
}

/// How long the tokens live: just over the four minutes before expiry at which
/// google-cloud-auth refreshes, so that it asks again every two seconds or so.
const EXPIRES_IN: u64 = 242;

impl TokenServer {
    async fn start(token: &str) -> Self {
        use axum::http::{HeaderMap, StatusCode};
        let state = Arc::new(Mutex::new(Tokens {
            token: token.to_owned(),
            served: Vec::new(),
        }));
        let shared = Arc::clone(&state);
        let app = axum::Router::new().route(
            "/computeMetadata/v1/instance/service-accounts/default/token",
            axum::routing::get(move |headers: HeaderMap| async move {
                if headers.get("metadata-flavor").and_then(|v| v.to_str().ok()) != Some("Google") {
                    return Err((StatusCode::FORBIDDEN, "missing Metadata-Flavor"));
                }
                let mut tokens = shared.lock().unwrap();
                let token = tokens.token.clone();
                tokens.served.push(token.clone());
                Ok(axum::Json(serde_json::json!({
                    "access_token": token,
                    "expires_in": EXPIRES_IN,
                    "token_type": "Bearer",
                })))
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, state }
    }

    fn host(&self) -> String {
        self.addr.to_string()
    }

    /// From now on, `token`.
    fn hand_out(&self, token: &str) {
        self.state.lock().unwrap().token = token.to_owned();
    }

    fn served(&self) -> Vec<String> {
        self.state.lock().unwrap().served.clone()
    }
}

const TOKEN_ONE: &str = "ya29.first-token-of-the-service-account";
const TOKEN_TWO: &str = "ya29.second-token-of-the-service-account";

/// A connection of the test's own to `redis`, as the default user with `password`.
async fn admin(redis: &RedisServer, password: &str) -> redis::aio::MultiplexedConnection {
    let url = format!("redis://default:{password}@127.0.0.1:{}", redis.port);
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// The keys that hold `message_sid`, whatever their layout.
async fn keys_of(
    connection: &mut redis::aio::MultiplexedConnection,
    message_sid: &str,
) -> Vec<String> {
    redis::cmd("KEYS")
        .arg(format!("*{message_sid}*"))
        .query_async(connection)
        .await
        .unwrap()
}

/// How many times the server refused a password since it started.
async fn wrong_passwords(connection: &mut redis::aio::MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("errorstats")
        .query_async(connection)
        .await
        .unwrap();
    info.lines()
        .find_map(|line| line.strip_prefix("errorstat_WRONGPASS:count="))
        .and_then(|n| n.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

/// `serve` (or `check`) in `local`'s directory, with the metadata server at `metadata`
/// in its environment: google-cloud-auth reads `GCE_METADATA_HOST` there, not in `.env`.
fn command_with_metadata(local: &Local, args: &[&str], metadata: &str) -> std::process::Command {
    local.dir.command(args, &[("GCE_METADATA_HOST", metadata)])
}

#[tokio::test]
async fn new_connections_authenticate_with_the_iam_token_valid_then() {
    let metadata = TokenServer::start(TOKEN_ONE).await;
    let redis = RedisServer::start_with(vec!["--requirepass".into(), TOKEN_ONE.into()]).await;
    let url = redis.url();
    let local = Local::start(&[
        ("STATE_URL", url.as_str()),
        ("STATE_AUTH", "iam"),
        ("REPLY_MODE", "twiml"),
        // The wait below writes until a message lands on the store.
        ("RATE_LIMIT_PER_CONVERSATION", "off"),
        ("AGENT_CALLS_PER_HOUR", "off"),
    ])
    .await;
    let mut serve = Running::spawn(
        &mut command_with_metadata(&local, &["serve"], &metadata.host()),
        Output::Stderr,
    );
    let port = serve.find_line(listening_port).await;
    let phone = phone_at(port);
    let mut admin = admin(&redis, TOKEN_ONE).await;

    // On the store with the first token.
    let first = says_as("hi", &sid("SM", 0x1a01));
    assert_eq!(
        texts(&send_from(&phone, &first).await),
        ["Hello from the agent"]
    );
    assert!(!keys_of(&mut admin, &sid("SM", 0x1a01)).await.is_empty());

    // The token changes while the bridge runs: the server takes only the new one, the
    // metadata server hands it out, and the bridge's connections are closed.
    metadata.hand_out(TOKEN_TWO);
    let _: () = redis::cmd("CONFIG")
        .arg(&["SET", "requirepass", TOKEN_TWO][..])
        .query_async(&mut admin)
        .await
        .unwrap();
    eventually(
        "google-cloud-auth to fetch the second token",
        Duration::from_secs(15),
        || async {
            ready_if(metadata.served(), |served| {
                served.contains(&TOKEN_TWO.to_owned())
            })
        },
    )
    .await;
    let killed: i64 = redis::cmd("CLIENT")
        .arg(&["KILL", "TYPE", "normal", "SKIPME", "yes"][..])
        .query_async(&mut admin)
        .await
        .unwrap();
    assert!(killed >= 1, "the bridge's connections were open");

    // New messages are answered, and soon on the store again: the new connections
    // authenticated with the second token. Every one is answered meanwhile.
    let mut n = 0x1b00;
    eventually(
        "a message answered on the store after the new token",
        Duration::from_secs(15),
        || {
            n += 1;
            let message_sid = sid("SM", n);
            let (phone, mut admin) = (&phone, admin.clone());
            async move {
                let answer = send_from(phone, &says_as("hi", &message_sid)).await;
                assert_eq!(texts(&answer), ["Hello from the agent"]);
                ready_if(keys_of(&mut admin, &message_sid).await, |keys| {
                    !keys.is_empty()
                })
            }
        },
    )
    .await;
    let after = says_as("hi", &sid("SM", 0x1c01));
    assert_eq!(
        texts(&send_from(&phone, &after).await),
        ["Hello from the agent"]
    );
    assert!(!keys_of(&mut admin, &sid("SM", 0x1c01)).await.is_empty());
    // Nothing lost: the first message, delivered again, is answered from the store
    // (the agent is not asked again).
    let asked_before = local.emulator.requests().len();
    assert_eq!(
        texts(&send_from(&phone, &first).await),
        ["Hello from the agent"]
    );
    assert_eq!(local.emulator.requests().len(), asked_before);
    // No connection ever offered the old token to the server that wanted the new one.
    assert_eq!(wrong_passwords(&mut admin).await, 0);
    let metrics = metrics_at(&format!("http://127.0.0.1:{port}/")).await;
    for token in [TOKEN_ONE, TOKEN_TWO] {
        assert!(!metrics.contains(token));
    }
}

#[tokio::test]
async fn check_says_the_iam_token_was_obtained_and_never_shows_it() {
    let metadata = TokenServer::start(TOKEN_ONE).await;
    let redis = RedisServer::start_with(vec!["--requirepass".into(), TOKEN_ONE.into()]).await;
    let url = redis.url();
    let local = Local::start(&[("STATE_URL", url.as_str()), ("STATE_AUTH", "iam")]).await;
    let (code, out) = output_of(command_with_metadata(&local, &["check"], &metadata.host())).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("STATE_AUTH                   iam"), "{out}");
    assert!(
        out.contains("IAM: an access token was obtained and accepted, as user default"),
        "{out}"
    );
    assert!(
        out.contains("mode                         standalone"),
        "{out}"
    );
    assert!(
        out.contains("key prefix                   twilio-dialogflow"),
        "{out}"
    );
    assert!(!out.contains(TOKEN_ONE), "{out}");
    assert!(!metadata.served().is_empty());
}

#[tokio::test]
async fn iam_with_a_password_in_the_url_is_a_configuration_error() {
    let local = Local::start(&[
        ("STATE_URL", "rediss://default:s3cret-pass@10.0.0.3:6378"),
        ("STATE_AUTH", "iam"),
    ])
    .await;
    let (code, out) = output_of(local.dir.command(&["check", "--offline"], &[])).await;
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("STATE_AUTH"), "{out}");
    assert!(!out.contains("s3cret-pass"), "{out}");
}

/// A `redis-server` speaking only TLS with the certificates `certificates_naming` made
/// in `dir`.
async fn tls_server(dir: &WorkDir) -> RedisServer {
    RedisServer::start_tls(&dir.0, &[]).await
}

/// Memorystore's certificates name the node by its IP address: a certificate whose only
/// name for it is an IP subjectAltName (its CN says something else) is verified for a
/// URL that dials that address, and the bridge uses the store.
#[tokio::test]
async fn a_certificate_naming_the_node_by_ip_is_verified_when_dialling_the_ip() {
    let certs = WorkDir::with_dotenv("");
    crate::shared_state::certificates_naming(&certs.0, "/O=Memorystore/CN=node", "IP:127.0.0.1");
    let redis = tls_server(&certs).await;
    let url = format!("rediss://127.0.0.1:{}", redis.port);
    let ca = certs.0.join("ca.pem").display().to_string();
    let local = Local::start(&[
        ("STATE_URL", url.as_str()),
        ("STATE_CA_FILE", ca.as_str()),
        ("REPLY_MODE", "twiml"),
    ])
    .await;
    let (code, out) = output_of(local.dir.command(&["check"], &[])).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("(TLS), round trip"), "{out}");
    assert!(
        out.contains(&format!(
            "TLS                          on, verified against {ca}"
        )),
        "{out}"
    );
    let (_serve, phone) = local.serve(&[]).await;
    let message = says_as("hi", &sid("SM", 0x2a01));
    assert_eq!(
        texts(&send_from(&phone, &message).await),
        ["Hello from the agent"]
    );
    let client = redis::Client::build_with_tls(
        url.as_str(),
        redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(std::fs::read(&ca).unwrap()),
        },
    )
    .unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let on_the_store = keys_of(&mut connection, &sid("SM", 0x2a01)).await;
    assert!(!on_the_store.is_empty());
}

/// A certificate for another node fails verification, and `check` says which names the
/// certificate carries against the host it dialled.
#[tokio::test]
async fn check_names_the_certificate_of_another_node() {
    let certs = WorkDir::with_dotenv("");
    crate::shared_state::certificates_naming(
        &certs.0,
        "/CN=10.9.8.7",
        "IP:10.9.8.7,DNS:node-2.memorystore.example",
    );
    let redis = tls_server(&certs).await;
    let url = format!("rediss://127.0.0.1:{}", redis.port);
    let ca = certs.0.join("ca.pem").display().to_string();
    let local = Local::start(&[("STATE_URL", url.as_str()), ("STATE_CA_FILE", ca.as_str())]).await;
    let (code, out) = output_of(local.dir.command(&["check"], &[])).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("state: cannot reach the store"), "{out}");
    assert!(
        out.contains("the server's certificate names CN 10.9.8.7, IP 10.9.8.7, DNS node-2.memorystore.example; STATE_URL dials 127.0.0.1"),
        "{out}"
    );
}

/// A text with a MessageSid of Twilio's shape.
fn says_as(text: &str, message_sid: &str) -> stand_ins::chat::Outgoing {
    stand_ins::chat::Outgoing {
        message_sid: Some(message_sid.into()),
        ..says(text)
    }
}
