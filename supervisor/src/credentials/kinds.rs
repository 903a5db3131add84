//! Credential kinds and the shape of their secrets (as `integrationctl` reads them from
//! stdin). Validation errors name the field, never its value.

use serde_json::{Map, Value};

/// A kind of credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    ApiKey,
    OAuth2,
    GitHubApp,
    Aws,
    WebhookSecret,
    Basic,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::ApiKey,
        Kind::OAuth2,
        Kind::GitHubApp,
        Kind::Aws,
        Kind::WebhookSecret,
        Kind::Basic,
    ];

    pub fn parse(text: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == text)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::ApiKey => "api-key",
            Kind::OAuth2 => "oauth2",
            Kind::GitHubApp => "github-app",
            Kind::Aws => "aws",
            Kind::WebhookSecret => "webhook-secret",
            Kind::Basic => "basic",
        }
    }

    /// Raw kinds take the secret as it is; the others a JSON object.
    fn is_raw(self) -> bool {
        matches!(self, Kind::ApiKey | Kind::WebhookSecret)
    }
}

/// A validated secret, ready to encrypt. `expires_ms` comes from the secret itself
/// (`expires_at` of an OAuth2 token set) when it says.
#[derive(Debug)]
pub struct Parsed {
    pub value: Value,
    pub expires_ms: Option<u64>,
}

/// Why a secret was refused; names fields, never values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("the {kind} secret is empty")]
    Empty { kind: &'static str },
    #[error("the {kind} secret is not a JSON object ({reason}); expected fields: {fields}")]
    NotJson {
        kind: &'static str,
        reason: String,
        fields: String,
    },
    #[error("the {kind} secret lacks `{field}`")]
    Missing {
        kind: &'static str,
        field: &'static str,
    },
    #[error("the {kind} secret's `{field}` must be a non-empty string")]
    NotString { kind: &'static str, field: String },
    #[error("the {kind} secret has an unknown field `{field}`; expected fields: {fields}")]
    Unknown {
        kind: &'static str,
        field: String,
        fields: String,
    },
    #[error("the {kind} secret's `expires_at` is not an RFC 3339 time or Unix seconds")]
    BadExpiry { kind: &'static str },
    #[error("the aws secret needs either `access_key_id` and `secret_access_key`, or `role_arn`")]
    AwsShape,
    #[error("secrets are limited to {max} bytes")]
    TooLarge { max: usize },
    #[error("the {kind} secret is empty")]
    PluginKindEmpty { kind: String },
    #[error("the {kind} secret is not JSON (line {line}, column {column})")]
    PluginKindNotJson {
        kind: String,
        line: usize,
        column: usize,
    },
    #[error("the {kind} secret lacks `{field}`{}", at_place(at))]
    PluginKindMissing {
        kind: String,
        at: String,
        field: String,
    },
    #[error("the {kind} secret has an unknown field `{fields}`{}", at_place(at))]
    PluginKindUnknownField {
        kind: String,
        at: String,
        fields: String,
    },
    #[error("the {kind} secret at `{at}` breaks the schema's `{rule}` rule")]
    PluginKindRule {
        kind: String,
        at: String,
        rule: String,
    },
}

/// ` at `/a/b`` for a place inside the secret; nothing for its top level.
fn at_place(at: &str) -> String {
    if at == "/" {
        String::new()
    } else {
        format!(" at `{at}`")
    }
}

/// Secrets larger than this are refused (a GitHub App key is about 1.7 KB).
pub const MAX_SECRET_BYTES: usize = 64 * 1024;

fn schema(kind: Kind) -> (&'static [&'static str], &'static [&'static str]) {
    match kind {
        Kind::OAuth2 => (
            &["access_token"],
            &[
                "refresh_token",
                "expires_at",
                "token_url",
                "client_id",
                "client_secret",
            ],
        ),
        // `installation_token` and `expires_at` are written by renewal (the plugin
        // exchanges the App's JWT for an installation token).
        Kind::GitHubApp => (
            &["app_id", "installation_id", "private_key"],
            &["installation_token", "expires_at"],
        ),
        Kind::Aws => (
            &[],
            &[
                "access_key_id",
                "secret_access_key",
                "session_token",
                "role_arn",
                "external_id",
            ],
        ),
        Kind::Basic => (&["username", "password"], &[]),
        Kind::ApiKey | Kind::WebhookSecret => (&[], &[]),
    }
}

/// A secret within the size limit, as text without its trailing newline (as `echo`
/// and editors leave one); `None` when it is blank.
pub(super) fn secret_text(raw: &[u8]) -> Result<Option<String>, SecretError> {
    if raw.len() > MAX_SECRET_BYTES {
        return Err(SecretError::TooLarge {
            max: MAX_SECRET_BYTES,
        });
    }
    let text = String::from_utf8_lossy(raw);
    let text = text.trim_end_matches(['\n', '\r']);
    Ok((!text.trim().is_empty()).then(|| text.to_owned()))
}

/// Validates a secret read from stdin.
pub fn parse(kind: Kind, raw: &[u8]) -> Result<Parsed, SecretError> {
    let name = kind.as_str();
    let text = secret_text(raw)?;
    if kind.is_raw() {
        let text = text.ok_or(SecretError::Empty { kind: name })?;
        return Ok(Parsed {
            value: Value::String(text),
            expires_ms: None,
        });
    }
    let (required, optional) = schema(kind);
    let fields = required
        .iter()
        .chain(optional)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    let object: Map<String, Value> = match serde_json::from_slice::<Value>(raw) {
        Ok(Value::Object(object)) => object,
        Ok(_) => {
            return Err(SecretError::NotJson {
                kind: name,
                reason: "not an object".to_owned(),
                fields,
            });
        }
        // serde_json's message can quote input; keep only the position.
        Err(err) => {
            return Err(SecretError::NotJson {
                kind: name,
                reason: format!("line {} column {}", err.line(), err.column()),
                fields,
            });
        }
    };
    for key in object.keys() {
        if !required.contains(&key.as_str()) && !optional.contains(&key.as_str()) {
            return Err(SecretError::Unknown {
                kind: name,
                field: key.clone(),
                fields,
            });
        }
    }
    for field in required {
        if !object.contains_key(*field) {
            return Err(SecretError::Missing { kind: name, field });
        }
    }
    for (key, value) in &object {
        let numeric_id =
            matches!(key.as_str(), "app_id" | "installation_id" | "expires_at") && value.is_u64();
        if !numeric_id && value.as_str().is_none_or(str::is_empty) {
            return Err(SecretError::NotString {
                kind: name,
                field: key.clone(),
            });
        }
    }
    if kind == Kind::Aws {
        let keys = object.contains_key("access_key_id") && object.contains_key("secret_access_key");
        if !keys && !object.contains_key("role_arn") {
            return Err(SecretError::AwsShape);
        }
    }
    let expires_ms = match object.get("expires_at") {
        // An App without an installation token is due for renewal at once: the
        // renewal loop has its plugin mint one, then renews it before each expiry.
        None if kind == Kind::GitHubApp => Some(plugin_kit::clock::now_ms()),
        None => None,
        Some(value) => Some(parse_time_ms(value).ok_or(SecretError::BadExpiry { kind: name })?),
    };
    Ok(Parsed {
        value: Value::Object(object),
        expires_ms,
    })
}

/// RFC 3339 (`2026-11-25T10:00:00Z`) or Unix seconds, as Unix milliseconds.
pub fn parse_time_ms(value: &Value) -> Option<u64> {
    if let Some(seconds) = value.as_u64() {
        return seconds.checked_mul(1000);
    }
    let text = value.as_str()?;
    humantime::parse_rfc3339_weak(text)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as u64)
}

/// A secret from stdin of any kind, from bytes anyone could send: parsed or refused,
/// and a refusal never quotes the secret. Quoting is told apart from a secret that
/// happens to spell words of the message (the `admin_request` fuzz target found two:
/// "access_tok", "a JSON object (lin") by refusing the same secret with every letter and
/// digit shifted: a message that quotes shifts with it. What the fuzz targets and
/// property tests run.
pub fn check_untrusted_secret(raw: &[u8]) {
    fn shift(text: &str) -> String {
        text.chars()
            .map(|c| match c {
                'z' => 'a',
                'Z' => 'A',
                '9' => '0',
                'a'..='y' | 'A'..='Y' | '0'..='8' => char::from(c as u8 + 1),
                other => other,
            })
            .collect()
    }
    fn strings<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
        match value {
            Value::String(text) => out.push(text),
            Value::Array(items) => items.iter().for_each(|item| strings(item, out)),
            Value::Object(map) => map.values().for_each(|item| strings(item, out)),
            _ => {}
        }
    }
    let text = String::from_utf8_lossy(raw);
    let parsed = serde_json::from_str::<Value>(&text).ok();
    let mut secret_parts = Vec::new();
    match &parsed {
        Some(value) => strings(value, &mut secret_parts),
        None => secret_parts.push(text.trim()),
    }
    secret_parts.retain(|part| part.trim().len() >= 8);
    let shifted = shift(&text);
    for kind in Kind::ALL {
        let Err(err) = parse(kind, raw) else {
            continue;
        };
        let message = err.to_string();
        let shifted_message = parse(kind, shifted.as_bytes())
            .err()
            .map(|err| err.to_string())
            .unwrap_or_default();
        for part in &secret_parts {
            assert!(
                !(message.contains(part) && shifted_message.contains(&shift(part))),
                "the refusal quotes the secret: {message}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_kinds_are_the_ones_the_protocol_names() {
        let names: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(names, plugin_protocol::BUILT_IN_CREDENTIAL_KINDS);
    }

    #[test]
    fn raw_kinds_take_the_value_without_its_newline() {
        let parsed = parse(Kind::ApiKey, b"s3cret\n").expect("valid");
        assert_eq!(parsed.value, Value::String("s3cret".into()));
        assert!(matches!(
            parse(Kind::WebhookSecret, b"\n"),
            Err(SecretError::Empty { .. })
        ));
    }

    #[test]
    fn structured_kinds_check_fields_and_never_echo_values() {
        let ok = parse(
            Kind::Aws,
            br#"{"access_key_id":"AKIA","secret_access_key":"wJalr"}"#,
        );
        assert!(ok.is_ok());
        assert!(
            parse(
                Kind::Aws,
                br#"{"role_arn":"arn:aws:iam::123456789012:role/x","external_id":"e"}"#
            )
            .is_ok()
        );
        let cases: Vec<(Kind, &[u8], &str)> = vec![
            (
                Kind::Aws,
                br#"{"access_key_id":"AKIA"}"#,
                "either `access_key_id` and `secret_access_key`",
            ),
            (Kind::Basic, br#"{"username":"u"}"#, "lacks `password`"),
            (
                Kind::Basic,
                br#"{"username":"u","password":"","x":1}"#,
                "unknown field `x`",
            ),
            (
                Kind::Basic,
                br#"{"username":"u","password":""}"#,
                "`password` must be a non-empty string",
            ),
            (
                Kind::GitHubApp,
                br#"{"app_id":1,"installation_id":2}"#,
                "lacks `private_key`",
            ),
            (
                Kind::OAuth2,
                br#"{"access_token":"topsecretvalue","expires_at":"soon"}"#,
                "`expires_at` is not",
            ),
            (
                Kind::OAuth2,
                b"{\"access_token\": topsecretvalue}",
                "not a JSON object (line 1",
            ),
            (Kind::OAuth2, b"[\"topsecretvalue\"]", "not an object"),
        ];
        for (kind, raw, expected) in cases {
            let err = parse(kind, raw).expect_err(expected).to_string();
            assert!(err.contains(expected), "{err}");
            assert!(
                !err.contains("topsecretvalue") && !err.contains("AKIA"),
                "leaked: {err}"
            );
        }
        let oauth = parse(
            Kind::OAuth2,
            br#"{"access_token":"a","expires_at":"2030-01-01T00:00:00Z"}"#,
        )
        .expect("valid");
        assert_eq!(oauth.expires_ms, Some(1_893_456_000_000));
        assert!(matches!(
            parse(Kind::ApiKey, &vec![b'a'; MAX_SECRET_BYTES + 1]),
            Err(SecretError::TooLarge { .. })
        ));
    }
}
