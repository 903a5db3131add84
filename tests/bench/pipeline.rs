//! The pull path's throughput: a plugin streams synthetic events through `Collect`; they
//! are validated, committed durably with their cursor, and written to the JSONL sink.
//! Reports events/s from daemon start to the last line in the sink, the p99 of the
//! durable batch commit (from `/metrics`), and the daemon's RSS at the end.
//!
//! `pipeline-bench [--events N] [--failure-every K] [--health | --anchor | --jetstream]`
//! (release build). With `--jetstream`, it alternates the pull path into the JSONL sink
//! alone with the same path publishing into a local JetStream stream as well (a
//! `nats-server -js` the bench starts, file storage), and reports both rates: the time
//! from daemon start until the stream holds every event. With `--anchor`, it alternates the daemon with its ceiling on this machine:
//! the same events (the lines the daemon wrote) written to a JSONL file in the same
//! directory with no pipeline, a batch of 1,000 lines and a `fdatasync` at a time, and
//! reports both and their ratio. With
//! `--failure-every`, the emitter's stream holds a deployment and then a failure every K
//! events, and the bench compares the pull path with the correlation index (realtime
//! enrichment) on and off. With `--health`, it compares the pull path with health
//! recording its facts and metrics (the default) and without
//! (`health.record_data_path = false`).

use std::io::{Read, Seek, SeekFrom};
use std::time::{Duration, Instant};

use e2e_tests::{DaemonSetup, PluginPackage, World};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    let events = flag("--events").unwrap_or(1_000_000);
    if args.iter().any(|a| a == "--anchor") {
        let mut best = [0.0f64; 2];
        for round in 0..3 {
            let mut lines = Vec::new();
            let daemon = run_keeping(events, &mut lines);
            let anchor = jsonl_alone(&lines);
            println!("round {round}: daemon {daemon:.0}, JSONL alone {anchor:.0} events/s");
            best = [best[0].max(anchor), best[1].max(daemon)];
        }
        println!(
            "best of 3: JSONL alone {:.0} events/s, daemon {:.0} events/s: the daemon at {:.2}x its ceiling",
            best[0],
            best[1],
            best[1] / best[0]
        );
        return;
    }
    if args.iter().any(|a| a == "--jetstream") {
        let mut best = [0.0f64; 2];
        for round in 0..3 {
            let jsonl = run(events, None, Correlation::Enriching, true);
            let (jetstream, bare) = run_jetstream(events);
            println!(
                "round {round}: JSONL sink {jsonl:.0} events/s, JetStream sink {jetstream:.0} events/s; the same events published by a bare client: {bare:.0} events/s (the sink at {:.2}x)",
                jetstream / bare
            );
            best = [best[0].max(jsonl), best[1].max(jetstream)];
        }
        println!(
            "best of 3: JSONL {:.0} events/s, into JetStream {:.0} events/s ({:.2}x)",
            best[0],
            best[1],
            best[1] / best[0]
        );
        return;
    }
    if args.iter().any(|a| a == "--health") {
        compare_health(events);
        return;
    }
    match flag("--failure-every") {
        None => {
            run(events, None, Correlation::Enriching, true);
        }
        Some(every) => {
            // The same stream with correlation off, the index alone (realtime enrichment
            // flagged off), and both, alternated; the ratios of the best runs.
            let modes = [
                Correlation::Off,
                Correlation::IndexOnly,
                Correlation::Enriching,
            ];
            let mut best = [0.0f64; 3];
            for round in 0..3 {
                for (slot, mode) in modes.iter().enumerate() {
                    let rate = run(events, Some(every), *mode, true);
                    println!("round {round}: {mode:?}: {rate:.0} events/s");
                    best[slot] = best[slot].max(rate);
                }
            }
            let cost = |base: f64, with: f64| (1.0 - with / base) * 100.0;
            println!(
                "a failure every {every} events, one deployment before them; best events/s: off {:.0}, index only {:.0}, index and realtime enrichment {:.0}",
                best[0], best[1], best[2]
            );
            println!(
                "realtime enrichment costs {:.1}% of the pull path's throughput with the index kept (index only -> enriching); index and enrichment together {:.1}% (off -> enriching)",
                cost(best[1], best[2]),
                cost(best[0], best[2])
            );
        }
    }
}

/// The same stream with health recording on and off, alternated; the best of three
/// rounds each.
fn compare_health(events: u64) {
    e2e_tests::compare_on_off("recording health", "events/s", "pull path", |health| {
        run(events, None, Correlation::Enriching, health)
    });
}

/// What the correlation index does in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Correlation {
    /// `[enrichment] enabled = false`.
    Off,
    /// The index kept, realtime enrichment off (`[flags] realtime_enrichment = false`).
    IndexOnly,
    /// The index and realtime enrichment (the default).
    Enriching,
}

/// [`run`] with the defaults, keeping the sink's lines in `kept`.
fn run_keeping(events: u64, kept: &mut Vec<u8>) -> f64 {
    run_into(events, None, Correlation::Enriching, true, Some(kept))
}

/// The ceiling of the pull path: `lines` (JSONL) written to a file beside the daemon's
/// state, 1,000 lines and one `fdatasync` at a time; events/s.
fn jsonl_alone(lines: &[u8]) -> f64 {
    use std::io::Write;
    let dir = tempfile::tempdir_in("/tmp").expect("tempdir");
    let mut file = std::fs::File::create(dir.path().join("events.jsonl")).expect("file");
    let mut count = 0u64;
    let started = Instant::now();
    let mut batch_start = 0;
    let mut in_batch = 0;
    for (index, byte) in lines.iter().enumerate() {
        if *byte != b'\n' {
            continue;
        }
        count += 1;
        in_batch += 1;
        if in_batch == 1_000 {
            file.write_all(&lines[batch_start..=index]).expect("write");
            file.sync_data().expect("fdatasync");
            batch_start = index + 1;
            in_batch = 0;
        }
    }
    file.write_all(&lines[batch_start..]).expect("write");
    file.sync_data().expect("fdatasync");
    count as f64 / started.elapsed().as_secs_f64()
}

/// One daemon pulling `events` from the emitter (with a failure every
/// `failure_every`) to the JSONL sink; events/s.
fn run(events: u64, failure_every: Option<u64>, correlation: Correlation, health: bool) -> f64 {
    run_into(events, failure_every, correlation, health, None)
}

fn run_into(
    events: u64,
    failure_every: Option<u64>,
    correlation: Correlation,
    health: bool,
    kept: Option<&mut Vec<u8>>,
) -> f64 {
    let world = World::new();
    let total = events.to_string();
    let every = failure_every.map(|k| k.to_string());
    let mut faults = vec!["--capabilities", "collect", "--emit", &total];
    if let Some(every) = &every {
        faults.extend(["--failure-every", every.as_str()]);
    }
    world.install(&PluginPackage {
        capabilities: vec!["collect".to_owned()],
        ..PluginPackage::testfault("emitter", &faults)
    });
    // One file, so the line count is one file's (rotation is tested elsewhere).
    let setup = DaemonSetup::default()
        .extra(&format!(
            "[sinks]\njsonl_max_bytes = 1000000000000\n[enrichment]\nenabled = {}\n[flags]\nrealtime_enrichment = {}\n[health]\nrecord_data_path = {health}\n",
            correlation != Correlation::Off,
            correlation == Correlation::Enriching
        ))
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
    let rate = events as f64 / elapsed;
    if let Some(kept) = kept {
        *kept = std::fs::read(&path).expect("the sink");
    }
    if failure_every.is_some() {
        // The failures at the end of the sink name the deployment when enrichment is on.
        let mut file = std::fs::File::open(&path).expect("sink");
        file.seek(SeekFrom::End(-1_000_000)).expect("seek");
        let mut tail = String::new();
        file.read_to_string(&mut tail).expect("read");
        let linked = tail.matches("\"kind\":\"deployment\"").count();
        assert_eq!(
            linked > 0,
            correlation == Correlation::Enriching,
            "{correlation:?}: {linked} failures linked to the deployment"
        );
    }
    if failure_every.is_none() && health {
        println!(
            "pull_events_per_s={rate:.0} events={events} seconds={elapsed:.2} sink_bytes={read_to} (daemon start to last line, incl. plugin start)"
        );
        let metrics = daemon.metrics();
        println!(
            "commit_p99_le_ms={}",
            p99_bucket_ms(&metrics).map_or("n/a".to_owned(), |ms| format!("{ms:.2}"))
        );
        println!("daemon_peak_rss_mib={:.1}", peak_rss_kib as f64 / 1024.0);
    }
    rate
}

/// The pull path with a JetStream sink beside the JSONL one, into a local
/// `nats-server -js`; events/s from daemon start until the stream holds every event.
/// Then its anchor: the same events (the JSONL sink's lines) published into a second
/// stream of the same server by a bare client (the NATS project's, 4,096 in flight,
/// each with its `Nats-Msg-Id`), events/s.
fn run_jetstream(events: u64) -> (f64, f64) {
    let world = World::new();
    let server = e2e_tests::nats::NatsServer::start(world.root.path());
    let total = events.to_string();
    world.install(&PluginPackage {
        capabilities: vec!["collect".to_owned()],
        ..PluginPackage::testfault("emitter", &["--capabilities", "collect", "--emit", &total])
    });
    let setup = DaemonSetup::default()
        .extra(&format!(
            "[sinks]\njsonl_max_bytes = 1000000000000\n[[sinks.nats]]\nname = \"bus\"\nservers = [{:?}]\ncreate_stream = true\n",
            server.url()
        ))
        .instance("emitter")
        .process("collect_interval = \"100ms\"")
        .process("heartbeat_interval = \"3s\"")
        .process("heartbeat_timeout = \"2s\"");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let started = Instant::now();
    let _daemon = world.start(&setup);
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "the stream did not fill in 10 minutes"
        );
        std::thread::sleep(Duration::from_millis(100));
        let held = runtime
            .block_on(e2e_tests::nats::stream_messages_if_any(
                &server.url(),
                "BETALOGS",
            ))
            .unwrap_or(0);
        if held >= events {
            break;
        }
    }
    let rate = events as f64 / started.elapsed().as_secs_f64();
    drop(_daemon);
    let lines = std::fs::read(world.state_dir().join("sinks/events.jsonl")).expect("the sink");
    let bare = runtime.block_on(bare_publisher(&server.url(), &lines));
    (rate, bare)
}

/// `lines` published into a new stream `ANCHOR` as fast as JetStream acknowledges them.
async fn bare_publisher(url: &str, lines: &[u8]) -> f64 {
    use std::collections::VecDeque;
    let client = async_nats::connect(url).await.expect("connect");
    let context = async_nats::jetstream::new(client);
    context
        .create_stream(async_nats::jetstream::stream::Config {
            name: "ANCHOR".into(),
            subjects: vec!["anchor.>".into()],
            ..Default::default()
        })
        .await
        .expect("stream");
    let started = Instant::now();
    let mut in_flight = VecDeque::new();
    let mut count = 0u64;
    for (n, line) in lines
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .enumerate()
    {
        if in_flight.len() >= 4096 {
            let ack: async_nats::jetstream::context::PublishAckFuture =
                in_flight.pop_front().expect("in flight");
            ack.await.expect("acknowledged");
        }
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", n.to_string().as_str());
        in_flight.push_back(
            context
                .publish_with_headers("anchor.events", headers, line.to_vec().into())
                .await
                .expect("publish"),
        );
        count += 1;
    }
    for ack in in_flight {
        ack.await.expect("acknowledged");
    }
    count as f64 / started.elapsed().as_secs_f64()
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
