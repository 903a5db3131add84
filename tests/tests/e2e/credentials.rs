//! Credentials through the CLI and the daemon: secrets stay secret, tenants stay apart,
//! writes survive kill -9, and key trouble is a clear error that touches nothing.

use std::time::Duration;

use e2e_tests::{Daemon, DaemonSetup, World, wait_for};
use serde_json::Value;

const SECRET: &str = "wJalrXUtnFEMI-K7MDENG-bPxRfiCY-EXAMPLEKEY";

fn aws_secret() -> String {
    format!(r#"{{"access_key_id":"AKIAIOSFODNN7EXAMPLE","secret_access_key":"{SECRET}"}}"#)
}

/// Starts the daemon on `world`'s config file, which must fail; its stderr.
fn refused_start(world: &World) -> String {
    let output = std::process::Command::new(e2e_tests::bin("integrationd"))
        .arg("--config")
        .arg(world.config_path())
        .output()
        .expect("run");
    assert!(!output.status.success(), "the daemon started");
    stderr(&output)
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn world_with_key() -> (World, DaemonSetup) {
    let world = World::new();
    let setup = DaemonSetup::default().with_master_key(&world.root.path().join("master.key"));
    (world, setup)
}

fn set(
    daemon: &Daemon,
    token: Option<&str>,
    tenant: &str,
    name: &str,
    kind: &str,
    secret: &str,
) -> std::process::Output {
    daemon.ctl_stdin(
        token,
        &[
            "credentials",
            "set",
            "--tenant",
            tenant,
            name,
            "--kind",
            kind,
        ],
        secret.as_bytes(),
    )
}

#[test]
fn a_secret_stored_through_the_cli_appears_nowhere_in_plaintext() {
    let (world, setup) = world_with_key();
    let daemon = world.start(&setup);
    daemon.ctl_json(&["tenants", "create", "acme"]);
    let stored = set(&daemon, None, "acme", "prod-aws", "aws", &aws_secret());
    assert!(stored.status.success(), "{}", stderr(&stored));
    let info: Value = serde_json::from_slice(&stored.stdout).expect("json");
    assert_eq!(info["kind"], "aws");

    // A malformed secret is refused without being echoed.
    let bad = set(
        &daemon,
        None,
        "acme",
        "broken",
        "basic",
        &format!(r#"{{"username":"{SECRET}"}}"#),
    );
    assert!(
        stderr(&bad).contains("lacks `password`"),
        "{}",
        stderr(&bad)
    );

    let mut seen = String::new();
    for args in [
        &["credentials", "list", "--tenant", "acme"][..],
        &["audit", "list", "--limit", "1000"],
        &["status"],
    ] {
        let output = daemon.ctl(args);
        seen.push_str(&String::from_utf8_lossy(&output.stdout));
        seen.push_str(&stderr(&output));
    }
    seen.push_str(&stderr(&bad));
    seen.push_str(&daemon.log_text());
    assert!(seen.contains("prod-aws"));
    assert!(
        !seen.contains(SECRET),
        "a secret reached the output or the log"
    );
    for file in e2e_tests::files_under(&world.state_dir()) {
        let bytes = std::fs::read(&file).expect("read");
        assert!(
            !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
            "{} holds the secret",
            file.display()
        );
    }
    let listed = daemon.ctl_json(&["credentials", "list", "--tenant", "acme"]);
    assert_eq!(listed[0]["name"], "prod-aws");
    assert!(listed[0]["created_unix_ms"].as_u64() > Some(0));
}

#[test]
fn a_tenant_token_cannot_touch_another_tenants_credentials() {
    let (world, setup) = world_with_key();
    let daemon = world.start(&setup);
    for tenant in ["acme", "globex"] {
        daemon.ctl_json(&["tenants", "create", tenant]);
        assert!(
            set(&daemon, None, tenant, "key", "api-key", "v")
                .status
                .success()
        );
    }
    let acme = daemon.ctl_json(&["tokens", "create", "--tenant", "acme"])["token"]
        .as_str()
        .expect("token")
        .to_owned();

    assert!(
        set(&daemon, Some(&acme), "acme", "own", "api-key", "mine")
            .status
            .success(),
        "its own tenant works"
    );
    let listed: Value = serde_json::from_slice(
        &daemon
            .ctl_as(&acme, &["credentials", "list", "--tenant", "acme"])
            .stdout,
    )
    .expect("json");
    assert_eq!(listed.as_array().map(Vec::len), Some(2));

    let attempts: Vec<std::process::Output> = vec![
        set(
            &daemon,
            Some(&acme),
            "globex",
            "key",
            "api-key",
            "overwrite",
        ),
        daemon.ctl_stdin(
            Some(&acme),
            &[
                "credentials",
                "rotate",
                "--tenant",
                "globex",
                "key",
                "--kind",
                "api-key",
            ],
            b"x",
        ),
        daemon.ctl_as(&acme, &["credentials", "list", "--tenant", "globex"]),
        daemon.ctl_as(
            &acme,
            &["credentials", "delete", "--tenant", "globex", "key"],
        ),
        daemon.ctl_as(&acme, &["credentials", "rotate-key", "--tenant", "globex"]),
        daemon.ctl_as(&acme, &["credentials", "list", "--tenant", "initech"]),
    ];
    for output in &attempts {
        assert!(!output.status.success());
        let message = stderr(output);
        assert!(
            message.contains("this token belongs to another tenant"),
            "{message}"
        );
        assert!(
            !message.contains("key") || !message.contains("globex"),
            "leaked: {message}"
        );
    }
    let master = daemon.ctl_as(
        &acme,
        &[
            "credentials",
            "rotate-master",
            "--new-master-key",
            "file:/tmp/x",
        ],
    );
    assert!(stderr(&master).contains("a tenant token cannot run it"));
    let globex = daemon.ctl_json(&["credentials", "list", "--tenant", "globex"]);
    assert_eq!(globex.as_array().map(Vec::len), Some(1), "untouched");
    assert_eq!(globex[0]["updated_unix_ms"], globex[0]["created_unix_ms"]);
}

#[test]
fn acknowledged_writes_survive_kill_9_and_the_audit_chain_verifies() {
    let (world, setup) = world_with_key();
    let mut daemon = world.start(&setup);
    daemon.ctl_json(&["tenants", "create", "acme"]);
    // A writer streams credentials while the daemon is killed under it.
    let acknowledged = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let writer = {
        let acknowledged = acknowledged.clone();
        let socket = daemon.socket.clone();
        let log = daemon.log.clone();
        std::thread::spawn(move || {
            let client = Daemon {
                child: None,
                socket,
                log,
            };
            // Credential writes and configuration (flag) writes, interleaved.
            for i in 0..100_000 {
                let name = format!("cred-{i}");
                if !set(
                    &client,
                    None,
                    "acme",
                    &name,
                    "api-key",
                    &format!("secret-{i}"),
                )
                .status
                .success()
                {
                    break;
                }
                acknowledged.lock().expect("lock").push(name);
                let flag = format!("plugin.p{i}=off");
                if !client
                    .ctl(&["flags", "set", "--tenant", "acme", &flag])
                    .status
                    .success()
                {
                    break;
                }
                acknowledged
                    .lock()
                    .expect("lock")
                    .push(format!("flag:plugin.p{i}"));
            }
        })
    };
    wait_for("20 acknowledged writes", Duration::from_secs(60), || {
        (acknowledged.lock().expect("lock").len() >= 20).then_some(())
    });
    daemon.signal(nix::sys::signal::Signal::SIGKILL);
    daemon.wait_exit(Duration::from_secs(10));
    writer.join().expect("writer");
    let acknowledged = acknowledged.lock().expect("lock").clone();
    assert!(acknowledged.len() >= 20);

    let daemon = world.start_written();
    let listed = daemon.ctl_json(&["credentials", "list", "--tenant", "acme"]);
    let names: Vec<&str> = listed
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    let flags = daemon.ctl_json(&["flags", "list", "--tenant", "acme"]);
    let flags: Vec<String> = flags
        .as_array()
        .expect("flags")
        .iter()
        .filter(|f| f["source"] == "tenant" && f["value"] == false)
        .filter_map(|f| f["key"].as_str().map(|k| format!("flag:{k}")))
        .collect();
    for name in &acknowledged {
        let there = names.contains(&name.as_str()) || flags.contains(name);
        assert!(there, "acknowledged {name} is missing after kill -9");
    }
    assert!(
        names.len() + flags.len() <= acknowledged.len() + 1,
        "at most the in-flight write extra"
    );
    let verdict = daemon.ctl_json(&["audit", "verify"]);
    assert_eq!(verdict["ok"], true, "{verdict}");
    let creates = daemon.ctl_json(&[
        "audit",
        "list",
        "--kind",
        "credential.create",
        "--limit",
        "1000",
    ]);
    assert_eq!(
        creates.as_array().map(Vec::len),
        Some(names.len()),
        "one audit record per stored credential, none half-applied"
    );
    let flag_sets = daemon.ctl_json(&["audit", "list", "--kind", "flag.set", "--limit", "1000"]);
    assert_eq!(
        flag_sets.as_array().map(Vec::len),
        Some(flags.len()),
        "one audit record per flag write"
    );
}

#[test]
fn key_trouble_is_a_clear_error_that_touches_nothing() {
    let (world, setup) = world_with_key();
    let mut daemon = world.start(&setup);
    daemon.ctl_json(&["tenants", "create", "acme"]);
    assert!(
        set(&daemon, None, "acme", "k", "api-key", "v")
            .status
            .success()
    );
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    daemon.wait_exit(Duration::from_secs(10));

    let config = std::fs::read_to_string(world.config_path()).expect("config");
    let key = world.root.path().join("master.key");
    let run = |config_text: &str| {
        std::fs::write(world.config_path(), config_text).expect("config");
        refused_start(&world)
    };
    let other = world.root.path().join("other.key");
    let wrong = run(&config.replace(&key.display().to_string(), &other.display().to_string()));
    assert!(
        wrong.contains("is not the one this database was set up with"),
        "{wrong}"
    );
    let missing = run(&config
        .replace(
            "generate_missing_key = true",
            "generate_missing_key = false",
        )
        .replace(&key.display().to_string(), "/nonexistent/master.key"));
    assert!(
        missing.contains("master key file /nonexistent/master.key does not exist"),
        "{missing}"
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let loose = run(&config);
    assert!(
        loose.contains("mode 644") && loose.contains("chmod 600"),
        "{loose}"
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");

    {
        let db = sled::open(world.state_dir().join("db")).expect("open db");
        db.insert(b"format_version", &99u32.to_be_bytes())
            .expect("bump");
        db.flush().expect("flush");
    }
    let newer = run(&config);
    assert!(
        newer.contains("written by a newer integrationd (format 99"),
        "{newer}"
    );
    {
        let db = sled::open(world.state_dir().join("db")).expect("open db");
        db.insert(b"format_version", &1u32.to_be_bytes())
            .expect("restore");
        db.flush().expect("flush");
    }

    std::fs::write(world.config_path(), &config).expect("config");
    let daemon = world.start_written();
    let listed = daemon.ctl_json(&["credentials", "list", "--tenant", "acme"]);
    assert_eq!(listed[0]["name"], "k", "nothing was touched");
    assert_eq!(daemon.ctl_json(&["audit", "verify"])["ok"], true);
    wait_for("status", Duration::from_secs(5), || {
        daemon.ctl(&["status"]).status.success().then_some(())
    });
}

#[test]
fn deleting_a_tenant_destroys_its_credentials() {
    let (world, setup) = world_with_key();
    let daemon = world.start(&setup);
    daemon.ctl_json(&["tenants", "create", "acme"]);
    assert!(
        set(&daemon, None, "acme", "k", "api-key", "v")
            .status
            .success()
    );
    let deleted = daemon.ctl_json(&["tenants", "delete", "acme"]);
    assert_eq!(deleted["name"], "acme");
    daemon.ctl_json(&["tenants", "create", "acme"]);
    assert_eq!(
        daemon
            .ctl_json(&["credentials", "list", "--tenant", "acme"])
            .as_array()
            .map(Vec::len),
        Some(0)
    );
    let record = daemon.ctl_json(&["audit", "list", "--kind", "tenant.delete"]);
    assert!(
        record[0]["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("1 credential(s) destroyed"),
        "{record}"
    );
}

#[test]
fn without_a_master_key_credentials_are_refused_with_the_reason() {
    let world = World::new();
    let daemon = world.start(&DaemonSetup::default());
    daemon.ctl_json(&["tenants", "create", "acme"]);
    let output = set(&daemon, None, "acme", "k", "api-key", "v");
    assert!(
        stderr(&output).contains("no master key is configured (credentials.master_key)"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn tenant_and_master_keys_rotate_online_and_the_new_master_key_works_after_a_restart() {
    let (world, setup) = world_with_key();
    let mut daemon = world.start(&setup);
    daemon.ctl_json(&["tenants", "create", "acme"]);
    assert!(
        set(&daemon, None, "acme", "prod-aws", "aws", &aws_secret())
            .status
            .success()
    );

    let rotated = daemon.ctl_json(&["credentials", "rotate-key", "--tenant", "acme"]);
    assert_eq!(rotated["reencrypted"], 1);
    assert_eq!(
        daemon.ctl_json(&["credentials", "list", "--tenant", "acme"])[0]["key_version"],
        2
    );

    let new_key = world.root.path().join("master-2.key");
    supervisor::credentials::generate_master_key_file(&new_key).expect("new key");
    let source = format!("file:{}", new_key.display());
    let master = daemon.ctl_json(&["credentials", "rotate-master", "--new-master-key", &source]);
    assert!(
        master["recipient"]
            .as_str()
            .unwrap_or_default()
            .starts_with("age1")
    );
    // Online: the running daemon keeps serving and storing.
    assert!(
        set(&daemon, None, "acme", "after", "api-key", "v")
            .status
            .success()
    );

    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    daemon.wait_exit(Duration::from_secs(10));
    let old_key = world.root.path().join("master.key").display().to_string();
    let config = std::fs::read_to_string(world.config_path()).expect("config");
    std::fs::write(
        world.config_path(),
        config.replace(&old_key, &new_key.display().to_string()),
    )
    .expect("config");
    let daemon = world.start_written();
    let listed = daemon.ctl_json(&["credentials", "list", "--tenant", "acme"]);
    assert_eq!(listed.as_array().map(Vec::len), Some(2));
    // Re-encrypting decrypts every credential: the new master unwraps the tenant key.
    assert_eq!(
        daemon.ctl_json(&["credentials", "rotate-key", "--tenant", "acme"])["reencrypted"],
        2
    );
    let actions = daemon.ctl_json(&["audit", "list", "--kind", "credentials."]);
    let actions: Vec<&str> = actions
        .as_array()
        .expect("records")
        .iter()
        .filter_map(|r| r["action"].as_str())
        .collect();
    assert!(
        actions.contains(&"credentials.tenant_key_rotate")
            && actions.contains(&"credentials.master_rotate"),
        "{actions:?}"
    );
    assert_eq!(daemon.ctl_json(&["audit", "verify"])["ok"], true);
}

#[test]
fn a_missing_master_key_stops_the_daemon_before_its_state_directory_exists() {
    let world = World::new();
    world.write_config(
        &DaemonSetup::default()
            .extra("[credentials]\nmaster_key = \"file:/nonexistent/master.key\"\n"),
    );
    let text = refused_start(&world);
    assert!(
        text.contains("master key file /nonexistent/master.key does not exist"),
        "{text}"
    );
    assert!(
        !world.state_dir().exists(),
        "the state directory was created before the key was read"
    );
}
