//! Typed configuration. A plugin declares an integration's configuration as a Rust type
//! (`serde::Deserialize` + `schemars::JsonSchema`); [`schema_of`] is the JSON Schema its
//! `Describe` answers with, and [`Configured::parse`] reads a `Configure` request into
//! that type and the credentials it was sent, by role. A value that does not fit is
//! refused naming the field (`repositories[2]: invalid type: integer, expected a
//! string`), as `INVALID_ARGUMENT`.
//!
//! The supervisor consumes two keys of every configuration itself — `credentials` (role
//! → credential name) and `mappings` (field mappings) — so a plugin's type need not
//! declare them: the schema admits them and parsing removes them first. An empty
//! configuration is `{}`.
//!
//! ```
//! use plugin_kit::config::{Configured, schema_of};
//!
//! #[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
//! #[serde(deny_unknown_fields)]
//! struct Settings {
//!     /// The service the events are about.
//!     service: String,
//!     #[serde(default)]
//!     verbose: bool,
//! }
//!
//! let schema = schema_of::<Settings>();
//! assert_eq!(schema["properties"]["service"]["type"], "string");
//! let request = plugin_kit::v1::ConfigureRequest {
//!     tenant: "acme".into(),
//!     integration: "hooks".into(),
//!     config_json: r#"{"service": 7}"#.into(),
//!     credentials: vec![],
//! };
//! let refused = Configured::<Settings>::parse(&request).unwrap_err();
//! assert!(refused.to_string().starts_with("`service`: invalid type: integer"), "{refused}");
//! ```

use std::fmt;

use plugin_protocol::v1;
use secrecy::{ExposeSecret, SecretBox, SecretString};
use serde::de::DeserializeOwned;
use tonic::Status;

/// The keys of every configuration that the supervisor reads itself.
pub const HOST_KEYS: [&str; 2] = ["credentials", "mappings"];

/// The JSON Schema of configuration type `C`, admitting the host's keys.
pub fn schema_of<C: schemars::JsonSchema>() -> serde_json::Value {
    let mut schema = serde_json::to_value(schemars::schema_for!(C)).unwrap_or_default();
    if let Some(properties) = schema
        .get_mut("properties")
        .and_then(serde_json::Value::as_object_mut)
    {
        properties.entry("credentials").or_insert_with(|| {
            serde_json::json!({
                "type": "object",
                "description": "credential role -> the name of a stored credential (read by the supervisor)",
                "additionalProperties": { "type": "string" }
            })
        });
        properties.entry("mappings").or_insert_with(
            || serde_json::json!({ "description": "field mappings (applied by the supervisor)" }),
        );
    }
    schema
}

/// [`schema_of`] with the credential roles spelled out: `R`'s fields (each the name of a
/// stored credential) are the roles `credentials` may name, so `integrations add` refuses
/// a role the plugin does not take, naming it. `credentials` is required when `R` has a
/// required role.
pub fn schema_with_roles<C: schemars::JsonSchema, R: schemars::JsonSchema>() -> serde_json::Value {
    let mut schema = schema_of::<C>();
    let mut roles = serde_json::to_value(schemars::schema_for!(R)).unwrap_or_default();
    if let Some(roles) = roles.as_object_mut() {
        roles.remove("$schema");
        roles.remove("title");
    }
    let required = roles
        .get("required")
        .and_then(serde_json::Value::as_array)
        .is_some_and(|r| !r.is_empty());
    if let Some(object) = schema.as_object_mut() {
        if let Some(properties) = object
            .get_mut("properties")
            .and_then(serde_json::Value::as_object_mut)
        {
            properties.insert("credentials".to_owned(), roles);
        }
        if required {
            let list = object
                .entry("required")
                .or_insert_with(|| serde_json::Value::Array(Vec::new()));
            if let Some(list) = list.as_array_mut() {
                list.push(serde_json::Value::from("credentials"));
            }
        }
    }
    schema
}

/// Why a configuration was refused; names the field, never quotes a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("the configuration is not a JSON object: {0}")]
    NotAnObject(String),
    #[error("`{path}`: {message}")]
    Field { path: String, message: String },
    #[error("the configuration: {0}")]
    Whole(String),
    #[error("credential role `{0}` is required but no credential was configured for it")]
    MissingCredential(String),
    #[error("credential role `{0}` is configured but its secret was not sent")]
    NotSent(String),
}

impl From<ConfigError> for Status {
    fn from(error: ConfigError) -> Self {
        Status::invalid_argument(error.to_string())
    }
}

/// One credential the supervisor sent: its role in this configuration, its kind, and the
/// secret (redacted in `Debug`).
pub struct Credential {
    pub role: String,
    pub kind: String,
    secret: SecretBox<Vec<u8>>,
}

impl Credential {
    /// The secret's bytes (JSON text for the structured kinds).
    pub fn secret(&self) -> &[u8] {
        self.secret.expose_secret()
    }

    /// The string field `name` of a structured secret (a JSON object such as a
    /// plugin-declared kind's `{"token": "…"}`), kept secret; the refusal names the role
    /// and the field, never the value.
    pub fn field(&self, name: &str) -> Result<SecretString, ConfigError> {
        let missing = || ConfigError::Field {
            path: format!("credentials.{}", self.role),
            message: format!("the {} secret has no string `{name}`", self.kind),
        };
        let value: serde_json::Value =
            serde_json::from_slice(self.secret()).map_err(|_| missing())?;
        value
            .get(name)
            .and_then(serde_json::Value::as_str)
            .map(|text| SecretString::from(text.to_owned()))
            .ok_or_else(missing)
    }

    /// The webhook secrets this credential holds (current, and previous during a
    /// rotation), or the refusal that names its role.
    pub fn webhook_secrets(&self) -> Result<crate::signature::WebhookSecrets, ConfigError> {
        crate::signature::WebhookSecrets::from_credential(&self.to_protocol()).map_err(|e| {
            ConfigError::Field {
                path: format!("credentials.{}", self.role),
                message: e.to_string(),
            }
        })
    }

    /// The credential as the protocol carries it, for helpers that take one (such as
    /// [`crate::signature::WebhookSecrets::from_credential`]).
    pub fn to_protocol(&self) -> v1::Credential {
        v1::Credential {
            name: self.role.clone(),
            kind: self.kind.clone(),
            secret: self.secret().to_vec(),
        }
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("role", &self.role)
            .field("kind", &self.kind)
            .field("secret", &"[redacted]")
            .finish()
    }
}

/// The credentials of one configuration, by role.
#[derive(Debug, Default)]
pub struct Credentials(Vec<Credential>);

impl Credentials {
    /// The credential configured for `role`, if any.
    pub fn get(&self, role: &str) -> Option<&Credential> {
        self.0.iter().find(|c| c.role == role)
    }

    /// The credential for `role`, or the refusal that names the role.
    pub fn require(&self, role: &str) -> Result<&Credential, ConfigError> {
        self.get(role)
            .ok_or_else(|| ConfigError::MissingCredential(role.to_owned()))
    }

    /// The roles present.
    pub fn roles(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|c| c.role.as_str())
    }
}

/// A `Configure` request read into the plugin's configuration type.
#[derive(Debug)]
pub struct Configured<C> {
    pub tenant: String,
    pub integration: String,
    pub config: C,
    pub credentials: Credentials,
}

impl<C: DeserializeOwned> Configured<C> {
    /// Reads `request`: its configuration (without the host's keys) into `C`, its
    /// credentials by role. An empty configuration is `{}`.
    pub fn parse(request: &v1::ConfigureRequest) -> Result<Self, ConfigError> {
        let text = request.config_json.trim();
        let mut value: serde_json::Value = if text.is_empty() {
            serde_json::Value::Object(serde_json::Map::new())
        } else {
            serde_json::from_str(text).map_err(|e| ConfigError::NotAnObject(e.to_string()))?
        };
        let Some(object) = value.as_object_mut() else {
            return Err(ConfigError::NotAnObject(format!(
                "it is {}",
                kind_of(&value)
            )));
        };
        // A role the configuration names must have arrived with it (the supervisor
        // sends each one; a harness or another host might not).
        if let Some(roles) = object
            .get("credentials")
            .and_then(serde_json::Value::as_object)
            && let Some(role) = roles
                .keys()
                .find(|role| !request.credentials.iter().any(|c| &c.name == *role))
        {
            return Err(ConfigError::NotSent(role.clone()));
        }
        for key in HOST_KEYS {
            object.remove(key);
        }
        let config = serde_path_to_error::deserialize(value).map_err(|error| {
            let path = error.path().to_string();
            let message = error.into_inner().to_string();
            if path == "." {
                ConfigError::Whole(message)
            } else {
                ConfigError::Field { path, message }
            }
        })?;
        Ok(Self {
            tenant: request.tenant.clone(),
            integration: request.integration.clone(),
            config,
            credentials: Credentials(
                request
                    .credentials
                    .iter()
                    .map(|c| Credential {
                        role: c.name.clone(),
                        kind: c.kind.clone(),
                        secret: SecretBox::new(Box::new(c.secret.clone())),
                    })
                    .collect(),
            ),
        })
    }
}

fn kind_of(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize, schemars::JsonSchema, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Settings {
        repositories: Vec<String>,
        #[serde(default)]
        limit: Option<u32>,
        nested: Option<Nested>,
    }

    #[derive(Debug, serde::Deserialize, schemars::JsonSchema, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Nested {
        url: String,
    }

    fn request(config: &str) -> v1::ConfigureRequest {
        v1::ConfigureRequest {
            tenant: "acme".into(),
            integration: "main".into(),
            config_json: config.into(),
            credentials: vec![v1::Credential {
                name: "token".into(),
                kind: "api-token".into(),
                secret: b"\"s3cret-value\"".to_vec(),
            }],
        }
    }

    #[test]
    fn a_valid_configuration_is_typed_and_the_host_keys_are_dropped() {
        let parsed = Configured::<Settings>::parse(&request(
            r#"{"repositories": ["a/b"], "credentials": {"token": "gh"}, "mappings": []}"#,
        ))
        .expect("valid");
        assert_eq!(parsed.config.repositories, ["a/b"]);
        assert_eq!(parsed.tenant, "acme");
        let token = parsed.credentials.require("token").expect("token");
        assert_eq!(token.secret(), b"\"s3cret-value\"");
        assert!(!format!("{parsed:?}").contains("s3cret"), "redacted");
        assert_eq!(
            parsed.credentials.require("app").map(|c| c.role.clone()),
            Err(ConfigError::MissingCredential("app".into()))
        );
    }

    #[test]
    fn refusals_name_the_field() {
        let refused = |config: &str| {
            Configured::<Settings>::parse(&request(config))
                .expect_err("refused")
                .to_string()
        };
        assert!(
            refused(r#"{"repositories": ["a", 3]}"#).starts_with("`repositories[1]`: invalid type"),
            "{}",
            refused(r#"{"repositories": ["a", 3]}"#)
        );
        let nested = refused(r#"{"repositories": [], "nested": {"url": 1}}"#);
        assert!(nested.starts_with("`nested.url`:"), "{nested}");
        let unknown = refused(r#"{"repositories": [], "colour": "red"}"#);
        assert!(unknown.contains("unknown field `colour`"), "{unknown}");
        let missing = refused("{}");
        assert!(
            missing.contains("missing field `repositories`"),
            "{missing}"
        );
        let not_sent = refused(r#"{"repositories": [], "credentials": {"app": "gh-app"}}"#);
        assert_eq!(
            not_sent,
            "credential role `app` is configured but its secret was not sent"
        );
        assert!(refused("[1]").contains("it is an array"));
        assert!(refused("{").starts_with("the configuration is not a JSON object"));
        let status = Status::from(ConfigError::Whole("x".into()));
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn roles_spelled_out_are_the_only_ones_the_schema_admits() {
        #[derive(schemars::JsonSchema)]
        #[allow(dead_code)]
        #[serde(deny_unknown_fields)]
        struct Roles {
            token: String,
            app: Option<String>,
        }
        let schema = schema_with_roles::<Settings, Roles>();
        let credentials = &schema["properties"]["credentials"];
        assert_eq!(credentials["additionalProperties"], false, "{schema:#}");
        assert_eq!(credentials["required"], serde_json::json!(["token"]));
        assert!(
            schema["required"]
                .as_array()
                .is_some_and(|r| r.contains(&"credentials".into())),
            "{schema:#}"
        );
        assert!(schema["properties"]["mappings"].is_object());
    }

    #[test]
    fn an_empty_configuration_is_an_empty_object() {
        #[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
        #[serde(deny_unknown_fields)]
        struct Nothing {}
        assert!(Configured::<Nothing>::parse(&request("")).is_ok());
        assert!(Configured::<Nothing>::parse(&request("{}")).is_ok());
        assert!(Configured::<Nothing>::parse(&request(r#"{"credentials": {}}"#)).is_ok());
    }

    #[test]
    fn the_schema_describes_the_type_and_admits_the_host_keys() {
        let schema = schema_of::<Settings>();
        assert_eq!(schema["type"], "object");
        assert_eq!(schema["properties"]["repositories"]["type"], "array");
        assert_eq!(schema["additionalProperties"], false);
        assert_eq!(schema["properties"]["credentials"]["type"], "object");
        assert!(schema["properties"]["mappings"].is_object());
        assert_eq!(schema["required"], serde_json::json!(["repositories"]));
    }
}
