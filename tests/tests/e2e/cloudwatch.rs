//! The CloudWatch plugin behind the real daemon, against moto: metrics, log lines and
//! alarm state changes set up with the AWS APIs reach the JSONL sink schema-valid (the
//! pipeline validates; nothing is dead-lettered), with correlation ids and links; an
//! SNS notification delivered by moto to the webhook route becomes an alarm event; and
//! kill -9 of the plugin or the daemon, mid-page and between polls, loses no log line
//! and duplicates none.

#[path = "../../../plugins/cloudwatch/tests/support/moto.rs"]
mod moto;

use std::collections::HashSet;
use std::time::Duration;

use e2e_tests::http::{self, Framing};
use e2e_tests::{Daemon, DaemonSetup, PluginPackage, World, pid_of, state_of, wait_for};
use serde_json::{Value, json};

const ACCOUNT: &str = "123456789012";
const SECRET: &str = "an-sns-and-eventbridge-secret";
const LONG: Duration = Duration::from_secs(60);

fn cloudwatch() -> PluginPackage {
    PluginPackage::real("cloudwatch")
}

/// One AWS JSON-protocol call to moto, signed only as far as moto looks (the scope
/// picks the service and region).
fn aws(moto: &moto::Moto, service: &str, target: &str, content_type: &str, body: Value) -> Value {
    let addr = moto.url.trim_start_matches("http://");
    let authorization = format!(
        "AWS4-HMAC-SHA256 Credential=AKIDTESTTESTTEST/20261130/us-east-1/{service}/aws4_request, SignedHeaders=host, Signature=0"
    );
    let response = http::request(
        addr,
        "POST",
        "/",
        &[
            ("X-Amz-Target", target),
            ("Content-Type", content_type),
            ("Authorization", &authorization),
            // CloudWatch's JSON protocol is its query API in JSON.
            ("x-amzn-query-mode", "true"),
        ],
        body.to_string().as_bytes(),
        Framing::Length,
    )
    .expect("moto answers");
    assert_eq!(response.status, 200, "{target}: {}", response.body);
    serde_json::from_str(&response.body).unwrap_or(Value::Null)
}

fn logs(moto: &moto::Moto, operation: &str, body: Value) -> Value {
    aws(
        moto,
        "logs",
        &format!("Logs_20140328.{operation}"),
        "application/x-amz-json-1.1",
        body,
    )
}

fn monitoring(moto: &moto::Moto, operation: &str, body: Value) -> Value {
    aws(
        moto,
        "monitoring",
        &format!("GraniteServiceVersion20100801.{operation}"),
        "application/x-amz-json-1.0",
        body,
    )
}

fn put_lines(moto: &moto::Moto, group: &str, stream: &str, lines: &[(i64, String)]) {
    let _ = http::request(
        moto.url.trim_start_matches("http://"),
        "POST",
        "/",
        &[
            ("X-Amz-Target", "Logs_20140328.CreateLogGroup"),
            ("Content-Type", "application/x-amz-json-1.1"),
            (
                "Authorization",
                "AWS4-HMAC-SHA256 Credential=AKIDTESTTESTTEST/20261130/us-east-1/logs/aws4_request, SignedHeaders=host, Signature=0",
            ),
        ],
        json!({"logGroupName": group}).to_string().as_bytes(),
        Framing::Length,
    );
    logs(
        moto,
        "CreateLogStream",
        json!({"logGroupName": group, "logStreamName": stream}),
    );
    for chunk in lines.chunks(500) {
        let events: Vec<Value> = chunk
            .iter()
            .map(|(ms, message)| json!({"timestamp": ms, "message": message}))
            .collect();
        logs(
            moto,
            "PutLogEvents",
            json!({"logGroupName": group, "logStreamName": stream, "logEvents": events}),
        );
    }
}

fn now_ms() -> i64 {
    i64::try_from(plugin_kit::clock::now_ms()).expect("ms")
}

struct Setup {
    world: World,
    daemon: Daemon,
    moto: moto::Moto,
    _adapter: moto::CborAdapter,
}

/// A daemon with the CloudWatch plugin and an integration `acme/cw` on `moto`, after
/// `prepare` has set up what the integration's check looks for.
fn start(extra_config: Value, prepare: impl FnOnce(&moto::Moto)) -> Setup {
    start_with(DaemonSetup::default(), extra_config, prepare)
}

/// [`start`] with more daemon configuration.
fn start_with(setup: DaemonSetup, extra_config: Value, prepare: impl FnOnce(&moto::Moto)) -> Setup {
    let moto = moto::Moto::start();
    let adapter = moto::CborAdapter::start(&moto.url);
    prepare(&moto);
    let world = World::new();
    world.install(&cloudwatch());
    let daemon = world.start(
        &setup
            .with_master_key(&world.root.path().join("master.key"))
            .process("collect_interval = \"300ms\""),
    );
    daemon.ctl_json(&["tenants", "create", "acme"]);
    for (name, kind, secret) in [
        (
            "prod-keys",
            "aws",
            r#"{"access_key_id":"AKIDTESTTESTTEST","secret_access_key":"test-secret"}"#.to_owned(),
        ),
        ("hook", "webhook-secret", SECRET.to_owned()),
    ] {
        daemon.set_credential("acme", name, kind, secret.as_bytes());
    }
    let mut config = json!({
        "accounts": [{"id": ACCOUNT, "credentials": "prod-keys", "regions": ["us-east-1"]}],
        "credentials": {"webhook_secret": "hook"},
        "poll_interval": "0s",
        "metric_delay": "0s",
        "endpoint_url": {"cloudwatch": adapter.url, "logs": moto.url, "sts": moto.url},
    });
    for (key, value) in extra_config.as_object().expect("object") {
        config[key] = value.clone();
    }
    daemon.add_integration(&world, "acme", "cw", "cloudwatch", &config);
    wait_for("the integration healthy", LONG, || {
        daemon
            .instances()
            .into_iter()
            .find(|i| i["integration"] == "cw" && state_of(i) == "healthy")
    });
    Setup {
        world,
        daemon,
        moto,
        _adapter: adapter,
    }
}

fn sink_events(world: &World) -> Vec<Value> {
    world
        .sink_lines()
        .iter()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect()
}

fn of_type<'a>(events: &'a [Value], prefix: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["type"].as_str().is_some_and(|t| t.starts_with(prefix)))
        .collect()
}

#[test]
fn metrics_logs_and_alarms_from_moto_reach_the_sink_with_ids_and_links() {
    let now = now_ms();
    let minute = now / 60_000 * 60_000;
    let setup = start(
        json!({
            "metrics": [{"namespace": "Betalogs/Test", "metric": "Errors", "dimensions": {"Service": "checkout"}, "stat": "Sum", "period": 60}],
            "log_group_prefixes": ["/ecs/"],
            "service_map": {"/ecs/checkout": "checkout", "checkout-errors": "checkout"},
        }),
        // Datapoints are read once, in the window that covers them: they exist
        // before the first poll.
        |moto| {
            monitoring(
                moto,
                "PutMetricData",
                json!({
                    "Namespace": "Betalogs/Test",
                    "MetricData": [
                        {"MetricName": "Errors", "Dimensions": [{"Name": "Service", "Value": "checkout"}], "Timestamp": (minute - 120_000) / 1000, "Value": 3.0},
                        {"MetricName": "Errors", "Dimensions": [{"Name": "Service", "Value": "checkout"}], "Timestamp": (minute - 60_000) / 1000, "Value": 9.0}
                    ]
                }),
            );
            monitoring(
                moto,
                "PutMetricAlarm",
                json!({
                    "AlarmName": "checkout-errors", "Namespace": "Betalogs/Test", "MetricName": "Errors",
                    "Dimensions": [{"Name": "Service", "Value": "checkout"}], "Statistic": "Sum", "Period": 60,
                    "EvaluationPeriods": 1, "Threshold": 5.0, "ComparisonOperator": "GreaterThanThreshold"
                }),
            );
            monitoring(
                moto,
                "SetAlarmState",
                json!({"AlarmName": "checkout-errors", "StateValue": "ALARM", "StateReason": "9 errors"}),
            );
        },
    );
    let moto = &setup.moto;

    put_lines(
        moto,
        "/ecs/checkout",
        "web/1",
        &[
            (
                now - 5_000,
                r#"{"level":"error","msg":"card declined","requestId":"r-1"}"#.to_owned(),
            ),
            (now - 4_000, "INFO healthy".to_owned()),
        ],
    );

    let events = wait_for("metric, log and alarm events in the sink", LONG, || {
        let events = sink_events(&setup.world);
        (of_type(&events, "com.betalogs.system.metric").len() == 2
            && of_type(&events, "com.betalogs.system.log").len() == 2
            && of_type(&events, "com.betalogs.system.alarm").len() == 1)
            .then_some(events)
    });
    for event in &events {
        assert_eq!(event["tenant"], "acme");
        assert_eq!(event["integration"], "cw");
        assert_eq!(event["data"]["cloud.account.id"], ACCOUNT);
        assert!(
            event["correlationid"]
                .as_str()
                .is_some_and(|c| !c.is_empty()),
            "{event}"
        );
        assert!(
            event["data"]["links"][0]["url"].as_str().is_some_and(
                |u| u.starts_with("https://us-east-1.console.aws.amazon.com/cloudwatch/")
            ),
            "{event}"
        );
    }
    let values: Vec<f64> = of_type(&events, "com.betalogs.system.metric")
        .iter()
        .map(|e| e["data"]["metric.value"].as_f64().expect("value"))
        .collect();
    assert_eq!(values, [3.0, 9.0]);
    let declined = events
        .iter()
        .find(|e| e["data"]["log.message"] == "card declined")
        .expect("the JSON line");
    assert_eq!(declined["severity"], "error");
    assert_eq!(declined["correlationid"], "r-1");
    assert_eq!(declined["data"]["service.name"], "checkout");
    let alarm = of_type(&events, "com.betalogs.system.alarm")[0];
    assert_eq!(alarm["data"]["service.name"], "checkout");
    assert_eq!(alarm["data"]["alarm.state"], "ALARM");
    let dead = setup.daemon.ctl_json(&["dlq", "list", "--tenant", "acme"]);
    assert_eq!(dead.as_array().map(Vec::len), Some(0), "{dead}");

    // An SNS notification that moto delivers to the daemon's webhook route, with the
    // secret as the endpoint URL's basic-auth password.
    let topic = format!("arn:aws:sns:us-east-1:{ACCOUNT}:alarms");
    let sns = |params: &[(&str, &str)]| {
        let mut form = form_encode(&[("Version", "2010-03-31")]);
        form.push('&');
        form.push_str(&form_encode(params));
        let response = http::request(
            moto.url.trim_start_matches("http://"),
            "POST",
            "/",
            &[
                ("Content-Type", "application/x-www-form-urlencoded"),
                ("Authorization", "AWS4-HMAC-SHA256 Credential=AKIDTESTTESTTEST/20261130/us-east-1/sns/aws4_request, SignedHeaders=host, Signature=0"),
            ],
            form.as_bytes(),
            Framing::Length,
        )
        .expect("moto answers");
        assert_eq!(response.status, 200, "{}", response.body);
    };
    sns(&[("Action", "CreateTopic"), ("Name", "alarms")]);
    let endpoint = format!(
        "http://betalogs:{SECRET}@{}/v1/webhooks/acme/cw",
        setup.daemon.http_addr()
    );
    sns(&[
        ("Action", "Subscribe"),
        ("TopicArn", &topic),
        ("Protocol", "http"),
        ("Endpoint", &endpoint),
    ]);
    let message = json!({
        "AlarmName": "checkout-errors", "AWSAccountId": ACCOUNT, "NewStateValue": "OK",
        "NewStateReason": "back to normal", "StateChangeTime": "2026-11-30T10:00:00.250+0000",
        "Region": "US East (N. Virginia)", "AlarmArn": format!("arn:aws:cloudwatch:us-east-1:{ACCOUNT}:alarm:checkout-errors"),
        "OldStateValue": "ALARM", "Trigger": {"MetricName": "Errors", "Namespace": "Betalogs/Test", "Dimensions": [{"name": "Service", "value": "checkout"}]}
    })
    .to_string();
    sns(&[
        ("Action", "Publish"),
        ("TopicArn", &topic),
        ("Message", &message),
    ]);
    let resolved = wait_for("the SNS alarm event in the sink", LONG, || {
        sink_events(&setup.world)
            .into_iter()
            .find(|e| e["type"] == "com.betalogs.system.alarm.resolved")
    });
    assert_eq!(resolved["data"]["alarm.received_via"], "sns");
    assert_eq!(resolved["time"], "2026-11-30T10:00:00.250Z");
}

fn form_encode(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", percent(k), percent(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn percent(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Every line of the group is in the sink exactly once.
fn assert_each_line_once(world: &World, expected: &HashSet<String>) {
    let events = sink_events(world);
    let logs = of_type(&events, "com.betalogs.system.log");
    let messages: Vec<String> = logs
        .iter()
        .map(|e| {
            e["data"]["log.message"]
                .as_str()
                .expect("message")
                .to_owned()
        })
        .collect();
    let unique: HashSet<String> = messages.iter().cloned().collect();
    assert_eq!(messages.len(), unique.len(), "no line twice");
    assert_eq!(&unique, expected, "no line lost");
}

fn log_count(world: &World) -> usize {
    world
        .sink_lines()
        .iter()
        .filter(|l| l.contains("\"com.betalogs.system.log\""))
        .count()
}

#[test]
fn kill_9_of_the_plugin_and_the_daemon_loses_and_duplicates_no_log_line() {
    const LINES: i64 = 400;
    // Twenty lines a page, five pages a second (the account's request budget): a
    // pass over the group takes about four seconds, long enough to kill mid-page.
    let base = now_ms() - 60_000;
    // Pairs of lines share a millisecond.
    let first: Vec<(i64, String)> = (0..LINES)
        .map(|i| (base + i / 2, format!("order {i}")))
        .collect();
    let mut setup = start(
        json!({"log_groups": ["/app/orders"], "log_page_size": 20, "enabled_event_types": ["log"]}),
        |moto| put_lines(moto, "/app/orders", "s1", &first),
    );
    let mut expected: HashSet<String> = first.iter().map(|(_, m)| m.clone()).collect();

    // kill -9 of the plugin mid-page.
    let pid = wait_for("the first pages stored", LONG, || {
        let stored = log_count(&setup.world);
        (stored > 0).then(|| pid_of(&setup.daemon.instance("cw").expect("instance")))
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid")),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9 the plugin");
    let after_kill = log_count(&setup.world);
    assert!(
        (after_kill as i64) < LINES,
        "the kill landed mid-pass ({after_kill} stored)"
    );
    wait_for("every line after the plugin's restart", LONG, || {
        (log_count(&setup.world) >= expected.len()).then_some(())
    });
    assert_each_line_once(&setup.world, &expected);

    // kill -9 of the plugin between polls, then new lines (one in the last millisecond
    // already read).
    let pid = pid_of(&setup.daemon.instance("cw").expect("instance"));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid")),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9 the plugin");
    let second: Vec<(i64, String)> = (0..LINES)
        .map(|i| (base + (LINES - 1) / 2 + i / 2, format!("refund {i}")))
        .collect();
    put_lines(&setup.moto, "/app/orders", "s2", &second);
    expected.extend(second.iter().map(|(_, m)| m.clone()));

    // kill -9 of the daemon mid-page.
    wait_for("the second pass under way", LONG, || {
        (log_count(&setup.world) > LINES as usize).then_some(())
    });
    setup.daemon.signal(nix::sys::signal::Signal::SIGKILL);
    let _ = setup.daemon.wait_exit(Duration::from_secs(10));
    let before_restart = log_count(&setup.world);
    assert!(
        before_restart < expected.len(),
        "the daemon's kill landed mid-pass ({before_restart} stored)"
    );
    setup.daemon = setup.world.start_written();
    wait_for("every line after the daemon's restart", LONG, || {
        (log_count(&setup.world) >= expected.len()).then_some(())
    });
    assert_each_line_once(&setup.world, &expected);
}

#[test]
fn metric_values_around_a_failure_come_from_the_cloudwatch_plugin_when_asked_for() {
    let failure_ms = (now_ms() - 3_600_000) / 60_000 * 60_000;
    let setup = start_with(
        DaemonSetup::default().extra("[enrichment]\nmetric_values = true\n"),
        json!({
            "metrics": [{"namespace": "Betalogs/Test", "metric": "Latency", "dimensions": {"Service": "checkout"}, "stat": "Average", "period": 60, "service": "checkout"}],
        }),
        |moto| {
            let point = |minutes: i64, value: f64| json!({"MetricName": "Latency", "Dimensions": [{"Name": "Service", "Value": "checkout"}], "Timestamp": (failure_ms + minutes * 60_000) / 1000, "Value": value});
            monitoring(
                moto,
                "PutMetricData",
                json!({
                    "Namespace": "Betalogs/Test",
                    "MetricData": [point(-30, 5.0), point(-10, 100.0), point(-5, 150.0), point(2, 900.0)]
                }),
            );
        },
    );
    let token = setup
        .daemon
        .ctl_json(&["tokens", "create", "--tenant", "acme", "--scope", "ingest"])["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let time = humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH
            + Duration::from_millis(u64::try_from(failure_ms).expect("after 1970")),
    )
    .to_string();
    let failure = json!({
        "specversion": "1.0", "id": "checkout-failure-1", "source": "https://checkout.example.com",
        "type": "com.betalogs.system.error", "time": time, "tenant": "acme",
        "integration": "platform", "category": "system", "severity": "error",
        "data": {"service.name": "checkout", "deployment.environment": "production",
                 "error.message": "payment failed", "links": [], "enrichments": [], "original": null}
    });
    let answer = http::post_json(
        &setup.daemon.http_addr(),
        "/v1/events/acme",
        &[("Authorization", &format!("Bearer {token}"))],
        &failure.to_string(),
    )
    .expect("the daemon answers");
    assert_eq!(answer.status, 202, "{}", answer.body);
    let versions = wait_for("the failure and its revision", LONG, || {
        let found: Vec<Value> = sink_events(&setup.world)
            .into_iter()
            .filter(|e| e["id"] == "checkout-failure-1")
            .collect();
        (found.len() >= 2).then_some(found)
    });
    let (first, revised) = (&versions[0], &versions[1]);
    assert_eq!(first["data"]["enrichment_status"], "partial");
    assert!(
        first["data"]["enrichment_note"]
            .as_str()
            .is_some_and(|n| n
                .contains("the metric values around the failure of integration `cw` (cloudwatch)")),
        "{first:#}"
    );
    assert_eq!(revised["revision"], 2);
    assert_eq!(
        revised["data"]["enrichment_status"], "complete",
        "{revised:#}"
    );
    let metric = revised["data"]["enrichments"]
        .as_array()
        .expect("enrichments")
        .iter()
        .find(|e| e["kind"] == "metric_values")
        .expect("metric values");
    let values: Vec<f64> = metric["data"]["points"]
        .as_array()
        .expect("points")
        .iter()
        .map(|p| p["value"].as_f64().expect("value"))
        .collect();
    assert_eq!(values, [100.0, 150.0, 900.0], "{metric:#}");
    assert_eq!(
        metric["source"],
        json!({"plugin": "cloudwatch", "integration": "cw", "tenant": "acme"})
    );
}

/// Runs `tests/fixtures/moto_iam.py` against `moto`; returns what it printed.
fn moto_iam(moto: &moto::Moto, args: &[&str]) -> String {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/moto_iam.py");
    let output = std::process::Command::new("python3")
        .arg(script)
        .arg(&moto.url)
        .args(args)
        .output()
        .expect("python3 with boto3 (moto installs it)");
    assert!(
        output.status.success(),
        "moto_iam.py {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn a_permission_lost_after_admission_is_found_by_the_check_names_what_and_recovers() {
    // moto checks signatures and IAM policies once the administrator exists.
    let moto = moto::Moto::start_enforcing_iam(3);
    let adapter = moto::CborAdapter::start(&moto.url);
    let keys: Value =
        serde_json::from_str(&moto_iam(&moto, &["bootstrap", "/app/orders"])).expect("keys");
    let admin = |command: &str| {
        moto_iam(
            &moto,
            &[
                command,
                keys["admin"]["access_key_id"].as_str().expect("id"),
                keys["admin"]["secret_access_key"].as_str().expect("secret"),
            ],
        );
    };
    let receiver = e2e_tests::receiver::Receiver::start();
    let world = World::new();
    world.install(&cloudwatch());
    let secret_file = world.root.path().join("ops.secret");
    std::fs::write(&secret_file, SECRET).expect("secret");
    let daemon = world.start(
        &DaemonSetup::default()
            .with_master_key(&world.root.path().join("master.key"))
            // One collect at start: from then on only the checks look.
            .process("collect_interval = \"1h\"")
            .extra(&format!(
                "[health]\nrecheck_interval = \"1s\"\n\
                 [alerts]\nevaluate_interval = \"100ms\"\npending_for = \"0s\"\n\
                 [[alerts.channels]]\nname = \"ops\"\nurl = \"{}\"\nsecret_file = \"{}\"\n",
                receiver.url,
                secret_file.display()
            )),
    );
    daemon.ctl_json(&["tenants", "create", "acme"]);
    daemon.set_credential(
        "acme",
        "reader-keys",
        "aws",
        keys["reader"].to_string().as_bytes(),
    );
    daemon.set_credential("acme", "hook", "webhook-secret", SECRET.as_bytes());
    daemon.add_integration(
        &world,
        "acme",
        "cw",
        "cloudwatch",
        &json!({
            "accounts": [{"id": ACCOUNT, "credentials": "reader-keys", "regions": ["us-east-1"]}],
            "credentials": {"webhook_secret": "hook"},
            "log_groups": ["/app/orders"],
            "enabled_event_types": ["log"],
            "poll_interval": "0s",
            "endpoint_url": {"cloudwatch": adapter.url, "logs": moto.url, "sts": moto.url},
        }),
    );
    let health = || daemon.ctl_json(&["health", "--tenant", "acme"])["integrations"][0].clone();
    wait_for("healthy", LONG, || {
        Some(health()).filter(|h| h["state"] == "healthy")
    });

    // The reader's policy is deleted in IAM: the on-demand check says what was lost.
    admin("revoke");
    let check = daemon.ctl(&["integrations", "check", "--tenant", "acme", "cw"]);
    let report: Value = serde_json::from_slice(&check.stdout).expect("the check's JSON");
    assert_eq!(report["ok"], false, "{report:#}");
    assert_eq!(report["error_class"], "permission", "{report:#}");
    let lost: Vec<&Value> = report["results"]
        .as_array()
        .expect("results")
        .iter()
        .filter(|r| r["ok"] == false)
        .collect();
    let filter = lost
        .iter()
        .find(|r| r["permission"] == "logs:FilterLogEvents")
        .unwrap_or_else(|| panic!("{report:#}"));
    let resource = filter["resource"].as_str().expect("resource");
    assert!(
        resource.contains(ACCOUNT)
            && resource.contains("us-east-1")
            && resource.contains("/app/orders"),
        "account, region and resource named: {resource}"
    );
    assert!(
        filter["message"]
            .as_str()
            .is_some_and(|m| m.contains("not authorized")),
        "{filter:#}"
    );
    assert_eq!(filter["error_class"], "permission");
    // Health and a signed alert say the same.
    let needs_action = wait_for("action_required", LONG, || {
        Some(health()).filter(|h| h["state"] == "action_required")
    });
    assert_eq!(needs_action["last_error"]["class"], "permission");
    assert_eq!(needs_action["last_error"]["source"], "check");
    let firing = wait_for("the alert", LONG, || {
        receiver.received().into_iter().find(|r| {
            let body = r.json();
            body["kind"] == "firing" && body["alert"]["rule"] == "integration_action_required"
        })
    });
    assert!(firing.signed_with(SECRET));
    let summary = firing.json()["alert"]["summary"]
        .as_str()
        .expect("summary")
        .to_owned();
    assert!(
        summary.contains("logs:FilterLogEvents")
            && summary.contains("/app/orders")
            && summary.contains(ACCOUNT),
        "{summary}"
    );

    // The permission comes back: the periodic re-check finds it and the alert resolves.
    admin("grant");
    wait_for("healthy again after a re-check", LONG, || {
        Some(health()).filter(|h| h["state"] == "healthy" && h["last_check"]["ok"] == true)
    });
    let id = firing.json()["alert"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    wait_for("resolved", LONG, || {
        receiver.received().into_iter().find(|r| {
            let body = r.json();
            body["kind"] == "resolved" && body["alert"]["id"] == id.as_str()
        })
    });
}
