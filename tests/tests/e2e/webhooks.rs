//! Webhook ingress end to end: `POST /v1/webhooks/{tenant}/{integration}` through the
//! real daemon and the testfault plugin (which wants `x-testfault-token: good` and maps
//! `{"id", "events"}` into that many events): 202 only once events are durable, nothing
//! unverified stored while the plugin is down, and every hostile request answered with its documented
//! status, nothing stored, the daemon unaffected.

use std::collections::HashSet;
use std::time::Duration;

use e2e_tests::http::{self, Framing, HttpResponse};
use e2e_tests::{DaemonSetup, PluginPackage, World, files_under, pid_of, state_of, wait_for};

pub(crate) const GOOD: (&str, &str) = ("x-testfault-token", "good");

pub(crate) fn hooks() -> PluginPackage {
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

pub(crate) fn wait_healthy(daemon: &e2e_tests::Daemon, integration: &str) -> u32 {
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
fn deliveries_no_plugin_can_verify_are_refused_with_retry_after_and_never_stored() {
    let world = World::new();
    world.install(&hooks());
    let daemon = world.start(
        &setup("")
            .process("restart_initial_delay = \"4s\"")
            .process("restart_max_delay = \"4s\""),
    );
    daemon.kill_plugin("gh");
    let addr = daemon.http_addr();

    // Signed or not, nothing is kept while no plugin can verify it: the sender retries.
    for token in ["good", "forged"] {
        let refused = post(
            &addr,
            "/v1/webhooks/acme/gh",
            &[("x-testfault-token", token)],
            r#"{"id":"q0","events":2}"#,
        );
        assert_eq!(refused.status, 503, "{}", refused.body);
        assert_eq!(refused.json()["error"], "plugin_unavailable");
        assert!(refused.header("retry-after").is_some());
    }

    // Back after its backoff, the plugin verifies the redelivery, which is stored once.
    wait_healthy(&daemon, "gh");
    let redelivered = post(
        &addr,
        "/v1/webhooks/acme/gh",
        &[GOOD],
        r#"{"id":"q0","events":2}"#,
    );
    assert_eq!(redelivered.status, 202, "{}", redelivered.body);
    assert_eq!(redelivered.json()["status"], "accepted");
    let ids = wait_for(
        "the redelivery in the sink",
        Duration::from_secs(20),
        || {
            let ids = world.sink_ids();
            (ids.len() >= 2).then_some(ids)
        },
    );
    assert_eq!(ids.len(), 2, "{ids:?}");
}

#[test]
fn deliveries_the_daemon_verifies_wait_in_the_inbox_without_their_secret() {
    const CANARY: &str = "tf-canary-7d1e5b";
    let world = World::new();
    world.install(&PluginPackage {
        capabilities: vec!["webhook".to_owned()],
        manifest_extra:
            "[webhook]\nauthentication = \"shared-secret\"\nheader = \"x-testfault-token\"\n"
                .to_owned(),
        ..PluginPackage::testfault(
            "hooks",
            &["--capabilities", "webhook", "--webhook-token", CANARY],
        )
    });
    let daemon = world.start(
        &DaemonSetup::default()
            .with_master_key(&world.root.path().join("master.key"))
            .extra("[ingress]\ninbox_max_entries = 3\n")
            .process("restart_initial_delay = \"4s\"")
            .process("restart_max_delay = \"4s\""),
    );
    daemon.ctl_json(&["tenants", "create", "acme"]);
    daemon.set_credential("acme", "hook-secret", "webhook-secret", CANARY.as_bytes());
    daemon.add_integration(
        &world,
        "acme",
        "gh",
        "hooks",
        &serde_json::json!({ "credentials": { "webhook": "hook-secret" } }),
    );
    daemon.kill_plugin("gh");
    let addr = daemon.http_addr();

    let signed = [("x-testfault-token", CANARY)];
    for n in 0..3 {
        let queued = post(
            &addr,
            "/v1/webhooks/acme/gh",
            &signed,
            &format!(r#"{{"id":"q{n}","events":2}}"#),
        );
        assert_eq!(queued.status, 202, "{}", queued.body);
        assert_eq!(queued.json()["status"], "queued");
    }
    // A forged one is refused by the daemon itself, not kept.
    let forged = post(
        &addr,
        "/v1/webhooks/acme/gh",
        &[("x-testfault-token", "forged")],
        r#"{"id":"x","events":2}"#,
    );
    assert_eq!(forged.status, 401, "{}", forged.body);
    let full = post(&addr, "/v1/webhooks/acme/gh", &signed, r#"{"id":"q3"}"#);
    assert_eq!(full.status, 503, "{}", full.body);
    assert_eq!(full.json()["error"], "inbox_full");
    assert!(world.sink_ids().is_empty(), "nothing processed while down");
    // The kept deliveries do not carry their secret to disk.
    for file in files_under(&world.state_dir()) {
        let bytes = std::fs::read(&file).unwrap_or_default();
        assert!(
            !bytes.windows(CANARY.len()).any(|w| w == CANARY.as_bytes()),
            "the webhook secret is in {}",
            file.display()
        );
    }

    // Back after its backoff, the plugin gets the waiting deliveries.
    let ids = wait_for("the inbox processed", Duration::from_secs(20), || {
        let ids = world.sink_ids();
        (ids.len() == 6).then_some(ids)
    });
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 6);
    let room = post(&addr, "/v1/webhooks/acme/gh", &signed, r#"{"id":"q4"}"#);
    assert_eq!(room.status, 202, "{}", room.body);
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
            401,
            "bad_signature",
        ),
        (
            "another tenant's integration",
            send("/v1/webhooks/acme/gh-globex", &json, b"{}", Framing::Length),
            401,
            "bad_signature",
        ),
        (
            "control characters in the path",
            send("/v1/webhooks/acme/%0a%1b", &json, b"{}", Framing::Length),
            401,
            "bad_signature",
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

    // A flood of junk: each answered 401 until the sender's address is over its budget
    // of failed authentications (60 a minute), then 429 for that address alone.
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
            assert_eq!(response.json()["error"], "too_many_failures");
            assert!(response.header("retry-after").is_some());
        } else {
            assert_eq!(response.status, 401, "{}", response.body);
        }
    }
    assert!(limited >= 20, "only {limited} of 80 were limited");
    // The junk spent none of acme's rate: its real deliveries from elsewhere get in.
    let elsewhere = |source: [u8; 4], path: &str, body: &[u8]| {
        http::request_from(
            source.into(),
            &addr,
            "POST",
            path,
            &json,
            body,
            Framing::Length,
        )
        .expect("answered")
    };
    let real = elsewhere([127, 0, 0, 2], path, br#"{"id":"real"}"#);
    assert_eq!(real.status, 202, "{}", real.body);
    // Authenticated deliveries do count against the tenant: pings (stored nothing) over
    // the burst of 40 are limited with Retry-After.
    let mut limited = 0;
    for _ in 0..80 {
        let response = elsewhere([127, 0, 0, 3], path, br#"{"ping":true}"#);
        if response.status == 429 {
            limited += 1;
            assert_eq!(response.json()["error"], "rate_limited");
            let wait: u64 = response
                .header("retry-after")
                .and_then(|v| v.parse().ok())
                .expect("Retry-After in seconds");
            assert!((1..=2).contains(&wait), "{wait}");
        } else {
            assert_eq!(response.status, 200, "{}", response.body);
        }
    }
    assert!(limited >= 30, "only {limited} of 80 were limited");
    // The other tenant is not limited by acme's flood.
    let other = elsewhere(
        [127, 0, 0, 2],
        "/v1/webhooks/globex/gh-globex",
        br#"{"id":"g1"}"#,
    );
    assert_eq!(other.status, 202, "{}", other.body);

    // Nothing of the junk was stored: acme's real event, then globex's.
    let ids = wait_for("both events in the sink", Duration::from_secs(10), || {
        let ids = world.sink_ids();
        (ids.len() >= 2).then_some(ids)
    });
    assert_eq!(ids.len(), 2, "acme's real event and globex's: {ids:?}");
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
pub(crate) struct IngressAddress {
    current: std::sync::Mutex<(u64, String)>,
    changed: std::sync::Condvar,
}

impl IngressAddress {
    pub(crate) fn new(addr: String) -> std::sync::Arc<Self> {
        std::sync::Arc::new(Self {
            current: std::sync::Mutex::new((0, addr)),
            changed: std::sync::Condvar::new(),
        })
    }

    fn current(&self) -> (u64, String) {
        self.current.lock().expect("address").clone()
    }

    pub(crate) fn publish(&self, addr: String) {
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
pub(crate) fn redelivering_senders(
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

#[test]
fn a_delivery_larger_than_a_default_grpc_message_reaches_the_plugin() {
    let world = World::new();
    world.install(&hooks());
    let daemon = world.start(&setup(""));
    wait_healthy(&daemon, "gh");
    // 6 MiB: over tonic's 4 MiB default, within the ingress's 25 MiB.
    let body = format!(
        r#"{{"id":"big","events":1,"pad":"{}"}}"#,
        "x".repeat(6 * 1024 * 1024)
    );
    let accepted = post(&daemon.http_addr(), "/v1/webhooks/acme/gh", &[GOOD], &body);
    assert_eq!(accepted.status, 202, "{}", accepted.body);
    // The plugin verified and mapped it (its event carries the 6 MiB payload, over the
    // 1 MiB event limit, so it is a dead letter: either way it was processed, not queued).
    let answer = accepted.json();
    assert_eq!(answer["status"], "accepted", "{answer}");
    let processed =
        answer["events"].as_u64().unwrap_or(0) + answer["dead_lettered"].as_u64().unwrap_or(0);
    assert_eq!(processed, 1, "{answer}");
}

#[test]
fn stalled_and_idle_connections_are_closed_and_capped_per_client() {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    let world = World::new();
    world.install(&hooks());
    let daemon = world.start(&setup(
        "[ingress]\nheader_timeout = \"1s\"\nidle_timeout = \"1s\"\nbody_timeout = \"1s\"\nmax_connections_per_client = 4\n",
    ));
    wait_healthy(&daemon, "gh");
    let addr = daemon.http_addr();
    // Whether the server closed the connection (a read sees the end, or an error after
    // an answer) within the socket's read timeout.
    let closed_by_server = |stream: &mut TcpStream| {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut sink = Vec::new();
        match stream.read_to_end(&mut sink) {
            Ok(_) => true,
            Err(err) => {
                err.kind() != std::io::ErrorKind::WouldBlock
                    && err.kind() != std::io::ErrorKind::TimedOut
            }
        }
    };

    // Headers that never finish, and a body that never comes: both closed.
    let mut slow_headers = TcpStream::connect(&addr).expect("connect");
    slow_headers
        .write_all(b"POST /v1/webhooks/acme/gh HTTP/1.1\r\nHost: x\r\n")
        .expect("partial headers");
    let mut slow_body = TcpStream::connect(&addr).expect("connect");
    slow_body
        .write_all(b"POST /v1/webhooks/acme/gh HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
        .expect("partial body");
    assert!(
        closed_by_server(&mut slow_headers),
        "stalled headers kept open"
    );
    assert!(closed_by_server(&mut slow_body), "stalled body kept open");

    // Idle connections are closed; beyond 4 at once from one address, the next one is
    // closed at once while another address is served.
    let mut idle: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(&addr).expect("connect"))
        .collect();
    let mut fifth = TcpStream::connect(&addr).expect("connect");
    fifth
        .set_read_timeout(Some(Duration::from_millis(800)))
        .expect("timeout");
    let mut byte = [0u8; 1];
    assert_eq!(
        fifth
            .read(&mut byte)
            .expect("closed at once, not timed out"),
        0,
        "a fifth connection from one address was kept"
    );
    let other = http::request_from(
        [127, 0, 0, 2].into(),
        &addr,
        "GET",
        "/healthz",
        &[],
        b"",
        Framing::Length,
    )
    .expect("another address is served");
    assert_eq!(other.status, 200);
    for stream in &mut idle {
        assert!(closed_by_server(stream), "an idle connection was kept");
    }
    // With the idle ones gone, this address is served again.
    let (status, _) = daemon.http_get(&addr, "/healthz");
    assert_eq!(status, 200);
}
