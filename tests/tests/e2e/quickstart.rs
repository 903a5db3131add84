//! The quickstart configuration and its plugin packages stay runnable and in step with
//! the installable manifests.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use e2e_tests::{Daemon, bin, bin_dir, state_of, wait_for};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn without_comments_and_executable(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("executable") && !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

#[test]
fn quickstart_manifests_match_the_installable_ones() {
    for plugin in ["github", "cloudwatch", "webhook"] {
        let root = repo_root();
        let installable =
            std::fs::read_to_string(root.join(format!("plugins/{plugin}/plugin.toml")))
                .expect("read");
        let quickstart =
            std::fs::read_to_string(root.join(format!("examples/plugins/{plugin}/plugin.toml")))
                .expect("read");
        assert_eq!(
            without_comments_and_executable(&installable),
            without_comments_and_executable(&quickstart)
        );
        assert!(quickstart.contains(&format!(
            "executable = \"../../../target/release/integration-{plugin}\""
        )));
    }
}

/// A copy of the repository's quickstart layout, run from its root as the README says,
/// with the packages pointed at this build's binaries instead of target/release; once its
/// admin socket answers.
fn start_quickstart() -> (tempfile::TempDir, Daemon) {
    let root = repo_root();
    let temp = tempfile::Builder::new()
        .prefix("qs")
        .tempdir_in("/tmp")
        .expect("tempdir");
    std::fs::create_dir_all(temp.path().join("examples")).expect("dir");
    std::fs::copy(
        root.join("examples/quickstart.toml"),
        temp.path().join("examples/quickstart.toml"),
    )
    .expect("copy config");
    for plugin in ["github", "cloudwatch", "webhook"] {
        let manifest =
            std::fs::read_to_string(root.join(format!("examples/plugins/{plugin}/plugin.toml")))
                .expect("read");
        let executable = bin_dir().join(format!("integration-{plugin}"));
        let manifest = manifest.replace(
            &format!("../../../target/release/integration-{plugin}"),
            executable.to_str().expect("utf8"),
        );
        let dir = temp.path().join("examples/plugins").join(plugin);
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("plugin.toml"), manifest).expect("write");
    }
    let log = std::fs::File::create(temp.path().join("daemon.log")).expect("log");
    let child = Command::new(bin("integrationd"))
        .current_dir(temp.path())
        .args([
            "--config",
            "examples/quickstart.toml",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn");
    let daemon = Daemon {
        child: Some(child),
        socket: temp.path().join("state/admin.sock"),
        log: temp.path().join("daemon.log"),
    };
    wait_for("the admin socket", Duration::from_secs(20), || {
        daemon.ctl(&["status"]).status.success().then_some(())
    });
    (temp, daemon)
}

#[test]
fn quickstart_config_supervises_both_product_plugins_from_relative_paths() {
    let (temp, daemon) = start_quickstart();
    for plugin in ["github", "cloudwatch"] {
        let instance = daemon.wait_instance(plugin, "healthy", Duration::from_secs(30), |i| {
            state_of(i) == "healthy"
        });
        assert_eq!(instance["version"], "0.1.0");
        assert_eq!(instance["restarts"], 0, "{instance}");
    }
    assert!(
        temp.path().join("state/db").is_dir(),
        "state lives in ./state"
    );

    // The README's dashboard steps: an operator's monitoring token, then the page.
    let token =
        daemon.ctl_json(&["tokens", "create", "--scope", "monitor", "--all-tenants"])["token"]
            .as_str()
            .expect("token")
            .to_owned();
    let mut page = e2e_tests::browser::Page::launch(1280, 720);
    crate::dashboard::sign_in(&mut page, &daemon.http_addr(), &token);
    let rows = page.wait_for(
        "both plugins on the overview",
        "document.querySelectorAll('tbody tr').length === 2 && document.getElementById('view').innerText",
        Duration::from_secs(30),
    );
    let rows = rows.as_str().expect("text");
    assert!(
        rows.contains("github") && rows.contains("cloudwatch"),
        "{rows}"
    );
    page.screenshot(&e2e_tests::browser::screenshot_dir().join("dashboard-quickstart.png"));
}

/// The quickstart's sink, as JSON events.
fn sink_events(state: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(state.join("sinks/events.jsonl")).unwrap_or_default();
    text.lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

#[test]
fn the_demo_shows_an_incident_linked_to_its_deployment_and_runs_twice() {
    let (temp, daemon) = start_quickstart();
    let addr = daemon.http_addr();
    let demo = |args: &[&str]| {
        let mut all = vec!["demo", "--http", addr.as_str()];
        all.extend_from_slice(args);
        daemon.ctl_text(&all)
    };

    let shown = demo(&[]);
    for expected in [
        "push                 github     3 event(s) stored",
        "The failure: Checkout: card payments failing (error rate 12%) (critical, checkout in production)",
        "linked to deployment demo-org/checkout#90017 of production (9f1e3d5c7b9a): deployed 10 min before, same service and environment",
        "suspect commits:",
        "9f1e3d5c7b9a \"Lower the gateway timeout to 800 ms\" by Mona Lisa",
        "7a3c5e7f9b1d \"Retry card authorization on gateway timeouts\" by Mona Lisa",
        "https://github.com/demo-org/checkout/commit/9f1e3d5c7b9a1f3e5d7c9b1a3f5e7d9c1b3a5f7e",
        "incident      https://demo.pagerduty.com/incidents/Q1DEMOCHK42",
        "checkout: 1 of 1 deployment(s) followed by failures",
        "mean time to restore 8m",
        "the dashboard",
    ] {
        assert!(shown.contains(expected), "`{expected}` in:\n{shown}");
    }

    // The sink has the enriched incident, linked to the GitHub deployment with its links.
    let state = temp.path().join("state");
    let incident = wait_for(
        "the enriched incident in the sink",
        Duration::from_secs(30),
        || {
            sink_events(&state).into_iter().find(|e| {
                e["type"] == "com.betalogs.system.incident.triggered"
                    && e["data"]["enrichment_status"] == "complete"
            })
        },
    );
    assert_eq!(incident["tenant"], "demo");
    let enrichments = incident["data"]["enrichments"]
        .as_array()
        .expect("enrichments");
    let deployment = enrichments
        .iter()
        .find(|e| e["kind"] == "deployment")
        .unwrap_or_else(|| panic!("{incident:#}"));
    assert_eq!(deployment["source"]["plugin"], "github");
    assert!(
        deployment["links"]
            .as_array()
            .expect("links")
            .iter()
            .any(|l| l["rel"] == "deployment"),
        "{deployment:#}"
    );
    let suspects = enrichments
        .iter()
        .filter(|e| e["kind"] == "suspect_commit")
        .count();
    assert_eq!(suspects, 2, "{incident:#}");

    // The first run's last event, so that what follows compares the whole first run
    // (the sink writes a little after the commit the demo's answer reports).
    wait_for(
        "the incident's resolution in the sink",
        Duration::from_secs(30),
        || {
            sink_events(&state)
                .iter()
                .any(|e| e["type"] == "com.betalogs.system.incident.resolved")
                .then_some(())
        },
    );

    // Again: it succeeds, and the daemon keeps every fact once.
    let line = |e: &serde_json::Value| format!("{} {} r{}", e["id"], e["type"], e["revision"]);
    let before: Vec<String> = sink_events(&state).iter().map(line).collect();
    let again = demo(&[]);
    assert!(again.contains("already stored"), "{again}");
    assert!(again.contains("linked to deployment"), "{again}");
    let after: Vec<String> = sink_events(&state).iter().map(line).collect();
    assert_eq!(
        after.len(),
        before.len(),
        "no event twice; before:\n{}\nafter:\n{}",
        before.join("\n"),
        after.join("\n")
    );

    // Health sees both as healthy: the GitHub integration takes webhooks only, and is
    // not left "starting" for want of a collect.
    wait_for(
        "both demo integrations healthy",
        Duration::from_secs(30),
        || {
            let health = daemon.ctl_json(&["health", "--tenant", "demo"]);
            let states: Vec<String> = health["integrations"]
                .as_array()?
                .iter()
                .filter_map(|i| i["state"].as_str().map(str::to_owned))
                .collect();
            (states.len() == 2 && states.iter().all(|s| s == "healthy")).then_some(())
        },
    );

    // The dashboard with the demo tenant, for the README.
    let token = again
        .lines()
        .find_map(|line| line.split("monitoring token ").nth(1))
        .map(|rest| rest.trim_end_matches(')').to_owned())
        .expect("the monitoring token");
    let mut page = e2e_tests::browser::Page::launch(1280, 720);
    crate::dashboard::sign_in(&mut page, &addr, &token);
    let view = page.wait_for(
        "the demo integrations on the overview",
        "document.querySelectorAll('tbody tr').length === 2 && [...document.querySelectorAll('tbody tr')].every(r => r.innerText.trim().startsWith('healthy')) && document.getElementById('view').innerText",
        Duration::from_secs(30),
    );
    let view = view.as_str().expect("text");
    assert!(
        view.contains("pagerduty") && view.contains("github"),
        "{view}"
    );
    page.screenshot(&e2e_tests::browser::screenshot_dir().join("dashboard-demo.png"));
    page.eval("document.querySelector('nav a[data-view=deployments]').click()");
    page.wait_for(
        "the demo deployment with its failure",
        "location.pathname === '/ui/deployments' && document.querySelectorAll('tbody tr').length === 1",
        Duration::from_secs(30),
    );
    let shown = page.eval("document.getElementById('view').innerText");
    let shown = shown.as_str().expect("text");
    assert!(
        shown.contains("checkout") && shown.contains("100%"),
        "the change-failure view: {shown}"
    );
    page.screenshot(&e2e_tests::browser::screenshot_dir().join("dashboard-demo-deployments.png"));

    // A long-running command in a pipe: its outcome on stdout, no progress line.
    let rebuilt = daemon.ctl(&["index", "rebuild", "--tenant", "demo"]);
    assert!(rebuilt.status.success());
    assert!(
        rebuilt.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&rebuilt.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&rebuilt.stdout).expect("JSON");
    assert!(
        summary["events"].as_u64().is_some_and(|n| n > 0),
        "{summary}"
    );

    let cleaned = demo(&["--clean"]);
    assert!(cleaned.contains("deleted tenant demo"), "{cleaned}");
    let listed = daemon.ctl_json(&["tenants", "list"]);
    assert!(
        !listed.to_string().contains("\"demo\""),
        "the demo tenant is gone: {listed}"
    );
    assert!(demo(&["--clean"]).contains("nothing to clean"));
}
