//! `integration-example`: the smallest useful plugin. It describes itself and emits
//! one batch of events per `Collect`, resuming after the cursor it was given.

use plugin_kit::{Description, EventStream, Plugin, Status, v1};

fn main() -> std::process::ExitCode {
    plugin_kit::serve(Example)
}

struct Example;

impl Plugin for Example {
    fn describe(&self) -> Description {
        Description {
            name: "example".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            description: "Template plugin".to_owned(),
            capabilities: [plugin_kit::Capability::Collect].into(),
            config_schema: serde_json::json!({
                "type": "object",
                "additionalProperties": false,
                "properties": { "greeting": { "type": "string" } }
            }),
            credential_kinds: Vec::new(),
            dependencies: Vec::new(),
        }
    }

    async fn collect(&self, cursor: String) -> Result<EventStream, Status> {
        let next: u64 = if cursor.is_empty() {
            0
        } else {
            cursor.parse().map_err(|_| {
                Status::invalid_argument(format!("cursor `{cursor}` is not a number"))
            })?
        };
        let batch = v1::EventBatch {
            events_json: vec![serde_json::json!({ "id": format!("example-{next}") }).to_string()],
            cursor: (next + 1).to_string(),
        };
        Ok(Box::pin(tokio_stream::iter([Ok(batch)])))
    }
}
