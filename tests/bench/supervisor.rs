//! Measures the supervisor's performance targets on this machine, with the binaries
//! of the same build profile as this one (use `--release`):
//!
//! - idle RSS of `integrationd` with no plugins, and of one plugin-kit plugin;
//! - kill -9 of a plugin to healthy again, against the configured first backoff delay;
//! - supervisor CPU over a minute with 200 idle plugin instances.
//!
//! `supervisor-bench [--idle-seconds N] [--kills N]`; prints `key=value` lines.
//!
//! `supervisor-bench --health-integrations N [--idle-seconds S]` measures health
//! instead, with N collecting integrations (testfault plugins, one process each):
//! `GET /v1/health` latency (p50, p99) with an operator's monitoring token, `/metrics`
//! scrape time, and the daemon's idle CPU with the alert rules evaluated every 5 s (the
//! default) against a second daemon where they never run: the difference is what
//! health's bookkeeping costs when nothing happens.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use e2e_tests::{DaemonSetup, PluginPackage, World, bin, pid_of, state_of, wait_for};

const FIRST_DELAY_MS: u64 = 100;

/// utime + stime in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    // After the command: state is field 0, utime 11, stime 12.
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn github_package() -> PluginPackage {
    PluginPackage {
        args: Vec::new(),
        executable: bin("integration-github"),
        capabilities: ["check", "collect", "webhook", "enrich"]
            .map(str::to_owned)
            .to_vec(),
        ..PluginPackage::testfault("github", &[])
    }
}

fn main() {
    let mut idle_seconds = 60u64;
    let mut kills = 20usize;
    let mut health_integrations = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .expect("a number after the flag");
        match arg.as_str() {
            "--idle-seconds" => idle_seconds = value,
            "--kills" => kills = value as usize,
            "--health-integrations" => health_integrations = Some(value as usize),
            other => panic!("unknown argument {other}"),
        }
    }
    if let Some(integrations) = health_integrations {
        health(integrations, idle_seconds);
        return;
    }
    let settle = Duration::from_secs(2);

    // 1. The daemon alone.
    {
        let world = World::new();
        let daemon = world.start(&DaemonSetup::default());
        std::thread::sleep(settle);
        println!(
            "daemon_idle_rss_mib={:.1}",
            e2e_tests::rss_kib(daemon.pid()) as f64 / 1024.0
        );
    }

    // 2. One plugin-kit plugin, and kill -9 to healthy again.
    {
        let world = World::new();
        world.install(&github_package());
        let setup = DaemonSetup::default()
            .instance("github")
            .process(&format!("restart_initial_delay = \"{FIRST_DELAY_MS}ms\""))
            .process("restart_reset_after = \"300ms\"")
            .process("crash_loop_restarts = 100000")
            .process("heartbeat_interval = \"3s\"")
            .process("heartbeat_timeout = \"2s\"");
        let daemon = world.start(&setup);
        let healthy = daemon.wait_instance("github", "healthy", Duration::from_secs(30), |i| {
            state_of(i) == "healthy"
        });
        std::thread::sleep(settle);
        println!(
            "plugin_idle_rss_mib={:.1}",
            e2e_tests::rss_kib(pid_of(&healthy)) as f64 / 1024.0
        );

        let mut latencies = Vec::new();
        let mut pid = pid_of(&healthy);
        for _ in 0..kills {
            // Healthy for longer than restart_reset_after, so each kill is a first restart.
            std::thread::sleep(Duration::from_millis(400));
            let killed_at = unix_ms();
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            )
            .expect("kill -9");
            let again =
                daemon.wait_instance("github", "healthy again", Duration::from_secs(30), |i| {
                    state_of(i) == "healthy" && pid_of(i) != pid
                });
            pid = pid_of(&again);
            latencies.push(
                again["since_unix_ms"]
                    .as_u64()
                    .unwrap_or(0)
                    .saturating_sub(killed_at),
            );
        }
        latencies.sort_unstable();
        let at = |q: f64| {
            latencies[((q * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len()) - 1]
        };
        println!(
            "kill9_to_healthy_ms p50={} p90={} max={} first_backoff_ms={FIRST_DELAY_MS} (jitter only shortens it)",
            at(0.5),
            at(0.9),
            latencies[latencies.len() - 1]
        );
    }

    // 3. 200 idle plugins.
    {
        let world = World::new();
        world.install(&github_package());
        let mut setup = DaemonSetup::default()
            .process("heartbeat_interval = \"3s\"")
            .process("heartbeat_timeout = \"2s\"");
        for index in 0..200 {
            setup
                .instances
                .push(("github".to_owned(), format!("gh-{index}")));
        }
        let started = Instant::now();
        let daemon = world.start(&setup);
        let instances = wait_for("200 healthy", Duration::from_secs(120), || {
            let instances = daemon.instances();
            (instances
                .iter()
                .filter(|i| state_of(i) == "healthy")
                .count()
                == 200)
                .then_some(instances)
        });
        println!("start_200_s={:.2}", started.elapsed().as_secs_f64());
        std::thread::sleep(settle);
        let ticks_per_s = 100.0; // USER_HZ on Linux
        let plugin_pids: Vec<u32> = instances.iter().map(pid_of).collect();
        let daemon_before = cpu_ticks(daemon.pid());
        let plugins_before: u64 = plugin_pids.iter().map(|p| cpu_ticks(*p)).sum();
        let window = Instant::now();
        std::thread::sleep(Duration::from_secs(idle_seconds));
        let seconds = window.elapsed().as_secs_f64();
        let daemon_pct =
            (cpu_ticks(daemon.pid()) - daemon_before) as f64 / ticks_per_s / seconds * 100.0;
        let plugins_pct = (plugin_pids.iter().map(|p| cpu_ticks(*p)).sum::<u64>() - plugins_before)
            as f64
            / ticks_per_s
            / seconds
            * 100.0;
        let plugin_rss: u64 = plugin_pids.iter().map(|p| e2e_tests::rss_kib(*p)).sum();
        println!("idle_200_daemon_cpu_pct_of_one_core={daemon_pct:.2} over_s={seconds:.0}");
        println!("idle_200_plugins_cpu_pct_total={plugins_pct:.2}");
        println!(
            "idle_200_daemon_rss_mib={:.1} plugin_rss_mib_mean={:.1}",
            e2e_tests::rss_kib(daemon.pid()) as f64 / 1024.0,
            plugin_rss as f64 / 1024.0 / 200.0
        );
    }
}

/// `q` of sorted `samples`, in milliseconds.
fn quantile_ms(samples: &[Duration], q: f64) -> f64 {
    samples
        .get(((samples.len() as f64 * q) as usize).min(samples.len().saturating_sub(1)))
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// One daemon with `integrations` collecting integrations, alert rules evaluated every
/// `evaluate`; returns its CPU (% of one core) over `idle_seconds` of nothing happening,
/// after measuring the health API and the scrape when `measure_api`.
fn health_daemon(integrations: usize, evaluate: &str, idle_seconds: u64, measure_api: bool) -> f64 {
    let world = World::new();
    world.install(&PluginPackage::collector("collector", &["--emit", "1"]));
    let mut setup = DaemonSetup::default()
        .process("heartbeat_interval = \"5s\"")
        .process("heartbeat_timeout = \"2s\"")
        .process("start_timeout = \"60s\"")
        .extra(&format!("[alerts]\nevaluate_interval = \"{evaluate}\"\n"));
    for index in 0..integrations {
        setup = setup.tenant_instance(
            "collector",
            &format!("tenant-{}", index % 50),
            &format!("collector-{index}"),
        );
    }
    let started = Instant::now();
    let daemon = world.start(&setup);
    let token =
        daemon.ctl_json(&["tokens", "create", "--scope", "monitor", "--all-tenants"])["token"]
            .as_str()
            .expect("token")
            .to_owned();
    let addr = daemon.http_addr();
    let get = |path: &str| {
        let bearer = format!("Bearer {token}");
        e2e_tests::http::request(
            &addr,
            "GET",
            path,
            &[("authorization", &bearer)],
            b"",
            e2e_tests::http::Framing::Length,
        )
        .expect("GET")
    };
    wait_for(
        "every integration healthy",
        Duration::from_secs(600),
        || {
            let document = get("/v1/health").json();
            let healthy = document["integrations"].as_array().map_or(0, |list| {
                list.iter().filter(|i| i["state"] == "healthy").count()
            });
            (healthy == integrations).then_some(())
        },
    );
    if measure_api {
        println!(
            "health_{integrations}_start_s={:.1}",
            started.elapsed().as_secs_f64()
        );
        let mut health = Vec::new();
        for _ in 0..300 {
            let sent = Instant::now();
            let response = get("/v1/health");
            health.push(sent.elapsed());
            assert_eq!(response.status, 200);
        }
        health.sort();
        let one = get("/v1/health");
        println!(
            "v1_health_{integrations}_p50_ms={:.2} p99_ms={:.2} max_ms={:.2} body_bytes={}",
            quantile_ms(&health, 0.5),
            quantile_ms(&health, 0.99),
            quantile_ms(&health, 1.0),
            one.body.len()
        );
        let mut scrapes = Vec::new();
        let mut bytes = 0;
        for _ in 0..50 {
            let sent = Instant::now();
            bytes = daemon.metrics().len();
            scrapes.push(sent.elapsed());
        }
        scrapes.sort();
        println!(
            "metrics_scrape_{integrations}_p50_ms={:.2} p99_ms={:.2} max_ms={:.2} body_bytes={bytes}",
            quantile_ms(&scrapes, 0.5),
            quantile_ms(&scrapes, 0.99),
            quantile_ms(&scrapes, 1.0),
        );
    }
    std::thread::sleep(Duration::from_secs(2));
    let before = cpu_ticks(daemon.pid());
    let window = Instant::now();
    std::thread::sleep(Duration::from_secs(idle_seconds));
    let ticks_per_s = 100.0; // USER_HZ on Linux
    (cpu_ticks(daemon.pid()) - before) as f64 / ticks_per_s / window.elapsed().as_secs_f64() * 100.0
}

fn health(integrations: usize, idle_seconds: u64) {
    let evaluating = health_daemon(integrations, "5s", idle_seconds, true);
    let quiet = health_daemon(integrations, "1000h", idle_seconds, false);
    println!(
        "idle_{integrations}_daemon_cpu_pct_of_one_core: rules every 5s {evaluating:.2}, never {quiet:.2}; health bookkeeping {:.2} over_s={idle_seconds}",
        evaluating - quiet
    );
}
