//! The pull path end to end: a plugin streams events through `Collect`; valid ones reach
//! the JSONL sink exactly once, across kill -9 of the daemon or the plugin; invalid ones
//! are dead-lettered without holding up the rest.

use std::collections::HashSet;
use std::time::Duration;

use e2e_tests::{
    Daemon, DaemonSetup, PluginPackage, SinkLineCounter, World, pid_of, state_of, wait_for,
};

fn emitter(total: u64, invalid_every: Option<u64>) -> PluginPackage {
    let mut faults = vec![
        "--capabilities".to_owned(),
        "collect".to_owned(),
        "--emit".to_owned(),
        total.to_string(),
    ];
    if let Some(k) = invalid_every {
        faults.extend(["--invalid-every".to_owned(), k.to_string()]);
    }
    let refs: Vec<&str> = faults.iter().map(String::as_str).collect();
    PluginPackage {
        capabilities: vec!["collect".to_owned()],
        ..PluginPackage::testfault("emitter", &refs)
    }
}

fn setup() -> DaemonSetup {
    DaemonSetup::default()
        .instance("emitter")
        .process("collect_interval = \"100ms\"")
        // One sink file for the whole stream (no rotation), so the test reads it whole.
        .extra("[sinks]\njsonl_max_bytes = 4294967296\n")
}

fn assert_unique(ids: &[String]) {
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(
        unique.len(),
        ids.len(),
        "an event id appears twice in the sink"
    );
}

/// Waits for `expected` lines, counting only what was appended since the last look
/// (the sink grows to hundreds of MiB), then reads their ids.
fn wait_for_count(world: &World, expected: usize, limit: Duration) -> Vec<String> {
    let mut counter = SinkLineCounter::new(world);
    wait_for(&format!("{expected} events in the sink"), limit, || {
        (counter.count() >= expected).then_some(())
    });
    world.sink_ids()
}

#[test]
fn invalid_events_are_dead_lettered_and_the_rest_flow_on() {
    let world = World::new();
    world.install(&emitter(2_000, Some(500)));
    let daemon = world.start(&setup());
    let ids = wait_for_count(&world, 1_996, Duration::from_secs(60));
    assert_eq!(ids.len(), 1_996);
    assert_unique(&ids);
    wait_for("the dead-letter warning", Duration::from_secs(10), || {
        daemon
            .log_text()
            .contains("events failed validation")
            .then_some(())
    });
    // Collecting again from the cursor adds nothing.
    daemon.ctl_json(&["plugins", "restart", "emitter"]);
    wait_for("restarted", Duration::from_secs(30), || {
        daemon
            .instance("emitter")
            .filter(|i| state_of(i) == "healthy" && i["restarts"] == 0)
            .map(|_| ())
    });
    assert_eq!(world.sink_ids().len(), 1_996);

    // The dead letters, by their tenant's commands.
    let letters = daemon.ctl_json(&["dlq", "list", "--tenant", "system"]);
    let letters = letters.as_array().expect("a list");
    assert_eq!(letters.len(), 4);
    assert!(
        letters
            .iter()
            .all(|l| l["stage"] == "schema" && l["integration"] == "emitter")
    );
    let id = letters[0]["id"].as_str().expect("id");
    let shown = daemon.ctl_json(&["dlq", "show", "--tenant", "system", id]);
    assert!(
        shown["reason"]
            .as_str()
            .expect("reason")
            .contains("/category"),
        "{shown}"
    );
    assert!(
        shown["payload"]
            .as_str()
            .expect("payload")
            .contains("finance")
    );
    let elsewhere = daemon.ctl(&["dlq", "show", "--tenant", "acme", id]);
    assert!(
        !elsewhere.status.success(),
        "another tenant's queue does not have it"
    );
    let replay = daemon.ctl_json(&["dlq", "replay", "--tenant", "system", "--all"]);
    assert_eq!(replay["still_invalid"].as_array().expect("list").len(), 4);
    let refused = daemon.ctl(&["dlq", "purge", "--tenant", "system"]);
    assert!(!refused.status.success(), "purge names ids or --all");
    let purged = daemon.ctl_json(&["dlq", "purge", "--tenant", "system", id]);
    assert_eq!(purged["purged"], 1);
    assert_eq!(
        daemon
            .ctl_json(&["dlq", "list", "--tenant", "system"])
            .as_array()
            .map(Vec::len),
        Some(3)
    );
    let audit = daemon.ctl_json(&["audit", "list", "--kind", "dlq."]);
    assert_eq!(
        audit.as_array().map(Vec::len),
        Some(2),
        "replay and purge are audited"
    );

    // The latest events, as stored.
    let tail = daemon.ctl(&["events", "tail", "--tenant", "system", "--last", "3"]);
    assert!(tail.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&tail.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON event a line"))
        .collect();
    assert_eq!(lines.len(), 3);
    // Event 1999 is one of the invalid ones (every 500th).
    assert_eq!(lines[2]["data"]["metric.value"], 1_998, "the latest last");
}

fn kill9(pid: u32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9");
}

const STREAM: u64 = 1_000_000;

#[test]
fn kill_9_of_the_daemon_mid_stream_loses_and_duplicates_nothing() {
    let world = World::new();
    world.install(&emitter(STREAM, None));
    let mut daemon = world.start(&setup());
    wait_for("the stream under way", Duration::from_secs(60), || {
        (SinkLineCounter::new(&world).count() >= 5_000).then_some(())
    });
    daemon.signal(nix::sys::signal::Signal::SIGKILL);
    daemon.wait_exit(Duration::from_secs(10));
    let before = world.sink_ids().len();
    assert!((before as u64) < STREAM, "the kill landed mid-stream");

    let _daemon: Daemon = world.start_written();
    let ids = wait_for_count(&world, STREAM as usize, Duration::from_secs(300));
    assert_eq!(ids.len() as u64, STREAM);
    assert_unique(&ids);
}

#[test]
fn kill_9_of_the_plugin_mid_stream_loses_and_duplicates_nothing() {
    let world = World::new();
    world.install(&emitter(STREAM, None));
    let daemon = world.start(&setup());
    let first = daemon.wait_instance("emitter", "healthy", Duration::from_secs(30), |i| {
        state_of(i) == "healthy"
    });
    wait_for("the stream under way", Duration::from_secs(60), || {
        (SinkLineCounter::new(&world).count() >= 5_000).then_some(())
    });
    kill9(pid_of(&first));
    let ids = wait_for_count(&world, STREAM as usize, Duration::from_secs(300));
    assert_eq!(ids.len() as u64, STREAM);
    assert_unique(&ids);
    assert!(daemon.instance("emitter").expect("emitter")["restarts"].as_u64() >= Some(1));
}

#[test]
fn an_integrations_field_mappings_shape_its_events_without_code() {
    let world = World::new();
    world.install(&emitter(100, None));
    let daemon = world.start(
        &DaemonSetup::default()
            .with_master_key(&world.root.path().join("master.key"))
            .process("collect_interval = \"100ms\""),
    );
    daemon.ctl_json(&["tenants", "create", "acme"]);
    let config = world.root.path().join("mapped.toml");
    std::fs::write(
        &config,
        "[[mappings]]\nset = \"service.name\"\ntemplate = \"shard-{/i}\"\n[[mappings]]\ndrop = \"metric.value\"\n",
    )
    .expect("config");
    let bad = world.root.path().join("bad.toml");
    std::fs::write(&bad, "[[mappings]]\nset = \"original\"\nvalue = 1\n").expect("config");
    let add = |config: &std::path::Path| {
        daemon.ctl(&[
            "integrations",
            "add",
            "--tenant",
            "acme",
            "main",
            "--plugin",
            "emitter",
            "--config",
            &config.display().to_string(),
        ])
    };
    let refused = add(&bad);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("mapping rule 0: `original` is evidence"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let added = add(&config);
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    wait_for_count(&world, 100, Duration::from_secs(60));
    let tail = daemon.ctl(&["events", "tail", "--tenant", "acme", "--last", "100"]);
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&tail.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert_eq!(events.len(), 100);
    for event in &events {
        let i = event["data"]["original"]["i"].as_u64().expect("i");
        assert_eq!(event["data"]["service.name"], format!("shard-{i}"));
        assert!(event["data"].get("metric.value").is_none());
    }
}
