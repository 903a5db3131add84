//! `Check`: can this integration do its job? For each repository in scope the
//! credential reads it, its commits, pull requests and deployments; an App's
//! installation holds the permissions the plugin needs; the webhook secret is set.
//! Each failure names the repository and the missing permission.

use plugin_kit::{ErrorClass, v1};
use serde_json::Value;

use crate::api::{ApiError, GitHubApi};
use crate::repositories;
use crate::settings::Settings;

/// What the plugin reads, as GitHub App permission names.
pub const NEEDED_PERMISSIONS: [&str; 4] = ["metadata", "contents", "pull_requests", "deployments"];

/// A failed check: its class and what to tell the person who must act.
type Failure = (ErrorClass, String);

fn result(resource: &str, permission: &str, outcome: Result<(), Failure>) -> v1::CheckResult {
    let (error_class, message) = match outcome {
        Ok(()) => (String::new(), "ok".to_owned()),
        Err((class, message)) => (class.as_str().to_owned(), message),
    };
    v1::CheckResult {
        resource: resource.to_owned(),
        permission: permission.to_owned(),
        ok: error_class.is_empty(),
        message,
        error_class,
    }
}

fn explain(err: &ApiError, permission: &str) -> Failure {
    let message = match err {
        ApiError::NotFound { .. } => format!(
            "not found or not readable: the credential lacks `{permission}: read` on it, or it does not exist"
        ),
        other => other.to_string(),
    };
    (err.class(), message)
}

pub async fn check(settings: &Settings, api: Option<&GitHubApi>) -> v1::CheckResponse {
    let mut results = vec![result(
        "webhook",
        "webhook_secret",
        match settings.webhook_secrets {
            Some(_) => Ok(()),
            None => Err((
                ErrorClass::Config,
                "no webhook secret (credentials.webhook_secret): deliveries would be refused"
                    .to_owned(),
            )),
        },
    )];
    let Some(api) = api else {
        // Webhook-only integrations are allowed; say what they do without.
        results.push(v1::CheckResult {
            resource: "api".to_owned(),
            permission: "credential".to_owned(),
            ok: true,
            error_class: String::new(),
            message: "no API credential (credentials.token or credentials.app): webhooks only; collection and enrichment are off".to_owned(),
        });
        return finish(results);
    };
    match api.tokens().app_permissions(api).await {
        Ok(None) => {}
        Ok(Some(granted)) => {
            for permission in NEEDED_PERMISSIONS {
                let level = granted.get(permission).and_then(Value::as_str);
                let outcome = match level {
                    Some("read" | "write" | "admin") => Ok(()),
                    Some(other) => Err((
                        ErrorClass::Permission,
                        format!("the installation has `{permission}: {other}`; `read` is needed"),
                    )),
                    None => Err((
                        ErrorClass::Permission,
                        format!("the installation lacks `{permission}: read`"),
                    )),
                };
                results.push(result("app installation", permission, outcome));
            }
        }
        Err(err) => {
            results.push(result(
                "app installation",
                "installation token",
                Err((err.class(), err.to_string())),
            ));
            return finish(results);
        }
    }
    for (name, resolved) in repositories::resolve(api, settings).await {
        let info = match resolved {
            Ok(info) => info,
            Err(err) => {
                results.push(result(&name, "metadata", Err(explain(&err, "metadata"))));
                continue;
            }
        };
        results.push(result(&info.full_name, "metadata", Ok(())));
        for (permission, path) in [
            (
                "contents",
                format!("/repos/{}/commits?per_page=1", info.full_name),
            ),
            (
                "pull_requests",
                format!("/repos/{}/pulls?per_page=1", info.full_name),
            ),
            (
                "deployments",
                format!("/repos/{}/deployments?per_page=1", info.full_name),
            ),
        ] {
            let outcome = api
                .get(&path)
                .await
                .map(|_| ())
                .map_err(|e| explain(&e, permission));
            results.push(result(&info.full_name, permission, outcome));
        }
    }
    finish(results)
}

fn finish(results: Vec<v1::CheckResult>) -> v1::CheckResponse {
    v1::CheckResponse {
        ok: results.iter().all(|r| r.ok),
        results,
    }
}
