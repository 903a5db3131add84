//! Tenants, tokens and the audit trail through the admin socket: operators manage,
//! a tenant token sees and touches only its own tenant, and every change is audited in
//! a chain that verifies.

use std::time::Duration;

use e2e_tests::{Daemon, DaemonSetup, PluginPackage, World, state_of, wait_for};
use serde_json::Value;

const LONG: Duration = Duration::from_secs(30);

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn token_for(daemon: &Daemon, tenant: &str, scope: &str) -> String {
    let issued = daemon.ctl_json(&["tokens", "create", "--tenant", tenant, "--scope", scope]);
    assert_eq!(issued["tenant"], tenant);
    issued["token"].as_str().expect("token").to_owned()
}

fn two_tenants() -> (World, Daemon, String, String) {
    let world = World::new();
    world.install(&PluginPackage::testfault("steady", &[]));
    let setup = DaemonSetup::default()
        .tenant_instance("steady", "acme", "acme-steady")
        .tenant_instance("steady", "globex", "globex-steady");
    let daemon = world.start(&setup);
    daemon.ctl_json(&["tenants", "create", "acme"]);
    daemon.ctl_json(&["tenants", "create", "globex"]);
    let acme = token_for(&daemon, "acme", "admin");
    let globex = token_for(&daemon, "globex", "admin");
    (world, daemon, acme, globex)
}

#[test]
fn a_tenant_token_sees_only_its_own_tenant() {
    let (_world, daemon, acme, _globex) = two_tenants();
    daemon.wait_instance("acme-steady", "healthy", LONG, |i| state_of(i) == "healthy");
    daemon.wait_instance("globex-steady", "healthy", LONG, |i| {
        state_of(i) == "healthy"
    });

    let output = daemon.ctl_as(&acme, &["status"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let status: Value = serde_json::from_slice(&output.stdout).expect("json");
    let tenants: Vec<&str> = status["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .filter_map(|i| i["tenant"].as_str())
        .collect();
    assert_eq!(tenants, vec!["acme"]);
    assert!(!String::from_utf8_lossy(&output.stdout).contains("globex"));

    let records: Value =
        serde_json::from_slice(&daemon.ctl_as(&acme, &["audit", "list"]).stdout).expect("json");
    let records = records.as_array().expect("records");
    assert!(!records.is_empty());
    assert!(records.iter().all(|r| r["tenant"] == "acme"), "{records:?}");
}

#[test]
fn a_tenant_token_is_refused_everything_of_another_tenant_and_of_operators() {
    let (_world, daemon, acme, _globex) = two_tenants();
    let other_tenant = daemon.ctl_as(&acme, &["audit", "list", "--tenant", "globex"]);
    assert!(!other_tenant.status.success());
    assert!(
        stderr(&other_tenant).contains("this token belongs to another tenant"),
        "{}",
        stderr(&other_tenant)
    );
    let nonexistent = daemon.ctl_as(&acme, &["audit", "list", "--tenant", "initech"]);
    assert_eq!(
        stderr(&nonexistent),
        stderr(&other_tenant),
        "the refusal says nothing about the other tenant"
    );

    let operator_commands: &[&[&str]] = &[
        &["tenants", "list"],
        &["tenants", "create", "evil"],
        &["tenants", "delete", "globex"],
        &["tokens", "create", "--tenant", "globex"],
        &["tokens", "list", "--tenant", "globex"],
        &["tokens", "revoke", "000000000000"],
        &["plugins", "list"],
        &["plugins", "show", "steady"],
        &["plugins", "trust", "steady"],
        &["plugins", "restart", "steady"],
        &["plugins", "rescan"],
        &["audit", "verify"],
    ];
    for args in operator_commands {
        let output = daemon.ctl_as(&acme, args);
        assert!(
            !output.status.success(),
            "{args:?} succeeded with a tenant token"
        );
        let message = stderr(&output);
        assert!(
            message.contains("a tenant token cannot run it"),
            "{args:?}: {message}"
        );
        assert!(!message.contains("globex"), "{args:?} leaked: {message}");
    }
    // Nothing changed, and each attempt is on record in the token's own tenant only.
    let tenants = daemon.ctl_json(&["tenants", "list"]);
    assert_eq!(tenants.as_array().expect("list").len(), 2);
    let denied = daemon.ctl_json(&[
        "audit",
        "list",
        "--kind",
        "access.denied",
        "--limit",
        "1000",
    ]);
    let denied = denied.as_array().expect("records");
    assert!(denied.len() >= operator_commands.len(), "{denied:?}");
    assert!(
        denied
            .iter()
            .all(|r| r["tenant"] == "acme" && r["outcome"] == "denied"),
        "{denied:?}"
    );
}

#[test]
fn bad_revoked_and_ingest_tokens_are_refused() {
    let (_world, daemon, acme, _globex) = two_tenants();
    let garbage = daemon.ctl_as("blt_nonsense", &["status"]);
    assert!(
        stderr(&garbage).contains("invalid or revoked token"),
        "{}",
        stderr(&garbage)
    );

    let ingest = token_for(&daemon, "acme", "ingest");
    let refused = daemon.ctl_as(&ingest, &["status"]);
    assert!(
        stderr(&refused).contains("an ingest token only posts events"),
        "{}",
        stderr(&refused)
    );

    let id = daemon
        .ctl_json(&["tokens", "list", "--tenant", "acme"])
        .as_array()
        .expect("tokens")
        .iter()
        .find(|t| t["scope"] == "admin")
        .and_then(|t| t["id"].as_str())
        .expect("admin token id")
        .to_owned();
    assert!(!acme.is_empty());
    daemon.ctl_json(&["tokens", "revoke", &id]);
    let revoked = daemon.ctl_as(&acme, &["status"]);
    assert!(
        stderr(&revoked).contains("invalid or revoked token"),
        "{}",
        stderr(&revoked)
    );
}

#[test]
fn tokens_are_shown_once_and_stored_nowhere_in_plaintext() {
    let (world, daemon, acme, globex) = two_tenants();
    let listed =
        String::from_utf8_lossy(&daemon.ctl(&["tokens", "list", "--tenant", "acme"]).stdout)
            .into_owned();
    let audit = String::from_utf8_lossy(&daemon.ctl(&["audit", "list", "--limit", "1000"]).stdout)
        .into_owned();
    for token in [&acme, &globex] {
        let secret = token.rsplit('_').next().expect("secret part");
        assert!(!listed.contains(secret) && !audit.contains(secret));
        assert!(!daemon.log_text().contains(secret), "the log holds a token");
        for file in e2e_tests::files_under(&world.state_dir()) {
            let bytes = std::fs::read(&file).expect("read");
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{} holds a token",
                file.display()
            );
        }
    }
}

#[test]
fn changes_are_audited_in_a_chain_that_verifies() {
    let (_world, daemon, _acme, _globex) = two_tenants();
    daemon.ctl_json(&["tenants", "delete", "globex"]);
    let records = daemon.ctl_json(&["audit", "list"]);
    let actions: Vec<&str> = records
        .as_array()
        .expect("records")
        .iter()
        .filter_map(|r| r["action"].as_str())
        .collect();
    for expected in [
        "plugin.trust",
        "tenant.create",
        "token.create",
        "tenant.delete",
    ] {
        assert!(actions.contains(&expected), "no {expected} in {actions:?}");
    }
    let deleted = records
        .as_array()
        .expect("records")
        .iter()
        .find(|r| r["action"] == "tenant.delete")
        .expect("delete");
    assert_eq!(deleted["actor"], "uid:0");
    assert_eq!(deleted["tenant"], "globex");
    let only_tokens = daemon.ctl_json(&["audit", "list", "--kind", "token."]);
    assert!(only_tokens.as_array().expect("records").iter().all(|r| {
        r["action"]
            .as_str()
            .is_some_and(|a| a.starts_with("token."))
    }));

    let verdict = daemon.ctl_json(&["audit", "verify"]);
    assert_eq!(verdict["ok"], true, "{verdict}");
    assert_eq!(
        verdict["records"].as_u64(),
        records.as_array().map(|r| r.len() as u64)
    );
    let gone = daemon.ctl(&["tokens", "list", "--tenant", "globex"]);
    assert!(
        stderr(&gone).contains("tenant `globex` does not exist"),
        "{}",
        stderr(&gone)
    );
}

/// Copies a directory tree (a stopped daemon's state directory).
fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .expect("cp");
    assert!(status.success());
}

fn stop(mut daemon: Daemon) {
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    let (status, _) = daemon.wait_exit(LONG);
    assert!(status.success(), "{status}");
}

#[test]
fn a_rolled_back_or_truncated_audit_trail_is_caught_by_its_anchors() {
    let world = World::new();
    let setup = DaemonSetup::default().extra("[admin]\naudit_anchor_interval = \"100ms\"\n");
    let daemon = world.start(&setup);
    daemon.ctl_json(&["tenants", "create", "acme"]);
    stop(daemon);
    let older = world.root.path().join("older-state");
    copy_tree(&world.state_dir(), &older);

    // More changes, then the head the event stream carried off the host.
    let daemon = world.start_written();
    let revoked = daemon.ctl_json(&["tokens", "create", "--tenant", "acme"]);
    daemon.ctl_json(&["tokens", "revoke", revoked["id"].as_str().expect("id")]);
    let head = daemon.ctl_json(&["audit", "verify"])["head"]
        .as_str()
        .expect("head")
        .to_owned();
    let anchored = wait_for("the head's anchor event in the sink", LONG, || {
        world.sink_lines().into_iter().find_map(|line| {
            let event: Value = serde_json::from_str(&line).ok()?;
            (event["type"] == "com.betalogs.system.audit.anchor"
                && event["data"]["original"]["anchor"] == head.as_str())
            .then_some(event)
        })
    });
    assert_eq!(anchored["tenant"], "system");
    stop(daemon);

    // The database alone rolled back (the token revocation undone), the anchor file
    // beside it kept: verify fails.
    let newer = world.root.path().join("newer-state");
    std::fs::rename(world.state_dir(), &newer).expect("move");
    copy_tree(&older, &world.state_dir());
    std::fs::copy(
        newer.join("audit.anchor"),
        world.state_dir().join("audit.anchor"),
    )
    .expect("newer anchor");
    let daemon = world.start_written();
    let verdict = daemon.ctl(&["audit", "verify"]);
    assert!(!verdict.status.success(), "a rolled-back database verified");
    assert!(
        stderr(&verdict).contains("the anchor file outside the database records"),
        "{}",
        stderr(&verdict)
    );
    stop(daemon);

    // The whole state directory rolled back: intact on its own, caught by the anchor
    // kept off the host.
    std::fs::remove_dir_all(world.state_dir()).expect("remove");
    copy_tree(&older, &world.state_dir());
    let daemon = world.start_written();
    assert_eq!(daemon.ctl_json(&["audit", "verify"])["ok"], true);
    let verdict = daemon.ctl(&["audit", "verify", "--anchor", &head]);
    assert!(
        !verdict.status.success(),
        "a rolled-back state verified against its anchor"
    );
    assert!(
        stderr(&verdict).contains("but the anchor given records"),
        "{}",
        stderr(&verdict)
    );
}
