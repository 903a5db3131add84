//! What the CloudWatch plugin tells the supervisor about itself.

use serde_json::json;

pub fn describe() -> plugin_kit::Description {
    plugin_kit::Description {
        name: "cloudwatch".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        description: "AWS CloudWatch metrics, logs and alarms across accounts and regions"
            .to_owned(),
        capabilities: ["check", "collect", "webhook", "enrich"]
            .map(str::to_owned)
            .to_vec(),
        config_schema: config_schema(),
        credential_kinds: ["aws", "webhook-secret"].map(str::to_owned).to_vec(),
        dependencies: Vec::new(),
    }
}

/// JSON Schema of an integration's configuration (keys as in INTERFACE.md).
fn config_schema() -> serde_json::Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "CloudWatch integration",
        "type": "object",
        "additionalProperties": false,
        "required": ["accounts"],
        "properties": {
            "accounts": {
                "type": "array", "minItems": 1,
                "items": {
                    "type": "object", "additionalProperties": false,
                    "required": ["id", "credentials", "regions"],
                    "properties": {
                        "id": { "type": "string", "pattern": "^[0-9]{12}$" },
                        "credentials": { "type": "string", "description": "credential name of kind aws" },
                        "role_arn": { "type": "string", "pattern": "^arn:aws[a-z-]*:iam::[0-9]{12}:role/.+$" },
                        "external_id": { "type": "string" },
                        "regions": { "type": "array", "minItems": 1, "items": { "type": "string", "pattern": "^[a-z]{2}(-[a-z]+)+-[0-9]+$" } }
                    }
                }
            },
            "metrics": {
                "type": "array",
                "items": {
                    "type": "object", "additionalProperties": false,
                    "required": ["namespace", "metric", "stat", "period"],
                    "properties": {
                        "namespace": { "type": "string" },
                        "metric": { "type": "string" },
                        "dimensions": { "type": "object", "additionalProperties": { "type": "string" } },
                        "stat": { "type": "string" },
                        "period": { "type": "integer", "minimum": 1 }
                    }
                }
            },
            "log_groups": { "type": "array", "items": { "type": "string" } },
            "log_group_prefixes": { "type": "array", "items": { "type": "string" } },
            "alarms": { "type": "array", "items": { "type": "object" } },
            "endpoint_url": {
                "type": "object", "additionalProperties": false,
                "properties": {
                    "cloudwatch": { "type": "string", "format": "uri" },
                    "logs": { "type": "string", "format": "uri" },
                    "sts": { "type": "string", "format": "uri" }
                }
            },
            "poll_interval": { "type": "string", "pattern": "^[0-9]+(ms|s|m|h)$" },
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
