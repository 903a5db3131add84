//! What the GitHub plugin tells the supervisor about itself.

use plugin_kit::{Capabilities, Capability};
use serde_json::json;

pub fn describe() -> plugin_kit::Description {
    plugin_kit::Description {
        name: "github".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        description:
            "GitHub commits, pull requests, deployments and releases, from webhooks and the API"
                .to_owned(),
        capabilities: Capabilities::from([
            Capability::Check,
            Capability::Collect,
            Capability::Webhook,
            Capability::Enrich,
        ]),
        config_schema: config_schema(),
        credential_kinds: ["api-key", "github-app", "webhook-secret"]
            .map(str::to_owned)
            .to_vec(),
    }
}

/// JSON Schema of an integration's configuration (keys as in INTERFACE.md).
fn config_schema() -> serde_json::Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "GitHub integration",
        "type": "object",
        "additionalProperties": false,
        "required": ["repositories", "credentials"],
        "properties": {
            "repositories": {
                "description": "Repositories covered, exact (`org/repo`) or globs (`org/*`)",
                "type": "array", "minItems": 1,
                "items": { "type": "string", "pattern": "^[A-Za-z0-9_.-]+/[A-Za-z0-9_.*-]+$" }
            },
            "credentials": {
                "type": "object", "additionalProperties": false,
                "properties": {
                    "token": { "type": "string", "description": "credential name of a personal access token" },
                    "app": { "type": "string", "description": "credential name of a GitHub App" },
                    "webhook_secret": { "type": "string", "description": "credential name of the webhook secret" }
                }
            },
            "api_url": { "type": "string", "format": "uri", "description": "GitHub Enterprise Server API base URL" },
            "service_map": { "type": "object", "additionalProperties": { "type": "string" } },
            "backfill_since": { "type": "string", "format": "date-time" },
            "enabled_event_types": { "type": "array", "items": { "type": "string" } },
            "mappings": { "type": "array", "items": { "type": "object" } }
        }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn description_matches_the_manifest() {
        // The host's own check, run where the author sees it fail.
        let manifest = plugin_kit::manifest::Manifest::parse(include_str!("../plugin.toml"))
            .expect("plugin.toml is a valid manifest");
        let described = super::describe();
        assert_eq!(
            plugin_kit::manifest::check_description(&manifest, &described.to_response(1), 1),
            Ok(())
        );
        assert_eq!(described.config_schema["type"], "object");
    }
}
