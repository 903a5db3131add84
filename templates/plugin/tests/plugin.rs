//! The plugin binary tested as integrationd runs it, through plugin-kit's harness
//! (`PluginUnderTest`): its manifest, typed configuration, signed webhooks, polling and
//! resuming. The workspace's end-to-end tests run it under a real daemon too
//! (`tests/tests/e2e/plugin_authors.rs`).

use plugin_kit::signature::sign_sha256;
use plugin_kit::testing::{HarnessError, PluginUnderTest};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BINARY: &str = env!("CARGO_BIN_EXE_integration-example");
const SECRET: &str = "a webhook secret";

fn secret() -> Vec<plugin_kit::v1::Credential> {
    vec![plugin_kit::v1::Credential {
        name: "webhook_secret".into(),
        kind: "webhook-secret".into(),
        secret: json!({ "current": SECRET }).to_string().into_bytes(),
    }]
}

async fn configured(config: serde_json::Value) -> PluginUnderTest {
    let mut plugin = PluginUnderTest::start(BINARY).await.expect("start");
    plugin
        .configure("acme", "jobs", config, secret())
        .await
        .expect("configure");
    plugin
}

#[tokio::test]
async fn describes_itself_like_its_manifest() {
    let mut plugin = PluginUnderTest::start(BINARY).await.expect("start");
    assert_eq!(
        plugin.check_manifest(include_str!("../plugin.toml")).await,
        Ok(())
    );
    let schema: serde_json::Value = serde_json::from_str(
        &plugin
            .describe()
            .await
            .expect("describe")
            .config_schema_json,
    )
    .expect("schema");
    assert_eq!(schema["required"], json!(["service"]));
    assert!(plugin.shutdown().await.expect("shutdown").success());
}

#[tokio::test]
async fn a_configuration_that_does_not_fit_is_refused_naming_the_field() {
    let mut plugin = PluginUnderTest::start(BINARY).await.expect("start");
    // An instance of the daemon's own file: `{}`, idle.
    plugin
        .configure("acme", "jobs", json!({}), Vec::new())
        .await
        .expect("an empty configuration is accepted");
    let refused = |result: Result<(), HarnessError>| match result {
        Err(HarnessError::Call(status)) => {
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
            status.message().to_owned()
        }
        other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
    };
    let wrong_type = refused(
        plugin
            .configure("acme", "jobs", json!({"service": 3}), secret())
            .await,
    );
    assert!(
        wrong_type.starts_with("`service`: invalid type"),
        "{wrong_type}"
    );
    let no_secret = refused(
        plugin
            .configure("acme", "jobs", json!({"service": "billing"}), Vec::new())
            .await,
    );
    assert!(no_secret.contains("`webhook_secret`"), "{no_secret}");
}

#[tokio::test]
async fn a_signed_report_becomes_one_canonical_event_and_a_forged_one_is_refused() {
    let mut plugin = configured(json!({"service": "billing"})).await;
    let body = json!({"id": "r-7", "time": "2026-12-01T10:00:00Z", "status": "failed",
                      "message": "export failed", "job": "export"})
    .to_string();
    let signature = sign_sha256(SECRET.as_bytes(), body.as_bytes());
    let answer = plugin
        .webhook(&[("x-signature-256", &signature)], body.clone())
        .await
        .expect("webhook");
    assert_eq!(answer.status, 202, "{}", answer.message);
    let event: serde_json::Value = serde_json::from_str(&answer.events_json[0]).expect("json");
    assert_eq!(event["type"], "com.betalogs.system.error");
    assert_eq!(event["tenant"], "acme");
    let forged = sign_sha256(b"another secret", body.as_bytes());
    let refused = plugin
        .webhook(&[("x-signature-256", &forged)], body)
        .await
        .expect("webhook");
    assert_eq!(refused.status, 401);
    assert!(refused.events_json.is_empty());
}

/// Serves `body` as JSON on loopback, to requests bearing `token` if one is given (401
/// to the others); returns its URL.
async fn reports_server(body: String, token: Option<&str>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let expected = token.map(|t| format!("authorization: bearer {t}").to_lowercase());
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let body = body.clone();
            let expected = expected.clone();
            tokio::spawn(async move {
                let mut request = [0_u8; 4096];
                let read = stream.read(&mut request).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&request[..read]).to_lowercase();
                let allowed = expected.is_none_or(|line| head.contains(&line));
                let (status, body) = if allowed {
                    ("200 OK", body)
                } else {
                    ("401 Unauthorized", "[]".to_owned())
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(body.as_bytes()).await;
            });
        }
    });
    format!("http://{addr}/reports")
}

#[tokio::test]
async fn collect_polls_the_reports_and_resumes_without_repeats() {
    let url = reports_server(
        json!([
            {"id": "r-1", "time": "2026-12-01T10:00:00Z", "status": "ok"},
            {"id": "r-2", "time": "2026-12-01T10:05:00Z", "status": "failed"}
        ])
        .to_string(),
        None,
    )
    .await;
    let mut plugin = configured(json!({"service": "billing", "reports_url": url})).await;
    let first = plugin.collect("").await.expect("collect");
    assert_eq!(first[0].events_json.len(), 2);
    assert_eq!(first[0].cursor, "2026-12-01T10:05:00Z");
    let again = plugin.collect(&first[0].cursor).await.expect("collect");
    assert!(again[0].events_json.is_empty(), "nothing twice");
    let check = plugin.check().await.expect("check");
    assert!(check.results.iter().all(|r| r.ok), "{check:?}");
}

#[tokio::test]
async fn collect_sends_the_bearer_token_of_the_plugins_own_credential_kind() {
    let token = "a reports token of sixteen bytes or more";
    let report = json!([{"id": "r-1", "time": "2026-12-01T10:00:00Z", "status": "failed"}]);
    let url = reports_server(report.to_string(), Some(token)).await;
    let config = json!({"service": "billing", "reports_url": url});
    let mut credentials = secret();
    credentials.push(plugin_kit::v1::Credential {
        name: "reports_token".into(),
        kind: "example/reports-token".into(),
        secret: json!({ "token": token }).to_string().into_bytes(),
    });
    let mut plugin = PluginUnderTest::start(BINARY).await.expect("start");
    plugin
        .configure("acme", "jobs", config.clone(), credentials)
        .await
        .expect("configure");
    let batches = plugin.collect("").await.expect("collect with the token");
    assert_eq!(batches[0].events_json.len(), 1);

    // Without the token the service refuses, and Collect says so.
    let mut anonymous = configured(config).await;
    let refused = anonymous.collect("").await.expect_err("no token");
    assert!(refused.to_string().contains("401"), "{refused}");
}
