//! `POST /v1/events/{tenant}`: platform events with a tenant ingest token (bearer),
//! validated like a plugin's, stored and delivered; everything else refused with its
//! documented status and nothing stored.

use std::time::Duration;

use e2e_tests::http;
use e2e_tests::{Daemon, DaemonSetup, World, wait_for};

use e2e_tests::platform_event as event;

fn token(daemon: &Daemon, tenant: &str, scope: &str) -> String {
    daemon.ctl_json(&["tokens", "create", "--tenant", tenant, "--scope", scope])["token"]
        .as_str()
        .expect("token")
        .to_owned()
}

#[test]
fn ingest_tokens_post_valid_events_and_nothing_else_gets_in() {
    let world = World::new();
    let daemon = world.start(&DaemonSetup::default());
    daemon.ctl_json(&["tenants", "create", "acme"]);
    daemon.ctl_json(&["tenants", "create", "globex"]);
    let ingest = token(&daemon, "acme", "ingest");
    let admin = token(&daemon, "acme", "admin");
    let globex = token(&daemon, "globex", "ingest");
    let addr = daemon.http_addr();
    let bearer = |t: &str| format!("Bearer {t}");
    let post = |auth: Option<&str>, body: &str| {
        let auth = auth.map(|a| ("Authorization", a));
        let headers: Vec<(&str, &str)> = auth.into_iter().collect();
        http::post_json(&addr, "/v1/events/acme", &headers, body).expect("answered")
    };

    let one = post(Some(&bearer(&ingest)), &event("acme", 1).to_string());
    assert_eq!(one.status, 202, "{}", one.body);
    assert_eq!(one.json()["events"], 1);
    let many = serde_json::json!([event("acme", 2), event("acme", 3), event("acme", 1)]);
    let batch = post(Some(&bearer(&ingest)), &many.to_string());
    assert_eq!(batch.status, 202, "{}", batch.body);
    assert_eq!(
        (
            batch.json()["events"].clone(),
            batch.json()["duplicates"].clone()
        ),
        (2.into(), 1.into())
    );
    let ndjson = format!("{}\n{}\n", event("acme", 4), event("acme", 5));
    let lines = http::request(
        &addr,
        "POST",
        "/v1/events/acme",
        &[
            ("Content-Type", "application/x-ndjson"),
            ("Authorization", &bearer(&ingest)),
        ],
        ndjson.as_bytes(),
        http::Framing::Length,
    )
    .expect("answered");
    assert_eq!(lines.status, 202, "{}", lines.body);

    let mut invalid = event("acme", 6);
    invalid["category"] = serde_json::json!("finance");
    let refused = post(Some(&bearer(&ingest)), &invalid.to_string());
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert_eq!(refused.json()["error"], "invalid_event");
    assert!(
        refused.json()["message"]
            .as_str()
            .expect("message")
            .contains("/category")
    );

    let cases = [
        ("no token", post(None, &event("acme", 7).to_string()), 401),
        (
            "not bearer",
            post(
                Some(&format!("Basic {ingest}")),
                &event("acme", 7).to_string(),
            ),
            401,
        ),
        (
            "a made-up token",
            post(Some("Bearer blt_nope_nope"), &event("acme", 7).to_string()),
            401,
        ),
        (
            "an admin token",
            post(Some(&bearer(&admin)), &event("acme", 7).to_string()),
            403,
        ),
        (
            "another tenant's token",
            post(Some(&bearer(&globex)), &event("acme", 7).to_string()),
            403,
        ),
        (
            "an event of another tenant",
            post(Some(&bearer(&ingest)), &event("globex", 8).to_string()),
            400,
        ),
        ("not an event", post(Some(&bearer(&ingest)), "42"), 400),
        ("not JSON", post(Some(&bearer(&ingest)), "{\"id\":"), 400),
        ("no events", post(Some(&bearer(&ingest)), "[]"), 400),
    ];
    for (name, response, status) in &cases {
        assert_eq!(response.status, *status, "{name}: {}", response.body);
        assert!(response.json()["error"].is_string(), "{name}");
    }

    let events = wait_for("5 events in the sink", Duration::from_secs(10), || {
        let events = world
            .sink_lines()
            .iter()
            .map(|line| serde_json::from_str::<serde_json::Value>(line).expect("one JSON event"))
            .collect::<Vec<_>>();
        (events.len() >= 5).then_some(events)
    });
    assert_eq!(events.len(), 5, "nothing refused was stored");
    assert!(events.iter().all(|e| e["tenant"] == "acme"));
}

#[test]
fn events_tail_follows_new_events_of_its_tenant_only() {
    let world = World::new();
    let daemon = world.start(&DaemonSetup::default());
    daemon.ctl_json(&["tenants", "create", "acme"]);
    daemon.ctl_json(&["tenants", "create", "globex"]);
    let acme = token(&daemon, "acme", "ingest");
    let globex = token(&daemon, "globex", "ingest");
    let addr = daemon.http_addr();
    let (mut follower, received) = follow(&world, "acme", None);
    for (tenant, token, n) in [("globex", &globex, 1), ("acme", &acme, 2)] {
        let posted = http::post_json(
            &addr,
            &format!("/v1/events/{tenant}"),
            &[("Authorization", &format!("Bearer {token}"))],
            &event(tenant, n).to_string(),
        )
        .expect("answered");
        assert_eq!(posted.status, 202, "{}", posted.body);
    }
    let line = received
        .recv_timeout(Duration::from_secs(10))
        .expect("the follower prints acme's event");
    let shown: serde_json::Value = serde_json::from_str(&line).expect("JSON");
    assert_eq!(shown["tenant"], "acme");
    assert_eq!(shown["data"]["original"]["n"], 2);
    // globex's event was committed first: being shown acme's first means it was not.
    let _ = follower.kill();
    let _ = follower.wait();
}

/// Posts `events` for `tenant` with an ingest token; the answer's JSON.
fn post_events(
    daemon: &Daemon,
    tenant: &str,
    token: &str,
    events: &serde_json::Value,
) -> serde_json::Value {
    let posted = http::post_json(
        &daemon.http_addr(),
        &format!("/v1/events/{tenant}"),
        &[("Authorization", &format!("Bearer {token}"))],
        &events.to_string(),
    )
    .expect("answered");
    assert!(
        posted.status == 202 || posted.status == 400,
        "{}",
        posted.body
    );
    posted.json()
}

/// `integrationctl events tail --follow` for `tenant` (as `token`, else as the operator),
/// and the lines it prints as they come.
fn follow(
    world: &World,
    tenant: &str,
    token: Option<&str>,
) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    use std::io::BufRead;
    let mut command = std::process::Command::new(e2e_tests::bin("integrationctl"));
    command
        .arg("--socket")
        .arg(world.admin_socket())
        .args(["events", "tail", "--tenant", tenant, "--follow"])
        .env_remove("INTEGRATIONCTL_TOKEN")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    if let Some(token) = token {
        command.env("INTEGRATIONCTL_TOKEN", token);
    }
    let mut follower = command
        .spawn()
        .expect("integrationctl events tail --follow");
    let stdout = follower.stdout.take().expect("stdout");
    let (lines, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    (follower, received)
}

fn tail(daemon: &Daemon, tenant: &str) -> Vec<String> {
    daemon.tail_events(tenant, 100)
}

#[test]
fn a_tenant_created_again_under_a_deleted_name_sees_nothing_of_the_old_one() {
    let world = World::new();
    let daemon = world.start(&DaemonSetup::default());
    daemon.ctl_json(&["tenants", "create", "acme"]);
    let ingest = token(&daemon, "acme", "ingest");
    let mut invalid = event("acme", 3);
    invalid["category"] = serde_json::json!("finance");
    let answer = post_events(
        &daemon,
        "acme",
        &ingest,
        &serde_json::json!([event("acme", 1), event("acme", 2), invalid]),
    );
    assert_eq!(answer["events"], 2, "{answer}");
    assert_eq!(tail(&daemon, "acme").len(), 2);
    let letters = daemon.ctl_json(&["dlq", "list", "--tenant", "acme"]);
    assert_eq!(letters.as_array().map(Vec::len), Some(1), "{letters}");

    daemon.ctl_json(&["tenants", "delete", "acme"]);
    daemon.ctl_json(&["tenants", "create", "acme"]);
    let admin = token(&daemon, "acme", "admin");
    assert!(
        tail(&daemon, "acme").is_empty(),
        "the old tenant's events are readable"
    );
    let letters = daemon.ctl_json(&["dlq", "list", "--tenant", "acme"]);
    assert_eq!(letters.as_array().map(Vec::len), Some(0), "{letters}");

    // Its audit trail starts at its creation, numbered among its own records.
    let output = daemon.ctl_as(&admin, &["audit", "list"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let records: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    let records = records.as_array().expect("records");
    let actions: Vec<&str> = records
        .iter()
        .filter_map(|r| r["action"].as_str())
        .collect();
    assert_eq!(actions, ["token.create", "tenant.create"], "{records:?}");
    let seqs: Vec<u64> = records.iter().filter_map(|r| r["seq"].as_u64()).collect();
    assert_eq!(
        seqs,
        [2, 1],
        "tenants see their own numbering, not the global one"
    );
    assert!(
        records
            .iter()
            .all(|r| r["prev_sha256"].as_str().unwrap_or("").is_empty())
    );
    // The operator's trail keeps the deletion.
    let all = daemon.ctl_json(&["audit", "list", "--tenant", "acme"]);
    assert!(
        all.as_array()
            .expect("records")
            .iter()
            .any(|r| r["action"] == "tenant.delete"),
        "{all}"
    );

    // The same ids are the new tenant's own events, not duplicates of the old ones.
    let ingest = token(&daemon, "acme", "ingest");
    let again = post_events(
        &daemon,
        "acme",
        &ingest,
        &serde_json::json!([event("acme", 1), event("acme", 2)]),
    );
    assert_eq!(
        (again["events"].clone(), again["duplicates"].clone()),
        (2.into(), 0.into()),
        "{again}"
    );
    assert_eq!(tail(&daemon, "acme").len(), 2);
}

#[test]
fn a_followed_tail_ends_when_its_token_is_revoked() {
    let world = World::new();
    let daemon = world.start(&DaemonSetup::default());
    daemon.ctl_json(&["tenants", "create", "acme"]);
    let issued = daemon.ctl_json(&["tokens", "create", "--tenant", "acme", "--scope", "admin"]);
    let admin = issued["token"].as_str().expect("token").to_owned();
    let id = issued["id"].as_str().expect("id").to_owned();
    let ingest = token(&daemon, "acme", "ingest");
    let (mut follower, received) = follow(&world, "acme", Some(&admin));
    post_events(&daemon, "acme", &ingest, &event("acme", 1));
    received
        .recv_timeout(Duration::from_secs(10))
        .expect("the follower prints the event");
    daemon.ctl_json(&["tokens", "revoke", &id]);
    let status = wait_for("the follower to end", Duration::from_secs(10), || {
        follower.try_wait().expect("wait")
    });
    assert!(
        !status.success(),
        "a revoked stream ended as if it were done"
    );
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut follower.stderr.take().expect("stderr"), &mut stderr)
        .expect("stderr");
    assert!(stderr.contains("revoked"), "{stderr}");
}
