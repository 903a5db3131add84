//! The conformance kit (`plugin_kit::testing::conformance`, `integrationctl plugin
//! conformance`) against the test plugin: as it is, it passes every check; broken on
//! purpose in one way, it fails exactly the check that way breaks, with a reason that
//! says what it saw.

use std::time::Duration;

use e2e_tests::{PluginPackage, bin};
use plugin_kit::testing::conformance::{Check, Options, Outcome, Package, Report, run};
use serde_json::{Value, json};

/// The test plugin with every capability the kit exercises, collecting 1,200 events
/// (three batches), its webhooks authenticated by a shared secret in `x-testfault-token`,
/// with `faults` on top.
fn testfault(name: &str, faults: &[&str]) -> PluginPackage {
    let mut args = vec!["--capabilities", "check,collect,webhook", "--emit", "1200"];
    args.extend_from_slice(faults);
    PluginPackage {
        capabilities: ["check", "collect", "webhook"].map(str::to_owned).to_vec(),
        manifest_extra:
            "[webhook]\nauthentication = \"shared-secret\"\nheader = \"x-testfault-token\"\n"
                .to_owned(),
        ..PluginPackage::testfault(name, &args)
    }
}

/// The test plugin's webhook secret (`good`, its default token), as Configure carries it.
const WEBHOOK_SECRET: &str = r#"{"current": "good"}"#;
/// A delivery the test plugin maps to one event.
const WEBHOOK_SAMPLE: &str = r#"{"id": "sample"}"#;

fn options() -> Options {
    Options {
        config: json!({"repositories": ["acme/orders"], "poll": 30}),
        credentials: vec![plugin_kit::v1::Credential {
            name: "webhook_secret".to_owned(),
            kind: "webhook-secret".to_owned(),
            secret: WEBHOOK_SECRET.as_bytes().to_vec(),
        }],
        grace: Duration::from_secs(3),
        webhook_sample: Some(WEBHOOK_SAMPLE.as_bytes().to_vec()),
        ..Options::default()
    }
}

fn check_package(package: &PluginPackage) -> Report {
    let dir = tempfile::tempdir().expect("tempdir");
    let installed = package.install(dir.path());
    let package = Package::load(&installed).expect("package");
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(run(&package, &options()))
}

#[test]
fn the_test_plugin_passes_every_check() {
    let report = check_package(&testfault("conformant", &[]));
    assert_eq!(report.findings.len(), Check::ALL.len(), "{report}");
    for finding in &report.findings {
        assert_eq!(finding.outcome, Outcome::Pass, "{report}");
    }
    let reason = |check| {
        report
            .finding(check)
            .map(|f| f.reason.clone())
            .unwrap_or_default()
    };
    assert!(
        reason(Check::CollectCanonical).starts_with("1200 event(s) in 3 batch(es)"),
        "{report}"
    );
    assert!(
        reason(Check::InvalidConfiguration).contains("`poll` = \"not a valid value\""),
        "{report}"
    );
    assert!(reason(Check::SocketMode).contains("0600"), "{report}");
}

/// Each way of breaking the contract, and the check that must catch it (alone).
#[test]
fn each_broken_plugin_fails_exactly_the_check_it_breaks() {
    let unlike_its_manifest = PluginPackage {
        name: "unlike".to_owned(),
        ..testfault("unlike", &[])
    };
    let mut unlike_its_manifest = unlike_its_manifest;
    // Describe says `testfault`: the name argument is left out.
    unlike_its_manifest.args.drain(..2);
    let cases: Vec<(PluginPackage, Check, &[&str])> = vec![
        (
            testfault("tokenless", &["--no-token-check"]),
            Check::TokenRequired,
            &["Describe with a wrong token, health with a wrong token"],
        ),
        (
            unlike_its_manifest,
            Check::DescribeMatchesManifest,
            &["Describe says name `testfault`, the manifest says `unlike`"],
        ),
        (
            testfault("noncanonical", &["--invalid-every", "7"]),
            Check::CollectCanonical,
            &[
                "171 of 1200 events are not canonical; batch 1, event 7 (id `ev_",
                "): /category: \"finance\" is not one of",
            ],
        ),
        (
            testfault("stubborn", &["--ignore-sigterm"]),
            Check::Sigterm,
            &["still running 3s after SIGTERM"],
        ),
        (
            testfault("chatty", &["--stdout-after-handshake"]),
            Check::QuietStdout,
            &["starting `testfault: hello on stdout`"],
        ),
        (
            testfault("lenient", &["--accept-any-config"]),
            Check::InvalidConfiguration,
            &["accepted `poll` = \"not a valid value\""],
        ),
        (
            testfault("forgetful", &["--ignore-cursor"]),
            Check::CollectResumes,
            &["repeated 500 event(s) it had yielded"],
        ),
        (
            testfault("credulous", &["--accept-unsigned-webhooks"]),
            Check::WebhookBadSignature,
            &["with no signature: answered 202 with 1 event(s)"],
        ),
        (
            testfault("sloppy", &["--invalid-webhook-events"]),
            Check::WebhookSigned,
            &[
                "event 0 of the signed sample is not canonical: /category: \"finance\" is not one of",
            ],
        ),
        (
            testfault("orphan", &["--ignore-host-death"]),
            Check::HostDeath,
            &["still running 3s after its host was killed"],
        ),
    ];
    for (package, check, reasons) in cases {
        let report = check_package(&package);
        let failed: Vec<Check> = report.failures().map(|f| f.check).collect();
        assert_eq!(failed, vec![check], "{}: {report}", package.name);
        let finding = report.finding(check).expect("finding");
        for reason in reasons {
            assert!(
                finding.reason.contains(reason),
                "{}: `{}` does not say `{reason}`",
                package.name,
                finding.reason
            );
        }
    }
}

/// A plugin that does not start fails the handshake, and every check that needs a
/// running plugin says it did not run.
#[test]
fn a_plugin_that_prints_no_handshake_fails_the_handshake_and_runs_nothing_after_it() {
    let report = check_package(&testfault("garbled", &["--bad-handshake"]));
    let handshake = report.finding(Check::Handshake).expect("handshake");
    assert_eq!(handshake.outcome, Outcome::Fail, "{report}");
    assert!(
        handshake
            .reason
            .contains("hello, I am not a handshake line"),
        "{report}"
    );
    let configure = report.finding(Check::Configure).expect("configure");
    assert_eq!(configure.outcome, Outcome::Skip, "{report}");
    assert_eq!(
        configure.reason, "not run: the plugin did not start (see handshake)",
        "{report}"
    );
}

/// The command: a text report and exit status 1 for a broken plugin, JSON with every
/// check for a good one.
#[test]
fn integrationctl_plugin_conformance_reports_each_check_and_fails_on_a_broken_plugin() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.json");
    std::fs::write(&config, options().config.to_string()).expect("config");
    let secret = dir.path().join("secret.json");
    std::fs::write(&secret, WEBHOOK_SECRET).expect("secret");
    let sample = dir.path().join("sample.json");
    std::fs::write(&sample, WEBHOOK_SAMPLE).expect("sample");
    let conformance = |package: &PluginPackage, json: bool| {
        let installed = package.install(dir.path());
        let mut command = std::process::Command::new(bin("integrationctl"));
        if json {
            command.args(["-o", "json"]);
        }
        command
            .args(["plugin", "conformance"])
            .arg(&installed)
            .arg("--config")
            .arg(&config)
            .arg("--credential")
            .arg(format!(
                "webhook_secret:webhook-secret:{}",
                secret.display()
            ))
            .arg("--webhook-sample")
            .arg(&sample)
            .args(["--grace", "3s"])
            .output()
            .expect("integrationctl")
    };
    let good = conformance(&testfault("conformant", &[]), true);
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    let report: Value = serde_json::from_slice(&good.stdout).expect("JSON report");
    let findings = report["findings"].as_array().expect("findings");
    assert_eq!(findings.len(), Check::ALL.len(), "{report}");
    assert!(findings.iter().all(|f| f["outcome"] == "pass"), "{report}");
    assert_eq!(findings[4]["check"], "token-required", "{report}");

    let broken = conformance(&testfault("tokenless", &["--no-token-check"]), false);
    assert_eq!(broken.status.code(), Some(1), "{broken:?}");
    let text = String::from_utf8_lossy(&broken.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("FAIL  token-required") && l.contains("wrong token")),
        "{text}"
    );
    assert!(text.contains("1 of 18 checks failed"), "{text}");
}
