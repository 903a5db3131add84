//! Tenants spread over two daemons (`[cluster]`), against a real `nats-server` the test
//! starts: placement in its key-value bucket, requests relayed from the wrong node to
//! the owner, one stream fed by both nodes, a tenant name that only one node may take,
//! and a node's loss visible in `cluster status`, health and alerts.

use std::collections::BTreeSet;
use std::time::Duration;

use e2e_tests::nats::{self, NatsServer};
use e2e_tests::{Daemon, DaemonSetup, World, http, wait_for};
use serde_json::Value;

use crate::webhooks::{hooks, wait_healthy};

/// A node of the cluster on `server`, serving `tenant`'s webhooks as `integration`,
/// with a JetStream sink into the shared stream.
fn node(server: &NatsServer, name: &str, tenant: &str, integration: &str) -> DaemonSetup {
    let servers = [server.url()];
    DaemonSetup::default()
        .tenant_instance("hooks", tenant, integration)
        .extra(&format!(
            "[cluster]\nnode = \"{name}\"\nservers = {servers:?}\nheartbeat_interval = \"200ms\"\nnode_timeout = \"1s\"\n\
             [alerts]\nevaluate_interval = \"100ms\"\npending_for = \"0s\"\n\
             [[sinks.nats]]\nname = \"bus\"\nservers = {servers:?}\ncreate_stream = true\n"
        ))
}

/// The nodes of `cluster status`: name → (state, tenants).
fn nodes(daemon: &Daemon) -> Vec<(String, String, Vec<String>)> {
    let status = daemon.ctl_json(&["cluster", "status"]);
    status["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|node| {
            let tenants = node["tenants"]
                .as_array()
                .expect("tenants")
                .iter()
                .map(|t| t.as_str().expect("name").to_owned())
                .collect();
            (
                node["name"].as_str().expect("name").to_owned(),
                node["state"].as_str().expect("state").to_owned(),
                tenants,
            )
        })
        .collect()
}

fn deliver(daemon: &Daemon, path: &str, token: &str, id: &str) -> http::HttpResponse {
    http::post_json(
        &daemon.http_addr(),
        path,
        &[("x-testfault-token", token)],
        &format!(r#"{{"id":"{id}","events":1}}"#),
    )
    .expect("the daemon answers")
}

/// The source ids of the events in a node's JSONL sink.
fn delivered(world: &World) -> BTreeSet<String> {
    world
        .sink_lines()
        .iter()
        .map(|line| {
            let event: Value = serde_json::from_str(line).expect("an event");
            event["tenant"].as_str().expect("tenant").to_owned()
                + "/"
                + event["id"].as_str().expect("id")
        })
        .collect()
}

#[test]
fn two_nodes_relay_each_others_tenants_and_feed_one_stream() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = NatsServer::start(dir.path());
    let (world_a, world_b) = (World::new(), World::new());
    world_a.install(&hooks());
    world_b.install(&hooks());
    let a = world_a.start(&node(&server, "a", "acme", "gh"));
    let b = world_b.start(&node(&server, "b", "globex", "gh-globex"));
    wait_healthy(&a, "gh");
    wait_healthy(&b, "gh-globex");

    // Both nodes see both, alive, each with its tenant.
    for daemon in [&a, &b] {
        wait_for(
            "both nodes in cluster status",
            Duration::from_secs(10),
            || {
                (nodes(daemon)
                    == [
                        ("a".into(), "alive".into(), vec!["acme".into()]),
                        ("b".into(), "alive".into(), vec!["globex".into()]),
                    ])
                .then_some(())
            },
        );
    }

    // Each tenant's webhooks reach its node, whichever node they are sent to.
    for (at, daemon) in [("a", &a), ("b", &b)] {
        for (path, tenant) in [
            ("/v1/webhooks/acme/gh", "acme"),
            ("/v1/webhooks/globex/gh-globex", "globex"),
        ] {
            let accepted = deliver(daemon, path, "good", &format!("{tenant}-via-{at}"));
            assert_eq!(accepted.status, 202, "{path} at {at}: {}", accepted.body);
            assert_eq!(accepted.json()["events"], 1, "{}", accepted.body);
        }
    }
    wait_for(
        "each node's two in its sink",
        Duration::from_secs(10),
        || (world_a.sink_ids().len() == 2 && world_b.sink_ids().len() == 2).then_some(()),
    );
    assert!(delivered(&world_a).iter().all(|id| id.starts_with("acme/")));
    assert!(
        delivered(&world_b)
            .iter()
            .all(|id| id.starts_with("globex/"))
    );

    // The owner authenticates a relayed delivery: a bad signature is refused there.
    let forged = deliver(&a, "/v1/webhooks/globex/gh-globex", "bad", "forged");
    assert_eq!(forged.status, 401, "{}", forged.body);
    assert_eq!(forged.json()["error"], "bad_signature");
    assert_eq!(
        world_b.sink_ids().len(),
        2,
        "nothing stored for the forgery"
    );

    // One stream holds both nodes' events, each once.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let stored = rt.block_on(nats::read_stream(&server.url(), "BETALOGS", 4));
    let subjects: BTreeSet<&str> = stored.iter().map(|m| m.subject.as_str()).collect();
    assert_eq!(stored.len(), 4, "{subjects:?}");
    assert!(
        subjects.iter().any(|s| s.contains(".acme.")),
        "{subjects:?}"
    );
    assert!(
        subjects.iter().any(|s| s.contains(".globex.")),
        "{subjects:?}"
    );
    assert!(nats::id_counts(&stored).values().all(|count| *count == 1));

    // A tenant name belongs to the node that took it first.
    a.ctl_json(&["tenants", "create", "initech"]);
    let taken = b.ctl(&["tenants", "create", "initech"]);
    assert!(!taken.status.success());
    let said = String::from_utf8_lossy(&taken.stderr);
    assert!(
        said.contains("tenant `initech` is placed on node `a`, not on this node (`b`)"),
        "{said}"
    );
    let listed = b.ctl_json(&["tenants", "list"]);
    assert!(
        !listed.to_string().contains("initech"),
        "b created nothing: {listed}"
    );
    wait_for(
        "initech placed on a, seen by b",
        Duration::from_secs(10),
        || {
            nodes(&b)
                .iter()
                .any(|(name, _, tenants)| name == "a" && tenants.contains(&"initech".to_owned()))
                .then_some(())
        },
    );
    // Deleting it on its node releases the name.
    a.ctl_json(&["tenants", "delete", "initech"]);
    wait_for("initech released", Duration::from_secs(10), || {
        b.ctl(&["tenants", "create", "initech"])
            .status
            .success()
            .then_some(())
    });
}

#[test]
fn a_lost_node_is_visible_alerted_and_its_tenants_requests_get_503_until_it_is_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = NatsServer::start(dir.path());
    let (world_a, world_b) = (World::new(), World::new());
    world_a.install(&hooks());
    world_b.install(&hooks());
    let a = world_a.start(&node(&server, "a", "acme", "gh"));
    let mut b = world_b.start(&node(&server, "b", "globex", "gh-globex"));
    wait_healthy(&b, "gh-globex");
    wait_for("b alive at a", Duration::from_secs(10), || {
        nodes(&a)
            .iter()
            .any(|(name, state, _)| name == "b" && state == "alive")
            .then_some(())
    });

    b.signal(nix::sys::signal::Signal::SIGKILL);
    b.wait_exit(Duration::from_secs(10));
    wait_for("b lost at a", Duration::from_secs(10), || {
        nodes(&a)
            .iter()
            .any(|(name, state, _)| name == "b" && state == "lost")
            .then_some(())
    });
    let alert = wait_for("node_lost firing", Duration::from_secs(10), || {
        a.ctl_json(&["alerts", "list", "--state", "firing"])["alerts"]
            .as_array()?
            .iter()
            .find(|alert| alert["rule"] == "node_lost")
            .cloned()
    });
    assert_eq!(alert["subject"], "b");
    assert_eq!(alert["severity"], "error", "globex is placed on b: {alert}");
    assert!(
        alert["description"]
            .as_str()
            .is_some_and(|d| d.contains("globex")),
        "{alert}"
    );
    let operator =
        a.ctl_json(&["tokens", "create", "--scope", "monitor", "--all-tenants"])["token"]
            .as_str()
            .expect("token")
            .to_owned();
    let (_, health) = http::get_json(&a.http_addr(), "/v1/health", &operator);
    let lost: Vec<&str> = health["nodes"]
        .as_array()
        .expect("nodes in the health document")
        .iter()
        .filter(|node| node["state"] == "lost")
        .filter_map(|node| node["name"].as_str())
        .collect();
    assert_eq!(lost, ["b"], "{health}");

    // Its tenant's webhooks cannot be kept by a node without its secrets: 503, retry.
    let refused = deliver(&a, "/v1/webhooks/globex/gh-globex", "good", "while-lost");
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert_eq!(refused.json()["error"], "owner_unreachable");
    assert!(refused.header("retry-after").is_some());
    // The node's own tenants go on.
    assert_eq!(
        deliver(&a, "/v1/webhooks/acme/gh", "good", "a1").status,
        202
    );

    // Back: relayed again, the alert resolved.
    let b = world_b.start_written();
    wait_healthy(&b, "gh-globex");
    wait_for("b alive again at a", Duration::from_secs(10), || {
        nodes(&a)
            .iter()
            .any(|(name, state, _)| name == "b" && state == "alive")
            .then_some(())
    });
    let relayed = wait_for(
        "a delivery relayed to b again",
        Duration::from_secs(10),
        || {
            let answer = deliver(&a, "/v1/webhooks/globex/gh-globex", "good", "after");
            (answer.status == 202).then_some(answer)
        },
    );
    assert_eq!(relayed.json()["events"], 1);
    wait_for("node_lost resolved", Duration::from_secs(10), || {
        let firing = a.ctl_json(&["alerts", "list", "--state", "firing"]);
        (!firing.to_string().contains("node_lost")).then_some(())
    });
}
