//! The pull path's throughput: a plugin streams synthetic events through `Collect`; they
//! are validated, committed durably with their cursor, and written to the JSONL sink.
//! Reports events/s from daemon start to the last line in the sink, the p99 of the
//! durable batch commit (from `/metrics`), and the daemon's RSS at the end.
//!
//! `pipeline-bench [--events N]` (release build).

use std::io::{Read, Seek, SeekFrom};
use std::time::{Duration, Instant};

use e2e_tests::{DaemonSetup, PluginPackage, World};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let events: u64 = args
        .iter()
        .position(|a| a == "--events")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let world = World::new();
    let total = events.to_string();
    world.install(&PluginPackage {
        capabilities: vec!["collect".to_owned()],
        ..PluginPackage::testfault("emitter", &["--capabilities", "collect", "--emit", &total])
    });
    // One file, so the line count is one file's (rotation is tested elsewhere).
    let setup = DaemonSetup::default()
        .extra("[sinks]\njsonl_max_bytes = 1000000000000\n")
        .instance("emitter")
        .process("collect_interval = \"100ms\"")
        .process("heartbeat_interval = \"3s\"")
        .process("heartbeat_timeout = \"2s\"");
    let started = Instant::now();
    let daemon = world.start(&setup);
    let path = world.state_dir().join("sinks/events.jsonl");
    let mut read_to = 0u64;
    let mut lines = 0u64;
    let mut buffer = Vec::new();
    let mut peak_rss_kib = 0u64;
    while lines < events {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "only {lines} of {events} events after 10 minutes"
        );
        std::thread::sleep(Duration::from_millis(100));
        if let Ok(mut file) = std::fs::File::open(&path) {
            file.seek(SeekFrom::Start(read_to)).expect("seek");
            buffer.clear();
            file.read_to_end(&mut buffer).expect("read");
            read_to += buffer.len() as u64;
            lines += buffer.iter().filter(|b| **b == b'\n').count() as u64;
        }
        peak_rss_kib = peak_rss_kib.max(e2e_tests::rss_kib(daemon.pid()));
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "pull_events_per_s={:.0} events={events} seconds={elapsed:.2} sink_bytes={read_to} (daemon start to last line, incl. plugin start)",
        events as f64 / elapsed
    );
    let metrics = daemon.metrics();
    println!(
        "commit_p99_le_ms={}",
        p99_bucket_ms(&metrics).map_or("n/a".to_owned(), |ms| format!("{ms:.2}"))
    );
    println!("daemon_peak_rss_mib={:.1}", peak_rss_kib as f64 / 1024.0);
}

/// The upper bound of the histogram bucket holding the 99th percentile of batch commits.
fn p99_bucket_ms(metrics: &str) -> Option<f64> {
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    let mut count = 0.0;
    for line in metrics.lines() {
        if let Some(rest) = line.strip_prefix("integrationd_pipeline_commit_seconds_bucket{le=\"") {
            let (le, value) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            buckets.push((le, value.trim().parse().ok()?));
        } else if let Some(rest) = line.strip_prefix("integrationd_pipeline_commit_seconds_count ")
        {
            count = rest.trim().parse().ok()?;
        }
    }
    let threshold = count * 0.99;
    buckets
        .into_iter()
        .find(|(_, cumulative)| *cumulative >= threshold)
        .map(|(le, _)| le * 1000.0)
}
