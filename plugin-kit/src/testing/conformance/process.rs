//! The checks about the plugin as a process: how it starts, what it binds, whom it lets
//! in, and how it ends.

use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use plugin_protocol::{
    ENV_HOST_PID, ENV_MAGIC_COOKIE, ENV_PROTOCOL_VERSIONS, ENV_SOCKET_PATH, ENV_TOKEN,
    SUPPORTED_PROTOCOL_VERSIONS, negotiate,
};

use super::{Options, Package, Verdict, excerpt};
use crate::host::{LaunchError, LaunchSpec, kill_group, launch, signal_group};
use crate::testing::PluginUnderTest;

/// A protocol major no plugin speaks.
const UNSPOKEN_VERSION: u32 = 9999;

/// A private (0700) directory for one plugin's socket, removed on drop.
#[derive(Debug)]
pub(super) struct SocketDir(PathBuf);

impl SocketDir {
    pub(super) fn new() -> std::io::Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "plugin-conformance-{}",
            hex::encode(rand::random::<[u8; 8]>())
        ));
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        Ok(Self(dir))
    }

    pub(super) fn socket(&self) -> PathBuf {
        self.0.join("plugin.sock")
    }
}

impl Drop for SocketDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The launch spec integrationd would use for the package.
pub(super) fn spec(package: &Package, socket: &Path, options: &Options) -> LaunchSpec {
    let mut spec = LaunchSpec::new(package.executable(), socket);
    adjust(package, options, &mut spec);
    spec
}

/// Sets the package's arguments and the kit's start timeout on `spec`.
pub(super) fn adjust(package: &Package, options: &Options, spec: &mut LaunchSpec) {
    spec.args = package.manifest.args.iter().map(Into::into).collect();
    spec.start_timeout = options.grace;
}

/// Starts the package under the harness, or says why it could not start.
pub(super) async fn start(package: &Package, options: &Options) -> Result<PluginUnderTest, String> {
    PluginUnderTest::start_with(package.executable(), |spec| {
        adjust(package, options, spec);
    })
    .await
    .map_err(|err| err.to_string())
}

pub(super) async fn refuses_without_cookie(package: &Package, options: &Options) -> Verdict {
    let dir = match SocketDir::new() {
        Ok(dir) => dir,
        Err(err) => return Verdict::Skip(format!("not run: no socket directory: {err}")),
    };
    let socket = dir.socket();
    let versions = SUPPORTED_PROTOCOL_VERSIONS
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let mut command = tokio::process::Command::new(package.executable());
    command
        .args(&package.manifest.args)
        .env_clear()
        .env(ENV_PROTOCOL_VERSIONS, versions)
        .env(ENV_SOCKET_PATH, &socket)
        .env(ENV_TOKEN, crate::token::generate())
        .env(ENV_HOST_PID, std::process::id().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let child = match command.spawn() {
        Ok(child) => child,
        Err(err) => return Verdict::Fail(format!("cannot execute it: {err}")),
    };
    let pid = child.id().unwrap_or_default();
    let output = match tokio::time::timeout(options.grace, child.wait_with_output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(err)) => return Verdict::Skip(format!("not run: cannot wait for it: {err}")),
        Err(_) => {
            kill_group(pid);
            return Verdict::Fail(format!(
                "still running {:?} after it was started without {ENV_MAGIC_COOKIE}: run by \
                 hand, a plugin must explain itself and exit",
                options.grace
            ));
        }
    };
    kill_group(pid);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let said = stderr.lines().find(|line| !line.trim().is_empty());
    if output.status.success() {
        Verdict::Fail(format!(
            "exited 0 without {ENV_MAGIC_COOKIE}; run by hand, it must fail"
        ))
    } else if !output.stdout.is_empty() {
        Verdict::Fail(format!(
            "printed `{}` on stdout without {ENV_MAGIC_COOKIE}; only a host gets a handshake",
            excerpt(&String::from_utf8_lossy(&output.stdout))
        ))
    } else if socket.exists() {
        Verdict::Fail(format!("bound its socket without {ENV_MAGIC_COOKIE}"))
    } else if let Some(said) = said {
        Verdict::Pass(format!("exited ({}): {}", output.status, excerpt(said)))
    } else {
        Verdict::Fail(format!(
            "exited ({}) without {ENV_MAGIC_COOKIE} but said nothing on stderr: tell the \
             person who ran it what it is",
            output.status
        ))
    }
}

pub(super) async fn negotiates_version(package: &Package, options: &Options) -> Verdict {
    let mut offered = SUPPORTED_PROTOCOL_VERSIONS.to_vec();
    offered.push(UNSPOKEN_VERSION);
    let Some(expected) = negotiate(&offered, &package.manifest.protocol_versions) else {
        return Verdict::Fail(format!(
            "the manifest's protocol_versions {:?} share none with this kit's {:?}",
            package.manifest.protocol_versions, SUPPORTED_PROTOCOL_VERSIONS
        ));
    };
    let dir = match SocketDir::new() {
        Ok(dir) => dir,
        Err(err) => return Verdict::Skip(format!("not run: no socket directory: {err}")),
    };
    let mut spec = spec(package, &dir.socket(), options);
    spec.protocol_versions = offered.clone();
    match launch(&spec).await {
        Ok(launched) => {
            kill_group(launched.pid);
            if launched.handshake.app != expected {
                return Verdict::Fail(format!(
                    "offered {offered:?}, it answered protocol {}; the highest both speak is \
                     {expected}",
                    launched.handshake.app
                ));
            }
        }
        Err(err) => {
            return Verdict::Skip(format!(
                "not run: it did not start when offered {offered:?} (see handshake): {err}"
            ));
        }
    }
    let _ = std::fs::remove_file(dir.socket());
    spec.protocol_versions = vec![UNSPOKEN_VERSION];
    match launch(&spec).await {
        Ok(launched) => {
            kill_group(launched.pid);
            Verdict::Fail(format!(
                "offered only protocol {UNSPOKEN_VERSION}, which it does not speak, it \
                 printed a handshake for protocol {}; it must exit instead",
                launched.handshake.app
            ))
        }
        Err(LaunchError::ExitedEarly { status, .. }) => Verdict::Pass(format!(
            "answered protocol {expected} when offered {offered:?}; exited ({status}) when \
             offered only {UNSPOKEN_VERSION}"
        )),
        Err(LaunchError::Timeout(_)) => Verdict::Fail(format!(
            "offered only protocol {UNSPOKEN_VERSION}, which it does not speak, it was still \
             running {:?} later; it must exit",
            options.grace
        )),
        Err(err) => Verdict::Fail(format!("offered only protocol {UNSPOKEN_VERSION}: {err}")),
    }
}

/// The socket must be a socket that other users cannot open.
pub(super) fn socket_mode(socket: &Path) -> Verdict {
    let metadata = match std::fs::symlink_metadata(socket) {
        Ok(metadata) => metadata,
        Err(err) => return Verdict::Fail(format!("{}: {err}", socket.display())),
    };
    let mode = metadata.permissions().mode() & 0o777;
    if !metadata.file_type().is_socket() {
        Verdict::Fail(format!("{} is not a Unix socket", socket.display()))
    } else if mode & 0o007 != 0 {
        Verdict::Fail(format!(
            "{} has mode {mode:04o}: other users may connect; make it 0600 before the \
             handshake",
            socket.display()
        ))
    } else {
        Verdict::Pass(format!("mode {mode:04o}"))
    }
}

pub(super) async fn sigterm(package: &Package, options: &Options) -> Verdict {
    let mut plugin = match start(package, options).await {
        Ok(plugin) => plugin,
        Err(err) => return Verdict::Skip(format!("not run: it did not start: {err}")),
    };
    let started = Instant::now();
    signal_group(plugin.pid(), nix::sys::signal::Signal::SIGTERM);
    match plugin.wait_exit_within(options.grace).await {
        Ok(status) => Verdict::Pass(format!(
            "exited ({status}) {} ms after SIGTERM",
            started.elapsed().as_millis()
        )),
        Err(_) => Verdict::Fail(format!(
            "still running {:?} after SIGTERM; on SIGTERM a plugin finishes what it is doing \
             and exits",
            options.grace
        )),
    }
}

/// A shell is the plugin's host: it starts the plugin with its own pid as the host's,
/// waits, and is killed. The plugin has no parent-death signal from the kit (it is
/// cleared at the shell's fork), so whether it notices is the plugin's own doing.
const SHELL_HOST: &str = "BETALOGS_PLUGIN_HOST_PID=$$ \"$0\" \"$@\" & wait";

pub(super) async fn host_death(package: &Package, options: &Options) -> Verdict {
    let dir = match SocketDir::new() {
        Ok(dir) => dir,
        Err(err) => return Verdict::Skip(format!("not run: no socket directory: {err}")),
    };
    let mut spec = spec(package, &dir.socket(), options);
    let mut args: Vec<std::ffi::OsString> = vec![
        "-c".into(),
        SHELL_HOST.into(),
        package.executable().into_os_string(),
    ];
    args.append(&mut spec.args);
    spec.args = args;
    spec.program = PathBuf::from("/bin/sh");
    let mut launched = match launch(&spec).await {
        Ok(launched) => launched,
        Err(err) => {
            return Verdict::Skip(format!(
                "not run: it did not start under a shell as its host: {err}"
            ));
        }
    };
    if let Some(stdout) = launched.stdout.take() {
        tokio::spawn(discard(stdout));
    }
    if let Some(stderr) = launched.stderr.take() {
        tokio::spawn(discard(stderr));
    }
    let shell = launched.pid;
    let Some(plugin) = child_of(shell) else {
        kill_group(shell);
        return Verdict::Skip("not run: the plugin's process is not the shell's child".to_owned());
    };
    if let Ok(raw) = i32::try_from(shell) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(raw),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let _ = launched.child.wait().await;
    let died = Instant::now();
    let exited = gone_within(plugin, options.grace).await;
    kill_group(shell);
    if exited {
        Verdict::Pass(format!(
            "exited {} ms after its host was killed",
            died.elapsed().as_millis()
        ))
    } else {
        Verdict::Fail(format!(
            "still running {:?} after its host was killed; a plugin must exit when its host \
             dies (ask for a parent-death signal, or watch {ENV_HOST_PID})",
            options.grace
        ))
    }
}

/// The one child process of `parent`, from `/proc`.
fn child_of(parent: u32) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| process_state(*pid).is_some_and(|(_, ppid)| ppid == parent))
}

/// A process's state letter and parent, from `/proc/PID/stat`.
fn process_state(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
    let mut fields = stat.get(stat.rfind(')')? + 1..)?.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Whether `pid` ends (is gone, or a zombie nobody reaped yet) within `limit`.
async fn gone_within(pid: u32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        match process_state(pid) {
            None | Some(('Z' | 'X', _)) => return true,
            Some(_) if Instant::now() >= deadline => return false,
            Some(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// A connection to `socket` made by another process: a child connects a socket this
/// process created, then exits; the peer credentials the plugin sees are the child's.
/// Returns the stream and the child's pid.
pub(super) fn connect_from_another_process(
    socket: &Path,
) -> std::io::Result<(std::os::unix::net::UnixStream, u32)> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr};
    use std::os::fd::AsRawFd;
    let address = UnixAddr::new(socket).map_err(std::io::Error::from)?;
    let fd = nix::sys::socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(std::io::Error::from)?;
    let raw = fd.as_raw_fd();
    let mut command = std::process::Command::new("/bin/true");
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    connect_in_child(&mut command, raw, address);
    let mut child = command.spawn()?;
    let pid = child.id();
    child.wait()?;
    let stream = std::os::unix::net::UnixStream::from(fd);
    // Not connected (ENOTCONN) when the child could not connect.
    stream.peer_addr()?;
    Ok((stream, pid))
}

#[allow(unsafe_code)]
fn connect_in_child(
    command: &mut std::process::Command,
    fd: std::os::fd::RawFd,
    address: nix::sys::socket::UnixAddr,
) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs between fork and exec, so it may only make
    // async-signal-safe calls: it makes one, connect(2), on a descriptor and an address
    // made before the fork, and allocates nothing.
    unsafe {
        command.pre_exec(move || {
            nix::sys::socket::connect(fd, &address).map_err(std::io::Error::from)
        });
    }
}

/// Reads a stream to its end, dropping what it says.
pub(super) async fn discard(mut stream: impl tokio::io::AsyncRead + Unpin) {
    let _ = tokio::io::copy(&mut stream, &mut tokio::io::sink()).await;
}
