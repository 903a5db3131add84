//! A harness for plugin authors: start a plugin binary exactly as the supervisor would
//! and drive it through the protocol, without a running `integrationd`.
//!
//! In an integration test of the plugin's crate, `env!("CARGO_BIN_EXE_<name>")` is the
//! path of the plugin binary (see `templates/plugin/tests/plugin.rs`):
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use plugin_kit::testing::PluginUnderTest;
//! let mut plugin = PluginUnderTest::start("target/debug/integration-example").await?;
//! assert_eq!(plugin.describe().await?.name, "example");
//! plugin.configure("acme", "main", serde_json::json!({}), vec![]).await?;
//! let batches = plugin.collect("").await?;
//! assert!(plugin.health().await?);
//! plugin.shutdown().await?;
//! # Ok(()) }
//! ```

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use plugin_protocol::v1;
use tokio_stream::StreamExt;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::host::{Connection, LaunchSpec, Launched, connect, launch};

#[cfg(feature = "conformance")]
pub mod conformance;

/// How much of what a plugin writes to stdout after its handshake line is kept for
/// [`PluginUnderTest::stdout_after_handshake`].
const STDOUT_KEPT_BYTES: usize = 64 * 1024;

/// Errors from the harness; each says which step failed.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("cannot prepare the socket directory: {0}")]
    SocketDir(std::io::Error),
    #[error("plugin did not start: {0}")]
    Launch(crate::host::LaunchError),
    #[error(transparent)]
    Connect(#[from] crate::host::ConnectError),
    #[error("call failed: {0}")]
    Call(tonic::Status),
    #[error("waiting for exit: {0}")]
    Wait(std::io::Error),
    #[error("did not exit within {0:?}")]
    NoExit(Duration),
}

impl From<tonic::Status> for HarnessError {
    fn from(error: tonic::Status) -> Self {
        Self::Call(error)
    }
}

impl From<crate::host::LaunchError> for HarnessError {
    fn from(error: crate::host::LaunchError) -> Self {
        Self::Launch(error)
    }
}

/// A running plugin process and a connection to it. Killed on drop.
#[derive(Debug)]
pub struct PluginUnderTest {
    launched: Launched,
    connection: Connection,
    socket_dir: PathBuf,
    /// What the plugin wrote to stdout after its handshake line (the first
    /// [`STDOUT_KEPT_BYTES`]), and whether its stdout is closed yet.
    stdout: std::sync::Arc<std::sync::Mutex<(Vec<u8>, bool)>>,
}

impl PluginUnderTest {
    /// Starts `executable` with no arguments.
    pub async fn start(executable: impl AsRef<Path>) -> Result<Self, HarnessError> {
        Self::start_with(executable, |_| {}).await
    }

    /// Starts `executable` after `adjust` has changed the launch spec (arguments,
    /// environment, limits, offered protocol versions).
    pub async fn start_with(
        executable: impl AsRef<Path>,
        adjust: impl FnOnce(&mut LaunchSpec),
    ) -> Result<Self, HarnessError> {
        let socket_dir = std::env::temp_dir().join(format!(
            "plugin-kit-{}",
            hex::encode(rand::random::<[u8; 8]>())
        ));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&socket_dir)
            .map_err(HarnessError::SocketDir)?;
        let mut spec = LaunchSpec::new(executable.as_ref(), socket_dir.join("plugin.sock"));
        adjust(&mut spec);
        let mut launched = match launch(&spec).await {
            Ok(launched) => launched,
            Err(err) => {
                let _ = std::fs::remove_dir_all(&socket_dir);
                return Err(err.into());
            }
        };
        // The plugin's logs go to the test's stderr (shown when a test fails); reading
        // them also keeps a chatty plugin from blocking on a full pipe.
        if let Some(stderr) = launched.stderr.take() {
            tokio::spawn(forward_lines(stderr));
        }
        let stdout = std::sync::Arc::new(std::sync::Mutex::new((Vec::new(), false)));
        if let Some(pipe) = launched.stdout.take() {
            tokio::spawn(keep_stdout(pipe, stdout.clone()));
        }
        let connection = connect(&launched.handshake.socket, &launched.token).await?;
        Ok(Self {
            launched,
            connection,
            socket_dir,
            stdout,
        })
    }

    /// The handshake line the plugin printed, parsed.
    pub fn handshake(&self) -> &plugin_protocol::HandshakeLine {
        &self.launched.handshake
    }

    /// The token the plugin was started with (for a second connection).
    pub fn token(&self) -> &str {
        &self.launched.token
    }

    /// What the plugin wrote to stdout after its handshake line, where only the host's
    /// handshake belongs. Complete once the process has exited.
    pub async fn stdout_after_handshake(&self) -> Vec<u8> {
        // The pipe closes when the process exits; give the reader a moment to see it.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        loop {
            let (bytes, closed) = self
                .stdout
                .lock()
                .map(|kept| kept.clone())
                .unwrap_or_default();
            if closed || self.launched.pid != 0 || tokio::time::Instant::now() >= deadline {
                return bytes;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The process id of the plugin.
    pub fn pid(&self) -> u32 {
        self.launched.pid
    }

    /// The socket the plugin serves on.
    pub fn socket(&self) -> &Path {
        &self.launched.handshake.socket
    }

    /// The raw clients, for calls the helpers below do not cover.
    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    /// Checks the plugin's `Describe` against `manifest` (the text of its
    /// `plugin.toml`) exactly as integrationd does before it runs the plugin: the
    /// manifest parses, and name, version, negotiated protocol and capabilities agree.
    pub async fn check_manifest(&mut self, manifest: &str) -> Result<(), String> {
        let manifest = crate::manifest::Manifest::parse(manifest)?;
        let described = self.describe().await.map_err(|err| err.to_string())?;
        crate::manifest::check_description(&manifest, &described, self.launched.handshake.app)
    }

    pub async fn describe(&mut self) -> Result<v1::DescribeResponse, HarnessError> {
        Ok(self
            .connection
            .plugin
            .describe(v1::DescribeRequest {})
            .await?
            .into_inner())
    }

    /// Configures the plugin for `tenant`/`integration` with a JSON config.
    pub async fn configure(
        &mut self,
        tenant: &str,
        integration: &str,
        config: serde_json::Value,
        credentials: Vec<v1::Credential>,
    ) -> Result<(), HarnessError> {
        let request = v1::ConfigureRequest {
            tenant: tenant.to_owned(),
            integration: integration.to_owned(),
            config_json: config.to_string(),
            credentials,
        };
        self.connection.plugin.configure(request).await?;
        Ok(())
    }

    /// Collects every batch after `cursor` until the plugin ends the stream.
    pub async fn collect(&mut self, cursor: &str) -> Result<Vec<v1::EventBatch>, HarnessError> {
        let request = v1::CollectRequest {
            cursor: cursor.to_owned(),
        };
        let mut stream = self.connection.plugin.collect(request).await?.into_inner();
        let mut batches = Vec::new();
        while let Some(batch) = stream.next().await {
            batches.push(batch?);
        }
        Ok(batches)
    }

    /// Delivers one webhook.
    pub async fn webhook(
        &mut self,
        headers: &[(&str, &str)],
        body: impl Into<Vec<u8>>,
    ) -> Result<v1::WebhookResponse, HarnessError> {
        let request = webhook_request(headers, body);
        Ok(self
            .connection
            .plugin
            .handle_webhook(request)
            .await?
            .into_inner())
    }

    /// Calls `Check`.
    pub async fn check(&mut self) -> Result<v1::CheckResponse, HarnessError> {
        let response = self.connection.plugin.check(v1::CheckRequest {}).await?;
        Ok(response.into_inner())
    }

    /// Calls `Enrich` for one event (JSON).
    pub async fn enrich(
        &mut self,
        event: &serde_json::Value,
    ) -> Result<v1::EnrichResponse, HarnessError> {
        let request = v1::EnrichRequest {
            event_json: event.to_string(),
        };
        Ok(self.connection.plugin.enrich(request).await?.into_inner())
    }

    /// Calls `RenewCredential`.
    pub async fn renew(
        &mut self,
        request: v1::RenewCredentialRequest,
    ) -> Result<v1::RenewCredentialResponse, HarnessError> {
        Ok(self
            .connection
            .plugin
            .renew_credential(request)
            .await?
            .into_inner())
    }

    /// `true` when `grpc.health.v1` answers SERVING.
    pub async fn health(&mut self) -> Result<bool, HarnessError> {
        let response = self
            .connection
            .health
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await?;
        Ok(response.into_inner().status == ServingStatus::Serving as i32)
    }

    /// Calls `Status`: the plugin's dependencies and their circuit breakers.
    pub async fn status(&mut self) -> Result<Vec<v1::DependencyStatus>, HarnessError> {
        let response = self.connection.plugin.status(v1::StatusRequest {}).await?;
        Ok(response.into_inner().dependencies)
    }

    /// Calls `Shutdown` and waits for the process to exit.
    pub async fn shutdown(mut self) -> Result<ExitStatus, HarnessError> {
        let reason = v1::ShutdownRequest {
            reason: "test harness".to_owned(),
        };
        self.connection.plugin.shutdown(reason).await?;
        self.wait_exit().await
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub async fn terminate(mut self) -> Result<ExitStatus, HarnessError> {
        crate::host::signal_group(self.launched.pid, nix::sys::signal::Signal::SIGTERM);
        self.wait_exit().await
    }

    async fn wait_exit(&mut self) -> Result<ExitStatus, HarnessError> {
        self.wait_exit_within(Duration::from_secs(10)).await
    }

    /// Waits at most `limit` for the process to exit (after a stop request the caller
    /// made itself).
    pub async fn wait_exit_within(&mut self, limit: Duration) -> Result<ExitStatus, HarnessError> {
        let status = tokio::time::timeout(limit, self.launched.child.wait())
            .await
            .map_err(|_| HarnessError::NoExit(limit))?
            .map_err(HarnessError::Wait)?;
        // Reaped: the pid may be reused, so Drop must not signal it any more.
        self.launched.pid = 0;
        Ok(status)
    }
}

/// Keeps what the plugin writes to stdout (and shows it on the test's stderr).
async fn keep_stdout(
    mut stream: impl tokio::io::AsyncRead + Unpin,
    kept: std::sync::Arc<std::sync::Mutex<(Vec<u8>, bool)>>,
) {
    use tokio::io::AsyncReadExt;
    let mut chunk = [0u8; 4096];
    while let Ok(read) = stream.read(&mut chunk).await {
        if read == 0 {
            break;
        }
        eprint!("plugin stdout: {}", String::from_utf8_lossy(&chunk[..read]));
        if let Ok(mut kept) = kept.lock() {
            let room = STDOUT_KEPT_BYTES.saturating_sub(kept.0.len());
            kept.0.extend_from_slice(&chunk[..read.min(room)]);
        }
    }
    if let Ok(mut kept) = kept.lock() {
        kept.1 = true;
    }
}

async fn forward_lines(stream: impl tokio::io::AsyncRead + Unpin) {
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        eprintln!("plugin: {line}");
    }
}

impl Drop for PluginUnderTest {
    fn drop(&mut self) {
        crate::host::kill_group(self.launched.pid);
        let _ = std::fs::remove_dir_all(&self.socket_dir);
    }
}

/// A `Configure` request as the supervisor sends it: `credentials` are
/// `(name the plugin finds it under, kind, secret as stored)`.
pub fn configure_request(
    tenant: &str,
    integration: &str,
    config: &serde_json::Value,
    credentials: &[(&str, &str, &str)],
) -> v1::ConfigureRequest {
    v1::ConfigureRequest {
        tenant: tenant.to_owned(),
        integration: integration.to_owned(),
        config_json: config.to_string(),
        credentials: credentials
            .iter()
            .map(|(name, kind, secret)| v1::Credential {
                name: (*name).to_owned(),
                kind: (*kind).to_owned(),
                secret: secret.as_bytes().to_vec(),
            })
            .collect(),
    }
}

/// A `HandleWebhook` request as the supervisor sends one: `headers` as received, the
/// raw `body`, not verified by the host.
pub fn webhook_request(headers: &[(&str, &str)], body: impl Into<Vec<u8>>) -> v1::WebhookRequest {
    v1::WebhookRequest {
        headers: headers
            .iter()
            .map(|(name, value)| v1::Header {
                name: (*name).to_owned(),
                value: (*value).to_owned(),
            })
            .collect(),
        body: body.into(),
        host_verified: false,
    }
}

/// Panics unless `answer` is what a webhook answer must be whatever the delivery was:
/// one of the `documented` statuses, events only with a 202, each a JSON event of
/// `tenant` with a `com.betalogs.` type. For a plugin's tests and fuzz targets.
pub fn assert_webhook_answer(answer: &v1::WebhookResponse, tenant: &str, documented: &[u32]) {
    assert!(
        documented.contains(&answer.status),
        "{} {}",
        answer.status,
        answer.message
    );
    if answer.status != 202 {
        assert!(answer.events_json.is_empty(), "{}", answer.message);
        return;
    }
    for raw in &answer.events_json {
        let event: serde_json::Value = serde_json::from_str(raw).expect("events are JSON");
        assert_eq!(event["tenant"], tenant, "{event}");
        assert!(
            event["type"]
                .as_str()
                .is_some_and(|t| t.starts_with("com.betalogs.")),
            "{event}"
        );
    }
}

/// The resident set size of a process in KiB (`VmRSS`), 0 when it cannot be read:
/// for benchmarks that report a plugin's memory.
pub fn resident_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}
