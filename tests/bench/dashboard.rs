//! `target/release/dashboard-bench [--integrations N] [--tenants T] [--loads K]`: the
//! health dashboard with N integrations across T tenants (200 and 20 by default), in
//! headless Chromium.
//!
//! - first render: from the navigation's start to the overview drawn with every row
//!   (the page's `dashboard-first-render` mark), over K cold loads (cache ignored);
//! - page weight: the bytes a cold load receives, the page's own files and the data;
//! - daemon time per refresh: what one refresh asks (`GET /v1/health`), timed at the
//!   client on loopback (an upper bound of the daemon's time), for the operator's
//!   all-tenant token and for one tenant's; and an integration's page
//!   (`GET /v1/integrations/...`, whose tenant has dead letters: its integrations send
//!   every second event invalid) and `GET /v1/deployments`.

use std::time::{Duration, Instant};

use e2e_tests::browser::{Page, screenshot_dir};
use e2e_tests::{DaemonSetup, PluginPackage, World, wait_for};

fn quantile_ms(samples: &mut [f64], q: f64) -> f64 {
    samples.sort_by(f64::total_cmp);
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let at = ((samples.len() as f64 * q) as usize).min(samples.len().saturating_sub(1));
    samples.get(at).copied().unwrap_or(0.0)
}

fn main() {
    let (mut integrations, mut tenants, mut loads) = (200_usize, 20_usize, 10_usize);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value: usize = args
            .next()
            .and_then(|v| v.parse().ok())
            .expect("a number after the flag");
        match arg.as_str() {
            "--integrations" => integrations = value,
            "--tenants" => tenants = value,
            "--loads" => loads = value,
            other => panic!("unknown argument {other}"),
        }
    }
    let world = World::new();
    world.install(&PluginPackage::collector("collector", &["--emit", "1"]));
    world.install(&PluginPackage::collector(
        "sloppy",
        &["--emit", "2000", "--invalid-every", "2"],
    ));
    let mut setup = DaemonSetup::default()
        .process("heartbeat_interval = \"5s\"")
        .process("start_timeout = \"60s\"");
    for index in 0..integrations {
        let tenant = index % tenants;
        setup = setup.tenant_instance(
            if tenant == 0 { "sloppy" } else { "collector" },
            &format!("tenant-{tenant:02}"),
            &format!("collector-{index:03}"),
        );
    }
    let daemon = world.start(&setup);
    let token = |args: &[&str]| {
        daemon.ctl_json(args)["token"]
            .as_str()
            .expect("token")
            .to_owned()
    };
    let operator = token(&["tokens", "create", "--scope", "monitor", "--all-tenants"]);
    let addr = daemon.http_addr();
    let get_with = |path: &str, token: &str, encoding: &str| {
        let bearer = format!("Bearer {token}");
        e2e_tests::http::request(
            &addr,
            "GET",
            path,
            &[("authorization", &bearer), ("accept-encoding", encoding)],
            b"",
            e2e_tests::http::Framing::Length,
        )
        .expect("GET")
    };
    let get = |path: &str, token: &str| get_with(path, token, "identity");
    wait_for(
        "every integration healthy",
        Duration::from_secs(600),
        || {
            let document = get("/v1/health", &operator).json();
            let healthy = document["integrations"].as_array().map_or(0, |list| {
                list.iter().filter(|i| i["state"] == "healthy").count()
            });
            (healthy == integrations).then_some(())
        },
    );
    // The instances come from the daemon's file; a token needs the tenant created.
    daemon.ctl_json(&["tenants", "create", "tenant-00"]);
    let tenant = token(&[
        "tokens",
        "create",
        "--tenant",
        "tenant-00",
        "--scope",
        "monitor",
    ]);

    // Cold loads in Chromium.
    let mut page = Page::launch(1440, 900);
    page.goto(&format!("http://{addr}/ui/"));
    page.eval(&format!(
        "sessionStorage.setItem('betalogs.dashboard.token', {})",
        serde_json::Value::String(operator.clone())
    ));
    let mut renders = Vec::new();
    let mut weight = (0, Vec::new());
    for _ in 0..loads {
        let mark = page.event_count();
        page.reload();
        let at = page.wait_for(
            "the overview with every row",
            &format!(
                "document.querySelectorAll('tbody tr').length === {integrations} \
                 && performance.getEntriesByName('dashboard-first-render').length \
                 && performance.getEntriesByName('dashboard-first-render')[0].startTime"
            ),
            Duration::from_secs(60),
        );
        renders.push(at.as_f64().expect("a time"));
        weight = page.received_bytes_since(mark);
    }
    page.screenshot(&screenshot_dir().join(format!("dashboard-{integrations}.png")));
    let (total, each) = weight;
    let data: u64 = each
        .iter()
        .filter(|(url, _)| url.contains("/v1/"))
        .map(|(_, b)| b)
        .sum();
    println!(
        "first_render_{integrations}_ms p50={:.0} max={:.0} loads={loads}",
        quantile_ms(&mut renders, 0.5),
        quantile_ms(&mut renders, 1.0)
    );
    println!(
        "page_weight_bytes total={total} own_files={} data={data} requests={}",
        total - data,
        each.len()
    );
    for (url, bytes) in &each {
        println!("  {bytes:>8}  {url}");
    }

    // What a refresh costs the daemon.
    let letters =
        get("/v1/integrations/tenant-00/collector-000", &operator).json()["dead_letters_total"]
            .as_u64()
            .unwrap_or(0);
    println!("tenant-00 holds {letters} dead letters of collector-000");
    for (who, path, token, encoding) in [
        ("overview_all_tenants", "/v1/health", &operator, "identity"),
        ("overview_all_tenants_gzip", "/v1/health", &operator, "gzip"),
        ("overview_one_tenant", "/v1/health", &tenant, "gzip"),
        (
            "integration_page",
            "/v1/integrations/tenant-00/collector-000",
            &tenant,
            "gzip",
        ),
        (
            "deployments_all_tenants",
            "/v1/deployments",
            &operator,
            "gzip",
        ),
    ] {
        let mut times = Vec::new();
        let mut bytes = 0;
        for _ in 0..300 {
            let sent = Instant::now();
            let response = get_with(path, token, encoding);
            times.push(sent.elapsed().as_secs_f64() * 1000.0);
            assert_eq!(response.status, 200);
            bytes = response.body.len();
        }
        println!(
            "refresh_{who}_ms p50={:.2} p99={:.2} max={:.2} body_bytes={bytes}",
            quantile_ms(&mut times, 0.5),
            quantile_ms(&mut times, 0.99),
            quantile_ms(&mut times, 1.0),
        );
    }
}
