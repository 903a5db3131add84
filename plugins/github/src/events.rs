//! GitHub objects → canonical events. One function per kind of fact; the webhook and
//! the API paths both come here, so a deployment read from the API and the same one
//! delivered by a webhook get the same event id (ids come from GitHub's own ids and
//! SHAs, never from the delivery) and the pipeline keeps one.
//!
//! Functions take the parsed objects by value: each event's `original` is moved out of
//! the payload, never cloned (a push's commits become their own events' originals and
//! the push keeps the rest of its payload).

use plugin_kit::{Category, EventBuilder, MapContext, MapError, Severity};
use serde_json::Value;

/// The canonical type prefix of everything this plugin emits.
const DELIVERY: &str = "com.betalogs.delivery";

/// What every event of one repository carries.
#[derive(Debug, Clone)]
pub struct Repository<'a> {
    pub full_name: &'a str,
    pub html_url: &'a str,
    pub default_branch: Option<&'a str>,
    pub service: &'a str,
}

impl Repository<'_> {
    fn builder(&self, kind: &str, source_id: String, time: String) -> EventBuilder {
        EventBuilder::new(
            format!("{DELIVERY}.{kind}"),
            Category::Delivery,
            self.html_url.to_owned(),
            source_id,
            time,
        )
        .field("service.name", self.service)
        .field("vcs.repository.name", self.full_name)
        .field("vcs.repository.url", self.html_url)
        .link("repository", self.html_url)
    }
}

/// Reads a string at a JSON Pointer, or says which field is missing.
pub fn text<'v>(value: &'v Value, pointer: &str, what: &str) -> Result<&'v str, MapError> {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .ok_or_else(|| MapError {
            what: what.to_owned(),
            why: format!("`{pointer}` is missing or not a string"),
        })
}

fn optional<'v>(value: &'v Value, pointer: &str) -> Option<&'v str> {
    value.pointer(pointer).and_then(Value::as_str)
}

fn number(value: &Value, pointer: &str, what: &str) -> Result<u64, MapError> {
    value
        .pointer(pointer)
        .and_then(Value::as_u64)
        .ok_or_else(|| MapError {
            what: what.to_owned(),
            why: format!("`{pointer}` is missing or not a number"),
        })
}

/// An http(s) URL fit for an evidence link.
fn web_link(url: Option<&str>) -> Option<&str> {
    url.filter(|u| (u.starts_with("https://") || u.starts_with("http://")) && u.len() <= 2048)
}

/// RFC 3339 from GitHub's times: a string as it is, a number as Unix seconds (push
/// payloads give `pushed_at` so).
fn time_of(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(text) if plugin_kit::event_time_ms(text).is_some() => Some(text.clone()),
        Value::Number(seconds) => {
            let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds.as_u64()?);
            Some(humantime::format_rfc3339_seconds(at).to_string())
        }
        _ => None,
    }
}

fn first_time(value: &Value, pointers: &[&str], what: &str) -> Result<String, MapError> {
    pointers
        .iter()
        .find_map(|p| time_of(value.pointer(p)))
        .ok_or_else(|| MapError {
            what: what.to_owned(),
            why: format!("none of {} is a time", pointers.join(", ")),
        })
}

fn serialize(
    builder: EventBuilder,
    context: &MapContext,
    out: &mut Vec<String>,
) -> Result<(), MapError> {
    let event = builder.build(context);
    let json = serde_json::to_string(&event).map_err(|e| MapError {
        what: event.event_type.clone(),
        why: e.to_string(),
    })?;
    out.push(json);
    Ok(())
}

fn first_line(message: &str) -> &str {
    message.lines().next().unwrap_or_default()
}

/// A `push`: one event for the push, one per commit on it.
pub fn push(
    repo: &Repository<'_>,
    mut payload: Value,
    context: &MapContext,
    out: &mut Vec<String>,
) -> Result<(), MapError> {
    let git_ref = text(&payload, "/ref", "push")?.to_owned();
    let after = text(&payload, "/after", "push")?.to_owned();
    let before = optional(&payload, "/before").unwrap_or_default().to_owned();
    let branch = git_ref.strip_prefix("refs/heads/").map(str::to_owned);
    let default = branch
        .as_deref()
        .is_some_and(|b| Some(b) == repo.default_branch);
    let commits = match payload.as_object_mut().and_then(|o| o.remove("commits")) {
        Some(Value::Array(commits)) => commits,
        _ => Vec::new(),
    };
    let time = first_time(
        &payload,
        &["/head_commit/timestamp", "/repository/pushed_at"],
        "push",
    )?;
    let mut builder = repo
        .builder(
            "push",
            format!("{}:{git_ref}:{before}..{after}", repo.full_name),
            time,
        )
        .subject(git_ref.clone())
        .field("vcs.ref.head.name", branch.as_deref().unwrap_or(&git_ref))
        .field("vcs.ref.head.revision", after.as_str())
        .field("vcs.ref.base.revision", before.as_str())
        .field("vcs.ref.default", default)
        .field("vcs.change.commits", commits.len())
        .field(
            "vcs.ref.deleted",
            payload
                .get("deleted")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        );
    if let Some(url) = web_link(optional(&payload, "/compare")) {
        builder = builder.link("compare", url);
    }
    if let Some(user) = optional(&payload, "/pusher/name") {
        builder = builder.field("vcs.actor", user);
    }
    serialize(
        builder.correlation(after.clone()).original(payload),
        context,
        out,
    )?;
    for commit in commits {
        let facts = CommitFacts::from_push(&commit)?;
        let builder = commit_event(repo, &facts, branch.as_deref(), default);
        serialize(builder.original(commit), context, out)?;
    }
    Ok(())
}

/// A commit read from the commits API (`GET /repos/{r}/commits`), on `branch`.
pub fn api_commit(
    repo: &Repository<'_>,
    commit: Value,
    branch: &str,
    context: &MapContext,
    out: &mut Vec<String>,
) -> Result<(), MapError> {
    let builder = {
        let facts = CommitFacts::from_api(&commit)?;
        commit_event(
            repo,
            &facts,
            Some(branch),
            repo.default_branch == Some(branch),
        )
    };
    serialize(builder.original(commit), context, out)
}

/// The facts of a commit, from a push payload's commit or the commits API.
#[derive(Debug)]
pub struct CommitFacts<'a> {
    pub sha: &'a str,
    pub message: &'a str,
    pub author: Option<&'a str>,
    pub login: Option<&'a str>,
    pub time: String,
    pub url: Option<&'a str>,
}

impl<'a> CommitFacts<'a> {
    /// `{id, message, timestamp, url, author: {name, username}}`.
    pub fn from_push(commit: &'a Value) -> Result<Self, MapError> {
        Ok(Self {
            sha: text(commit, "/id", "push commit")?,
            message: optional(commit, "/message").unwrap_or_default(),
            author: optional(commit, "/author/name"),
            login: optional(commit, "/author/username"),
            time: first_time(commit, &["/timestamp"], "push commit")?,
            url: optional(commit, "/url"),
        })
    }

    /// `{sha, html_url, commit: {message, author: {name, date}}, author: {login}}`.
    pub fn from_api(commit: &'a Value) -> Result<Self, MapError> {
        Ok(Self {
            sha: text(commit, "/sha", "commit")?,
            message: optional(commit, "/commit/message").unwrap_or_default(),
            author: optional(commit, "/commit/author/name"),
            login: optional(commit, "/author/login"),
            time: first_time(
                commit,
                &["/commit/committer/date", "/commit/author/date"],
                "commit",
            )?,
            url: optional(commit, "/html_url"),
        })
    }
}

/// The event of one commit (the caller adds its original).
pub fn commit_event(
    repo: &Repository<'_>,
    facts: &CommitFacts<'_>,
    branch: Option<&str>,
    default: bool,
) -> EventBuilder {
    let url = web_link(facts.url)
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{}/commit/{}", repo.html_url, facts.sha));
    let mut builder = repo
        .builder(
            "commit",
            format!("{}:{}", repo.full_name, facts.sha),
            facts.time.clone(),
        )
        .subject(facts.sha)
        .correlation(facts.sha)
        .field("vcs.ref.head.revision", facts.sha)
        .field("vcs.commit.message", first_line(facts.message))
        .field("vcs.ref.default", default)
        .link("commit", url);
    if let Some(branch) = branch {
        builder = builder.field("vcs.ref.head.name", branch);
    }
    if let Some(author) = facts.author {
        builder = builder.field("vcs.commit.author", author);
    }
    if let Some(login) = facts.login {
        builder = builder.field("vcs.actor", login);
    }
    builder
}

/// Pull request actions that become events; the rest are ignored.
pub fn pull_request_action(action: &str, merged: bool) -> Option<&'static str> {
    match (action, merged) {
        ("closed", true) => Some("merged"),
        ("closed", false) => Some("closed"),
        ("opened", _) => Some("opened"),
        ("reopened", _) => Some("reopened"),
        ("synchronize", _) => Some("synchronize"),
        _ => None,
    }
}

/// A pull request event: `action` from [`pull_request_action`].
pub fn pull_request(
    repo: &Repository<'_>,
    action: &str,
    pull: Value,
    context: &MapContext,
    out: &mut Vec<String>,
) -> Result<(), MapError> {
    let what = "pull_request";
    let number = number(&pull, "/number", what)?;
    let head = text(&pull, "/head/sha", what)?;
    let base = text(&pull, "/base/sha", what)?;
    // One event per fact: a merge happens once; a synchronize per new head; the others
    // at their own time (a pull request can be closed and reopened more than once).
    let time = first_time(
        &pull,
        match action {
            "merged" => &["/merged_at", "/closed_at", "/updated_at"],
            "closed" => &["/closed_at", "/updated_at"],
            "opened" => &["/created_at"],
            _ => &["/updated_at", "/created_at"],
        },
        what,
    )?;
    let source_id = match action {
        "merged" => format!("{}#{number}:merged", repo.full_name),
        "synchronize" => format!("{}#{number}:synchronize:{head}", repo.full_name),
        _ => format!("{}#{number}:{action}:{time}", repo.full_name),
    };
    let url = web_link(optional(&pull, "/html_url"))
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{}/pull/{number}", repo.html_url));
    let mut builder = repo
        .builder(&format!("pull_request.{action}"), source_id, time)
        .subject(format!("#{number}"))
        .correlation(head)
        .field("vcs.change.id", number)
        .field("vcs.change.state", action)
        .field(
            "vcs.change.title",
            optional(&pull, "/title").unwrap_or_default(),
        )
        .field("vcs.ref.head.revision", head)
        .field("vcs.ref.base.revision", base)
        .field(
            "vcs.ref.head.name",
            optional(&pull, "/head/ref").unwrap_or_default(),
        )
        .field(
            "vcs.ref.base.name",
            optional(&pull, "/base/ref").unwrap_or_default(),
        )
        .link("pull_request", url);
    if let Some(merge) = optional(&pull, "/merge_commit_sha").filter(|_| action == "merged") {
        builder = builder
            .field("vcs.change.merge_commit", merge)
            .link("commit", format!("{}/commit/{merge}", repo.html_url));
    }
    if let Some(login) = optional(&pull, "/user/login") {
        builder = builder.field("vcs.actor", login);
    }
    serialize(builder.original(pull), context, out)
}

/// A deployment was created.
pub fn deployment(
    repo: &Repository<'_>,
    deployment: Value,
    context: &MapContext,
    out: &mut Vec<String>,
) -> Result<(), MapError> {
    let builder = deployment_builder(repo, &deployment, "deployment", None)?;
    serialize(builder.original(deployment), context, out)
}

fn deployment_builder(
    repo: &Repository<'_>,
    deployment: &Value,
    kind: &str,
    status: Option<(&Value, &str)>,
) -> Result<EventBuilder, MapError> {
    let what = kind;
    let id = number(deployment, "/id", what)?;
    let sha = text(deployment, "/sha", what)?;
    let environment = text(deployment, "/environment", what)?;
    let (source_id, time) = match status {
        Some((status, _)) => (
            format!(
                "{}:deployment:{id}:status:{}",
                repo.full_name,
                number(status, "/id", what)?
            ),
            first_time(status, &["/created_at", "/updated_at"], what)?,
        ),
        None => (
            format!("{}:deployment:{id}", repo.full_name),
            first_time(deployment, &["/created_at", "/updated_at"], what)?,
        ),
    };
    let mut builder = repo
        .builder(kind, source_id, time)
        .subject(format!("deployment {id} to {environment}"))
        .correlation(sha)
        .field("deployment.id", id)
        .field("deployment.environment", environment)
        .field("vcs.ref.head.revision", sha)
        .link("commit", format!("{}/commit/{sha}", repo.html_url))
        .link("deployments", format!("{}/deployments", repo.html_url));
    if let Some(git_ref) = optional(deployment, "/ref") {
        builder = builder.field("vcs.ref.head.name", git_ref);
    }
    if let Some(task) = optional(deployment, "/task") {
        builder = builder.field("deployment.task", task);
    }
    if let Some(login) = optional(deployment, "/creator/login") {
        builder = builder.field("vcs.actor", login);
    }
    if let Some((status, state)) = status {
        builder = builder.field("deployment.status", state);
        for (rel, pointer) in [
            ("deployment_log", "/log_url"),
            ("deployment_target", "/target_url"),
            ("environment", "/environment_url"),
        ] {
            if let Some(url) = web_link(optional(status, pointer)).filter(|u| !u.is_empty()) {
                builder = builder.link(rel, url);
            }
        }
    }
    Ok(builder)
}

/// A deployment's status changed. `failure` and `error` are failure events.
pub fn deployment_status(
    repo: &Repository<'_>,
    deployment: &Value,
    status: Value,
    context: &MapContext,
    out: &mut Vec<String>,
) -> Result<(), MapError> {
    let state = text(&status, "/state", "deployment_status")?.to_owned();
    let (kind, severity) = match state.as_str() {
        "failure" => ("deployment.failed", Severity::Error),
        // GitHub's `error`: the deployment could not even run.
        "error" => ("deployment.failed", Severity::Critical),
        "success" => ("deployment.succeeded", Severity::Info),
        _ => ("deployment_status", Severity::Info),
    };
    let builder =
        deployment_builder(repo, deployment, kind, Some((&status, &state)))?.severity(severity);
    serialize(builder.original(status), context, out)
}

/// Release actions that become events.
pub fn release_action(action: &str) -> bool {
    matches!(action, "published" | "released" | "prereleased")
}

/// A release was published.
pub fn release(
    repo: &Repository<'_>,
    action: &str,
    release: Value,
    context: &MapContext,
    out: &mut Vec<String>,
) -> Result<(), MapError> {
    let what = "release";
    let id = number(&release, "/id", what)?;
    let tag = text(&release, "/tag_name", what)?;
    let time = first_time(&release, &["/published_at", "/created_at"], what)?;
    let url = web_link(optional(&release, "/html_url"))
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{}/releases/tag/{tag}", repo.html_url));
    let mut builder = repo
        .builder(
            "release",
            format!("{}:release:{id}:{action}", repo.full_name),
            time,
        )
        .subject(tag)
        .field("release.tag", tag)
        .field("release.action", action)
        .field(
            "release.prerelease",
            release
                .get("prerelease")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        )
        .link("release", url);
    if let Some(name) = optional(&release, "/name") {
        builder = builder.field("release.name", name);
    }
    if let Some(target) = optional(&release, "/target_commitish") {
        builder = builder.field("vcs.ref.head.name", target);
    }
    serialize(builder.original(release), context, out)
}

/// A completed workflow run, with its conclusion as severity.
pub fn workflow_run(
    repo: &Repository<'_>,
    run: Value,
    context: &MapContext,
    out: &mut Vec<String>,
) -> Result<(), MapError> {
    let what = "workflow_run";
    let id = number(&run, "/id", what)?;
    let attempt = run.get("run_attempt").and_then(Value::as_u64).unwrap_or(1);
    let sha = text(&run, "/head_sha", what)?;
    let conclusion = optional(&run, "/conclusion").unwrap_or("unknown");
    let severity = match conclusion {
        "failure" | "timed_out" | "startup_failure" => Severity::Error,
        "cancelled" | "action_required" | "stale" => Severity::Warning,
        _ => Severity::Info,
    };
    let time = first_time(
        &run,
        &["/updated_at", "/run_started_at", "/created_at"],
        what,
    )?;
    let url = web_link(optional(&run, "/html_url"))
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{}/actions/runs/{id}", repo.html_url));
    let mut builder = repo
        .builder(
            "workflow_run",
            format!("{}:run:{id}:{attempt}", repo.full_name),
            time,
        )
        .severity(severity)
        .subject(optional(&run, "/name").unwrap_or("workflow run"))
        .correlation(sha)
        .field("cicd.pipeline.run.id", id)
        .field("cicd.pipeline.run.attempt", attempt)
        .field(
            "cicd.pipeline.name",
            optional(&run, "/name").unwrap_or_default(),
        )
        .field("cicd.pipeline.result", conclusion)
        .field("vcs.ref.head.revision", sha)
        .link("workflow_run", url)
        .link("commit", format!("{}/commit/{sha}", repo.html_url));
    if let Some(branch) = optional(&run, "/head_branch") {
        builder = builder.field("vcs.ref.head.name", branch);
    }
    serialize(builder.original(run), context, out)
}
