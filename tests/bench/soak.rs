//! The daemon under mixed load for a while, watched for anything that grows without
//! bound: webhooks (the push path), a collector (the pull path), platform events, admin
//! calls, a plugin killed now and then, and a backup every few minutes. Every sample
//! reports the daemon's RSS, open file descriptors, threads, its plugin processes and
//! the bytes of its database, its event log and its sink files.
//!
//! `soak [--minutes N] [--sample-seconds S] [--webhooks-per-second R]` (release build;
//! defaults 30 minutes, 30 s, 100/s). At the end it compares the samples after warm-up
//! (the first fifth): the medians of its second and last quarters, per resource, and
//! says "flat" or "GROWING" for each; the exit status is non-zero when any grows. The
//! daemon runs with its bounded memory and disk made small enough to fill within the
//! warm-up, so that what grows after it is not a bound still filling: a 32 MiB page
//! cache, a deduplication window of 50,000 ids (one million by default: about an hour
//! at this load), and a correlation index retention of two minutes (a regression
//! window of one). The database is judged like the rest. The sink files grow by design
//! (they are the output; rotated, never deleted): reported, not judged.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use e2e_tests::http;
use e2e_tests::{DaemonSetup, PluginPackage, World};

const GOOD: (&str, &str) = ("x-testfault-token", "good");

#[derive(Debug, Clone, Copy)]
struct Sample {
    seconds: u64,
    rss_kib: u64,
    fds: u64,
    threads: u64,
    plugins: u64,
    db_bytes: u64,
    log_bytes: u64,
    sink_bytes: u64,
    accepted: u64,
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let minutes = e2e_tests::bench_arg(&args, "--minutes", 30);
    let sample_seconds = e2e_tests::bench_arg(&args, "--sample-seconds", 30) as u64;
    let rate = e2e_tests::bench_arg(&args, "--webhooks-per-second", 100) as u64;

    let world = World::new();
    world.install(&PluginPackage {
        capabilities: vec!["webhook".to_owned()],
        ..PluginPackage::testfault("hooks", &["--capabilities", "webhook"])
    });
    world.install(&PluginPackage::collector("puller", &["--emit", "5"]));
    let daemon = world.start(
        &DaemonSetup::default()
            .with_master_key(&world.root.path().join("master.key"))
            .process("collect_interval = \"1s\"")
            .process("heartbeat_interval = \"1s\"")
            .process("heartbeat_timeout = \"1s\"")
            // A small page cache and deduplication window, full within the warm-up.
            .extra("[sinks]\njsonl_max_bytes = 16000000\n[ingress]\nrate_per_second = 100000\nburst = 100000\n[pipeline]\nstore_cache_mb = 32\ndedup_window = 50000\n")
            // The index forgets after two minutes, swept every 30 s.
            .extra("[enrichment]\nwindow = \"1m\"\nretention = \"2m\"\n"),
    );
    daemon.ctl_json(&["tenants", "create", "acme"]);
    daemon.set_credential("acme", "hook-secret", "webhook-secret", b"soak-secret");
    daemon.add_integration(&world, "acme", "gh", "hooks", &serde_json::json!({}));
    daemon.add_integration(&world, "acme", "orders", "puller", &serde_json::json!({}));
    let ingest =
        daemon.ctl_json(&["tokens", "create", "--tenant", "acme", "--scope", "ingest"])["token"]
            .as_str()
            .expect("token")
            .to_owned();
    daemon.wait_instance("gh", "healthy", Duration::from_secs(30), |i| {
        e2e_tests::state_of(i) == "healthy"
    });
    let addr = daemon.http_addr();
    let stop = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));

    let webhooks = {
        let (stop, accepted, refused, addr) = (
            stop.clone(),
            accepted.clone(),
            refused.clone(),
            addr.clone(),
        );
        std::thread::spawn(move || {
            let started = Instant::now();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let body = format!(r#"{{"id":"soak{n}","events":2}}"#);
                match http::post_json(&addr, "/v1/webhooks/acme/gh", &[GOOD], &body) {
                    Ok(answer) if answer.status == 202 => accepted.fetch_add(1, Ordering::Relaxed),
                    // The plugin is down for a moment after a kill: a 503, counted.
                    _ => refused.fetch_add(1, Ordering::Relaxed),
                };
                n += 1;
                // Paced to the rate: sleep until this delivery's slot.
                let due = Duration::from_micros(n * 1_000_000 / rate.max(1));
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
        })
    };
    let platform = {
        let (stop, accepted, addr) = (stop.clone(), accepted.clone(), addr.clone());
        std::thread::spawn(move || {
            let bearer = format!("Bearer {ingest}");
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let batch: Vec<serde_json::Value> = (0..10)
                    .map(|k| e2e_tests::platform_event("acme", n * 10 + k))
                    .collect();
                let body = serde_json::Value::Array(batch).to_string();
                if let Ok(answer) = http::post_json(
                    &addr,
                    "/v1/events/acme",
                    &[("Authorization", &bearer)],
                    &body,
                ) && answer.status == 202
                {
                    accepted.fetch_add(1, Ordering::Relaxed);
                }
                n += 1;
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };

    let started = Instant::now();
    let end = started + Duration::from_secs(minutes as u64 * 60);
    let pid = daemon.pid();
    let mut samples = Vec::new();
    let mut next_sample = started;
    let mut next_kill = started + Duration::from_secs(45);
    let mut next_backup = started + Duration::from_secs(120);
    let mut backups = 0;
    println!("seconds rss_kib fds threads plugins db_bytes log_bytes sink_bytes accepted");
    while Instant::now() < end {
        // Admin calls, as an operator's dashboard and scripts would make them.
        for args in [
            &["status"][..],
            &["health", "--tenant", "acme"],
            &["dlq", "list", "--tenant", "acme"],
            &["audit", "list", "--tenant", "acme", "--limit", "20"],
        ] {
            let output = daemon.ctl(args);
            assert!(
                output.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        if Instant::now() >= next_kill {
            daemon.kill_plugin(if backups % 2 == 0 { "gh" } else { "orders" });
            next_kill += Duration::from_secs(45);
        }
        if Instant::now() >= next_backup {
            backups += 1;
            let file = world.root.path().join(format!("soak-{backups}.backup"));
            let taken = daemon.ctl_json(&["backup", "--to", file.to_str().expect("utf8")]);
            println!(
                "# backup {backups}: {} bytes, writes waited {} ms",
                taken["bytes"], taken["manifest"]["paused_ms"]
            );
            std::fs::remove_file(&file).expect("remove the backup");
            next_backup += Duration::from_secs(300);
        }
        if Instant::now() >= next_sample {
            let sample = sample(&world, pid, started, &accepted);
            println!(
                "{} {} {} {} {} {} {} {} {}",
                sample.seconds,
                sample.rss_kib,
                sample.fds,
                sample.threads,
                sample.plugins,
                sample.db_bytes,
                sample.log_bytes,
                sample.sink_bytes,
                sample.accepted
            );
            samples.push(sample);
            next_sample += Duration::from_secs(sample_seconds);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    stop.store(true, Ordering::Relaxed);
    webhooks.join().expect("webhooks");
    platform.join().expect("platform events");
    println!(
        "# {} requests accepted, {} webhooks refused (while a plugin restarted)",
        accepted.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed)
    );
    // The daemon and its world go first (`process::exit` would leave the daemon
    // running), then the verdict is the exit status.
    drop(daemon);
    drop(world);
    if verdict(&samples) {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    }
}

fn status_field(pid: u32, field: &str) -> u64 {
    status_of(std::path::Path::new(&format!("/proc/{pid}/status")), field).unwrap_or(0)
}

fn dir_bytes(path: &std::path::Path) -> u64 {
    e2e_tests::files_under(path)
        .iter()
        .filter_map(|file| std::fs::metadata(file).ok())
        .map(|meta| meta.len())
        .sum()
}

/// The daemon's children (its plugin processes): every process whose parent it is.
fn children(pid: u32) -> u64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .flatten()
        .filter(|entry| {
            entry
                .file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter(|entry| {
            let status = entry.path().join("status");
            status_of(&status, "PPid:") == Some(u64::from(pid))
        })
        .count() as u64
}

fn status_of(path: &std::path::Path, field: &str) -> Option<u64> {
    std::fs::read_to_string(path)
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

fn sample(world: &World, pid: u32, started: Instant, accepted: &AtomicU64) -> Sample {
    let state = world.state_dir();
    Sample {
        seconds: started.elapsed().as_secs(),
        rss_kib: status_field(pid, "VmRSS:"),
        fds: std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64),
        threads: status_field(pid, "Threads:"),
        plugins: children(pid),
        db_bytes: dir_bytes(&state.join("db")),
        log_bytes: dir_bytes(&state.join("pipeline")),
        sink_bytes: dir_bytes(&state.join("sinks")),
        accepted: accepted.load(Ordering::Relaxed),
    }
}

fn median(mut values: Vec<u64>) -> u64 {
    values.sort_unstable();
    values.get(values.len() / 2).copied().unwrap_or(0)
}

/// Compares the medians of the second and the last quarter after warm-up; true when a
/// judged resource grew by more than its allowance.
fn verdict(samples: &[Sample]) -> bool {
    let warm = &samples[samples.len() / 5..];
    if warm.len() < 8 {
        println!(
            "# too few samples after warm-up to judge ({}); run longer",
            warm.len()
        );
        return false;
    }
    let quarter = warm.len() / 4;
    let second = &warm[quarter..2 * quarter];
    let last = &warm[warm.len() - quarter..];
    let mut growing = false;
    type Field = fn(&Sample) -> u64;
    // (name, value, growth allowed: a ratio, and an absolute slack for small values)
    let judged: [(&str, Field, f64, u64); 6] = [
        ("rss_kib", |s| s.rss_kib, 1.10, 4_096),
        ("fds", |s| s.fds, 1.0, 4),
        ("threads", |s| s.threads, 1.0, 2),
        ("plugins", |s| s.plugins, 1.0, 0),
        // Pruned a whole 64 MiB segment at a time once the sinks have it.
        ("log_bytes", |s| s.log_bytes, 1.25, 64 << 20),
        // sled's files hold the index for the retention, and log-structured pages
        // freed by its pruning until sled reclaims them.
        ("db_bytes", |s| s.db_bytes, 1.25, 8 << 20),
    ];
    for (name, value, ratio, slack) in judged {
        let before = median(second.iter().map(value).collect());
        let after = median(last.iter().map(value).collect());
        let limit = (before as f64 * ratio) as u64 + slack;
        let grows = after > limit;
        growing |= grows;
        println!(
            "# {name}: second quarter median {before}, last quarter median {after}: {}",
            if grows { "GROWING" } else { "flat" }
        );
    }
    let (first, last_sample) = (warm[0], warm[warm.len() - 1]);
    let hours = (last_sample.seconds - first.seconds).max(1) as f64 / 3600.0;
    println!(
        "# {:.0} accepted requests/s after warm-up",
        (last_sample.accepted - first.accepted) as f64 / (hours * 3600.0)
    );
    let sinks_before = median(second.iter().map(|s| s.sink_bytes).collect());
    let sinks_after = median(last.iter().map(|s| s.sink_bytes).collect());
    println!("# sink_bytes (the output, not judged): {sinks_before} -> {sinks_after}");
    growing
}
