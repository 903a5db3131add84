//! Real `nats-server` processes with JetStream (Debian's package; `scripts/test`
//! installs it), one storage directory each: started, stopped and started again on the
//! same port and storage, killed, or three of them as one JetStream cluster. And a
//! reader of a stream with the NATS project's own client, to see what the daemon
//! published.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use async_nats::jetstream;
use futures_util::StreamExt;

/// A free loopback port (bound, then released for the server to take).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// One `nats-server -js`.
#[derive(Debug)]
pub struct NatsServer {
    pub port: u16,
    store: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
    log: PathBuf,
}

impl NatsServer {
    /// A single server with JetStream, its storage under `dir`.
    pub fn start(dir: &Path) -> Self {
        Self::start_with(dir, Vec::new())
    }

    /// A single server with JetStream and `extra` command-line options (`--auth T`,
    /// `--user U --pass P`).
    pub fn start_with(dir: &Path, extra: Vec<String>) -> Self {
        let port = free_port();
        let store = dir.join(format!("nats-{port}"));
        std::fs::create_dir_all(&store).expect("nats storage dir");
        let mut server = Self {
            port,
            log: store.join("server.log"),
            store,
            args: extra,
            child: None,
        };
        server.restart();
        server
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) on its port and storage, and waits until it takes
    /// connections.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "the server is running");
        let binary = which_nats_server();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("server log");
        let child = Command::new(binary)
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(&self.store)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
        crate::wait_for("nats-server to listen", Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", self.port))
                .ok()
                .map(|_| ())
        });
    }

    /// Stops the server the way an operator does (SIGTERM) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = child.wait();
        }
    }

    /// Kills the server (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// What the server logged, for a failing test's message.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn which_nats_server() -> PathBuf {
    ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
        .iter()
        .map(PathBuf::from)
        .find(|path| path.exists())
        .expect("nats-server is missing: scripts/test installs Debian's nats-server")
}

/// Three servers forming one JetStream cluster (`c1`, `c2`, `c3`).
pub fn cluster(dir: &Path) -> Vec<NatsServer> {
    let routes: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let route_list = routes
        .iter()
        .map(|port| format!("nats://127.0.0.1:{port}"))
        .collect::<Vec<_>>()
        .join(",");
    let servers: Vec<NatsServer> = routes
        .iter()
        .enumerate()
        .map(|(index, port)| {
            NatsServer::start_with(
                dir,
                vec![
                    "--name".into(),
                    format!("c{}", index + 1),
                    "--cluster_name".into(),
                    "betalogs".into(),
                    "--cluster".into(),
                    format!("nats://127.0.0.1:{port}"),
                    "--routes".into(),
                    route_list.clone(),
                ],
            )
        })
        .collect();
    servers
}

/// A message of a stream as a consumer sees it.
#[derive(Debug, Clone)]
pub struct Stored {
    pub subject: String,
    pub message_id: String,
    pub payload: Vec<u8>,
}

impl Stored {
    /// The payload as JSON (every message the daemon publishes is one event).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).expect("a JSON payload")
    }
}

/// Every message of `stream` (an ephemeral ordered consumer from the start), until
/// `expected` were read or nothing more came for 3 s.
pub async fn read_stream(url: &str, stream: &str, expected: usize) -> Vec<Stored> {
    let client = async_nats::connect(url).await.expect("connect to nats");
    // A cluster that just lost a server may still be electing leaders: generous
    // timeouts, and a few tries.
    let context = jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(10))
        .build(client);
    let mut tries = 0;
    let consumer = loop {
        let made = async {
            context
                .get_stream(stream)
                .await
                .map_err(|e| e.to_string())?
                .create_consumer(jetstream::consumer::pull::OrderedConfig::default())
                .await
                .map_err(|e| e.to_string())
        };
        match made.await {
            Ok(consumer) => break consumer,
            Err(err) if tries < 5 => {
                tries += 1;
                eprintln!("the stream is not readable yet ({err}); trying again");
            }
            Err(err) => panic!("cannot read stream {stream}: {err}"),
        }
    };
    let mut messages = consumer.messages().await.expect("messages");
    let mut out = Vec::with_capacity(expected);
    while out.len() < expected {
        let next = tokio::time::timeout(Duration::from_secs(3), messages.next()).await;
        let Ok(Some(Ok(message))) = next else {
            break;
        };
        let message_id = message
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Msg-Id"))
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default();
        out.push(Stored {
            subject: message.subject.to_string(),
            message_id,
            payload: message.payload.to_vec(),
        });
    }
    out
}

/// How often each message id occurs.
pub fn id_counts(stored: &[Stored]) -> BTreeMap<&str, usize> {
    let mut counts = BTreeMap::new();
    for message in stored {
        *counts.entry(message.message_id.as_str()).or_default() += 1;
    }
    counts
}

/// The number of messages in `stream`.
pub async fn stream_messages(url: &str, stream: &str) -> u64 {
    let client = async_nats::connect(url).await.expect("connect to nats");
    let context = jetstream::new(client);
    let mut stream = context.get_stream(stream).await.expect("the stream exists");
    stream.info().await.expect("stream info").state.messages
}

/// The number of messages in `stream`, or `None` while the server or the stream is
/// not there (yet).
pub async fn stream_messages_if_any(url: &str, stream: &str) -> Option<u64> {
    stream_messages_as(async_nats::ConnectOptions::new(), url, stream).await
}

/// [`stream_messages_if_any`], connecting with `options` (a token, a password).
pub async fn stream_messages_as(
    options: async_nats::ConnectOptions,
    url: &str,
    stream: &str,
) -> Option<u64> {
    let client = options.connect(url).await.ok()?;
    let context = jetstream::new(client);
    let mut stream = context.get_stream(stream).await.ok()?;
    Some(stream.info().await.ok()?.state.messages)
}
