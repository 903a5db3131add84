//! What the GitHub plugin tells the supervisor about itself.

use serde_json::json;

pub fn describe() -> plugin_kit::Description {
    plugin_kit::Description {
        name: "github".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        description:
            "GitHub commits, pull requests, deployments and releases, from webhooks and the API"
                .to_owned(),
        capabilities: ["check", "collect", "webhook", "enrich"]
            .map(str::to_owned)
            .to_vec(),
        config_schema: config_schema(),
        credential_kinds: ["api-key", "github-app", "webhook-secret"]
            .map(str::to_owned)
            .to_vec(),
        dependencies: Vec::new(),
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
        let manifest: toml::Table =
            toml::from_str(include_str!("../plugin.toml")).expect("plugin.toml is TOML");
        let described = super::describe();
        assert_eq!(manifest["name"].as_str(), Some(described.name.as_str()));
        assert_eq!(
            manifest["version"].as_str(),
            Some(described.version.as_str())
        );
        let capabilities: Vec<&str> = manifest["capabilities"]
            .as_array()
            .expect("array")
            .iter()
            .filter_map(|c| c.as_str())
            .collect();
        assert_eq!(capabilities, described.capabilities);
        assert_eq!(described.config_schema["type"], "object");
    }
}
