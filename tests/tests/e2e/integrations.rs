//! Integrations and flags: configurations are admitted through the plugin's schema and
//! Check, versioned with diffs, and a change to one tenant's integration touches only
//! that tenant's plugin process.

use std::time::Duration;

use e2e_tests::{Daemon, DaemonSetup, PluginPackage, World, pid_of, state_of, wait_for};
use serde_json::Value;

const LONG: Duration = Duration::from_secs(30);

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn start() -> (World, Daemon) {
    let world = World::new();
    world.install(&PluginPackage::testfault("steady", &[]));
    let setup = DaemonSetup::default().with_master_key(&world.root.path().join("master.key"));
    let daemon = world.start(&setup);
    for tenant in ["acme", "globex"] {
        daemon.ctl_json(&["tenants", "create", tenant]);
    }
    (world, daemon)
}

fn config_file(world: &World, name: &str, text: &str) -> String {
    let path = world.root.path().join(name);
    std::fs::write(&path, text).expect("config file");
    path.display().to_string()
}

fn add(daemon: &Daemon, tenant: &str, name: &str, config: &str) -> std::process::Output {
    daemon.ctl(&[
        "integrations",
        "add",
        "--tenant",
        tenant,
        name,
        "--plugin",
        "steady",
        "--config",
        config,
    ])
}

fn instance(daemon: &Daemon, tenant: &str, name: &str) -> Option<Value> {
    daemon
        .instances()
        .into_iter()
        .find(|i| i["tenant"] == tenant && i["integration"] == name)
}

fn healthy(daemon: &Daemon, tenant: &str, name: &str) -> Value {
    wait_for(&format!("{tenant}/{name} healthy"), LONG, || {
        instance(daemon, tenant, name).filter(|i| state_of(i) == "healthy")
    })
}

#[test]
fn a_configuration_is_admitted_only_through_the_schema_and_the_check() {
    let (world, daemon) = start();
    let bad_schema = config_file(&world, "bad.toml", "poll = \"often\"\nflavour = \"x\"\n");
    let refused = add(&daemon, "acme", "gh", &bad_schema);
    assert!(!refused.status.success());
    let message = stderr(&refused);
    assert!(
        message.contains("does not match plugin `steady`'s schema")
            && message.contains("/poll:")
            && message.contains("flavour"),
        "{message}"
    );

    let forbidden = config_file(
        &world,
        "forbidden.toml",
        "repositories = [\"org/app\", \"org/secret\"]\nforbidden = [\"org/secret\"]\n",
    );
    let message = stderr(&add(&daemon, "acme", "gh", &forbidden));
    assert!(
        message.contains("check failed")
            && message.contains("org/secret: missing permission contents:read"),
        "{message}"
    );
    assert!(
        !message.contains("org/app: missing"),
        "only the failing resource is named: {message}"
    );

    let missing_credential =
        config_file(&world, "cred.toml", "[credentials]\ntoken = \"gh-token\"\n");
    let message = stderr(&add(&daemon, "acme", "gh", &missing_credential));
    assert!(
        message.contains("`credentials.token` names `gh-token`, which tenant `acme` does not have"),
        "{message}"
    );
    assert!(daemon.instances().is_empty(), "nothing refused was started");
    assert_eq!(
        daemon
            .ctl_json(&["integrations", "list", "--tenant", "acme"])
            .as_array()
            .map(Vec::len),
        Some(0)
    );

    let stored = daemon.ctl_stdin(
        None,
        &[
            "credentials",
            "set",
            "--tenant",
            "acme",
            "gh-token",
            "--kind",
            "api-key",
        ],
        b"ghp_example",
    );
    assert!(stored.status.success(), "{}", stderr(&stored));
    let good = config_file(
        &world,
        "good.toml",
        "repositories = [\"org/app\"]\npoll = 1\n[credentials]\ntoken = \"gh-token\"\n",
    );
    let added = add(&daemon, "acme", "gh", &good);
    assert!(added.status.success(), "{}", stderr(&added));
    let info: Value = serde_json::from_slice(&added.stdout).expect("json");
    assert_eq!(info["version"], 1);
    assert_eq!(info["check"][0]["resource"], "org/app");
    healthy(&daemon, "acme", "gh");
    wait_for("Configure with the credential", LONG, || {
        daemon
            .log_text()
            .lines()
            .any(|l| l.contains("configured") && l.contains("acme") && l.contains("token"))
            .then_some(())
    });
    let reads = daemon.ctl_json(&["audit", "list", "--kind", "credential.read"]);
    assert!(
        reads
            .as_array()
            .expect("records")
            .iter()
            .any(|r| r["actor"] == "plugin:steady/acme/gh"),
        "the instance's credential read is audited: {reads}"
    );
    assert!(!daemon.log_text().contains("ghp_example"));
}

#[test]
fn an_update_restarts_only_that_tenants_instance_and_is_versioned() {
    let (world, daemon) = start();
    let v1 = config_file(
        &world,
        "v1.toml",
        "repositories = [\"org/app\"]\npoll = 1\n",
    );
    assert!(add(&daemon, "acme", "main", &v1).status.success());
    assert!(add(&daemon, "globex", "main", &v1).status.success());
    let acme_before = pid_of(&healthy(&daemon, "acme", "main"));
    let globex_before = healthy(&daemon, "globex", "main");

    let v2 = config_file(
        &world,
        "v2.toml",
        "repositories = [\"org/app\", \"org/web\"]\npoll = 2\n",
    );
    let updated = daemon.ctl(&[
        "integrations",
        "update",
        "--tenant",
        "acme",
        "main",
        "--config",
        &v2,
    ]);
    assert!(updated.status.success(), "{}", stderr(&updated));
    let acme_after = wait_for("acme restarted", LONG, || {
        instance(&daemon, "acme", "main")
            .filter(|i| state_of(i) == "healthy" && pid_of(i) != acme_before)
    });
    assert_ne!(pid_of(&acme_after), acme_before);
    let globex_after = instance(&daemon, "globex", "main").expect("globex");
    assert_eq!(
        pid_of(&globex_after),
        pid_of(&globex_before),
        "tenant B's process is untouched"
    );
    assert_eq!(globex_after["restarts"], 0);
    assert_eq!(
        globex_after["since_unix_ms"], globex_before["since_unix_ms"],
        "not even a state change"
    );

    let history = daemon.ctl_json(&["integrations", "history", "--tenant", "acme", "main"]);
    assert_eq!(history[1]["version"], 2);
    assert_eq!(history[1]["author"], "uid:0");
    let diff = history[1]["diff"].as_str().unwrap_or_default();
    assert!(
        diff.contains("~ /poll: 1 -> 2") && diff.contains("/repositories"),
        "{diff}"
    );

    let rolled = daemon.ctl_json(&[
        "integrations",
        "rollback",
        "--tenant",
        "acme",
        "main",
        "--to",
        "1",
    ]);
    assert_eq!(rolled["version"], 3);
    let history = daemon.ctl_json(&["integrations", "history", "--tenant", "acme", "main"]);
    assert_eq!(history[2]["change"], "rollback to 1");
    assert_eq!(history[2]["config_json"], history[0]["config_json"]);
    let missing = daemon.ctl(&[
        "integrations",
        "rollback",
        "--tenant",
        "acme",
        "main",
        "--to",
        "9",
    ]);
    assert!(stderr(&missing).contains("has no version 9"));
}

#[test]
fn disable_enable_remove_and_plugin_flags_act_on_one_tenant() {
    let (world, daemon) = start();
    let config = config_file(&world, "c.toml", "poll = 1\n");
    assert!(add(&daemon, "acme", "main", &config).status.success());
    assert!(add(&daemon, "globex", "main", &config).status.success());
    healthy(&daemon, "acme", "main");
    let globex_pid = pid_of(&healthy(&daemon, "globex", "main"));

    let disabled = daemon.ctl_json(&["integrations", "disable", "--tenant", "acme", "main"]);
    assert_eq!(disabled["enabled"], false);
    assert!(
        disabled["disabled_reason"]
            .as_str()
            .unwrap_or_default()
            .contains("uid:0")
    );
    wait_for("acme stopped", LONG, || {
        instance(&daemon, "acme", "main").is_none().then_some(())
    });
    daemon.ctl_json(&["integrations", "enable", "--tenant", "acme", "main"]);
    healthy(&daemon, "acme", "main");

    let flag = daemon.ctl_json(&["flags", "set", "--tenant", "acme", "plugin.steady=off"]);
    assert_eq!(flag["source"], "tenant");
    wait_for("acme stopped by the flag", LONG, || {
        instance(&daemon, "acme", "main").is_none().then_some(())
    });
    let flags = daemon.ctl_json(&["flags", "list", "--tenant", "acme"]);
    assert!(
        flags
            .as_array()
            .expect("flags")
            .iter()
            .any(|f| f["key"] == "plugin.steady" && f["value"] == false)
    );
    let refused = add(&daemon, "acme", "other", &config);
    assert!(
        stderr(&refused).contains("plugin `steady` is disabled for tenant `acme`"),
        "{}",
        stderr(&refused)
    );
    daemon.ctl_json(&["flags", "set", "--tenant", "acme", "plugin.steady=on"]);
    healthy(&daemon, "acme", "main");
    assert_eq!(
        pid_of(&instance(&daemon, "globex", "main").expect("globex")),
        globex_pid,
        "globex untouched throughout"
    );

    daemon.ctl_json(&["integrations", "remove", "--tenant", "acme", "main"]);
    wait_for("acme removed", LONG, || {
        instance(&daemon, "acme", "main").is_none().then_some(())
    });
    let bad_flag = daemon.ctl(&["flags", "set", "telepathy=on"]);
    assert!(stderr(&bad_flag).contains("unknown flag `telepathy`"));
}

#[test]
fn a_tenant_token_manages_only_its_own_integrations() {
    let (world, daemon) = start();
    let token = daemon.ctl_json(&["tokens", "create", "--tenant", "acme"])["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let config = config_file(&world, "c.toml", "poll = 1\n");
    let own = daemon.ctl_as(
        &token,
        &[
            "integrations",
            "add",
            "--tenant",
            "acme",
            "mine",
            "--plugin",
            "steady",
            "--config",
            &config,
        ],
    );
    assert!(own.status.success(), "{}", stderr(&own));
    assert!(add(&daemon, "globex", "theirs", &config).status.success());
    let attempts: &[&[&str]] = &[
        &[
            "integrations",
            "add",
            "--tenant",
            "globex",
            "x",
            "--plugin",
            "steady",
            "--config",
            &config,
        ],
        &[
            "integrations",
            "update",
            "--tenant",
            "globex",
            "theirs",
            "--config",
            &config,
        ],
        &["integrations", "disable", "--tenant", "globex", "theirs"],
        &["integrations", "enable", "--tenant", "globex", "theirs"],
        &["integrations", "remove", "--tenant", "globex", "theirs"],
        &["integrations", "list", "--tenant", "globex"],
        &["integrations", "show", "--tenant", "globex", "theirs"],
        &["integrations", "history", "--tenant", "globex", "theirs"],
        &[
            "integrations",
            "rollback",
            "--tenant",
            "globex",
            "theirs",
            "--to",
            "1",
        ],
        &["flags", "set", "--tenant", "globex", "plugin.steady=off"],
        &["flags", "list", "--tenant", "globex"],
        &["flags", "set", "plugin.steady=off"],
    ];
    for args in attempts {
        let output = daemon.ctl_as(&token, args);
        assert!(!output.status.success(), "{args:?} succeeded");
        let message = stderr(&output);
        assert!(
            message.contains("another tenant") || message.contains("a tenant token cannot run it"),
            "{args:?}: {message}"
        );
        assert!(!message.contains("theirs"), "{args:?} leaked: {message}");
    }
    assert_eq!(
        daemon.ctl_json(&["integrations", "show", "--tenant", "globex", "theirs"])["version"],
        1
    );
}

#[test]
fn deleting_a_tenant_removes_its_integrations_and_stops_their_processes() {
    let (world, daemon) = start();
    let config = config_file(&world, "c.toml", "poll = 1\n");
    assert!(add(&daemon, "acme", "main", &config).status.success());
    assert!(add(&daemon, "globex", "main", &config).status.success());
    let acme_pid = pid_of(&healthy(&daemon, "acme", "main"));
    let globex_pid = pid_of(&healthy(&daemon, "globex", "main"));
    let deleted = daemon.ctl_json(&["tenants", "delete", "acme"]);
    assert_eq!(deleted["name"], "acme");
    wait_for("acme's process gone", LONG, || {
        (!e2e_tests::process_alive(acme_pid)).then_some(())
    });
    assert!(instance(&daemon, "acme", "main").is_none());
    daemon.ctl_json(&["tenants", "create", "acme"]);
    assert_eq!(
        daemon
            .ctl_json(&["integrations", "list", "--tenant", "acme"])
            .as_array()
            .map(Vec::len),
        Some(0)
    );
    assert_eq!(
        pid_of(&instance(&daemon, "globex", "main").expect("globex")),
        globex_pid
    );
}

#[test]
fn per_tenant_quotas_refuse_one_more_integration_credential_or_token_clearly() {
    let world = World::new();
    world.install(&PluginPackage::testfault("steady", &[]));
    let setup = DaemonSetup::default()
        .with_master_key(&world.root.path().join("master.key"))
        .extra("[admin]\nmax_integrations_per_tenant = 2\nmax_credentials_per_tenant = 1\nmax_tokens_per_tenant = 1\n");
    let daemon = world.start(&setup);
    for tenant in ["acme", "globex"] {
        daemon.ctl_json(&["tenants", "create", tenant]);
    }
    let config = config_file(&world, "empty.json", "{}");
    for name in ["one", "two"] {
        let added = add(&daemon, "acme", name, &config);
        assert!(added.status.success(), "{}", stderr(&added));
    }
    let refused = add(&daemon, "acme", "three", &config);
    assert!(
        !refused.status.success(),
        "a third integration was admitted"
    );
    let message = stderr(&refused);
    assert!(
        message.contains("tenant `acme` has 2 integrations")
            && message.contains("admin.max_integrations_per_tenant = 2"),
        "{message}"
    );
    assert!(instance(&daemon, "acme", "three").is_none());
    // Another tenant has its own quota.
    let added = add(&daemon, "globex", "one", &config);
    assert!(added.status.success(), "{}", stderr(&added));

    daemon.set_credential("acme", "first", "api-key", b"secret-one");
    let again = daemon.ctl_stdin(
        None,
        &[
            "credentials",
            "set",
            "--tenant",
            "acme",
            "second",
            "--kind",
            "api-key",
        ],
        b"secret-two",
    );
    assert!(!again.status.success(), "a second credential was stored");
    assert!(
        stderr(&again).contains("admin.max_credentials_per_tenant = 1"),
        "{}",
        stderr(&again)
    );
    // Replacing the one it has is not one more.
    daemon.set_credential("acme", "first", "api-key", b"secret-three");

    daemon.ctl_json(&["tokens", "create", "--tenant", "acme"]);
    let token = daemon.ctl(&["tokens", "create", "--tenant", "acme"]);
    assert!(!token.status.success(), "a second token was issued");
    assert!(
        stderr(&token).contains("admin.max_tokens_per_tenant = 1"),
        "{}",
        stderr(&token)
    );
}

#[test]
fn a_configuration_naming_an_endpoint_the_operator_did_not_allow_is_refused() {
    let world = World::new();
    world.install(&PluginPackage::testfault("steady", &[]));
    let setup = DaemonSetup {
        // The daemon's default: the shipped services' public endpoints only.
        allowed_endpoints: Vec::new(),
        ..DaemonSetup::default()
    }
    .with_master_key(&world.root.path().join("master.key"));
    let daemon = world.start(&setup);
    daemon.ctl_json(&["tenants", "create", "acme"]);
    for (url, name) in [
        ("http://127.0.0.1:6379/", "loopback"),
        ("https://169.254.169.254/latest/meta-data", "metadata"),
        ("https://api.github.com.attacker.example", "lookalike"),
    ] {
        let config = config_file(
            &world,
            &format!("{name}.json"),
            &serde_json::json!({ "settings": { "api_url": url } }).to_string(),
        );
        let refused = add(&daemon, "acme", name, &config);
        assert!(!refused.status.success(), "{url} was admitted");
        let message = stderr(&refused);
        assert!(
            message.contains("`settings.api_url` points to")
                && message.contains("not an endpoint this daemon allows"),
            "{message}"
        );
        assert!(
            !message.contains("meta-data"),
            "the path is not echoed: {message}"
        );
    }
    let listed = daemon.ctl_json(&["integrations", "list", "--tenant", "acme"]);
    assert_eq!(listed.as_array().map(Vec::len), Some(0), "{listed}");
}
