//! The host side of the transport, shared by the supervisor, `integrationd bench` and
//! the test harness: launch a plugin process the way the supervisor does, read and
//! check its handshake line, and connect to its socket with the one-time token.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper_util::rt::{TokioExecutor, TokioIo};
use plugin_protocol::v1::plugin_client::PluginClient;
use plugin_protocol::{
    ENV_HOST_PID, ENV_MAGIC_COOKIE, ENV_PROTOCOL_VERSIONS, ENV_SOCKET_PATH, ENV_TOKEN,
    HandshakeError, HandshakeLine, MAGIC_COOKIE_VALUE, MAX_HANDSHAKE_LINE_BYTES,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::UnixStream;
use tokio::process::{Child, ChildStderr, ChildStdout, Command};
use tonic::codegen::http;
use tonic::service::interceptor::InterceptedService;
use tonic_health::pb::health_client::HealthClient;

pub use crate::token::AttachToken;

/// Resource limits applied to the plugin process before it executes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResourceLimits {
    /// `RLIMIT_AS` in bytes.
    pub address_space_bytes: Option<u64>,
    /// `RLIMIT_NOFILE`.
    pub open_files: Option<u64>,
    /// `RLIMIT_CPU` in seconds.
    pub cpu_seconds: Option<u64>,
}

/// How to start one plugin process.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    /// What to execute (may be `/proc/self/fd/N` of an already-verified file).
    pub program: PathBuf,
    /// `argv[0]` shown in `ps`; defaults to `program`.
    pub arg0: Option<OsString>,
    pub args: Vec<OsString>,
    /// Socket path the plugin must bind; its directory must exist and be private.
    pub socket: PathBuf,
    /// Protocol majors offered to the plugin.
    pub protocol_versions: Vec<u32>,
    /// Variables passed besides the protocol's own; everything else is cleared.
    pub env: Vec<(OsString, OsString)>,
    pub limits: ResourceLimits,
    /// Time from spawn to a complete handshake line.
    pub start_timeout: Duration,
    /// Leave out the magic cookie (tests of the hand-run message only).
    pub omit_cookie: bool,
    /// A descriptor kept open across exec: the sealed executable `program` names as
    /// `/proc/self/fd/N`. An ELF binary runs without it, but for a script (`#!`) the
    /// kernel hands the interpreter that path to open, which must still exist then.
    pub keep_open: Option<std::os::fd::RawFd>,
}

impl LaunchSpec {
    /// A spec with the defaults the supervisor uses.
    pub fn new(program: impl Into<PathBuf>, socket: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
            arg0: None,
            args: Vec::new(),
            socket: socket.into(),
            protocol_versions: plugin_protocol::SUPPORTED_PROTOCOL_VERSIONS.to_vec(),
            env: Vec::new(),
            limits: ResourceLimits::default(),
            start_timeout: Duration::from_secs(10),
            omit_cookie: false,
            keep_open: None,
        }
    }
}

/// A started plugin that printed a valid handshake line.
#[derive(Debug)]
pub struct Launched {
    pub child: Child,
    pub pid: u32,
    pub handshake: HandshakeLine,
    /// The token the plugin requires; pass it to [`connect`].
    pub token: String,
    /// The rest of stdout. A well-behaved plugin writes nothing more; drain it anyway so
    /// a misbehaving one cannot block on a full pipe. Take both streams and read them from
    /// the start: a plugin blocked on a full stderr pipe answers no call.
    pub stdout: Option<BufReader<ChildStdout>>,
    pub stderr: Option<ChildStderr>,
}

/// Why a plugin did not start.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("cannot execute {program}: {cause}")]
    Spawn {
        program: String,
        cause: std::io::Error,
    },
    #[error("printed no handshake line within {0:?}")]
    Timeout(Duration),
    #[error("exited before its handshake ({status}){stderr}")]
    ExitedEarly { status: String, stderr: String },
    #[error(transparent)]
    BadHandshake(#[from] HandshakeError),
    #[error("handshake line is not UTF-8")]
    NotUtf8,
    #[error("cannot read its stdout: {0}")]
    Read(std::io::Error),
}

/// Spawns the plugin in its own process group with a cleared environment, a
/// parent-death signal and the configured rlimits, then waits for its handshake line.
/// On any error the process group is killed before returning.
pub async fn launch(spec: &LaunchSpec) -> Result<Launched, LaunchError> {
    let token = crate::token::generate();
    let versions = spec
        .protocol_versions
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let mut command = Command::new(&spec.program);
    if let Some(arg0) = &spec.arg0 {
        command.arg0(arg0);
    }
    command
        .args(&spec.args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .env(ENV_PROTOCOL_VERSIONS, &versions)
        .env(ENV_SOCKET_PATH, &spec.socket)
        .env(ENV_TOKEN, &token)
        .env(ENV_HOST_PID, std::process::id().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if !spec.omit_cookie {
        command.env(ENV_MAGIC_COOKIE, MAGIC_COOKIE_VALUE);
    }
    pre_exec::install(&mut command, spec.limits, spec.keep_open);
    let mut child = crate::spawner::spawn(command)
        .await
        .map_err(|source| LaunchError::Spawn {
            program: spec.program.display().to_string(),
            cause: source,
        })?;
    let pid = child.id().unwrap_or_default();
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        kill_group(pid);
        return Err(LaunchError::Read(std::io::Error::other(
            "stdio pipes missing",
        )));
    };
    let mut stdout = BufReader::new(stdout);
    let mut stderr = stderr;
    let read = tokio::time::timeout(spec.start_timeout, read_handshake_line(&mut stdout)).await;
    let failure = match read {
        Err(_) => LaunchError::Timeout(spec.start_timeout),
        Ok(Err(err)) => err,
        Ok(Ok(None)) => exited_early(&mut child, &mut stderr).await,
        Ok(Ok(Some(line))) => {
            match HandshakeLine::parse_expected(&line, &spec.protocol_versions, &spec.socket) {
                Ok(handshake) => {
                    return Ok(Launched {
                        child,
                        pid,
                        handshake,
                        token,
                        stdout: Some(stdout),
                        stderr: Some(stderr),
                    });
                }
                Err(err) => err.into(),
            }
        }
    };
    kill_group(pid);
    let _ = child.wait().await;
    Err(failure)
}

/// Reads one line of at most [`MAX_HANDSHAKE_LINE_BYTES`]; `None` on EOF.
async fn read_handshake_line(
    stdout: &mut BufReader<ChildStdout>,
) -> Result<Option<String>, LaunchError> {
    let mut line = Vec::new();
    let limit = MAX_HANDSHAKE_LINE_BYTES as u64 + 1;
    let read = (&mut *stdout)
        .take(limit)
        .read_until(b'\n', &mut line)
        .await
        .map_err(LaunchError::Read)?;
    if read == 0 {
        return Ok(None);
    }
    if line.len() > MAX_HANDSHAKE_LINE_BYTES {
        return Err(HandshakeError::TooLong {
            len: line.len(),
            max: MAX_HANDSHAKE_LINE_BYTES,
        }
        .into());
    }
    if !line.ends_with(b"\n") {
        // Stdout closed mid-line: the plugin exited or closed it without a full line.
        let text = String::from_utf8(line).map_err(|_| LaunchError::NotUtf8)?;
        return Err(HandshakeLine::parse(&text)
            .err()
            .map_or(LaunchError::Timeout(Duration::ZERO), Into::into));
    }
    String::from_utf8(line)
        .map(Some)
        .map_err(|_| LaunchError::NotUtf8)
}

async fn exited_early(child: &mut Child, stderr: &mut ChildStderr) -> LaunchError {
    let status = tokio::time::timeout(Duration::from_secs(2), child.wait())
        .await
        .ok()
        .and_then(Result::ok)
        .map_or_else(
            || "closed its stdout".to_owned(),
            |status| status.to_string(),
        );
    let mut tail = Vec::new();
    let _ = tokio::time::timeout(
        Duration::from_millis(200),
        stderr.take(2048).read_to_end(&mut tail),
    )
    .await;
    let tail = String::from_utf8_lossy(&tail);
    let last = tail
        .lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .unwrap_or_default();
    let stderr = if last.is_empty() {
        String::new()
    } else {
        format!(
            "; last stderr line: {}",
            last.chars().take(300).collect::<String>()
        )
    };
    LaunchError::ExitedEarly { status, stderr }
}

/// Sends SIGKILL to the whole process group led by `pid` (a no-op for pid 0).
pub fn kill_group(pid: u32) {
    signal_group(pid, nix::sys::signal::Signal::SIGKILL);
}

/// Sends `signal` to the process group led by `pid`.
pub fn signal_group(pid: u32, signal: nix::sys::signal::Signal) {
    let Ok(raw) = i32::try_from(pid) else { return };
    if raw > 0 {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(raw), signal);
    }
}

/// A typed v1 client carrying the token.
pub type PluginRpcClient = PluginClient<InterceptedService<H2Connection, AttachToken>>;
/// A `grpc.health.v1` client carrying the token.
pub type HealthRpcClient = HealthClient<InterceptedService<H2Connection, AttachToken>>;

/// Clients for one plugin connection (they share one HTTP/2 connection).
#[derive(Debug, Clone)]
pub struct Connection {
    pub plugin: PluginRpcClient,
    pub health: HealthRpcClient,
}

/// Why the connection to a plugin failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot connect to {socket}: {cause}")]
    Socket {
        socket: String,
        cause: std::io::Error,
    },
    #[error("HTTP/2 handshake with {socket} failed: {cause}")]
    Handshake { socket: String, cause: hyper::Error },
    #[error("the token is not valid metadata")]
    BadToken,
}

/// One HTTP/2 connection to a plugin, used directly as the gRPC transport.
///
/// A tonic `Channel` puts a buffer task between the caller and the connection; every
/// heartbeat would pay that extra hop. The supervisor holds exactly one connection per
/// plugin and never needs load balancing or reconnection (a broken connection means a
/// dead plugin, which is restarted with a new one), so it talks to hyper's HTTP/2 client
/// directly.
#[derive(Debug, Clone)]
pub struct H2Connection {
    sender: hyper::client::conn::http2::SendRequest<tonic::body::Body>,
}

type ResponseFuture = Pin<
    Box<dyn Future<Output = Result<http::Response<hyper::body::Incoming>, hyper::Error>> + Send>,
>;

impl tower::Service<http::Request<tonic::body::Body>> for H2Connection {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = hyper::Error;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.sender.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(self.sender.send_request(request))
    }
}

/// Connects to a plugin's socket; every call on the returned clients carries `token`.
pub async fn connect(socket: &Path, token: &str) -> Result<Connection, ConnectError> {
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|source| ConnectError::Socket {
            socket: socket.display().to_string(),
            cause: source,
        })?;
    connect_stream(stream, socket, token).await
}

/// Speaks the protocol over `stream`, already connected to the plugin's `socket`.
pub async fn connect_stream(
    stream: UnixStream,
    socket: &Path,
    token: &str,
) -> Result<Connection, ConnectError> {
    let shown = || socket.display().to_string();
    let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|source| ConnectError::Handshake {
            socket: shown(),
            cause: source,
        })?;
    // Drives the connection until either side closes it.
    tokio::spawn(connection);
    let transport = H2Connection { sender };
    let origin = http::Uri::from_static("http://plugin");
    let attach = AttachToken::new(token).map_err(|_| ConnectError::BadToken)?;
    Ok(Connection {
        plugin: PluginClient::with_origin(
            InterceptedService::new(transport.clone(), attach.clone()),
            origin.clone(),
        )
        .max_decoding_message_size(plugin_protocol::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(plugin_protocol::MAX_MESSAGE_BYTES),
        health: HealthClient::with_origin(InterceptedService::new(transport, attach), origin),
    })
}

/// The only unsafe code in the workspace: the hook that runs in the forked child.
#[allow(unsafe_code)]
mod pre_exec {
    use nix::sys::resource::{Resource, setrlimit};

    use super::ResourceLimits;

    pub(super) fn install(
        command: &mut tokio::process::Command,
        limits: ResourceLimits,
        keep_open: Option<std::os::fd::RawFd>,
    ) {
        let supervisor = nix::unistd::getpid();
        // SAFETY: the closure runs between fork and exec, so it may only make
        // async-signal-safe calls. It allocates nothing and calls only fcntl, prctl,
        // getppid and setrlimit, all plain system calls. The descriptor it keeps open is
        // the caller's, alive until the spawn returns.
        unsafe {
            command.pre_exec(move || {
                if let Some(fd) = keep_open {
                    use nix::fcntl::{FcntlArg, FdFlag, fcntl};
                    let fd = std::os::fd::BorrowedFd::borrow_raw(fd);
                    fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty()))?;
                }
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
                // The supervisor may have died between fork and prctl: then nobody would
                // ever signal us, so do not start at all.
                if nix::unistd::getppid() != supervisor {
                    return Err(std::io::Error::other("supervisor exited during spawn"));
                }
                let pairs = [
                    (Resource::RLIMIT_AS, limits.address_space_bytes),
                    (Resource::RLIMIT_NOFILE, limits.open_files),
                    (Resource::RLIMIT_CPU, limits.cpu_seconds),
                ];
                for (resource, limit) in pairs {
                    if let Some(limit) = limit {
                        setrlimit(resource, limit, limit)?;
                    }
                }
                Ok(())
            });
        }
    }
}

#[cfg(test)]
mod spawner_thread_tests {
    use super::*;

    /// Whether `pid` runs and has no SIGKILL pending: a parent-death signal is queued
    /// as the forking thread exits, so a pending one counts as death.
    fn alive(pid: u32) -> bool {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            return false;
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::trim)
                .unwrap_or_default()
                .to_owned()
        };
        let kill_pending = ["SigPnd:", "ShdPnd:"].iter().any(|name| {
            u64::from_str_radix(&field(name), 16).is_ok_and(|mask| mask & (1 << 8) != 0)
        });
        !field("State:").starts_with('Z') && !kill_pending
    }

    #[test]
    fn a_child_outlives_the_thread_that_asked_for_it() {
        // A short-lived thread with its own runtime, like a tokio blocking-pool thread,
        // launches a child with the parent-death signal set, then exits.
        let (pid, tid) = std::thread::spawn(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let pid = runtime.block_on(async {
                let mut command = Command::new("sleep");
                command.arg("30").kill_on_drop(false);
                pre_exec::install(&mut command, ResourceLimits::default(), None);
                let child = crate::spawner::spawn(command).await.expect("spawned");
                child.id().expect("pid")
            });
            (pid, nix::unistd::gettid())
        })
        .join()
        .expect("thread");
        // The thread is gone from /proc only once its exit has signalled the children it
        // forked: await that, then the child must still run with nothing pending.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::path::Path::new(&format!("/proc/self/task/{tid}")).exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "the thread never exited"
            );
            std::thread::yield_now();
        }
        assert!(alive(pid), "the child died with the thread");
        kill_group(pid);
    }
}
