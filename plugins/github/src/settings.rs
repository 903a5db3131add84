//! An integration's settings, read once from `Configure`: the configuration keys of
//! INTERFACE.md (github section) and the credentials they name. Secrets go straight into
//! `secrecy` types; no error message quotes one.

use std::collections::{HashMap, HashSet};

use plugin_kit::config::Configured;
use plugin_kit::signature::WebhookSecrets;
use plugin_kit::v1;
use secrecy::SecretString;
use serde::Deserialize;

use crate::scope::{RepositoryScope, ScopeError};

/// The public GitHub API; Enterprise Server sets `api_url`.
pub const DEFAULT_API_URL: &str = "https://api.github.com";

/// Webhook event types mapped when `enabled_event_types` is not set.
pub const SUPPORTED_EVENT_TYPES: [&str; 6] = [
    "push",
    "pull_request",
    "deployment",
    "deployment_status",
    "release",
    "workflow_run",
];

/// Why `Configure` was refused.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("the configuration is not valid: {0}")]
    Config(String),
    #[error(transparent)]
    Typed(#[from] plugin_kit::config::ConfigError),
    #[error(transparent)]
    Scope(#[from] ScopeError),
    #[error("credential `{role}` (kind {kind}) is not usable: {why}")]
    BadCredential {
        role: String,
        kind: String,
        why: String,
    },
    #[error("`enabled_event_types` names `{0}`, which this plugin does not map (it maps: {list})", list = SUPPORTED_EVENT_TYPES.join(", "))]
    UnknownEventType(String),
}

/// An integration's configuration, as its author writes it (keys of INTERFACE.md, github
/// section). Its JSON Schema is `Describe`'s, so `integrations add` checks it too.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "GitHub integration")]
pub struct GitHubConfig {
    /// Repositories covered, exact (`org/repo`) or globs (`org/*`).
    #[schemars(
        length(min = 1),
        inner(regex(pattern = r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.*-]+$"))
    )]
    repositories: Vec<String>,
    /// GitHub Enterprise Server API base URL.
    #[schemars(url)]
    api_url: Option<String>,
    /// `owner/repo` → the service its events belong to (default: the repository's name).
    #[serde(default)]
    service_map: HashMap<String, String>,
    /// History before this time (RFC 3339) is not collected.
    #[schemars(extend("format" = "date-time"))]
    backfill_since: Option<String>,
    /// The webhook event types mapped (default: all the plugin maps).
    enabled_event_types: Option<Vec<String>>,
}

/// The credential roles `credentials` may name, each the name of a stored credential.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // a schema only: the secrets arrive by role with Configure
pub struct Roles {
    /// A personal access token (`api-key`).
    token: Option<String>,
    /// A GitHub App installation (`github-app`); exclusive with `token`.
    app: Option<String>,
    /// The webhook secret (`webhook-secret`).
    webhook_secret: Option<String>,
}

/// How API calls authenticate.
#[derive(Debug)]
pub enum ApiCredential {
    /// A personal access token (classic or fine-grained).
    Token(SecretString),
    App(AppCredential),
}

/// A GitHub App installation: the key signs JWTs that are exchanged for
/// installation tokens. The stored secret may already carry a current token (the
/// credential manager's renewal keeps one there).
#[derive(Debug)]
pub struct AppCredential {
    pub app_id: u64,
    pub installation_id: u64,
    pub private_key: SecretString,
    pub installation_token: Option<(SecretString, u64)>,
}

/// Everything the plugin needs about one integration.
#[derive(Debug)]
pub struct Settings {
    pub tenant: String,
    pub integration: String,
    pub scope: RepositoryScope,
    pub api_url: String,
    /// Lowercased `owner/repo` → service name.
    service_map: HashMap<String, String>,
    /// Unix milliseconds; history before it is not collected.
    pub backfill_since_ms: Option<u64>,
    pub event_types: HashSet<String>,
    pub api: Option<ApiCredential>,
    pub webhook_secrets: Option<WebhookSecrets>,
}

impl Settings {
    pub fn from_configure(request: &v1::ConfigureRequest) -> Result<Self, SettingsError> {
        let configured = Configured::<GitHubConfig>::parse(request)?;
        let raw = configured.config;
        let scope = RepositoryScope::new(raw.repositories.iter().map(String::as_str))?;
        let api_url = raw
            .api_url
            .unwrap_or_else(|| DEFAULT_API_URL.to_owned())
            .trim_end_matches('/')
            .to_owned();
        if !(api_url.starts_with("https://") || api_url.starts_with("http://")) {
            return Err(SettingsError::Config(format!(
                "`api_url` must be an http(s) URL, not `{api_url}`"
            )));
        }
        let backfill_since_ms = match &raw.backfill_since {
            None => None,
            Some(text) => Some(plugin_kit::event_time_ms(text).ok_or_else(|| {
                SettingsError::Config(format!(
                    "`backfill_since` is not an RFC 3339 time: `{text}`"
                ))
            })?),
        };
        let event_types = match raw.enabled_event_types {
            None => SUPPORTED_EVENT_TYPES.map(str::to_owned).into(),
            Some(list) => {
                for name in &list {
                    if !SUPPORTED_EVENT_TYPES.contains(&name.as_str()) {
                        return Err(SettingsError::UnknownEventType(name.clone()));
                    }
                }
                list.into_iter().collect()
            }
        };
        let role = |name: &str| configured.credentials.get(name).map(|c| c.to_protocol());
        let api = match (role("token"), role("app")) {
            (Some(_), Some(_)) => {
                return Err(SettingsError::Config(
                    "`credentials.token` and `credentials.app` are exclusive: name one".to_owned(),
                ));
            }
            (Some(token), None) => Some(ApiCredential::Token(parse_token(&token)?)),
            (None, Some(app)) => Some(ApiCredential::App(parse_app(&app)?)),
            (None, None) => None,
        };
        let webhook_secrets = role("webhook_secret")
            .map(|secret| parse_webhook_secret(&secret))
            .transpose()?;
        Ok(Self {
            tenant: request.tenant.clone(),
            integration: request.integration.clone(),
            scope,
            api_url,
            service_map: raw
                .service_map
                .into_iter()
                .map(|(repo, service)| (repo.to_ascii_lowercase(), service))
                .collect(),
            backfill_since_ms,
            event_types,
            api,
            webhook_secrets,
        })
    }

    /// The service a repository's events belong to: `service_map`, else the
    /// repository's name.
    pub fn service_for<'a>(&'a self, full_name: &'a str) -> &'a str {
        if let Some(service) = self.service_map.get(&full_name.to_ascii_lowercase()) {
            return service;
        }
        full_name.rsplit('/').next().unwrap_or(full_name)
    }
}

fn bad(credential: &v1::Credential, why: impl Into<String>) -> SettingsError {
    SettingsError::BadCredential {
        role: credential.name.clone(),
        kind: credential.kind.clone(),
        why: why.into(),
    }
}

/// Raw kinds arrive as a JSON string.
fn parse_token(credential: &v1::Credential) -> Result<SecretString, SettingsError> {
    if credential.kind != "api-key" {
        return Err(bad(credential, "a token must be an `api-key` credential"));
    }
    match serde_json::from_slice::<serde_json::Value>(&credential.secret) {
        Ok(serde_json::Value::String(token)) if !token.trim().is_empty() => {
            Ok(SecretString::from(token.trim().to_owned()))
        }
        _ => Err(bad(credential, "the secret is not a token string")),
    }
}

pub fn parse_app(credential: &v1::Credential) -> Result<AppCredential, SettingsError> {
    if credential.kind != "github-app" {
        return Err(bad(credential, "an App must be a `github-app` credential"));
    }
    let object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&credential.secret)
            .map_err(|_| bad(credential, "the secret is not a JSON object"))?;
    let id = |key: &str| {
        let value = object.get(key);
        value
            .and_then(serde_json::Value::as_u64)
            .or_else(|| value.and_then(|v| v.as_str()?.trim().parse().ok()))
            .ok_or_else(|| bad(credential, format!("`{key}` is not a number")))
    };
    let text = |key: &str| object.get(key).and_then(serde_json::Value::as_str);
    let private_key = text("private_key")
        .filter(|k| k.contains("PRIVATE KEY"))
        .ok_or_else(|| bad(credential, "`private_key` is not a PEM private key"))?;
    let installation_token = match (text("installation_token"), object.get("expires_at")) {
        (Some(token), Some(expires)) => {
            let expires_ms = expires
                .as_u64()
                .map(|s| s * 1000)
                .or_else(|| plugin_kit::event_time_ms(expires.as_str()?));
            expires_ms.map(|ms| (SecretString::from(token.to_owned()), ms))
        }
        _ => None,
    };
    Ok(AppCredential {
        app_id: id("app_id")?,
        installation_id: id("installation_id")?,
        private_key: SecretString::from(private_key.to_owned()),
        installation_token,
    })
}

fn parse_webhook_secret(credential: &v1::Credential) -> Result<WebhookSecrets, SettingsError> {
    WebhookSecrets::from_credential(credential).map_err(|e| bad(credential, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(
        config: serde_json::Value,
        credentials: &[(&str, &str, &str)],
    ) -> v1::ConfigureRequest {
        plugin_kit::testing::configure_request("acme", "gh", &config, credentials)
    }

    #[test]
    fn reads_keys_and_credentials() {
        let settings = Settings::from_configure(&request(
            serde_json::json!({
                "repositories": ["acme/api", "acme/web-*"],
                "credentials": {"token": "gh-token", "webhook_secret": "hook"},
                "api_url": "https://ghe.example.com/api/v3/",
                "service_map": {"Acme/API": "checkout"},
                "backfill_since": "2026-01-01T00:00:00Z",
                "enabled_event_types": ["push", "deployment"]
            }),
            &[
                ("token", "api-key", r#""ghp_abc""#),
                (
                    "webhook_secret",
                    "webhook-secret",
                    r#"{"current":"new","previous":"old"}"#,
                ),
            ],
        ))
        .expect("valid");
        assert_eq!(settings.api_url, "https://ghe.example.com/api/v3");
        assert_eq!(settings.service_for("acme/api"), "checkout");
        assert_eq!(settings.service_for("acme/web-shop"), "web-shop");
        assert_eq!(settings.backfill_since_ms, Some(1_767_225_600_000));
        assert_eq!(settings.event_types.len(), 2);
        assert!(matches!(settings.api, Some(ApiCredential::Token(_))));
        assert!(settings.webhook_secrets.expect("secret").previous.is_some());
    }

    #[test]
    fn refusals_name_the_problem_and_never_the_secret() {
        let cases = [
            (
                serde_json::json!({"repositories": []}),
                vec![],
                "no repositories",
            ),
            (
                serde_json::json!({"repositories": ["acme"]}),
                vec![],
                "`acme`",
            ),
            (
                serde_json::json!({"repositories": ["a/b"], "colour": 1}),
                vec![],
                "colour",
            ),
            (
                serde_json::json!({"repositories": ["a/b"], "enabled_event_types": ["issues"]}),
                vec![],
                "`issues`",
            ),
            (
                serde_json::json!({"repositories": ["a/b"], "credentials": {"token": "t"}}),
                vec![],
                "role `token`",
            ),
            (
                serde_json::json!({"repositories": ["a/b"], "credentials": {"token": "t"}}),
                vec![("token", "basic", r#"{"username":"u","password":"hunter2"}"#)],
                "`api-key`",
            ),
            (
                serde_json::json!({"repositories": ["a/b"], "credentials": {"app": "t"}}),
                vec![(
                    "app",
                    "github-app",
                    r#"{"app_id":1,"installation_id":2,"private_key":"hunter2"}"#,
                )],
                "PEM",
            ),
            (
                serde_json::json!({"repositories": ["a/b"], "api_url": "ftp://x"}),
                vec![],
                "http(s)",
            ),
        ];
        for (config, credentials, expected) in cases {
            let err = Settings::from_configure(&request(config.clone(), &credentials))
                .expect_err(&config.to_string());
            let text = err.to_string();
            assert!(text.contains(expected), "{config}: {text}");
            assert!(!text.contains("hunter2"), "{text}");
        }
    }
}
