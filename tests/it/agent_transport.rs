//! How the bridge's calls reach Google's Dialogflow endpoint: over TLS, with the HTTP
//! version the official client negotiates (ALPN), and how many connections concurrent
//! turns open.
//!
//! Google's front end speaks HTTP/2, which would carry every turn in flight over a few
//! connections. The official clients (`google-cloud-dialogflow-cx-v3` and `-v2`, over
//! `google-cloud-gax-internal`'s reqwest client) build their own reqwest client and force
//! it to HTTP/1.1 (`http1_only()`, googleapis/google-cloud-rust#4298), and take no
//! client of ours. This test pins that: should a release of the crates offer `h2`, it
//! fails, and the bridge then gets HTTP/2 by enabling reqwest's `http2` feature.

use crate::helpers::*;
use crate::shared_state::certificates_naming;
use stand_ins::chat::Phone;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A TLS front for the emulator, as Google's is for Dialogflow: it offers `h2` and
/// `http/1.1` by ALPN, records each connection's offer and outcome, and passes HTTP/1.1
/// through to the emulator.
struct TlsFront {
    addr: std::net::SocketAddr,
    connections: Arc<Mutex<Vec<Handshake>>>,
}

#[derive(Debug, Clone)]
struct Handshake {
    /// The protocols the client offered, in its order.
    offered: Vec<String>,
    /// The one agreed on, if any.
    agreed: Option<String>,
}

impl TlsFront {
    async fn start(dir: &std::path::Path, emulator: std::net::SocketAddr) -> Self {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certificates = CertificateDer::pem_file_iter(dir.join("server.pem"))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap();
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certificates, key)
            .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let config = Arc::new(config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections: Arc<Mutex<Vec<Handshake>>> = Arc::default();
        let recorded = Arc::clone(&connections);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (config, recorded) = (Arc::clone(&config), Arc::clone(&recorded));
                tokio::spawn(async move {
                    let acceptor = rustls::server::Acceptor::default();
                    let Ok(start) = tokio_rustls::LazyConfigAcceptor::new(acceptor, stream).await
                    else {
                        return;
                    };
                    let offered = start
                        .client_hello()
                        .alpn()
                        .map(|protocols| {
                            protocols
                                .map(|p| String::from_utf8_lossy(p).into_owned())
                                .collect()
                        })
                        .unwrap_or_default();
                    let Ok(mut tls) = start.into_stream(config).await else {
                        return;
                    };
                    let agreed = tls
                        .get_ref()
                        .1
                        .alpn_protocol()
                        .map(|p| String::from_utf8_lossy(p).into_owned());
                    let http1 = agreed.as_deref() != Some("h2");
                    recorded.lock().unwrap().push(Handshake { offered, agreed });
                    // HTTP/2 is recorded, not served: the emulator speaks HTTP/1.1.
                    if http1 {
                        if let Ok(mut upstream) = tokio::net::TcpStream::connect(emulator).await {
                            let _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
                        }
                    }
                });
            }
        });
        Self { addr, connections }
    }

    fn handshakes(&self) -> Vec<Handshake> {
        self.connections.lock().unwrap().clone()
    }
}

/// The test agent, with an answer slow enough that the turns below overlap.
fn slow_agent() -> String {
    AGENT.replacen(
        "intents:\n",
        "intents:\n  - name: slow\n    phrases: [\"slow\"]\n    delay_ms: 500\n    replies:\n      - text: \"That took a while\"\n",
        1,
    )
}

/// A stand-in for the metadata server's token endpoint: Google's endpoint is asked with
/// Application Default Credentials, here the service account of a "VM".
async fn token_server() -> std::net::SocketAddr {
    use axum::http::{HeaderMap, StatusCode};
    let app = axum::Router::new().route(
        "/computeMetadata/v1/instance/service-accounts/default/token",
        axum::routing::get(|headers: HeaderMap| async move {
            if headers.get("metadata-flavor").and_then(|v| v.to_str().ok()) != Some("Google") {
                return Err((StatusCode::FORBIDDEN, "missing Metadata-Flavor"));
            }
            Ok(axum::Json(serde_json::json!({
                "access_token": "ya29.token-of-the-service-account",
                "expires_in": 3600,
                "token_type": "Bearer",
            })))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

#[tokio::test]
async fn the_official_client_asks_over_tls_with_http1_one_connection_per_turn_in_flight() {
    const TURNS: usize = 6;
    let certificates = WorkDir::with_dotenv("");
    certificates_naming(&certificates.0, "/CN=127.0.0.1", "IP:127.0.0.1");
    let emulator = emulator_of(&slow_agent()).await;
    let front = TlsFront::start(&certificates.0, emulator.addr()).await;
    let metadata = token_server().await;

    let local = Local::start(&[
        ("REPLY_MODE", "twiml"),
        ("RATE_LIMIT_PER_CONVERSATION", "off"),
        // Google's endpoint, here the front; the emulator is not named.
        ("DIALOGFLOW_EMULATOR_HOST", ""),
        ("DF_ENDPOINT", &format!("https://{}", front.addr)),
    ])
    .await;
    let ca = certificates.0.join("ca.pem").display().to_string();
    let mut serve = Running::spawn(
        &mut local.dir.command(
            &["serve"],
            &[
                // The system's roots, as rustls' platform verifier reads them on Linux.
                ("SSL_CERT_FILE", &ca),
                ("GCE_METADATA_HOST", &metadata.to_string()),
            ],
        ),
        Output::Stderr,
    );
    let port = serve.find_line(listening_port).await;

    let turns: Vec<_> = (0..TURNS)
        .map(|n| {
            tokio::spawn(async move {
                let phone = Phone::new(
                    &format!("http://127.0.0.1:{port}/"),
                    ACCOUNT_SID,
                    AUTH_TOKEN,
                    &format!("+1555010{n:04}"),
                    OUR_NUMBER,
                )
                .unwrap();
                texts(&ask(&phone, "slow").await)
                    .into_iter()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut answers = Vec::new();
    for turn in turns {
        let answer = tokio::time::timeout(Duration::from_secs(30), turn)
            .await
            .expect("every turn answered within 30 s")
            .unwrap();
        answers.push(answer);
    }
    for answer in &answers {
        assert_eq!(answer, &["That took a while"], "through the TLS front");
    }

    let handshakes = front.handshakes();
    assert!(
        handshakes
            .iter()
            .all(|h| h.offered == ["http/1.1"] && h.agreed.as_deref() == Some("http/1.1")),
        "the official client offers only HTTP/1.1 (if it now offers h2, enable reqwest's \
         `http2` feature and expect one connection): {handshakes:?}"
    );
    assert_eq!(
        handshakes.len(),
        TURNS,
        "over HTTP/1.1, each turn in flight holds a connection of its own: {handshakes:?}"
    );
}
