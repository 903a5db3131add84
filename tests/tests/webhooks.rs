//! Webhook ingress end to end: `POST /v1/webhooks/{tenant}/{integration}` through the
//! real daemon and the testfault plugin (which wants `x-testfault-token: good` and maps
//! `{"id", "events"}` into that many events): 202 only once events are durable, the inbox
//! while the plugin is down, and every hostile request answered with its documented
//! status, nothing stored, the daemon unaffected.

use std::collections::HashSet;
use std::time::Duration;

use e2e_tests::http::{self, Framing, HttpResponse};
use e2e_tests::{DaemonSetup, PluginPackage, World, pid_of, state_of, wait_for};

const GOOD: (&str, &str) = ("x-testfault-token", "good");

fn hooks() -> PluginPackage {
    PluginPackage {
        capabilities: vec!["webhook".to_owned()],
        ..PluginPackage::testfault("hooks", &["--capabilities", "webhook"])
    }
}

fn setup(extra: &str) -> DaemonSetup {
    DaemonSetup::default()
        .tenant_instance("hooks", "acme", "gh")
        .tenant_instance("hooks", "globex", "gh-globex")
        .extra(extra)
}

fn post(addr: &str, path: &str, headers: &[(&str, &str)], body: &str) -> HttpResponse {
    http::post_json(addr, path, headers, body).expect("the daemon answers")
}

fn wait_healthy(daemon: &e2e_tests::Daemon, integration: &str) -> u32 {
    let instance = daemon.wait_instance(integration, "healthy", Duration::from_secs(20), |i| {
        state_of(i) == "healthy"
    });
    pid_of(&instance)
}

#[test]
fn deliveries_are_mapped_by_the_plugin_and_durable_before_202() {
    let world = World::new();
    world.install(&hooks());
    let daemon = world.start(&setup(""));
    wait_healthy(&daemon, "gh");
    let addr = daemon.http_addr();
    let path = "/v1/webhooks/acme/gh";

    let accepted = post(&addr, path, &[GOOD], r#"{"id":"d1","events":3}"#);
    assert_eq!(accepted.status, 202, "{}", accepted.body);
    assert_eq!(accepted.json()["events"], 3);
    // 202 means durable: the sink has them without waiting for anything else.
    let ids = wait_for("3 events in the sink", Duration::from_secs(10), || {
        let ids = world.sink_ids();
        (ids.len() == 3).then_some(ids)
    });

    // A redelivery (same source ids) is acknowledged and adds nothing.
    let again = post(&addr, path, &[GOOD], r#"{"id":"d1","events":3}"#);
    assert_eq!(again.status, 202);
    assert_eq!(again.json()["duplicates"], 3);

    let ping = post(&addr, path, &[GOOD], r#"{"ping":true}"#);
    assert_eq!(ping.status, 200, "{}", ping.body);

    let unsigned = post(
        &addr,
        path,
        &[("x-testfault-token", "bad")],
        r#"{"id":"d2"}"#,
    );
    assert_eq!(unsigned.status, 401);
    assert_eq!(unsigned.json()["error"], "bad_signature");
    let forbidden = post(&addr, path, &[GOOD], r#"{"id":"d3","forbidden":true}"#);
    assert_eq!(forbidden.status, 403);

    // An invalid event is dead-lettered; its valid siblings flow on.
    let mixed = post(
        &addr,
        path,
        &[GOOD],
        r#"{"id":"d4","events":2,"invalid":true}"#,
    );
    assert_eq!(mixed.status, 202);
    assert_eq!(mixed.json()["events"], 1);
    assert_eq!(mixed.json()["dead_lettered"], 1);

    let after = wait_for("4 events in the sink", Duration::from_secs(10), || {
        let ids = world.sink_ids();
        (ids.len() >= 4).then_some(ids)
    });
    assert_eq!(after.len(), 4, "3 + the valid one of d4: {after:?}");
    assert!(after.starts_with(&ids));
}

#[test]
fn deliveries_to_a_stopped_plugin_wait_in_the_inbox() {
    let world = World::new();
    world.install(&hooks());
    let daemon = world.start(
        &setup("[ingress]\ninbox_max_entries = 3\n")
            .process("restart_initial_delay = \"4s\"")
            .process("restart_max_delay = \"4s\""),
    );
    let pid = wait_healthy(&daemon, "gh");
    let addr = daemon.http_addr();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the plugin");
    daemon.wait_instance("gh", "down after kill -9", Duration::from_secs(10), |i| {
        state_of(i) != "healthy" && pid_of(i) != pid
    });

    for n in 0..3 {
        let queued = post(
            &addr,
            "/v1/webhooks/acme/gh",
            &[GOOD],
            &format!(r#"{{"id":"q{n}","events":2}}"#),
        );
        assert_eq!(queued.status, 202, "{}", queued.body);
        assert_eq!(queued.json()["status"], "queued");
    }
    let full = post(&addr, "/v1/webhooks/acme/gh", &[GOOD], r#"{"id":"q3"}"#);
    assert_eq!(full.status, 503, "{}", full.body);
    assert_eq!(full.json()["error"], "inbox_full");
    assert!(world.sink_ids().is_empty(), "nothing processed while down");

    // Back after its backoff, the plugin gets the waiting deliveries.
    let ids = wait_for("the inbox processed", Duration::from_secs(20), || {
        let ids = world.sink_ids();
        (ids.len() == 6).then_some(ids)
    });
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 6);
    // The inbox has room again.
    let room = post(&addr, "/v1/webhooks/acme/gh", &[GOOD], r#"{"id":"q4"}"#);
    assert_eq!(room.status, 202);
    assert_eq!(room.json()["status"], "accepted");
}

#[test]
fn hostile_requests_get_their_status_store_nothing_and_leave_the_daemon_well() {
    let world = World::new();
    world.install(&hooks());
    let daemon = world.start(&setup(
        "[ingress]\nmax_body_bytes = 4096\nrate_per_second = 5\nburst = 40\n",
    ));
    wait_healthy(&daemon, "gh");
    wait_healthy(&daemon, "gh-globex");
    let addr = daemon.http_addr();
    let path = "/v1/webhooks/acme/gh";
    let json = [("Content-Type", "application/json"), GOOD];
    let send = |path: &str, headers: &[(&str, &str)], body: &[u8], framing: Framing| {
        http::request(&addr, "POST", path, headers, body, framing).expect("answered")
    };

    let cases: Vec<(&str, HttpResponse, u16, &str)> = vec![
        (
            "oversized with a length",
            send(path, &json, &vec![b' '; 5000], Framing::Length),
            413,
            "payload_too_large",
        ),
        (
            "oversized, chunked",
            send(path, &json, &vec![b' '; 5000], Framing::Chunked),
            413,
            "payload_too_large",
        ),
        (
            "truncated",
            send(
                path,
                &json,
                br#"{"id":"t""#,
                Framing::Truncated { declared: 100 },
            ),
            400,
            "incomplete_body",
        ),
        (
            "not JSON",
            send(path, &json, b"<xml/>", Framing::Length),
            400,
            "malformed_json",
        ),
        (
            "JSON cut short",
            send(path, &json, br#"{"id":"d1","events":"#, Framing::Length),
            400,
            "malformed_json",
        ),
        (
            "wrong content type",
            send(
                path,
                &[("Content-Type", "application/xml"), GOOD],
                b"<a/>",
                Framing::Length,
            ),
            415,
            "unsupported_media_type",
        ),
        (
            "no content type",
            send(path, &[GOOD], br#"{"id":"x"}"#, Framing::Length),
            415,
            "unsupported_media_type",
        ),
        (
            "unknown tenant",
            send("/v1/webhooks/nobody/gh", &json, b"{}", Framing::Length),
            404,
            "unknown_integration",
        ),
        (
            "another tenant's integration",
            send("/v1/webhooks/acme/gh-globex", &json, b"{}", Framing::Length),
            404,
            "unknown_integration",
        ),
        (
            "control characters in the path",
            send("/v1/webhooks/acme/%0a%1b", &json, b"{}", Framing::Length),
            404,
            "unknown_integration",
        ),
        (
            "wrong method",
            http::request(&addr, "GET", path, &[], b"", Framing::Length).expect("answered"),
            405,
            "method_not_allowed",
        ),
    ];
    for (name, response, status, code) in &cases {
        assert_eq!(response.status, *status, "{name}: {}", response.body);
        assert_eq!(response.json()["error"], *code, "{name}: {}", response.body);
        assert!(
            !response.body.contains('\u{1b}'),
            "{name}: control characters are escaped"
        );
    }

    // A flood: the burst passes (each answered 401: the token is wrong), then 429s
    // with Retry-After.
    let mut limited = 0;
    for _ in 0..80 {
        let response = send(
            path,
            &[
                ("Content-Type", "application/json"),
                ("x-testfault-token", "no"),
            ],
            br#"{"id":"f"}"#,
            Framing::Length,
        );
        if response.status == 429 {
            limited += 1;
            assert_eq!(response.json()["error"], "rate_limited");
            let wait: u64 = response
                .header("retry-after")
                .and_then(|v| v.parse().ok())
                .expect("Retry-After in seconds");
            assert!((1..=2).contains(&wait), "{wait}");
        } else {
            assert_eq!(response.status, 401, "{}", response.body);
        }
    }
    assert!(limited >= 30, "only {limited} of 80 were limited");
    // The other tenant is not limited by acme's flood.
    let other = send(
        "/v1/webhooks/globex/gh-globex",
        &json,
        br#"{"id":"g1"}"#,
        Framing::Length,
    );
    assert_eq!(other.status, 202, "{}", other.body);

    // Nothing from acme was stored (it would have been committed before globex's event,
    // which the asynchronous sink shows once it is written); the daemon is well.
    let ids = wait_for(
        "globex's event in the sink",
        Duration::from_secs(10),
        || {
            let ids = world.sink_ids();
            (!ids.is_empty()).then_some(ids)
        },
    );
    assert_eq!(ids.len(), 1, "only globex's event: {ids:?}");
    let (status, _) = daemon.http_get(&addr, "/healthz");
    assert_eq!(status, 200);
    assert!(
        daemon
            .instance("gh")
            .is_some_and(|i| state_of(&i) == "healthy")
    );
}

/// Where the daemon's HTTP ingress listens now. A sender whose request failed waits
/// for the next daemon's address to be published (at most `limit`: a refusal from a
/// daemon that is up, a 503 say, is retried after it) instead of a fixed pause.
struct IngressAddress {
    current: std::sync::Mutex<(u64, String)>,
    changed: std::sync::Condvar,
}

impl IngressAddress {
    fn new(addr: String) -> std::sync::Arc<Self> {
        std::sync::Arc::new(Self {
            current: std::sync::Mutex::new((0, addr)),
            changed: std::sync::Condvar::new(),
        })
    }

    fn current(&self) -> (u64, String) {
        self.current.lock().expect("address").clone()
    }

    fn publish(&self, addr: String) {
        let mut current = self.current.lock().expect("address");
        *current = (current.0 + 1, addr);
        self.changed.notify_all();
    }

    fn wait_newer_than(&self, seen: u64, limit: Duration) {
        let current = self.current.lock().expect("address");
        let _ = self
            .changed
            .wait_timeout_while(current, limit, |(generation, _)| *generation == seen)
            .expect("address");
    }
}

/// Senders delivering `{"id": "<prefix><n>", "events": 1}` for n in 0..count, spread
/// over `senders` threads, each retried until a 202 like GitHub's redelivery. Counts
/// acknowledged deliveries and failed attempts.
fn redelivering_senders(
    address: &std::sync::Arc<IngressAddress>,
    senders: usize,
    prefix: &'static str,
    count: usize,
    deadline: Duration,
) -> (
    Vec<std::thread::JoinHandle<()>>,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let acked = std::sync::Arc::new(AtomicUsize::new(0));
    let failures = std::sync::Arc::new(AtomicUsize::new(0));
    let threads = (0..senders)
        .map(|sender| {
            let (address, acked, failures) = (address.clone(), acked.clone(), failures.clone());
            std::thread::spawn(move || {
                for n in (sender..count).step_by(senders) {
                    let body = format!(r#"{{"id":"{prefix}{n}","events":1}}"#);
                    let give_up = std::time::Instant::now() + deadline;
                    loop {
                        let (generation, target) = address.current();
                        match http::post_json(&target, "/v1/webhooks/acme/gh", &[GOOD], &body) {
                            Ok(response) if response.status == 202 => break,
                            other => {
                                failures.fetch_add(1, Ordering::Relaxed);
                                assert!(
                                    std::time::Instant::now() < give_up,
                                    "{prefix}{n} never acknowledged; last answer: {other:?}"
                                );
                                address.wait_newer_than(generation, Duration::from_millis(500));
                            }
                        }
                    }
                    acked.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    (threads, acked, failures)
}

#[test]
fn kill_9_of_the_daemon_while_webhooks_arrive_loses_no_acknowledged_delivery() {
    use std::sync::atomic::Ordering;

    const DELIVERIES: usize = 2_000;
    let world = World::new();
    world.install(&hooks());
    let mut daemon = world.start(&setup(
        "[ingress]\nrate_per_second = 100000\nburst = 100000\n",
    ));
    wait_healthy(&daemon, "gh");
    let address = IngressAddress::new(daemon.http_addr());
    let (senders, acked, failures) =
        redelivering_senders(&address, 4, "k", DELIVERIES, Duration::from_secs(120));
    wait_for(
        "500 deliveries acknowledged",
        Duration::from_secs(60),
        || (acked.load(Ordering::Relaxed) >= 500).then_some(()),
    );
    daemon.signal(nix::sys::signal::Signal::SIGKILL);
    daemon.wait_exit(Duration::from_secs(10));
    let acked_before_kill = acked.load(Ordering::Relaxed);
    assert!(acked_before_kill < DELIVERIES, "the kill landed mid-flood");
    let stored_before_restart = world.sink_ids().len();

    let daemon = world.start_written();
    address.publish(daemon.http_addr());
    for sender in senders {
        sender.join().expect("sender");
    }
    assert!(
        failures.load(Ordering::Relaxed) > 0,
        "some requests met the dead daemon"
    );
    let ids = wait_for(
        "every acknowledged delivery in the sink",
        Duration::from_secs(60),
        || {
            let ids = world.sink_ids();
            (ids.len() >= DELIVERIES).then_some(ids)
        },
    );
    assert_eq!(
        ids.len(),
        DELIVERIES,
        "{stored_before_restart} were stored before the restart"
    );
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        DELIVERIES,
        "an event twice"
    );
}

#[test]
fn kill_9_of_the_daemon_while_a_million_events_stream_and_webhooks_arrive_loses_nothing() {
    use std::sync::atomic::Ordering;

    const STREAM: usize = 1_000_000;
    const DELIVERIES: usize = 2_000;
    let world = World::new();
    let stream = STREAM.to_string();
    world.install(&PluginPackage {
        capabilities: vec!["collect".to_owned(), "webhook".to_owned()],
        ..PluginPackage::testfault(
            "both",
            &["--capabilities", "collect,webhook", "--emit", &stream],
        )
    });
    let setup = DaemonSetup::default()
        .tenant_instance("both", "acme", "gh")
        .process("collect_interval = \"100ms\"")
        .extra(
            "[ingress]\nrate_per_second = 100000\nburst = 100000\n[sinks]\njsonl_max_bytes = 4294967296\n",
        );
    let mut daemon = world.start(&setup);
    wait_healthy(&daemon, "gh");
    let address = IngressAddress::new(daemon.http_addr());
    let (senders, acked, _) =
        redelivering_senders(&address, 4, "both", DELIVERIES, Duration::from_secs(180));
    let mut counter = e2e_tests::SinkLineCounter::new(&world);
    wait_for("both paths under way", Duration::from_secs(60), || {
        (acked.load(Ordering::Relaxed) >= 300 && counter.count() >= 50_000).then_some(())
    });
    daemon.signal(nix::sys::signal::Signal::SIGKILL);
    daemon.wait_exit(Duration::from_secs(10));
    assert!(counter.count() < STREAM, "the kill landed mid-stream");

    let daemon = world.start_written();
    address.publish(daemon.http_addr());
    for sender in senders {
        sender.join().expect("sender");
    }
    let mut counter = e2e_tests::SinkLineCounter::new(&world);
    wait_for("every event in the sink", Duration::from_secs(300), || {
        (counter.count() >= STREAM + DELIVERIES).then_some(())
    });
    let ids = world.sink_ids();
    assert_eq!(ids.len(), STREAM + DELIVERIES);
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        ids.len(),
        "an event id twice"
    );
}
