//! What the CloudWatch plugin tells the supervisor about itself.

use plugin_kit::{Capabilities, Capability};
use serde_json::json;

pub fn describe() -> plugin_kit::Description {
    plugin_kit::Description {
        name: "cloudwatch".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        description: "AWS CloudWatch metrics, logs and alarms across accounts and regions"
            .to_owned(),
        capabilities: Capabilities::from([
            Capability::Check,
            Capability::Collect,
            Capability::Webhook,
            Capability::Enrich,
        ]),
        config_schema: config_schema(),
        credential_kinds: ["aws", "webhook-secret"].map(str::to_owned).to_vec(),
    }
}

/// JSON Schema of an integration's configuration (keys as in INTERFACE.md).
fn config_schema() -> serde_json::Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "CloudWatch integration",
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "accounts": {
                "type": "array",
                "items": {
                    "type": "object", "additionalProperties": false,
                    "required": ["id", "regions"],
                    "properties": {
                        "id": { "type": "string", "pattern": "^[0-9]{12}$" },
                        "credentials": { "type": "string", "description": "credential name of kind aws" },
                        "role_arn": { "type": "string", "pattern": "^arn:aws[a-z-]*:iam::[0-9]{12}:role/.+$" },
                        "external_id": { "type": "string" },
                        "use_default_chain": { "type": "boolean", "description": "the host's AWS identity; only where the operator allows it" },
                        "regions": { "type": "array", "minItems": 1, "items": { "type": "string", "pattern": "^[a-z]{2}(-[a-z]+)+-[0-9]+$" } }
                    }
                }
            },
            "metrics": { "type": "array", "items": metric_query(true) },
            "metric_discovery": { "type": "array", "items": metric_query(false) },
            "metric_delay": duration(),
            "log_groups": { "type": "array", "items": { "type": "string", "minLength": 1, "maxLength": 512 } },
            "log_group_prefixes": { "type": "array", "items": { "type": "string", "minLength": 1, "maxLength": 512 } },
            "log_filter_pattern": { "type": "string", "maxLength": 1024 },
            "log_lookback": duration(),
            "log_page_size": { "type": "integer", "minimum": 1, "maximum": 10000 },
            "alarms": {
                "type": "array",
                "items": {
                    "type": "object", "additionalProperties": false,
                    "properties": {
                        "name": { "type": "string" },
                        "namespace": { "type": "string" },
                        "tags": { "type": "object", "additionalProperties": { "type": "string" } },
                        "category": { "enum": ["system", "security"] },
                        "severity": { "enum": ["debug", "info", "warning", "error", "critical"] },
                        "service": { "type": "string" }
                    }
                }
            },
            "endpoint_url": {
                "type": "object", "additionalProperties": false,
                "properties": {
                    "cloudwatch": { "type": "string", "format": "uri" },
                    "logs": { "type": "string", "format": "uri" },
                    "sts": { "type": "string", "format": "uri" },
                    "sns": { "type": "string", "format": "uri" }
                }
            },
            "poll_interval": duration(),
            "backfill": duration(),
            "service_map": { "type": "object", "additionalProperties": { "type": "string" } },
            "credentials": {
                "type": "object", "additionalProperties": false,
                "properties": { "webhook_secret": { "type": "string" } }
            },
            "enabled_event_types": { "type": "array", "items": { "enum": ["metric", "log", "alarm"] } },
            "mappings": { "type": "array", "items": { "type": "object" } }
        }
    })
}

fn duration() -> serde_json::Value {
    json!({ "type": "string", "pattern": "^[0-9]+(ms|s|m|h|d)$" })
}

/// A configured query (`metric` required) or a discovery filter (`metric` optional).
fn metric_query(metric_required: bool) -> serde_json::Value {
    let required = if metric_required {
        json!(["namespace", "metric", "stat", "period"])
    } else {
        json!(["namespace", "stat", "period"])
    };
    json!({
        "type": "object", "additionalProperties": false,
        "required": required,
        "properties": {
            "namespace": { "type": "string", "minLength": 1 },
            "metric": { "type": "string", "minLength": 1 },
            "dimensions": { "type": "object", "additionalProperties": { "type": "string" } },
            "stat": { "type": "string", "minLength": 1 },
            "period": { "type": "integer", "minimum": 1 },
            "service": { "type": "string" }
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
