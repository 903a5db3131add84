//! The plugin process against moto (the AWS emulator from PyPI): everything is set up
//! with the AWS APIs, then the plugin collects through its gRPC interface.

mod support;

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{
    ComparisonOperator, Dimension, MetricDatum, StateValue, Statistic,
};
use serde_json::{Value, json};
use support::*;

/// `Betalogs/Test` `Latency` of `Service=checkout`: (Unix ms, value) datapoints.
async fn put_latency(aws: &Aws, points: &[(i64, f64)]) {
    let dimension = Dimension::builder()
        .name("Service")
        .value("checkout")
        .build();
    let data: Vec<MetricDatum> = points
        .iter()
        .map(|(ms, value)| {
            MetricDatum::builder()
                .metric_name("Latency")
                .dimensions(dimension.clone())
                .timestamp(DateTime::from_millis(*ms))
                .value(*value)
                .build()
        })
        .collect();
    aws.cloudwatch(ACCOUNT, "us-east-1")
        .await
        .put_metric_data()
        .namespace("Betalogs/Test")
        .set_metric_data(Some(data))
        .send()
        .await
        .expect("PutMetricData");
}

async fn put_metric_and_alarm(aws: &Aws, minute_ms: i64) {
    put_latency(
        aws,
        &[(minute_ms - 600_000, 120.0), (minute_ms - 300_000, 480.0)],
    )
    .await;
    let cloudwatch = aws.cloudwatch(ACCOUNT, "us-east-1").await;
    let dimension = Dimension::builder()
        .name("Service")
        .value("checkout")
        .build();
    cloudwatch
        .put_metric_alarm()
        .alarm_name("checkout-latency-high")
        .namespace("Betalogs/Test")
        .metric_name("Latency")
        .dimensions(dimension)
        .statistic(Statistic::Average)
        .period(60)
        .evaluation_periods(1)
        .threshold(400.0)
        .comparison_operator(ComparisonOperator::GreaterThanThreshold)
        .send()
        .await
        .expect("PutMetricAlarm");
    cloudwatch
        .set_alarm_state()
        .alarm_name("checkout-latency-high")
        .state_value(StateValue::Alarm)
        .state_reason("latency above 400 ms")
        .send()
        .await
        .expect("SetAlarmState");
}

fn config(aws: &Aws) -> Value {
    json!({
        "accounts": [{"id": ACCOUNT, "credentials": "prod", "regions": ["us-east-1"]}],
        "metrics": [{"namespace": "Betalogs/Test", "metric": "Latency", "dimensions": {"Service": "checkout"}, "stat": "Average", "period": 60, "service": "checkout"}],
        "log_groups": ["/ecs/checkout"],
        "metric_delay": "0s",
        "poll_interval": "0s",
        "service_map": {"/ecs/checkout": "checkout", "checkout-latency-high": "checkout"},
        "endpoint_url": aws.endpoints(),
    })
}

/// The plugin, configured as `acme/cw` with [`config`] and the account's keys.
async fn configured(aws: &Aws) -> plugin_kit::testing::PluginUnderTest {
    let mut plugin = start().await;
    plugin
        .configure(
            "acme",
            "cw",
            config(aws),
            vec![credential("prod", "aws", KEYS)],
        )
        .await
        .expect("configure");
    plugin
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_logs_and_alarms_become_events_with_ids_and_links() {
    let aws = Aws::start();
    let now = now_ms();
    let minute = now / 60_000 * 60_000;
    put_metric_and_alarm(&aws, minute).await;
    // Three lines share a timestamp: the cursor must keep all of them.
    let same = now - 30_000;
    let lines: Vec<(i64, String)> = vec![
        (now - 120_000, "service started".into()),
        (
            same,
            r#"{"level":"error","message":"payment failed","traceId":"t-42","order":7}"#.into(),
        ),
        (same, "WARN slow query".into()),
        (same, "third line at the same millisecond".into()),
    ];
    aws.put_logs(ACCOUNT, "us-east-1", "/ecs/checkout", "web/1", &lines)
        .await;

    let mut plugin = configured(&aws).await;
    let batches = plugin.collect("").await.expect("collect");
    let events = events(&batches);

    let metrics = of_type(&events, "com.betalogs.system.metric");
    let values: Vec<f64> = metrics
        .iter()
        .map(|e| e["data"]["metric.value"].as_f64().expect("value"))
        .collect();
    assert_eq!(values, [120.0, 480.0], "{metrics:#?}");
    for metric in &metrics {
        assert_eq!(metric["data"]["cloud.account.id"], ACCOUNT);
        assert_eq!(metric["data"]["cloud.region"], "us-east-1");
        assert_eq!(metric["data"]["service.name"], "checkout");
        assert_eq!(
            metric["correlationid"],
            format!("aws:{ACCOUNT}:us-east-1:Betalogs/Test:Latency:Service=checkout")
        );
        assert!(
            metric["data"]["links"][0]["url"]
                .as_str()
                .expect("link")
                .starts_with("https://us-east-1.console.aws.amazon.com/cloudwatch/")
        );
    }

    let logs = of_type(&events, "com.betalogs.system.log");
    assert_eq!(logs.len(), 4, "{logs:#?}");
    let error = logs
        .iter()
        .find(|e| e["data"]["log.message"] == "payment failed")
        .expect("the JSON line");
    assert_eq!(error["severity"], "error");
    assert_eq!(error["correlationid"], "t-42");
    assert_eq!(error["data"]["log.attributes.order"], 7);
    assert_eq!(error["data"]["service.name"], "checkout");
    assert!(
        error["data"]["links"][0]["url"]
            .as_str()
            .expect("link")
            .contains("log-events/web$252F1")
    );

    let alarms = of_type(&events, "com.betalogs.system.alarm");
    assert_eq!(alarms.len(), 1, "{alarms:#?}");
    assert_eq!(alarms[0]["type"], "com.betalogs.system.alarm.raised");
    assert_eq!(alarms[0]["subject"], "checkout-latency-high");
    assert_eq!(alarms[0]["data"]["alarm.reason"], "latency above 400 ms");
    assert_eq!(alarms[0]["data"]["service.name"], "checkout");
    assert!(
        alarms[0]["correlationid"]
            .as_str()
            .expect("arn")
            .starts_with("arn:aws:cloudwatch:us-east-1:")
    );

    // The next poll from the returned cursor reads nothing twice...
    let cursor = last_cursor(&batches);
    let again = plugin.collect(&cursor).await.expect("collect");
    assert_eq!(support::events(&again), Vec::<Value>::new());
    // ...and gets new lines, one at the last timestamp already read.
    let cursor = if last_cursor(&again).is_empty() {
        cursor
    } else {
        last_cursor(&again)
    };
    aws.put_logs(
        ACCOUNT,
        "us-east-1",
        "/ecs/checkout",
        "web/2",
        &[
            (same, "late line at the same millisecond".into()),
            (now_ms(), "newest".into()),
        ],
    )
    .await;
    let third = plugin.collect(&cursor).await.expect("collect");
    let messages: HashSet<String> = support::events(&third)
        .iter()
        .map(|e| {
            e["data"]["log.message"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(
        messages,
        HashSet::from([
            "late line at the same millisecond".to_owned(),
            "newest".to_owned()
        ])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_accounts_and_two_regions_are_kept_apart() {
    let aws = Aws::start();
    let now = now_ms();
    for (account, region) in [
        (ACCOUNT, "us-east-1"),
        (ACCOUNT, "eu-west-1"),
        (OTHER_ACCOUNT, "us-east-1"),
    ] {
        let group = format!("/app/{account}-{region}");
        aws.put_logs(
            account,
            region,
            &group,
            "s",
            &[(now - 1000, format!("hello from {account} {region}"))],
        )
        .await;
    }
    let mut plugin = start().await;
    plugin
        .configure(
            "acme",
            "cw",
            json!({
                "accounts": [
                    {"id": ACCOUNT, "credentials": "prod", "regions": ["us-east-1", "eu-west-1"]},
                    {"id": OTHER_ACCOUNT, "credentials": "prod", "role_arn": format!("arn:aws:iam::{OTHER_ACCOUNT}:role/reader"), "external_id": "acme-7", "regions": ["us-east-1"]}
                ],
                "log_group_prefixes": ["/app/"],
                "poll_interval": "0s",
                // STS through the adapter, which passes it on and keeps what was sent.
                "endpoint_url": {"cloudwatch": aws.adapter.url, "logs": aws.moto.url, "sts": aws.adapter.url},
            }),
            vec![credential("prod", "aws", KEYS)],
        )
        .await
        .expect("configure");
    let events = events(&plugin.collect("").await.expect("collect"));
    let mut seen: Vec<(String, String, String)> = events
        .iter()
        .map(|e| {
            let data = &e["data"];
            let (account, region) = (
                data["cloud.account.id"]
                    .as_str()
                    .expect("account")
                    .to_owned(),
                data["cloud.region"].as_str().expect("region").to_owned(),
            );
            // Each line was read in its own account and region, and says so.
            assert_eq!(
                data["aws.log.group.name"],
                format!("/app/{account}-{region}")
            );
            assert_eq!(
                data["log.message"],
                format!("hello from {account} {region}")
            );
            assert_eq!(e["source"], format!("aws://{account}/{region}/logs"));
            (account, region, e["id"].as_str().expect("id").to_owned())
        })
        .collect();
    seen.sort();
    let places: Vec<(&str, &str)> = seen
        .iter()
        .map(|(a, r, _)| (a.as_str(), r.as_str()))
        .collect();
    assert_eq!(
        places,
        [
            (OTHER_ACCOUNT, "us-east-1"),
            (ACCOUNT, "eu-west-1"),
            (ACCOUNT, "us-east-1")
        ]
    );
    // The role was assumed with the external id.
    let sent = aws.adapter.faults.passed.lock().expect("lock").clone();
    assert!(
        sent.iter().any(|body| body.contains("Action=AssumeRole")
            && body.contains("ExternalId=acme-7")
            && body.contains("111111111111%3Arole%2Freader")),
        "{sent:?}"
    );
    let status = plugin.status().await.expect("status");
    let names: Vec<&str> = status.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "aws:123456789012/us-east-1",
            "aws:123456789012/eu-west-1",
            "aws:111111111111/us-east-1"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_backs_off_and_recovers() {
    let aws = Aws::start();
    let minute = now_ms() / 60_000 * 60_000;
    put_metric_and_alarm(&aws, minute).await;
    let before = aws.adapter.faults.requests.load(Ordering::SeqCst);
    aws.adapter.faults.throttle.store(3, Ordering::SeqCst);
    let mut plugin = start_with_env(&[("INTEGRATION_CLOUDWATCH_RETRY_BASE_MS", "20")]).await;
    let mut config = config(&aws);
    config["log_groups"] = json!([]);
    plugin
        .configure("acme", "cw", config, vec![credential("prod", "aws", KEYS)])
        .await
        .expect("configure");
    let events = events(&plugin.collect("").await.expect("the poll recovers"));
    assert_eq!(aws.adapter.faults.throttled.load(Ordering::SeqCst), 3);
    assert!(aws.adapter.faults.requests.load(Ordering::SeqCst) - before >= 5);
    assert_eq!(of_type(&events, "com.betalogs.system.metric").len(), 2);
    assert_eq!(of_type(&events, "com.betalogs.system.alarm").len(), 1);
    let status = plugin.status().await.expect("status");
    assert_eq!(status[0].breaker, "closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_endpoint_opens_the_breaker_and_health_shows_it() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
    let dead_url = format!("http://{}", dead.local_addr().expect("addr"));
    drop(dead);
    let mut plugin = start_with_env(&[("INTEGRATION_CLOUDWATCH_RETRY_BASE_MS", "5")]).await;
    plugin
        .configure(
            "acme",
            "cw",
            json!({
                "accounts": [{"id": ACCOUNT, "credentials": "prod", "regions": ["us-east-1"]}],
                "log_groups": ["/ecs/checkout"],
                "poll_interval": "0s",
                "enabled_event_types": ["log"],
                "endpoint_url": {"logs": dead_url, "cloudwatch": dead_url, "sts": dead_url},
            }),
            vec![credential("prod", "aws", KEYS)],
        )
        .await
        .expect("configure");
    let err = plugin
        .collect("")
        .await
        .expect_err("the poll reports the failure");
    assert!(err.to_string().contains("123456789012/us-east-1"), "{err}");
    let status = plugin.status().await.expect("status");
    assert_eq!(status[0].name, "aws:123456789012/us-east-1");
    assert_eq!(status[0].breaker, "open", "{status:?}");
    // While open, calls are refused at once, naming the breaker.
    let err = plugin.collect("").await.expect_err("refused");
    assert!(err.to_string().contains("circuit open"), "{err}");
    assert!(
        plugin.health().await.expect("health"),
        "the plugin itself stays healthy"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_the_account_region_resource_and_action() {
    let aws = Aws::start();
    aws.put_logs(
        ACCOUNT,
        "us-east-1",
        "/ecs/checkout",
        "s",
        &[(now_ms(), "x".into())],
    )
    .await;
    let mut plugin = start().await;
    plugin
        .configure(
            "acme",
            "cw",
            json!({
                "accounts": [
                    {"id": ACCOUNT, "credentials": "prod", "regions": ["us-east-1"]},
                    {"id": "999999999999", "credentials": "prod", "regions": ["us-east-1"]}
                ],
                "log_groups": ["/ecs/checkout", "/ecs/missing"],
                "endpoint_url": aws.endpoints(),
            }),
            vec![credential("prod", "aws", KEYS)],
        )
        .await
        .expect("configure");
    let check = plugin.check().await.expect("check");
    assert!(!check.ok);
    let failures: Vec<(String, String, String)> = check
        .results
        .iter()
        .filter(|r| !r.ok)
        .map(|r| (r.resource.clone(), r.permission.clone(), r.message.clone()))
        .collect();
    assert!(
        failures
            .iter()
            .any(|(resource, permission, message)| resource
                == "123456789012/us-east-1 log group /ecs/missing"
                && permission == "logs:DescribeLogGroups"
                && message.contains("does not exist")),
        "{failures:#?}"
    );
    assert!(
        failures
            .iter()
            .any(
                |(resource, permission, message)| resource == "999999999999/us-east-1 account"
                    && permission == "sts:GetCallerIdentity"
                    && message.contains("belong to account 123456789012")
            ),
        "{failures:#?}"
    );
    assert!(
        check
            .results
            .iter()
            .any(|r| r.ok && r.resource == "123456789012/us-east-1 log group /ecs/checkout")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrich_answers_with_the_metric_values_around_a_failure() {
    let aws = Aws::start();
    let failure_ms = (now_ms() - 3_600_000) / 60_000 * 60_000;
    // Two points outside the window (30 min before, 20 after), three inside.
    let points: Vec<(i64, f64)> = [(-30, 5.0), (-10, 100.0), (-5, 150.0), (2, 900.0), (20, 7.0)]
        .iter()
        .map(|(minutes, value)| (failure_ms + minutes * 60_000, *value))
        .collect();
    put_latency(&aws, &points).await;

    let mut plugin = configured(&aws).await;
    let time = humantime::format_rfc3339_millis(
        std::time::UNIX_EPOCH
            + std::time::Duration::from_millis(u64::try_from(failure_ms).expect("after 1970")),
    )
    .to_string();
    let ask = |tenant: &str, service: &str| json!({"tenant": tenant, "time": time, "data": {"enrichment.want": "metric_values", "service.name": service}});
    let answer = plugin
        .enrich(&ask("acme", "checkout"))
        .await
        .expect("enrich");
    let entries: Vec<Value> = answer
        .enrichments_json
        .iter()
        .map(|e| serde_json::from_str(e).expect("json"))
        .collect();
    let [entry] = entries.as_slice() else {
        panic!("one metric: {entries:#?}");
    };
    assert_eq!(entry["kind"], "metric_values");
    assert_eq!(
        entry["source"],
        json!({"plugin": "cloudwatch", "integration": "cw", "tenant": "acme"})
    );
    let values: Vec<f64> = entry["data"]["points"]
        .as_array()
        .expect("points")
        .iter()
        .map(|p| p["value"].as_f64().expect("value"))
        .collect();
    assert_eq!(values, [100.0, 150.0, 900.0], "{entry:#}");
    assert_eq!(entry["data"]["peak"], 900.0);
    assert_eq!(entry["data"]["mean_before"], 125.0);
    assert_eq!(entry["data"]["cloud.account.id"], ACCOUNT);
    assert!(
        entry["links"][0]["url"]
            .as_str()
            .is_some_and(|u| u.starts_with("https://us-east-1.console.aws.amazon.com/cloudwatch/")),
        "{entry:#}"
    );
    assert!(
        entry["reason"]
            .as_str()
            .is_some_and(|r| r.contains("Latency") && r.contains("peak 900")),
        "{entry:#}"
    );

    // Another service: nothing. Another question: nothing. Another tenant: refused.
    let none = plugin
        .enrich(&ask("acme", "billing"))
        .await
        .expect("enrich");
    assert!(none.enrichments_json.is_empty());
    let other = plugin
        .enrich(&json!({"tenant": "acme", "time": time, "data": {"enrichment.want": "suspect_commits"}}))
        .await
        .expect("enrich");
    assert!(other.enrichments_json.is_empty());
    match plugin.enrich(&ask("globex", "checkout")).await {
        Err(plugin_kit::testing::HarnessError::Call(status)) => {
            assert_eq!(status.code() as i32, 7, "permission denied: {status:?}");
        }
        other => panic!("{other:?}"),
    }
    match plugin
        .enrich(&json!({"tenant": "acme", "time": "yesterday", "data": {"enrichment.want": "metric_values", "service.name": "checkout"}}))
        .await
    {
        Err(plugin_kit::testing::HarnessError::Call(status)) => {
            assert_eq!(status.code() as i32, 3, "invalid argument: {status:?}");
        }
        other => panic!("{other:?}"),
    }
}
