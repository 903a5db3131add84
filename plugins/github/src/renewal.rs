//! `RenewCredential` for `github-app` credentials: a new installation token, stored by
//! the credential manager in the credential itself (`installation_token`, `expires_at`
//! in Unix seconds) and renewed by its schedule well before GitHub's one-hour expiry.
//! The plugin also renews a token it holds in memory on its own schedule
//! (`api::auth`), so a late renewal never leaves calls without a valid token.

use plugin_kit::{Status, v1};
use serde_json::Value;

use crate::api::{GitHubApi, auth};
use crate::settings::{self, DEFAULT_API_URL};

pub async fn renew(
    request: &v1::RenewCredentialRequest,
) -> Result<v1::RenewCredentialResponse, Status> {
    let credential = request
        .credential
        .as_ref()
        .ok_or_else(|| Status::invalid_argument("no credential to renew"))?;
    if credential.kind != "github-app" {
        return Err(Status::unimplemented(format!(
            "a `{}` credential cannot be renewed by this plugin (only `github-app`)",
            credential.kind
        )));
    }
    let config: Value = serde_json::from_str(&request.config_json)
        .map_err(|e| Status::invalid_argument(format!("the configuration is not JSON: {e}")))?;
    let api_url = config
        .get("api_url")
        .and_then(Value::as_str)
        .unwrap_or(DEFAULT_API_URL)
        .trim_end_matches('/');
    let app =
        settings::parse_app(credential).map_err(|e| Status::invalid_argument(e.to_string()))?;
    let api = GitHubApi::new(
        api_url,
        auth::TokenSource::Token(secrecy::SecretString::from(String::new())),
    )
    .map_err(|e| Status::internal(e.to_string()))?;
    let token = auth::mint(&api, &app)
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let mut secret: serde_json::Map<String, Value> = serde_json::from_slice(&credential.secret)
        .map_err(|_| Status::invalid_argument("the credential is not a JSON object"))?;
    secret.insert(
        "installation_token".to_owned(),
        Value::String(secrecy::ExposeSecret::expose_secret(&token.token).to_owned()),
    );
    secret.insert(
        "expires_at".to_owned(),
        Value::from(token.expires_ms / 1000),
    );
    let bytes = serde_json::to_vec(&secret).map_err(|e| Status::internal(e.to_string()))?;
    Ok(v1::RenewCredentialResponse {
        secret: bytes,
        expires_unix_ms: token.expires_ms,
    })
}
