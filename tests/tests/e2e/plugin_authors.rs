//! Plugin authors' path end to end: the template plugin (`templates/plugin`), installed
//! as a package from its own manifest and added as a tenant's integration, takes a signed
//! webhook; its canonical event lands in the sink. A forged delivery stores nothing.

use std::time::Duration;

use e2e_tests::{DaemonSetup, PluginPackage, World, bin, http, wait_for};
use plugin_kit::signature::sign_sha256;
use serde_json::{Value, json};

const SECRET: &str = "the jobs service's webhook secret";

#[test]
fn the_template_plugin_takes_a_signed_webhook_into_the_sink_under_the_daemon() {
    let world = World::new();
    let manifest = include_str!("../../../templates/plugin/plugin.toml");
    let package = PluginPackage {
        capabilities: vec!["check".into(), "collect".into(), "webhook".into()],
        manifest_extra: manifest[manifest.find("[webhook]").expect("[webhook]")..].to_owned(),
        ..PluginPackage {
            dir: "example".into(),
            name: "example".into(),
            executable: bin("integration-example"),
            args: Vec::new(),
            ..PluginPackage::testfault("example", &[])
        }
    };
    world.install(&package);
    let daemon =
        world.start(&DaemonSetup::default().with_master_key(&world.root.path().join("master.key")));
    daemon.ctl_json(&["tenants", "create", "acme"]);
    daemon.set_credential("acme", "jobs-hook", "webhook-secret", SECRET.as_bytes());
    daemon.add_integration(
        &world,
        "acme",
        "jobs",
        "example",
        &json!({"service": "billing", "credentials": {"webhook_secret": "jobs-hook"}}),
    );
    daemon.wait_instance("jobs", "healthy", Duration::from_secs(30), |i| {
        e2e_tests::state_of(i) == "healthy"
    });
    let addr = daemon.http_addr();
    let body = json!({"id": "r-42", "time": "2026-12-01T10:00:00Z", "status": "failed",
                      "message": "nightly export failed", "job": "export"})
    .to_string();
    let forged = http::post_json(
        &addr,
        "/v1/webhooks/acme/jobs",
        &[(
            "x-signature-256",
            &sign_sha256(b"not the secret", body.as_bytes()),
        )],
        &body,
    )
    .expect("post");
    assert_eq!(forged.status, 401, "{}", forged.body);
    let accepted = http::post_json(
        &addr,
        "/v1/webhooks/acme/jobs",
        &[(
            "x-signature-256",
            &sign_sha256(SECRET.as_bytes(), body.as_bytes()),
        )],
        &body,
    )
    .expect("post");
    assert_eq!(accepted.status, 202, "{}", accepted.body);
    assert_eq!(accepted.json()["events"], 1, "{}", accepted.body);
    let event = wait_for("the event in the sink", Duration::from_secs(30), || {
        world
            .sink_lines()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|e| e["type"] == "com.betalogs.system.error")
    });
    assert_eq!(event["tenant"], "acme");
    assert_eq!(event["integration"], "jobs");
    assert_eq!(event["subject"], "export");
    assert_eq!(event["data"]["service.name"], "billing");
    assert_eq!(
        world.sink_lines().len(),
        1,
        "the forged delivery stored nothing"
    );
}

/// The author's whole path with the CLI: `plugin new` → `cargo test` → `plugin package`
/// → install → `plugins trust --sha256` → `integrations add` → a signed webhook → the
/// event in the sink. The new crate builds outside this workspace, with its own target
/// directory under this one's (`target/plugin-author`), kept between runs.
#[test]
fn plugin_new_to_an_event_in_the_sink_with_the_cli() {
    let scratch = tempfile::tempdir().expect("scratch");
    let crate_dir = scratch.path().join("integration-jobs");
    let ctl = bin("integrationctl");
    let new = std::process::Command::new(&ctl)
        .args(["plugin", "new", "jobs", "--dir"])
        .arg(&crate_dir)
        .output()
        .expect("plugin new");
    assert!(
        new.status.success(),
        "{}",
        String::from_utf8_lossy(&new.stderr)
    );
    let target = e2e_tests::bin_dir()
        .parent()
        .expect("target dir")
        .join("plugin-author");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    // At the lowest priority: the other end-to-end tests run meanwhile, some of them
    // timing what the daemon does.
    let tested = std::process::Command::new("nice")
        .args(["-n", "19"])
        .arg(&cargo)
        .args(["test", "--offline", "--manifest-path"])
        .arg(crate_dir.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .expect("cargo test");
    assert!(
        tested.status.success(),
        "the generated crate's tests: {}",
        String::from_utf8_lossy(&tested.stderr)
    );
    let out = scratch.path().join("plugins/jobs");
    let packaged = std::process::Command::new("nice")
        .args(["-n", "19"])
        .arg(&ctl)
        .args(["-o", "json", "plugin", "package", "--debug", "--out"])
        .arg(&out)
        .arg(&crate_dir)
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .expect("plugin package");
    assert!(
        packaged.status.success(),
        "{}",
        String::from_utf8_lossy(&packaged.stderr)
    );
    let packaged: Value = serde_json::from_slice(&packaged.stdout).expect("json");
    let sha256 = packaged["sha256"].as_str().expect("sha256").to_owned();

    let world = World::new();
    let installed = world.plugin_dir().join("jobs");
    std::fs::create_dir_all(&installed).expect("plugin dir");
    for file in ["plugin.toml", "integration-jobs"] {
        std::fs::copy(out.join(file), installed.join(file)).expect("install");
    }
    let daemon =
        world.start(&DaemonSetup::default().with_master_key(&world.root.path().join("master.key")));
    let trusted = daemon.ctl(&["plugins", "trust", "jobs", "--sha256", &sha256]);
    assert!(
        trusted.status.success(),
        "{}",
        String::from_utf8_lossy(&trusted.stderr)
    );
    daemon.ctl_json(&["tenants", "create", "acme"]);
    daemon.set_credential("acme", "jobs-hook", "webhook-secret", SECRET.as_bytes());
    daemon.add_integration(
        &world,
        "acme",
        "nightly",
        "jobs",
        &json!({"service": "billing", "credentials": {"webhook_secret": "jobs-hook"}}),
    );
    daemon.wait_instance("nightly", "healthy", Duration::from_secs(30), |i| {
        e2e_tests::state_of(i) == "healthy"
    });
    let body = json!({"id": "n-1", "time": "2026-12-01T02:00:00Z", "status": "ok"}).to_string();
    let answer = http::post_json(
        &daemon.http_addr(),
        "/v1/webhooks/acme/nightly",
        &[(
            "x-signature-256",
            &sign_sha256(SECRET.as_bytes(), body.as_bytes()),
        )],
        &body,
    )
    .expect("post");
    assert_eq!(answer.status, 202, "{}", answer.body);
    let event = wait_for("the event in the sink", Duration::from_secs(30), || {
        world
            .sink_lines()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|e| e["integration"] == "nightly")
    });
    assert_eq!(event["type"], "com.betalogs.system.log");
}
