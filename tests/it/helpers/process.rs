//! The command as a separate process, in a directory of its own, and what it prints.

use super::*;

/// The command under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_twilio-dialogflow");

/// A working directory of a test's own (tests run in parallel in one process), with a
/// `.env` in it; removed at the end of the test.
pub struct WorkDir(pub std::path::PathBuf);

impl WorkDir {
    pub fn with_dotenv(dotenv: &str) -> Self {
        static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "twilio-dialogflow-test-{}-{}",
            std::process::id(),
            RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(".env"), dotenv).unwrap();
        Self(dir)
    }

    /// Writes `contents` to the file `name` in this directory; returns its path.
    pub fn write(&self, name: &str, contents: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap();
        path.display().to_string()
    }

    /// The command in this directory, with only `envs` in its environment.
    pub fn command(&self, args: &[&str], envs: &[(&str, &str)]) -> std::process::Command {
        let mut command = std::process::Command::new(BIN);
        command
            .args(args)
            .current_dir(&self.0)
            .env_clear()
            .envs(envs.iter().copied());
        command
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process that is killed when the test ends, passed or failed, and the lines
/// it writes to the stream it was started with; the stream is read to its end, so the
/// child never blocks on it nor fails writing to it.
pub struct Running {
    child: std::process::Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl Running {
    pub fn spawn(command: &mut std::process::Command, output: Output) -> Self {
        use std::io::BufRead;
        use std::process::Stdio;
        let mut child = match output {
            Output::Stdout => command.stdout(Stdio::piped()),
            Output::Stderr => command.stderr(Stdio::piped()),
        }
        .spawn()
        .expect("the command starts");
        let stream: Box<dyn std::io::Read + Send> = match output {
            Output::Stdout => Box::new(child.stdout.take().unwrap()),
            Output::Stderr => Box::new(child.stderr.take().unwrap()),
        };
        let (sender, lines) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stream)
                .lines()
                .map_while(Result::ok)
            {
                let _ = sender.send(line);
            }
        });
        Self { child, lines }
    }

    /// The child's process id (the command's own when it ran under `prlimit`, which
    /// becomes it).
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Writes `line` to the child's standard input (started with `Stdio::piped()`).
    pub fn write_line(&mut self, line: &str) {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().expect("stdin is piped");
        writeln!(stdin, "{line}").expect("the child reads its input");
        stdin.flush().expect("the child reads its input");
    }

    /// Sends the child `signal` (`TERM`, `KILL`, …), as the platform would.
    pub fn signal(&self, signal: &str) {
        let sent = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success());
    }

    /// Waits for the child to exit (within 30 s); its exit status.
    pub async fn exited(&mut self) -> std::process::ExitStatus {
        for _ in 0..300 {
            if let Some(status) = self.child.try_wait().expect("the child can be waited for") {
                return status;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("the child did not exit within 30 s");
    }

    /// The first thing `pick` finds in the lines still to come; panics if the stream
    /// ends, or nothing is found within 30 s.
    pub async fn find_line<T>(&mut self, mut pick: impl FnMut(&str) -> Option<T>) -> T {
        let mut seen = Vec::new();
        let search = async {
            while let Some(line) = self.lines.recv().await {
                if let Some(found) = pick(&line) {
                    return Some(found);
                }
                seen.push(line);
            }
            None
        };
        match tokio::time::timeout(std::time::Duration::from_secs(30), search).await {
            Ok(Some(found)) => found,
            _ => panic!("no such line in:\n{}", seen.join("\n")),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A stand-in for Google's metadata server, telling `project` to whoever asks with the
/// header Google's libraries send.
pub async fn fake_metadata_server(project: &'static str) -> std::net::SocketAddr {
    use axum::http::{HeaderMap, StatusCode};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route(
        "/computeMetadata/v1/project/project-id",
        axum::routing::get(move |headers: HeaderMap| async move {
            match headers.get("metadata-flavor").and_then(|v| v.to_str().ok()) {
                Some("Google") => (StatusCode::OK, project),
                _ => (StatusCode::FORBIDDEN, "missing Metadata-Flavor"),
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// The webhook's port, from the `bridge listening` JSON log line of `serve`.
pub fn listening_port(line: &str) -> Option<u16> {
    let entry: serde_json::Value = serde_json::from_str(line).ok()?;
    (entry["message"] == "bridge listening")
        .then(|| entry["port"].as_u64())?
        .map(|port| port as u16)
}

/// Runs `command` to its end off the test's runtime (whose emulators answer it
/// meanwhile): its exit code and standard output.
pub async fn output_of(mut command: std::process::Command) -> (i32, String) {
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}
