//! Retention: the index forgets what is older than `enrichment.retention`, by event
//! time, so that it does not grow with every event ever seen.
//!
//! A sweep runs every quarter of the retention (at most hourly). Tables keyed by time
//! within a group (a tenant's service and environment, a repository) are pruned by
//! range: per group, one seek to its old end and deletes there, so a sweep costs the
//! number of groups plus what it deletes, not the size of the index. The tables keyed
//! by name (merged pull requests by merge commit, resolutions by correlation id) are
//! read whole and pruned by the time in their values; a pull request recorded before
//! its time was kept is stamped with the sweep's time, and goes one retention later.
//! Deletes go in batches of [`KEYS_PER_BATCH`], so no transaction grows with the index
//! and writers wait at most one batch.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use serde::Deserialize;

use super::records::{
    self, INDEX_TABLES, PullRecord, TimeLayout, after_group, group_of, newest_first_range,
    time_range,
};
use super::{CorrelationError, Correlator};
use crate::store::{Batch, Table};

/// Keys deleted or read per store batch.
pub const KEYS_PER_BATCH: usize = 1_000;
/// The longest wait between sweeps.
const MAX_SWEEP_INTERVAL: Duration = Duration::from_secs(60 * 60);

/// What one sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Entries deleted, per table.
    pub deleted: Vec<(Table, u64)>,
    /// Pull requests stamped with the sweep's time (recorded without one).
    pub stamped: u64,
}

impl Pruned {
    /// Entries deleted in all tables.
    pub fn total(&self) -> u64 {
        self.deleted.iter().map(|(_, n)| n).sum()
    }
}

/// The label of the per-table series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TableLabel {
    pub table: String,
}

/// What the sweeps expose as metrics: an operator sees them run and what they free,
/// and alerts on `..._last_success_timestamp_seconds` going stale.
#[derive(Debug, Clone, Default)]
pub struct RetentionMetrics {
    pub pruned: Family<TableLabel, Counter>,
    pub failures: Counter,
    pub last_success: Gauge,
}

/// A value's time, for the tables that keep it there.
#[derive(Deserialize)]
struct ValueTime {
    time_ms: Option<u64>,
}

/// How often to sweep for `retention`.
pub fn sweep_interval(retention: Duration) -> Duration {
    (retention / 4).clamp(Duration::from_secs(1), MAX_SWEEP_INTERVAL)
}

impl Correlator {
    /// Deletes every index entry and failure whose event time is before `horizon_ms`,
    /// and stamps pull requests without a time with `now_ms`.
    pub fn prune_before(&self, horizon_ms: u64, now_ms: u64) -> Result<Pruned, CorrelationError> {
        let mut pruned = Pruned::default();
        for table in INDEX_TABLES {
            let deleted = match records::time_layout(table) {
                TimeLayout::Ascending { parts } | TimeLayout::Descending { parts } => {
                    self.prune_groups(table, parts, horizon_ms)?
                }
                TimeLayout::InValue => {
                    let (deleted, stamped) = self.prune_by_value(table, horizon_ms, now_ms)?;
                    pruned.stamped += stamped;
                    deleted
                }
            };
            pruned.deleted.push((table, deleted));
        }
        if pruned.total() > 0 {
            // What the memos hold may have just been deleted.
            self.forget_recent();
        }
        Ok(pruned)
    }

    /// Per group of `table`, deletes the keys with a time before `horizon_ms`.
    fn prune_groups(
        &self,
        table: Table,
        parts: usize,
        horizon_ms: u64,
    ) -> Result<u64, CorrelationError> {
        let Some(last_old) = horizon_ms.checked_sub(1) else {
            return Ok(0);
        };
        let descending = matches!(records::time_layout(table), TimeLayout::Descending { .. });
        let mut deleted = 0;
        let mut from = Vec::new();
        while let Some((key, _)) = self.store.range_from(table, &from, 1)?.pop() {
            let Some(group) = group_of(&key, parts) else {
                // Not an index key (nothing writes one): left alone, passed over.
                from = key;
                from.push(0);
                continue;
            };
            let (start, end) = if descending {
                newest_first_range(group, 0, last_old)
            } else {
                time_range(group, 0, last_old)
            };
            loop {
                let old = self.store.range(table, &start, &end, KEYS_PER_BATCH)?;
                if old.is_empty() {
                    break;
                }
                let batch = old.iter().fold(Batch::new(), |batch, (key, _)| {
                    batch.delete(table, key.clone())
                });
                self.store.apply(&batch)?;
                deleted += old.len() as u64;
                if old.len() < KEYS_PER_BATCH {
                    break;
                }
            }
            from = after_group(group);
        }
        Ok(deleted)
    }

    /// Reads `table` whole and deletes the entries whose value's time is before
    /// `horizon_ms`; stamps pull requests that have none.
    fn prune_by_value(
        &self,
        table: Table,
        horizon_ms: u64,
        now_ms: u64,
    ) -> Result<(u64, u64), CorrelationError> {
        let (mut deleted, mut stamped) = (0, 0);
        let mut from = Vec::new();
        loop {
            let page = self.store.range_from(table, &from, KEYS_PER_BATCH)?;
            let Some((last, _)) = page.last() else {
                break;
            };
            from = last.clone();
            from.push(0);
            let mut batch = Batch::new();
            for (key, value) in &page {
                match serde_json::from_slice::<ValueTime>(value)
                    .ok()
                    .map(|v| v.time_ms)
                {
                    Some(Some(time)) if time < horizon_ms => {
                        batch = batch.delete(table, key.clone());
                        deleted += 1;
                    }
                    Some(None) if table == Table::Pulls => {
                        let mut record: PullRecord = super::decode(value)?;
                        record.time_ms = Some(now_ms);
                        batch = batch.put(
                            table,
                            key.clone(),
                            serde_json::to_vec(&record).unwrap_or_default(),
                        );
                        stamped += 1;
                    }
                    // Recent, or unreadable (a lookup reports that): kept.
                    _ => {}
                }
            }
            if !batch.is_empty() {
                self.store.apply(&batch)?;
            }
            if page.len() < KEYS_PER_BATCH {
                break;
            }
        }
        Ok((deleted, stamped))
    }
}

/// What the sweeps are called in `Pipeline::upkeep_health`, and so in the
/// `upkeep_failing` alert.
pub const UPKEEP_NAME: &str = "correlation_retention";

/// Sweeps `correlator`'s index every [`sweep_interval`] until `stop`, keeping
/// `retention`. A sweep that fails is logged, counted in `metrics` and reported to
/// `pipeline`'s upkeep health (an alert once it has failed for minutes), and tried
/// again at the next interval.
pub async fn run(
    correlator: std::sync::Arc<Correlator>,
    pipeline: std::sync::Arc<crate::pipeline::Pipeline>,
    retention: Duration,
    metrics: RetentionMetrics,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let interval = sweep_interval(retention);
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        sweep(&correlator, &pipeline, retention, &metrics).await;
    }
}

/// One sweep keeping `retention`, with its outcome in `metrics` and `pipeline`'s
/// upkeep health (and the log).
pub async fn sweep(
    correlator: &std::sync::Arc<Correlator>,
    pipeline: &crate::pipeline::Pipeline,
    retention: Duration,
    metrics: &RetentionMetrics,
) {
    let health = pipeline.upkeep_health();
    let retention_ms = u64::try_from(retention.as_millis()).unwrap_or(u64::MAX);
    let now_ms = plugin_kit::clock::now_ms();
    let horizon_ms = now_ms.saturating_sub(retention_ms);
    let sweeper = correlator.clone();
    let started = std::time::Instant::now();
    let outcome =
        tokio::task::spawn_blocking(move || sweeper.prune_before(horizon_ms, now_ms)).await;
    match outcome {
        Ok(Ok(pruned)) => {
            health.delivered(
                UPKEEP_NAME,
                usize::try_from(pruned.total()).unwrap_or(usize::MAX),
            );
            for (table, deleted) in &pruned.deleted {
                metrics
                    .pruned
                    .get_or_create(&TableLabel {
                        table: table.tree_name().to_owned(),
                    })
                    .inc_by(*deleted);
            }
            metrics
                .last_success
                .set(i64::try_from(now_ms / 1000).unwrap_or(i64::MAX));
            if pruned.total() > 0 || pruned.stamped > 0 {
                tracing::info!(
                    deleted = pruned.total(),
                    stamped = pruned.stamped,
                    took_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                    "pruned the correlation index past its retention"
                );
            }
        }
        Ok(Err(err)) => {
            metrics.failures.inc();
            health.failed(
                UPKEEP_NAME,
                &format!("cannot prune the correlation index: {err}"),
            );
            tracing::error!(error = %err, "cannot prune the correlation index; tried again at the next sweep");
        }
        Err(err) => {
            metrics.failures.inc();
            health.failed(
                UPKEEP_NAME,
                &format!("the correlation index sweep stopped: {err}"),
            );
            tracing::error!(error = %err, "the correlation index sweep stopped; tried again at the next sweep");
        }
    }
}
