//! plugin-kit's side of the protocol, through real plugin binaries: the harness plugin
//! authors use, the magic cookie, version negotiation, the token and the peer check,
//! clean exits on Shutdown, SIGTERM and the death of the host.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use e2e_tests::{bin, process_alive, wait_for};
use plugin_kit::testing::{HarnessError, PluginUnderTest};
use plugin_protocol::{
    ENV_HOST_PID, ENV_MAGIC_COOKIE, ENV_PROTOCOL_VERSIONS, ENV_SOCKET_PATH, ENV_TOKEN,
    MAGIC_COOKIE_VALUE, v1,
};
use tonic_health::pb::HealthCheckRequest;

#[tokio::test]
async fn the_harness_drives_a_plugin_like_the_supervisor_does() {
    for (binary, name, config) in [
        (
            "integration-github",
            "github",
            serde_json::json!({"repositories": ["acme/api"]}),
        ),
        (
            "integration-cloudwatch",
            "cloudwatch",
            serde_json::json!({"poll_interval": "30s"}),
        ),
    ] {
        let mut plugin = PluginUnderTest::start(bin(binary)).await.expect("start");
        let described = plugin.describe().await.expect("describe");
        assert_eq!(described.name, name);
        assert_eq!(described.protocol_version, 1);
        let schema: serde_json::Value =
            serde_json::from_str(&described.config_schema_json).expect("schema is JSON");
        assert_eq!(schema["type"], "object");
        assert!(!described.credential_kinds.is_empty());
        plugin
            .configure("acme", "main", config, vec![])
            .await
            .expect("the product plugins accept a configuration");
        assert!(plugin.health().await.expect("health"));
        let status = plugin.shutdown().await.expect("shutdown");
        assert!(status.success(), "{name} exited with {status}");
    }
}

#[tokio::test]
async fn unimplemented_calls_answer_unimplemented_not_crash() {
    let mut plugin = PluginUnderTest::start(bin("integration-github"))
        .await
        .expect("start");
    match plugin.collect("").await {
        Err(HarnessError::Call(status)) => assert_eq!(status.code(), tonic::Code::Unimplemented),
        other => panic!("expected UNIMPLEMENTED, got {other:?}"),
    }
    assert!(plugin.health().await.expect("still healthy"));
}

#[test]
fn run_by_hand_a_plugin_says_what_it_is_and_exits_non_zero() {
    for cookie in [None, Some("wrong")] {
        let mut command = Command::new(bin("integration-github"));
        command.env_clear();
        if let Some(cookie) = cookie {
            command.env(ENV_MAGIC_COOKIE, cookie);
        }
        let output = command.output().expect("run");
        assert!(!output.status.success());
        assert!(
            output.stdout.is_empty(),
            "nothing on stdout, where the handshake goes"
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("This is the `github` plugin for integrationd"),
            "{stderr}"
        );
        assert!(stderr.contains("not meant to be run by hand"), "{stderr}");
    }
}

#[tokio::test]
async fn a_host_speaking_no_common_version_gets_a_precise_error() {
    let err = PluginUnderTest::start_with(bin("integration-github"), |spec| {
        spec.protocol_versions = vec![7, 9]
    })
    .await
    .expect_err("no common version");
    let text = err.to_string();
    assert!(text.contains("exited before its handshake"), "{text}");
    assert!(
        text.contains("the host speaks protocol versions [7, 9], this plugin speaks [1]"),
        "{text}"
    );
}

#[test]
fn malformed_host_environment_is_named() {
    let cases = [
        (
            ENV_PROTOCOL_VERSIONS,
            "1,x",
            "`x` is not a protocol version",
        ),
        (ENV_SOCKET_PATH, "relative.sock", "is not an absolute path"),
        (ENV_TOKEN, "", "BETALOGS_PLUGIN_TOKEN is not set"),
        (ENV_HOST_PID, "-3", "is not a process id"),
    ];
    for (key, value, expected) in cases {
        let mut command = Command::new(bin("integration-github"));
        command
            .env_clear()
            .env(ENV_MAGIC_COOKIE, MAGIC_COOKIE_VALUE)
            .env(ENV_PROTOCOL_VERSIONS, "1")
            .env(ENV_SOCKET_PATH, "/tmp/never-bound.sock")
            .env(ENV_TOKEN, "t")
            .env(key, value);
        let output = command.output().expect("run");
        assert!(!output.status.success(), "{key}={value}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{key}={value}: {stderr}");
    }
}

#[tokio::test]
async fn calls_without_the_token_are_refused() {
    let plugin = PluginUnderTest::start(bin("integration-github"))
        .await
        .expect("start");
    let socket = plugin.socket().to_path_buf();
    for token in ["wrong", ""] {
        let mut intruder = plugin_kit::host::connect(&socket, token)
            .await
            .expect("connect");
        let status = intruder
            .health
            .check(HealthCheckRequest::default())
            .await
            .expect_err("refused");
        assert_eq!(
            status.code(),
            tonic::Code::Unauthenticated,
            "token {token:?}"
        );
        let status = intruder
            .plugin
            .describe(v1::DescribeRequest {})
            .await
            .expect_err("refused");
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
    }
}

#[tokio::test]
async fn only_the_host_process_may_connect() {
    let plugin = PluginUnderTest::start(bin("integration-github"))
        .await
        .expect("start");
    let socket = plugin.socket().to_path_buf();
    // The host (this test process) gets the server's HTTP/2 SETTINGS frame back.
    let mut own = std::os::unix::net::UnixStream::connect(&socket).expect("connect");
    own.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .expect("preface");
    own.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut frame = [0u8; 9];
    own.read_exact(&mut frame).expect("the host is answered");
    assert_eq!(frame[3], 4, "a SETTINGS frame");

    // Another process is disconnected before a byte of HTTP/2 is exchanged.
    let script = "import socket,sys\ns=socket.socket(socket.AF_UNIX)\ns.connect(sys.argv[1])\ns.settimeout(5)\ntry:\n  s.sendall(b'PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n')\n  print(len(s.recv(64)))\nexcept OSError:\n  print(0)\n";
    let output = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&socket)
        .output()
        .expect("python3");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "0",
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn sigterm_stops_a_plugin_cleanly() {
    let plugin = PluginUnderTest::start(bin("integration-github"))
        .await
        .expect("start");
    let socket = plugin.socket().to_path_buf();
    let status = plugin.terminate().await.expect("exit");
    assert!(status.success(), "{status}");
    assert!(
        !socket.exists(),
        "the plugin removes its socket on a clean stop"
    );
}

#[test]
fn a_plugin_exits_when_its_host_dies() {
    let dir = tempfile::tempdir().expect("tempdir");
    // `sh` is the host here: it starts the plugin in the background with its own pid as
    // the host pid (as integrationd does), prints the plugin's pid and exits at once.
    let mut host = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{ENV_HOST_PID}=$$ \"$0\" 2>/dev/null & echo pid=$!"
        ))
        .arg(bin("integration-github"))
        .env_clear()
        .env(ENV_MAGIC_COOKIE, MAGIC_COOKIE_VALUE)
        .env(ENV_PROTOCOL_VERSIONS, "1")
        .env(ENV_SOCKET_PATH, dir.path().join("p.sock"))
        .env(ENV_TOKEN, "t")
        .stdout(Stdio::piped())
        .spawn()
        .expect("sh");
    let host_pid = host.id();
    let mut reader = BufReader::new(host.stdout.take().expect("stdout"));
    let mut plugin_pid = None;
    let mut line = String::new();
    while plugin_pid.is_none() && reader.read_line(&mut line).expect("read") > 0 {
        plugin_pid = line
            .trim()
            .strip_prefix("pid=")
            .and_then(|p| p.parse::<u32>().ok());
        line.clear();
    }
    let plugin_pid = plugin_pid.expect("sh printed the plugin's pid");
    assert!(host.wait().expect("sh exits").success());
    assert!(!process_alive(host_pid));
    wait_for(
        "the orphaned plugin to exit",
        Duration::from_secs(10),
        || (!process_alive(plugin_pid)).then_some(()),
    );
}

#[tokio::test]
async fn a_launched_plugin_gets_its_own_group_a_clean_environment_and_its_limits() {
    let limits = plugin_kit::host::ResourceLimits {
        address_space_bytes: Some(2 << 30),
        open_files: Some(64),
        cpu_seconds: Some(30),
    };
    let plugin = PluginUnderTest::start_with(bin("integration-testfault"), |spec| {
        spec.limits = limits;
        spec.env = vec![("RUST_LOG".into(), "debug".into())];
    })
    .await
    .expect("start");
    let pid = plugin.pid();
    let table = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let limit = |name: &str| {
        table
            .lines()
            .find(|l| l.starts_with(name))
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .unwrap_or_default()
    };
    assert!(limit("Max open files").contains(&"64"), "{table}");
    assert!(limit("Max cpu time").contains(&"30"), "{table}");
    assert!(
        limit("Max address space").contains(&"2147483648"),
        "{table}"
    );

    let group = nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(pid as i32))).expect("pgid");
    assert_eq!(
        group.as_raw(),
        pid as i32,
        "the plugin leads its own process group"
    );

    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
    let mut names: Vec<String> = environ
        .split(|b| *b == 0)
        .filter(|v| !v.is_empty())
        .map(|v| {
            String::from_utf8_lossy(v)
                .split('=')
                .next()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            ENV_HOST_PID,
            ENV_MAGIC_COOKIE,
            ENV_PROTOCOL_VERSIONS,
            ENV_SOCKET_PATH,
            ENV_TOKEN,
            "RUST_LOG"
        ],
        "everything else is cleared"
    );
}
