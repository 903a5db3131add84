//! Batch enrichment: the stored failures of a tenant in a time range, enriched again
//! from the index as it is now (after a new integration brought deliveries, say).
//! Failures whose enrichments change get a new revision, committed through the
//! pipeline and delivered to the sinks like any event.
//!
//! Resumable: a job is named by its tenant and range, and its position (the last failure
//! key done) and counts are committed with each chunk's revisions. A job interrupted
//! (the client gone, the daemon killed) continues from there when asked again, and ends
//! with the same revisions as an uninterrupted run.

use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::records::{key_time, prefix};
use super::{CorrelationError, Correlator};
use crate::pipeline::{CommitError, Pipeline, Submission, Validated};
use crate::store::{Batch, Table};

/// Failures enriched per commit.
pub const CHUNK: usize = 1_000;

/// A job's position and counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Failures in the range, counted when the job started.
    pub total: u64,
    pub scanned: u64,
    pub enriched: u64,
    pub unchanged: u64,
    /// The last failure key done.
    #[serde(default)]
    pub after: Vec<u8>,
    pub done: bool,
}

/// Why a batch stopped.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error(transparent)]
    Correlation(#[from] CorrelationError),
    #[error(transparent)]
    Commit(#[from] CommitError),
    #[error("interrupted after {scanned} of {total} failures; run it again to continue")]
    Interrupted { scanned: u64, total: u64 },
    #[error("the same enrichment (tenant and range) is running and did not stop within {0:?}")]
    Running(std::time::Duration),
}

/// How long a run waits for an earlier run of the same job to stop.
const RUNNING_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

fn job_key(tenant: &str, from_ms: u64, to_ms: u64, dry_run: bool) -> Vec<u8> {
    let mut key = prefix(&[tenant]);
    key.extend_from_slice(&from_ms.to_be_bytes());
    key.extend_from_slice(&to_ms.to_be_bytes());
    key.push(u8::from(dry_run));
    key
}

/// Adds revision `revision` of a failure (its [`Table::Failures`] `key`) to
/// `submission`: stored in the index and delivered like any event.
pub(super) fn add_revision(
    submission: &mut Submission,
    key: Vec<u8>,
    mut revised: Value,
    revision: u64,
    time_ms: u64,
) {
    revised["revision"] = serde_json::json!(revision);
    let json = revised.to_string();
    submission.accepted.push(Validated {
        id: revised["id"].as_str().unwrap_or_default().to_owned(),
        time_ms,
        writes: vec![(Table::Failures, key, json.as_bytes().to_vec())],
        json,
        revision: Some(revision),
        revisions: Vec::new(),
    });
}

/// Which failures a batch run enriches: `tenant`'s over `from_ms..=to_ms`.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    pub tenant: &'a str,
    pub from_ms: u64,
    pub to_ms: u64,
    /// Count what would change, store nothing.
    pub dry_run: bool,
}

/// Runs (or resumes) the job for `scope`. `report` hears the progress after each
/// chunk; `cancel` stops it between chunks.
pub fn run(
    pipeline: &Pipeline,
    correlator: &Correlator,
    scope: Scope<'_>,
    cancel: &AtomicBool,
    mut report: impl FnMut(&Progress),
) -> Result<Progress, BatchError> {
    let Scope {
        tenant,
        from_ms,
        to_ms,
        dry_run,
    } = scope;
    let store = pipeline.store();
    let job = job_key(tenant, from_ms, to_ms, dry_run);
    let _running = correlator
        .start_job(&job, RUNNING_WAIT)
        .ok_or(BatchError::Running(RUNNING_WAIT))?;
    let tenant_prefix = prefix(&[tenant]);
    let in_range = |key: &[u8]| {
        // tenant \0 service \0 environment \0 time …: the time follows the third part.
        let mut zeros = 0;
        let at = key.iter().position(|b| {
            if *b == 0 {
                zeros += 1;
            }
            zeros == 3
        });
        at.and_then(|at| key_time(key, at + 1))
            .is_some_and(|t| (from_ms..=to_ms).contains(&t))
    };
    let mut progress = match store
        .get(Table::EnrichJobs, &job)
        .map_err(CorrelationError::from)?
    {
        Some(raw) => serde_json::from_slice(&raw)
            .map_err(|e| CorrelationError::Corrupt(format!("batch job: {e}")))?,
        None => {
            let total = store
                .scan(Table::Failures, &tenant_prefix)
                .map_err(CorrelationError::from)?
                .iter()
                .filter(|(key, _)| in_range(key))
                .count() as u64;
            Progress {
                total,
                ..Progress::default()
            }
        }
    };
    if progress.done {
        // A finished job runs again from the start (the index may have grown).
        progress = Progress {
            total: progress.total,
            ..Progress::default()
        };
    }
    report(&progress);
    loop {
        if cancel.load(Ordering::SeqCst) {
            return Err(BatchError::Interrupted {
                scanned: progress.scanned,
                total: progress.total,
            });
        }
        let start = if progress.after.is_empty() {
            tenant_prefix.clone()
        } else {
            let mut next = progress.after.clone();
            next.push(0);
            next
        };
        let mut end = tenant_prefix.clone();
        end.push(0xff);
        let chunk: Vec<(Vec<u8>, Vec<u8>)> = store
            .range(Table::Failures, &start, &end, CHUNK)
            .map_err(CorrelationError::from)?;
        let Some((last_key, _)) = chunk.last() else {
            progress.done = true;
            let mut batch = Batch::new();
            batch = batch.delete(Table::EnrichJobs, job.clone());
            store.apply(&batch).map_err(CorrelationError::from)?;
            report(&progress);
            return Ok(progress);
        };
        let last_key = last_key.clone();
        let mut submission = Submission {
            tenant: tenant.to_owned(),
            integration: crate::pipeline::PLATFORM_INTEGRATION.to_owned(),
            ..Submission::default()
        };
        // What the index lacks, asked of plugins once the chunk is committed.
        let mut asked = Vec::new();
        for (key, raw) in chunk {
            if !in_range(&key) {
                continue;
            }
            progress.scanned += 1;
            let stored: Value = serde_json::from_slice(&raw)
                .map_err(|e| CorrelationError::Corrupt(format!("failure: {e}")))?;
            let time_ms = stored["time"]
                .as_str()
                .and_then(plugin_protocol::event_time_ms)
                .unwrap_or_default();
            let (enriched, asks) = correlator.enriched(tenant, &stored, time_ms, &[])?;
            let stored_revision = stored.get("revision").and_then(Value::as_u64).unwrap_or(1);
            if enriched["data"]["enrichments"] == stored["data"]["enrichments"] {
                progress.unchanged += 1;
                if !dry_run && !asks.is_empty() {
                    asked.push((stored, time_ms, stored_revision, asks));
                }
                continue;
            }
            progress.enriched += 1;
            if dry_run {
                continue;
            }
            let revision = stored_revision + 1;
            if !asks.is_empty() {
                asked.push((enriched.clone(), time_ms, revision, asks));
            }
            add_revision(&mut submission, key, enriched, revision, time_ms);
        }
        progress.after = last_key;
        let encoded = serde_json::to_vec(&progress)
            .map_err(|e| CorrelationError::Corrupt(format!("batch job: {e}")))?;
        submission.extra =
            std::mem::take(&mut submission.extra).put(Table::EnrichJobs, job.clone(), encoded);
        // The revisions and the job's new position land together.
        pipeline.commit_blocking(submission)?;
        for (event, time_ms, revision, asks) in asked {
            correlator.ask(tenant, &event, time_ms, revision, asks);
        }
        report(&progress);
    }
}
