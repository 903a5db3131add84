//! Shared fixtures for the end-to-end tests: a real `integrationd` in a temporary
//! directory, plugin packages built from the real binaries, `integrationctl` calls, and
//! waiting for conditions with a deadline.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod browser;
pub mod http;
pub mod nats;
pub mod receiver;

/// `target/debug` (or whichever profile directory this binary was built into): test
/// binaries live in its `deps/`, the bench binary in it directly.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().expect("binary directory");
    if dir.ends_with("deps") {
        dir.parent().expect("profile dir").to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// Path of a workspace binary; the test command builds them before the tests run.
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (scripts/test does)",
        path.display()
    );
    path
}

/// Polls `probe` every 20 ms until it returns `Some`, failing the test after `limit`.
pub fn wait_for<T>(what: &str, limit: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// True while a process with this pid exists and is not a zombie.
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// A plugin package to install into the daemon's plugin directory.
#[derive(Debug, Clone)]
pub struct PluginPackage {
    /// Package directory name (defaults to the plugin name).
    pub dir: String,
    pub name: String,
    pub version: String,
    pub executable: PathBuf,
    pub args: Vec<String>,
    pub protocol_versions: Vec<u32>,
    pub capabilities: Vec<String>,
    pub framework: String,
    /// More manifest text (a `[webhook]` table, say), appended as it is.
    pub manifest_extra: String,
}

impl PluginPackage {
    /// The fault plugin under `name`, with `faults` as arguments.
    pub fn testfault(name: &str, faults: &[&str]) -> Self {
        let mut args = vec!["--name".to_owned(), name.to_owned()];
        args.extend(faults.iter().map(|s| (*s).to_owned()));
        Self {
            dir: name.to_owned(),
            name: name.to_owned(),
            version: "0.1.0".to_owned(),
            executable: bin("integration-testfault"),
            args,
            protocol_versions: vec![1],
            capabilities: Vec::new(),
            framework: ">=0.1.0".to_owned(),
            manifest_extra: String::new(),
        }
    }

    /// The test plugin collecting (capability and argument), with more `faults`.
    pub fn collector(name: &str, faults: &[&str]) -> Self {
        let mut args = vec!["--capabilities", "collect"];
        args.extend_from_slice(faults);
        Self {
            capabilities: vec!["collect".to_owned()],
            ..Self::testfault(name, &args)
        }
    }

    /// One of the real plugins of this workspace (`github`, `cloudwatch`), as its
    /// manifest describes it.
    pub fn real(name: &str) -> Self {
        Self {
            dir: name.to_owned(),
            name: name.to_owned(),
            executable: bin(&format!("integration-{name}")),
            args: Vec::new(),
            capabilities: ["check", "collect", "webhook", "enrich"]
                .map(str::to_owned)
                .to_vec(),
            ..Self::testfault(name, &[])
        }
    }

    pub fn manifest(&self) -> String {
        let list = |items: &[String]| {
            items
                .iter()
                .map(|i| format!("{i:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let versions = self
            .protocol_versions
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let mut text = format!(
            "name = {:?}\nversion = {:?}\nexecutable = {:?}\nprotocol_versions = [{versions}]\ncapabilities = [{}]\nframework = {:?}\nargs = [{}]\n",
            self.name,
            self.version,
            self.executable.display().to_string(),
            list(&self.capabilities),
            self.framework,
            list(&self.args),
        );
        text.push_str(&self.manifest_extra);
        text
    }

    /// Writes the package under `plugin_dir`. Its executable is inside the package, as
    /// the registry requires: one from elsewhere (the build output) is hard-linked in.
    pub fn install(&self, plugin_dir: &Path) -> PathBuf {
        let dir = plugin_dir.join(&self.dir);
        std::fs::create_dir_all(&dir).expect("package dir");
        let mut package = self.clone();
        if !self.executable.starts_with(&dir) {
            let file_name = self.executable.file_name().expect("executable file name");
            let inside = dir.join(file_name);
            let _ = std::fs::remove_file(&inside);
            if std::fs::hard_link(&self.executable, &inside).is_err() {
                std::fs::copy(&self.executable, &inside).expect("copy the executable in");
            }
            package.executable = PathBuf::from(file_name);
        }
        std::fs::write(dir.join("plugin.toml"), package.manifest()).expect("manifest");
        dir
    }
}

/// Every regular file under `dir`, at any depth (a state directory searched for
/// plaintext secrets).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_under(&path));
        } else if path.is_file() {
            found.push(path);
        }
    }
    found
}

/// Settings for a test daemon; fast timings by default.
#[derive(Debug, Clone)]
pub struct DaemonSetup {
    pub trust_build_output: bool,
    /// More `[registry]` lines.
    pub registry: Vec<String>,
    /// `[process]` lines.
    pub process: Vec<String>,
    /// `(plugin, integration)` instances in tenant `system`.
    pub instances: Vec<(String, String)>,
    /// `(plugin, tenant, integration)` instances.
    pub tenant_instances: Vec<(String, String, String)>,
    /// `integrations.allowed_endpoints`: loopback (the tests' stand-in services) by
    /// default; empty leaves the daemon's default (public endpoints only).
    pub allowed_endpoints: Vec<String>,
    pub extra: String,
}

impl Default for DaemonSetup {
    fn default() -> Self {
        Self {
            trust_build_output: true,
            registry: Vec::new(),
            process: vec![
                "start_timeout = \"5s\"".into(),
                "grace_period = \"2s\"".into(),
                "heartbeat_interval = \"200ms\"".into(),
                "heartbeat_timeout = \"200ms\"".into(),
                "heartbeat_misses = 2".into(),
                "restart_initial_delay = \"100ms\"".into(),
                "restart_max_delay = \"2s\"".into(),
            ],
            instances: Vec::new(),
            tenant_instances: Vec::new(),
            allowed_endpoints: vec!["http://127.0.0.1:*".to_owned()],
            extra: String::new(),
        }
    }
}

impl DaemonSetup {
    pub fn instance(mut self, plugin: &str) -> Self {
        self.instances.push((plugin.to_owned(), plugin.to_owned()));
        self
    }

    /// Credentials with a master key file in `dir`, created on first start.
    pub fn with_master_key(self, key: &Path) -> Self {
        self.extra(&format!(
            "[credentials]\nmaster_key = \"file:{}\"\ngenerate_missing_key = true\n",
            key.display()
        ))
    }

    pub fn tenant_instance(mut self, plugin: &str, tenant: &str, integration: &str) -> Self {
        self.tenant_instances
            .push((plugin.to_owned(), tenant.to_owned(), integration.to_owned()));
        self
    }

    pub fn extra(mut self, text: &str) -> Self {
        self.extra.push_str(text);
        self
    }

    pub fn process(mut self, line: &str) -> Self {
        let key = line.split('=').next().unwrap_or_default().trim().to_owned();
        self.process
            .retain(|l| l.split('=').next().unwrap_or_default().trim() != key);
        self.process.push(line.to_owned());
        self
    }
}

/// A directory laid out for one daemon: config, state, plugins.
#[derive(Debug)]
pub struct World {
    pub root: tempfile::TempDir,
}

impl World {
    pub fn new() -> Self {
        // Short paths: Unix socket paths are limited to 108 bytes.
        let root = tempfile::Builder::new()
            .prefix("it")
            .tempdir_in("/tmp")
            .expect("tempdir");
        std::fs::create_dir_all(root.path().join("plugins")).expect("plugins dir");
        Self { root }
    }

    pub fn plugin_dir(&self) -> PathBuf {
        self.root.path().join("plugins")
    }
    pub fn state_dir(&self) -> PathBuf {
        self.root.path().join("state")
    }
    pub fn admin_socket(&self) -> PathBuf {
        self.root.path().join("admin/admin.sock")
    }
    pub fn config_path(&self) -> PathBuf {
        self.root.path().join("integrationd.toml")
    }
    pub fn log_path(&self) -> PathBuf {
        self.root.path().join("daemon.log")
    }

    /// The complete lines of the default JSONL sink (it may be mid-write: a partial last
    /// line is not counted).
    pub fn sink_lines(&self) -> Vec<String> {
        let text = std::fs::read_to_string(self.state_dir().join("sinks/events.jsonl"))
            .unwrap_or_default();
        let complete = text.rfind('\n').map_or("", |end| &text[..end]);
        complete.lines().map(str::to_owned).collect()
    }

    /// The ids of the events in the default JSONL sink, each line checked to be one
    /// JSON event.
    pub fn sink_ids(&self) -> Vec<String> {
        self.sink_lines()
            .iter()
            .map(|line| {
                let event: Value =
                    serde_json::from_str(line).expect("every line is one JSON event");
                event["id"].as_str().expect("id").to_owned()
            })
            .collect()
    }

    pub fn install(&self, package: &PluginPackage) -> PathBuf {
        package.install(&self.plugin_dir())
    }

    /// Writes the config file for `setup`.
    pub fn write_config(&self, setup: &DaemonSetup) {
        let mut text = format!(
            "state_dir = {:?}\nplugin_dir = {:?}\nadmin_socket = {:?}\nhttp_listen = \"127.0.0.1:0\"\n{}\n[registry]\ntrust_build_output = {}\n{}\n\n[process]\n{}\n",
            self.state_dir().display().to_string(),
            self.plugin_dir().display().to_string(),
            self.admin_socket().display().to_string(),
            setup.extra,
            setup.trust_build_output,
            setup.registry.join("\n"),
            setup.process.join("\n"),
        );
        if !setup.allowed_endpoints.is_empty() {
            let _ = write!(
                text,
                "\n[integrations]\nallowed_endpoints = {:?}\n",
                setup.allowed_endpoints
            );
        }
        for (plugin, integration) in &setup.instances {
            let _ = write!(
                text,
                "\n[[instances]]\nplugin = {plugin:?}\nintegration = {integration:?}\n"
            );
        }
        for (plugin, tenant, integration) in &setup.tenant_instances {
            let _ = write!(
                text,
                "\n[[instances]]\nplugin = {plugin:?}\ntenant = {tenant:?}\nintegration = {integration:?}\n"
            );
        }
        std::fs::write(self.config_path(), text).expect("config");
    }

    /// Writes the config and starts the daemon; returns once the admin socket answers.
    pub fn start(&self, setup: &DaemonSetup) -> Daemon {
        self.write_config(setup);
        self.start_written()
    }

    /// Starts the daemon on the config file as it is.
    pub fn start_written(&self) -> Daemon {
        self.start_written_with_env(&[])
    }

    /// As [`World::start_written`], with these environment variables set.
    pub fn start_written_with_env(&self, env: &[(&str, &std::ffi::OsStr)]) -> Daemon {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("log file");
        let child = Command::new(bin("integrationd"))
            .arg("--config")
            .arg(self.config_path())
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn integrationd");
        let mut daemon = Daemon {
            child: Some(child),
            socket: self.admin_socket(),
            log: self.log_path(),
        };
        let what = format!(
            "the admin socket to answer (the daemon's log: {})",
            self.log_path().display()
        );
        wait_for(&what, Duration::from_secs(20), || {
            if daemon.ctl(&["status"]).status.success() {
                return Some(());
            }
            let exited = daemon
                .child
                .as_mut()
                .and_then(|child| child.try_wait().ok().flatten());
            assert!(
                exited.is_none(),
                "the daemon exited ({exited:?}) before answering; its log:\n{}",
                daemon.log_text()
            );
            None
        });
        daemon
    }
}

impl Default for World {
    fn default() -> Self {
        Self::new()
    }
}

/// A running `integrationd`. Killed (SIGKILL) on drop if still running.
#[derive(Debug)]
pub struct Daemon {
    pub child: Option<Child>,
    pub socket: PathBuf,
    pub log: PathBuf,
}

impl Daemon {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon running").id()
    }

    /// Runs `integrationctl --socket S -o json ARGS`.
    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(bin("integrationctl"))
            .arg("--socket")
            .arg(&self.socket)
            .args(["-o", "json"])
            .args(args)
            .env_remove("INTEGRATIONCTL_TOKEN")
            .output()
            .expect("run integrationctl")
    }

    /// Runs `integrationctl --socket S ARGS` for its text output, which must succeed.
    pub fn ctl_text(&self, args: &[&str]) -> String {
        let output = Command::new(bin("integrationctl"))
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .env_remove("INTEGRATIONCTL_TOKEN")
            .output()
            .expect("run integrationctl");
        assert!(
            output.status.success(),
            "integrationctl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Runs `integrationctl -o json ARGS` with `input` on stdin (and `token`, if any).
    pub fn ctl_stdin(&self, token: Option<&str>, args: &[&str], input: &[u8]) -> Output {
        let mut command = Command::new(bin("integrationctl"));
        command
            .arg("--socket")
            .arg(&self.socket)
            .args(["-o", "json"])
            .args(args)
            .env_remove("INTEGRATIONCTL_TOKEN");
        if let Some(token) = token {
            command.env("INTEGRATIONCTL_TOKEN", token);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run integrationctl");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input)
            .expect("write stdin");
        child.wait_with_output().expect("integrationctl output")
    }

    /// Runs `integrationctl --socket S --token TOKEN -o json ARGS`.
    pub fn ctl_as(&self, token: &str, args: &[&str]) -> Output {
        Command::new(bin("integrationctl"))
            .arg("--socket")
            .arg(&self.socket)
            .args(["-o", "json"])
            .args(args)
            .env("INTEGRATIONCTL_TOKEN", token)
            .output()
            .expect("run integrationctl")
    }

    /// `integrationctl -o json ARGS`, parsed; panics with stderr on failure.
    /// `credentials set` with the secret on stdin; panics with integrationctl's message
    /// when it is refused.
    pub fn set_credential(&self, tenant: &str, name: &str, kind: &str, secret: &[u8]) {
        let stored = self.ctl_stdin(
            None,
            &[
                "credentials",
                "set",
                "--tenant",
                tenant,
                name,
                "--kind",
                kind,
            ],
            secret,
        );
        assert!(
            stored.status.success(),
            "credentials set {name}: {}",
            String::from_utf8_lossy(&stored.stderr)
        );
    }

    /// `integrations add` with `config` written to a file beside the state; panics with
    /// integrationctl's message when it is refused.
    pub fn add_integration(
        &self,
        world: &World,
        tenant: &str,
        name: &str,
        plugin: &str,
        config: &Value,
    ) {
        let path = world.root.path().join(format!("{tenant}-{name}.json"));
        std::fs::write(&path, config.to_string()).expect("config file");
        let added = self.ctl(&[
            "integrations",
            "add",
            "--tenant",
            tenant,
            name,
            "--plugin",
            plugin,
            "--config",
            path.to_str().expect("utf8"),
        ]);
        assert!(
            added.status.success(),
            "integrations add {name}: {}",
            String::from_utf8_lossy(&added.stderr)
        );
    }

    pub fn ctl_json(&self, args: &[&str]) -> Value {
        let output = self.ctl(args);
        assert!(
            output.status.success(),
            "integrationctl {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).expect("integrationctl -o json prints JSON")
    }

    /// Every instance from `status`.
    pub fn instances(&self) -> Vec<Value> {
        self.ctl_json(&["status"])["instances"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The instance of `integration`, if listed.
    pub fn instance(&self, integration: &str) -> Option<Value> {
        self.instances()
            .into_iter()
            .find(|i| i["integration"] == integration)
    }

    /// Kills `integration`'s healthy plugin with SIGKILL and waits until it is down.
    pub fn kill_plugin(&self, integration: &str) {
        let healthy = self.wait_instance(integration, "healthy", Duration::from_secs(20), |i| {
            state_of(i) == "healthy"
        });
        let pid = pid_of(&healthy);
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("kill the plugin");
        self.wait_instance(
            integration,
            "down after kill -9",
            Duration::from_secs(10),
            |i| state_of(i) != "healthy" && pid_of(i) != pid,
        );
    }

    /// Waits until `integration`'s instance satisfies `check`; returns it.
    pub fn wait_instance(
        &self,
        integration: &str,
        what: &str,
        limit: Duration,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        wait_for(&format!("{integration}: {what}"), limit, || {
            self.instance(integration).filter(|i| check(i))
        })
    }

    /// `events tail --tenant T --last N`: the tenant's latest events, one JSON line each.
    pub fn tail_events(&self, tenant: &str, last: usize) -> Vec<String> {
        let last = last.to_string();
        let output = self.ctl(&["events", "tail", "--tenant", tenant, "--last", &last]);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The daemon's stderr so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends `signal` to the daemon.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.pid()).expect("pid"));
        nix::sys::signal::kill(pid, signal).expect("signal daemon");
    }

    /// Waits for the daemon to exit; returns its status and how long it took.
    pub fn wait_exit(&mut self, limit: Duration) -> (std::process::ExitStatus, Duration) {
        let start = Instant::now();
        let child = self.child.as_mut().expect("daemon running");
        let status = wait_for("integrationd to exit", limit, || {
            child.try_wait().expect("try_wait")
        });
        self.child = None;
        (status, start.elapsed())
    }

    /// The HTTP address the daemon listens on, from its (latest) ready line: a restarted
    /// daemon appends to the same log.
    pub fn http_addr(&self) -> String {
        let log = self.log_text();
        log.rsplit("http=")
            .next()
            .filter(|_| log.contains("http="))
            .and_then(|rest| rest.split_whitespace().next())
            .expect("the ready line names the HTTP address")
            .to_owned()
    }

    /// `GET /metrics`.
    pub fn metrics(&self) -> String {
        self.http_get(&self.http_addr(), "/metrics").1
    }

    /// A plain HTTP/1.1 GET; returns the status and the body.
    pub fn http_get(&self, addr: &str, path: &str) -> (u16, String) {
        let mut stream = std::net::TcpStream::connect(addr).expect("connect http");
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        .expect("request");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("response");
        let status = response
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = response
            .split("\r\n\r\n")
            .nth(1)
            .unwrap_or_default()
            .to_owned();
        (status, body)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Counts the default JSONL sink's lines incrementally: each call reads only what was
/// appended since the last (the sink grows to hundreds of MiB in the long tests).
#[derive(Debug)]
pub struct SinkLineCounter {
    path: std::path::PathBuf,
    offset: u64,
    lines: usize,
}

impl SinkLineCounter {
    pub fn new(world: &World) -> Self {
        Self {
            path: world.state_dir().join("sinks/events.jsonl"),
            offset: 0,
            lines: 0,
        }
    }

    pub fn count(&mut self) -> usize {
        use std::io::{Read, Seek, SeekFrom};
        let Ok(mut file) = std::fs::File::open(&self.path) else {
            return self.lines;
        };
        if file.seek(SeekFrom::Start(self.offset)).is_err() {
            return self.lines;
        }
        let mut fresh = Vec::new();
        if file.read_to_end(&mut fresh).is_ok() {
            self.offset += fresh.len() as u64;
            self.lines += fresh.iter().filter(|b| **b == b'\n').count();
        }
        self.lines
    }
}

/// The resident set size of a process in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    plugin_kit::testing::resident_kib(pid)
}

/// The pid of an instance as a number (0 when none).
pub fn pid_of(instance: &Value) -> u32 {
    instance["pid"]
        .as_u64()
        .and_then(|p| u32::try_from(p).ok())
        .unwrap_or(0)
}

/// `state` of an instance.
pub fn state_of(instance: &Value) -> &str {
    instance["state"].as_str().unwrap_or_default()
}

/// A file of the npm fixtures `scripts/test` installs (`npm ci --prefix tests/fixtures/npm`):
/// GitHub's webhook examples and recorded API responses.
pub fn npm_fixture(relative: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/npm/node_modules")
        .join(relative);
    assert!(
        path.exists(),
        "{} is missing: run `npm ci --prefix tests/fixtures/npm` (scripts/test does)",
        path.display()
    );
    path
}

/// Every example of `@octokit/webhooks-examples` as (event name, payload).
pub fn webhook_examples() -> Vec<(String, Value)> {
    let text = std::fs::read_to_string(npm_fixture(
        "@octokit/webhooks-examples/api.github.com/index.json",
    ))
    .expect("examples");
    let groups: Vec<Value> = serde_json::from_str(&text).expect("json");
    groups
        .iter()
        .flat_map(|g| {
            let name = g["name"].as_str().expect("name").to_owned();
            g["examples"]
                .as_array()
                .expect("examples")
                .iter()
                .map(move |e| (name.clone(), e.clone()))
        })
        .collect()
}

/// `sha256=<hex>`: the HMAC-SHA256 of `body` with `secret`, as GitHub signs deliveries.
pub fn github_signature(secret: &str, body: &[u8]) -> String {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A benchmark's numeric flag: the value after `name` in `args`, or `default`.
pub fn bench_arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs `run(true)` and `run(false)` alternately for three rounds (these machines are
/// noisy: alternating puts both under the same noise) and prints each rate, then the
/// best of each and what `on` costs against `off`, e.g. for health recording on the
/// data path. `unit` names the rate ("events/s"), `path` the path measured.
pub fn compare_on_off(what: &str, unit: &str, path: &str, mut run: impl FnMut(bool) -> f64) {
    let mut best = [0.0f64; 2];
    for round in 0..3 {
        for (slot, on) in [true, false].into_iter().enumerate() {
            let rate = run(on);
            println!(
                "round {round}: {what} {}: {rate:.0} {unit}",
                if on { "on" } else { "off" }
            );
            best[slot] = best[slot].max(rate);
        }
    }
    println!(
        "best {unit}: {what} on {:.0}, off {:.0}; {what} costs {:.1}% of the {path}'s throughput",
        best[0],
        best[1],
        (1.0 - best[0] / best[1]) * 100.0
    );
}

/// Platform event `n` of `tenant` (`POST /v1/events/{tenant}`): an error of the checkout
/// service, as a platform would report it.
pub fn platform_event(tenant: &str, n: u32) -> Value {
    use plugin_kit::{Category, EventBuilder, MapContext, Severity};
    let context = MapContext {
        tenant: tenant.into(),
        integration: "platform".into(),
    };
    let event = EventBuilder::new(
        "com.betalogs.system.error",
        Category::System,
        "https://checkout.example.com",
        format!("err-{n}"),
        "2026-11-25T10:00:00Z",
    )
    .severity(Severity::Error)
    .field("service.name", "checkout")
    .original(serde_json::json!({ "n": n }))
    .build(&context);
    serde_json::to_value(event).expect("json")
}
