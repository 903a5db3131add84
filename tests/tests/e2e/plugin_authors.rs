//! Plugin authors' path end to end: the template plugin (`templates/plugin`), installed
//! as a package from its own manifest and added as a tenant's integration, takes a signed
//! webhook; its canonical event lands in the sink. A forged delivery stores nothing.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use e2e_tests::{Daemon, DaemonSetup, World, bin, http, state_of, wait_for};
use plugin_kit::signature::sign_sha256;
use serde_json::{Value, json};

const SECRET: &str = "the jobs service's webhook secret";

/// Installs a package as `plugin package` lays it out: the manifest beside the
/// executable, in `plugin_dir/name/`.
fn install(world: &World, name: &str, manifest: &Path, executable: &Path) {
    let dir = world.plugin_dir().join(name);
    std::fs::create_dir_all(&dir).expect("plugin dir");
    std::fs::copy(manifest, dir.join("plugin.toml")).expect("manifest");
    let file = executable.file_name().expect("executable name");
    std::fs::copy(executable, dir.join(file)).expect("executable");
}

/// The template plugin, from its own manifest and the workspace's build, as `example`.
fn install_template(world: &World) {
    let template = Path::new(env!("CARGO_MANIFEST_DIR")).join("../templates/plugin");
    install(
        world,
        "example",
        &template.join("plugin.toml"),
        &bin("integration-example"),
    );
}

/// A daemon where tenant acme's `integration` of `plugin` runs, with its webhook secret.
fn running(world: &World, plugin: &str, integration: &str, trust_sha256: Option<&str>) -> Daemon {
    let daemon =
        world.start(&DaemonSetup::default().with_master_key(&world.root.path().join("master.key")));
    if let Some(sha256) = trust_sha256 {
        succeeded(
            "plugins trust",
            &daemon.ctl(&["plugins", "trust", plugin, "--sha256", sha256]),
        );
    }
    daemon.ctl_json(&["tenants", "create", "acme"]);
    daemon.set_credential("acme", "jobs-hook", "webhook-secret", SECRET.as_bytes());
    daemon.add_integration(
        world,
        "acme",
        integration,
        plugin,
        &json!({"service": "billing", "credentials": {"webhook_secret": "jobs-hook"}}),
    );
    daemon.wait_instance(integration, "healthy", Duration::from_secs(30), |i| {
        state_of(i) == "healthy"
    });
    daemon
}

/// Posts `body` to acme's `integration`, signed with `secret`.
fn post_signed(
    daemon: &Daemon,
    integration: &str,
    body: &str,
    secret: &[u8],
) -> http::HttpResponse {
    http::post_json(
        &daemon.http_addr(),
        &format!("/v1/webhooks/acme/{integration}"),
        &[("x-signature-256", &sign_sha256(secret, body.as_bytes()))],
        body,
    )
    .expect("post")
}

/// The first event of `integration` in the sink.
fn sink_event(world: &World, integration: &str) -> Value {
    wait_for("the event in the sink", Duration::from_secs(30), || {
        world
            .sink_lines()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|e| e["integration"] == integration)
    })
}

/// Posts `body` forged, then signed, to acme's `integration`: the forged one is refused
/// (401), the signed one accepted with one event; returns that event from the sink and
/// checks it is the only line there, so the forged delivery stored nothing.
fn forged_refused_signed_stored(
    daemon: &Daemon,
    world: &World,
    integration: &str,
    body: &str,
) -> Value {
    let forged = post_signed(daemon, integration, body, b"not the secret");
    assert_eq!(forged.status, 401, "{}", forged.body);
    let accepted = post_signed(daemon, integration, body, SECRET.as_bytes());
    assert_eq!(accepted.status, 202, "{}", accepted.body);
    assert_eq!(accepted.json()["events"], 1, "{}", accepted.body);
    let event = sink_event(world, integration);
    assert_eq!(
        world.sink_lines().len(),
        1,
        "the forged delivery stored nothing"
    );
    event
}

/// A delivery in the jobs service's format (the template's and the Python plugin's), for
/// the kit to sign: it must come out as a canonical event (`webhook-signed`).
const SAMPLE: &str = r#"{"id": "s-1", "time": "2026-12-01T09:00:00Z", "status": "failed", "message": "export failed", "job": "export"}"#;

/// Runs `integrationctl plugin conformance` on `package` with `config`, the webhook
/// secret and a sample delivery; asserts every check passed (or does not apply), the
/// signed sample among them, and returns the report.
fn passes_conformance(package: &Path, config: &Value, scratch: &Path) -> String {
    let config_file = scratch.join("config.json");
    std::fs::write(&config_file, config.to_string()).expect("config");
    let sample = scratch.join("sample.json");
    std::fs::write(&sample, SAMPLE).expect("sample");
    let secret = scratch.join("secret.json");
    std::fs::write(&secret, json!({ "current": SECRET }).to_string()).expect("secret");
    let conformance = Command::new(bin("integrationctl"))
        .args(["plugin", "conformance"])
        .arg(package)
        .arg("--config")
        .arg(&config_file)
        .arg("--credential")
        .arg(format!(
            "webhook_secret:webhook-secret:{}",
            secret.display()
        ))
        .arg("--webhook-sample")
        .arg(&sample)
        .output()
        .expect("plugin conformance");
    let report = String::from_utf8_lossy(&conformance.stdout).into_owned();
    assert!(conformance.status.success(), "{report}");
    assert!(report.ends_with("all checks passed\n"), "{report}");
    assert!(
        report.contains("PASS  webhook-signed")
            && report.contains("with 1 event(s), all canonical"),
        "{report}"
    );
    report
}

/// What a stand-in reports service answers: `body`, to requests bearing `token` if one
/// is set (401 to the others). Changed while it runs, to stand for a rotated token.
#[derive(Default)]
struct Reports {
    body: String,
    token: Option<String>,
}

/// Serves `reports` as JSON on loopback, from a thread; returns its URL.
fn reports_service(reports: std::sync::Arc<std::sync::Mutex<Reports>>) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut request = [0_u8; 4096];
            let read = stream.read(&mut request).unwrap_or(0);
            let head = String::from_utf8_lossy(&request[..read]).to_lowercase();
            let (status, body) = {
                let reports = reports.lock().expect("reports");
                let allowed = reports.token.as_ref().is_none_or(|token| {
                    head.contains(&format!("authorization: bearer {}", token.to_lowercase()))
                });
                if allowed {
                    ("200 OK", reports.body.clone())
                } else {
                    ("401 Unauthorized", "[]".to_owned())
                }
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    format!("http://{addr}/reports")
}

/// Serves `body` as JSON to every request on loopback; returns its URL.
fn reports_server(body: String) -> String {
    reports_service(std::sync::Arc::new(std::sync::Mutex::new(Reports {
        body,
        token: None,
    })))
}

fn succeeded(what: &str, output: &Output) {
    assert!(
        output.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_template_plugin_takes_a_signed_webhook_into_the_sink_under_the_daemon() {
    let world = World::new();
    install_template(&world);
    let daemon = running(&world, "example", "jobs", None);
    let body = json!({"id": "r-42", "time": "2026-12-01T10:00:00Z", "status": "failed",
                      "message": "nightly export failed", "job": "export"})
    .to_string();
    let event = forged_refused_signed_stored(&daemon, &world, "jobs", &body);
    assert_eq!(event["type"], "com.betalogs.system.error");
    assert_eq!(event["tenant"], "acme");
    assert_eq!(event["subject"], "export");
    assert_eq!(event["data"]["service.name"], "billing");
}

/// The author's whole path with the CLI: `plugin new` → `cargo test` → `plugin package`
/// → `plugin conformance` → install → `plugins trust --sha256` → `integrations add` → a signed webhook → the
/// event in the sink. The new crate builds outside this workspace, with its own target
/// directory under this one's (`target/plugin-author`), kept between runs.
#[test]
fn plugin_new_to_an_event_in_the_sink_with_the_cli() {
    let scratch = tempfile::tempdir().expect("scratch");
    let crate_dir = scratch.path().join("integration-jobs");
    let ctl = bin("integrationctl");
    succeeded(
        "plugin new",
        &Command::new(&ctl)
            .args(["plugin", "new", "jobs", "--dir"])
            .arg(&crate_dir)
            .output()
            .expect("plugin new"),
    );
    let target = e2e_tests::bin_dir()
        .parent()
        .expect("target dir")
        .join("plugin-author");
    // At the lowest priority: the other end-to-end tests run meanwhile, some of them
    // timing what the daemon does.
    let niced = |program: &std::ffi::OsStr| {
        let mut command = Command::new("nice");
        command
            .args(["-n", "19"])
            .arg(program)
            .env("CARGO_TARGET_DIR", &target);
        command
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    succeeded(
        "the generated crate's tests",
        &niced(&cargo)
            .args(["test", "--offline", "--manifest-path"])
            .arg(crate_dir.join("Cargo.toml"))
            .output()
            .expect("cargo test"),
    );
    let out = scratch.path().join("package/jobs");
    let packaged = niced(ctl.as_os_str())
        .args(["-o", "json", "plugin", "package", "--debug", "--out"])
        .arg(&out)
        .arg(&crate_dir)
        .output()
        .expect("plugin package");
    succeeded("plugin package", &packaged);
    let packaged: Value = serde_json::from_slice(&packaged.stdout).expect("json");
    let sha256 = packaged["sha256"].as_str().expect("sha256");

    // The package passes the conformance kit, collecting from a reports service.
    let reports = reports_server(
        json!([
            {"id": "r-1", "time": "2026-12-01T01:00:00Z", "status": "ok"},
            {"id": "r-2", "time": "2026-12-01T01:05:00Z", "status": "failed", "job": "export"}
        ])
        .to_string(),
    );
    let report = passes_conformance(
        &out,
        &json!({"service": "billing", "reports_url": reports, "credentials": {"webhook_secret": "jobs-hook"}}),
        scratch.path(),
    );
    assert!(
        report.contains("collect-canonical          2 event(s) in 1 batch(es), all canonical"),
        "{report}"
    );
    assert!(
        report.contains("401 to no signature, 401 to a wrong signature"),
        "{report}"
    );

    let world = World::new();
    install(
        &world,
        "jobs",
        &out.join("plugin.toml"),
        &out.join("integration-jobs"),
    );
    let daemon = running(&world, "jobs", "nightly", Some(sha256));
    let body = json!({"id": "n-1", "time": "2026-12-01T02:00:00Z", "status": "ok"}).to_string();
    let answer = post_signed(&daemon, "nightly", &body, SECRET.as_bytes());
    assert_eq!(answer.status, 202, "{}", answer.body);
    assert_eq!(
        sink_event(&world, "nightly")["type"],
        "com.betalogs.system.log"
    );
}

/// A plugin in another language: `examples/python-plugin` (grpcio, stubs generated from
/// plugin.proto as it is packaged) passes the conformance kit, then runs under the daemon
/// from its package (a zip executable with a `#!` line, run from the daemon's sealed
/// copy): a signed webhook becomes a canonical event in the sink, a forged one nothing.
#[test]
fn a_plugin_in_python_passes_the_conformance_kit_and_runs_under_the_daemon() {
    let scratch = tempfile::tempdir().expect("scratch");
    let out = scratch.path().join("package/pyjobs");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/python-plugin");
    let packaged = Command::new("python3")
        .arg(example.join("package.py"))
        .arg("--out")
        .arg(&out)
        .output()
        .expect("package.py");
    succeeded("package.py", &packaged);
    let sha256 = String::from_utf8_lossy(&packaged.stdout).trim().to_owned();
    assert_eq!(sha256.len(), 64, "{sha256}");

    let report = passes_conformance(
        &out,
        &json!({"service": "billing", "credentials": {"webhook_secret": "jobs-hook"}}),
        scratch.path(),
    );
    for check in [
        "token-required",
        "host-process-only",
        "host-death",
        "quiet-stdout",
    ] {
        assert!(report.contains(&format!("PASS  {check}")), "{report}");
    }

    let world = World::new();
    install(
        &world,
        "pyjobs",
        &out.join("plugin.toml"),
        &out.join("pyjobs.pyz"),
    );
    let daemon = running(&world, "pyjobs", "py", Some(&sha256));
    let body = json!({"id": "p-7", "time": "2026-12-01T03:00:00Z", "status": "failed",
                      "message": "backup failed", "job": "backup"})
    .to_string();
    let event = forged_refused_signed_stored(&daemon, &world, "py", &body);
    assert_eq!(event["type"], "com.betalogs.system.error");
    assert_eq!(event["tenant"], "acme");
    assert_eq!(event["subject"], "backup");
    assert_eq!(event["data"]["service.name"], "billing");
    assert_eq!(event["data"]["log.message"], "backup failed");
    assert_eq!(event["data"]["original"]["job"], "backup");
}

/// A credential kind the template declares in its manifest (`example/reports-token`, with
/// a JSON Schema): a secret that does not match is refused without being echoed and
/// stores nothing; a matching one reaches the plugin in Configure (its Collect sends it
/// to the reports service, and the report lands in the sink); a rotation reconfigures the
/// integration with the new token.
#[test]
fn a_plugin_declared_credential_kind_is_checked_used_in_configure_and_rotated() {
    let world = World::new();
    install_template(&world);
    let daemon = world.start(
        &DaemonSetup::default()
            .with_master_key(&world.root.path().join("master.key"))
            .process("collect_interval = \"300ms\""),
    );
    daemon.ctl_json(&["tenants", "create", "acme"]);
    daemon.set_credential("acme", "jobs-hook", "webhook-secret", SECRET.as_bytes());
    let kind = "example/reports-token";
    let set = |verb: &str, secret: &str| {
        daemon.ctl_stdin(
            None,
            &[
                "credentials",
                verb,
                "--tenant",
                "acme",
                "reports",
                "--kind",
                kind,
            ],
            secret.as_bytes(),
        )
    };

    let refused = set("set", r#"{"token": "short-secret"}"#);
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(
        message.contains(
            "the example/reports-token secret at `/token` breaks the schema's `minLength` rule"
        ),
        "{message}"
    );
    assert!(!message.contains("short-secret"), "echoed: {message}");
    let unknown = set("set", r#"{"token": "a-long-enough-token-1", "user": "x"}"#);
    let message = String::from_utf8_lossy(&unknown.stderr);
    assert!(message.contains("unknown field `user`"), "{message}");
    let listed = daemon.ctl_json(&["credentials", "list", "--tenant", "acme"]);
    assert!(
        !listed.to_string().contains("\"reports\""),
        "a refused secret stored nothing: {listed}"
    );

    let first = "first-reports-token-0001";
    succeeded("set", &set("set", &json!({ "token": first }).to_string()));
    let reports = std::sync::Arc::new(std::sync::Mutex::new(Reports {
        body: json!([{"id": "r-1", "time": "2026-12-01T01:00:00Z", "status": "failed", "job": "export"}])
            .to_string(),
        token: Some(first.to_owned()),
    }));
    let url = reports_service(reports.clone());
    daemon.add_integration(
        &world,
        "acme",
        "jobs",
        "example",
        &json!({"service": "billing", "reports_url": url,
                "credentials": {"webhook_secret": "jobs-hook", "reports_token": "reports"}}),
    );
    let collected = |id: &str| {
        let id = id.to_owned();
        wait_for(
            &format!("report {id} in the sink"),
            Duration::from_secs(30),
            || {
                world
                    .sink_lines()
                    .iter()
                    .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                    .find(|e| e["data"]["original"]["id"] == id.as_str())
            },
        )
    };
    assert_eq!(collected("r-1")["type"], "com.betalogs.system.error");

    // The service now takes only the new token, which the tenant rotates in.
    let second = "second-reports-token-0002";
    *reports.lock().expect("reports") = Reports {
        body: json!([
            {"id": "r-1", "time": "2026-12-01T01:00:00Z", "status": "failed", "job": "export"},
            {"id": "r-2", "time": "2026-12-01T01:05:00Z", "status": "ok", "job": "export"}
        ])
        .to_string(),
        token: Some(second.to_owned()),
    };
    succeeded(
        "rotate",
        &set("rotate", &json!({ "token": second }).to_string()),
    );
    assert_eq!(collected("r-2")["type"], "com.betalogs.system.log");
    let info = daemon.ctl_json(&["credentials", "list", "--tenant", "acme"]);
    let reports_info = info
        .as_array()
        .and_then(|list| list.iter().find(|c| c["name"] == "reports"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(reports_info["kind"], kind, "{info}");
    daemon.wait_instance("jobs", "healthy", Duration::from_secs(30), |i| {
        state_of(i) == "healthy"
    });
}
