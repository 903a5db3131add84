//! Shared by the plugin's tests: the public fixtures from npm, signing, the canonical
//! schema, and the plugin under test.

#![allow(dead_code)]

pub mod server;

use std::path::PathBuf;

use hmac::{Hmac, Mac};
use plugin_kit::testing::PluginUnderTest;
use plugin_kit::v1;
use serde_json::Value;

/// A file of the npm fixtures `scripts/test` installs (`npm ci --prefix tests/fixtures/npm`).
pub fn npm_fixture(relative: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/npm/node_modules")
        .join(relative);
    assert!(
        path.exists(),
        "{} is missing: run `npm ci --prefix tests/fixtures/npm` (scripts/test does)",
        path.display()
    );
    path
}

/// Every example of `@octokit/webhooks-examples` as (event name, payload).
pub fn webhook_examples() -> Vec<(String, Value)> {
    let path = npm_fixture("@octokit/webhooks-examples/api.github.com/index.json");
    let text = std::fs::read_to_string(path).expect("read the examples");
    let groups: Vec<Value> = serde_json::from_str(&text).expect("examples are JSON");
    let mut examples = Vec::new();
    for group in groups {
        let name = group["name"].as_str().expect("name").to_owned();
        for example in group["examples"].as_array().expect("examples") {
            examples.push((name.clone(), example.clone()));
        }
    }
    examples
}

pub const SECRET: &str = "It's a Secret to Everybody";

/// `sha256=<hex>` of `body` with `secret`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

pub fn credential(name: &str, kind: &str, secret: &str) -> v1::Credential {
    v1::Credential {
        name: name.to_owned(),
        kind: kind.to_owned(),
        secret: secret.as_bytes().to_vec(),
    }
}

pub fn webhook_secret(current: &str, previous: Option<&str>) -> v1::Credential {
    credential(
        "webhook_secret",
        "webhook-secret",
        &serde_json::json!({"current": current, "previous": previous}).to_string(),
    )
}

pub async fn start() -> PluginUnderTest {
    PluginUnderTest::start(env!("CARGO_BIN_EXE_integration-github"))
        .await
        .expect("the plugin starts")
}

/// The canonical event schema, as the supervisor validates.
pub fn schema() -> jsonschema::Validator {
    let schema: Value =
        serde_json::from_str(plugin_protocol::CANONICAL_EVENT_SCHEMA_V1).expect("schema");
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("compiles")
}

/// Signed delivery headers.
pub fn headers<'a>(
    event: &'a str,
    delivery: &'a str,
    signature: &'a str,
) -> Vec<(&'a str, &'a str)> {
    vec![
        ("x-github-event", event),
        ("x-github-delivery", delivery),
        ("x-hub-signature-256", signature),
        ("content-type", "application/json"),
    ]
}
