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

/// A server and two nodes on it: `a` serving acme (`gh`), `b` serving globex
/// (`gh-globex`).
struct Pair {
    server: NatsServer,
    world_a: World,
    world_b: World,
    a: Daemon,
    b: Daemon,
}

impl Pair {
    fn start(dir: &std::path::Path) -> Self {
        let server = NatsServer::start(dir);
        let (world_a, world_b) = (World::new(), World::new());
        world_a.install(&hooks());
        world_b.install(&hooks());
        let a = world_a.start(&node(&server, "a", "acme", "gh"));
        let b = world_b.start(&node(&server, "b", "globex", "gh-globex"));
        Self {
            server,
            world_a,
            world_b,
            a,
            b,
        }
    }
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

/// Waits until `daemon`'s `cluster status` shows `node` in `state`.
fn wait_node(daemon: &Daemon, node: &str, state: &str) {
    wait_for(
        &format!("{node} {state} in cluster status"),
        Duration::from_secs(10),
        || {
            nodes(daemon)
                .iter()
                .any(|(name, now, _)| name == node && now == state)
                .then_some(())
        },
    );
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
    let Pair {
        server,
        world_a,
        world_b,
        a,
        b,
    } = Pair::start(dir.path());
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

    // A tenant's token works at any node: a node that does not hold it relays the call
    // to the tenant's node, which authenticates it; never as an operator.
    b.ctl_json(&["tenants", "create", "globex"]);
    let globex_admin = b.ctl_json(&["tokens", "create", "--tenant", "globex"])["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let health = wait_for(
        "a relays globex's call to b",
        Duration::from_secs(10),
        || {
            let answer = a.ctl_as(&globex_admin, &["health", "--tenant", "globex"]);
            answer.status.success().then_some(answer)
        },
    );
    let health: Value = serde_json::from_slice(&health.stdout).expect("json");
    assert!(health.to_string().contains("gh-globex"), "{health}");
    let operator_only = a.ctl_as(&globex_admin, &["tenants", "list"]);
    assert!(!operator_only.status.success());
    assert!(
        String::from_utf8_lossy(&operator_only.stderr).contains("a tenant token cannot run it"),
        "refused at b as it would be there: {}",
        String::from_utf8_lossy(&operator_only.stderr)
    );
    let tail = a.ctl_as(&globex_admin, &["events", "tail", "--tenant", "globex"]);
    assert!(!tail.status.success());
    assert!(
        String::from_utf8_lossy(&tail.stderr)
            .contains("this tenant is served by node `b`; run this command on that node"),
        "{}",
        String::from_utf8_lossy(&tail.stderr)
    );
    // OTLP logs name their tenant by the ingest token: relayed the same way.
    let ingest = b.ctl_json(&[
        "tokens", "create", "--tenant", "globex", "--scope", "ingest",
    ])["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let logs = r#"{"resourceLogs":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"checkout"}}]},"scopeLogs":[{"logRecords":[{"timeUnixNano":"1764000000000000000","severityNumber":17,"severityText":"ERROR","body":{"stringValue":"payment failed"}}]}]}]}"#;
    let bearer = format!("Bearer {ingest}");
    let exported = http::post_json(
        &a.http_addr(),
        "/v1/logs",
        &[("authorization", bearer.as_str())],
        logs,
    )
    .expect("answer");
    assert_eq!(exported.status, 200, "{}", exported.body);
    wait_for(
        "the relayed log in b's sink",
        Duration::from_secs(10),
        || {
            world_b
                .sink_lines()
                .iter()
                .any(|line| line.contains("payment failed"))
                .then_some(())
        },
    );
    assert!(
        !world_a
            .sink_lines()
            .iter()
            .any(|l| l.contains("payment failed"))
    );

    // Handover steps nobody began, or from a node the tenant is not on, are refused
    // naming why, and change nothing.
    let subject = "integrationd.betalogs_placement.handover.b";
    let answers: Vec<Value> = rt.block_on(async {
        let client = async_nats::connect(server.url()).await.expect("connect");
        let mut answers = Vec::new();
        for step in [
            r#"{"step":"begin","tenant":"acme","from":"x"}"#,
            r#"{"step":"pieces","tenant":"acme","pieces":[]}"#,
            r#"{"step":"finish","tenant":"acme","created_ms":1,"incarnation":1}"#,
            r#"{"step":"begin","tenant":"../etc","from":"a"}"#,
            "not json",
        ] {
            let answer = client
                .request(subject, step.as_bytes().to_vec().into())
                .await
                .expect("b answers");
            answers.push(serde_json::from_slice(&answer.payload).expect("a reply"));
        }
        answers
    });
    let errors: Vec<&str> = answers
        .iter()
        .map(|a| {
            assert_eq!(a["ok"], false, "{a}");
            a["error"].as_str().expect("error")
        })
        .collect();
    assert_eq!(errors[0], "tenant `acme` is not placed on node `x`");
    assert_eq!(errors[1], "no move of `acme` is under way");
    assert_eq!(errors[2], "no move of `acme` is under way");
    assert_eq!(errors[3], "`../etc` is not a tenant name");
    assert!(
        errors[4].starts_with("not a handover step"),
        "{}",
        errors[4]
    );
    assert!(
        !b.ctl_json(&["tenants", "list"])
            .to_string()
            .contains("acme")
    );

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
    // Every part bound: the server and the worlds live as long as the test.
    let Pair {
        server: _server,
        world_a: _world_a,
        world_b,
        a,
        mut b,
    } = Pair::start(dir.path());
    wait_healthy(&b, "gh-globex");
    wait_node(&a, "b", "alive");

    b.signal(nix::sys::signal::Signal::SIGKILL);
    b.wait_exit(Duration::from_secs(10));
    wait_node(&a, "b", "lost");
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

    // A move to a lost node, or of a tenant only the configuration file made, is
    // refused naming why; the tenant stays where it is.
    a.ctl_json(&["tenants", "create", "initech"]);
    for (tenant, why) in [
        ("initech", "node `b` is not alive in the cluster"),
        (
            "acme",
            "it has no record here (created by the configuration file only)",
        ),
    ] {
        let refused = a.ctl(&["tenants", "move", tenant, "--to", "b"]);
        assert!(!refused.status.success());
        let said = String::from_utf8_lossy(&refused.stderr);
        assert!(said.contains(why), "{said}");
    }
    assert!(
        nodes(&a)
            .iter()
            .any(|(name, _, tenants)| name == "a" && tenants.contains(&"initech".to_owned()))
    );

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
    wait_node(&a, "b", "alive");
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

/// Node `name` with a master key of its own, holding no tenant of the configuration.
fn keyed_node(world: &World, server: &NatsServer, name: &str) -> DaemonSetup {
    let servers = [server.url()];
    DaemonSetup::default()
        .with_master_key(&world.root.path().join("master.key"))
        .extra(&format!(
            "[cluster]\nnode = \"{name}\"\nservers = {servers:?}\nheartbeat_interval = \"200ms\"\nnode_timeout = \"2s\"\n\
             [ingress]\nrate_per_second = 100000\nburst = 100000\n"
        ))
}

/// The `original.id` of every event of `tenant` in a node's JSONL sink, with the
/// event ids.
fn deliveries_of(world: &World, tenant: &str) -> Vec<(String, String)> {
    world
        .sink_lines()
        .iter()
        .filter_map(|line| {
            let event: Value = serde_json::from_str(line).expect("an event");
            (event["tenant"] == tenant).then(|| {
                (
                    event["data"]["original"]["id"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    event["id"].as_str().expect("id").to_owned(),
                )
            })
        })
        .collect()
}

#[test]
fn a_tenant_moved_under_webhook_load_loses_no_delivery_and_runs_on_its_new_node() {
    use std::sync::atomic::Ordering;

    const DELIVERIES: usize = 1_500;
    let dir = tempfile::tempdir().expect("tempdir");
    let server = NatsServer::start(dir.path());
    let (world_a, world_b) = (World::new(), World::new());
    world_a.install(&hooks());
    world_b.install(&hooks());
    let a = world_a.start(&keyed_node(&world_a, &server, "a"));
    let b = world_b.start(&keyed_node(&world_b, &server, "b"));
    a.ctl_json(&["tenants", "create", "acme"]);
    a.set_credential("acme", "hook-secret", "webhook-secret", b"not-for-logs");
    // Configure decrypts the credential: the integration runs on b only if its key
    // opens there.
    a.add_integration(
        &world_a,
        "acme",
        "gh",
        "hooks",
        &serde_json::json!({"credentials": {"webhook_secret": "hook-secret"}}),
    );
    a.ctl_json(&[
        "flags",
        "set",
        "--tenant",
        "acme",
        "realtime_enrichment=off",
    ]);
    let admin = a.ctl_json(&["tokens", "create", "--tenant", "acme"])["token"]
        .as_str()
        .expect("token")
        .to_owned();
    wait_healthy(&a, "gh");
    let bad = http::post_json(
        &a.http_addr(),
        "/v1/webhooks/acme/gh",
        &[("x-testfault-token", "good")],
        r#"{"id":"bad","events":2,"invalid":true}"#,
    )
    .expect("answer");
    assert_eq!(bad.json()["dead_lettered"], 1, "{}", bad.body);
    wait_node(&a, "b", "alive");

    // Senders keep delivering to node a, before, during and after the move.
    let address = crate::webhooks::IngressAddress::new(a.http_addr());
    let (senders, acked, _failures) = crate::webhooks::redelivering_senders(
        &address,
        8,
        "m",
        DELIVERIES,
        Duration::from_secs(120),
    );
    wait_for(
        "300 acknowledged before the move",
        Duration::from_secs(60),
        || (acked.load(Ordering::Relaxed) >= 300).then_some(()),
    );
    let moved = a.ctl_json(&["tenants", "move", "acme", "--to", "b"]);
    let acked_at_move = acked.load(Ordering::Relaxed);
    assert!(acked_at_move < DELIVERIES, "the move landed mid-flood");
    assert!(moved["entries"].as_u64().is_some_and(|n| n >= 4), "{moved}");
    assert!(
        moved["audit_records"].as_u64().is_some_and(|n| n >= 4),
        "{moved}"
    );
    for sender in senders {
        sender.join().expect("sender");
    }

    // Every delivery is stored: those before the move by a, the rest by b.
    let all = wait_for("every delivery in a sink", Duration::from_secs(60), || {
        let mut all = deliveries_of(&world_a, "acme");
        all.extend(deliveries_of(&world_b, "acme"));
        let ids: BTreeSet<String> = all.iter().map(|(id, _)| id.clone()).collect();
        (ids.len() > DELIVERIES).then_some(all)
    });
    let ids: BTreeSet<&str> = all.iter().map(|(id, _)| id.as_str()).collect();
    for n in 0..DELIVERIES {
        assert!(ids.contains(format!("m{n}").as_str()), "m{n} lost");
    }
    let on_b = deliveries_of(&world_b, "acme").len();
    assert!(on_b > 0, "b stored the deliveries after the move");
    let events: BTreeSet<&str> = all.iter().map(|(_, event)| event.as_str()).collect();
    println!(
        "moved after {acked_at_move} acknowledged: {} events for {} deliveries, {on_b} stored by b; {moved}",
        all.len(),
        ids.len()
    );
    assert_eq!(events.len(), all.len(), "an event stored twice");

    // It runs on b, with its state; a keeps nothing of it.
    wait_healthy(&b, "gh");
    assert!(a.instance("gh").is_none(), "gh stopped on a");
    assert_eq!(
        nodes(&b)
            .iter()
            .find(|(name, _, _)| name == "b")
            .map(|(_, _, tenants)| tenants.clone()),
        Some(vec!["acme".to_owned()])
    );
    assert!(
        !a.ctl_json(&["tenants", "list"])
            .to_string()
            .contains("acme")
    );
    let credentials = b.ctl_json(&["credentials", "list", "--tenant", "acme"]);
    assert!(
        credentials.to_string().contains("hook-secret"),
        "{credentials}"
    );
    let flags = b.ctl_json(&["flags", "list", "--tenant", "acme"]);
    assert!(flags.to_string().contains("realtime_enrichment"), "{flags}");
    let dead = b.ctl_json(&["dlq", "list", "--tenant", "acme"]);
    assert!(
        dead.to_string().contains("bad"),
        "the dead letter moved: {dead}"
    );
    // The tenant's own token works on its new node.
    let listed = b.ctl_as(&admin, &["integrations", "list", "--tenant", "acme"]);
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    // Its audit trail came along, and b's chain verifies with it.
    let audit = b
        .ctl_json(&["audit", "list", "--tenant", "acme"])
        .to_string();
    for action in ["tenant.create", "credential.create", "tenant.move_in"] {
        assert!(audit.contains(action), "{action} in {audit}");
    }
    assert!(audit.contains("moved from node a"), "{audit}");
    assert!(b.ctl(&["audit", "verify"]).status.success());
    let removed = a.ctl_json(&["audit", "list"]).to_string();
    assert!(removed.contains("tenant.move_out"), "{removed}");
    // b read the credential for gh's Configure: the key was wrapped for its master key.
    let reads = b.ctl_json(&["audit", "list", "--tenant", "acme"]);
    let read_here = reads.as_array().expect("records").iter().any(|r| {
        r["action"] == "credential.read" && !r["detail"].to_string().contains("moved from")
    });
    assert!(read_here, "{reads}");
}
