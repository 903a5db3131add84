//! Backup and restore end to end: `integrationctl backup` on a daemon that keeps taking
//! webhooks, `integrationd restore` into a new directory, and a daemon started there with
//! the same master key holds every tenant, credential, integration, flag, dead letter and
//! acknowledged event, and its audit trail verifies.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use e2e_tests::http;
use e2e_tests::{Daemon, DaemonSetup, PluginPackage, World, bin, wait_for};
use serde_json::Value;

use super::webhooks::{GOOD, hooks, wait_healthy};

fn setup(world: &World) -> DaemonSetup {
    DaemonSetup::default()
        .with_master_key(&world.root.path().join("master.key"))
        .process("collect_interval = \"200ms\"")
}

/// The delivery ids of the events a tenant's tail shows (the testfault plugin keeps the
/// delivery as each event's original).
fn delivered(daemon: &Daemon) -> BTreeSet<String> {
    daemon
        .tail_events("acme", 100_000)
        .iter()
        .filter_map(|line| {
            let event: Value = serde_json::from_str(line).expect("one event per line");
            event["data"]["original"]["id"].as_str().map(str::to_owned)
        })
        .collect()
}

/// `integrationd restore --from FILE --state-dir DIR`.
fn restore(file: &Path, state_dir: &Path) -> std::process::Output {
    Command::new(bin("integrationd"))
        .args(["restore", "--from"])
        .arg(file)
        .arg("--state-dir")
        .arg(state_dir)
        .output()
        .expect("run restore")
}

fn names(list: &Value, key: &str) -> BTreeSet<String> {
    list.as_array()
        .expect("a list")
        .iter()
        .filter_map(|item| item[key].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn a_backup_taken_under_load_restores_every_acknowledged_write() {
    let world = World::new();
    world.install(&hooks());
    world.install(&PluginPackage::collector("puller", &[]));
    let mut daemon = world.start(&setup(&world));
    daemon.ctl_json(&["tenants", "create", "acme"]);
    daemon.set_credential("acme", "hook-secret", "webhook-secret", b"not-for-logs");
    daemon.add_integration(&world, "acme", "gh", "hooks", &serde_json::json!({}));
    daemon.add_integration(&world, "acme", "orders", "puller", &serde_json::json!({}));
    daemon.ctl_json(&[
        "flags",
        "set",
        "--tenant",
        "acme",
        "realtime_enrichment=off",
    ]);
    wait_healthy(&daemon, "gh");
    let addr = daemon.http_addr();
    let post = |addr: &str, body: &str| {
        http::post_json(addr, "/v1/webhooks/acme/gh", &[GOOD], body).expect("the daemon answers")
    };
    let mixed = post(&addr, r#"{"id":"bad","events":2,"invalid":true}"#);
    assert_eq!(mixed.json()["dead_lettered"], 1, "{}", mixed.body);

    // Webhooks keep coming while the backup is taken.
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (acknowledged, stop, addr) = (acknowledged.clone(), stop.clone(), addr.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let id = format!("load{n}");
                let answer = http::post_json(
                    &addr,
                    "/v1/webhooks/acme/gh",
                    &[GOOD],
                    &format!(r#"{{"id":"{id}","events":1}}"#),
                )
                .expect("the daemon answers");
                assert_eq!(answer.status, 202, "{}", answer.body);
                acknowledged.lock().expect("lock").push(id);
                n += 1;
            }
        })
    };
    wait_for("50 acknowledged webhooks", Duration::from_secs(30), || {
        (acknowledged.lock().expect("lock").len() >= 50).then_some(())
    });
    let before: Vec<String> = acknowledged.lock().expect("lock").clone();
    let file = world.root.path().join("state.backup");
    let taken = daemon.ctl_json(&["backup", "--to", file.to_str().expect("utf8")]);
    // The daemon goes on taking webhooks through and after the backup.
    let at_end = acknowledged.lock().expect("lock").len();
    wait_for(
        "webhooks acknowledged after the backup",
        Duration::from_secs(30),
        || (acknowledged.lock().expect("lock").len() > at_end + 10).then_some(()),
    );
    stop.store(true, Ordering::Relaxed);
    load.join().expect("load");
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(&file).expect("the backup exists");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(taken["bytes"], meta.len());
    let raw = std::fs::read(&file).expect("read");
    assert!(
        !raw.windows(12).any(|w| w == b"not-for-logs"),
        "the credential stays encrypted in the backup"
    );
    assert!(!world.root.path().join("state.backup.partial").exists());
    let again = daemon.ctl(&["backup", "--to", file.to_str().expect("utf8")]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("exists; a backup never overwrites a file")
    );

    // A tenant's token cannot take one: a backup holds every tenant.
    let token = daemon.ctl_json(&["tokens", "create", "--tenant", "acme"])["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let theirs = world.root.path().join("tenant.backup");
    let refused = daemon.ctl_as(&token, &["backup", "--to", theirs.to_str().expect("utf8")]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("this command is for operators"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(!theirs.exists() && !world.root.path().join("tenant.backup.partial").exists());

    let original_audit = daemon.ctl_json(&["audit", "verify"]);
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    daemon.wait_exit(Duration::from_secs(20));

    let restored_world = World::new();
    std::fs::copy(
        world.root.path().join("master.key"),
        restored_world.root.path().join("master.key"),
    )
    .expect("the master key travels separately");
    let restored_run = restore(&file, &restored_world.state_dir());
    let said = String::from_utf8_lossy(&restored_run.stdout);
    assert!(
        restored_run.status.success(),
        "{}",
        String::from_utf8_lossy(&restored_run.stderr)
    );
    assert!(
        said.contains("1 tenants, 2 integrations, 1 credentials, 1 dead letters"),
        "{said}"
    );
    assert!(said.contains("audit trail intact"), "{said}");
    let twice = restore(&file, &restored_world.state_dir());
    assert!(!twice.status.success());
    assert!(String::from_utf8_lossy(&twice.stderr).contains("is not empty"));

    restored_world.install(&hooks());
    restored_world.install(&PluginPackage::collector("puller", &[]));
    let restored = restored_world.start(&setup(&restored_world));
    assert_eq!(
        names(&restored.ctl_json(&["tenants", "list"]), "name"),
        BTreeSet::from(["acme".to_owned()])
    );
    assert_eq!(
        names(
            &restored.ctl_json(&["credentials", "list", "--tenant", "acme"]),
            "name"
        ),
        BTreeSet::from(["hook-secret".to_owned()])
    );
    assert_eq!(
        names(
            &restored.ctl_json(&["integrations", "list", "--tenant", "acme"]),
            "name"
        ),
        BTreeSet::from(["gh".to_owned(), "orders".to_owned()])
    );
    let flags = restored
        .ctl_json(&["flags", "list", "--tenant", "acme"])
        .to_string();
    assert!(flags.contains("realtime_enrichment"), "{flags}");
    let dead = restored.ctl_json(&["dlq", "list", "--tenant", "acme"]);
    assert_eq!(dead.as_array().map(Vec::len), Some(1), "{dead}");
    let verified = restored.ctl_json(&["audit", "verify"]);
    assert_eq!(verified["ok"], true, "{verified}");
    assert!(
        verified["records"].as_u64() <= original_audit["records"].as_u64(),
        "{verified} {original_audit}"
    );
    let trail = restored
        .ctl_json(&["audit", "list", "--kind", "backup."])
        .to_string();
    assert!(
        trail.contains("backup.take"),
        "the backup holds its own record: {trail}"
    );

    let events = delivered(&restored);
    let missing: Vec<&String> = before.iter().filter(|id| !events.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "acknowledged before the backup, missing after: {missing:?}"
    );
    assert!(
        events.contains("bad"),
        "the valid sibling of the dead letter"
    );

    // The restored daemon carries on.
    wait_healthy(&restored, "gh");
    let fresh = post(&restored.http_addr(), r#"{"id":"after","events":1}"#);
    assert_eq!(fresh.status, 202, "{}", fresh.body);
}
