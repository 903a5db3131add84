//! The quickstart configuration and its plugin packages stay runnable and in step with
//! the installable manifests.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use e2e_tests::{Daemon, bin, bin_dir, state_of, wait_for};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn without_comments_and_executable(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("executable") && !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

#[test]
fn quickstart_manifests_match_the_installable_ones() {
    for plugin in ["github", "cloudwatch"] {
        let root = repo_root();
        let installable =
            std::fs::read_to_string(root.join(format!("plugins/{plugin}/plugin.toml")))
                .expect("read");
        let quickstart =
            std::fs::read_to_string(root.join(format!("examples/plugins/{plugin}/plugin.toml")))
                .expect("read");
        assert_eq!(
            without_comments_and_executable(&installable),
            without_comments_and_executable(&quickstart)
        );
        assert!(quickstart.contains(&format!(
            "executable = \"../../../target/release/integration-{plugin}\""
        )));
    }
}

#[test]
fn quickstart_config_supervises_both_product_plugins() {
    let root = repo_root();
    let temp = tempfile::Builder::new()
        .prefix("qs")
        .tempdir_in("/tmp")
        .expect("tempdir");
    // The same packages, pointed at this build's binaries instead of target/release.
    for plugin in ["github", "cloudwatch"] {
        let manifest =
            std::fs::read_to_string(root.join(format!("examples/plugins/{plugin}/plugin.toml")))
                .expect("read");
        let executable = bin_dir().join(format!("integration-{plugin}"));
        let manifest = manifest.replace(
            &format!("../../../target/release/integration-{plugin}"),
            executable.to_str().expect("utf8"),
        );
        std::fs::create_dir_all(temp.path().join("plugins").join(plugin)).expect("dir");
        std::fs::write(
            temp.path().join("plugins").join(plugin).join("plugin.toml"),
            manifest,
        )
        .expect("write");
    }
    let socket = temp.path().join("state/admin.sock");
    let log = std::fs::File::create(temp.path().join("daemon.log")).expect("log");
    let child = Command::new(bin("integrationd"))
        .current_dir(&root)
        .arg("--config")
        .arg("examples/quickstart.toml")
        .arg("--state-dir")
        .arg(temp.path().join("state"))
        .arg("--plugin-dir")
        .arg(temp.path().join("plugins"))
        .arg("--admin-socket")
        .arg(&socket)
        .args(["--http-listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn");
    let daemon = Daemon {
        child: Some(child),
        socket,
        log: temp.path().join("daemon.log"),
    };
    wait_for("the admin socket", Duration::from_secs(20), || {
        daemon.ctl(&["status"]).status.success().then_some(())
    });
    for plugin in ["github", "cloudwatch"] {
        let instance = daemon.wait_instance(plugin, "healthy", Duration::from_secs(30), |i| {
            state_of(i) == "healthy"
        });
        assert_eq!(instance["version"], "0.1.0");
    }
    assert!(
        temp.path().join("state/db").is_dir(),
        "--state-dir overrides the file's state_dir"
    );
}
