//! Credential kinds that plugins declare (`[credential_kinds.KIND]` in a manifest, named
//! `PLUGIN/KIND`), each with the JSON Schema its secrets must match. The registry fills
//! the catalog at every scan; the credential manager checks secrets against it when they
//! are stored, set by a tenant or renewed by a plugin. Errors name where in the secret
//! and which rule, never a value: a schema's own messages quote the instance.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use serde_json::Value;

use super::kinds::{Parsed, SecretError, secret_text};

/// A compiled secret schema.
pub struct SecretSchema(jsonschema::Validator);

impl std::fmt::Debug for SecretSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretSchema").finish_non_exhaustive()
    }
}

impl SecretSchema {
    /// Compiles `schema`; the error says what is wrong with it (the schema is the
    /// plugin's, not a secret, so its text may be quoted).
    pub fn compile(schema: &Value) -> Result<Self, String> {
        jsonschema::validator_for(schema)
            .map(Self)
            .map_err(|err| format!("not a valid JSON Schema ({err})"))
    }
}

/// The kinds plugins declare, by full name.
#[derive(Default)]
pub struct PluginKinds {
    kinds: RwLock<BTreeMap<String, Arc<SecretSchema>>>,
}

impl std::fmt::Debug for PluginKinds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

impl PluginKinds {
    /// Replaces the catalog with what the plugins that run declare now.
    pub fn replace(&self, kinds: BTreeMap<String, SecretSchema>) {
        let kinds = kinds.into_iter().map(|(k, v)| (k, Arc::new(v))).collect();
        *self
            .kinds
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = kinds;
    }

    /// The declared kinds' names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.kinds
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .keys()
            .cloned()
            .collect()
    }

    fn get(&self, kind: &str) -> Option<Arc<SecretSchema>> {
        self.kinds
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(kind)
            .cloned()
    }

    /// Checks a secret of `kind`, if a plugin declares `kind`.
    pub(super) fn parse(&self, kind: &str, raw: &[u8]) -> Option<Result<Parsed, SecretError>> {
        let schema = self.get(kind)?;
        Some(parse_against(kind, &schema, raw))
    }
}

/// A secret of a declared kind is JSON; text that does not look like a JSON object or
/// array is taken as a JSON string (a bare token, as for `api-key`), without its
/// trailing newline.
fn parse_against(kind: &str, schema: &SecretSchema, raw: &[u8]) -> Result<Parsed, SecretError> {
    let kind = kind.to_owned();
    let Some(text) = secret_text(raw)? else {
        return Err(SecretError::PluginKindEmpty { kind });
    };
    let value = if text.trim_start().starts_with(['{', '[']) {
        // serde_json's message can quote input; keep only the position.
        serde_json::from_str::<Value>(&text).map_err(|err| SecretError::PluginKindNotJson {
            kind: kind.clone(),
            line: err.line(),
            column: err.column(),
        })?
    } else {
        Value::String(text)
    };
    if let Some(error) = schema.0.iter_errors(&value).next() {
        let at = error.instance_path().as_str();
        let at = if at.is_empty() { "/" } else { at };
        return Err(match error.kind() {
            jsonschema::error::ValidationErrorKind::Required { property } => {
                SecretError::PluginKindMissing {
                    kind,
                    at: at.to_owned(),
                    // The name comes from the schema, not the secret.
                    field: property.as_str().unwrap_or("?").to_owned(),
                }
            }
            jsonschema::error::ValidationErrorKind::AdditionalProperties { unexpected } => {
                SecretError::PluginKindUnknownField {
                    kind,
                    at: at.to_owned(),
                    fields: unexpected.join("`, `"),
                }
            }
            other => SecretError::PluginKindRule {
                kind,
                at: at.to_owned(),
                rule: other.keyword().to_owned(),
            },
        });
    }
    Ok(Parsed {
        value,
        expires_ms: None,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::credentials::MAX_SECRET_BYTES;

    fn catalog() -> PluginKinds {
        let schema = json!({
            "type": "object",
            "required": ["account", "token"],
            "additionalProperties": false,
            "properties": {
                "account": { "type": "string", "pattern": "^[a-z]+$" },
                "token": { "type": "string", "minLength": 20 },
            },
        });
        let kinds = PluginKinds::default();
        kinds.replace(BTreeMap::from([
            (
                "reports/api-token".to_owned(),
                SecretSchema::compile(&schema).expect("compiles"),
            ),
            (
                "reports/bare".to_owned(),
                SecretSchema::compile(&json!({ "type": "string", "minLength": 8 }))
                    .expect("compiles"),
            ),
        ]));
        kinds
    }

    #[test]
    fn secrets_of_a_declared_kind_match_its_schema() {
        let kinds = catalog();
        let ok = kinds
            .parse(
                "reports/api-token",
                br#"{"account":"acme","token":"0123456789abcdefghij"}"#,
            )
            .expect("declared")
            .expect("valid");
        assert_eq!(ok.value["account"], "acme");
        let bare = kinds
            .parse("reports/bare", b"tok-12345678\n")
            .expect("declared")
            .expect("valid");
        assert_eq!(bare.value, json!("tok-12345678"));
        assert!(kinds.parse("reports/other", b"{}").is_none());
        assert_eq!(kinds.names(), ["reports/api-token", "reports/bare"]);
    }

    #[test]
    fn refusals_name_the_place_and_the_rule_and_never_the_value() {
        let kinds = catalog();
        let cases: [(&str, &[u8], &str); 7] = [
            (
                "reports/api-token",
                br#"{"account":"acme"}"#,
                "the reports/api-token secret lacks `token`",
            ),
            (
                "reports/api-token",
                br#"{"account":"acme","token":"topsecretvalue"}"#,
                "at `/token` breaks the schema's `minLength` rule",
            ),
            (
                "reports/api-token",
                br#"{"account":"TOPSECRETVALUE","token":"0123456789abcdefghij"}"#,
                "at `/account` breaks the schema's `pattern` rule",
            ),
            (
                "reports/api-token",
                br#"{"account":"acme","token":"0123456789abcdefghij","topsecretvalue":1}"#,
                "unknown field `topsecretvalue`",
            ),
            (
                "reports/api-token",
                b"{\"token\": topsecretvalue}",
                "not JSON (line 1, column",
            ),
            (
                "reports/bare",
                b"topsecr",
                "at `/` breaks the schema's `minLength`",
            ),
            ("reports/bare", b"\n", "the reports/bare secret is empty"),
        ];
        for (kind, raw, expected) in cases {
            let err = kinds
                .parse(kind, raw)
                .expect("declared")
                .expect_err(expected)
                .to_string();
            assert!(err.contains(expected), "expected `{expected}` in: {err}");
            // A field name the secret invented may be named; its values never.
            let value_leak = if expected.contains("unknown field") {
                err.contains("0123456789")
            } else {
                err.contains("topsecr") || err.contains("TOPSECRET") || err.contains("0123")
            };
            assert!(!value_leak, "leaked: {err}");
        }
        assert!(matches!(
            kinds.parse("reports/bare", &vec![b'a'; MAX_SECRET_BYTES + 1]),
            Some(Err(SecretError::TooLarge { .. }))
        ));
    }

    #[test]
    fn a_schema_that_does_not_compile_is_named() {
        let err = SecretSchema::compile(&json!({ "type": "no-such-type" })).expect_err("invalid");
        assert!(err.contains("not a valid JSON Schema"), "{err}");
    }
}
