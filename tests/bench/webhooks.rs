//! The push path's throughput and latency: 10 KB webhook deliveries POSTed over loopback
//! by concurrent keep-alive clients, each verified and mapped by the plugin
//! (`HandleWebhook`), validated and committed durably before the 202. Reports
//! deliveries/s, latency p50/p99 (client side, request to 202) and the daemon's peak
//! RSS, which stays bounded because the durable commit is the backpressure.
//!
//! `webhook-bench [--deliveries N] [--clients C] [--health | --anchor]` (release
//! build). With `--health`, it compares the push path with health recording its facts
//! and metrics (the default) and without (`health.record_data_path = false`),
//! alternated, the best of three rounds each. With `--anchor`, it alternates the daemon
//! with its ceiling on this machine: a bare HTTP server on the same stack (axum on
//! hyper, on loopback) that reads each same request and answers 202 at once, driven by
//! the same clients; it reports both and their ratio. With `--forwarded`, two daemons
//! of a cluster (`[cluster]`, on a `nats-server` it starts): the same deliveries sent
//! to the tenant's own node and to the other node, which relays them, alternated for
//! three rounds; it reports the latency each way and what relaying adds at p50 and p99.

use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e_tests::{DaemonSetup, PluginPackage, World};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let deliveries = e2e_tests::bench_arg(&args, "--deliveries", 50_000);
    let clients = e2e_tests::bench_arg(&args, "--clients", 32);
    if args.iter().any(|a| a == "--anchor") {
        let mut best = [0.0f64; 2];
        for round in 0..3 {
            let anchor = bare_server(deliveries, clients);
            let daemon = run(deliveries, clients, true);
            println!("round {round}: bare server {anchor:.0}, daemon {daemon:.0} deliveries/s");
            best = [best[0].max(anchor), best[1].max(daemon)];
        }
        println!(
            "best of 3: bare server {:.0} deliveries/s, daemon {:.0} deliveries/s: the daemon at {:.2}x its ceiling",
            best[0],
            best[1],
            best[1] / best[0]
        );
        return;
    }
    if args.iter().any(|a| a == "--forwarded") {
        forwarded(deliveries, clients);
        return;
    }
    if !args.iter().any(|a| a == "--health") {
        run(deliveries, clients, true);
        return;
    }
    e2e_tests::compare_on_off("recording health", "deliveries/s", "push path", |health| {
        run(deliveries, clients, health)
    });
}

/// One daemon taking `deliveries` from `clients`; deliveries/s.
fn run(deliveries: usize, clients: usize, health: bool) -> f64 {
    let world = World::new();
    world.install(&PluginPackage {
        capabilities: vec!["webhook".to_owned()],
        ..PluginPackage::testfault("hooks", &["--capabilities", "webhook"])
    });
    let setup = DaemonSetup::default()
        .extra(&format!("[sinks]\njsonl_max_bytes = 1000000000000\n[ingress]\nrate_per_second = 1000000\nburst = 1000000\n[health]\nrecord_data_path = {health}\n"))
        .tenant_instance("hooks", "acme", "gh")
        .process("heartbeat_interval = \"3s\"")
        .process("heartbeat_timeout = \"2s\"");
    let daemon = world.start(&setup);
    e2e_tests::wait_for("the plugin healthy", Duration::from_secs(30), || {
        daemon
            .instance("gh")
            .filter(|i| e2e_tests::state_of(i) == "healthy")
    });
    let url = format!("http://{}/v1/webhooks/acme/gh", daemon.http_addr());
    let padding = "x".repeat(10 * 1024 - 64);
    let body_bytes = padding.len() + 64;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let pid = daemon.pid();
    let peak_rss = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sampler = {
        let peak_rss = peak_rss.clone();
        std::thread::spawn(move || {
            while e2e_tests::process_alive(pid) {
                peak_rss.fetch_max(
                    e2e_tests::rss_kib(pid),
                    std::sync::atomic::Ordering::Relaxed,
                );
                std::thread::sleep(Duration::from_millis(100));
                if peak_rss.load(std::sync::atomic::Ordering::Relaxed) == u64::MAX {
                    return;
                }
            }
        })
    };
    let (elapsed, mut latencies, failures) =
        runtime.block_on(drive(url, padding, deliveries, clients, "bench"));
    latencies.sort();
    let at = |q: f64| quantile_ms(&latencies, q);
    let rate = latencies.len() as f64 / elapsed.as_secs_f64();
    println!(
        "push_deliveries_per_s={rate:.0} deliveries={} failures={failures} clients={clients} seconds={:.2} p50_ms={:.2} p99_ms={:.2} body_bytes={}",
        latencies.len(),
        elapsed.as_secs_f64(),
        at(0.50),
        at(0.99),
        body_bytes,
    );
    println!(
        "daemon_peak_rss_mib={:.1}",
        peak_rss.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1024.0
    );
    peak_rss.store(u64::MAX, std::sync::atomic::Ordering::Relaxed);
    drop(daemon);
    let _ = sampler.join();
    rate
}

/// `clients` keep-alive clients POSTing `deliveries` 10 KB deliveries to `url`; the
/// time, the latency of each 202, and the failures.
async fn drive(
    url: String,
    padding: String,
    deliveries: usize,
    clients: usize,
    prefix: &str,
) -> (Duration, Vec<Duration>, usize) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .build()
        .expect("client");
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (client, next, url, padding, prefix) = (
                client.clone(),
                next.clone(),
                url.clone(),
                padding.clone(),
                prefix.to_owned(),
            );
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut failures = 0usize;
                loop {
                    let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if n >= deliveries {
                        return (latencies, failures);
                    }
                    let body =
                        format!(r#"{{"id":"{prefix}-{n}","events":1,"padding":"{padding}"}}"#);
                    let sent = Instant::now();
                    let response = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .header("x-testfault-token", "good")
                        .header("x-github-delivery", format!("{prefix}-{n}"))
                        .body(body)
                        .send()
                        .await;
                    match response {
                        Ok(r) if r.status().as_u16() == 202 => {
                            latencies.push(sent.elapsed());
                        }
                        _ => failures += 1,
                    }
                }
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(deliveries);
    let mut failures = 0;
    for task in tasks {
        let (some, failed) = task.await.expect("client task");
        latencies.extend(some);
        failures += failed;
    }
    (started.elapsed(), latencies, failures)
}

/// The ceiling: the same requests answered 202 by a bare axum server on loopback that
/// reads each body whole and does nothing else; deliveries/s.
fn bare_server(deliveries: usize, clients: usize) -> f64 {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let padding = "x".repeat(10 * 1024 - 64);
    let (elapsed, latencies, failures) = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = axum::Router::new().route(
            "/v1/webhooks/{tenant}/{integration}",
            axum::routing::post(|body: axum::body::Bytes| async move {
                let _ = body.len();
                (
                    axum::http::StatusCode::ACCEPTED,
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    r#"{"status":"accepted","events":1,"duplicates":0,"dead_lettered":0}"#,
                )
            }),
        );
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let url = format!("http://{addr}/v1/webhooks/acme/gh");
        let outcome = drive(url, padding, deliveries, clients, "bench").await;
        server.abort();
        outcome
    });
    let rate = latencies.len() as f64 / elapsed.as_secs_f64();
    println!(
        "anchor_deliveries_per_s={rate:.0} deliveries={} failures={failures} clients={clients} seconds={:.2}",
        latencies.len(),
        elapsed.as_secs_f64()
    );
    rate
}

/// The `q` quantile of sorted latencies, in ms.
fn quantile_ms(sorted: &[Duration], q: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 * q) as usize).min(sorted.len().saturating_sub(1)))
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// A node of a two-node cluster on `nats`.
fn cluster_node(nats: &e2e_tests::nats::NatsServer, node: &str, tenant: bool) -> DaemonSetup {
    let mut setup = DaemonSetup::default()
        .extra(&format!(
            "[sinks]\njsonl_max_bytes = 1000000000000\n[ingress]\nrate_per_second = 1000000\nburst = 1000000\n[cluster]\nnode = \"{node}\"\nservers = [\"{}\"]\n",
            nats.url()
        ))
        .process("heartbeat_interval = \"3s\"")
        .process("heartbeat_timeout = \"2s\"");
    if tenant {
        setup = setup.tenant_instance("hooks", "acme", "gh");
    }
    setup
}

/// What relaying a webhook to its tenant's node costs: the same load sent to the
/// owner and to the other node, alternated.
fn forwarded(deliveries: usize, clients: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let nats = e2e_tests::nats::NatsServer::start(dir.path());
    let (owner_world, relay_world) = (World::new(), World::new());
    for world in [&owner_world, &relay_world] {
        world.install(&PluginPackage {
            capabilities: vec!["webhook".to_owned()],
            ..PluginPackage::testfault("hooks", &["--capabilities", "webhook"])
        });
    }
    let owner = owner_world.start(&cluster_node(&nats, "owner", true));
    let relay = relay_world.start(&cluster_node(&nats, "relay", false));
    e2e_tests::wait_for("the plugin healthy", Duration::from_secs(30), || {
        owner
            .instance("gh")
            .filter(|i| e2e_tests::state_of(i) == "healthy")
    });
    e2e_tests::wait_for(
        "the relay to see the owner",
        Duration::from_secs(30),
        || {
            relay.ctl_json(&["cluster", "status"])["nodes"]
                .as_array()?
                .iter()
                .any(|n| n["name"] == "owner" && n["state"] == "alive")
                .then_some(())
        },
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let padding = "x".repeat(10 * 1024 - 64);
    let mut added = Vec::new();
    for round in 0..3 {
        let mut measured = Vec::new();
        for (way, daemon) in [("local", &owner), ("forwarded", &relay)] {
            let url = format!("http://{}/v1/webhooks/acme/gh", daemon.http_addr());
            let (elapsed, mut latencies, failures) = runtime.block_on(drive(
                url,
                padding.clone(),
                deliveries,
                clients,
                &format!("{way}{round}"),
            ));
            latencies.sort();
            let (p50, p99) = (quantile_ms(&latencies, 0.5), quantile_ms(&latencies, 0.99));
            println!(
                "round {round} {way}: {:.0} deliveries/s, p50 {p50:.2} ms, p99 {p99:.2} ms, failures {failures}",
                latencies.len() as f64 / elapsed.as_secs_f64()
            );
            measured.push((p50, p99));
        }
        let (p50_added, p99_added) = (measured[1].0 - measured[0].0, measured[1].1 - measured[0].1);
        println!("round {round}: relaying adds p50 {p50_added:.2} ms, p99 {p99_added:.2} ms");
        added.push(p99_added);
    }
    added.sort_by(f64::total_cmp);
    println!(
        "forwarded webhook p99 added (median of 3 rounds): {:.2} ms",
        added[1]
    );
}
