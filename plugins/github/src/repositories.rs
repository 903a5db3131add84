//! The repositories an integration reads from the API: the exact names it lists, and
//! for each glob owner the repositories the credential can see there, kept only when
//! the scope covers them.

use serde_json::Value;

use crate::api::{ApiError, GitHubApi, PER_PAGE, auth::TokenSource};
use crate::settings::Settings;

/// What the API says about one repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepositoryInfo {
    pub full_name: String,
    pub html_url: String,
    pub default_branch: String,
}

impl RepositoryInfo {
    pub fn from_api(value: &Value) -> Option<Self> {
        Some(Self {
            full_name: value.get("full_name")?.as_str()?.to_owned(),
            html_url: value.get("html_url")?.as_str()?.to_owned(),
            default_branch: value
                .get("default_branch")
                .and_then(Value::as_str)
                .unwrap_or("main")
                .to_owned(),
        })
    }

    pub fn as_repository<'a>(&'a self, settings: &'a Settings) -> crate::events::Repository<'a> {
        crate::events::Repository {
            full_name: &self.full_name,
            html_url: &self.html_url,
            default_branch: Some(&self.default_branch),
            service: settings.service_for(&self.full_name),
        }
    }
}

/// `GET /repos/{owner}/{repo}`.
pub async fn get(api: &GitHubApi, full_name: &str) -> Result<RepositoryInfo, ApiError> {
    let path = format!("/repos/{full_name}");
    let (_, value) = api.get(&path).await?;
    RepositoryInfo::from_api(&value).ok_or(ApiError::Response {
        path,
        why: "the repository has no `full_name` or `html_url`".to_owned(),
    })
}

/// Every repository in scope, each with the result of reading it.
pub async fn resolve(
    api: &GitHubApi,
    settings: &Settings,
) -> Vec<(String, Result<RepositoryInfo, ApiError>)> {
    let mut resolved = Vec::new();
    for full_name in settings.scope.exact() {
        let result = get(api, &full_name).await;
        resolved.push((full_name, result));
    }
    for owner in settings.scope.glob_owners() {
        match list_owner(api, owner).await {
            Ok(list) => {
                for info in list {
                    let seen = resolved
                        .iter()
                        .any(|(name, _)| name.eq_ignore_ascii_case(&info.full_name));
                    if settings.scope.covers(&info.full_name) && !seen {
                        resolved.push((info.full_name.clone(), Ok(info)));
                    }
                }
            }
            Err(err) => resolved.push((format!("{owner}/*"), Err(err))),
        }
    }
    resolved
}

/// The repositories of `owner` the credential sees: an App's installation lists its
/// own; a token lists the organization's (or the user's).
async fn list_owner(api: &GitHubApi, owner: &str) -> Result<Vec<RepositoryInfo>, ApiError> {
    let (first, key) = match api.tokens() {
        TokenSource::App { .. } => (
            format!("/installation/repositories?per_page={PER_PAGE}"),
            Some("repositories"),
        ),
        TokenSource::Token(_) => (format!("/orgs/{owner}/repos?per_page={PER_PAGE}"), None),
    };
    let mut pages = match api.page(&first, key).await {
        Err(ApiError::NotFound { .. }) if key.is_none() => {
            api.page(&format!("/users/{owner}/repos?per_page={PER_PAGE}"), None)
                .await?
        }
        other => other?,
    };
    let mut list = Vec::new();
    loop {
        list.extend(
            pages
                .items
                .iter()
                .filter_map(RepositoryInfo::from_api)
                .filter(|info| {
                    info.full_name
                        .split('/')
                        .next()
                        .is_some_and(|o| o.eq_ignore_ascii_case(owner))
                }),
        );
        let Some(next) = pages.next.take() else {
            return Ok(list);
        };
        pages = api.page(&next, key).await?;
    }
}
