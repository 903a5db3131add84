//! The plugin side of the protocol: `serve(plugin)` is a plugin's whole `main`.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use plugin_protocol::v1::plugin_server::{Plugin as PluginRpc, PluginServer};
use plugin_protocol::{
    ENV_HOST_PID, ENV_MAGIC_COOKIE, ENV_PROTOCOL_VERSIONS, ENV_SOCKET_PATH, ENV_TOKEN,
    HandshakeLine, MAGIC_COOKIE_VALUE, SUPPORTED_PROTOCOL_VERSIONS, negotiate, parse_version_list,
    v1,
};
use tokio::net::UnixListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::Notify;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};

use crate::plugin::{EventStream, Plugin};
use crate::token::RequireToken;

/// How long in-flight calls may run after a stop request before the plugin exits anyway.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Runs `plugin` as an integrationd plugin: checks it was started by the supervisor,
/// negotiates the protocol, binds the assigned socket, prints the handshake line and
/// serves until `Shutdown`, SIGTERM/SIGINT, or the death of the supervisor.
///
/// Returns the process exit code: success after a clean stop, failure with a message on
/// stderr when the plugin cannot start.
pub fn serve<P: Plugin>(plugin: P) -> ExitCode {
    crate::logging::init();
    let settings = match StartSettings::from_env() {
        Ok(settings) => settings,
        Err(StartError::NotStartedByHost) => {
            let name = plugin.describe().name;
            eprintln!(
                "This is the `{name}` plugin for integrationd, the Betalogs integration \
                 supervisor. It is not meant to be run by hand: install it into the \
                 daemon's plugin directory and manage it with `integrationctl plugins`."
            );
            return ExitCode::FAILURE;
        }
        Err(err) => {
            tracing::error!(error = %err, "plugin cannot start");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            tracing::error!(error = %err, "cannot build the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(plugin, settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "plugin stopped with an error");
            ExitCode::FAILURE
        }
    }
}

/// What the host put in the environment.
struct StartSettings {
    /// The process that started us: the only one allowed to connect.
    host: nix::unistd::Pid,
    protocol: u32,
    socket: PathBuf,
    token: String,
}

#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error("the magic cookie is missing or wrong")]
    NotStartedByHost,
    #[error("{ENV_PROTOCOL_VERSIONS}=`{value}`: `{item}` is not a protocol version")]
    BadVersionList { value: String, item: String },
    #[error("the host speaks protocol versions {host:?}, this plugin speaks {plugin:?}")]
    NoCommonVersion { host: Vec<u32>, plugin: Vec<u32> },
    #[error("{ENV_HOST_PID}=`{0}` is not a process id")]
    BadHostPid(String),
    #[error("{0} is not set")]
    Missing(&'static str),
    #[error("{ENV_SOCKET_PATH}=`{0}` is not an absolute path")]
    RelativeSocket(String),
    #[error("cannot bind socket {path}: {cause}")]
    Bind { path: String, cause: std::io::Error },
    #[error("cannot write the handshake line: {0}")]
    Handshake(std::io::Error),
    #[error("serving failed: {0}")]
    Serve(tonic::transport::Error),
    #[error("cannot install signal handler: {0}")]
    Signal(std::io::Error),
}

impl From<tonic::transport::Error> for StartError {
    fn from(error: tonic::transport::Error) -> Self {
        Self::Serve(error)
    }
}

impl StartSettings {
    fn from_env() -> Result<Self, StartError> {
        if std::env::var(ENV_MAGIC_COOKIE).ok().as_deref() != Some(MAGIC_COOKIE_VALUE) {
            return Err(StartError::NotStartedByHost);
        }
        let offered = std::env::var(ENV_PROTOCOL_VERSIONS)
            .map_err(|_| StartError::Missing(ENV_PROTOCOL_VERSIONS))?;
        let host = parse_version_list(&offered).map_err(|item| StartError::BadVersionList {
            value: offered.clone(),
            item,
        })?;
        let protocol = negotiate(&host, SUPPORTED_PROTOCOL_VERSIONS).ok_or_else(|| {
            StartError::NoCommonVersion {
                host,
                plugin: SUPPORTED_PROTOCOL_VERSIONS.to_vec(),
            }
        })?;
        let socket =
            std::env::var(ENV_SOCKET_PATH).map_err(|_| StartError::Missing(ENV_SOCKET_PATH))?;
        if !socket.starts_with('/') {
            return Err(StartError::RelativeSocket(socket));
        }
        let token = std::env::var(ENV_TOKEN)
            .ok()
            .filter(|token| !token.is_empty())
            .ok_or(StartError::Missing(ENV_TOKEN))?;
        let host = match std::env::var(ENV_HOST_PID) {
            Ok(text) => text
                .parse::<i32>()
                .ok()
                .filter(|pid| *pid > 0)
                .map(nix::unistd::Pid::from_raw)
                .ok_or(StartError::BadHostPid(text))?,
            // An older host that does not say: whoever is our parent now.
            Err(_) => nix::unistd::getppid(),
        };
        Ok(Self {
            host,
            protocol,
            socket: socket.into(),
            token,
        })
    }
}

async fn run<P: Plugin>(plugin: P, settings: StartSettings) -> Result<(), StartError> {
    // Die with the host: a SIGHUP (handled below as a clean stop) when the parent exits.
    // Not SIGTERM, so that the host's death is told apart from its request to stop in the
    // log. Checked after asking, so a host that died just before cannot be missed.
    if let Err(err) = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGHUP) {
        tracing::warn!(error = %err, "cannot ask for a signal on parent death");
    }
    if nix::unistd::getppid() != settings.host {
        tracing::info!(
            host = settings.host.as_raw(),
            "the host is gone; not starting"
        );
        return Ok(());
    }
    let mut sigterm = signal(SignalKind::terminate()).map_err(StartError::Signal)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(StartError::Signal)?;
    let mut host_died = signal(SignalKind::hangup()).map_err(StartError::Signal)?;

    let listener = UnixListener::bind(&settings.socket).map_err(|source| StartError::Bind {
        path: settings.socket.display().to_string(),
        cause: source,
    })?;
    if let Err(err) =
        std::fs::set_permissions(&settings.socket, std::fs::Permissions::from_mode(0o600))
    {
        tracing::warn!(error = %err, "cannot restrict the socket's permissions");
    }
    // Only the process that started us may connect; the token is checked on top.
    let parent_pid = settings.host.as_raw();
    let incoming = UnixListenerStream::new(listener).filter(move |conn| match conn {
        Ok(stream) => match stream.peer_cred().map(|cred| cred.pid()) {
            Ok(Some(pid)) if pid == parent_pid => true,
            other => {
                tracing::warn!(peer = ?other.ok().flatten(), "refused a connection from a process other than the host");
                false
            }
        },
        Err(_) => true,
    });

    let reporter = HealthReporter::new();
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let guard = RequireToken::new(&settings.token);
    let rpc = PluginService::new(plugin, settings.protocol);
    let stop = rpc.stop_requests();
    let router = tonic::transport::Server::builder()
        .add_service(HealthServer::with_interceptor(
            HealthService::from_health_reporter(reporter),
            guard.clone(),
        ))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            PluginServer::new(rpc)
                .max_decoding_message_size(plugin_protocol::MAX_MESSAGE_BYTES)
                .max_encoding_message_size(plugin_protocol::MAX_MESSAGE_BYTES),
            guard,
        ));

    let handshake = HandshakeLine::new(settings.protocol, &settings.socket);
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{handshake}").map_err(StartError::Handshake)?;
        stdout.flush().map_err(StartError::Handshake)?;
    }
    // Stdout belongs to the handshake: anything printed later goes to stderr instead.
    if let Err(err) = nix::unistd::dup2_stdout(std::io::stderr()) {
        tracing::warn!(error = %err, "cannot redirect stdout to stderr");
    }

    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let stop_requested = async move {
        let reason = tokio::select! {
            _ = stop.notified() => "Shutdown call",
            _ = sigterm.recv() => "SIGTERM",
            _ = sigint.recv() => "SIGINT",
            _ = host_died.recv() => "the host died",
        };
        tracing::info!(reason, "stopping");
        let _ = stopping_tx.send(());
    };
    let server = router.serve_with_incoming_shutdown(incoming, stop_requested);
    let deadline = async {
        if stopping_rx.await.is_ok() {
            tokio::time::sleep(STOP_GRACE).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    let result = tokio::select! {
        result = server => result.map_err(StartError::from),
        () = deadline => {
            tracing::warn!(grace = ?STOP_GRACE, "in-flight calls did not finish; exiting anyway");
            Ok(())
        }
    };
    let _ = std::fs::remove_file(&settings.socket);
    result
}

/// A [`Plugin`] as the generated v1 gRPC service, without the transport: [`serve`] puts
/// it behind the token check on the assigned socket. Public for hosts that serve a plugin
/// some other way (in-process, or a test plugin that breaks the transport's rules on
/// purpose to prove the conformance kit catches it).
pub struct PluginService<P> {
    plugin: Arc<P>,
    stop: Arc<Notify>,
    protocol: u32,
}

impl<P: Plugin> PluginService<P> {
    /// The service for `plugin`, describing itself as speaking `protocol`.
    pub fn new(plugin: P, protocol: u32) -> Self {
        Self {
            plugin: Arc::new(plugin),
            stop: Arc::new(Notify::new()),
            protocol,
        }
    }

    /// Notified when the host calls `Shutdown`.
    pub fn stop_requests(&self) -> Arc<Notify> {
        self.stop.clone()
    }
}

impl<P> std::fmt::Debug for PluginService<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginService")
            .field("protocol", &self.protocol)
            .finish_non_exhaustive()
    }
}

#[tonic::async_trait]
impl<P: Plugin> PluginRpc for PluginService<P> {
    async fn describe(
        &self,
        _request: Request<v1::DescribeRequest>,
    ) -> Result<Response<v1::DescribeResponse>, Status> {
        Ok(Response::new(
            self.plugin.describe().to_response(self.protocol),
        ))
    }

    async fn configure(
        &self,
        request: Request<v1::ConfigureRequest>,
    ) -> Result<Response<v1::ConfigureResponse>, Status> {
        self.plugin.configure(request.into_inner()).await?;
        let webhook_authentication_json = match self.plugin.webhook_authentication() {
            Some(authentication) => serde_json::to_string(&authentication)
                .map_err(|e| Status::internal(format!("the webhook authentication: {e}")))?,
            None => String::new(),
        };
        Ok(Response::new(v1::ConfigureResponse {
            webhook_authentication_json,
        }))
    }

    async fn check(
        &self,
        _request: Request<v1::CheckRequest>,
    ) -> Result<Response<v1::CheckResponse>, Status> {
        Ok(Response::new(self.plugin.check().await?))
    }

    type CollectStream = EventStream;

    async fn collect(
        &self,
        request: Request<v1::CollectRequest>,
    ) -> Result<Response<Self::CollectStream>, Status> {
        Ok(Response::new(
            self.plugin.collect(request.into_inner().cursor).await?,
        ))
    }

    async fn handle_webhook(
        &self,
        request: Request<v1::WebhookRequest>,
    ) -> Result<Response<v1::WebhookResponse>, Status> {
        Ok(Response::new(
            self.plugin.handle_webhook(request.into_inner()).await?,
        ))
    }

    async fn enrich(
        &self,
        request: Request<v1::EnrichRequest>,
    ) -> Result<Response<v1::EnrichResponse>, Status> {
        Ok(Response::new(
            self.plugin.enrich(request.into_inner()).await?,
        ))
    }

    async fn renew_credential(
        &self,
        request: Request<v1::RenewCredentialRequest>,
    ) -> Result<Response<v1::RenewCredentialResponse>, Status> {
        Ok(Response::new(
            self.plugin.renew_credential(request.into_inner()).await?,
        ))
    }

    async fn status(
        &self,
        _request: Request<v1::StatusRequest>,
    ) -> Result<Response<v1::StatusResponse>, Status> {
        Ok(Response::new(v1::StatusResponse {
            dependencies: self.plugin.dependencies(),
        }))
    }

    async fn shutdown(
        &self,
        request: Request<v1::ShutdownRequest>,
    ) -> Result<Response<v1::ShutdownResponse>, Status> {
        tracing::info!(reason = %request.get_ref().reason, "shutdown requested by the host");
        self.stop.notify_one();
        Ok(Response::new(v1::ShutdownResponse {}))
    }
}
