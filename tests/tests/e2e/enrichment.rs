//! Enrichment through the real daemon and the GitHub plugin: deployments and pushes
//! arrive as signed GitHub webhooks (public example payloads), failures as platform
//! events; the failure in the JSONL sink names the deployment before it, with its URL
//! and suspect commits; another tenant's identical deployment is never linked; a
//! deployment arriving after the failure revises it; with the GitHub plugin killed,
//! failures still flow at once, marked partial; suspect commits the index lacks come
//! from the GitHub plugin's `Enrich` (against the fixture API) as a revision;
//! `integrationctl deployments`, `enrich` and `index rebuild` report on it.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::github_api;
use e2e_tests::webhook_examples;

use e2e_tests::http;
use e2e_tests::{
    Daemon, DaemonSetup, PluginPackage, World, github_signature, pid_of, state_of, wait_for,
};
use plugin_kit::{Category, EventBuilder, MapContext, Severity};
use serde_json::{Value, json};

const SECRET: &str = "an enrichment webhook secret";
const LONG: Duration = Duration::from_secs(30);
pub(crate) const MINUTE: u64 = 60_000;

fn github() -> PluginPackage {
    PluginPackage::real("github")
}

fn example(name: &str, keep: impl Fn(&Value) -> bool) -> Value {
    webhook_examples()
        .into_iter()
        .find(|(event, payload)| event == name && keep(payload))
        .map(|(_, payload)| payload)
        .expect("an example")
}

pub(crate) fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// The public `deployment` example, as deployment `id` of `sha` to `environment` at `at`.
pub(crate) fn deployment(id: u64, sha: &str, environment: &str, at: u64) -> Value {
    let mut payload = example("deployment", |e| {
        e["deployment"]["environment"] == "production"
    });
    payload["deployment"]["id"] = json!(id);
    payload["deployment"]["sha"] = json!(sha);
    payload["deployment"]["environment"] = json!(environment);
    payload["deployment"]["created_at"] = json!(rfc3339(at));
    payload["deployment"]["updated_at"] = json!(rfc3339(at));
    payload
}

/// The public `push` example, to the default branch, with commits at the given times.
pub(crate) fn push(commits: &[(&str, u64)]) -> Value {
    let mut payload = example("push", |e| {
        e["commits"].as_array().is_some_and(|c| !c.is_empty())
    });
    let template = payload["commits"][0].clone();
    let branch = payload["repository"]["default_branch"]
        .as_str()
        .unwrap_or("main")
        .to_owned();
    payload["ref"] = json!(format!("refs/heads/{branch}"));
    payload["commits"] = Value::Array(
        commits
            .iter()
            .map(|(sha, at)| {
                let mut commit = template.clone();
                commit["id"] = json!(sha);
                commit["timestamp"] = json!(rfc3339(*at));
                commit["message"] = json!(format!("change {sha}"));
                commit
            })
            .collect(),
    );
    payload["after"] = json!(commits.last().map(|(sha, _)| *sha).unwrap_or_default());
    payload["head_commit"] = payload["commits"][commits.len() - 1].clone();
    payload
}

fn failure_event(tenant: &str, name: &str, environment: &str, at: u64) -> Value {
    let context = MapContext {
        tenant: tenant.into(),
        integration: "platform".into(),
    };
    serde_json::to_value(
        EventBuilder::new(
            "com.betalogs.system.error",
            Category::System,
            "https://checkout.example.com",
            format!("failure-{name}"),
            rfc3339(at),
        )
        .severity(Severity::Error)
        .field("service.name", "Hello-World")
        .field("deployment.environment", environment.to_owned())
        .field("error.message", name.to_owned())
        .build(&context),
    )
    .expect("json")
}

pub(crate) struct Setup {
    pub(crate) world: World,
    pub(crate) daemon: Daemon,
    ingest: Vec<(String, String)>,
}

/// The daemon configuration of these tests, for `world`.
fn daemon_setup(world: &World) -> DaemonSetup {
    DaemonSetup::default()
        .with_master_key(&world.root.path().join("master.key"))
        // A killed plugin stays down long enough to be seen down.
        .process("restart_initial_delay = \"20s\"")
        .process("restart_max_delay = \"20s\"")
}

impl Setup {
    fn start() -> Self {
        Self::start_with("")
    }

    /// Two tenants (`acme`, `other`) with a GitHub integration each, and `extra`
    /// daemon configuration.
    pub(crate) fn start_with(extra: &str) -> Self {
        let world = World::new();
        world.install(&github());
        let daemon = world.start(&daemon_setup(&world).extra(extra));
        let mut ingest = Vec::new();
        for tenant in ["acme", "other"] {
            daemon.ctl_json(&["tenants", "create", tenant]);
            daemon.set_credential(tenant, "hook", "webhook-secret", SECRET.as_bytes());
            daemon.add_integration(
                &world,
                tenant,
                "gh",
                "github",
                &json!({"repositories": ["Codertocat/Hello-World"], "credentials": {"webhook_secret": "hook"}}),
            );
            let token = daemon
                .ctl_json(&["tokens", "create", "--tenant", tenant, "--scope", "ingest"])["token"]
                .as_str()
                .expect("token")
                .to_owned();
            ingest.push((tenant.to_owned(), token));
        }
        wait_for("both integrations healthy", LONG, || {
            (daemon
                .instances()
                .iter()
                .filter(|i| i["integration"] == "gh" && state_of(i) == "healthy")
                .count()
                == 2)
                .then_some(())
        });
        Self {
            world,
            daemon,
            ingest,
        }
    }

    pub(crate) fn webhook(&self, tenant: &str, event: &str, delivery: &str, payload: &Value) {
        let body = payload.to_string();
        let signature = github_signature(SECRET, body.as_bytes());
        let answer = http::post_json(
            &self.daemon.http_addr(),
            &format!("/v1/webhooks/{tenant}/gh"),
            &[
                ("x-github-event", event),
                ("x-github-delivery", delivery),
                ("x-hub-signature-256", &signature),
            ],
            &body,
        )
        .expect("the daemon answers");
        assert_eq!(answer.status, 202, "{}", answer.body);
    }

    fn post_failure(&self, event: &Value) {
        self.post_events(event["tenant"].as_str().expect("tenant"), event);
    }

    /// Posts platform events of `tenant`: one (an object) or many (an array).
    fn post_events(&self, tenant: &str, events: &Value) {
        let token = &self
            .ingest
            .iter()
            .find(|(t, _)| t == tenant)
            .expect("token")
            .1;
        post_events(&self.daemon, token, tenant, events);
    }

    fn wait_versions(&self, tenant: &str, name: &str, count: usize) -> Vec<Value> {
        wait_versions(&self.world, tenant, name, count)
    }
}

/// Posts platform events of `tenant` with its ingest `token`; they must be accepted.
fn post_events(daemon: &Daemon, token: &str, tenant: &str, events: &Value) {
    let answer = http::post_json(
        &daemon.http_addr(),
        &format!("/v1/events/{tenant}"),
        &[("Authorization", &format!("Bearer {token}"))],
        &events.to_string(),
    )
    .expect("the daemon answers");
    assert_eq!(answer.status, 202, "{}", answer.body);
}

/// The stored versions of failure `name` of `tenant` in `world`'s sink, in order, once
/// there are at least `count`.
pub(crate) fn wait_versions(world: &World, tenant: &str, name: &str, count: usize) -> Vec<Value> {
    wait_for(&format!("{count} version(s) of {name}"), LONG, || {
        let versions: Vec<Value> = world
            .sink_lines()
            .iter()
            .map(|l| serde_json::from_str::<Value>(l).expect("JSON"))
            .filter(|e| e["tenant"] == tenant && e["data"]["error.message"] == name)
            .collect();
        (versions.len() >= count).then_some(versions)
    })
}

pub(crate) fn enrichments<'a>(event: &'a Value, kind: &str) -> Vec<&'a Value> {
    event["data"]["enrichments"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["kind"] == kind)
        .collect()
}

#[test]
fn failures_are_linked_to_the_deployments_before_them_through_the_daemon() {
    let setup = Setup::start();
    let t0: u64 = 1_796_000_000_000;
    let sha = "1111111111111111111111111111111111111111";

    // Commits pushed to the default branch, then a deployment of the last one, in acme;
    // the identical deployment in the other tenant.
    setup.webhook(
        "acme",
        "push",
        "d-push",
        &push(&[
            ("0000000000000000000000000000000000000001", t0 - 30 * MINUTE),
            (sha, t0 - 20 * MINUTE),
        ]),
    );
    setup.webhook(
        "acme",
        "deployment",
        "d-1",
        &deployment(101, sha, "production", t0),
    );
    setup.webhook(
        "other",
        "deployment",
        "d-1",
        &deployment(101, sha, "production", t0),
    );

    // A failure ten minutes later, and the same failure in staging.
    setup.post_failure(&failure_event(
        "acme",
        "ten-minutes-later",
        "production",
        t0 + 10 * MINUTE,
    ));
    setup.post_failure(&failure_event(
        "acme",
        "in-staging",
        "staging",
        t0 + 10 * MINUTE,
    ));
    let failure = setup
        .wait_versions("acme", "ten-minutes-later", 1)
        .remove(0);
    let deployments = enrichments(&failure, "deployment");
    assert_eq!(deployments.len(), 1, "{failure:#}");
    let linked = deployments[0];
    assert_eq!(
        linked["reason"],
        "deployed 10 min before, same service and environment"
    );
    assert_eq!(
        linked["source"],
        json!({"plugin": "github", "integration": "gh", "tenant": "acme"})
    );
    assert!(
        linked["links"]
            .as_array()
            .expect("links")
            .iter()
            .any(|l| l["url"] == "https://github.com/Codertocat/Hello-World/deployments"),
        "{linked:#}"
    );
    let suspects: Vec<&str> = enrichments(&failure, "suspect_commit")
        .iter()
        .map(|e| e["data"]["sha"].as_str().expect("sha"))
        .collect();
    assert_eq!(suspects, [sha, "0000000000000000000000000000000000000001"]);
    assert_eq!(failure["data"]["enrichment_status"], "complete");
    let staging = setup.wait_versions("acme", "in-staging", 1).remove(0);
    assert!(
        enrichments(&staging, "deployment").is_empty(),
        "{staging:#}"
    );

    // A deployment arriving after a failure it precedes revises the stored failure.
    let t1 = t0 + 5 * 60 * MINUTE;
    setup.post_failure(&failure_event(
        "acme",
        "before-its-deployment-arrived",
        "production",
        t1 + 10 * MINUTE,
    ));
    let first = setup
        .wait_versions("acme", "before-its-deployment-arrived", 1)
        .remove(0);
    assert!(enrichments(&first, "deployment").is_empty());
    setup.webhook(
        "acme",
        "deployment",
        "d-2",
        &deployment(102, sha, "production", t1),
    );
    let versions = setup.wait_versions("acme", "before-its-deployment-arrived", 2);
    assert_eq!(versions[1]["id"], versions[0]["id"]);
    assert_eq!(versions[1]["revision"], 2);
    assert_eq!(enrichments(&versions[1], "deployment").len(), 1);
    // Its deployment shipped no indexed commits, and this integration has no API
    // credential to ask GitHub: a third revision says so, partial.
    let versions = setup.wait_versions("acme", "before-its-deployment-arrived", 3);
    assert_eq!(versions[2]["revision"], 3);
    assert_eq!(versions[2]["data"]["enrichment_status"], "partial");
    let note = versions[2]["data"]["enrichment_note"]
        .as_str()
        .expect("note");
    assert!(
        note.contains("could not tell the suspect commits") && note.contains("no API credential"),
        "{note}"
    );

    // The change-failure view.
    let view = setup.daemon.ctl_json(&[
        "deployments",
        "--tenant",
        "acme",
        "--service",
        "Hello-World",
    ]);
    let counts: Vec<(String, usize)> = view["deployments"]
        .as_array()
        .expect("deployments")
        .iter()
        .map(|d| {
            (
                d["deployment"].as_str().expect("deployment").to_owned(),
                d["failures"].as_array().map_or(0, Vec::len),
            )
        })
        .collect();
    assert_eq!(
        counts,
        [
            ("codertocat/hello-world#102".to_owned(), 1),
            ("codertocat/hello-world#101".to_owned(), 1)
        ]
    );
    assert_eq!(view["services"][0]["change_failure_rate"], 1.0);
    let other = setup.daemon.ctl_json(&["deployments", "--tenant", "other"]);
    assert_eq!(
        other["deployments"][0]["failures"],
        json!([]),
        "never another tenant's failures"
    );

    // The same view on the dashboard's deployments page, with links to the evidence.
    let token = setup
        .daemon
        .ctl_json(&["tokens", "create", "--tenant", "acme", "--scope", "monitor"])["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let mut page = e2e_tests::browser::Page::launch(1280, 900);
    crate::dashboard::sign_in(&mut page, &setup.daemon.http_addr(), &token);
    page.eval("document.querySelector('nav a[data-view=deployments]').click()");
    page.wait_for(
        "the deployments page",
        "location.pathname === '/ui/deployments' && document.querySelectorAll('tbody tr').length === 2",
        LONG,
    );
    let shown = page.eval("document.getElementById('view').innerText");
    let shown = shown.as_str().expect("text");
    assert!(
        shown.contains("100%") && shown.contains("2 of 2 deployments"),
        "{shown}"
    );
    assert!(
        shown.contains("Hello-World") && shown.contains("production"),
        "{shown}"
    );
    let links =
        page.eval("[...document.querySelectorAll('#view a[rel]')].map(a => [a.innerText, a.href])");
    let links = links.as_array().expect("links");
    assert!(
        links.iter().any(|l| l[0] == "deployment"
            && l[1] == "https://github.com/Codertocat/Hello-World/deployments"),
        "{links:?}"
    );
    assert!(links.iter().any(|l| l[0] == "commit 1111111"), "{links:?}");
    page.screenshot(&e2e_tests::browser::screenshot_dir().join("dashboard-deployments.png"));

    // Batch enrichment over the range: everything is already enriched.
    let summary = setup.daemon.ctl_json(&[
        "enrich",
        "--tenant",
        "acme",
        "--from",
        &rfc3339(t0 - 60 * MINUTE),
        "--to",
        &rfc3339(t1 + 60 * MINUTE),
    ]);
    assert_eq!(summary["scanned"], 3);
    assert_eq!(summary["unchanged"], 3);
    assert_eq!(summary["done"], true);
}

#[test]
fn with_the_github_plugin_killed_failures_flow_at_once_marked_partial() {
    let setup = Setup::start();
    let pid = pid_of(
        &setup
            .daemon
            .instances()
            .into_iter()
            .find(|i| i["tenant"] == "acme")
            .expect("acme/gh"),
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid")),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9");
    wait_for("acme/gh down after kill -9", LONG, || {
        setup
            .daemon
            .instances()
            .into_iter()
            .find(|i| i["tenant"] == "acme" && state_of(i) != "healthy")
    });
    let started = std::time::Instant::now();
    setup.post_failure(&failure_event(
        "acme",
        "while-github-is-down",
        "production",
        1_796_000_000_000,
    ));
    let stored = setup
        .wait_versions("acme", "while-github-is-down", 1)
        .remove(0);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "not held back by the plugin"
    );
    assert_eq!(stored["data"]["enrichment_status"], "partial");
    let note = stored["data"]["enrichment_note"].as_str().expect("note");
    assert!(note.contains("gh (github)"), "{note}");
    // The other tenant's plugin runs: its failures are complete.
    setup.post_failure(&failure_event(
        "other",
        "meanwhile",
        "production",
        1_796_000_000_000,
    ));
    let other = setup.wait_versions("other", "meanwhile", 1).remove(0);
    assert_eq!(other["data"]["enrichment_status"], "complete");
}

#[test]
fn suspect_commits_the_index_lacks_come_from_the_github_plugin_as_a_revision() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let api = runtime.block_on(github_api::FixtureServer::start(10));
    let (environment, shas) = {
        let world = api.world();
        let environment = github_api::deployment_list(&world)[0]["environment"]
            .as_str()
            .expect("environment")
            .to_owned();
        let shas: Vec<String> = world
            .commits
            .iter()
            .map(|c| c["sha"].as_str().expect("sha").to_owned())
            .collect();
        (environment, shas)
    };
    let world = World::new();
    world.install(&github());
    let daemon = world.start(
        &DaemonSetup::default()
            .with_master_key(&world.root.path().join("master.key"))
            .process("collect_interval = \"1s\""),
    );
    daemon.ctl_json(&["tenants", "create", "acme"]);
    daemon.set_credential("acme", "api", "api-key", b"good-token");
    daemon.set_credential("acme", "hook", "webhook-secret", SECRET.as_bytes());
    daemon.add_integration(
        &world,
        "acme",
        "gh",
        "github",
        &json!({
            "repositories": [github_api::REPO],
            "api_url": api.url,
            "credentials": {"token": "api", "webhook_secret": "hook"},
        }),
    );
    let token =
        daemon.ctl_json(&["tokens", "create", "--tenant", "acme", "--scope", "ingest"])["token"]
            .as_str()
            .expect("token")
            .to_owned();
    // The plugin pulls the API's two deployments (10 and 180 minutes ago, with the
    // public example's statuses, one page: one commit) into the index; the API's
    // commits are years old, so the index has no suspects for them.
    let view = wait_for("the pulled deployments indexed", LONG, || {
        let view = daemon.ctl_json(&["deployments", "--tenant", "acme"]);
        (view["deployments"].as_array().map_or(0, Vec::len) == 2).then_some(view)
    });
    assert!(
        view["deployments"]
            .as_array()
            .expect("deployments")
            .iter()
            .any(|d| d["revision"] == json!(shas[0])),
        "{view:#}"
    );
    let post = |name: &str| {
        let mut event = failure_event("acme", name, &environment, github_api::now_ms());
        event["data"]["service.name"] = json!("hello-world");
        post_events(&daemon, &token, "acme", &event);
    };
    let versions = |name: &str, count: usize| wait_versions(&world, "acme", name, count);

    post("after-the-pulled-deployment");
    let both = versions("after-the-pulled-deployment", 2);
    let (first, revised) = (&both[0], &both[1]);
    // At once: the deployment, partial, naming what was asked.
    assert_eq!(enrichments(first, "deployment").len(), 1, "{first:#}");
    assert_eq!(first["data"]["enrichment_status"], "partial");
    let note = first["data"]["enrichment_note"].as_str().expect("note");
    assert!(
        note.contains("the suspect commits of deployment")
            && note.contains("integration `gh` (github)"),
        "{note}"
    );
    // Then the revision with the commits between the previous deployment (commit 3)
    // and this one (commit 0), from the plugin, newest first.
    assert_eq!(revised["id"], first["id"]);
    assert_eq!(revised["revision"], 2);
    assert_eq!(
        revised["data"]["enrichment_status"], "complete",
        "{revised:#}"
    );
    let suspects = enrichments(revised, "suspect_commit");
    let found: Vec<&str> = suspects
        .iter()
        .map(|e| e["data"]["sha"].as_str().expect("sha"))
        .collect();
    assert_eq!(found, [&shas[0], &shas[1], &shas[2]]);
    for suspect in &suspects {
        assert_eq!(
            suspect["source"],
            json!({"plugin": "github", "integration": "gh", "tenant": "acme"})
        );
        let sha = suspect["data"]["sha"].as_str().expect("sha");
        assert_eq!(
            suspect["links"][0]["url"],
            format!("https://github.com/{}/commit/{sha}", github_api::REPO)
        );
    }
    let compares = || {
        api.world()
            .requests
            .iter()
            .filter(|(path, _, _)| path.contains("/compare/"))
            .count()
    };
    assert_eq!(compares(), 1);

    // The next failure after the same deployment is complete at once, from the answer
    // at hand: no second question.
    post("right-after");
    let next = versions("right-after", 1).remove(0);
    assert_eq!(next["data"]["enrichment_status"], "complete", "{next:#}");
    assert_eq!(enrichments(&next, "suspect_commit").len(), 3);
    assert_eq!(compares(), 1);

    // The index rebuilt from the stored events: the same deployments and failures.
    let before = daemon.ctl_json(&["deployments", "--tenant", "acme"]);
    let rebuilt = daemon.ctl_json(&["index", "rebuild", "--tenant", "acme"]);
    assert!(
        rebuilt["events"].as_u64().is_some_and(|n| n >= 5),
        "{rebuilt}"
    );
    assert_eq!(rebuilt["failures"], 2, "{rebuilt}");
    assert_eq!(
        daemon.ctl_json(&["deployments", "--tenant", "acme"]),
        before
    );
    drop(runtime);
}

/// The last version of each event in `world`'s sink, by id, and how many lines each
/// revision number has.
fn final_versions(world: &World) -> (BTreeMap<String, Value>, BTreeMap<u64, usize>) {
    let mut last: BTreeMap<String, Value> = BTreeMap::new();
    let mut per_revision: BTreeMap<u64, usize> = BTreeMap::new();
    for line in world.sink_lines() {
        let event: Value = serde_json::from_str(&line).expect("JSON");
        let revision = event["revision"].as_u64().unwrap_or(1);
        *per_revision.entry(revision).or_default() += 1;
        let id = event["id"].as_str().expect("id").to_owned();
        if last
            .get(&id)
            .is_none_or(|seen| seen["revision"].as_u64().unwrap_or(1) < revision)
        {
            last.insert(id, event);
        }
    }
    (last, per_revision)
}

#[test]
fn batch_enrichment_of_100000_failures_killed_midway_and_resumed_equals_one_run() {
    const FAILURES: u64 = 100_000;
    const PER_REQUEST: u64 = 10_000;
    let t0: u64 = 1_796_000_000_000;
    let mut setup = Setup::start();
    // Failures first, one every 50 ms after t0...
    for chunk in 0..FAILURES / PER_REQUEST {
        let events: Vec<Value> = (chunk * PER_REQUEST..(chunk + 1) * PER_REQUEST)
            .map(|i| failure_event("acme", &format!("f{i}"), "production", t0 + i * 50))
            .collect();
        setup.post_events("acme", &Value::Array(events));
    }
    wait_for("the failures in the sink", Duration::from_secs(300), || {
        (setup.world.sink_lines().len() as u64 >= FAILURES).then_some(())
    });
    // ...then what a new GitHub integration brings: the pushes and the deployment before
    // them all. A late deployment revises at most 1,000 failures at once; the other
    // 99,000 are for the batch.
    let sha = "2222222222222222222222222222222222222222";
    setup.webhook("acme", "push", "b-push", &push(&[(sha, t0 - 20 * MINUTE)]));
    setup.webhook(
        "acme",
        "deployment",
        "b-1",
        &deployment(201, sha, "production", t0 - MINUTE),
    );
    let seeded = wait_for("the first 1,000 revised", LONG, || {
        let (_, per_revision) = final_versions(&setup.world);
        (per_revision.get(&2) == Some(&1_000)).then(|| setup.world.sink_lines().len())
    });

    // The same state twice: the daemon stopped, its state copied.
    setup.daemon.signal(nix::sys::signal::Signal::SIGTERM);
    setup.daemon.wait_exit(LONG);
    let copy = World::new();
    copy.install(&github());
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(setup.world.state_dir())
        .arg(copy.state_dir())
        .status()
        .expect("cp");
    assert!(copied.success());
    std::fs::copy(
        setup.world.root.path().join("master.key"),
        copy.root.path().join("master.key"),
    )
    .expect("copy the master key");
    let whole = setup.world.start(&daemon_setup(&setup.world));
    let mut interrupted = copy.start(&daemon_setup(&copy));
    let range = [
        "enrich",
        "--tenant",
        "acme",
        "--from",
        &rfc3339(t0 - 60 * MINUTE),
        "--to",
        &rfc3339(t0 + FAILURES * 50),
    ]
    .map(str::to_owned);
    let range: Vec<&str> = range.iter().map(String::as_str).collect();

    // One uninterrupted run.
    let one_run = whole.ctl_json(&range);
    assert_eq!(one_run["scanned"], FAILURES);
    assert_eq!(one_run["enriched"], FAILURES - 1_000);
    assert_eq!(one_run["unchanged"], 1_000);
    assert_eq!(one_run["done"], true);

    // The same run, its daemon killed (-9) a few chunks in, then run again.
    let mut client = std::process::Command::new(e2e_tests::bin("integrationctl"))
        .arg("--socket")
        .arg(&interrupted.socket)
        .arg("-o")
        .arg("json")
        .args(&range)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("integrationctl");
    wait_for("a few chunks revised", LONG, || {
        (copy.sink_lines().len() >= seeded + 5_000).then_some(())
    });
    interrupted.signal(nix::sys::signal::Signal::SIGKILL);
    interrupted.wait_exit(LONG);
    let client_status = client.wait().expect("integrationctl ends");
    assert!(!client_status.success(), "the client saw the daemon go");
    let midway = copy.sink_lines().len();
    assert!(
        midway < seeded + (FAILURES as usize - 1_000),
        "interrupted before the end ({midway} lines)"
    );
    let restarted = copy.start_written();
    let resumed = restarted.ctl_json(&range);
    assert_eq!(
        (
            &resumed["scanned"],
            &resumed["enriched"],
            &resumed["unchanged"]
        ),
        (
            &one_run["scanned"],
            &one_run["enriched"],
            &one_run["unchanged"]
        ),
        "the resumed run counts what one run counted: {resumed}"
    );

    // Every failure ends the same in both, and nothing was delivered twice.
    let expected_lines = seeded + (FAILURES as usize - 1_000);
    for world in [&setup.world, &copy] {
        wait_for("the revisions in the sink", LONG, || {
            (world.sink_lines().len() >= expected_lines).then_some(())
        });
    }
    let (a, a_revisions) = final_versions(&setup.world);
    let (b, b_revisions) = final_versions(&copy);
    assert_eq!(a_revisions, b_revisions);
    assert_eq!(
        a_revisions.get(&2),
        Some(&(FAILURES as usize)),
        "{a_revisions:?}"
    );
    assert_eq!(a.len(), b.len());
    if let Some((id, event)) = a.iter().find(|(id, event)| b.get(*id) != Some(*event)) {
        panic!(
            "{id} differs after the interruption:\n{event:#}\n{:#}",
            b.get(id).cloned().unwrap_or_default()
        );
    }
    let linked = a
        .values()
        .filter(|e| {
            e["data"]["error.message"]
                .as_str()
                .is_some_and(|m| m.starts_with('f'))
        })
        .filter(|e| {
            enrichments(e, "deployment").len() == 1 && enrichments(e, "suspect_commit").len() == 1
        })
        .count();
    assert_eq!(linked, FAILURES as usize);
}

/// Runs the CloudEvents Python SDK client (`tests/fixtures/cloudevents_client.py`) in
/// `mode` for `names`; returns the daemon's status and answer.
fn cloudevents_client(setup: &Setup, mode: &str, time: &str, names: &[&str]) -> (u64, String) {
    let token = &setup
        .ingest
        .iter()
        .find(|(t, _)| t == "acme")
        .expect("token")
        .1;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/cloudevents_client.py"
    );
    let url = format!("http://{}/v1/events/acme", setup.daemon.http_addr());
    let output = std::process::Command::new("python3")
        .arg(script)
        .args([url.as_str(), token, mode, "Hello-World", "production", time])
        .args(names)
        .output()
        .expect("python3 with cloudevents (scripts/test installs it)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: Value = serde_json::from_slice(&output.stdout).expect("the client's JSON");
    (
        answer["status"].as_u64().expect("status"),
        answer["body"].as_str().unwrap_or_default().to_owned(),
    )
}

#[test]
fn cloudevents_from_the_python_sdk_in_each_mode_are_enriched_failures() {
    let setup = Setup::start();
    let t0: u64 = 1_796_000_000_000;
    let sha = "2222222222222222222222222222222222222222";
    setup.webhook("acme", "push", "ce-push", &push(&[(sha, t0 - 20 * MINUTE)]));
    setup.webhook(
        "acme",
        "deployment",
        "ce-deployment",
        &deployment(202, sha, "production", t0),
    );
    let at = rfc3339(t0 + 10 * MINUTE);
    for (mode, names) in [
        ("structured", vec!["ce-structured"]),
        ("binary", vec!["ce-binary"]),
        ("batch", vec!["ce-batch-1", "ce-batch-2"]),
    ] {
        let (status, body) = cloudevents_client(&setup, mode, &at, &names);
        assert_eq!(status, 202, "{mode}: {body}");
    }
    for name in ["ce-structured", "ce-binary", "ce-batch-1", "ce-batch-2"] {
        let failure = setup.wait_versions("acme", name, 1).remove(0);
        assert_eq!(
            failure["type"],
            "com.betalogs.system.com.example.checkout.payment_failed"
        );
        assert_eq!(failure["severity"], "error");
        assert_eq!(failure["integration"], "platform");
        assert_eq!(failure["data"]["service.name"], "Hello-World");
        assert_eq!(failure["data"]["deployment.environment"], "production");
        assert_eq!(
            failure["data"]["original"]["data"]["attempt"], 3,
            "nothing the client sent is lost"
        );
        let deployments = enrichments(&failure, "deployment");
        assert_eq!(deployments.len(), 1, "{name}: {failure:#}");
        assert_eq!(
            deployments[0]["reason"],
            "deployed 10 min before, same service and environment"
        );
        assert_eq!(
            enrichments(&failure, "suspect_commit").len(),
            1,
            "{failure:#}"
        );
    }
    // The same CloudEvent again: the same event, kept once.
    let (status, body) = cloudevents_client(&setup, "structured", &at, &["ce-structured"]);
    assert_eq!(status, 202, "{body}");
    assert!(body.contains("\"duplicates\":1"), "{body}");

    // Invalid CloudEvents: the attribute named, nothing stored.
    let token = &setup.ingest[0].1;
    let post = |content_type: &str, body: &str| {
        http::request(
            &setup.daemon.http_addr(),
            "POST",
            "/v1/events/acme",
            &[
                ("Authorization", &format!("Bearer {token}")),
                ("Content-Type", content_type),
            ],
            body.as_bytes(),
            http::Framing::Length,
        )
        .expect("the daemon answers")
    };
    let no_type =
        r#"{"specversion": "1.0", "id": "x-1", "source": "/s", "data": {"message": "ce-refused"}}"#;
    let refused = post("application/cloudevents+json", no_type);
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(
        refused.body.contains("`type` is missing"),
        "{}",
        refused.body
    );
    let batch = format!(
        r#"[{{"specversion": "1.0", "id": "x-2", "source": "/s", "type": "t", "data": {{"message": "ce-refused"}}}}, {}]"#,
        no_type
    );
    let refused = post("application/cloudevents-batch+json", &batch);
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(
        refused.body.contains("CloudEvent [1] of the batch") && refused.body.contains("`type`"),
        "{}",
        refused.body
    );
    let other_tenant = r#"{"specversion": "1.0", "id": "x-3", "source": "/s", "type": "t", "tenant": "other", "data": {"message": "ce-refused"}}"#;
    let refused = post("application/cloudevents+json", other_tenant);
    assert_eq!(refused.status, 400, "{}", refused.body);
    let message = refused.json()["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(message.contains("`tenant` is \"other\""), "{message}");
    assert!(
        !setup
            .world
            .sink_lines()
            .iter()
            .any(|line| line.contains("ce-refused")),
        "nothing of a refused request is stored"
    );
}

#[test]
fn error_logs_exported_by_the_opentelemetry_sdk_are_enriched_failures() {
    let setup = Setup::start();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    let sha = "3333333333333333333333333333333333333333";
    setup.webhook(
        "acme",
        "push",
        "otlp-push",
        &push(&[(sha, now - 30 * MINUTE)]),
    );
    setup.webhook(
        "acme",
        "deployment",
        "otlp-deployment",
        &deployment(303, sha, "production", now - 10 * MINUTE),
    );
    let token = &setup.ingest[0].1;
    let endpoint = format!("http://{}/v1/logs", setup.daemon.http_addr());
    let output = std::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/otlp_logs_client.py"
        ))
        .args([
            endpoint.as_str(),
            token,
            "Hello-World",
            "production",
            "otlp-card-authorization-failed",
        ])
        .output()
        .expect("python3 with the OpenTelemetry SDK (scripts/test installs it)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let trace_id = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let failure = setup
        .wait_versions("acme", "otlp-card-authorization-failed", 1)
        .remove(0);
    assert_eq!(failure["type"], "com.betalogs.system.log.record");
    assert_eq!(failure["severity"], "error");
    assert_eq!(failure["integration"], "platform");
    assert_eq!(
        failure["correlationid"],
        trace_id.as_str(),
        "the span's trace"
    );
    assert_eq!(failure["data"]["service.name"], "Hello-World");
    assert_eq!(failure["data"]["deployment.environment"], "production");
    assert_eq!(failure["data"]["exception.type"], "GatewayTimeout");
    let deployments = enrichments(&failure, "deployment");
    assert_eq!(deployments.len(), 1, "{failure:#}");
    assert_eq!(
        deployments[0]["reason"],
        "deployed 10 min before, same service and environment"
    );
    // The info record was counted, not stored.
    assert!(
        !setup
            .world
            .sink_lines()
            .iter()
            .any(|line| line.contains("charging the card")),
        "a record below the threshold is not stored"
    );
    let metrics = setup.daemon.metrics();
    assert!(
        metrics
            .lines()
            .any(|l| l.contains("below_threshold") && l.ends_with(" 1")),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("otlp"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
