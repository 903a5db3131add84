//! Integration health and alerts end to end: a plugin whose collects are refused for
//! authentication becomes `action_required` (class `auth`) in `status`, `health` and
//! `GET /v1/health`; its collects back off; a signed notification reaches a receiver on
//! loopback; when the refusals stop it is healthy again, a `resolved` notification
//! follows, and both alerts are in the sink as canonical events. Another tenant's token
//! sees none of it, exactly as for a tenant that does not exist. The metrics parse
//! with the Prometheus client's own text parser.

use std::time::Duration;

use e2e_tests::receiver::Receiver;
use e2e_tests::{DaemonSetup, PluginPackage, World, http, wait_for};
use serde_json::Value;

const LONG: Duration = Duration::from_secs(30);
const SECRET: &str = "an alert channel secret";

fn get(addr: &str, path: &str, token: &str) -> (u16, Value) {
    let bearer = format!("Bearer {token}");
    let response = http::request(
        addr,
        "GET",
        path,
        &[("authorization", &bearer)],
        b"",
        http::Framing::Length,
    )
    .expect("GET");
    (response.status, response.json())
}

#[test]
fn refused_collects_need_action_alert_a_person_and_recover() {
    let marker = tempfile::tempdir().expect("tempdir");
    let refusing = marker.path().join("refuse");
    let world = World::new();
    world.install(&PluginPackage {
        capabilities: vec!["collect".to_owned()],
        ..PluginPackage::testfault(
            "puller",
            &[
                "--capabilities",
                "collect",
                "--emit",
                "3",
                "--collect-error-file",
                refusing.to_str().expect("utf8"),
            ],
        )
    });
    let receiver = Receiver::start();
    let secret_file = world.root.path().join("channel.secret");
    std::fs::write(&secret_file, SECRET).expect("secret");
    let daemon = world.start(
        &DaemonSetup::default()
            .with_master_key(&world.root.path().join("master.key"))
            .process("collect_interval = \"300ms\"")
            .extra(&format!(
                "[health]\nfailing_after = 3\ndisable_after = 0\ncollect_backoff_max = \"2s\"\n\
                 [alerts]\nevaluate_interval = \"100ms\"\npending_for = \"0s\"\ndelivery_retry_max = \"500ms\"\n\
                 [[alerts.channels]]\nname = \"ops\"\nurl = \"{}\"\nformat = \"betalogs\"\nsecret_file = \"{}\"\n",
                receiver.url,
                secret_file.display()
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
    let (code, doc) = get(&addr, "/v1/health", &acme);
    assert_eq!(code, 200);
    assert_eq!(doc["integrations"][0]["state"], "action_required");
    assert_eq!(doc["integrations"][0]["last_error"]["class"], "auth");
    let (_, everyone) = get(&addr, "/v1/health", &all);
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
    let (code, own) = get(&addr, "/v1/health", &globex);
    assert_eq!(code, 200);
    assert_eq!(own["integrations"], serde_json::json!([]), "{own:#}");
    let (refused_code, refused) = get(&addr, "/v1/health?tenant=acme", &globex);
    let (missing_code, missing) = get(&addr, "/v1/health?tenant=nobody", &globex);
    assert_eq!((refused_code, &refused), (missing_code, &missing));
    assert_eq!(refused_code, 403);
    let (_, globex_alerts) = get(&addr, "/v1/alerts", &globex);
    assert_eq!(globex_alerts["alerts"], serde_json::json!([]));
    let (code, _) = get(&addr, "/v1/health", "blt_000000000000_nope");
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
    let (_, alerts) = get(&addr, "/v1/alerts?state=firing", &acme);
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
