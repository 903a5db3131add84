//! Integration health and alerts end to end: a plugin whose collects are refused for
//! authentication becomes `action_required` (class `auth`) in `status`, `health` and
//! `GET /v1/health`; its collects back off; a signed notification reaches a receiver on
//! loopback; when the refusals stop it is healthy again, a `resolved` notification
//! follows, and both alerts are in the sink as canonical events. Another tenant's token
//! sees none of it, exactly as for a tenant that does not exist. The metrics parse
//! with the Prometheus client's own text parser.

use std::time::Duration;

use crate::github_api;

use e2e_tests::receiver::Receiver;
use e2e_tests::{DaemonSetup, PluginPackage, World, http, pid_of, wait_for};
use serde_json::Value;

const LONG: Duration = Duration::from_secs(30);
const SECRET: &str = "an alert channel secret";

#[test]
fn refused_collects_need_action_alert_a_person_and_recover() {
    let marker = tempfile::tempdir().expect("tempdir");
    let refusing = marker.path().join("refuse");
    let world = World::new();
    world.install(&PluginPackage::collector(
        "puller",
        &[
            "--emit",
            "3",
            "--collect-error-file",
            refusing.to_str().expect("utf8"),
        ],
    ));
    let receiver = Receiver::start();
    let daemon = world.start(
        &DaemonSetup::default()
            .with_master_key(&world.root.path().join("master.key"))
            .process("collect_interval = \"300ms\"")
            .extra(&format!(
                "[health]\nfailing_after = 3\ndisable_after = 0\ncollect_backoff_max = \"2s\"\n\
                 [alerts]\nevaluate_interval = \"100ms\"\npending_for = \"0s\"\ndelivery_retry_max = \"500ms\"\n{}",
                ops_channel(&world, &receiver)
            )),
    );
    for tenant in ["acme", "globex"] {
        daemon.ctl_json(&["tenants", "create", tenant]);
    }
    daemon.add_integration(&world, "acme", "pull", "puller", &serde_json::json!({}));
    let health = |tenant: &str| daemon.ctl_json(&["health", "--tenant", tenant]);
    wait_for("healthy after its first collects", LONG, || {
        (health("acme")["integrations"][0]["state"] == "healthy").then_some(())
    });

    // The service starts refusing the credential.
    std::fs::write(&refusing, "auth").expect("refuse");
    let needs_action = wait_for("action_required", LONG, || {
        let doc = health("acme");
        (doc["integrations"][0]["state"] == "action_required").then_some(doc)
    });
    let integration = &needs_action["integrations"][0];
    assert_eq!(
        integration["last_error"]["class"], "auth",
        "{integration:#}"
    );
    assert_eq!(integration["last_error"]["source"], "collect");
    let status = daemon
        .instances()
        .into_iter()
        .find(|i| i["integration"] == "pull")
        .expect("in status");
    assert_eq!(status["health"], "action_required", "{status:#}");
    assert_eq!(status["error_class"], "auth");
    assert!(
        status["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("collect fails with auth"),
        "{status:#}"
    );

    // The same over HTTP with the tenant's monitor token, and an operator's.
    let token = |args: &[&str]| {
        daemon.ctl_json(args)["token"]
            .as_str()
            .expect("token")
            .to_owned()
    };
    let acme = token(&["tokens", "create", "--tenant", "acme", "--scope", "monitor"]);
    let globex = token(&[
        "tokens", "create", "--tenant", "globex", "--scope", "monitor",
    ]);
    let all = token(&["tokens", "create", "--scope", "monitor", "--all-tenants"]);
    let addr = daemon.http_addr();
    let (code, doc) = http::get_json(&addr, "/v1/health", &acme);
    assert_eq!(code, 200);
    assert_eq!(doc["integrations"][0]["state"], "action_required");
    assert_eq!(doc["integrations"][0]["last_error"]["class"], "auth");
    let (_, everyone) = http::get_json(&addr, "/v1/health", &all);
    assert_eq!(everyone["tenant"], Value::Null);
    assert!(
        everyone["integrations"]
            .as_array()
            .expect("list")
            .iter()
            .any(|i| i["tenant"] == "acme")
    );
    // Tenant isolation: globex sees nothing of acme; asking for acme and for a tenant
    // that does not exist get the same refusal.
    let (code, own) = http::get_json(&addr, "/v1/health", &globex);
    assert_eq!(code, 200);
    assert_eq!(own["integrations"], serde_json::json!([]), "{own:#}");
    let (refused_code, refused) = http::get_json(&addr, "/v1/health?tenant=acme", &globex);
    let (missing_code, missing) = http::get_json(&addr, "/v1/health?tenant=nobody", &globex);
    assert_eq!((refused_code, &refused), (missing_code, &missing));
    assert_eq!(refused_code, 403);
    let (_, globex_alerts) = http::get_json(&addr, "/v1/alerts", &globex);
    assert_eq!(globex_alerts["alerts"], serde_json::json!([]));
    let (code, _) = http::get_json(&addr, "/v1/health", "blt_000000000000_nope");
    assert_eq!(code, 401);

    // A signed notification reaches the receiver.
    let firing = wait_for("the firing notification", LONG, || {
        receiver.received().into_iter().find(|r| {
            let body = r.json();
            body["kind"] == "firing" && body["alert"]["rule"] == "integration_action_required"
        })
    });
    assert!(firing.signed_with(SECRET), "{:?}", firing.headers);
    assert!(!firing.signed_with("another secret"));
    let alert_id = firing.json()["alert"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    assert_eq!(
        firing.header("idempotency-key"),
        Some(format!("{alert_id}:firing").as_str())
    );
    assert_eq!(firing.json()["alert"]["tenant"], "acme");
    assert_eq!(firing.json()["alert"]["labels"]["class"], "auth");
    let (_, alerts) = http::get_json(&addr, "/v1/alerts?state=firing", &acme);
    assert!(
        alerts["alerts"]
            .as_array()
            .expect("alerts")
            .iter()
            .any(|a| a["id"] == alert_id.as_str()),
        "{alerts:#}"
    );

    // Collects back off: the failures are spaced further and further apart.
    let failures = |doc: &Value| doc["integrations"][0]["errors_1h"].as_u64().unwrap_or(0);
    let first = failures(&health("acme"));
    let later = wait_for("more failed collects", LONG, || {
        let doc = health("acme");
        (failures(&doc) >= first + 2).then_some(doc)
    });
    assert!(failures(&later) >= 3);
    let metrics = daemon.metrics();
    assert!(
        metrics.contains(r#"integrationd_integration_state{tenant="acme",integration="pull",plugin="puller",state="action_required"} 1"#),
        "{metrics}"
    );

    // The refusals stop: healthy again, a resolved notification, both events in the sink.
    std::fs::remove_file(&refusing).expect("fixed");
    wait_for("healthy again", LONG, || {
        (health("acme")["integrations"][0]["state"] == "healthy").then_some(())
    });
    let resolved = wait_for("the resolved notification", LONG, || {
        receiver.received().into_iter().find(|r| {
            let body = r.json();
            body["kind"] == "resolved" && body["alert"]["id"] == alert_id.as_str()
        })
    });
    assert!(resolved.signed_with(SECRET));
    assert_eq!(resolved.json()["alert"]["state"], "resolved");
    let notifications = receiver.notifications();
    let once = |key: String| notifications.iter().filter(|n| n.3 == key).count();
    assert_eq!(once(format!("{alert_id}:firing")), 1, "{notifications:?}");
    assert_eq!(once(format!("{alert_id}:resolved")), 1, "{notifications:?}");
    let events = wait_for("both alert events in the sink", LONG, || {
        let events: Vec<Value> = world
            .sink_lines()
            .iter()
            .map(|l| serde_json::from_str::<Value>(l).expect("json"))
            .filter(|e| e["data"]["alert.id"] == alert_id.as_str())
            .collect();
        (events.len() == 2).then_some(events)
    });
    let types: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(
        types,
        [
            "com.betalogs.system.integration.alert.firing",
            "com.betalogs.system.integration.alert.resolved"
        ]
    );
    assert!(events.iter().all(|e| e["tenant"] == "acme"));

    // The metrics parse with the official Prometheus text parser.
    let parsed = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys\nfrom prometheus_client.parser import text_string_to_metric_families as p\nnames = {s.name for f in p(sys.stdin.read()) for s in f.samples}\nprint('\\n'.join(sorted(names)))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write as _;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(daemon.metrics().as_bytes())?;
            child.wait_with_output()
        })
        .expect("python3 with prometheus_client (scripts/test installs it)");
    assert!(
        parsed.status.success(),
        "{}",
        String::from_utf8_lossy(&parsed.stderr)
    );
    let names = String::from_utf8_lossy(&parsed.stdout);
    for name in [
        "integrationd_integration_state",
        "integrationd_integration_events_total",
        "integrationd_integration_last_success_timestamp_seconds",
        "integrationd_sink_delivered_events",
        "integrationd_event_log_bytes",
    ] {
        assert!(names.lines().any(|n| n == name), "{name} missing: {names}");
    }
}

/// The first notification of `kind` for `rule` whose alert satisfies `which`.
fn notified(
    receiver: &Receiver,
    kind: &str,
    rule: &str,
    which: impl Fn(&Value) -> bool,
) -> Option<Value> {
    receiver
        .received()
        .into_iter()
        .map(|r| r.json())
        .find(|body| body["kind"] == kind && body["alert"]["rule"] == rule && which(&body["alert"]))
}

/// Waits for `rule`'s alert on `integration` (or with `subject`) to fire and then to
/// resolve once `cure` has run; each notification arrives exactly once.
struct AlertWatch<'a> {
    receiver: &'a Receiver,
}

impl AlertWatch<'_> {
    fn fired(&self, rule: &str, which: impl Fn(&Value) -> bool + Copy) -> String {
        let body = wait_for(&format!("{rule} firing"), LONG, || {
            notified(self.receiver, "firing", rule, which)
        });
        body["alert"]["id"].as_str().expect("id").to_owned()
    }

    fn resolved(&self, rule: &str, id: &str) {
        wait_for(&format!("{rule} resolved"), LONG, || {
            notified(self.receiver, "resolved", rule, |a| a["id"] == id)
        });
        let keys: Vec<String> = self
            .receiver
            .notifications()
            .into_iter()
            .filter(|n| n.2 == id)
            .map(|n| n.3)
            .collect();
        assert_eq!(
            keys,
            [format!("{id}:firing"), format!("{id}:resolved")],
            "{rule}: each notification once"
        );
    }
}

fn rfc3339_in(days: u64) -> String {
    humantime::format_rfc3339_seconds(
        std::time::SystemTime::now() + Duration::from_secs(days * 86_400),
    )
    .to_string()
}

#[test]
fn crash_loops_stale_data_dead_letters_and_expiring_credentials_alert_and_resolve() {
    let files = tempfile::tempdir().expect("tempdir");
    let crash = files.path().join("crash");
    let stall = files.path().join("stall");
    let path = |p: &std::path::Path| p.to_str().expect("utf8").to_owned();
    let world = World::new();
    let package = |name: &str, faults: &[&str]| PluginPackage {
        capabilities: vec!["collect".to_owned()],
        ..PluginPackage::testfault(name, faults)
    };
    world.install(&package(
        "crasher",
        &[
            "--capabilities",
            "collect",
            "--emit",
            "1",
            "--crash-file",
            &path(&crash),
        ],
    ));
    world.install(&package(
        "staller",
        &[
            "--capabilities",
            "collect",
            "--emit",
            "1",
            "--collect-stall-file",
            &path(&stall),
        ],
    ));
    world.install(&package(
        "dirty",
        &[
            "--capabilities",
            "collect",
            "--emit",
            "20",
            "--invalid-every",
            "2",
        ],
    ));
    let receiver = Receiver::start();
    let daemon = world.start(
        &DaemonSetup::default()
            .with_master_key(&world.root.path().join("master.key"))
            .process("collect_interval = \"300ms\"")
            .process("crash_loop_restarts = 2")
            .extra(&format!(
                "[health]\ncollect_stall_timeout = \"3s\"\ncollect_backoff_max = \"1s\"\n\
                 [alerts]\nevaluate_interval = \"100ms\"\npending_for = \"0s\"\ndelivery_retry_max = \"500ms\"\ndead_letters_per_15m = 3\n{}",
                ops_channel(&world, &receiver)
            )),
    );
    daemon.ctl_json(&["tenants", "create", "acme"]);
    let store_key = |days: u64| {
        let stored = daemon.ctl_stdin(
            None,
            &[
                "credentials",
                "set",
                "--tenant",
                "acme",
                "key",
                "--kind",
                "api-key",
                "--expires-at",
                &rfc3339_in(days),
            ],
            b"a key",
        );
        assert!(
            stored.status.success(),
            "{}",
            String::from_utf8_lossy(&stored.stderr)
        );
    };
    store_key(3);
    let uses_key = serde_json::json!({"credentials": {"token": "key"}});
    daemon.add_integration(&world, "acme", "crashy", "crasher", &serde_json::json!({}));
    daemon.add_integration(&world, "acme", "slow", "staller", &uses_key);
    daemon.add_integration(&world, "acme", "dirty", "dirty", &serde_json::json!({}));
    let watch = AlertWatch {
        receiver: &receiver,
    };
    let on = |integration: &'static str| move |a: &Value| a["integration"] == integration;

    // A credential expiring in 3 days: the 7-day alert, not yet the 1-day one.
    let expiring = watch.fired("credential_expiring_7d", |a| a["subject"] == "key");
    let dead_letters = watch.fired("dead_letters_growing", on("dirty"));
    assert!(notified(&receiver, "firing", "credential_expiring_1d", |_| true).is_none());

    // A plugin that crashes on every start.
    let crashy_pid = wait_for("crashy running", LONG, || {
        daemon
            .instance("crashy")
            .map(|i| pid_of(&i))
            .filter(|pid| *pid > 0)
    });
    std::fs::write(&crash, "").expect("crash");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(crashy_pid).expect("pid")),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the plugin");
    let crash_loop = watch.fired("plugin_crash_loop", on("crashy"));
    std::fs::remove_file(&crash).expect("no more crashes");
    watch.resolved("plugin_crash_loop", &crash_loop);

    // A Collect that stops yielding while the plugin answers its health checks: the
    // data goes stale, the instance is restarted, and fresh data resolves the alert.
    let before = daemon.instance("slow").expect("slow");
    std::fs::write(&stall, "").expect("stall");
    let stale = watch.fired("data_stale", on("slow"));
    let restarted = daemon.wait_instance("slow", "restarted after the stall", LONG, |i| {
        pid_of(i) > 0 && pid_of(i) != pid_of(&before)
    });
    assert!(pid_of(&restarted) > 0);
    let slow = daemon.ctl_json(&["health", "--tenant", "acme"])["integrations"]
        .as_array()
        .expect("integrations")
        .iter()
        .find(|i| i["integration"] == "slow")
        .cloned()
        .expect("slow");
    assert_eq!(slow["last_error"]["class"], "timeout", "{slow:#}");
    assert!(
        slow["last_error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("yielded nothing")),
        "{slow:#}"
    );
    std::fs::remove_file(&stall).expect("unstall");
    watch.resolved("data_stale", &stale);

    // Dead letters purged; the credential renewed for a month.
    daemon.ctl_json(&["dlq", "purge", "--tenant", "acme", "--all"]);
    watch.resolved("dead_letters_growing", &dead_letters);
    store_key(30);
    watch.resolved("credential_expiring_7d", &expiring);
    let health = daemon.ctl_json(&["health", "--tenant", "acme"]);
    let integrations = health["integrations"].as_array().expect("integrations");
    assert_eq!(integrations.len(), 3);
    assert!(
        integrations.iter().all(|i| i["state"] == "healthy"),
        "{health:#}"
    );
}

/// The start times of the collects among the fixture API's requests from the
/// `from`-th on: requests less than 100 ms apart belong to one collect.
fn collects_since(api: &github_api::FixtureServer, from: usize) -> Vec<u64> {
    let world = api.world();
    let mut starts: Vec<u64> = Vec::new();
    let mut last = 0;
    for (_, _, at) in world.requests.iter().skip(from) {
        if starts.is_empty() || at.saturating_sub(last) > 100 {
            starts.push(*at);
        }
        last = *at;
    }
    starts
}

#[test]
fn a_revoked_github_token_needs_action_backs_off_disables_and_recovers_with_a_new_one() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let api = runtime.block_on(github_api::FixtureServer::start(3));
    let world = World::new();
    world.install(&PluginPackage::real("github"));
    let receiver = Receiver::start();
    let daemon = world.start(
        &DaemonSetup::default()
            .with_master_key(&world.root.path().join("master.key"))
            .process("collect_interval = \"300ms\"")
            .extra(&format!(
                "[health]\nfailing_after = 3\ndisable_after = 6\ncollect_backoff_max = \"2s\"\n\
                 [alerts]\nevaluate_interval = \"100ms\"\npending_for = \"0s\"\ndelivery_retry_max = \"500ms\"\n{}",
                ops_channel(&world, &receiver)
            )),
    );
    daemon.ctl_json(&["tenants", "create", "acme"]);
    daemon.set_credential("acme", "api", "api-key", b"good-token");
    daemon.set_credential("acme", "hook", "webhook-secret", b"a webhook secret");
    daemon.add_integration(
        &world,
        "acme",
        "gh",
        "github",
        &serde_json::json!({
            "repositories": [github_api::REPO],
            "api_url": api.url,
            "credentials": {"token": "api", "webhook_secret": "hook"},
        }),
    );
    let health = || daemon.ctl_json(&["health", "--tenant", "acme"])["integrations"][0].clone();
    wait_for("healthy after its first collects", LONG, || {
        (health()["state"] == "healthy" && health()["last_success"].is_object()).then_some(())
    });

    // GitHub revokes the token.
    let revoked_at = {
        let mut world = api.world();
        world.tokens.clear();
        world.requests.len()
    };
    let refused_collects = || collects_since(&api, revoked_at);
    let needs_action = wait_for("action_required", LONG, || {
        Some(health()).filter(|h| h["state"] == "action_required")
    });
    assert!(
        refused_collects().len() <= 2,
        "action_required within two polls: {:?}",
        refused_collects()
    );
    assert_eq!(
        needs_action["last_error"]["class"], "auth",
        "{needs_action:#}"
    );
    assert!(
        needs_action["last_error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("401")),
        "{needs_action:#}"
    );
    let status = daemon.instance("gh").expect("in status");
    assert_eq!(status["health"], "action_required", "{status:#}");
    assert_eq!(status["error_class"], "auth");
    let token =
        daemon.ctl_json(&["tokens", "create", "--tenant", "acme", "--scope", "monitor"])["token"]
            .as_str()
            .expect("token")
            .to_owned();
    let (_, over_http) = http::get_json(&daemon.http_addr(), "/v1/health", &token);
    assert_eq!(over_http["integrations"][0]["state"], "action_required");
    assert_eq!(over_http["integrations"][0]["last_error"]["class"], "auth");
    let watch = AlertWatch {
        receiver: &receiver,
    };
    let gh = |a: &Value| a["integration"] == "gh";
    let needs_person = watch.fired("integration_action_required", gh);
    let firing = receiver
        .received()
        .into_iter()
        .find(|r| r.json()["alert"]["id"] == needs_person.as_str())
        .expect("received");
    assert!(firing.signed_with(SECRET), "{:?}", firing.headers);

    // Six refusals in a row disable it, with the reason; the refused collects came
    // further and further apart, and none come after.
    let disabled = wait_for("disabled by health", LONG, || {
        Some(health()).filter(|h| h["state"] == "disabled")
    });
    assert_eq!(disabled["disabled"]["by"], "health", "{disabled:#}");
    let disabled_alert = watch.fired("integration_disabled", gh);
    // The first may be a collect already under way when the token was revoked.
    let mut collects = refused_collects();
    assert!(
        (6..=7).contains(&collects.len()),
        "six refused collects, then none: {collects:?}"
    );
    let collects = collects.split_off(collects.len() - 6);
    let gaps: Vec<u64> = collects.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps[gaps.len() - 1] >= 3 * 300 && collects[5] - collects[0] >= 2_500,
        "collects back off exponentially (a fixed 300 ms poll would take 1.5 s): gaps {gaps:?} ms"
    );
    let requests_when_disabled = api.world().requests.len();
    // plugin-kit counted and timed those calls; the daemon shows them per dependency.
    let metrics = daemon.metrics();
    let refused_calls: f64 = metrics
        .lines()
        .filter(|l| {
            l.starts_with(r#"integrationd_external_calls_total{plugin="github",tenant="acme",integration="gh","#)
                && l.contains(r#"outcome="error""#)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(
        refused_calls >= 3.0,
        "the 401s, as reported with the heartbeats: {metrics}"
    );
    assert!(
        metrics.contains(r#"integrationd_external_call_seconds_count{plugin="github",tenant="acme",integration="gh","#),
        "{metrics}"
    );
    // Still a person's job: the first alert keeps firing while it is disabled.
    let (_, alerts) = http::get_json(&daemon.http_addr(), "/v1/alerts?state=firing", &token);
    let firing_rules: Vec<&str> = alerts["alerts"]
        .as_array()
        .expect("alerts")
        .iter()
        .filter_map(|a| a["rule"].as_str())
        .collect();
    assert!(
        firing_rules.contains(&"integration_action_required")
            && firing_rules.contains(&"integration_disabled"),
        "{alerts:#}"
    );

    // A working token is stored: checked, re-enabled, healthy; both alerts resolve.
    api.world().tokens.push(("new-token".to_owned(), u64::MAX));
    assert_eq!(
        api.world().requests.len(),
        requests_when_disabled,
        "a disabled integration calls nobody"
    );
    daemon.set_credential("acme", "api", "api-key", b"new-token");
    wait_for("healthy again", LONG, || {
        let h = health();
        (h["state"] == "healthy" && h["disabled"].is_null()).then_some(())
    });
    watch.resolved("integration_action_required", &needs_person);
    watch.resolved("integration_disabled", &disabled_alert);
    let events = wait_for("the four alert events in the sink", LONG, || {
        let events: Vec<(String, String)> = world
            .sink_lines()
            .iter()
            .map(|l| serde_json::from_str::<Value>(l).expect("json"))
            .filter(|e| e["type"].as_str().is_some_and(|t| t.contains(".alert.")))
            .map(|e| {
                (
                    e["data"]["alert.id"].as_str().unwrap_or("").to_owned(),
                    e["type"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect();
        (events.len() >= 4).then_some(events)
    });
    for id in [&needs_person, &disabled_alert] {
        for kind in ["firing", "resolved"] {
            let wanted = format!("com.betalogs.system.integration.alert.{kind}");
            assert_eq!(
                events
                    .iter()
                    .filter(|(i, t)| i == id && *t == wanted)
                    .count(),
                1,
                "{events:?}"
            );
        }
    }
}

/// A testfault package `name` whose collects fail with the class written in `error_file`.
fn refusable(name: &str, error_file: &std::path::Path) -> PluginPackage {
    PluginPackage::collector(
        name,
        &[
            "--emit",
            "1",
            "--collect-error-file",
            error_file.to_str().expect("utf8"),
        ],
    )
}

/// An operator channel `ops` in the `betalogs` format to `receiver`, signed with
/// [`SECRET`] (its file written into `world`).
fn ops_channel(world: &World, receiver: &Receiver) -> String {
    let secret_file = world.root.path().join("ops.secret");
    std::fs::write(&secret_file, SECRET).expect("secret");
    format!(
        "[[alerts.channels]]\nname = \"ops\"\nurl = \"{}\"\nsecret_file = \"{}\"\n",
        receiver.url,
        secret_file.display()
    )
}

const FAST_ALERTS: &str = "[health]\ncollect_backoff_max = \"1s\"\ndisable_after = 0\n\
    [alerts]\nevaluate_interval = \"100ms\"\npending_for = \"0s\"\ndelivery_retry_max = \"1s\"\n";

#[test]
fn notifications_survive_kill_9_and_a_receiver_down_for_a_minute_in_order() {
    let files = tempfile::tempdir().expect("tempdir");
    let (break_a, break_b) = (files.path().join("a"), files.path().join("b"));
    let world = World::new();
    world.install(&refusable("first", &break_a));
    world.install(&refusable("second", &break_b));
    let receiver = Receiver::start();
    receiver.set_down(true);
    let down_since = std::time::Instant::now();
    let up = Receiver::start();
    let setup = DaemonSetup::default()
        .with_master_key(&world.root.path().join("master.key"))
        .process("collect_interval = \"300ms\"")
        .extra(FAST_ALERTS)
        .extra(&ops_channel(&world, &receiver))
        .extra(&format!(
            "[[alerts.channels]]\nname = \"chat\"\nurl = \"{}\"\nformat = \"slack\"\n",
            up.url
        ));
    let mut daemon = world.start(&setup);
    daemon.ctl_json(&["tenants", "create", "acme"]);
    daemon.add_integration(&world, "acme", "a", "first", &serde_json::json!({}));
    daemon.add_integration(&world, "acme", "b", "second", &serde_json::json!({}));
    let firing = |daemon: &e2e_tests::Daemon, integration: &str| {
        daemon.ctl_json(&["alerts", "list", "--tenant", "acme", "--state", "firing"])["alerts"]
            .as_array()
            .expect("alerts")
            .iter()
            .find(|a| a["integration"] == integration)
            .cloned()
    };

    // `a` fires; its notification is refused by the receiver, and the daemon is
    // killed before it could deliver it.
    std::fs::write(&break_a, "auth").expect("break a");
    let alert_a = wait_for("a firing", LONG, || firing(&daemon, "a"));
    wait_for("a delivery attempt refused", LONG, || {
        (receiver.refused() > 0).then_some(())
    });
    // A channel that is down delays no other: the chat channel has it already.
    let key_a = format!("{}:firing", alert_a["id"].as_str().expect("id"));
    wait_for("a on the channel that is up", LONG, || {
        up.received()
            .into_iter()
            .find(|r| r.header("idempotency-key") == Some(key_a.as_str()))
    });
    daemon.signal(nix::sys::signal::Signal::SIGKILL);
    daemon.wait_exit(LONG);
    let daemon = world.start_written();
    // The restarted daemon knows the alert is firing (the same id, not notified anew).
    let again = wait_for("a still firing after the restart", LONG, || {
        firing(&daemon, "a")
    });
    assert_eq!(again["id"], alert_a["id"]);
    assert_eq!(again["started_at"], alert_a["started_at"]);

    // More happens while the receiver is still down: a recovers, b breaks.
    std::fs::remove_file(&break_a).expect("fix a");
    wait_for("a resolved", LONG, || {
        firing(&daemon, "a").is_none().then_some(())
    });
    std::fs::write(&break_b, "permission").expect("break b");
    let alert_b = wait_for("b firing", LONG, || firing(&daemon, "b"));
    let queued = |text: &str| {
        text.lines()
            .filter(|l| l.starts_with("integrationd_alert_notifications_queued"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    wait_for("three notifications queued", LONG, || {
        (queued(&daemon.metrics()) >= 3.0).then_some(())
    });

    // The receiver comes back after a minute: every notification, once, in order.
    let minute = Duration::from_secs(60).saturating_sub(down_since.elapsed());
    std::thread::sleep(minute);
    let refused = receiver.refused();
    assert!(
        refused >= 3,
        "deliveries were retried while it was down: {refused}"
    );
    receiver.set_down(false);
    let id = |alert: &Value| alert["id"].as_str().expect("id").to_owned();
    let expected = vec![
        format!("{}:firing", id(&alert_a)),
        format!("{}:resolved", id(&alert_a)),
        format!("{}:firing", id(&alert_b)),
    ];
    let delivered = wait_for("the three notifications", LONG, || {
        let keys: Vec<String> = receiver.notifications().into_iter().map(|n| n.3).collect();
        (keys.len() >= 3).then_some(keys)
    });
    assert_eq!(delivered, expected, "{:?}", receiver.notifications());
    wait_for("the outbox drained", LONG, || {
        (queued(&daemon.metrics()) == 0.0).then_some(())
    });
    assert_eq!(receiver.received().len(), 3, "nothing delivered twice");
}

#[test]
fn tenant_channels_receive_only_their_tenants_alerts_in_slack_and_teams_formats() {
    let files = tempfile::tempdir().expect("tempdir");
    let broken = files.path().join("broken");
    let world = World::new();
    world.install(&refusable("puller", &broken));
    let (acme_slack, globex_hook, ops_teams) =
        (Receiver::start(), Receiver::start(), Receiver::start());
    let daemon = world.start(
        &DaemonSetup::default()
            .with_master_key(&world.root.path().join("master.key"))
            .process("collect_interval = \"300ms\"")
            .extra(FAST_ALERTS)
            .extra(&format!(
                "[[alerts.channels]]\nname = \"ops\"\nurl = \"{}\"\nformat = \"teams\"\n",
                ops_teams.url
            )),
    );
    for tenant in ["acme", "globex"] {
        daemon.ctl_json(&["tenants", "create", tenant]);
        daemon.add_integration(&world, tenant, "pull", "puller", &serde_json::json!({}));
    }
    let add = daemon.ctl_json(&[
        "alerts",
        "channels",
        "add",
        "--tenant",
        "acme",
        "slack",
        "--url",
        &acme_slack.url,
        "--format",
        "slack",
    ]);
    assert_eq!(add["name"], "slack", "{add:#}");
    let added = daemon.ctl_stdin(
        None,
        &[
            "alerts",
            "channels",
            "add",
            "--tenant",
            "globex",
            "hook",
            "--url",
            &globex_hook.url,
        ],
        SECRET.as_bytes(),
    );
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );

    // A test notification reaches the channel asked for, and only it.
    daemon.ctl_json(&["alerts", "test", "--tenant", "acme", "--channel", "slack"]);
    let test = wait_for("the test message", LONG, || acme_slack.received().pop());
    let text = test.json()["text"].as_str().expect("slack text").to_owned();
    assert!(text.contains("[TEST]"), "{text}");
    assert!(globex_hook.received().is_empty() && ops_teams.received().is_empty());

    // Both tenants' integrations need action.
    std::fs::write(&broken, "auth").expect("break");
    let scoped = |receiver: &Receiver, tenant: &str| {
        wait_for(&format!("{tenant}'s alert"), LONG, || {
            receiver.received().into_iter().find(|r| {
                r.header("idempotency-key")
                    .is_some_and(|k| k.ends_with(":firing"))
            })
        })
        .json()
    };
    let slack = scoped(&acme_slack, "acme");
    let slack_text = slack["text"].as_str().expect("text");
    assert!(slack_text.contains("[FIRING] acme/pull"), "{slack_text}");
    let hook = scoped(&globex_hook, "globex");
    assert_eq!(hook["alert"]["tenant"], "globex");
    for message in globex_hook.received() {
        assert!(
            message.signed_with(SECRET),
            "the tenant's channel signs with its own secret: {:?} {}",
            message.headers,
            String::from_utf8_lossy(&message.body)
        );
    }
    // The operator's Teams channel gets both tenants' alerts as message cards.
    let titles = wait_for("both alerts on the operator's channel", LONG, || {
        let titles: Vec<String> = ops_teams
            .received()
            .iter()
            .map(|r| r.json())
            .filter(|card| card["@type"] == "MessageCard")
            .filter_map(|card| card["title"].as_str().map(str::to_owned))
            .collect();
        (titles.iter().any(|t| t.contains("acme/pull"))
            && titles.iter().any(|t| t.contains("globex/pull")))
        .then_some(titles)
    });
    assert!(
        titles.iter().all(|t| t.starts_with("[FIRING]")),
        "{titles:?}"
    );
    std::fs::remove_file(&broken).expect("fix");
    wait_for("resolved on both tenant channels", LONG, || {
        let resolved = |r: &Receiver| {
            r.received().iter().any(|m| {
                m.header("idempotency-key")
                    .is_some_and(|k| k.ends_with(":resolved"))
            })
        };
        (resolved(&acme_slack) && resolved(&globex_hook)).then_some(())
    });
    // Never another tenant's alert.
    for (receiver, other) in [(&acme_slack, "globex"), (&globex_hook, "acme")] {
        for message in receiver.received() {
            let body = String::from_utf8_lossy(&message.body).into_owned();
            assert!(!body.contains(other), "{other} leaked: {body}");
        }
    }

    // Channels and alerts, tenant by tenant, through a tenant admin token: another
    // tenant's look exactly like a missing tenant's.
    let globex_admin = daemon
        .ctl_json(&["tokens", "create", "--tenant", "globex", "--scope", "admin"])["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let own = daemon.ctl_as(
        &globex_admin,
        &["alerts", "channels", "list", "--tenant", "globex"],
    );
    assert!(
        own.status.success(),
        "{}",
        String::from_utf8_lossy(&own.stderr)
    );
    let own = String::from_utf8_lossy(&own.stdout).into_owned();
    assert!(own.contains("hook") && !own.contains("slack"), "{own}");
    for args in [
        &["alerts", "channels", "list", "--tenant"][..],
        &["alerts", "list", "--tenant"][..],
    ] {
        let other = daemon.ctl_as(&globex_admin, &[args, &["acme"]].concat());
        let missing = daemon.ctl_as(&globex_admin, &[args, &["nobody"]].concat());
        assert!(!other.status.success());
        assert_eq!(
            String::from_utf8_lossy(&other.stderr).replace("acme", "T"),
            String::from_utf8_lossy(&missing.stderr).replace("nobody", "T"),
            "{args:?}"
        );
    }
    let alerts = daemon.ctl_as(&globex_admin, &["alerts", "list", "--tenant", "globex"]);
    let alerts = String::from_utf8_lossy(&alerts.stdout).into_owned();
    assert!(
        alerts.contains("globex") && !alerts.contains("acme"),
        "{alerts}"
    );
    let removed = daemon.ctl_as(
        &globex_admin,
        &["alerts", "channels", "remove", "--tenant", "acme", "slack"],
    );
    assert!(
        !removed.status.success(),
        "globex cannot remove acme's channel"
    );
    let still = daemon.ctl_json(&["alerts", "channels", "list", "--tenant", "acme"]);
    assert!(still.to_string().contains("slack"), "{still:#}");
}
