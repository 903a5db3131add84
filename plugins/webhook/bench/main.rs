//! `webhook-plugin-bench [--deliveries N]`: verifying and mapping a GitLab push through the
//! `gitlab` preset on one thread — GitLab's documented push example with 20 commits (its
//! commit, twenty times with distinct SHAs: about 11 KB of compact JSON, as GitLab sends
//! it), authenticated with its token, parsed, and mapped to 21 canonical events (the push
//! and each commit), as the plugin's gRPC handler does per delivery. Run it beside
//! `github-bench` for the ratio.

use std::time::Instant;

use integration_webhook::Integration;
use integration_webhook::config::Settings;
use plugin_kit::signature::WebhookSecrets;
use plugin_kit::{MapContext, v1};
use serde_json::{Value, json};

/// The plugin binary's allocator, so that the figures are the plugin's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const TOKEN: &str = "a GitLab secret token";

fn push_with_20_commits() -> Vec<u8> {
    let text = include_str!("../tests/fixtures/gitlab/push.json");
    let mut push: Value = serde_json::from_str(text).expect("GitLab's push example");
    let commit = push["commits"][0].clone();
    push["commits"] = Value::Array(
        (0..20)
            .map(|i| {
                let mut commit = commit.clone();
                let id = format!("{:040x}", 0xabc0 + i);
                commit["url"] = json!(format!("http://example.com/mike/diaspora/commit/{id}"));
                commit["id"] = json!(id);
                commit
            })
            .collect(),
    );
    push["total_commits_count"] = json!(20);
    // Compact, as GitLab sends it (`to_json`).
    serde_json::to_vec(&push).expect("JSON")
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut deliveries = 20_000;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--deliveries" => {
                deliveries = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("--deliveries N");
            }
            other => panic!("unknown argument {other}"),
        }
    }
    let settings: Settings = serde_json::from_value(json!({"preset": "gitlab"})).expect("settings");
    let integration = Integration::new(
        MapContext {
            tenant: "acme".into(),
            integration: "gitlab".into(),
        },
        settings,
        WebhookSecrets {
            current: TOKEN.to_owned().into(),
            previous: None,
        },
    )
    .expect("the gitlab preset compiles");
    let body = push_with_20_commits();
    let delivery = v1::WebhookRequest {
        headers: [
            ("x-gitlab-event", "Push Hook"),
            (
                "x-gitlab-event-uuid",
                "4b6a8a53-5ac7-4a2e-9d2f-0d3c1b1c2e11",
            ),
            ("x-gitlab-token", TOKEN),
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
    let received = "2026-12-01T10:00:00Z";
    let check = integration.answer(&delivery, received);
    assert_eq!(check.status, 202, "{}", check.message);
    assert_eq!(check.events_json.len(), 21);
    let bytes: usize = check.events_json.iter().map(String::len).sum();
    let started = Instant::now();
    let mut events = 0;
    for _ in 0..deliveries {
        // The request is cloned as the gRPC server hands one over per call.
        let answer = integration.answer(&delivery.clone(), received);
        events += answer.events_json.len();
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "mapping: GitLab push with 20 commits ({} B body -> 21 events, {bytes} B): {deliveries} deliveries in {elapsed:.2} s = {:.0} deliveries/s, {:.0} events/s (one thread)",
        delivery.body.len(),
        deliveries as f64 / elapsed,
        events as f64 / elapsed
    );
}
