//! Measures issue 3's performance targets (release build):
//!
//! - durable credential write with its audit record, over the admin socket: p50/p99;
//! - credential decrypt rate (the crypto path: age X25519 + envelope check);
//! - `audit verify` over 1,000,000 records, in process and through `integrationctl`;
//! - admin read calls (`ListIntegrations`) over the socket, one and four clients.
//!
//! `admin-bench [--writes N] [--decrypts N] [--audit-records N] [--read-seconds S]`

use std::time::{Duration, Instant};

use e2e_tests::{DaemonSetup, PluginPackage, World, bin};
use hyper_util::rt::TokioIo;
use supervisor::admin::proto;
use supervisor::admin::proto::admin_client::AdminClient;
use supervisor::credentials::{
    Credentials, MasterKeySource, NewSecret, SecretBytes, generate_master_key_file,
};
use supervisor::store::{AuditDraft, Store};
use tonic::transport::{Channel, Endpoint};

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1]
}

async fn client(socket: std::path::PathBuf) -> AdminClient<Channel> {
    let channel = Endpoint::from_static("http://admin.invalid")
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move {
                tokio::net::UnixStream::connect(socket)
                    .await
                    .map(TokioIo::new)
            }
        }))
        .await
        .expect("connect admin socket");
    AdminClient::new(channel)
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let writes = arg("--writes", 500) as usize;
    let decrypts = arg("--decrypts", 20_000) as usize;
    let audit_records = arg("--audit-records", 1_000_000) as usize;
    let read_seconds = arg("--read-seconds", 5);

    // A daemon with a master key, a tenant and one integration.
    let world = World::new();
    world.install(&PluginPackage::testfault("steady", &[]));
    let setup = DaemonSetup::default().with_master_key(&world.root.path().join("master.key"));
    let daemon = world.start(&setup);
    daemon.ctl_json(&["tenants", "create", "acme"]);
    let mut admin = client(daemon.socket.clone()).await;

    // 1. Durable credential writes.
    let mut latencies = Vec::with_capacity(writes);
    for i in 0..writes {
        let request = proto::SetCredentialRequest {
            tenant: "acme".into(),
            name: format!("cred-{i}"),
            kind: "aws".into(),
            secret: br#"{"access_key_id":"AKIAIOSFODNN7EXAMPLE","secret_access_key":"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}"#.to_vec(),
            expires_unix_ms: 0,
            rotate: false,
        };
        let sent = Instant::now();
        admin.set_credential(request).await.expect("set credential");
        latencies.push(sent.elapsed());
    }
    latencies.sort();
    println!(
        "credential_write_ms p50={:.2} p99={:.2} max={:.2} (n={writes}, durable with audit record, over the socket)",
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies[latencies.len() - 1].as_secs_f64() * 1e3
    );

    // 4. Admin reads over the socket.
    let config = world.root.path().join("c.toml");
    std::fs::write(&config, "poll = 1\n").expect("config");
    daemon.ctl_json(&[
        "integrations",
        "add",
        "--tenant",
        "acme",
        "main",
        "--plugin",
        "steady",
        "--config",
        config.to_str().expect("utf8"),
    ]);
    for clients in [1usize, 4] {
        let deadline = Instant::now() + Duration::from_secs(read_seconds);
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let mut admin = client(daemon.socket.clone()).await;
            tasks.push(tokio::spawn(async move {
                let mut calls = 0u64;
                while Instant::now() < deadline {
                    admin
                        .list_integrations(proto::ListIntegrationsRequest {
                            tenant: "acme".into(),
                        })
                        .await
                        .expect("list");
                    calls += 1;
                }
                calls
            }));
        }
        let started = Instant::now();
        let mut total = 0;
        for task in tasks {
            total += task.await.expect("task");
        }
        println!(
            "admin_list_integrations_calls_per_s clients={clients} rate={:.0}",
            total as f64 / started.elapsed().as_secs_f64()
        );
    }
    drop(daemon);

    // 2. Decrypts (in process: the crypto path without the per-read audit write).
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("master.key");
    generate_master_key_file(&key).expect("key");
    let store = Store::open(dir.path()).expect("store");
    let credentials =
        Credentials::open(store.clone(), &MasterKeySource::File(key), false).expect("credentials");
    let secret = NewSecret {
        kind: "api-key".into(),
        raw: SecretBytes::new(b"s3cret-value".to_vec()),
        expires_ms: None,
        rotate: false,
    };
    credentials.set("acme", "k", &secret, "bench").expect("set");
    let started = Instant::now();
    for _ in 0..decrypts {
        credentials.decrypt_for_bench("acme", "k").expect("decrypt");
    }
    println!(
        "credential_decrypts_per_s={:.0} (n={decrypts})",
        decrypts as f64 / started.elapsed().as_secs_f64()
    );
    let reads = 200;
    let started = Instant::now();
    for _ in 0..reads {
        credentials
            .read("acme", "k", "bench", "bench")
            .expect("read");
    }
    println!(
        "credential_audited_reads_per_s={:.0} (each with a durable audit record)",
        reads as f64 / started.elapsed().as_secs_f64()
    );

    // 3. Audit verification over many records.
    let drafts: Vec<AuditDraft> = (0..10_000)
        .map(|i| {
            AuditDraft::ok(
                Some("acme"),
                "uid:0",
                "credential.read",
                &format!("credential:cred-{i}"),
                "Configure integration `main`",
            )
        })
        .collect();
    let mut appended = 0;
    while appended < audit_records {
        let n = drafts.len().min(audit_records - appended);
        store.audit_many(&drafts[..n]).expect("append");
        appended += n;
    }
    let started = Instant::now();
    let verdict = store.audit_verify(None).expect("verify");
    println!(
        "audit_verify_in_process_s={:.2} records={verdict:?}",
        started.elapsed().as_secs_f64()
    );
    drop(credentials);
    drop(store);

    // The same through the daemon and integrationctl.
    let config_path = dir.path().join("d.toml");
    std::fs::write(
        &config_path,
        format!(
            "state_dir = {:?}\nplugin_dir = {:?}\nadmin_socket = {:?}\nhttp_listen = \"127.0.0.1:0\"\n",
            dir.path().display().to_string(),
            dir.path().display().to_string(),
            dir.path().join("a/admin.sock").display().to_string()
        ),
    )
    .expect("config");
    let mut child = std::process::Command::new(bin("integrationd"))
        .arg("--config")
        .arg(&config_path)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("daemon");
    let socket = dir.path().join("a/admin.sock");
    let ctl = |args: &[&str]| {
        std::process::Command::new(bin("integrationctl"))
            .arg("--socket")
            .arg(&socket)
            .args(args)
            .output()
            .expect("ctl")
    };
    e2e_tests::wait_for(
        "the daemon on the big audit log",
        Duration::from_secs(30),
        || ctl(&["status"]).status.success().then_some(()),
    );
    let started = Instant::now();
    let output = ctl(&["audit", "verify"]);
    println!(
        "audit_verify_cli_s={:.2} output={:?}",
        started.elapsed().as_secs_f64(),
        String::from_utf8_lossy(&output.stdout).trim()
    );
    let _ = child.kill();
    let _ = child.wait();
}
