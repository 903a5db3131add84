//! Validating an integration's configuration against the JSON Schema its plugin returns
//! from `Describe`, with errors that name the field.

use serde_json::Value;

/// Every violation, one line each: `/path: what is wrong`.
pub fn against_schema(schema_json: &str, config: &Value) -> Result<(), Vec<String>> {
    if schema_json.trim().is_empty() {
        return Ok(());
    }
    let schema: Value = serde_json::from_str(schema_json)
        .map_err(|e| vec![format!("the plugin's config schema is not JSON: {e}")])?;
    let validator = jsonschema::validator_for(&schema)
        .map_err(|e| vec![format!("the plugin's config schema is invalid: {e}")])?;
    let errors: Vec<String> = validator
        .iter_errors(config)
        .map(|error| {
            let path = error.instance_path().as_str().to_owned();
            format!("{}: {error}", if path.is_empty() { "/" } else { &path })
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn errors_name_the_field() {
        let schema = json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["repositories"],
            "properties": { "repositories": { "type": "array", "items": { "type": "string" } }, "poll": { "type": "integer" } }
        })
        .to_string();
        assert!(against_schema(&schema, &json!({"repositories": ["a/b"]})).is_ok());
        let errors = against_schema(
            &schema,
            &json!({"repositories": [1], "poll": "x", "extra": true}),
        )
        .expect_err("invalid");
        let text = errors.join("\n");
        assert!(text.contains("/repositories/0:"), "{text}");
        assert!(text.contains("/poll:"), "{text}");
        assert!(text.contains("extra"), "{text}");
        let missing = against_schema(&schema, &json!({}))
            .expect_err("missing")
            .join("\n");
        assert!(missing.contains("repositories"), "{missing}");
        assert!(against_schema("{not json", &json!({})).is_err());
    }
}
