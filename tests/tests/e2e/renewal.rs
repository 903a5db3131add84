//! Expiring credentials: renewed through the plugin that owns them; when renewal fails
//! the integrations using them are disabled with the reason and an alert, and a working
//! credential brings them back; one nobody can renew is warned about ahead of expiry.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use e2e_tests::{Daemon, DaemonSetup, PluginPackage, World, pid_of, state_of, wait_for};
use serde_json::Value;

const LONG: Duration = Duration::from_secs(30);

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn start(package: PluginPackage) -> (World, Daemon) {
    let world = World::new();
    world.install(&package);
    let setup = DaemonSetup::default()
        .with_master_key(&world.root.path().join("master.key"))
        .extra("renewal_interval = \"100ms\"\n");
    let daemon = world.start(&setup);
    daemon.ctl_json(&["tenants", "create", "acme"]);
    (world, daemon)
}

fn store_oauth(daemon: &Daemon, expires_in_s: u64) {
    let secret = format!(
        r#"{{"access_token":"at-original","refresh_token":"rt","expires_at":{}}}"#,
        now_s() + expires_in_s
    );
    let output = daemon.ctl_stdin(
        None,
        &[
            "credentials",
            "set",
            "--tenant",
            "acme",
            "oauth",
            "--kind",
            "oauth2",
        ],
        secret.as_bytes(),
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn add_integration(world: &World, daemon: &Daemon, plugin: &str) {
    let config = world.root.path().join("c.toml");
    std::fs::write(&config, "[credentials]\ntoken = \"oauth\"\n").expect("config");
    let output = daemon.ctl(&[
        "integrations",
        "add",
        "--tenant",
        "acme",
        "main",
        "--plugin",
        plugin,
        "--config",
        config.to_str().expect("utf8"),
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Stores `value` as the api-key credential `oauth` of tenant acme.
fn set_api_key(daemon: &Daemon, value: &[u8]) {
    let output = daemon.ctl_stdin(
        None,
        &[
            "credentials",
            "set",
            "--tenant",
            "acme",
            "oauth",
            "--kind",
            "api-key",
        ],
        value,
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn main_instance(daemon: &Daemon) -> Option<Value> {
    daemon
        .instances()
        .into_iter()
        .find(|i| i["tenant"] == "acme" && i["integration"] == "main")
}

#[test]
fn an_expiring_credential_is_renewed_by_its_plugin_and_the_instance_reconfigured() {
    let (world, daemon) = start(PluginPackage::testfault("steady", &[]));
    store_oauth(&daemon, 120);
    add_integration(&world, &daemon, "steady");
    wait_for("healthy", LONG, || {
        main_instance(&daemon).filter(|i| state_of(i) == "healthy")
    });

    let renewed = wait_for("renewal", LONG, || {
        let list = daemon.ctl_json(&["credentials", "list", "--tenant", "acme"]);
        let expires = list[0]["expires_unix_ms"].as_u64().unwrap_or(0);
        (expires > (now_s() + 1800) * 1000).then_some(list)
    });
    assert_eq!(renewed[0]["kind"], "oauth2");
    let updates = daemon.ctl_json(&["audit", "list", "--kind", "credential.update"]);
    let renewal = updates
        .as_array()
        .expect("records")
        .iter()
        .find(|r| r["actor"] == "daemon:renewal")
        .unwrap_or_else(|| panic!("no renewal record: {updates}"))
        .clone();
    // The instance (re)starts after the renewal and reads the renewed credential.
    wait_for(
        "the instance configured with the renewed credential",
        LONG,
        || {
            let reads = daemon.ctl_json(&["audit", "list", "--kind", "credential.read"]);
            reads
                .as_array()
                .expect("records")
                .iter()
                .any(|r| {
                    r["actor"] == "plugin:steady/acme/main"
                        && r["seq"].as_u64() > renewal["seq"].as_u64()
                })
                .then_some(())
        },
    );
    wait_for("healthy after the renewal", LONG, || {
        main_instance(&daemon).filter(|i| state_of(i) == "healthy" && pid_of(i) > 0)
    });
    assert!(
        !daemon.log_text().contains("renewed-oauth"),
        "the renewed secret is not logged"
    );
}

#[test]
fn a_failed_renewal_disables_the_integration_until_a_working_credential_is_stored() {
    let (world, daemon) = start(PluginPackage::testfault("brittle", &["--renew-fails"]));
    store_oauth(&daemon, 120);
    add_integration(&world, &daemon, "brittle");

    let disabled = wait_for("the integration disabled", LONG, || {
        let list = daemon.ctl_json(&["integrations", "list", "--tenant", "acme"]);
        (list[0]["enabled"] == false).then_some(list)
    });
    let reason = disabled[0]["disabled_reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(
            "credential `oauth` renewal failed: token endpoint refused the refresh token"
        ),
        "{reason}"
    );
    wait_for("its instance stopped", LONG, || {
        main_instance(&daemon).is_none().then_some(())
    });
    let alerts = daemon.ctl_json(&["audit", "list", "--kind", "alert.credential"]);
    assert!(
        alerts[0]["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("disabled: main"),
        "{alerts}"
    );
    assert!(daemon.log_text().contains("integrations disabled"));

    // A new credential that does not expire: the integration comes back.
    let output = daemon.ctl_stdin(
        None,
        &[
            "credentials",
            "set",
            "--tenant",
            "acme",
            "oauth",
            "--kind",
            "oauth2",
        ],
        br#"{"access_token":"fresh"}"#,
    );
    assert!(output.status.success());
    wait_for("healthy again", LONG, || {
        main_instance(&daemon).filter(|i| state_of(i) == "healthy")
    });
    let list = daemon.ctl_json(&["integrations", "list", "--tenant", "acme"]);
    assert_eq!(list[0]["enabled"], true);
}

#[test]
fn a_credential_nobody_can_renew_is_warned_about_once_ahead_of_expiry() {
    let (_world, daemon) = start(PluginPackage::testfault("steady", &[]));
    let expires = rfc3339(now_s() + 600);
    let output = daemon.ctl_stdin(
        None,
        &[
            "credentials",
            "set",
            "--tenant",
            "acme",
            "pat",
            "--kind",
            "api-key",
            "--expires-at",
            &expires,
        ],
        b"ghp_personal",
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let warning = wait_for("an expiry warning", LONG, || {
        let records = daemon.ctl_json(&["audit", "list", "--kind", "credential.expiring"]);
        (!records.as_array().expect("records").is_empty()).then_some(records)
    });
    assert!(
        warning[0]["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("no plugin can renew it")
    );
    // A second credential's warning proves later passes ran: the first is not repeated.
    let output = daemon.ctl_stdin(
        None,
        &[
            "credentials",
            "set",
            "--tenant",
            "acme",
            "pat2",
            "--kind",
            "api-key",
            "--expires-at",
            &expires,
        ],
        b"ghp_other",
    );
    assert!(output.status.success());
    wait_for("the second warning", LONG, || {
        let records = daemon.ctl_json(&["audit", "list", "--kind", "credential.expiring"]);
        (records.as_array().map(Vec::len) == Some(2)).then_some(())
    });
    let records = daemon.ctl_json(&["audit", "list", "--kind", "credential.expiring"]);
    let targets: Vec<&str> = records
        .as_array()
        .expect("records")
        .iter()
        .filter_map(|r| r["target"].as_str())
        .collect();
    assert_eq!(
        targets,
        vec!["credential:pat2", "credential:pat"],
        "one warning each"
    );
}

/// RFC 3339 for a Unix time.
fn rfc3339(unix_s: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix_s)).to_string()
}

#[test]
fn a_rotated_credential_that_fails_validation_disables_its_integration() {
    let (world, daemon) = start(PluginPackage::testfault("steady", &[]));
    set_api_key(&daemon, b"good");
    add_integration(&world, &daemon, "steady");
    let first = wait_for("healthy", LONG, || {
        main_instance(&daemon).filter(|i| state_of(i) == "healthy")
    });

    // A working rotation reaches the plugin: its instance restarts with the new secret.
    set_api_key(&daemon, b"better");
    wait_for("restarted with the rotated credential", LONG, || {
        main_instance(&daemon).filter(|i| state_of(i) == "healthy" && pid_of(i) != pid_of(&first))
    });

    // A rotation to a credential the plugin refuses is caught at once.
    set_api_key(&daemon, b"revoked");
    let disabled = wait_for("disabled", LONG, || {
        let list = daemon.ctl_json(&["integrations", "list", "--tenant", "acme"]);
        (list[0]["enabled"] == false).then_some(list)
    });
    let reason = disabled[0]["disabled_reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("credential `oauth` failed validation")
            && reason.contains("401 Bad credentials"),
        "{reason}"
    );
    wait_for("stopped", LONG, || {
        main_instance(&daemon).is_none().then_some(())
    });

    set_api_key(&daemon, b"good-again");
    wait_for("healthy with the new credential", LONG, || {
        main_instance(&daemon).filter(|i| state_of(i) == "healthy")
    });
}

#[test]
fn credentials_revoked_upstream_disable_the_integration_until_replaced() {
    let world_marker = tempfile::tempdir().expect("tempdir");
    let revoked = world_marker.path().join("revoked");
    let package = PluginPackage::testfault(
        "steady",
        &["--reject-credentials-file", revoked.to_str().expect("utf8")],
    );
    let (world, daemon) = start(package);
    set_api_key(&daemon, b"good");
    add_integration(&world, &daemon, "steady");
    wait_for("healthy", LONG, || {
        main_instance(&daemon).filter(|i| state_of(i) == "healthy")
    });

    std::fs::write(&revoked, "").expect("revoke upstream");
    daemon.ctl_json(&["plugins", "restart", "steady"]);
    let refused = wait_for("refused in status", LONG, || {
        main_instance(&daemon).filter(|i| state_of(i) == "refused")
    });
    assert!(
        refused["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("rejected the credentials"),
        "{refused}"
    );
    let list = daemon.ctl_json(&["integrations", "list", "--tenant", "acme"]);
    assert_eq!(list[0]["enabled"], false);
    assert!(
        list[0]["disabled_reason"]
            .as_str()
            .unwrap_or_default()
            .contains("revoked upstream")
    );

    std::fs::remove_file(&revoked).expect("fixed upstream");
    set_api_key(&daemon, b"new-token");
    wait_for("healthy again", LONG, || {
        main_instance(&daemon).filter(|i| state_of(i) == "healthy")
    });
    assert_eq!(
        daemon.ctl_json(&["integrations", "list", "--tenant", "acme"])[0]["enabled"],
        true
    );
}
