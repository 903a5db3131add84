//! Pull and backfill. For each repository in scope: commits on the default branch,
//! merged pull requests, and deployments with their statuses, since the repository's
//! cursor (at first the configured `backfill_since`, else seven days back). One batch
//! per page; a repository's cursor moves only with its last batch, so an interrupted
//! poll reads its pages again and the pipeline drops what it already has. The cursor
//! keeps an overlap ([`OVERLAP_MS`]) for clock skew and for statuses that arrive after
//! their deployment was first seen.

use std::collections::BTreeMap;

use plugin_kit::{MapContext, v1};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::api::{ApiError, GitHubApi, PER_PAGE, auth::now_ms};
use crate::events;
use crate::repositories::{self, RepositoryInfo};
use crate::settings::Settings;

/// Read again on every poll.
pub const OVERLAP_MS: u64 = 60 * 60 * 1000;
/// History read on the first poll without `backfill_since`.
pub const DEFAULT_BACKFILL_MS: u64 = 7 * 24 * 60 * 60 * 1000;

/// The collect cursor: per repository, the time from which the next poll reads.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Cursor {
    pub repositories: BTreeMap<String, u64>,
}

impl Cursor {
    /// An empty or unreadable cursor starts over from the backfill start (nothing is
    /// lost; the pipeline drops what it already has).
    pub fn parse(text: &str) -> Self {
        plugin_kit::cursor::decode(text)
    }

    pub fn encode(&self) -> String {
        plugin_kit::cursor::encode(self)
    }
}

fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
        .to_string()
}

/// Runs one poll over every repository, sending batches to `out`.
pub async fn poll(
    api: &GitHubApi,
    settings: &Settings,
    cursor: Cursor,
    out: mpsc::Sender<Result<v1::EventBatch, plugin_kit::Status>>,
) {
    let mut cursor = cursor;
    let started = now_ms();
    let default_since = settings
        .backfill_since_ms
        .unwrap_or_else(|| started.saturating_sub(DEFAULT_BACKFILL_MS));
    let mut failures = plugin_kit::resilience::Failures::default();
    for (name, resolved) in repositories::resolve(api, settings).await {
        let info = match resolved {
            Ok(info) => info,
            Err(err) => {
                tracing::warn!(repository = %name, error = %err, "cannot read a repository; the others go on");
                failures.push(err.class(), err.to_string());
                continue;
            }
        };
        let key = info.full_name.to_ascii_lowercase();
        let since = cursor
            .repositories
            .get(&key)
            .copied()
            .unwrap_or(default_since);
        let mut sink = BatchSink {
            out: &out,
            cursor: cursor.encode(),
        };
        match repository(api, settings, &info, since, &mut sink).await {
            Ok(()) => {
                cursor
                    .repositories
                    .insert(key, started.saturating_sub(OVERLAP_MS).max(since));
                let batch = v1::EventBatch {
                    events_json: Vec::new(),
                    cursor: cursor.encode(),
                };
                if out.send(Ok(batch)).await.is_err() {
                    return;
                }
            }
            Err(Stop::Closed) => return,
            Err(Stop::Api(err)) => {
                tracing::warn!(repository = %info.full_name, error = %err, "collecting a repository failed; the others go on");
                failures.push(err.class(), err.to_string());
            }
        }
    }
    if let Some(status) = failures.into_status("repository read(s)") {
        let _ = out.send(Err(status)).await;
    }
}

enum Stop {
    Closed,
    Api(ApiError),
}

impl From<ApiError> for Stop {
    fn from(err: ApiError) -> Self {
        Self::Api(err)
    }
}

struct BatchSink<'a> {
    out: &'a mpsc::Sender<Result<v1::EventBatch, plugin_kit::Status>>,
    /// The cursor as it was before this repository: its pages do not move it.
    cursor: String,
}

impl BatchSink<'_> {
    async fn send(&mut self, events_json: Vec<String>) -> Result<(), Stop> {
        if events_json.is_empty() {
            return Ok(());
        }
        let batch = v1::EventBatch {
            events_json,
            cursor: self.cursor.clone(),
        };
        self.out.send(Ok(batch)).await.map_err(|_| Stop::Closed)
    }
}

fn context(settings: &Settings) -> MapContext {
    MapContext {
        tenant: settings.tenant.clone(),
        integration: settings.integration.clone(),
    }
}

fn mapped(result: Result<(), plugin_kit::MapError>) {
    if let Err(err) = result {
        tracing::warn!(error = %err, "an API object could not be mapped; skipped");
    }
}

async fn repository(
    api: &GitHubApi,
    settings: &Settings,
    info: &RepositoryInfo,
    since_ms: u64,
    sink: &mut BatchSink<'_>,
) -> Result<(), Stop> {
    let repo = info.as_repository(settings);
    let context = context(settings);
    let since = rfc3339(since_ms);

    // Commits on the default branch (newest first; `since` filters on GitHub's side).
    let mut next = Some(format!(
        "/repos/{}/commits?sha={}&since={since}&per_page={PER_PAGE}",
        info.full_name, info.default_branch
    ));
    while let Some(url) = next.take() {
        let page = api.page_raw(&url).await?;
        let mut batch = Vec::with_capacity(page.items.len());
        for commit in &page.items {
            mapped(events::api_commit(
                &repo,
                commit,
                &info.default_branch,
                &context,
                &mut batch,
            ));
        }
        sink.send(batch).await?;
        next = page.next;
    }

    // Merged pull requests, most recently updated first, until older than `since`.
    let mut next = Some(format!(
        "/repos/{}/pulls?state=closed&sort=updated&direction=desc&per_page={PER_PAGE}",
        info.full_name
    ));
    while let Some(url) = next.take() {
        let page = api.page_raw(&url).await?;
        let mut batch = Vec::new();
        let mut older = false;
        for raw in &page.items {
            let pull: events::Pull<'_> = match events::parse(raw.get(), "pull_request") {
                Ok(pull) => pull,
                Err(err) => {
                    mapped(Err(err));
                    continue;
                }
            };
            if pull
                .updated_at
                .as_ref()
                .and_then(|t| t.ms())
                .is_some_and(|t| t < since_ms)
            {
                older = true;
                continue;
            }
            if pull.merged_at.is_some() {
                mapped(events::pull_request(
                    &repo, "merged", &pull, raw, &context, &mut batch,
                ));
            }
        }
        sink.send(batch).await?;
        next = if older { None } else { page.next };
    }

    // Deployments, newest first, until older than `since`; each with its statuses.
    let mut next = Some(format!(
        "/repos/{}/deployments?per_page={PER_PAGE}",
        info.full_name
    ));
    while let Some(url) = next.take() {
        let page = api.page_raw(&url).await?;
        let mut batch = Vec::new();
        let mut older = false;
        for raw in &page.items {
            let deployment: events::Deployment<'_> = match events::parse(raw.get(), "deployment") {
                Ok(deployment) => deployment,
                Err(err) => {
                    mapped(Err(err));
                    continue;
                }
            };
            if deployment
                .created_at
                .as_ref()
                .and_then(|t| t.ms())
                .is_some_and(|t| t < since_ms)
            {
                older = true;
                continue;
            }
            let statuses = api
                .page_raw(&format!(
                    "/repos/{}/deployments/{}/statuses?per_page={PER_PAGE}",
                    info.full_name, deployment.id
                ))
                .await?;
            for status_raw in &statuses.items {
                let status = events::parse(status_raw.get(), "deployment_status");
                mapped(status.and_then(|status| {
                    events::deployment_status(
                        &repo,
                        &deployment,
                        &status,
                        status_raw,
                        &context,
                        &mut batch,
                    )
                }));
            }
            mapped(events::deployment(
                &repo,
                &deployment,
                raw,
                &context,
                &mut batch,
            ));
        }
        sink.send(batch).await?;
        next = if older { None } else { page.next };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_bad_ones_start_over() {
        let mut cursor = Cursor::default();
        cursor.repositories.insert("acme/api".into(), 42);
        assert_eq!(Cursor::parse(&cursor.encode()), cursor);
        assert_eq!(Cursor::parse(""), Cursor::default());
        assert_eq!(Cursor::parse("{not json"), Cursor::default());
        assert_eq!(rfc3339(1_767_225_600_000), "2026-01-01T00:00:00Z");
    }
}
