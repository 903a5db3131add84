//! The daemon as a `Type=notify` service: a datagram socket stands in for systemd's
//! `NOTIFY_SOCKET`, and `WATCHDOG_USEC` turns the watchdog on.

use std::ffi::OsStr;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use e2e_tests::{DaemonSetup, World, wait_for};

/// systemd's side of the notification socket.
struct Notifications {
    socket: UnixDatagram,
}

impl Notifications {
    fn bind(world: &World) -> (Self, std::path::PathBuf) {
        let path = world.root.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        (Self { socket }, path)
    }

    /// The next state line within `limit`, if one comes.
    fn next(&self, limit: Duration) -> Option<String> {
        self.socket
            .set_read_timeout(Some(limit))
            .expect("read timeout");
        let mut buffer = [0u8; 4096];
        match self.socket.recv(&mut buffer) {
            Ok(n) => Some(String::from_utf8_lossy(&buffer[..n]).into_owned()),
            Err(err)
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                None
            }
            Err(err) => panic!("notify socket: {err}"),
        }
    }

    /// Reads until `line` arrives (within `limit`); returns what came before it.
    fn until(&self, line: &str, limit: Duration) -> Vec<String> {
        let deadline = Instant::now() + limit;
        let mut before = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no {line:?} within {limit:?}; got {before:?}"
            );
            match self.next(left) {
                Some(got) if got == line => return before,
                Some(got) => before.push(got),
                None => {}
            }
        }
    }

    /// Everything already queued, without waiting.
    fn drain(&self) -> Vec<String> {
        let mut queued = Vec::new();
        while let Some(line) = self.next(Duration::from_millis(1)) {
            queued.push(line);
        }
        queued
    }
}

#[test]
fn ready_watchdog_pings_and_none_while_the_core_is_wedged() {
    let world = World::new();
    let (systemd, notify_path) = Notifications::bind(&world);
    let wedge = world.root.path().join("wedge");
    world.write_config(&DaemonSetup::default());
    // A 600 ms watchdog: a ping every 200 ms while the core takes work.
    let mut daemon = world.start_written_with_env(&[
        ("NOTIFY_SOCKET", notify_path.as_os_str()),
        ("WATCHDOG_USEC", OsStr::new("600000")),
        ("INTEGRATIOND_TEST_WEDGE_FILE", wedge.as_os_str()),
    ]);
    let before_ready = systemd.until("READY=1", Duration::from_secs(20));
    assert!(before_ready.is_empty(), "{before_ready:?}");
    for _ in 0..3 {
        assert_eq!(
            systemd.next(Duration::from_secs(2)).as_deref(),
            Some("WATCHDOG=1")
        );
    }

    // The committer stops taking work, as on a hung disk: the pings stop.
    std::fs::write(&wedge, b"").expect("wedge");
    wait_for(
        "the withheld ping in the log",
        Duration::from_secs(5),
        || {
            daemon
                .log_text()
                .contains("withholding systemd's watchdog ping")
                .then_some(())
        },
    );
    let sent_before = systemd.drain();
    assert!(
        sent_before.iter().all(|line| line == "WATCHDOG=1"),
        "{sent_before:?}"
    );
    // Three whole watchdog timeouts without a ping: systemd would have restarted it.
    assert_eq!(systemd.next(Duration::from_millis(1800)), None);
    assert!(
        daemon
            .log_text()
            .contains("the committer has not answered a probe"),
        "the log does not say what stalled:\n{}",
        daemon.log_text()
    );

    // Unwedged, the pings resume.
    std::fs::remove_file(&wedge).expect("unwedge");
    systemd.until("WATCHDOG=1", Duration::from_secs(5));

    // A reload is announced, then readiness again; a stop is announced.
    daemon.signal(nix::sys::signal::Signal::SIGHUP);
    let before_reload = systemd.until("RELOADING=1", Duration::from_secs(5));
    assert!(
        before_reload.iter().all(|line| line == "WATCHDOG=1"),
        "{before_reload:?}"
    );
    systemd.until("READY=1", Duration::from_secs(5));
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    systemd.until("STOPPING=1", Duration::from_secs(5));
    let (status, _) = daemon.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_watchdog_meant_for_another_process_is_left_alone() {
    let world = World::new();
    let (systemd, notify_path) = Notifications::bind(&world);
    world.write_config(&DaemonSetup::default());
    let mut daemon = world.start_written_with_env(&[
        ("NOTIFY_SOCKET", notify_path.as_os_str()),
        ("WATCHDOG_USEC", OsStr::new("300000")),
        ("WATCHDOG_PID", OsStr::new("1")),
    ]);
    systemd.until("READY=1", Duration::from_secs(20));
    // Ten of its would-be ping periods: nothing.
    assert_eq!(systemd.next(Duration::from_secs(1)), None);
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(
        systemd.next(Duration::from_secs(5)).as_deref(),
        Some("STOPPING=1")
    );
    daemon.wait_exit(Duration::from_secs(15));
}
