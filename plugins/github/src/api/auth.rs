//! API credentials: a personal access token as it is, or a GitHub App installation
//! token, minted from a JWT signed with the App's key and renewed ahead of expiry (at
//! two thirds of its lifetime), so calls never carry
//! an expired token. A renewal happens under a lock: concurrent callers wait for the one
//! new token instead of each minting their own.

use octocrab::auth::create_jwt;
use octocrab::models::AppId;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::{ApiError, GitHubApi};
use crate::settings::{ApiCredential, AppCredential};

pub use plugin_kit::clock::now_ms;

/// When a token issued at `issued_ms` and expiring at `expires_ms` is due: at two
/// thirds of its lifetime (40 minutes into GitHub's hour, so 20 minutes to spare).
pub fn renew_at(issued_ms: u64, expires_ms: u64) -> u64 {
    issued_ms + expires_ms.saturating_sub(issued_ms) / 3 * 2
}

/// An installation token and when it was issued and expires (Unix ms).
#[derive(Debug)]
pub struct InstallationToken {
    pub token: SecretString,
    pub issued_ms: u64,
    pub expires_ms: u64,
    /// The installation's permissions (`contents: read`, ...), for `Check`.
    pub permissions: serde_json::Map<String, serde_json::Value>,
}

/// Where bearer tokens come from.
#[derive(Debug)]
pub enum TokenSource {
    Token(SecretString),
    App {
        app: AppCredential,
        current: tokio::sync::Mutex<Option<InstallationToken>>,
    },
}

impl TokenSource {
    pub fn new(credential: ApiCredential) -> Self {
        match credential {
            ApiCredential::Token(token) => Self::Token(token),
            ApiCredential::App(mut app) => {
                let current = app.installation_token.take().map(|(token, expires_ms)| {
                    InstallationToken {
                        token,
                        // Unknown: taken as issued an hour before expiry (GitHub's lifetime).
                        issued_ms: expires_ms.saturating_sub(60 * 60 * 1000),
                        expires_ms,
                        permissions: serde_json::Map::new(),
                    }
                });
                Self::App {
                    app,
                    current: tokio::sync::Mutex::new(current),
                }
            }
        }
    }

    /// The `Authorization` header value for the next call.
    pub async fn authorization(&self, api: &GitHubApi) -> Result<SecretString, ApiError> {
        match self {
            Self::Token(token) => Ok(SecretString::from(format!(
                "token {}",
                token.expose_secret()
            ))),
            Self::App { app, current } => {
                let mut current = current.lock().await;
                let now = now_ms();
                let fresh = current
                    .as_ref()
                    .is_some_and(|t| now < renew_at(t.issued_ms, t.expires_ms));
                if !fresh {
                    *current = Some(mint(api, app).await?);
                }
                let token = current
                    .as_ref()
                    .expect("a token is held: it was fresh or was just minted");
                Ok(SecretString::from(format!(
                    "token {}",
                    token.token.expose_secret()
                )))
            }
        }
    }

    /// The installation's permissions (minting a token if none is held yet); `None`
    /// for a personal token.
    pub async fn app_permissions(
        &self,
        api: &GitHubApi,
    ) -> Result<Option<serde_json::Map<String, serde_json::Value>>, ApiError> {
        let Self::App { app, current } = self else {
            return Ok(None);
        };
        let mut current = current.lock().await;
        if current.as_ref().is_none_or(|t| t.permissions.is_empty()) {
            *current = Some(mint(api, app).await?);
        }
        Ok(current.as_ref().map(|t| t.permissions.clone()))
    }
}

#[derive(Deserialize)]
struct AccessTokenResponse {
    token: String,
    expires_at: String,
    #[serde(default)]
    permissions: serde_json::Map<String, serde_json::Value>,
}

/// The JWT that authenticates as the App itself (ten minutes at most, by GitHub's rule).
pub fn app_jwt(app: &AppCredential) -> Result<SecretString, ApiError> {
    let key = octocrab::EncodingKey::from_rsa_pem(app.private_key.expose_secret().as_bytes())
        .map_err(|_| {
            ApiError::Credential("the App's `private_key` is not an RSA PEM key".to_owned())
        })?;
    create_jwt(AppId(app.app_id), &key)
        .map(SecretString::from)
        .map_err(|e| ApiError::Credential(format!("cannot sign the App JWT: {e}")))
}

/// `POST /app/installations/{id}/access_tokens` with the App's JWT.
pub async fn mint(api: &GitHubApi, app: &AppCredential) -> Result<InstallationToken, ApiError> {
    let jwt = app_jwt(app)?;
    let path = format!("/app/installations/{}/access_tokens", app.installation_id);
    let issued_ms = now_ms();
    let body: AccessTokenResponse = api
        .request_json(
            reqwest::Method::POST,
            &path,
            &SecretString::from(format!("Bearer {}", jwt.expose_secret())),
        )
        .await?;
    let expires_ms =
        plugin_kit::event_time_ms(&body.expires_at).ok_or_else(|| ApiError::Response {
            path: path.clone(),
            why: "`expires_at` is not a time".to_owned(),
        })?;
    tracing::info!(
        installation = app.installation_id,
        expires_in_s = expires_ms.saturating_sub(issued_ms) / 1000,
        "GitHub App installation token minted"
    );
    Ok(InstallationToken {
        token: SecretString::from(body.token),
        issued_ms,
        expires_ms,
        permissions: body.permissions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: u64 = 60_000;

    #[test]
    fn renewal_is_due_well_before_expiry() {
        assert_eq!(
            renew_at(0, 60 * MINUTE),
            40 * MINUTE,
            "an hour's token at 40 min"
        );
        assert_eq!(
            renew_at(1_000, 7_000),
            5_000,
            "a short test token at 4 s of 6"
        );
        assert_eq!(renew_at(5_000, 4_000), 5_000, "already expired: at once");
    }
}
