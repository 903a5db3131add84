//! Platform events in, with realtime enrichment on: failures POSTed as CloudEvents
//! batches of 100 (`application/cloudevents-batch+json`) and as OTLP/HTTP protobuf log
//! exports of 100 error records, by concurrent keep-alive clients over loopback, each
//! request committed durably (validated, enriched with the deployment indexed before
//! them) before its answer. Reports events/s and request latency p50/p99 for each path,
//! alternated, the best of three rounds each.
//!
//! `platform-bench [--events N] [--clients C]` (release build).

use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e_tests::{DaemonSetup, World};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use serde_json::json;

const BATCH: usize = 100;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let events = e2e_tests::bench_arg(&args, "--events", 100_000);
    let clients = e2e_tests::bench_arg(&args, "--clients", 8);
    let world = World::new();
    let daemon = world.start(&DaemonSetup::default().extra(
        "[sinks]\njsonl_max_bytes = 1000000000000\n[ingress]\nrate_per_second = 1000000\nburst = 1000000\n",
    ));
    daemon.ctl_json(&["tenants", "create", "acme"]);
    let token =
        daemon.ctl_json(&["tokens", "create", "--tenant", "acme", "--scope", "ingest"])["token"]
            .as_str()
            .expect("token")
            .to_owned();
    let addr = daemon.http_addr();
    let now_ms = plugin_kit::clock::now_ms();
    // The deployment every failure is linked to, indexed first.
    let deployment = json!({
        "specversion": "1.0", "id": "bench-deployment-1", "source": "https://ci.example.com",
        "type": "com.betalogs.delivery.deployment",
        "time": plugin_kit::clock::rfc3339_ms(now_ms - 10 * 60_000),
        "data": {"service": "checkout", "environment": "production", "deployment.id": "d-1"},
    });
    let answer = e2e_tests::http::request(
        &addr,
        "POST",
        "/v1/events/acme",
        &[
            ("Authorization", &format!("Bearer {token}")),
            ("Content-Type", "application/cloudevents+json"),
        ],
        deployment.to_string().as_bytes(),
        e2e_tests::http::Framing::Length,
    )
    .expect("the daemon answers");
    assert_eq!(answer.status, 202, "{}", answer.body);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let mut best = [0.0f64; 2];
    for round in 0..3 {
        for (index, path) in ["cloudevents", "otlp"].into_iter().enumerate() {
            let rate = runtime.block_on(run(&addr, &token, path, round, events, clients, now_ms));
            best[index] = best[index].max(rate);
        }
    }
    println!(
        "best of 3: cloudevents_events_per_s={:.0} otlp_events_per_s={:.0} (batches of {BATCH}, {clients} clients)",
        best[0], best[1]
    );
}

/// One round of `events` failures on `path`; events/s.
async fn run(
    addr: &str,
    token: &str,
    path: &str,
    round: usize,
    events: usize,
    clients: usize,
    now_ms: u64,
) -> f64 {
    let requests = events / BATCH;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .build()
        .expect("client");
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (client, next) = (client.clone(), next.clone());
            let (addr, token, path) = (addr.to_owned(), token.to_owned(), path.to_owned());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut failures = 0usize;
                loop {
                    let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if n >= requests {
                        return (latencies, failures);
                    }
                    let first = (round * requests + n) * BATCH;
                    let (url, content_type, body) = if path == "cloudevents" {
                        (
                            format!("http://{addr}/v1/events/acme"),
                            "application/cloudevents-batch+json",
                            cloudevents(first, now_ms).into_bytes(),
                        )
                    } else {
                        (
                            format!("http://{addr}/v1/logs"),
                            "application/x-protobuf",
                            otlp(first, now_ms),
                        )
                    };
                    let sent = Instant::now();
                    let response = client
                        .post(&url)
                        .header("content-type", content_type)
                        .header("authorization", format!("Bearer {token}"))
                        .body(body)
                        .send()
                        .await;
                    match response {
                        Ok(r) if r.status().is_success() => latencies.push(sent.elapsed()),
                        _ => failures += 1,
                    }
                }
            })
        })
        .collect();
    let mut latencies: Vec<Duration> = Vec::with_capacity(requests);
    let mut failures = 0;
    for task in tasks {
        let (some, failed) = task.await.expect("client task");
        latencies.extend(some);
        failures += failed;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    let rate = (latencies.len() * BATCH) as f64 / elapsed;
    println!(
        "round {round} {path}: {rate:.0} events/s ({} requests of {BATCH}, {failures} failed, {elapsed:.2} s), request p50 {:.1} ms, p99 {:.1} ms",
        latencies.len(),
        at(0.50),
        at(0.99),
    );
    rate
}

/// A CloudEvents batch of `BATCH` failures of the deployed service, numbered from
/// `first`.
fn cloudevents(first: usize, now_ms: u64) -> String {
    let time = plugin_kit::clock::rfc3339_ms(now_ms);
    let events: Vec<serde_json::Value> = (first..first + BATCH)
        .map(|n| {
            json!({
                "specversion": "1.0", "id": format!("f-{n}"), "source": "https://checkout.example.com",
                "type": "com.example.checkout.payment_failed", "time": time, "severity": "error",
                "data": {"message": format!("card declined {n}"), "service": "checkout",
                         "environment": "production", "attempt": 3},
            })
        })
        .collect();
    serde_json::Value::Array(events).to_string()
}

/// An OTLP export of `BATCH` error records of the deployed service.
fn otlp(first: usize, now_ms: u64) -> Vec<u8> {
    let text = |key: &str, value: &str| KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
    };
    let records = (first..first + BATCH)
        .map(|n| LogRecord {
            time_unix_nano: now_ms * 1_000_000 + n as u64,
            severity_number: 17,
            severity_text: "ERROR".to_owned(),
            body: Some(AnyValue {
                value: Some(any_value::Value::StringValue(format!("card declined {n}"))),
            }),
            trace_id: (n as u128).to_be_bytes().to_vec(),
            span_id: (n as u64).to_be_bytes().to_vec(),
            ..LogRecord::default()
        })
        .collect();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![
                    text("service.name", "checkout"),
                    text("deployment.environment", "production"),
                ],
                ..Resource::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: records,
                ..ScopeLogs::default()
            }],
            ..ResourceLogs::default()
        }],
    }
    .encode_to_vec()
}
