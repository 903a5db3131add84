//! The process manager keeps plugins alive: crashes, hangs, crash loops, graceful and
//! ungraceful daemon exits. Real daemon, real plugin processes, real signals.

use std::time::Duration;

use e2e_tests::{DaemonSetup, PluginPackage, World, pid_of, process_alive, state_of, wait_for};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

fn kill9(pid: u32) {
    kill(
        Pid::from_raw(i32::try_from(pid).expect("pid")),
        Signal::SIGKILL,
    )
    .expect("kill -9");
}

const LONG: Duration = Duration::from_secs(30);

#[test]
fn killed_plugin_restarts_after_backoff() {
    let world = World::new();
    world.install(&PluginPackage::testfault("steady", &[]));
    let daemon = world.start(&DaemonSetup::default().instance("steady"));
    let first = daemon.wait_instance("steady", "healthy", LONG, |i| state_of(i) == "healthy");
    let old_pid = pid_of(&first);
    assert!(process_alive(old_pid));

    kill9(old_pid);

    let again = daemon.wait_instance("steady", "healthy with a new pid", LONG, |i| {
        state_of(i) == "healthy" && pid_of(i) != old_pid && pid_of(i) != 0
    });
    assert_eq!(again["restarts"], 1);
    let error = again["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&format!("plugin process {old_pid} exited")) && error.contains("SIGKILL"),
        "{error}"
    );
    assert!(!process_alive(old_pid));
}

#[test]
fn hung_plugin_is_killed_after_heartbeat_timeout_and_restarted() {
    let world = World::new();
    world.install(&PluginPackage::testfault(
        "sleepy",
        &["--hang-after-ms", "300"],
    ));
    let daemon = world.start(&DaemonSetup::default().instance("sleepy"));
    let first = daemon.wait_instance("sleepy", "healthy", LONG, |i| state_of(i) == "healthy");
    let hung_pid = pid_of(&first);

    let restarted = daemon.wait_instance("sleepy", "a restart after the hang", LONG, |i| {
        i["restarts"].as_u64() >= Some(1)
    });
    let error = restarted["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&format!("plugin process {hung_pid} hung")),
        "{error}"
    );
    assert!(error.contains("2 heartbeats unanswered"), "{error}");
    wait_for("the hung process to be gone", LONG, || {
        (!process_alive(hung_pid)).then_some(())
    });
    daemon.wait_instance("sleepy", "healthy again with a new pid", LONG, |i| {
        state_of(i) == "healthy" && pid_of(i) != hung_pid
    });
}

#[test]
fn plugin_dying_at_start_backs_off_into_a_crash_loop_with_capped_retries() {
    let world = World::new();
    world.install(&PluginPackage::testfault("doomed", &["--crash-on-start"]));
    let setup = DaemonSetup::default()
        .instance("doomed")
        .process("restart_initial_delay = \"50ms\"")
        .process("restart_max_delay = \"800ms\"")
        .process("crash_loop_restarts = 4")
        .process("crash_loop_window = \"1m\"");
    let daemon = world.start(&setup);

    // Record the scheduled delay of each restart as the daemon reports it.
    let mut delays: Vec<(u64, u64)> = Vec::new();
    let looping = wait_for("crash-loop after 6 restarts", LONG, || {
        let instance = daemon.instance("doomed")?;
        let restarts = instance["restarts"].as_u64().unwrap_or(0);
        let next = instance["next_restart_unix_ms"].as_u64().unwrap_or(0);
        let since = instance["since_unix_ms"].as_u64().unwrap_or(0);
        if next > 0 && !delays.iter().any(|(r, _)| *r == restarts) {
            delays.push((restarts, next.saturating_sub(since)));
        }
        (state_of(&instance) == "crash-loop" && restarts >= 6).then_some(instance)
    });
    let error = looping["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("plugin `doomed` 0.1.0") && error.contains("exited before its handshake"),
        "{error}"
    );
    assert!(
        error.contains("crashing on start as configured"),
        "the plugin's last stderr line is quoted: {error}"
    );

    // Backoff grows (jitter takes at most 20% off) and never exceeds the cap.
    assert!(delays.len() >= 3, "saw too few restarts: {delays:?}");
    for window in delays.windows(2) {
        let ((r1, d1), (r2, d2)) = (window[0], window[1]);
        if r2 == r1 + 1 && d1 < 640 {
            assert!(
                d2 as f64 >= d1 as f64 * 1.5,
                "delay did not grow from restart {r1} to {r2}: {delays:?}"
            );
        }
    }
    assert!(
        delays.iter().all(|(_, d)| *d <= 810),
        "a delay exceeded the cap: {delays:?}"
    );
    let (_, last) = *delays.last().expect("delays");
    assert!(last >= 600, "crash loop retries at the cap: {delays:?}");
}

#[test]
fn sigterm_shuts_every_plugin_down_within_the_grace_period() {
    let world = World::new();
    let mut setup = DaemonSetup::default().process("grace_period = \"3s\"");
    for name in ["one", "two", "three"] {
        world.install(&PluginPackage::testfault(name, &[]));
        setup = setup.instance(name);
    }
    let mut daemon = world.start(&setup);
    let pids: Vec<u32> = ["one", "two", "three"]
        .iter()
        .map(|n| pid_of(&daemon.wait_instance(n, "healthy", LONG, |i| state_of(i) == "healthy")))
        .collect();

    daemon.signal(Signal::SIGTERM);
    let (status, took) = daemon.wait_exit(Duration::from_secs(10));

    assert!(status.success(), "integrationd exited with {status}");
    assert!(
        took < Duration::from_secs(3),
        "took {took:?}, grace period is 3s"
    );
    for pid in pids {
        assert!(!process_alive(pid), "plugin {pid} outlived the daemon");
    }
    let log = daemon.log_text();
    assert_eq!(
        log.matches("shutdown requested by the host").count(),
        3,
        "every plugin got Shutdown:\n{log}"
    );
    assert!(
        !world.admin_socket().exists(),
        "the admin socket is removed on a clean stop"
    );
}

#[test]
fn a_plugin_that_ignores_shutdown_is_killed_after_the_grace_period() {
    let world = World::new();
    world.install(&PluginPackage::testfault(
        "stubborn",
        &["--hang-after-ms", "100"],
    ));
    let setup = DaemonSetup::default()
        .instance("stubborn")
        .process("grace_period = \"1s\"")
        .process("heartbeat_interval = \"30s\"");
    let mut daemon = world.start(&setup);
    let pid =
        pid_of(&daemon.wait_instance("stubborn", "healthy", LONG, |i| state_of(i) == "healthy"));
    // Wait until it stops answering, through the admin's own view: the log says so.
    wait_for("the plugin to hang", LONG, || {
        daemon
            .log_text()
            .contains("hanging as configured")
            .then_some(())
    });

    daemon.signal(Signal::SIGTERM);
    let (status, took) = daemon.wait_exit(Duration::from_secs(10));
    assert!(status.success());
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "took {took:?}"
    );
    assert!(!process_alive(pid));
    let log = daemon.log_text();
    assert!(
        log.contains("sending SIGTERM") && log.contains("sending SIGKILL"),
        "{log}"
    );
}

#[test]
fn kill_9_of_the_daemon_leaves_no_orphans_and_a_new_daemon_starts_clean() {
    let world = World::new();
    let mut setup = DaemonSetup::default();
    for name in ["left", "right"] {
        world.install(&PluginPackage::testfault(name, &[]));
        setup = setup.instance(name);
    }
    let mut daemon = world.start(&setup);
    let pids: Vec<u32> = ["left", "right"]
        .iter()
        .map(|n| pid_of(&daemon.wait_instance(n, "healthy", LONG, |i| state_of(i) == "healthy")))
        .collect();
    let sockets_before = std::fs::read_dir(world.state_dir().join("run"))
        .expect("runtime dir")
        .count();
    assert_eq!(sockets_before, 2);

    daemon.signal(Signal::SIGKILL);
    daemon.wait_exit(Duration::from_secs(10));
    for pid in &pids {
        wait_for(
            &format!("plugin {pid} to die with its supervisor"),
            Duration::from_secs(10),
            || (!process_alive(*pid)).then_some(()),
        );
    }
    assert!(
        world.admin_socket().exists(),
        "kill -9 leaves the admin socket behind"
    );
    // Plugins remove their own sockets when they stop; one killed outright would not.
    let stale = world.state_dir().join("run/p7.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).expect("bind a stale socket"));

    let daemon = world.start_written();
    for name in ["left", "right"] {
        let instance = daemon.wait_instance(name, "healthy", LONG, |i| state_of(i) == "healthy");
        assert!(!pids.contains(&pid_of(&instance)));
    }
    assert!(!stale.exists(), "the stale plugin socket was removed");
    let log = daemon.log_text();
    assert!(log.contains("removed a stale admin socket"), "{log}");
    assert!(log.contains("removed a stale plugin socket"), "{log}");
}

#[test]
fn plugin_flooding_stderr_does_not_stall_the_supervisor() {
    let world = World::new();
    world.install(&PluginPackage::testfault("noisy", &["--flood-stderr"]));
    world.install(&PluginPackage::testfault("quiet", &[]));
    let daemon = world.start(&DaemonSetup::default().instance("noisy").instance("quiet"));
    daemon.wait_instance("noisy", "healthy", LONG, |i| state_of(i) == "healthy");
    daemon.wait_instance("quiet", "healthy", LONG, |i| state_of(i) == "healthy");
    // Several heartbeat periods later both still answer, and status answers promptly.
    wait_for("dropped-line reports", LONG, || {
        daemon
            .log_text()
            .contains("plugin log lines dropped")
            .then_some(())
    });
    let started = std::time::Instant::now();
    for instance in daemon.instances() {
        assert_eq!(state_of(&instance), "healthy", "{instance}");
        assert_eq!(instance["restarts"], 0, "{instance}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "status took {:?}",
        started.elapsed()
    );
    let log = daemon.log_text();
    assert!(
        log.contains("plugin=noisy") || log.contains("\"plugin\":\"noisy\""),
        "re-emitted with the plugin field"
    );
}

#[test]
fn plugin_over_its_memory_limit_fails_and_is_reported() {
    let world = World::new();
    world.install(&PluginPackage::testfault(
        "hungry",
        &["--allocate-mb", "512"],
    ));
    let mut setup = DaemonSetup::default()
        .instance("hungry")
        .process("restart_initial_delay = \"1s\"");
    setup
        .process
        .push("[process.limits]\nmemory_mb = 256".into());
    let daemon = world.start(&setup);
    let instance = daemon.wait_instance("hungry", "a failed start", LONG, |i| {
        i["restarts"].as_u64() >= Some(1)
    });
    let error = instance["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("plugin `hungry` 0.1.0") && error.contains("exited before its handshake"),
        "{error}"
    );
    assert!(
        error.contains("memory allocation") || error.contains("SIGABRT"),
        "{error}"
    );
}
