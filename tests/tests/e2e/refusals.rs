//! Every way a plugin can be unfit to run is refused with an error that names the
//! plugin and the cause, while the daemon keeps running its other plugins.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use e2e_tests::{DaemonSetup, PluginPackage, World, state_of, wait_for};

const LONG: Duration = Duration::from_secs(30);

#[test]
fn unfit_plugins_are_refused_by_name_and_cause_while_others_keep_running() {
    let world = World::new();
    world.install(&PluginPackage::testfault("good", &[]));
    world.install(&PluginPackage::testfault("garbled", &["--bad-handshake"]));
    world.install(&PluginPackage::testfault("silent", &["--no-handshake"]));
    world.install(&PluginPackage::testfault(
        "fragile",
        &["--crash-after-calls", "1"],
    ));
    world.install(&PluginPackage::testfault(
        "future",
        &["--claim-protocol", "9"],
    ));
    world.install(&PluginPackage {
        protocol_versions: vec![9],
        ..PluginPackage::testfault("v9only", &[])
    });
    world.install(&PluginPackage {
        framework: ">=9".into(),
        ..PluginPackage::testfault("ahead", &[])
    });
    world.install(&PluginPackage {
        manifest_extra: "[dependencies]\nghost = \">=1\"\n".into(),
        ..PluginPackage::testfault("needy", &[])
    });
    world.install(&PluginPackage {
        manifest_extra: "[credential_kinds.token]\nschema = { type = \"no-such-type\" }\n".into(),
        ..PluginPackage::testfault("schemer", &[])
    });
    let mut liar = PluginPackage::testfault("liar", &[]);
    liar.args = vec!["--name".into(), "someone-else".into()];
    world.install(&liar);
    let broken = world.plugin_dir().join("broken");
    std::fs::create_dir_all(&broken).expect("dir");
    std::fs::write(
        broken.join("plugin.toml"),
        "name = \"broken\"\nversion = [nonsense\n",
    )
    .expect("manifest");

    let names = [
        "good", "garbled", "silent", "fragile", "future", "v9only", "ahead", "needy", "liar",
        "schemer",
    ];
    let mut setup = DaemonSetup::default()
        .process("start_timeout = \"1s\"")
        .process("restart_initial_delay = \"1s\"");
    for name in names {
        setup = setup.instance(name);
    }
    let daemon = world.start(&setup);

    let expect_error = |name: &str, fragments: &[&str]| {
        let instance = daemon.wait_instance(name, "an error", LONG, |i| {
            !i["last_error"].as_str().unwrap_or_default().is_empty()
        });
        let error = instance["last_error"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            error.contains(&format!("`{name}`")),
            "{name}: error does not name the plugin: {error}"
        );
        for fragment in fragments {
            assert!(
                error.contains(fragment),
                "{name}: expected `{fragment}` in: {error}"
            );
        }
        instance
    };
    expect_error(
        "garbled",
        &["handshake line `hello, I am not a handshake line` has 1 fields"],
    );
    expect_error("silent", &["printed no handshake line within 1s"]);
    expect_error("future", &["offers protocol 9, this host speaks [1]"]);
    expect_error("fragile", &["Describe failed"]);
    let v9 = expect_error(
        "v9only",
        &["speaks protocol versions [9], this supervisor speaks [1]"],
    );
    assert_eq!(state_of(&v9), "refused");
    expect_error("ahead", &["requires integrationd >=9, this is 0.1.0"]);
    expect_error(
        "needy",
        &["`[dependencies]` is no longer part of the manifest"],
    );
    let schemer = expect_error(
        "schemer",
        &["declares credential kind `schemer/token` with a schema that is not a valid JSON Schema"],
    );
    assert_eq!(state_of(&schemer), "refused");
    let liar = expect_error(
        "liar",
        &["Describe says name `someone-else`, the manifest says `liar`"],
    );
    assert_eq!(state_of(&liar), "refused");

    let status = daemon.ctl_json(&["status"]);
    let refused: Vec<String> = status["refused"]
        .as_array()
        .expect("refused list")
        .iter()
        .map(|r| r["reason"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(
        refused
            .iter()
            .any(|r| r.contains("has a malformed manifest")
                && r.contains("broken/plugin.toml")
                && r.contains("line 2")),
        "{refused:?}"
    );

    let good = daemon.instance("good").expect("good instance");
    assert_eq!(state_of(&good), "healthy");
    assert_eq!(good["restarts"], 0);
}

#[test]
fn a_changed_executable_is_refused_and_never_executed() {
    let world = World::new();
    let package_dir = world.plugin_dir().join("tampered");
    std::fs::create_dir_all(&package_dir).expect("dir");
    let executable = package_dir.join("integration-testfault");
    std::fs::copy(e2e_tests::bin("integration-testfault"), &executable).expect("copy plugin");
    world.install(&PluginPackage {
        executable: executable.clone(),
        ..PluginPackage::testfault("tampered", &[])
    });
    let daemon = world.start(&DaemonSetup::default().instance("tampered"));
    daemon.wait_instance("tampered", "healthy", LONG, |i| state_of(i) == "healthy");

    let marker = world.root.path().join("executed");
    let script = format!("#!/bin/sh\ntouch {}\n", marker.display());
    std::fs::remove_file(&executable).expect("remove");
    std::fs::write(&executable, script).expect("replace");
    std::fs::set_permissions(&executable, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let restart = daemon.ctl(&["plugins", "restart", "tampered"]);
    assert!(
        restart.status.success(),
        "{}",
        String::from_utf8_lossy(&restart.stderr)
    );

    let refused = daemon.wait_instance("tampered", "refused", LONG, |i| state_of(i) == "refused");
    let error = refused["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("plugin `tampered` 0.1.0") && error.contains("refused, not executed"),
        "{error}"
    );
    assert!(!marker.exists(), "the tampered executable ran");
    // And a retry does not run it either.
    let refusals = || daemon.log_text().matches("refused, not executed").count();
    let before = refusals();
    daemon.ctl(&["plugins", "restart", "tampered"]);
    wait_for("the retry to be refused too", LONG, || {
        (refusals() > before).then_some(())
    });
    assert!(!marker.exists(), "the tampered executable ran on retry");
}
