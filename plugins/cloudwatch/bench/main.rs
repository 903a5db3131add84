//! `cloudwatch-bench [--lines N]`: the plugin's performance figures.
//!
//! 1. Log pages to events: `FilterLogEvents` pages of 1,000 lines (half JSON lines
//!    with a level, trace id and attributes, half plain text lines) through the code a
//!    group's read runs on every page (`logs::PageReader`: deduplication by event id,
//!    then mapping and serializing each line), on one thread: lines/s.
//! 2. Idle RSS: the real plugin process configured with three accounts and two regions
//!    each (six sets of SDK clients), metrics, log groups and a webhook secret, after
//!    it settles.

use std::time::{Duration, Instant};

use aws_sdk_cloudwatchlogs::types::FilteredLogEvent;
use integration_cloudwatch::logs::{GroupCursor, LineMapper, PageReader};
use plugin_kit::{MapContext, v1};
use serde_json::json;

const PAGE: usize = 1_000;

fn pages(lines: usize) -> Vec<Vec<FilteredLogEvent>> {
    let base = 1_796_000_000_000_i64;
    let all: Vec<FilteredLogEvent> = (0..lines)
        .map(|i| {
            let message = if i % 2 == 0 {
                format!(
                    r#"{{"level":"{}","message":"request handled","traceId":"1-5f84c7a9-{i:024x}","method":"POST","path":"/v1/orders","status":{},"duration_ms":{}}}"#,
                    if i % 10 == 0 { "error" } else { "info" },
                    if i % 10 == 0 { 502 } else { 200 },
                    i % 700
                )
            } else {
                format!(
                    "2026-11-30T10:00:{:02}.{:03}Z INFO [worker-3] order {i} settled in {} ms",
                    (i / 1000) % 60,
                    i % 1000,
                    i % 300
                )
            };
            FilteredLogEvent::builder()
                .event_id(format!("{:056}", 37_000_000_000_000_000_i64 + i as i64))
                .log_stream_name("ecs/checkout/5f1e0c2b9d")
                .timestamp(base + i as i64)
                .ingestion_time(base + i as i64 + 120)
                .message(message)
                .build()
        })
        .collect();
    all.chunks(PAGE).map(<[FilteredLogEvent]>::to_vec).collect()
}

fn mapping(lines: usize) {
    let pages = pages(lines);
    let context = MapContext {
        tenant: "acme".into(),
        integration: "cw".into(),
    };
    let mapper = LineMapper {
        account: "123456789012",
        region: "eu-west-1",
        group: "/ecs/checkout",
        service: Some("checkout"),
        context: &context,
    };
    let cursor = GroupCursor::default();
    // Warm-up pass, and a check that every line became an event.
    let mut reader = PageReader::new(&cursor);
    let produced: usize = pages.iter().map(|p| reader.page(&mapper, p).len()).sum();
    assert_eq!(produced, lines);
    let mut best = f64::MAX;
    let mut bytes = 0;
    for _ in 0..5 {
        let started = Instant::now();
        let mut reader = PageReader::new(&cursor);
        bytes = 0;
        for page in &pages {
            bytes += reader
                .page(&mapper, page)
                .iter()
                .map(String::len)
                .sum::<usize>();
        }
        let next = reader.finish(&cursor, 300_000);
        std::hint::black_box(next);
        best = best.min(started.elapsed().as_secs_f64());
    }
    println!(
        "log pages to events: {lines} lines in pages of {PAGE} ({bytes} B of events): best of 5 runs {best:.3} s = {:.0} lines/s (one thread)",
        lines as f64 / best
    );
}

fn idle_rss() {
    let executable = std::env::current_exe()
        .expect("own path")
        .with_file_name("integration-cloudwatch");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut plugin = plugin_kit::testing::PluginUnderTest::start(&executable)
            .await
            .expect("the plugin starts");
        let credential = |name: &str, kind: &str, secret: String| v1::Credential {
            name: name.into(),
            kind: kind.into(),
            secret: secret.into_bytes(),
        };
        let keys = r#"{"access_key_id":"AKIDBENCHBENCHBENCH","secret_access_key":"bench"}"#;
        plugin
            .configure(
                "acme",
                "cw",
                json!({
                    "accounts": [
                        {"id": "123456789012", "credentials": "a", "regions": ["us-east-1", "eu-west-1"]},
                        {"id": "210987654321", "credentials": "b", "regions": ["us-east-1", "eu-west-1"]},
                        {"id": "111111111111", "credentials": "a", "role_arn": "arn:aws:iam::111111111111:role/reader", "external_id": "x", "regions": ["us-east-1", "eu-west-1"]}
                    ],
                    "metrics": [{"namespace": "AWS/EC2", "metric": "CPUUtilization", "stat": "Average", "period": 60}],
                    "log_group_prefixes": ["/ecs/"],
                    "credentials": {"webhook_secret": "hook"}
                }),
                vec![
                    credential("a", "aws", keys.to_owned()),
                    credential("b", "aws", keys.to_owned()),
                    credential("webhook_secret", "webhook-secret", r#""s""#.to_owned()),
                ],
            )
            .await
            .expect("configure");
        assert!(plugin.health().await.expect("health"));
        assert_eq!(plugin.status().await.expect("status").len(), 6);
        // Settle, then read: an idle figure, not a test synchronization.
        tokio::time::sleep(Duration::from_secs(2)).await;
        println!(
            "idle RSS: {} KiB (configured: 3 accounts x 2 regions, one assumed role, metrics, log prefixes, webhook secret)",
            plugin_kit::testing::resident_kib(plugin.pid())
        );
    });
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut lines = 200_000;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--lines" => lines = args.next().and_then(|n| n.parse().ok()).expect("--lines N"),
            other => panic!("unknown argument {other}; usage: cloudwatch-bench [--lines N]"),
        }
    }
    mapping(lines);
    idle_rss();
}
