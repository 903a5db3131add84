//! The daemon's start-up messages for the common mistakes: each names what is wrong and
//! where, and says each thing once (an error that showed its cause and also chained it
//! printed the cause two to four times in one line).

use std::net::TcpListener;
use std::process::{Command, Output};

use e2e_tests::{DaemonSetup, World, bin};

/// Runs the daemon on `world`'s config (and `args`); it must refuse to start.
fn refused(world: &World, args: &[&str]) -> String {
    let output: Output = Command::new(bin("integrationd"))
        .arg("--config")
        .arg(world.config_path())
        .args(args)
        .output()
        .expect("run integrationd");
    assert!(!output.status.success(), "the daemon started");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The last line of stderr (the error; logs come before it), checked to say `cause`
/// once and to name `what`.
fn says_once(stderr: &str, what: &str, cause: &str) {
    let line = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default();
    assert!(line.contains(what), "does not name {what:?}: {line}");
    assert_eq!(
        line.matches(cause).count(),
        1,
        "{cause:?} not said exactly once: {line}"
    );
    assert_eq!(
        line.matches(what).count(),
        1,
        "{what:?} not said exactly once: {line}"
    );
}

#[test]
fn a_master_key_in_a_missing_directory_is_named_once() {
    let world = World::new();
    let key = world.root.path().join("no-such-dir/master.key");
    world.write_config(&DaemonSetup::default().extra(&format!(
        "[credentials]\nmaster_key = \"file:{}\"\n",
        key.display()
    )));
    let stderr = refused(&world, &[]);
    says_once(&stderr, &key.display().to_string(), "does not exist");
}

#[test]
fn an_unreadable_config_file_is_named_once() {
    let world = World::new();
    // A directory where the file should be: unreadable as a file, even for root.
    std::fs::create_dir_all(world.config_path()).expect("dir");
    let stderr = refused(&world, &[]);
    says_once(
        &stderr,
        &world.config_path().display().to_string(),
        "Is a directory",
    );
}

#[test]
fn a_port_in_use_is_named_once() {
    let world = World::new();
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    world.write_config(&DaemonSetup::default());
    let stderr = refused(&world, &["--http-listen", &addr]);
    says_once(&stderr, &addr, "Address already in use");
}

#[test]
fn a_state_directory_that_cannot_be_created_is_named_once() {
    let world = World::new();
    // A regular file where a directory of the path must be: not even root can create
    // the state directory under it.
    let blocker = world.root.path().join("blocker");
    std::fs::write(&blocker, b"").expect("file");
    let state = blocker.join("state");
    world.write_config(&DaemonSetup::default());
    let stderr = refused(&world, &["--state-dir", &state.display().to_string()]);
    says_once(&stderr, &state.display().to_string(), "Not a directory");
}
