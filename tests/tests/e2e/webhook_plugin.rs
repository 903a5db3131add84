//! The generic webhook plugin (`plugins/webhook`) under the real daemon: a service
//! configured with TOML alone (no preset, no code) takes a signed delivery into the sink,
//! and GitLab's documented push example arrives through the `gitlab` preset as a push
//! and its commits; Slack's `url_verification` handshake gets its challenge back. Forged,
//! unmapped and hostile deliveries store nothing.

use std::time::Duration;

use e2e_tests::{Daemon, DaemonSetup, PluginPackage, World, http, state_of, wait_for};
use plugin_kit::signature::{Authentication, DigestEncoding};
use serde_json::Value;

const SECRET: &str = "the status service's signing secret";

/// What an operator writes for a service of their own (here, a status page).
const STATUS_SERVICE: &str = r#"
source = "https://status.example.com"
service = "checkout"
credentials = { webhook_secret = "status-hook" }

[authentication]
scheme = "hmac-sha256"
header = "X-Status-Signature"
prefix = "v1="

[event_type]
pointer = "/event"

[delivery_id]
header = "X-Status-Delivery"

[[routes]]
when = "incident.opened"
type = "com.betalogs.system.incident.opened"
time = "{/opened_at}"
subject = "{/title}"
[routes.severity]
from = "{/impact}"
values = { major = "critical", minor = "warning" }
default = "error"
[routes.fields]
"deployment.environment" = "{/environment}"
"error.message" = "{/title}"
[[routes.links]]
rel = "incident"
url = "{/url}"
"#;

/// The shipped manifest's `label_urls` line, so that the test package declares what the
/// installed one does.
fn shipped_label_urls() -> String {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../plugins/webhook/plugin.toml"
    );
    let manifest = std::fs::read_to_string(path).expect("the shipped manifest");
    let line = manifest
        .lines()
        .find(|line| line.starts_with("label_urls"))
        .expect("the shipped manifest declares label_urls");
    format!("{line}\n")
}

fn running(world: &World) -> Daemon {
    world.install(&PluginPackage {
        capabilities: vec!["check".into(), "webhook".into()],
        manifest_extra: shipped_label_urls(),
        ..PluginPackage::real("webhook")
    });
    // The operator allows no endpoint for this plugin: its manifest says the URLs of a
    // `source` and of links are labels it never requests.
    let mut setup = DaemonSetup::default().with_master_key(&world.root.path().join("master.key"));
    // Small enough that a test can post an oversized delivery.
    setup
        .extra
        .push_str("[ingress]\nmax_body_bytes = 1048576\n");
    let daemon = world.start(&setup);
    daemon.ctl_json(&["tenants", "create", "acme"]);
    daemon
}

/// Stores `secret` as acme's webhook-secret `credential`, adds acme's `integration` of
/// the webhook plugin with `config` (its secret role naming that credential), and waits
/// until the integration is healthy.
fn add_healthy(
    daemon: &Daemon,
    world: &World,
    integration: &str,
    (credential, secret): (&str, &[u8]),
    mut config: Value,
) {
    daemon.set_credential("acme", credential, "webhook-secret", secret);
    config["credentials"] = serde_json::json!({ "webhook_secret": credential });
    daemon.add_integration(world, "acme", integration, "webhook", &config);
    daemon.wait_instance(integration, "healthy", Duration::from_secs(30), |i| {
        state_of(i) == "healthy"
    });
}

/// A documented payload committed with the plugin (`plugins/webhook/tests/fixtures`).
fn fixture(path: &str) -> String {
    let path = format!(
        "{}/../plugins/webhook/tests/fixtures/{path}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The first event of type `event_type` in the sink, once it is there.
fn sink_event_of_type(world: &World, event_type: &str) -> Value {
    wait_for(event_type, Duration::from_secs(30), || {
        sink_events(world)
            .into_iter()
            .find(|e| e["type"] == event_type)
    })
}

fn sink_events(world: &World) -> Vec<Value> {
    world
        .sink_lines()
        .iter()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

fn post(
    daemon: &Daemon,
    integration: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> http::HttpResponse {
    http::post_json(
        &daemon.http_addr(),
        &format!("/v1/webhooks/acme/{integration}"),
        headers,
        body,
    )
    .expect("post")
}

#[test]
fn a_service_configured_with_toml_alone_takes_signed_deliveries_into_the_sink() {
    let world = World::new();
    let daemon = running(&world);
    let config: Value = toml::from_str(STATUS_SERVICE).expect("TOML");
    add_healthy(
        &daemon,
        &world,
        "status",
        ("status-hook", SECRET.as_bytes()),
        config,
    );

    let body = serde_json::json!({
        "event": "incident.opened", "title": "checkout answers 502", "impact": "major",
        "environment": "production", "opened_at": "2026-12-01T09:58:00Z",
        "url": "https://status.example.com/incidents/42"
    })
    .to_string();
    let scheme = Authentication::HmacSha256 {
        header: "X-Status-Signature".into(),
        prefix: "v1=".into(),
        encoding: DigestEncoding::Hex,
    };
    let signed = |secret: &str, body: &str| {
        let mut headers = scheme.sign(secret, body.as_bytes(), "", 0);
        headers.push(("X-Status-Delivery".into(), "d-42".into()));
        headers
    };
    let send = |headers: Vec<(String, String)>, body: &str| {
        let pairs: Vec<(&str, &str)> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        post(&daemon, "status", &pairs, body)
    };

    let forged = send(signed("not the secret", &body), &body);
    assert_eq!(forged.status, 401, "{}", forged.body);
    let accepted = send(signed(SECRET, &body), &body);
    assert_eq!(accepted.status, 202, "{}", accepted.body);
    let event = wait_for("the incident in the sink", Duration::from_secs(30), || {
        sink_events(&world)
            .into_iter()
            .find(|e| e["integration"] == "status")
    });
    assert_eq!(event["type"], "com.betalogs.system.incident.opened");
    assert_eq!(event["severity"], "critical");
    assert_eq!(event["tenant"], "acme");
    assert_eq!(event["data"]["service.name"], "checkout");
    assert_eq!(event["data"]["deployment.environment"], "production");
    assert_eq!(
        event["data"]["links"][0]["url"],
        "https://status.example.com/incidents/42"
    );

    // Redelivered (the sender retries): the same event id, stored once.
    let again = send(signed(SECRET, &body), &body);
    assert_eq!(again.status, 202, "{}", again.body);
    let unmapped = r#"{"event": "incident.updated"}"#;
    let ignored = send(signed(SECRET, unmapped), unmapped);
    assert_eq!(ignored.status, 200, "{}", ignored.body);
    assert!(ignored.body.contains("ignored"), "{}", ignored.body);
    // Signed, but without the delivery id the events' identity comes from.
    let anonymous = scheme.sign(SECRET, body.as_bytes(), "", 0);
    let refused = send(anonymous, &body);
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(
        refused.body.contains("no `X-Status-Delivery` header"),
        "{}",
        refused.body
    );

    // Hostile deliveries, signed: each gets its documented 4xx and stores nothing (the
    // count below).
    let oversized = format!(
        r#"{{"event": "incident.opened", "title": "{}"}}"#,
        "x".repeat(1024 * 1024)
    );
    let refused = send(signed(SECRET, &oversized), &oversized);
    assert_eq!(refused.status, 413, "{}", refused.body);
    let deep = format!(
        r#"{{"event": "incident.opened", "title": {}1{}}}"#,
        "[".repeat(100),
        "]".repeat(100)
    );
    let refused = send(signed(SECRET, &deep), &deep);
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(
        refused.body.contains("nested deeper than 64"),
        "{}",
        refused.body
    );
    let control = r#"{"event": "incident\u0007opened", "title": "bell"}"#;
    let refused = send(signed(SECRET, control), control);
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(
        refused.body.contains("control characters"),
        "{}",
        refused.body
    );
    let missing = r#"{"event": "incident.opened", "title": "no time, no url"}"#;
    let mut headers = scheme.sign(SECRET, missing.as_bytes(), "", 0);
    headers.push(("X-Status-Delivery".into(), "d-44".into()));
    let mapped = send(headers, missing);
    assert_eq!(
        mapped.status, 202,
        "absent optional values are left out, not refused: {}",
        mapped.body
    );

    // A signed marker after all of that: once it is in the sink, everything before it
    // has been through the pipeline, and only the first incident was stored.
    let marker = serde_json::json!({
        "event": "incident.opened", "title": "marker", "impact": "minor",
        "environment": "staging", "opened_at": "2026-12-01T10:30:00Z", "url": "https://status.example.com/m"
    })
    .to_string();
    let mut headers = scheme.sign(SECRET, marker.as_bytes(), "", 0);
    headers.push(("X-Status-Delivery".into(), "d-43".into()));
    assert_eq!(send(headers, &marker).status, 202);
    wait_for("the marker in the sink", Duration::from_secs(30), || {
        sink_events(&world)
            .into_iter()
            .find(|e| e["subject"] == "marker")
    });
    let stored: Vec<Value> = sink_events(&world)
        .into_iter()
        .filter(|e| e["integration"] == "status")
        .collect();
    assert_eq!(
        stored.len(),
        3,
        "the incident once, the one without optional values, and the marker: {stored:#?}"
    );
}

#[test]
fn gitlabs_documented_push_arrives_through_the_preset() {
    let world = World::new();
    let daemon = running(&world);
    add_healthy(
        &daemon,
        &world,
        "gitlab",
        ("gitlab-token", b"a GitLab secret token"),
        serde_json::json!({"preset": "gitlab"}),
    );
    let push = fixture("gitlab/push.json");
    let headers = [
        ("X-Gitlab-Event", "Push Hook"),
        (
            "X-Gitlab-Event-UUID",
            "4b6a8a53-5ac7-4a2e-9d2f-0d3c1b1c2e11",
        ),
    ];
    let forged = post(
        &daemon,
        "gitlab",
        &[headers[0], headers[1], ("X-Gitlab-Token", "guess")],
        &push,
    );
    assert_eq!(forged.status, 401, "{}", forged.body);
    let accepted = post(
        &daemon,
        "gitlab",
        &[
            headers[0],
            headers[1],
            ("X-Gitlab-Token", "a GitLab secret token"),
        ],
        &push,
    );
    assert_eq!(accepted.status, 202, "{}", accepted.body);
    assert_eq!(accepted.json()["events"], 3, "{}", accepted.body);
    let events = wait_for("the push and its commits", Duration::from_secs(30), || {
        let events = sink_events(&world);
        (events.len() == 3).then_some(events)
    });
    let types: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(
        types,
        [
            "com.betalogs.delivery.push",
            "com.betalogs.delivery.commit",
            "com.betalogs.delivery.commit"
        ]
    );
    assert!(
        events
            .iter()
            .all(|e| e["data"]["service.name"] == "Diaspora")
    );
}

/// A GitLab deployment (GitLab's documented example, to production), then a PagerDuty
/// incident for the same service 10 minutes later (PagerDuty's documented payload, as
/// `incident.triggered`): the daemon stores the incident enriched with the deployment,
/// both through the webhook plugin, configured by preset.
#[test]
fn a_pagerduty_incident_is_enriched_with_the_gitlab_deployment_before_it() {
    let world = World::new();
    let daemon = running(&world);
    // PagerDuty names neither the service nor the environment as the deployments do: the
    // integration says them.
    add_healthy(
        &daemon,
        &world,
        "gitlab",
        ("gitlab-token", b"a GitLab secret token"),
        serde_json::json!({"preset": "gitlab", "service": "checkout"}),
    );
    add_healthy(
        &daemon,
        &world,
        "pagerduty",
        ("pd-secret", b"a PagerDuty signing secret"),
        serde_json::json!({"preset": "pagerduty", "service": "checkout", "environment": "production"}),
    );
    let mut deployment: Value =
        serde_json::from_str(&fixture("gitlab/deployment.json")).expect("JSON");
    deployment["environment"] = "production".into();
    deployment["status_changed_at"] = "2026-12-01 09:50:00 UTC".into();
    let deployed = post(
        &daemon,
        "gitlab",
        &[
            ("X-Gitlab-Event", "Deployment Hook"),
            (
                "X-Gitlab-Event-UUID",
                "0f5c9d1e-7a55-4c39-b7d0-6f1e2a3b4c5d",
            ),
            ("X-Gitlab-Token", "a GitLab secret token"),
        ],
        &deployment.to_string(),
    );
    assert_eq!(deployed.status, 202, "{}", deployed.body);
    sink_event_of_type(&world, "com.betalogs.delivery.deployment.succeeded");

    let mut incident: Value =
        serde_json::from_str(&fixture("pagerduty/incident.priority_updated.json")).expect("JSON");
    incident["event"]["event_type"] = "incident.triggered".into();
    incident["event"]["id"] = "01DEN5M0YXQNA3ZMWWKBSJPH9C".into();
    incident["event"]["occurred_at"] = "2026-12-01T10:00:00Z".into();
    // Signed as PagerDuty signs, with the subscription's secret.
    let page = |incident: &Value| {
        let body = incident.to_string();
        let scheme = Authentication::HmacSha256 {
            header: "X-PagerDuty-Signature".into(),
            prefix: "v1=".into(),
            encoding: DigestEncoding::Hex,
        };
        let signed = scheme.sign("a PagerDuty signing secret", body.as_bytes(), "", 0);
        let answer = post(
            &daemon,
            "pagerduty",
            &[(signed[0].0.as_str(), signed[0].1.as_str())],
            &body,
        );
        assert_eq!(answer.status, 202, "{}", answer.body);
    };
    page(&incident);
    // Enrichment happens before the commit: the stored incident carries the deployment.
    let stored = sink_event_of_type(&world, "com.betalogs.system.incident.triggered");
    assert_eq!(stored["severity"], "critical", "P1");
    let deployments: Vec<&Value> = stored["data"]["enrichments"]
        .as_array()
        .expect("enrichments")
        .iter()
        .filter(|e| e["kind"] == "deployment")
        .collect();
    assert_eq!(deployments.len(), 1, "{stored:#}");
    assert_eq!(
        deployments[0]["reason"],
        "deployed 10 min before, same service and environment"
    );
    assert_eq!(
        deployments[0]["source"],
        serde_json::json!({"plugin": "webhook", "integration": "gitlab", "tenant": "acme"})
    );

    // The change-failure view: the deployment was followed by a failure, still open.
    let view = daemon.ctl_json(&["deployments", "--tenant", "acme"]);
    let listed = &view["deployments"][0];
    assert_eq!(
        listed["failures"].as_array().map(Vec::len),
        Some(1),
        "{view:#}"
    );
    assert_eq!(
        listed["time_to_restore_ms"], 0,
        "not resolved yet: {view:#}"
    );

    // Resolved 32 minutes after it was triggered: that is the time to restore.
    incident["event"]["event_type"] = "incident.resolved".into();
    incident["event"]["id"] = "01DEN5M0YXQNA3ZMWWKBSJPH9D".into();
    incident["event"]["occurred_at"] = "2026-12-01T10:32:00Z".into();
    incident["event"]["data"]["status"] = "resolved".into();
    page(&incident);
    sink_event_of_type(&world, "com.betalogs.system.incident.resolved");
    let view = daemon.ctl_json(&["deployments", "--tenant", "acme"]);
    assert_eq!(
        view["deployments"][0]["time_to_restore_ms"],
        32 * 60 * 1000,
        "{view:#}"
    );
    let service = &view["services"][0];
    assert_eq!(service["service"], "checkout");
    assert_eq!(service["change_failure_rate"], 1.0);
    assert_eq!(
        service["mean_time_to_restore_ms"],
        32 * 60 * 1000,
        "{view:#}"
    );
    let text = daemon.ctl_text(&["deployments", "--tenant", "acme"]);
    assert!(
        text.contains("32m") && text.contains("mean time to restore 32m"),
        "{text}"
    );
}

#[test]
fn slacks_url_verification_is_answered_with_the_challenge_and_its_events_reach_the_sink() {
    let world = World::new();
    let daemon = running(&world);
    add_healthy(
        &daemon,
        &world,
        "slack",
        ("slack-signing", SECRET.as_bytes()),
        serde_json::json!({"preset": "slack"}),
    );
    let scheme = Authentication::Slack {
        tolerance_seconds: 300,
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let send = |body: &str, secret: &str, timestamp: u64| {
        let headers = scheme.sign(secret, body.as_bytes(), "", timestamp);
        let pairs: Vec<(&str, &str)> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        post(&daemon, "slack", &pairs, body)
    };

    // What Slack sends when the app's request URL is set: it must get the challenge back,
    // as the whole body.
    let handshake = fixture("slack/url_verification.json");
    let answered = send(&handshake, SECRET, now);
    assert_eq!(answered.status, 200, "{}", answered.body);
    assert_eq!(
        answered.body,
        "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    );
    assert!(
        answered
            .headers
            .to_ascii_lowercase()
            .contains("content-type: text/plain"),
        "{}",
        answered.headers
    );
    let forged = send(&handshake, "not the secret", now);
    assert_eq!(forged.status, 401, "{}", forged.body);
    assert!(!forged.body.contains("3eZbrw1a"), "{}", forged.body);

    let mention = fixture("slack/app_mention.json");
    let stale = send(&mention, SECRET, now - 600);
    assert_eq!(stale.status, 401, "a replay: {}", stale.body);
    let accepted = send(&mention, SECRET, now);
    assert_eq!(accepted.status, 202, "{}", accepted.body);
    let event = sink_event_of_type(&world, "com.betalogs.system.slack.app_mention");
    assert_eq!(event["tenant"], "acme");
    assert_eq!(event["integration"], "slack");
    assert_eq!(event["data"]["slack.channel.id"], "C123ABC456");
    assert_eq!(
        sink_events(&world)
            .iter()
            .filter(|e| e["integration"] == "slack")
            .count(),
        1,
        "the handshake made no event"
    );
}

#[test]
fn check_fails_naming_a_webhook_secret_deleted_after_configure() {
    let world = World::new();
    let daemon = running(&world);
    let config: Value = toml::from_str(STATUS_SERVICE).expect("TOML");
    add_healthy(
        &daemon,
        &world,
        "status",
        ("status-hook", SECRET.as_bytes()),
        config,
    );
    let check = || {
        let output = daemon.ctl(&["integrations", "check", "--tenant", "acme", "status"]);
        let report: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|_| {
            panic!(
                "the check's JSON: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )
        });
        report
    };
    let passed = check();
    assert_eq!(passed["ok"], true, "{passed:#}");

    daemon.ctl_json(&["credentials", "delete", "--tenant", "acme", "status-hook"]);
    let failed = check();
    assert_eq!(failed["ok"], false, "{failed:#}");
    assert_eq!(failed["error_class"], "config", "{failed:#}");
    let missing = failed["results"]
        .as_array()
        .expect("results")
        .iter()
        .find(|r| r["ok"] == false)
        .unwrap_or_else(|| panic!("{failed:#}"))
        .clone();
    assert_eq!(missing["resource"], "credential `status-hook`");
    assert!(
        missing["message"].as_str().is_some_and(
            |m| m.contains("credentials.webhook_secret") && m.contains("no longer stored")
        ),
        "{missing:#}"
    );
    // Health says the same: a person must act.
    let health = wait_for("action_required", Duration::from_secs(30), || {
        daemon.ctl_json(&["health", "--tenant", "acme"])["integrations"]
            .as_array()
            .and_then(|all| all.iter().find(|i| i["integration"] == "status").cloned())
            .filter(|h| h["state"] == "action_required")
    });
    assert_eq!(health["last_error"]["source"], "check");
    assert_eq!(health["last_error"]["class"], "config");

    // Stored again: the integration is configured with it, and the check passes.
    daemon.set_credential("acme", "status-hook", "webhook-secret", SECRET.as_bytes());
    daemon.wait_instance("status", "healthy again", Duration::from_secs(30), |i| {
        state_of(i) == "healthy"
    });
    let passed = check();
    assert_eq!(passed["ok"], true, "{passed:#}");
}

#[test]
fn gitlab_deliveries_wait_in_the_inbox_while_the_plugin_is_down() {
    const TOKEN: &str = "gl-token-canary-5f2a";
    let world = World::new();
    world.install(&PluginPackage {
        capabilities: vec!["check".into(), "webhook".into()],
        manifest_extra: shipped_label_urls(),
        ..PluginPackage::real("webhook")
    });
    // The plugin stays down for a few seconds after a kill.
    let daemon = world.start(
        &DaemonSetup::default()
            .with_master_key(&world.root.path().join("master.key"))
            .process("restart_initial_delay = \"4s\"")
            .process("restart_max_delay = \"4s\""),
    );
    daemon.ctl_json(&["tenants", "create", "acme"]);
    add_healthy(
        &daemon,
        &world,
        "gitlab",
        ("gitlab-token", TOKEN.as_bytes()),
        serde_json::json!({"preset": "gitlab"}),
    );
    daemon.kill_plugin("gitlab");

    // The plugin reported the integration's authentication (the preset's token header)
    // at Configure: the daemon verifies deliveries with it and keeps them.
    let push = fixture("gitlab/push.json");
    let headers = |token: &'static str| {
        [
            ("X-Gitlab-Event", "Push Hook"),
            ("X-Gitlab-Token", token),
            (
                "X-Gitlab-Event-UUID",
                "0b1c6f9e-9e8f-4c55-8c5d-1f0b2e3d4c5b",
            ),
        ]
    };
    let queued = post(&daemon, "gitlab", &headers(TOKEN), &push);
    assert_eq!(queued.status, 202, "{}", queued.body);
    assert_eq!(queued.json()["status"], "queued");
    let forged = post(&daemon, "gitlab", &headers("not the token"), &push);
    assert_eq!(forged.status, 401, "{}", forged.body);
    // The token travels in a header; the kept delivery does not keep it.
    for file in e2e_tests::files_under(&world.state_dir()) {
        let bytes = std::fs::read(&file).unwrap_or_default();
        assert!(
            !bytes.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()),
            "the token is in {}",
            file.display()
        );
    }

    // Back after its backoff, the plugin maps what waited: the push and its commits.
    let push_event = sink_event_of_type(&world, "com.betalogs.delivery.push");
    assert_eq!(push_event["integration"], "gitlab");
    let commits = wait_for("both commits", Duration::from_secs(30), || {
        let commits: Vec<Value> = sink_events(&world)
            .into_iter()
            .filter(|e| e["type"] == "com.betalogs.delivery.commit")
            .collect();
        (commits.len() == 2).then_some(commits)
    });
    assert_eq!(commits.len(), 2);
}
