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
    for plugin in ["github", "cloudwatch", "webhook"] {
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
fn quickstart_config_supervises_both_product_plugins_from_relative_paths() {
    let root = repo_root();
    // A copy of the repository's quickstart layout, run from its root as the README
    // says, with the packages pointed at this build's binaries instead of target/release.
    let temp = tempfile::Builder::new()
        .prefix("qs")
        .tempdir_in("/tmp")
        .expect("tempdir");
    std::fs::create_dir_all(temp.path().join("examples")).expect("dir");
    std::fs::copy(
        root.join("examples/quickstart.toml"),
        temp.path().join("examples/quickstart.toml"),
    )
    .expect("copy config");
    for plugin in ["github", "cloudwatch", "webhook"] {
        let manifest =
            std::fs::read_to_string(root.join(format!("examples/plugins/{plugin}/plugin.toml")))
                .expect("read");
        let executable = bin_dir().join(format!("integration-{plugin}"));
        let manifest = manifest.replace(
            &format!("../../../target/release/integration-{plugin}"),
            executable.to_str().expect("utf8"),
        );
        let dir = temp.path().join("examples/plugins").join(plugin);
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("plugin.toml"), manifest).expect("write");
    }
    let log = std::fs::File::create(temp.path().join("daemon.log")).expect("log");
    let child = Command::new(bin("integrationd"))
        .current_dir(temp.path())
        .args([
            "--config",
            "examples/quickstart.toml",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn");
    let daemon = Daemon {
        child: Some(child),
        socket: temp.path().join("state/admin.sock"),
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
        assert_eq!(instance["restarts"], 0, "{instance}");
    }
    assert!(
        temp.path().join("state/db").is_dir(),
        "state lives in ./state"
    );

    // The README's dashboard steps: an operator's monitoring token, then the page.
    let token =
        daemon.ctl_json(&["tokens", "create", "--scope", "monitor", "--all-tenants"])["token"]
            .as_str()
            .expect("token")
            .to_owned();
    let mut page = e2e_tests::browser::Page::launch(1280, 720);
    crate::dashboard::sign_in(&mut page, &daemon.http_addr(), &token);
    let rows = page.wait_for(
        "both plugins on the overview",
        "document.querySelectorAll('tbody tr').length === 2 && document.getElementById('view').innerText",
        Duration::from_secs(30),
    );
    let rows = rows.as_str().expect("text");
    assert!(
        rows.contains("github") && rows.contains("cloudwatch"),
        "{rows}"
    );
    page.screenshot(&e2e_tests::browser::screenshot_dir().join("dashboard-quickstart.png"));
}
