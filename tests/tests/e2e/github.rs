//! The GitHub plugin behind the real daemon: an integration added with
//! `integrationctl` (credentials from stdin, config checked by the plugin), every public
//! example delivery of `@octokit/webhooks-examples` posted to the webhook route and signed
//! as GitHub signs, the mapped ones stored once and schema-valid (nothing dead-lettered),
//! the others acknowledged; a repository outside the integration refused and audited.

use std::collections::HashSet;
use std::time::Duration;

use e2e_tests::http::{self, HttpResponse};
use e2e_tests::{Daemon, DaemonSetup, PluginPackage, World, github_signature, state_of, wait_for};
use serde_json::{Value, json};

const SECRET: &str = "a webhook secret for the tests";
const LONG: Duration = Duration::from_secs(30);

fn github() -> PluginPackage {
    PluginPackage::real("github")
}

fn start(world: &World, repositories: &[String]) -> Daemon {
    world.install(&github());
    let daemon =
        world.start(&DaemonSetup::default().with_master_key(&world.root.path().join("master.key")));
    daemon.ctl_json(&["tenants", "create", "acme"]);
    daemon.set_credential("acme", "hook", "webhook-secret", SECRET.as_bytes());
    daemon.add_integration(
        world,
        "acme",
        "gh",
        "github",
        &json!({"repositories": repositories, "credentials": {"webhook_secret": "hook"}}),
    );
    wait_for("the integration healthy", LONG, || {
        daemon
            .instances()
            .into_iter()
            .find(|i| i["integration"] == "gh" && state_of(i) == "healthy")
    });
    daemon
}

fn deliver(addr: &str, event: &str, delivery: &str, body: &[u8]) -> HttpResponse {
    let signature = github_signature(SECRET, body);
    http::post_json(
        addr,
        "/v1/webhooks/acme/gh",
        &[
            ("x-github-event", event),
            ("x-github-delivery", delivery),
            ("x-hub-signature-256", &signature),
        ],
        std::str::from_utf8(body).expect("utf8"),
    )
    .expect("the daemon answers")
}

#[test]
fn every_public_example_delivery_is_stored_or_acknowledged() {
    let examples = e2e_tests::webhook_examples();
    let mut owners: Vec<String> = examples
        .iter()
        .filter_map(|(_, p)| p.pointer("/repository/full_name")?.as_str())
        .filter_map(|f| Some(format!("{}/*", f.split('/').next()?)))
        .collect();
    owners.sort();
    owners.dedup();
    let world = World::new();
    let daemon = start(&world, &owners);
    let addr = daemon.http_addr();
    let (mut stored, mut mapped) = (0, 0);
    for (index, (event, payload)) in examples.iter().enumerate() {
        let body = serde_json::to_vec(payload).expect("json");
        let answer = deliver(&addr, event, &format!("d-{index}"), &body);
        assert!(
            matches!(answer.status, 200 | 202),
            "{event}/{}: {} {}",
            payload["action"],
            answer.status,
            answer.body
        );
        if answer.status == 202 {
            assert_eq!(
                answer.json()["dead_lettered"],
                0,
                "{event}: {}",
                answer.body
            );
            stored += answer.json()["events"].as_u64().expect("count");
            // Some examples describe the same object (the same deployment, say): the
            // pipeline keeps it once.
            mapped += answer.json()["events"].as_u64().expect("count")
                + answer.json()["duplicates"].as_u64().expect("count");
        } else {
            let said = answer.json()["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let expected = if event == "ping" { "pong" } else { "ignored" };
            assert!(said.starts_with(expected), "{event}: {}", answer.body);
        }
    }
    assert!(
        mapped >= 30 && stored >= 10,
        "mapped {mapped}, stored {stored}"
    );
    let lines = wait_for("the stored events in the sink", LONG, || {
        let lines = world.sink_lines();
        (lines.len() as u64 >= stored).then_some(lines)
    });
    assert_eq!(lines.len() as u64, stored, "every stored event, once");
    let ids: HashSet<String> = lines
        .iter()
        .map(|l| {
            serde_json::from_str::<Value>(l).expect("json")["id"]
                .as_str()
                .expect("id")
                .to_owned()
        })
        .collect();
    assert_eq!(ids.len(), lines.len(), "each event once");
    let dead = daemon.ctl_json(&["dlq", "list", "--tenant", "acme"]);
    assert_eq!(dead.as_array().map(Vec::len), Some(0), "{dead}");

    // A redelivery (GitHub keeps the X-GitHub-Delivery and the body) adds nothing.
    let (index, (event, payload)) = examples
        .iter()
        .enumerate()
        .find(|(_, (e, _))| e == "deployment")
        .expect("a deployment");
    let again = deliver(
        &addr,
        event,
        &format!("d-{index}"),
        &serde_json::to_vec(payload).expect("json"),
    );
    assert_eq!(again.status, 202);
    assert_eq!(again.json()["duplicates"], 1, "{}", again.body);
    assert_eq!(again.json()["events"], 0);

    // A pretty-printed delivery (line breaks between tokens) is stored as one line.
    let mut fresh = payload.clone();
    fresh["deployment"]["id"] = json!(987_654_321);
    let pretty = serde_json::to_vec_pretty(&fresh).expect("json");
    let answer = deliver(&addr, event, "pretty", &pretty);
    assert_eq!(answer.status, 202, "{}", answer.body);
    assert_eq!(answer.json()["events"], 1);
    let lines = wait_for("the pretty delivery's event in the sink", LONG, || {
        let lines = world.sink_lines();
        (lines.len() as u64 > stored).then_some(lines)
    });
    let last: Value =
        serde_json::from_str(lines.last().expect("a line")).expect("one event per line");
    assert_eq!(last["data"]["deployment.id"], 987_654_321);
}

#[test]
fn a_repository_outside_the_integration_is_refused_and_audited() {
    let world = World::new();
    let daemon = start(&world, &["acme/*".to_owned()]);
    let addr = daemon.http_addr();
    let (_, push) = e2e_tests::webhook_examples()
        .into_iter()
        .find(|(e, _)| e == "push")
        .expect("push");
    let body = serde_json::to_vec(&push).expect("json");
    let refused = deliver(&addr, "push", "x-1", &body);
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert_eq!(refused.json()["error"], "forbidden");
    assert!(refused.body.contains("not covered"), "{}", refused.body);
    let audit = daemon.ctl_json(&["audit", "list", "--tenant", "acme"]);
    let record = audit
        .as_array()
        .expect("records")
        .iter()
        .find(|r| r["action"] == "webhook.forbidden")
        .unwrap_or_else(|| panic!("no audit record: {audit}"));
    assert_eq!(record["outcome"], "denied");
    assert!(
        record["detail"]
            .as_str()
            .is_some_and(|d| d.contains("not covered")),
        "{record}"
    );

    // A wrong signature is refused too, and nothing of either is stored.
    let forged = http::post_json(
        &addr,
        "/v1/webhooks/acme/gh",
        &[
            ("x-github-event", "push"),
            ("x-github-delivery", "x-2"),
            ("x-hub-signature-256", &github_signature("guess", &body)),
        ],
        std::str::from_utf8(&body).expect("utf8"),
    )
    .expect("answer");
    assert_eq!(forged.status, 401, "{}", forged.body);
    assert!(world.sink_lines().is_empty());
}
