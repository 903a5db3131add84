//! `github-bench [--deliveries N]`: the plugin's performance figures.
//!
//! 1. Mapping: a signed `push` with 20 commits (the public example's commit, twenty
//!    times with distinct SHAs) through the plugin's whole webhook path (signature,
//!    parse, scope, map, serialize 21 events) on one thread: deliveries/s.
//! 2. Idle RSS: the real plugin process, configured with three repositories, an API
//!    token and a webhook secret, after it settles.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use hmac::Mac;
use integration_github::{settings::Settings, webhook};
use plugin_kit::v1;
use serde_json::{Value, json};

const SECRET: &str = "bench secret";

fn example_push() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/npm/node_modules/@octokit/webhooks-examples/api.github.com/index.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run `npm ci --prefix tests/fixtures/npm`)",
            path.display()
        )
    });
    let groups: Vec<Value> = serde_json::from_str(&text).expect("examples are JSON");
    groups
        .iter()
        .filter(|g| g["name"] == "push")
        .flat_map(|g| g["examples"].as_array().cloned().unwrap_or_default())
        .find(|p| p["commits"].as_array().is_some_and(|c| !c.is_empty()))
        .expect("a push example with commits")
}

fn request(config: Value, credentials: Vec<v1::Credential>) -> v1::ConfigureRequest {
    v1::ConfigureRequest {
        tenant: "acme".into(),
        integration: "gh".into(),
        config_json: config.to_string(),
        credentials,
    }
}

fn secret_credential() -> v1::Credential {
    v1::Credential {
        name: "webhook_secret".into(),
        kind: "webhook-secret".into(),
        secret: json!({"current": SECRET, "previous": null})
            .to_string()
            .into_bytes(),
    }
}

fn mapping(deliveries: usize) {
    let mut push = example_push();
    let template = push["commits"][0].clone();
    push["commits"] = Value::Array(
        (0..20)
            .map(|i| {
                let mut commit = template.clone();
                commit["id"] = json!(format!("{:040x}", 0xabc0 + i));
                commit
            })
            .collect(),
    );
    let full_name = push["repository"]["full_name"]
        .as_str()
        .expect("repository")
        .to_owned();
    let body = serde_json::to_vec(&push).expect("json");
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
    mac.update(&body);
    let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let settings = Settings::from_configure(&request(
        json!({"repositories": [full_name], "credentials": {"webhook_secret": "s"}}),
        vec![secret_credential()],
    ))
    .expect("settings");
    let delivery = v1::WebhookRequest {
        headers: [
            ("x-github-event", "push"),
            ("x-github-delivery", "bench"),
            ("x-hub-signature-256", signature.as_str()),
            ("content-type", "application/json"),
        ]
        .map(|(name, value)| v1::Header {
            name: name.into(),
            value: value.into(),
        })
        .to_vec(),
        body,
        host_verified: false,
    };
    let check = webhook::handle(&settings, &delivery);
    assert_eq!(check.status, 202, "{}", check.message);
    assert_eq!(check.events_json.len(), 21);
    let bytes: usize = check.events_json.iter().map(String::len).sum();
    let started = Instant::now();
    let mut events = 0;
    for _ in 0..deliveries {
        // The request is cloned as the gRPC server hands one over per call.
        let answer = webhook::handle(&settings, &delivery.clone());
        events += answer.events_json.len();
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "mapping: push with 20 commits ({} B body -> 21 events, {bytes} B): {deliveries} deliveries in {elapsed:.2} s = {:.0} deliveries/s, {:.0} events/s (one thread)",
        delivery.body.len(),
        deliveries as f64 / elapsed,
        events as f64 / elapsed
    );
}

fn idle_rss() {
    let executable = std::env::current_exe()
        .expect("own path")
        .with_file_name("integration-github");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut plugin = plugin_kit::testing::PluginUnderTest::start(&executable)
            .await
            .expect("the plugin starts");
        plugin
            .configure(
                "acme",
                "gh",
                json!({
                    "repositories": ["acme/api", "acme/web", "acme-labs/*"],
                    "credentials": {"token": "token", "webhook_secret": "webhook_secret"}
                }),
                vec![
                    v1::Credential {
                        name: "token".into(),
                        kind: "api-key".into(),
                        secret: br#""ghp_bench""#.to_vec(),
                    },
                    secret_credential(),
                ],
            )
            .await
            .expect("configure");
        assert!(plugin.health().await.expect("health"));
        // Settle, then read: an idle figure, not a test synchronization.
        tokio::time::sleep(Duration::from_secs(2)).await;
        println!(
            "idle RSS: {} KiB (configured: 3 repository patterns, token, webhook secret)",
            plugin_kit::testing::resident_kib(plugin.pid())
        );
    });
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut deliveries = 50_000;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--deliveries" => {
                deliveries = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("--deliveries N")
            }
            other => panic!("unknown argument {other}; usage: github-bench [--deliveries N]"),
        }
    }
    mapping(deliveries);
    idle_rss();
}
