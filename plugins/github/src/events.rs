//! GitHub objects → canonical events. One function per kind of fact; the webhook and
//! the API paths both come here, so a deployment read from the API and the same one
//! delivered by a webhook get the same event id (ids come from GitHub's own ids and
//! SHAs, never from the delivery) and the pipeline keeps one.
//!
//! Objects are read as borrowed typed views over their JSON text, and each event's
//! `original` is that text copied as it came ([`RawValue`]): no JSON tree is built and
//! nothing is escaped twice, which is most of the cost of mapping a delivery.

use std::borrow::Cow;

use plugin_kit::{Category, EventBuilder, MapContext, MapError, Severity};
use serde::Deserialize;
use serde_json::value::RawValue;

/// The canonical type prefix of everything this plugin emits.
const DELIVERY: &str = "com.betalogs.delivery";

/// The longest excerpt of a parse error quoted back (serde's messages can quote input).
const QUOTE: usize = 160;

/// What every event of one repository carries.
#[derive(Debug, Clone)]
pub struct Repository<'a> {
    pub full_name: &'a str,
    pub html_url: &'a str,
    pub default_branch: Option<&'a str>,
    pub service: &'a str,
}

/// `com.betalogs.delivery.<kind>`, without an allocation for the kinds this plugin emits.
fn event_type(kind: &str) -> Cow<'static, str> {
    let known = match kind {
        "push" => "com.betalogs.delivery.push",
        "commit" => "com.betalogs.delivery.commit",
        "pull_request.opened" => "com.betalogs.delivery.pull_request.opened",
        "pull_request.reopened" => "com.betalogs.delivery.pull_request.reopened",
        "pull_request.synchronize" => "com.betalogs.delivery.pull_request.synchronize",
        "pull_request.closed" => "com.betalogs.delivery.pull_request.closed",
        "pull_request.merged" => "com.betalogs.delivery.pull_request.merged",
        "deployment" => "com.betalogs.delivery.deployment",
        "deployment.failed" => "com.betalogs.delivery.deployment.failed",
        "deployment.succeeded" => "com.betalogs.delivery.deployment.succeeded",
        "deployment_status" => "com.betalogs.delivery.deployment_status",
        "release" => "com.betalogs.delivery.release",
        "workflow_run" => "com.betalogs.delivery.workflow_run",
        other => return Cow::Owned(format!("{DELIVERY}.{other}")),
    };
    Cow::Borrowed(known)
}

impl<'a> Repository<'a> {
    fn builder(&self, kind: &str, source_id: String, time: Cow<'a, str>) -> EventBuilder<'a> {
        EventBuilder::new(
            event_type(kind),
            Category::Delivery,
            self.html_url,
            source_id,
            time,
        )
        .field("service.name", self.service)
        .field("vcs.repository.name", self.full_name)
        .field("vcs.repository.url", self.html_url)
        .link("repository", self.html_url)
    }
}

/// Reads `raw` as a `T`; the error names `what` and serde's reason, shortened.
pub fn parse<'a, T: Deserialize<'a>>(raw: &'a str, what: &str) -> Result<T, MapError> {
    serde_json::from_str(raw).map_err(|e| map_error(what, &e))
}

fn map_error(what: &str, err: &serde_json::Error) -> MapError {
    let why: String = err
        .to_string()
        .chars()
        .take(QUOTE)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    MapError {
        what: what.to_owned(),
        why,
    }
}

/// A `{ "login": ... }` or `{ "name": ... }` object.
#[derive(Debug, Default, Deserialize)]
pub struct Person<'a> {
    #[serde(borrow, default)]
    pub login: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub username: Option<Cow<'a, str>>,
}

/// A time as GitHub writes it: RFC 3339 text, or Unix seconds (a push's `pushed_at`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum GitHubTime<'a> {
    Text(#[serde(borrow)] Cow<'a, str>),
    Seconds(u64),
}

impl<'a> GitHubTime<'a> {
    fn rfc3339(&self) -> Option<Cow<'a, str>> {
        match self {
            Self::Text(text) if plugin_kit::event_time_ms(text).is_some() => Some(text.clone()),
            Self::Text(_) => None,
            Self::Seconds(seconds) => {
                let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(*seconds);
                Some(Cow::Owned(
                    humantime::format_rfc3339_seconds(at).to_string(),
                ))
            }
        }
    }

    pub fn ms(&self) -> Option<u64> {
        match self {
            Self::Text(text) => plugin_kit::event_time_ms(text),
            Self::Seconds(seconds) => seconds.checked_mul(1000),
        }
    }
}

/// The first of `times` that is a time, or an error naming `what`.
fn first_time<'a>(
    times: &[Option<&GitHubTime<'a>>],
    what: &str,
    fields: &str,
) -> Result<Cow<'a, str>, MapError> {
    times
        .iter()
        .flatten()
        .find_map(|t| t.rfc3339())
        .ok_or_else(|| MapError {
            what: what.to_owned(),
            why: format!("none of {fields} is a time"),
        })
}

/// An http(s) URL fit for an evidence link.
fn web_link(url: Option<&str>) -> Option<&str> {
    url.filter(|u| (u.starts_with("https://") || u.starts_with("http://")) && u.len() <= 2048)
}

fn emit(
    builder: &EventBuilder,
    context: &MapContext,
    out: &mut Vec<String>,
) -> Result<(), MapError> {
    let json = builder.to_json(context).map_err(|e| MapError {
        what: "event".to_owned(),
        why: e.to_string(),
    })?;
    out.push(json);
    Ok(())
}

fn first_line(message: &str) -> &str {
    message.lines().next().unwrap_or_default()
}

/// A delivery's top level, read once: what routing needs (action, repository), a
/// push's own fields, and the objects the other kinds' events are made of (as their
/// JSON text, parsed by the kind's function).
#[derive(Debug, Deserialize)]
pub struct Delivery<'a> {
    #[serde(borrow, default)]
    pub action: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub repository: Option<DeliveryRepository<'a>>,
    #[serde(borrow, default)]
    pub pull_request: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub deployment: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub deployment_status: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub release: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub workflow_run: Option<&'a RawValue>,
    // A push's fields.
    #[serde(rename = "ref", borrow, default)]
    pub git_ref: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub after: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub before: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub compare: Option<Cow<'a, str>>,
    #[serde(default)]
    pub deleted: bool,
    #[serde(borrow, default)]
    pub commits: Option<Vec<&'a RawValue>>,
    #[serde(borrow, default)]
    pub head_commit: Option<HeadCommit<'a>>,
    #[serde(borrow, default)]
    pub pusher: Option<Person<'a>>,
}

/// The repository a delivery is about.
#[derive(Debug, Deserialize)]
pub struct DeliveryRepository<'a> {
    #[serde(borrow, default)]
    pub full_name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub html_url: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub default_branch: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub pushed_at: Option<GitHubTime<'a>>,
}

#[derive(Debug, Deserialize)]
pub struct HeadCommit<'a> {
    #[serde(borrow, default)]
    pub timestamp: Option<GitHubTime<'a>>,
}

/// A `push`: one event for the push (its original is the whole payload, `whole`: the
/// text `push` was read from in full) and one per commit on it (the commit as its
/// original).
pub fn push(
    repo: &Repository<'_>,
    push: &Delivery<'_>,
    whole: &str,
    context: &MapContext,
    out: &mut Vec<String>,
) -> Result<(), MapError> {
    let missing = |field: &str| MapError {
        what: "push".to_owned(),
        why: format!("missing field `{field}`"),
    };
    let git_ref = push.git_ref.as_deref().ok_or_else(|| missing("ref"))?;
    let after = push.after.as_deref().ok_or_else(|| missing("after"))?;
    let commits = push.commits.as_deref().unwrap_or_default();
    let branch = git_ref.strip_prefix("refs/heads/");
    let default = branch.is_some_and(|b| Some(b) == repo.default_branch);
    let before = push.before.as_deref().unwrap_or_default();
    let time = first_time(
        &[
            push.head_commit.as_ref().and_then(|h| h.timestamp.as_ref()),
            push.repository.as_ref().and_then(|r| r.pushed_at.as_ref()),
        ],
        "push",
        "`/head_commit/timestamp`, `/repository/pushed_at`",
    )?;
    let mut builder = repo
        .builder(
            "push",
            format!("{}:{git_ref}:{before}..{after}", repo.full_name),
            time,
        )
        .subject(git_ref)
        .correlation(after)
        .field("vcs.ref.head.name", branch.unwrap_or(git_ref))
        .field("vcs.ref.head.revision", after)
        .field("vcs.ref.base.revision", before)
        .field("vcs.ref.default", default)
        .field("vcs.change.commits", commits.len())
        .field("vcs.ref.deleted", push.deleted);
    if let Some(url) = web_link(push.compare.as_deref()) {
        builder = builder.link("compare", url);
    }
    if let Some(name) = push.pusher.as_ref().and_then(|p| p.name.as_deref()) {
        builder = builder.field("vcs.actor", name);
    }
    emit(&builder.original_json_text(whole), context, out)?;
    for commit in commits {
        let facts = CommitFacts::from_push(parse(commit.get(), "push commit")?)?;
        let builder = commit_event(repo, &facts, branch, default).original_raw(commit);
        emit(&builder, context, out)?;
    }
    Ok(())
}

/// A commit in a push payload: `{id, message, timestamp, url, author}`.
#[derive(Debug, Deserialize)]
pub struct PushCommit<'a> {
    #[serde(borrow)]
    pub id: Cow<'a, str>,
    #[serde(borrow, default)]
    pub message: Cow<'a, str>,
    #[serde(borrow, default)]
    pub timestamp: Option<GitHubTime<'a>>,
    #[serde(borrow, default)]
    pub url: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub author: Option<Person<'a>>,
}

/// A commit from the commits API: `{sha, html_url, commit: {message, author, committer}, author}`.
#[derive(Debug, Deserialize)]
pub struct ApiCommit<'a> {
    #[serde(borrow)]
    pub sha: Cow<'a, str>,
    #[serde(borrow, default)]
    pub html_url: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub commit: GitCommit<'a>,
    #[serde(borrow, default)]
    pub author: Option<Person<'a>>,
}

#[derive(Debug, Deserialize)]
pub struct GitCommit<'a> {
    #[serde(borrow, default)]
    pub message: Cow<'a, str>,
    #[serde(borrow, default)]
    pub author: Option<Signature<'a>>,
    #[serde(borrow, default)]
    pub committer: Option<Signature<'a>>,
}

#[derive(Debug, Deserialize)]
pub struct Signature<'a> {
    #[serde(borrow, default)]
    pub name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub date: Option<GitHubTime<'a>>,
}

/// The facts of a commit, from either shape.
#[derive(Debug)]
pub struct CommitFacts<'a> {
    pub sha: Cow<'a, str>,
    pub message: Cow<'a, str>,
    pub author: Option<Cow<'a, str>>,
    pub login: Option<Cow<'a, str>>,
    pub time: Cow<'a, str>,
    pub url: Option<Cow<'a, str>>,
}

impl<'a> CommitFacts<'a> {
    pub fn from_push(commit: PushCommit<'a>) -> Result<Self, MapError> {
        let time = first_time(&[commit.timestamp.as_ref()], "push commit", "`timestamp`")?;
        let (author, login) = match commit.author {
            Some(person) => (person.name, person.username),
            None => (None, None),
        };
        Ok(Self {
            sha: commit.id,
            message: commit.message,
            author,
            login,
            time,
            url: commit.url,
        })
    }

    pub fn from_api(commit: ApiCommit<'a>) -> Result<Self, MapError> {
        let time = first_time(
            &[
                commit
                    .commit
                    .committer
                    .as_ref()
                    .and_then(|c| c.date.as_ref()),
                commit.commit.author.as_ref().and_then(|a| a.date.as_ref()),
            ],
            "commit",
            "`/commit/committer/date`, `/commit/author/date`",
        )?;
        Ok(Self {
            sha: commit.sha,
            message: commit.commit.message,
            author: commit.commit.author.and_then(|a| a.name),
            login: commit.author.and_then(|a| a.login),
            time,
            url: commit.html_url,
        })
    }
}

/// The event of one commit (the caller adds its original).
pub fn commit_event<'a>(
    repo: &'a Repository<'a>,
    facts: &'a CommitFacts<'a>,
    branch: Option<&'a str>,
    default: bool,
) -> EventBuilder<'a> {
    let sha = facts.sha.as_ref();
    let url = web_link(facts.url.as_deref()).map_or_else(
        || Cow::Owned(format!("{}/commit/{sha}", repo.html_url)),
        Cow::Borrowed,
    );
    let mut builder = repo
        .builder(
            "commit",
            format!("{}:{sha}", repo.full_name),
            Cow::Borrowed(facts.time.as_ref()),
        )
        .subject(sha)
        .correlation(sha)
        .field("vcs.ref.head.revision", sha)
        .field("vcs.commit.message", first_line(&facts.message))
        .field("vcs.ref.default", default)
        .link("commit", url);
    if let Some(branch) = branch {
        builder = builder.field("vcs.ref.head.name", branch);
    }
    if let Some(author) = &facts.author {
        builder = builder.field("vcs.commit.author", author.as_ref());
    }
    if let Some(login) = &facts.login {
        builder = builder.field("vcs.actor", login.as_ref());
    }
    builder
}

/// A commit read from the commits API (`GET /repos/{r}/commits`), on `branch`.
pub fn api_commit(
    repo: &Repository<'_>,
    commit: &RawValue,
    branch: &str,
    context: &MapContext,
    out: &mut Vec<String>,
) -> Result<(), MapError> {
    let facts = CommitFacts::from_api(parse(commit.get(), "commit")?)?;
    let builder = commit_event(
        repo,
        &facts,
        Some(branch),
        repo.default_branch == Some(branch),
    )
    .original_raw(commit);
    emit(&builder, context, out)
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

#[derive(Debug, Deserialize)]
pub struct GitRef<'a> {
    #[serde(borrow)]
    pub sha: Cow<'a, str>,
    #[serde(rename = "ref", borrow, default)]
    pub name: Option<Cow<'a, str>>,
}

/// A pull request, as webhooks and the pulls API give it.
#[derive(Debug, Deserialize)]
pub struct Pull<'a> {
    pub number: u64,
    #[serde(borrow)]
    pub head: GitRef<'a>,
    #[serde(borrow)]
    pub base: GitRef<'a>,
    #[serde(default)]
    pub merged: Option<bool>,
    #[serde(borrow, default)]
    pub merged_at: Option<GitHubTime<'a>>,
    #[serde(borrow, default)]
    pub closed_at: Option<GitHubTime<'a>>,
    #[serde(borrow, default)]
    pub created_at: Option<GitHubTime<'a>>,
    #[serde(borrow, default)]
    pub updated_at: Option<GitHubTime<'a>>,
    #[serde(borrow, default)]
    pub html_url: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub title: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub merge_commit_sha: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub user: Option<Person<'a>>,
}

/// A pull request event: `action` from [`pull_request_action`].
pub fn pull_request(
    repo: &Repository<'_>,
    action: &str,
    pull: &Pull<'_>,
    raw: &RawValue,
    context: &MapContext,
    out: &mut Vec<String>,
) -> Result<(), MapError> {
    let number = pull.number;
    let head = pull.head.sha.as_ref();
    // One event per fact: a merge happens once; a synchronize per new head; the others
    // at their own time (a pull request can be closed and reopened more than once).
    let (times, fields): (&[Option<&GitHubTime<'_>>], &str) = match action {
        "merged" => (
            &[
                pull.merged_at.as_ref(),
                pull.closed_at.as_ref(),
                pull.updated_at.as_ref(),
            ],
            "`merged_at`, `closed_at`, `updated_at`",
        ),
        "closed" => (
            &[pull.closed_at.as_ref(), pull.updated_at.as_ref()],
            "`closed_at`, `updated_at`",
        ),
        "opened" => (&[pull.created_at.as_ref()], "`created_at`"),
        _ => (
            &[pull.updated_at.as_ref(), pull.created_at.as_ref()],
            "`updated_at`, `created_at`",
        ),
    };
    let time = first_time(times, "pull_request", fields)?;
    let source_id = match action {
        "merged" => format!("{}#{number}:merged", repo.full_name),
        "synchronize" => format!("{}#{number}:synchronize:{head}", repo.full_name),
        _ => format!("{}#{number}:{action}:{time}", repo.full_name),
    };
    let url = web_link(pull.html_url.as_deref())
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
            pull.title.as_deref().unwrap_or_default(),
        )
        .field("vcs.ref.head.revision", head)
        .field("vcs.ref.base.revision", pull.base.sha.as_ref())
        .field(
            "vcs.ref.head.name",
            pull.head.name.as_deref().unwrap_or_default(),
        )
        .field(
            "vcs.ref.base.name",
            pull.base.name.as_deref().unwrap_or_default(),
        )
        .link("pull_request", url);
    if let Some(merge) = pull
        .merge_commit_sha
        .as_deref()
        .filter(|_| action == "merged")
    {
        builder = builder
            .field("vcs.change.merge_commit", merge)
            .link("commit", format!("{}/commit/{merge}", repo.html_url));
    }
    if let Some(login) = pull.user.as_ref().and_then(|u| u.login.as_deref()) {
        builder = builder.field("vcs.actor", login);
    }
    emit(&builder.original_raw(raw), context, out)
}

/// A deployment, as webhooks and the deployments API give it.
#[derive(Debug, Deserialize)]
pub struct Deployment<'a> {
    pub id: u64,
    #[serde(borrow)]
    pub sha: Cow<'a, str>,
    #[serde(borrow)]
    pub environment: Cow<'a, str>,
    #[serde(rename = "ref", borrow, default)]
    pub git_ref: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub task: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub creator: Option<Person<'a>>,
    #[serde(borrow, default)]
    pub created_at: Option<GitHubTime<'a>>,
    #[serde(borrow, default)]
    pub updated_at: Option<GitHubTime<'a>>,
}

/// A deployment status.
#[derive(Debug, Deserialize)]
pub struct DeploymentStatus<'a> {
    pub id: u64,
    #[serde(borrow)]
    pub state: Cow<'a, str>,
    #[serde(borrow, default)]
    pub created_at: Option<GitHubTime<'a>>,
    #[serde(borrow, default)]
    pub updated_at: Option<GitHubTime<'a>>,
    #[serde(borrow, default)]
    pub log_url: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub target_url: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub environment_url: Option<Cow<'a, str>>,
}

/// A deployment was created.
pub fn deployment(
    repo: &Repository<'_>,
    deployment: &Deployment<'_>,
    raw: &RawValue,
    context: &MapContext,
    out: &mut Vec<String>,
) -> Result<(), MapError> {
    let builder = deployment_builder(repo, deployment, "deployment", None)?;
    emit(&builder.original_raw(raw), context, out)
}

fn deployment_builder<'a>(
    repo: &'a Repository<'a>,
    deployment: &'a Deployment<'a>,
    kind: &str,
    status: Option<&'a DeploymentStatus<'a>>,
) -> Result<EventBuilder<'a>, MapError> {
    let (id, sha, environment) = (
        deployment.id,
        deployment.sha.as_ref(),
        deployment.environment.as_ref(),
    );
    let (source_id, time) = match status {
        Some(status) => (
            format!("{}:deployment:{id}:status:{}", repo.full_name, status.id),
            first_time(
                &[status.created_at.as_ref(), status.updated_at.as_ref()],
                kind,
                "`created_at`, `updated_at`",
            )?,
        ),
        None => (
            format!("{}:deployment:{id}", repo.full_name),
            first_time(
                &[
                    deployment.created_at.as_ref(),
                    deployment.updated_at.as_ref(),
                ],
                kind,
                "`created_at`, `updated_at`",
            )?,
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
    if let Some(git_ref) = deployment.git_ref.as_deref() {
        builder = builder.field("vcs.ref.head.name", git_ref);
    }
    if let Some(task) = deployment.task.as_deref() {
        builder = builder.field("deployment.task", task);
    }
    if let Some(login) = deployment.creator.as_ref().and_then(|c| c.login.as_deref()) {
        builder = builder.field("vcs.actor", login);
    }
    if let Some(status) = status {
        builder = builder.field("deployment.status", status.state.as_ref());
        for (rel, url) in [
            ("deployment_log", &status.log_url),
            ("deployment_target", &status.target_url),
            ("environment", &status.environment_url),
        ] {
            if let Some(url) = web_link(url.as_deref()) {
                builder = builder.link(rel, url);
            }
        }
    }
    Ok(builder)
}

/// A deployment's status changed. `failure` and `error` are failure events.
pub fn deployment_status(
    repo: &Repository<'_>,
    deployment: &Deployment<'_>,
    status: &DeploymentStatus<'_>,
    raw: &RawValue,
    context: &MapContext,
    out: &mut Vec<String>,
) -> Result<(), MapError> {
    let (kind, severity) = match status.state.as_ref() {
        "failure" => ("deployment.failed", Severity::Error),
        // GitHub's `error`: the deployment could not even run.
        "error" => ("deployment.failed", Severity::Critical),
        "success" => ("deployment.succeeded", Severity::Info),
        _ => ("deployment_status", Severity::Info),
    };
    let builder = deployment_builder(repo, deployment, kind, Some(status))?
        .severity(severity)
        .original_raw(raw);
    emit(&builder, context, out)
}

/// Release actions that become events.
pub fn release_action(action: &str) -> bool {
    matches!(action, "published" | "released" | "prereleased")
}

#[derive(Debug, Deserialize)]
pub struct Release<'a> {
    pub id: u64,
    #[serde(borrow)]
    pub tag_name: Cow<'a, str>,
    #[serde(borrow, default)]
    pub name: Option<Cow<'a, str>>,
    #[serde(default)]
    pub prerelease: bool,
    #[serde(borrow, default)]
    pub published_at: Option<GitHubTime<'a>>,
    #[serde(borrow, default)]
    pub created_at: Option<GitHubTime<'a>>,
    #[serde(borrow, default)]
    pub html_url: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub target_commitish: Option<Cow<'a, str>>,
}

/// A release was published.
pub fn release(
    repo: &Repository<'_>,
    action: &str,
    raw: &RawValue,
    context: &MapContext,
    out: &mut Vec<String>,
) -> Result<(), MapError> {
    let release: Release<'_> = parse(raw.get(), "release")?;
    let (id, tag) = (release.id, release.tag_name.as_ref());
    let time = first_time(
        &[release.published_at.as_ref(), release.created_at.as_ref()],
        "release",
        "`published_at`, `created_at`",
    )?;
    let url = web_link(release.html_url.as_deref())
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
        .field("release.prerelease", release.prerelease)
        .link("release", url);
    if let Some(name) = release.name.as_deref() {
        builder = builder.field("release.name", name);
    }
    if let Some(target) = release.target_commitish.as_deref() {
        builder = builder.field("vcs.ref.head.name", target);
    }
    emit(&builder.original_raw(raw), context, out)
}

#[derive(Debug, Deserialize)]
pub struct WorkflowRun<'a> {
    pub id: u64,
    #[serde(default)]
    pub run_attempt: Option<u64>,
    #[serde(borrow)]
    pub head_sha: Cow<'a, str>,
    #[serde(borrow, default)]
    pub head_branch: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub conclusion: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub updated_at: Option<GitHubTime<'a>>,
    #[serde(borrow, default)]
    pub run_started_at: Option<GitHubTime<'a>>,
    #[serde(borrow, default)]
    pub created_at: Option<GitHubTime<'a>>,
    #[serde(borrow, default)]
    pub html_url: Option<Cow<'a, str>>,
}

/// A completed workflow run, with its conclusion as severity.
pub fn workflow_run(
    repo: &Repository<'_>,
    raw: &RawValue,
    context: &MapContext,
    out: &mut Vec<String>,
) -> Result<(), MapError> {
    let run: WorkflowRun<'_> = parse(raw.get(), "workflow_run")?;
    let (id, sha) = (run.id, run.head_sha.as_ref());
    let attempt = run.run_attempt.unwrap_or(1);
    let conclusion = run.conclusion.as_deref().unwrap_or("unknown");
    let severity = match conclusion {
        "failure" | "timed_out" | "startup_failure" => Severity::Error,
        "cancelled" | "action_required" | "stale" => Severity::Warning,
        _ => Severity::Info,
    };
    let time = first_time(
        &[
            run.updated_at.as_ref(),
            run.run_started_at.as_ref(),
            run.created_at.as_ref(),
        ],
        "workflow_run",
        "`updated_at`, `run_started_at`, `created_at`",
    )?;
    let url = web_link(run.html_url.as_deref())
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{}/actions/runs/{id}", repo.html_url));
    let name = run.name.as_deref().unwrap_or_default();
    let mut builder = repo
        .builder(
            "workflow_run",
            format!("{}:run:{id}:{attempt}", repo.full_name),
            time,
        )
        .severity(severity)
        .subject(if name.is_empty() {
            "workflow run"
        } else {
            name
        })
        .correlation(sha)
        .field("cicd.pipeline.run.id", id)
        .field("cicd.pipeline.run.attempt", attempt)
        .field("cicd.pipeline.name", name)
        .field("cicd.pipeline.result", conclusion)
        .field("vcs.ref.head.revision", sha)
        .link("workflow_run", url)
        .link("commit", format!("{}/commit/{sha}", repo.html_url));
    if let Some(branch) = run.head_branch.as_deref() {
        builder = builder.field("vcs.ref.head.name", branch);
    }
    emit(&builder.original_raw(raw), context, out)
}
