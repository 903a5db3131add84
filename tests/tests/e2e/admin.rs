//! The operator's surface: integrationctl over the admin socket, the config file,
//! SIGHUP, and the HTTP listener.

use std::process::Command;
use std::time::Duration;

use e2e_tests::{DaemonSetup, PluginPackage, World, bin, state_of, wait_for};
use sha2::{Digest, Sha256};

const LONG: Duration = Duration::from_secs(30);

fn sha256_hex(path: &std::path::Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).expect("read binary")))
}

#[test]
fn production_config_runs_nothing_until_an_operator_trusts_it() {
    let world = World::new();
    world.install(&PluginPackage::testfault("steady", &[]));
    let setup = DaemonSetup {
        trust_build_output: false,
        ..DaemonSetup::default()
    }
    .instance("steady");
    let daemon = world.start(&setup);

    let refused = daemon.wait_instance("steady", "refused", LONG, |i| state_of(i) == "refused");
    let error = refused["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("plugin `steady` 0.1.0") && error.contains("is not trusted"),
        "{error}"
    );
    let listed = daemon.ctl_json(&["plugins", "list"]);
    assert_eq!(listed["plugins"][0]["trusted_sha256"], "");

    let bad = daemon.ctl(&["plugins", "trust", "steady", "--sha256", "not-a-checksum"]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("`not-a-checksum` is not a SHA-256 checksum")
    );
    let unknown = daemon.ctl(&["plugins", "trust", "nosuch"]);
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("plugin `nosuch` is not installed"));

    let pin = daemon.ctl_json(&["plugins", "trust", "steady"]);
    let expected = sha256_hex(&bin("integration-testfault"));
    assert_eq!(pin["sha256"], expected.as_str());
    assert_eq!(pin["version"], "0.1.0");
    daemon.wait_instance("steady", "healthy after trust", LONG, |i| {
        state_of(i) == "healthy"
    });
    let shown = daemon.ctl_json(&["plugins", "show", "steady"]);
    assert_eq!(shown["versions"][0]["trusted_sha256"], expected.as_str());
    assert_eq!(shown["versions"][0]["trusted_by"], "uid:0");

    // Pinning another checksum makes the next start refuse the executable.
    let other = "ab".repeat(32);
    daemon.ctl_json(&["plugins", "trust", "steady", "--sha256", &other]);
    daemon.ctl_json(&["plugins", "restart", "steady"]);
    let refused = daemon.wait_instance("steady", "refused", LONG, |i| state_of(i) == "refused");
    assert!(
        refused["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains(&format!("but {other} is trusted"))
    );
}

#[test]
fn rescan_picks_up_a_plugin_dropped_in_without_a_restart() {
    let world = World::new();
    let daemon = world.start(&DaemonSetup::default().instance("late"));
    let refused = daemon.wait_instance("late", "refused", LONG, |i| state_of(i) == "refused");
    assert!(
        refused["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("plugin `late` is not installed")
    );

    world.install(&PluginPackage::testfault("late", &[]));
    let scan = daemon.ctl_json(&["plugins", "rescan"]);
    assert_eq!(scan["plugins"][0]["name"], "late");
    daemon.wait_instance("late", "healthy after rescan", LONG, |i| {
        state_of(i) == "healthy"
    });
}

#[test]
fn newest_compatible_version_runs_unless_pinned() {
    let world = World::new();
    let install = |version: &str, dir: &str| {
        let mut package = PluginPackage::testfault("multi", &["--version", version]);
        package.version = version.to_owned();
        package.dir = dir.to_owned();
        world.install(&package);
    };
    install("0.1.0", "multi-0.1.0");
    install("0.3.0", "multi-0.3.0");
    install("0.2.0", "multi-0.2.0");
    let daemon = world.start(&DaemonSetup::default().instance("multi"));
    let running = daemon.wait_instance("multi", "healthy", LONG, |i| state_of(i) == "healthy");
    assert_eq!(running["version"], "0.3.0");
    let listed = daemon.ctl_json(&["plugins", "show", "multi"]);
    let versions: Vec<(&str, bool)> = listed["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .map(|v| {
            (
                v["version"].as_str().unwrap_or_default(),
                v["selected"].as_bool().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        versions,
        vec![("0.3.0", true), ("0.2.0", false), ("0.1.0", false)]
    );
    drop(daemon);

    let mut pinned = DaemonSetup::default().instance("multi");
    pinned.registry.push("pins = { multi = \"0.2.0\" }".into());
    let daemon = world.start(&pinned);
    let running = daemon.wait_instance("multi", "healthy", LONG, |i| state_of(i) == "healthy");
    assert_eq!(running["version"], "0.2.0");
}

#[test]
fn status_json_is_complete_and_stable() {
    let world = World::new();
    world.install(&PluginPackage::testfault("steady", &[]));
    let daemon = world.start(&DaemonSetup::default().instance("steady"));
    daemon.wait_instance("steady", "healthy", LONG, |i| state_of(i) == "healthy");
    let status = daemon.ctl_json(&["status"]);
    for key in ["version", "pid", "uptime_seconds", "instances", "refused"] {
        assert!(status.get(key).is_some(), "status lacks `{key}`: {status}");
    }
    let instance = &status["instances"][0];
    for key in [
        "plugin",
        "tenant",
        "integration",
        "state",
        "pid",
        "version",
        "protocol_version",
        "restarts",
        "last_error",
        "since_unix_ms",
        "next_restart_unix_ms",
    ] {
        assert!(
            instance.get(key).is_some(),
            "instance lacks `{key}`: {instance}"
        );
    }
    assert_eq!(instance["protocol_version"], 1);
    assert_eq!(instance["tenant"], "system");

    let table = Command::new(bin("integrationctl"))
        .arg("--socket")
        .arg(&daemon.socket)
        .arg("status")
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("STATE") && text.contains("steady") && text.contains("healthy"),
        "{text}"
    );
}

/// Runs `integrationctl -o json status` as uid/gid 65534 (nobody). The socket and its
/// directories are opened up first, so the call reaches the daemon's own check of the
/// peer's credentials instead of stopping at file permissions.
fn status_as_nobody(world: &World, daemon: &e2e_tests::Daemon) -> std::process::Output {
    use std::os::unix::fs::PermissionsExt;
    let open = |path: &std::path::Path, mode| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod")
    };
    open(world.root.path(), 0o755);
    open(world.admin_socket().parent().expect("dir"), 0o755);
    open(&daemon.socket, 0o666);
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(bin("integrationctl"))
        .arg("--socket")
        .arg(&daemon.socket)
        .args(["-o", "json", "status"])
        .output()
        .expect("setpriv")
}

#[test]
fn operator_commands_check_the_callers_uid() {
    let world = World::new();
    world.install(&PluginPackage::testfault("steady", &[]));
    let daemon = world.start(&DaemonSetup::default().instance("steady"));
    let output = status_as_nobody(&world, &daemon);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("uid 65534 is not an operator"), "{stderr}");

    // A token, when sent, is what counts, even from root: an unknown one is refused.
    let token = daemon.ctl(&["--token", "t0k3n", "plugins", "list"]);
    assert!(String::from_utf8_lossy(&token.stderr).contains("invalid or revoked token"));
}

#[test]
fn configured_operator_uid_may_use_the_admin_socket() {
    let world = World::new();
    let daemon = world.start(&DaemonSetup::default().extra("[admin]\noperator_uids = [65534]\n"));
    let output = status_as_nobody(&world, &daemon);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn admin_socket_is_0660_in_a_private_directory() {
    use std::os::unix::fs::PermissionsExt;
    let world = World::new();
    let daemon = world.start(&DaemonSetup::default());
    let mode =
        |p: &std::path::Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode(&daemon.socket), 0o660);
    let dir_mode = mode(daemon.socket.parent().expect("dir"));
    assert!(dir_mode == 0o750 || dir_mode == 0o700, "{dir_mode:o}");
    assert_eq!(mode(&world.state_dir().join("run")), 0o700);
}

#[test]
fn sighup_reloads_the_instance_list() {
    let world = World::new();
    world.install(&PluginPackage::testfault("first", &[]));
    world.install(&PluginPackage::testfault("second", &[]));
    let daemon = world.start(&DaemonSetup::default().instance("first"));
    daemon.wait_instance("first", "healthy", LONG, |i| state_of(i) == "healthy");
    let first_pid = e2e_tests::pid_of(&daemon.instance("first").expect("first"));

    world.write_config(&DaemonSetup::default().instance("first").instance("second"));
    daemon.signal(nix::sys::signal::Signal::SIGHUP);
    daemon.wait_instance("second", "healthy after reload", LONG, |i| {
        state_of(i) == "healthy"
    });
    assert_eq!(
        e2e_tests::pid_of(&daemon.instance("first").expect("first")),
        first_pid,
        "untouched"
    );

    world.write_config(&DaemonSetup::default().instance("second"));
    daemon.signal(nix::sys::signal::Signal::SIGHUP);
    wait_for("first to be removed", LONG, || {
        daemon.instance("first").is_none().then_some(())
    });
    assert!(!e2e_tests::process_alive(first_pid));

    std::fs::write(world.config_path(), "bogus = true\n").expect("write");
    daemon.signal(nix::sys::signal::Signal::SIGHUP);
    wait_for("the reload error in the log", LONG, || {
        daemon
            .log_text()
            .contains("reload failed; keeping the running configuration")
            .then_some(())
    });
    assert_eq!(
        state_of(&daemon.instance("second").expect("second kept")),
        "healthy"
    );
}

#[test]
fn http_serves_healthz_metrics_and_json_errors() {
    let world = World::new();
    world.install(&PluginPackage::testfault("steady", &[]));
    let daemon = world.start(&DaemonSetup::default().instance("steady"));
    daemon.wait_instance("steady", "healthy", LONG, |i| state_of(i) == "healthy");
    let addr = daemon.http_addr();

    let (status, body) = daemon.http_get(&addr, "/healthz");
    assert_eq!(status, 200);
    assert!(body.contains(r#""status":"ok""#), "{body}");

    wait_for("a heartbeat in the metrics", LONG, || {
        let (_, body) = daemon.http_get(&addr, "/metrics");
        body.contains("integrationd_plugin_heartbeat_seconds_count{plugin=\"steady\"")
            .then_some(())
    });
    let (status, body) = daemon.http_get(&addr, "/metrics");
    assert_eq!(status, 200);
    assert!(body.contains(r#"integrationd_plugin_state{plugin="steady",tenant="system",integration="steady",state="healthy"} 1"#), "{body}");
    assert!(body.contains(r#"integrationd_plugin_restarts_total{plugin="steady",tenant="system",integration="steady"} 0"#), "{body}");

    let (status, body) = daemon.http_get(&addr, "/nope");
    assert_eq!(status, 404);
    let error: serde_json::Value = serde_json::from_str(&body).expect("JSON error body");
    assert_eq!(error["error"], "not_found");
    assert!(
        error["message"]
            .as_str()
            .unwrap_or_default()
            .contains("/nope")
    );
}

#[test]
fn bad_config_files_and_flags_are_rejected_with_their_location() {
    let world = World::new();
    let config = world.config_path();
    let run = |args: &[&str]| {
        Command::new(bin("integrationd"))
            .args(args)
            .output()
            .expect("run integrationd")
    };

    std::fs::write(
        &config,
        "state_dir = \"/tmp/x\"\n[process]\ngrace_period = 5\n",
    )
    .expect("write");
    let output = run(&["--config", config.to_str().expect("utf8")]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(config.to_str().expect("utf8"))
            && stderr.contains("line 3")
            && stderr.contains("grace_period"),
        "{stderr}"
    );

    std::fs::write(&config, "[[instances]]\nplugin = \"x\"\nflavour = \"y\"\n").expect("write");
    let stderr =
        String::from_utf8_lossy(&run(&["--config", config.to_str().expect("utf8")]).stderr)
            .into_owned();
    assert!(
        stderr.contains("unknown field `flavour`") && stderr.contains("line 3"),
        "{stderr}"
    );

    let missing = run(&["--config", "/nonexistent/integrationd.toml"]);
    assert!(
        String::from_utf8_lossy(&missing.stderr)
            .contains("cannot read config file /nonexistent/integrationd.toml")
    );

    let flag = run(&["--http-listen", "everywhere"]);
    assert!(!flag.status.success());
    assert!(String::from_utf8_lossy(&flag.stderr).contains("--http-listen"));
}

#[test]
fn integrationctl_explains_an_unreachable_daemon() {
    let output = Command::new(bin("integrationctl"))
        .args(["--socket", "/nonexistent/admin.sock", "status"])
        .output()
        .expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot reach integrationd at /nonexistent/admin.sock"),
        "{stderr}"
    );
}
