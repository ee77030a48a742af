//! Real redis-servers on ports no other server of this run is given, alone or as a
//! cluster.

use super::*;

/// A real `redis-server` on a port of its own, for as long as the test holds it: no
/// persistence, nothing shared with other tests.
pub struct RedisServer {
    pub port: u16,
    child: Option<std::process::Child>,
    /// Extra arguments (TLS), kept for a restart.
    args: Vec<String>,
}

impl RedisServer {
    pub async fn start() -> Self {
        Self::start_with(Vec::new()).await
    }

    /// A server with `args` besides the test's own (which take a port themselves when
    /// `args` name `--tls-port`).
    ///
    /// The port comes from [`free_port`], and another process on the machine (another
    /// run of these tests) may still take it first: the server then says so and stops,
    /// and it is started again on another port. Its own log decides, not a probe of the
    /// port, which could reach whichever server took it.
    /// A server speaking only TLS, with `server.pem`, `server.key` and `ca.pem` from
    /// `dir` (clients are not asked for certificates), and `extra` arguments.
    pub async fn start_tls(dir: &std::path::Path, extra: &[&str]) -> Self {
        let file = |name: &str| dir.join(name).display().to_string();
        let mut args: Vec<String> = vec![
            "--tls-port".into(),
            "--tls-cert-file".into(),
            file("server.pem"),
            "--tls-key-file".into(),
            file("server.key"),
            "--tls-ca-cert-file".into(),
            file("ca.pem"),
            "--tls-auth-clients".into(),
            "no".into(),
        ];
        args.extend(extra.iter().map(|arg| arg.to_string()));
        Self::start_with(args).await
    }

    pub async fn start_with(args: Vec<String>) -> Self {
        let mut failures = Vec::new();
        for _ in 0..10 {
            let mut server = Self {
                port: free_port(),
                child: None,
                args: args.clone(),
            };
            match server.launch().await {
                Ok(()) => return server,
                Err(failure) => failures.push((server.port, failure)),
            }
        }
        panic!("redis-server did not start on any of ten ports: {failures:#?}");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server again, on the same port (the bridges under test know it), empty.
    pub async fn restart(&mut self) {
        self.stop();
        if let Err(failure) = self.launch().await {
            panic!(
                "redis-server did not start again on port {}: {failure:?}",
                self.port
            );
        }
    }

    /// Starts the server on `self.port` and waits until it says it accepts connections,
    /// or until it stops (the port was taken): then the error is what it wrote.
    async fn launch(&mut self) -> Result<(), Vec<String>> {
        use std::io::BufRead;
        let tls = self.args.iter().any(|a| a == "--tls-port");
        let mut command = std::process::Command::new("redis-server");
        if tls {
            command.args(["--port", "0", "--tls-port", &self.port.to_string()]);
            command.args(self.args.iter().filter(|a| *a != "--tls-port"));
        } else {
            command.args(["--port", &self.port.to_string()]);
            command.args(&self.args);
        }
        let mut child = command
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("redis-server is installed (./test.sh installs it)");
        let log = child.stdout.take().expect("stdout is piped");
        self.child = Some(child);
        // Read to the end, so that the server never blocks writing its log.
        let (sender, mut lines) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(log).lines().map_while(Result::ok) {
                let _ = sender.send(line);
            }
        });
        let mut seen = Vec::new();
        let ready = async {
            while let Some(line) = lines.recv().await {
                if line.contains("Ready to accept connections") {
                    return true;
                }
                seen.push(line);
            }
            // The log ended: the server stopped.
            false
        };
        match tokio::time::timeout(std::time::Duration::from_secs(20), ready).await {
            Ok(true) => Ok(()),
            _ => {
                self.stop();
                Err(seen)
            }
        }
    }

    /// Stops the server, as an outage would.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// How many keys the server holds.
    pub async fn keys(&self, pattern: &str) -> Vec<String> {
        let client = redis::Client::open(self.url()).unwrap();
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        redis::cmd("KEYS")
            .arg(pattern)
            .query_async(&mut connection)
            .await
            .unwrap()
    }

    /// The turns the server holds open, as `conversation#seq`: a turn is fields of its
    /// conversation's hash (`P:{session}:c`), its token among them until it finishes.
    pub async fn open_turns(&self) -> Vec<String> {
        let client = redis::Client::open(self.url()).unwrap();
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        let mut open = Vec::new();
        for conversation in self.keys("*:c").await {
            let fields: Vec<String> = redis::cmd("HKEYS")
                .arg(&conversation)
                .query_async(&mut connection)
                .await
                .unwrap();
            open.extend(fields.iter().filter_map(|field| {
                let seq = field.strip_suffix(":token")?;
                Some(format!("{conversation}#{seq}"))
            }));
        }
        open
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A store the instances under test share, one server or a cluster: what the
/// scenarios that run on both ask of it.
pub trait SharedStore {
    /// The `STATE_URL` the bridge is given (of a cluster, one node: the bridge finds
    /// the others).
    fn url(&self) -> String;
    /// The keys matching `pattern`, wherever they are held.
    fn keys(&self, pattern: &str) -> impl std::future::Future<Output = Vec<String>>;
    /// The turns held open (see [`RedisServer::open_turns`]).
    fn open_turns(&self) -> impl std::future::Future<Output = Vec<String>>;
}

impl SharedStore for RedisServer {
    fn url(&self) -> String {
        RedisServer::url(self)
    }

    async fn keys(&self, pattern: &str) -> Vec<String> {
        RedisServer::keys(self, pattern).await
    }

    async fn open_turns(&self) -> Vec<String> {
        RedisServer::open_turns(self).await
    }
}

impl SharedStore for RedisCluster {
    fn url(&self) -> String {
        let node = self.nodes.iter().find(|node| node.child.is_some()).unwrap();
        node.url()
    }

    async fn keys(&self, pattern: &str) -> Vec<String> {
        let by_master = self.keys_by_master(pattern).await;
        by_master.into_iter().flat_map(|(_, keys)| keys).collect()
    }

    async fn open_turns(&self) -> Vec<String> {
        RedisCluster::open_turns(self).await
    }
}

/// The variables that give a bridge `store`, its keys under `prefix`: scenarios that
/// share one store keep apart by their prefixes.
pub fn sharing(store: &impl SharedStore, prefix: &str) -> Vec<(String, String)> {
    vec![
        ("STATE_URL".to_owned(), store.url()),
        ("STATE_PREFIX".to_owned(), prefix.to_owned()),
    ]
}

/// A local port nothing listens on now, and that this run of the tests has not handed
/// out before: for a server a test starts as a process of its own (`redis-server`), or
/// an address that must refuse connections.
///
/// Not a port bound to 0 and released: the kernel gives those from its ephemeral range
/// to every `bind(0)` and every outgoing connection, so the servers this run starts in
/// process (each bridge and emulator binds port 0) could take it before the child does.
/// The ports here lie below the ephemeral range, which the kernel never hands out by
/// itself; the set keeps two tests of this run from getting the same one; where each
/// run starts in the range depends on its process id, so two runs on one machine
/// rarely meet, and when they do the child fails to bind and is started again
/// elsewhere ([`RedisServer::start_with`]).
pub fn free_port() -> u16 {
    use std::sync::{Mutex, OnceLock, PoisonError};
    static HANDED_OUT: OnceLock<Mutex<(usize, std::collections::HashSet<u16>)>> = OnceLock::new();
    let (first, end) = ports_the_kernel_does_not_hand_out();
    let span = usize::from(end - first);
    let mut handed_out = HANDED_OUT
        .get_or_init(|| {
            let start = (std::process::id() as usize).wrapping_mul(7919) % span;
            Mutex::new((start, std::collections::HashSet::new()))
        })
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let (next, taken) = &mut *handed_out;
    for _ in 0..span {
        let port = first + (*next % span) as u16;
        *next += 1;
        if taken.contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            taken.insert(port);
            return port;
        }
    }
    panic!("no free local port in {first}..{end}");
}

/// Ports the kernel never hands out by itself: below its ephemeral range
/// (`ip_local_port_range`) from 10000, or above it when it starts too low.
fn ports_the_kernel_does_not_hand_out() -> (u16, u16) {
    let ephemeral: Vec<u16> = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .map(|range| {
            range
                .split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    match ephemeral[..] {
        [start, _] if start >= 12_000 => (10_000, start),
        [_, end] if end <= 63_000 => (end + 1, 65_535),
        // Everything is ephemeral (or unknown): the kernel's usual range leaves these.
        _ => (10_000, 32_768),
    }
}

/// A real Redis Cluster of three masters, each with a replica, on ports of its own:
/// what Memorystore for Valkey (cluster mode enabled) and Memorystore for Redis
/// Cluster are. A node notices another is gone after a second (`cluster-node-timeout`),
/// so that a failover takes a few seconds, not the default's fifteen.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
    /// Each node's directory (its `nodes.conf`), removed at the end of the test.
    _dir: WorkDir,
}

impl RedisCluster {
    /// Six nodes started at once, made a cluster by `redis-cli --cluster create`, once
    /// every node says `cluster_state:ok` and every replica has its master's data.
    pub async fn start() -> Self {
        let dir = WorkDir::with_dotenv("");
        let starting: Vec<_> = (0..6)
            .map(|n| {
                let node_dir = dir.0.join(format!("node-{n}"));
                std::fs::create_dir_all(&node_dir).unwrap();
                tokio::spawn(RedisServer::start_with(
                    [
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        "1000",
                        "--dir",
                        &node_dir.display().to_string(),
                    ]
                    .map(str::to_owned)
                    .to_vec(),
                ))
            })
            .collect();
        let mut nodes = Vec::new();
        for node in starting {
            nodes.push(node.await.unwrap());
        }
        let addresses: Vec<String> = nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port))
            .collect();
        let create = tokio::task::spawn_blocking(move || {
            std::process::Command::new("redis-cli")
                .args(["--cluster", "create"])
                .args(&addresses)
                .args(["--cluster-replicas", "1", "--cluster-yes"])
                .output()
                .expect("redis-cli is installed with redis-server")
        })
        .await
        .unwrap();
        assert!(
            create.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&create.stdout)
        );
        let cluster = Self { nodes, _dir: dir };
        cluster.settled().await;
        cluster
    }

    /// The URL of a master that does not hold `key`: all a cluster client needs to find
    /// the others, and the node a client that does not follow the cluster gets wrong.
    pub async fn url_not_holding(&self, key: &str) -> String {
        for port in self.masters().await {
            if let Err(error) = node_query(port, &["EXISTS", key]).await {
                assert!(error.to_string().contains("Moved"), "{error}");
                return format!("redis://127.0.0.1:{port}");
            }
        }
        panic!("every master holds {key}")
    }

    /// Waits (30 s at most) until every running node says the cluster is whole and
    /// every replica is in step with its master.
    pub async fn settled(&self) {
        eventually("the cluster settled", Duration::from_secs(30), || async {
            let mut unsettled = Vec::new();
            for node in self.nodes.iter().filter(|node| node.child.is_some()) {
                let state = node_query(node.port, &["CLUSTER", "INFO"]).await;
                let replication = node_query(node.port, &["INFO", "replication"]).await;
                let ok = state.is_ok_and(|info| info.contains("cluster_state:ok"))
                    && replication.is_ok_and(|info| {
                        info.contains("role:master") || info.contains("master_link_status:up")
                    });
                if !ok {
                    unsettled.push(node.port);
                }
            }
            ready_if(unsettled, Vec::is_empty)
        })
        .await;
    }

    /// The ports of the running masters that serve slots, as a running node sees them.
    pub async fn masters(&self) -> Vec<u16> {
        let node = self.nodes.iter().find(|node| node.child.is_some()).unwrap();
        let nodes = node_query(node.port, &["CLUSTER", "NODES"]).await.unwrap();
        nodes
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split(' ').collect();
                let serving =
                    fields.len() > 8 && fields[2].contains("master") && !fields[2].contains("fail");
                let port = fields[1].split(['@', ':']).nth(1)?.parse().ok()?;
                serving.then_some(port)
            })
            .collect()
    }

    /// The keys matching `pattern` that each running master holds, by its port.
    pub async fn keys_by_master(&self, pattern: &str) -> Vec<(u16, Vec<String>)> {
        let mut all = Vec::new();
        for port in self.masters().await {
            let node = self.nodes.iter().find(|node| node.port == port).unwrap();
            all.push((port, node.keys(pattern).await));
        }
        all
    }

    /// The turns the masters hold open (see [`RedisServer::open_turns`]).
    pub async fn open_turns(&self) -> Vec<String> {
        let mut open = Vec::new();
        for port in self.masters().await {
            let node = self.nodes.iter().find(|node| node.port == port).unwrap();
            open.extend(node.open_turns().await);
        }
        open
    }

    /// Kills the master on `port` (SIGKILL, as a crashed machine): its replica takes
    /// its slots over once the others have noticed.
    pub fn kill(&mut self, port: u16) {
        let node = self
            .nodes
            .iter_mut()
            .find(|node| node.port == port)
            .unwrap();
        node.stop();
    }
}

/// `args` asked of the node on `port` alone, as text.
async fn node_query(port: u16, args: &[&str]) -> redis::RedisResult<String> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
    let mut connection = client.get_multiplexed_async_connection().await?;
    redis::cmd(args[0])
        .arg(&args[1..])
        .query_async(&mut connection)
        .await
}
