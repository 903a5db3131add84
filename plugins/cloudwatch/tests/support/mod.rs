//! Shared by the plugin's tests: moto and the CBOR adapter, SDK clients to set up what
//! the plugin reads, the canonical schema and the plugin under test.

#![allow(dead_code)]

pub mod moto;

use aws_config::{BehaviorVersion, Region};
use aws_credential_types::Credentials;
use plugin_kit::testing::PluginUnderTest;
use plugin_kit::v1;
use serde_json::Value;

pub const ACCOUNT: &str = "123456789012";
pub const OTHER_ACCOUNT: &str = "111111111111";
pub const KEYS: &str = r#"{"access_key_id":"AKIDTESTTESTTEST","secret_access_key":"test-secret"}"#;

/// moto, the adapter in front of it, and clients to set things up with.
#[derive(Debug)]
pub struct Aws {
    pub moto: moto::Moto,
    pub adapter: moto::CborAdapter,
}

impl Aws {
    pub fn start() -> Self {
        let moto = moto::Moto::start();
        let adapter = moto::CborAdapter::start(&moto.url);
        Self { moto, adapter }
    }

    /// `endpoint_url` for the plugin's configuration.
    pub fn endpoints(&self) -> Value {
        serde_json::json!({
            "cloudwatch": self.adapter.url,
            "logs": self.moto.url,
            "sts": self.moto.url,
        })
    }

    async fn config(&self, region: &str, credentials: Credentials) -> aws_config::SdkConfig {
        aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(region.to_owned()))
            .credentials_provider(credentials)
            .load()
            .await
    }

    fn static_keys() -> Credentials {
        Credentials::new("AKIDTESTTESTTEST", "test-secret", None, None, "test")
    }

    /// Credentials of `account` (the default account's static keys, or a role
    /// assumed in another one, as moto keeps accounts apart).
    pub async fn credentials(&self, account: &str) -> Credentials {
        if account == ACCOUNT {
            return Self::static_keys();
        }
        let config = self.config("us-east-1", Self::static_keys()).await;
        let sts = aws_sdk_sts::Client::from_conf(
            aws_sdk_sts::config::Builder::from(&config)
                .endpoint_url(&self.moto.url)
                .build(),
        );
        let assumed = sts
            .assume_role()
            .role_arn(format!("arn:aws:iam::{account}:role/reader"))
            .role_session_name("setup")
            .send()
            .await
            .expect("assume role");
        let c = assumed.credentials().expect("credentials");
        Credentials::new(
            c.access_key_id(),
            c.secret_access_key(),
            Some(c.session_token().to_owned()),
            None,
            "assumed",
        )
    }

    pub async fn cloudwatch(&self, account: &str, region: &str) -> aws_sdk_cloudwatch::Client {
        let config = self.config(region, self.credentials(account).await).await;
        aws_sdk_cloudwatch::Client::from_conf(
            aws_sdk_cloudwatch::config::Builder::from(&config)
                .endpoint_url(&self.adapter.url)
                .build(),
        )
    }

    pub async fn logs(&self, account: &str, region: &str) -> aws_sdk_cloudwatchlogs::Client {
        let config = self.config(region, self.credentials(account).await).await;
        aws_sdk_cloudwatchlogs::Client::from_conf(
            aws_sdk_cloudwatchlogs::config::Builder::from(&config)
                .endpoint_url(&self.moto.url)
                .build(),
        )
    }

    /// Creates a log group with one stream and writes `lines` as (ms, message).
    pub async fn put_logs(
        &self,
        account: &str,
        region: &str,
        group: &str,
        stream: &str,
        lines: &[(i64, String)],
    ) {
        let logs = self.logs(account, region).await;
        let _ = logs.create_log_group().log_group_name(group).send().await;
        let _ = logs
            .create_log_stream()
            .log_group_name(group)
            .log_stream_name(stream)
            .send()
            .await;
        let events: Vec<aws_sdk_cloudwatchlogs::types::InputLogEvent> = lines
            .iter()
            .map(|(ms, message)| {
                aws_sdk_cloudwatchlogs::types::InputLogEvent::builder()
                    .timestamp(*ms)
                    .message(message)
                    .build()
                    .expect("log event")
            })
            .collect();
        logs.put_log_events()
            .log_group_name(group)
            .log_stream_name(stream)
            .set_log_events(Some(events))
            .send()
            .await
            .expect("put log events");
    }
}

pub fn now_ms() -> i64 {
    integration_cloudwatch::now_ms()
}

pub fn credential(name: &str, kind: &str, secret: &str) -> v1::Credential {
    v1::Credential {
        name: name.to_owned(),
        kind: kind.to_owned(),
        secret: secret.as_bytes().to_vec(),
    }
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

/// Every event of `batches`, checked against the schema.
pub fn events(batches: &[v1::EventBatch]) -> Vec<Value> {
    let schema = schema();
    batches
        .iter()
        .flat_map(|b| b.events_json.iter())
        .map(|json| {
            let event: Value = serde_json::from_str(json).expect("JSON");
            let errors: Vec<String> = schema.iter_errors(&event).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "{errors:?}: {json}");
            event
        })
        .collect()
}

/// The cursor the supervisor would keep after these batches.
pub fn last_cursor(batches: &[v1::EventBatch]) -> String {
    batches.last().map(|b| b.cursor.clone()).unwrap_or_default()
}

pub async fn start() -> PluginUnderTest {
    start_with_env(&[]).await
}

/// The plugin with short retry waits (so throttling tests take milliseconds).
pub async fn start_with_env(env: &[(&str, &str)]) -> PluginUnderTest {
    let env: Vec<(std::ffi::OsString, std::ffi::OsString)> = env
        .iter()
        .map(|(k, v)| ((*k).into(), (*v).into()))
        .collect();
    PluginUnderTest::start_with(env!("CARGO_BIN_EXE_integration-cloudwatch"), |spec| {
        spec.env.extend(env);
    })
    .await
    .expect("the plugin starts")
}

pub fn of_type<'a>(events: &'a [Value], prefix: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["type"].as_str().is_some_and(|t| t.starts_with(prefix)))
        .collect()
}
