//! `Enrich`: context for an event from the API. Given a commit SHA and its repository:
//! the commit (author, message, link), the pull request that introduced it and the
//! deployments that shipped it. Given a service, an environment and a time: the
//! deployment before that time and the commits between the previous deployment and it
//! (the suspect commits), each with its link. Asked for `suspect_commits` (the
//! supervisor's question when its index lacks them): the commits between a deployment's
//! base and head, one entry each. Repositories outside the integration's scope are
//! refused.

use plugin_kit::{Status, v1};
use serde_json::{Value, json};

use crate::api::{ApiError, GitHubApi};
use crate::settings::Settings;

/// Suspect commits listed at most.
const MAX_SUSPECTS: usize = 50;

fn field<'a>(event: &'a Value, name: &str) -> Option<&'a str> {
    event.pointer("/data")?.get(name)?.as_str()
}

fn enrichment(
    settings: &Settings,
    kind: &str,
    reason: String,
    score: f64,
    links: Vec<Value>,
    data: Value,
) -> String {
    json!({
        "source": {"plugin": "github", "integration": settings.integration, "tenant": settings.tenant},
        "kind": kind,
        "reason": reason,
        "score": score,
        "links": links,
        "data": data,
    })
    .to_string()
}

fn link(rel: &str, url: &str) -> Value {
    json!({"rel": rel, "url": url})
}

fn unavailable(err: ApiError) -> Status {
    err.to_status()
}

pub async fn enrich(
    settings: &Settings,
    api: &GitHubApi,
    request: &v1::EnrichRequest,
) -> Result<v1::EnrichResponse, Status> {
    let event: Value = serde_json::from_str(&request.event_json)
        .map_err(|e| Status::invalid_argument(format!("the event is not JSON: {e}")))?;
    if event.get("tenant").and_then(Value::as_str) != Some(settings.tenant.as_str()) {
        return Err(Status::permission_denied(
            "the event belongs to another tenant",
        ));
    }
    let mut enrichments = Vec::new();
    match field(&event, "enrichment.want") {
        Some("suspect_commits") => {
            suspect_commits(settings, api, &event, &mut enrichments).await?;
            return Ok(v1::EnrichResponse {
                enrichments_json: enrichments,
            });
        }
        // Something this plugin does not know (metric values): nothing to say.
        Some(_) => {
            return Ok(v1::EnrichResponse {
                enrichments_json: enrichments,
            });
        }
        None => {}
    }
    if let (Some(repository), Some(sha)) = (
        field(&event, "vcs.repository.name"),
        field(&event, "vcs.ref.head.revision"),
    ) {
        in_scope(settings, repository)?;
        commit_context(
            settings,
            api,
            repository,
            commit_sha(sha)?,
            &mut enrichments,
        )
        .await?;
    } else if let (Some(service), Some(environment), Some(time)) = (
        field(&event, "service.name"),
        field(&event, "deployment.environment"),
        event.get("time").and_then(Value::as_str),
    ) {
        let at_ms = plugin_kit::event_time_ms(time)
            .ok_or_else(|| Status::invalid_argument("the event's `time` is not RFC 3339"))?;
        for repository in settings.scope.exact() {
            if settings.service_for(&repository) == service {
                deployment_context(
                    settings,
                    api,
                    &repository,
                    environment,
                    at_ms,
                    &mut enrichments,
                )
                .await?;
            }
        }
    } else {
        return Err(Status::invalid_argument(
            "the event names neither `vcs.repository.name` and `vcs.ref.head.revision` nor `service.name`, `deployment.environment` and a time",
        ));
    }
    Ok(v1::EnrichResponse {
        enrichments_json: enrichments,
    })
}

/// A commit SHA (abbreviated or full) before it goes into an API path.
fn commit_sha(sha: &str) -> Result<&str, Status> {
    if (7..=40).contains(&sha.len()) && sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(sha);
    }
    Err(Status::invalid_argument(
        "`vcs.ref.head.revision` is not a commit SHA (7 to 40 hex digits)",
    ))
}

fn in_scope(settings: &Settings, repository: &str) -> Result<(), Status> {
    if settings.scope.covers(repository) {
        return Ok(());
    }
    tracing::warn!(
        repository,
        "enrichment asked for a repository outside this integration's scope; refused"
    );
    Err(Status::permission_denied(format!(
        "repository `{repository}` is not covered by this integration"
    )))
}

async fn commit_context(
    settings: &Settings,
    api: &GitHubApi,
    repository: &str,
    sha: &str,
    out: &mut Vec<String>,
) -> Result<(), Status> {
    let (_, commit) = api
        .get(&format!("/repos/{repository}/commits/{sha}"))
        .await
        .map_err(unavailable)?;
    let url = commit
        .get("html_url")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let (message, author) = message_and_author(&commit);
    out.push(enrichment(
        settings,
        "commit",
        format!(
            "commit {} by {author}: {}",
            short(sha),
            message.lines().next().unwrap_or_default()
        ),
        1.0,
        vec![link("commit", url)],
        json!({"sha": sha, "author": author, "message": message}),
    ));
    let (_, pulls) = api
        .get(&format!("/repos/{repository}/commits/{sha}/pulls"))
        .await
        .map_err(unavailable)?;
    for pull in pulls.as_array().into_iter().flatten().take(5) {
        let number = pull
            .get("number")
            .and_then(Value::as_u64)
            .unwrap_or_default();
        let url = pull
            .get("html_url")
            .and_then(Value::as_str)
            .unwrap_or_default();
        out.push(enrichment(
            settings,
            "pull_request",
            format!(
                "introduced by pull request #{number}: {}",
                pull.get("title")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
            ),
            0.9,
            vec![link("pull_request", url)],
            json!({"number": number}),
        ));
    }
    let (_, deployments) = api
        .get(&format!(
            "/repos/{repository}/deployments?sha={sha}&per_page=10"
        ))
        .await
        .map_err(unavailable)?;
    for deployment in deployments.as_array().into_iter().flatten() {
        let environment = deployment
            .get("environment")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let html = repository_html(&commit, repository);
        out.push(enrichment(
            settings,
            "deployment",
            format!(
                "shipped to {environment} by deployment {}",
                deployment
                    .get("id")
                    .and_then(Value::as_u64)
                    .unwrap_or_default()
            ),
            0.8,
            vec![link("deployments", &format!("{html}/deployments"))],
            json!({"environment": environment, "created_at": deployment.get("created_at")}),
        ));
    }
    Ok(())
}

/// `https://github.com/owner/repo` from a commit's `html_url`.
fn repository_html(commit: &Value, repository: &str) -> String {
    commit
        .get("html_url")
        .and_then(Value::as_str)
        .and_then(|u| u.split_once("/commit/").map(|(base, _)| base.to_owned()))
        .unwrap_or_else(|| format!("https://github.com/{repository}"))
}

fn short(sha: &str) -> &str {
    sha.get(..7).unwrap_or(sha)
}

async fn deployment_context(
    settings: &Settings,
    api: &GitHubApi,
    repository: &str,
    environment: &str,
    at_ms: u64,
    out: &mut Vec<String>,
) -> Result<(), Status> {
    let encoded: String = form_urlencoded::byte_serialize(environment.as_bytes()).collect();
    let path = format!("/repos/{repository}/deployments?environment={encoded}&per_page=100");
    let page = api.page(&path, None).await.map_err(unavailable)?;
    let created = |d: &Value| {
        d.get("created_at")
            .and_then(Value::as_str)
            .and_then(plugin_kit::event_time_ms)
    };
    let mut before = page
        .items
        .iter()
        .filter(|d| created(d).is_some_and(|t| t <= at_ms));
    let Some(deployment) = before.next() else {
        return Ok(());
    };
    let previous = before.next();
    let sha = deployment
        .get("sha")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let minutes = at_ms.saturating_sub(created(deployment).unwrap_or(at_ms)) / 60_000;
    let html = format!(
        "{}/{repository}",
        web_base(deployment).unwrap_or_else(|| "https://github.com".to_owned())
    );
    out.push(enrichment(
        settings,
        "deployment",
        format!("deployed {minutes} min before, same service and environment ({environment})"),
        1.0 / (1.0 + minutes as f64 / 60.0),
        vec![
            link("deployments", &format!("{html}/deployments")),
            link("commit", &format!("{html}/commit/{sha}")),
        ],
        json!({"id": deployment.get("id"), "sha": sha, "environment": environment, "minutes_before": minutes}),
    ));
    // Both SHAs come from an API response: checked before they go into a path.
    let previous = previous
        .and_then(|p| p.get("sha"))
        .and_then(Value::as_str)
        .and_then(|p| commit_sha(p).ok());
    let (Some(previous), Ok(sha)) = (previous, commit_sha(sha)) else {
        return Ok(());
    };
    let commits = compared(api, repository, previous, sha).await?;
    let mut links = Vec::new();
    let mut listed = Vec::new();
    for commit in commits.iter().rev().take(MAX_SUSPECTS) {
        let Some(sha) = commit.get("sha").and_then(Value::as_str) else {
            continue;
        };
        let url = commit
            .get("html_url")
            .and_then(Value::as_str)
            .map_or_else(|| format!("{html}/commit/{sha}"), str::to_owned);
        links.push(link("commit", &url));
        listed.push(json!({"sha": sha, "message": commit.pointer("/commit/message").and_then(Value::as_str).unwrap_or_default().lines().next()}));
    }
    out.push(enrichment(
        settings,
        "suspect_commits",
        format!(
            "{} commit(s) shipped by this deployment since the previous one",
            commits.len()
        ),
        0.7,
        links,
        json!({"previous_sha": previous, "sha": sha, "commits": listed}),
    ));
    Ok(())
}

/// The commits after `base` up to `head` (both checked SHAs), oldest first.
async fn compared(
    api: &GitHubApi,
    repository: &str,
    base: &str,
    head: &str,
) -> Result<Vec<Value>, Status> {
    let compare = api
        .get(&format!("/repos/{repository}/compare/{base}...{head}"))
        .await
        .map_err(unavailable)?
        .1;
    Ok(compare
        .get("commits")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default())
}

/// A REST commit's message and author name (empty when missing).
fn message_and_author(commit: &Value) -> (&str, &str) {
    let text = |pointer: &str| {
        commit
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or_default()
    };
    (text("/commit/message"), text("/commit/author/name"))
}

/// `https://github.com` (or the Enterprise host) from a deployment's API `url`.
fn web_base(deployment: &Value) -> Option<String> {
    let url = deployment.get("url")?.as_str()?;
    let host_end = url.find("://")? + 3;
    let host = &url[host_end
        ..url[host_end..]
            .find('/')
            .map_or(url.len(), |i| host_end + i)];
    let web = host.strip_prefix("api.").unwrap_or(host);
    Some(format!("{}{web}", &url[..host_end]))
}

/// The pull request a commit message names: `Merge pull request #12 …` or a squash
/// merge's `… (#12)`.
fn pull_number(message: &str) -> Option<u64> {
    let first = message.lines().next()?;
    let digits = |text: &str| -> Option<u64> {
        let end = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        text[..end].parse().ok()
    };
    if let Some(rest) = first.strip_prefix("Merge pull request #") {
        return digits(rest);
    }
    let start = first.trim_end().strip_suffix(')')?.rfind("(#")?;
    digits(&first[start + 2..])
}

/// The base of `head`'s deployment to `environment`: the SHA of the newest deployment
/// before it with another SHA.
async fn deployed_base(
    api: &GitHubApi,
    repository: &str,
    environment: &str,
    head: &str,
) -> Result<Option<String>, Status> {
    let encoded: String = form_urlencoded::byte_serialize(environment.as_bytes()).collect();
    let path = format!("/repos/{repository}/deployments?environment={encoded}&per_page=100");
    let page = api.page(&path, None).await.map_err(unavailable)?;
    let sha = |d: &Value| d.get("sha").and_then(Value::as_str).map(str::to_owned);
    let mut newest_first = page
        .items
        .iter()
        .skip_while(|d| sha(d).as_deref() != Some(head));
    Ok(newest_first
        .find_map(|d| sha(d).filter(|s| s != head))
        .filter(|s| commit_sha(s).is_ok()))
}

/// The commits a deployment shipped: `vcs.ref.base.revision..vcs.ref.head.revision`
/// (the base found from the deployments when not given), newest first; the head alone
/// when there is no base.
async fn suspect_commits(
    settings: &Settings,
    api: &GitHubApi,
    event: &Value,
    out: &mut Vec<String>,
) -> Result<(), Status> {
    let (Some(repository), Some(head)) = (
        field(event, "vcs.repository.name"),
        field(event, "vcs.ref.head.revision"),
    ) else {
        return Err(Status::invalid_argument(
            "`suspect_commits` needs `vcs.repository.name` and `vcs.ref.head.revision`",
        ));
    };
    in_scope(settings, repository)?;
    let head = commit_sha(head)?;
    let base = match field(event, "vcs.ref.base.revision") {
        Some(base) => Some(commit_sha(base)?.to_owned()),
        None => match field(event, "deployment.environment") {
            Some(environment) => deployed_base(api, repository, environment, head).await?,
            None => None,
        },
    };
    let (commits, range) = match &base {
        Some(base) => (
            compared(api, repository, base, head).await?,
            format!("since {}", short(base)),
        ),
        None => {
            let commit = api
                .get(&format!("/repos/{repository}/commits/{head}"))
                .await
                .map_err(unavailable)?
                .1;
            (
                vec![commit],
                "its head (no earlier deployment known)".to_owned(),
            )
        }
    };
    for commit in commits.iter().rev().take(MAX_SUSPECTS) {
        let Some(sha) = commit.get("sha").and_then(Value::as_str) else {
            continue;
        };
        let (message, author) = message_and_author(commit);
        let html = repository_html(commit, repository);
        let mut links = vec![link("commit", &format!("{html}/commit/{sha}"))];
        let pull = pull_number(message);
        if let Some(number) = pull {
            links.push(link("pull_request", &format!("{html}/pull/{number}")));
        }
        out.push(enrichment(
            settings,
            "suspect_commit",
            format!(
                "commit {} was shipped by the deployment of {}, {range}",
                short(sha),
                short(head)
            ),
            if pull.is_some() { 0.6 } else { 0.5 },
            links,
            json!({"sha": sha, "message": message, "author": author, "pull_request": pull}),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::pull_number;

    #[test]
    fn pull_requests_are_read_from_merge_and_squash_messages() {
        assert_eq!(
            pull_number("Merge pull request #42 from octo/fix\n\nFix it"),
            Some(42)
        );
        assert_eq!(pull_number("Fix the checkout (#7)"), Some(7));
        assert_eq!(pull_number("Fix the checkout (#7) "), Some(7));
        assert_eq!(pull_number("Fix #7 in checkout"), None);
        assert_eq!(pull_number("Fix (#) it"), None);
        assert_eq!(pull_number("(#99999999999999999999999)"), None);
        assert_eq!(pull_number(""), None);
    }
}
