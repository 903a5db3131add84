//! What the GitHub plugin tells the supervisor about itself.

use plugin_kit::{Capabilities, Capability};

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

/// JSON Schema of an integration's configuration, derived from its type.
fn config_schema() -> serde_json::Value {
    plugin_kit::config::schema_with_roles::<crate::settings::GitHubConfig, crate::settings::Roles>()
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

    #[test]
    fn the_derived_schema_takes_the_documented_keys_and_refuses_the_rest() {
        let schema = super::config_schema();
        let validator = jsonschema::validator_for(&schema).expect("a valid JSON Schema");
        let valid = serde_json::json!({
            "repositories": ["acme/api", "acme/web-*"],
            "credentials": {"token": "gh-token", "webhook_secret": "hook"},
            "api_url": "https://ghe.example.com/api/v3",
            "service_map": {"acme/api": "checkout"},
            "backfill_since": "2026-01-01T00:00:00Z",
            "enabled_event_types": ["push"],
            "mappings": [],
        });
        assert!(validator.is_valid(&valid), "{schema:#}");
        for invalid in [
            serde_json::json!({"repositories": []}),
            serde_json::json!({"repositories": ["no-slash"]}),
            serde_json::json!({"repositories": ["a/b"], "colour": 1}),
            serde_json::json!({"repositories": ["a/b"], "credentials": {"tokn": "x"}}),
            serde_json::json!({"repositories": ["a/b"], "credentials": {"token": 3}}),
            serde_json::json!({"credentials": {"token": "x"}}),
        ] {
            assert!(!validator.is_valid(&invalid), "accepted {invalid}");
        }
    }
}
