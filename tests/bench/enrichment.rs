//! `enrichment-bench [lookup|realtime|batch] [--cache-mb N] [--deploy-every-min N]`
//! (release build): the correlation index's figures, in one run.
//!
//! 1. Lookup: the deployments preceding an event, with 1,000,000 delivery events
//!    indexed (1,000 services, 1,000 deployments each): p50, p99, max.
//! 2. Realtime cost: the pull path's own work (validate, correlate, commit durably)
//!    for 200,000 events in batches of 1,000 — 95% info lines, 5% failures with a
//!    deployment before them — with the correlation index on and off, alternated;
//!    the ratio of the best runs.
//! 3. Batch: `enrich` over 1,000,000 stored failures, each gaining a deployment: the
//!    time, revisions committed and delivered included.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use plugin_kit::{Category, EventBuilder, MapContext, Severity};
use supervisor::config::EnrichmentConfig;
use supervisor::correlation::records::{DeliveryRecord, IndexEntry};
use supervisor::correlation::{Correlator, batch};
use supervisor::pipeline::{Pipeline, PipelineSettings};
use supervisor::store::{Batch, Store};

/// The daemon's allocator (see `integrationd`): these figures are the daemon's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Lookups and batch enrichment read history (the index itself).
const HISTORY: u64 = 1_700_000_000_000;
const MINUTE: u64 = 60_000;

/// The number after `name` on the command line, or `default`.
fn number_arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `--deploy-every-min N` (realtime): how far apart each service's deployments are.
/// The default, one a minute, puts five deployments (the most listed) in every
/// failure's two-hour window; `60` is a busy service deploying hourly (two).
fn deploy_every_min() -> u64 {
    number_arg("--deploy-every-min", 1)
}

/// `--cache-mb N` (default: the store's default).
fn cache_mb() -> u64 {
    number_arg("--cache-mb", supervisor::store::default_cache_mb())
}

/// The pipeline with its correlator, as the daemon builds them.
fn pipeline(dir: &std::path::Path, enabled: bool) -> (Pipeline, Arc<Correlator>) {
    let store = Store::open_with_cache(dir, cache_mb()).expect("store");
    let correlator = Arc::new(Correlator::new(
        store.clone(),
        EnrichmentConfig {
            enabled,
            ..EnrichmentConfig::default()
        },
        None,
        None,
    ));
    let pipeline = Pipeline::open_with(store, PipelineSettings::default(), correlator.clone())
        .expect("pipeline");
    (pipeline, correlator)
}

/// Deployment `n` of `service`, `spacing` ms after the one before, from `base`.
fn deployment_entry(base: u64, spacing: u64, service: usize, n: u64) -> IndexEntry {
    IndexEntry::Delivery(DeliveryRecord {
        id: format!("ev_{service}_{n}"),
        kind: "deployment".to_owned(),
        integration: "gh".to_owned(),
        time_ms: base + n * spacing,
        service: format!("service-{service}"),
        environment: "production".to_owned(),
        deployment: Some(format!("acme/service-{service}#{n}")),
        revision: Some(format!("{n:040x}")),
        repository: Some(format!("acme/service-{service}")),
        url: Some(format!(
            "https://github.com/acme/service-{service}/deployments"
        )),
        commit_url: None,
    })
}

fn index(store: &Store, base: u64, spacing: u64, services: usize, per_service: u64) {
    let mut batch = Batch::new();
    let mut pending = 0;
    for service in 0..services {
        for n in 0..per_service {
            let (table, key, value) = deployment_entry(base, spacing, service, n).write("acme");
            batch = batch.put(table, key, value);
            pending += 1;
            if pending == 20_000 {
                store.apply(&batch).expect("index");
                batch = Batch::new();
                pending = 0;
            }
        }
    }
    store.apply(&batch).expect("index");
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn lookup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (pipeline, correlator) = pipeline(dir.path(), true);
    let started = Instant::now();
    index(pipeline.store(), HISTORY, MINUTE, 1_000, 1_000);
    println!(
        "lookup: indexed 1,000,000 deliveries in {:.1} s (store page cache {} MiB)",
        started.elapsed().as_secs_f64(),
        cache_mb()
    );
    let mut latencies = Vec::with_capacity(100_000);
    let mut found = 0usize;
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    for _ in 0..100_000 {
        // xorshift: a service and a time anywhere in the indexed range.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let service = format!("service-{}", state % 1_000);
        let at = HISTORY + (state >> 20) % (1_000 * MINUTE);
        let started = Instant::now();
        let deployments = correlator
            .deployments_before("acme", &service, "production", at, 2 * 60 * MINUTE, &[])
            .expect("lookup");
        latencies.push(started.elapsed());
        found += deployments.len();
    }
    latencies.sort();
    println!(
        "lookup: 100,000 lookups of the deployments preceding an event (2 h window, {:.1} found on average): p50 {:.1} us, p99 {:.1} us, max {:.1} us",
        found as f64 / 100_000.0,
        percentile(&latencies, 0.5).as_secs_f64() * 1e6,
        percentile(&latencies, 0.99).as_secs_f64() * 1e6,
        latencies[latencies.len() - 1].as_secs_f64() * 1e6
    );
}

/// `count` events pulled in the last four minutes before `now`.
fn events(count: usize, now: u64) -> Vec<Vec<String>> {
    let context = MapContext {
        tenant: "acme".into(),
        integration: "cw".into(),
    };
    let all: Vec<String> = (0..count)
        .map(|i| {
            let failure = i % 20 == 0;
            let at = now - 4 * MINUTE + (i as u64) * (4 * MINUTE) / count as u64;
            EventBuilder::new(
                "com.betalogs.system.log",
                Category::System,
                "aws://123456789012/us-east-1/logs",
                format!("line-{i}"),
                humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_millis(at))
                    .to_string(),
            )
            .severity(if failure {
                Severity::Error
            } else {
                Severity::Info
            })
            .field("service.name", format!("service-{}", i % 100))
            .field("deployment.environment", "production")
            .field("log.message", format!("request {i} handled"))
            .field("cloud.account.id", "123456789012")
            .to_json(&context)
            .expect("json")
        })
        .collect();
    all.chunks(1_000).map(<[String]>::to_vec).collect()
}

fn realtime() {
    // Realtime events are about now (pulled within the last few minutes), by the
    // daemon's clock, and their deployments before them.
    let now = plugin_kit::clock::now_ms();
    let batches = events(200_000, now);
    let mut best = [f64::MAX; 2];
    for round in 0..4 {
        for (slot, enabled) in [(0, false), (1, true)] {
            let dir = tempfile::tempdir().expect("tempdir");
            let (pipeline, _correlator) = pipeline(dir.path(), enabled);
            // 700 deployments of each service before the events, the newest ten
            // minutes before the first event.
            let spacing = deploy_every_min() * MINUTE;
            index(
                pipeline.store(),
                now - 10 * MINUTE - 699 * spacing,
                spacing,
                100,
                700,
            );
            let started = Instant::now();
            for batch in &batches {
                let submission = pipeline.prepare("acme", "cw", batch);
                pipeline.commit_blocking(submission).expect("commit");
            }
            let seconds = started.elapsed().as_secs_f64();
            best[slot] = best[slot].min(seconds);
            println!(
                "realtime: round {round}, correlation {}: 200,000 events in {seconds:.2} s = {:.0} events/s",
                if enabled { "on " } else { "off" },
                200_000.0 / seconds
            );
        }
    }
    println!(
        "realtime: best off {:.0} events/s, best on {:.0} events/s: correlation costs {:.1}% of the throughput",
        200_000.0 / best[0],
        200_000.0 / best[1],
        (1.0 - best[0] / best[1]) * 100.0
    );
}

fn batch_enrichment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (pipeline, correlator) = pipeline(dir.path(), true);
    let context = MapContext {
        tenant: "acme".into(),
        integration: "cw".into(),
    };
    // 1,000,000 failures as realtime enrichment stored them before any deployment was
    // known (10 services, in the hour after HISTORY), written straight to the table.
    let started = Instant::now();
    let mut writes = Batch::new();
    for i in 0..1_000_000u64 {
        let service = format!("service-{}", i % 10);
        let at = HISTORY + (i * 3) % (60 * MINUTE);
        let json = EventBuilder::new(
            "com.betalogs.system.log",
            Category::System,
            "aws://123456789012/us-east-1/logs",
            format!("failure-{i}"),
            humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_millis(at))
                .to_string(),
        )
        .severity(Severity::Error)
        .field("service.name", service.clone())
        .field("deployment.environment", "production")
        .field("log.message", format!("failure {i}"))
        .to_json(&context)
        .expect("json");
        let mut key = supervisor::correlation::records::time_key(
            &["acme", &service, "production"],
            at,
            &format!("ev_{i}"),
        );
        key.shrink_to_fit();
        writes = writes.put(supervisor::store::Table::Failures, key, json.into_bytes());
        if (i + 1) % 20_000 == 0 {
            pipeline.store().apply(&writes).expect("failures");
            writes = Batch::new();
        }
    }
    pipeline.store().apply(&writes).expect("failures");
    // One deployment per service just before them.
    let mut deployments = Batch::new();
    for service in 0..10 {
        let entry = IndexEntry::Delivery(DeliveryRecord {
            time_ms: HISTORY - MINUTE,
            ..match deployment_entry(HISTORY, MINUTE, service, 0) {
                IndexEntry::Delivery(d) => d,
                _ => unreachable!("a delivery"),
            }
        });
        let (table, key, value) = entry.write("acme");
        deployments = deployments.put(table, key, value);
    }
    pipeline.store().apply(&deployments).expect("deployments");
    println!(
        "batch: stored 1,000,000 failures in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    let never = AtomicBool::new(false);
    let done = batch::run(
        &pipeline,
        &correlator,
        batch::Scope {
            tenant: "acme",
            from_ms: 0,
            to_ms: u64::MAX,
            dry_run: false,
        },
        &never,
        |_| {},
    )
    .expect("batch");
    println!(
        "batch: enrich over 1,000,000 stored failures: {} scanned, {} enriched (new revisions committed), {} unchanged in {:.1} s",
        done.scanned,
        done.enriched,
        done.unchanged,
        started.elapsed().as_secs_f64()
    );
}

fn main() {
    let only = std::env::args()
        .nth(1)
        .filter(|a| ["lookup", "realtime", "batch"].contains(&a.as_str()));
    if only.as_deref().is_none_or(|o| o == "lookup") {
        lookup();
    }
    if only.as_deref().is_none_or(|o| o == "realtime") {
        realtime();
    }
    if only.as_deref().is_none_or(|o| o == "batch") {
        batch_enrichment();
    }
}
