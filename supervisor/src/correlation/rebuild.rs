//! Rebuilding a tenant's correlation index from the events of record: the JSONL sink's
//! files (the current one and its rotations, oldest first) and the commits still in the
//! event log (not yet delivered everywhere). For an index lost, damaged, or kept while
//! enrichment was off.
//!
//! The tenant's entries are dropped first, then every stored event of the tenant is
//! indexed again as the pipeline would have indexed it. Index writes are keyed by the
//! event (tenant, parts, time, id), so an event read from both a file and the log lands
//! once; of a failure's revisions, the highest is kept. Events committed while the
//! rebuild runs index themselves as usual.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::enrich::failure_write;
use super::records::{self, INDEX_TABLES, prefix};
use super::{CorrelationError, Correlator, IndexWrite};
use crate::pipeline::{Pipeline, ReadError};
use crate::store::{Batch, Store, StoreError};

/// Index writes applied per store batch.
const WRITES_PER_BATCH: usize = 10_000;
/// Log commits read per step.
const COMMITS_PER_READ: usize = 256;

/// What a rebuild read and wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RebuildSummary {
    /// The tenant's events read (an event in a file and in the log counts twice).
    pub events: u64,
    /// Index entries written (deliveries, commits, pull requests, alarm states).
    pub entries: u64,
    /// Failures stored (each once, at its highest revision).
    pub failures: u64,
    /// Lines that were not JSON events (a torn line, say): skipped.
    pub skipped: u64,
    /// The files read.
    pub files: Vec<PathBuf>,
}

/// Why a rebuild stopped.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Log(#[from] ReadError),
    #[error("cannot read the archive {path}: {cause}")]
    Archive { path: String, cause: std::io::Error },
    #[error(transparent)]
    Correlation(#[from] CorrelationError),
}

/// The files of the JSONL sink at `path`: its rotations (`<name>.<stamp>`, oldest
/// first), then the current file.
pub fn archive_files(path: &Path) -> Result<Vec<PathBuf>, RebuildError> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok(Vec::new());
    };
    // The sink rotates `events.jsonl` to `events.jsonl.<unix ms>`
    // (`Path::with_extension("jsonl.<ms>")`).
    let _ = name;
    let rotated_name = path.with_extension("jsonl");
    let rotated_prefix = format!(
        "{}.",
        rotated_name.file_name().unwrap_or(name).to_string_lossy()
    );
    let mut rotated: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .strip_prefix(&rotated_prefix)
                    .is_some_and(|stamp| {
                        !stamp.is_empty() && stamp.bytes().all(|b| b.is_ascii_digit())
                    })
            })
            .map(|e| e.path())
            .collect(),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(RebuildError::Archive {
                path: dir.display().to_string(),
                cause: source,
            });
        }
    };
    rotated.sort();
    if path.exists() {
        rotated.push(path.to_path_buf());
    }
    Ok(rotated)
}

/// The writes of one rebuild, applied in batches.
struct Writer<'s> {
    store: &'s Store,
    batch: Batch,
    pending: usize,
    /// Failure key → the revision written for it.
    failures: HashMap<Vec<u8>, u64>,
    summary: RebuildSummary,
}

impl Writer<'_> {
    fn put(&mut self, (table, key, value): IndexWrite) -> Result<(), StoreError> {
        self.batch = std::mem::take(&mut self.batch).put(table, key, value);
        self.pending += 1;
        if self.pending >= WRITES_PER_BATCH {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        if self.pending > 0 {
            self.store.apply(&std::mem::take(&mut self.batch))?;
            self.pending = 0;
        }
        Ok(())
    }

    /// Indexes one stored event line of `tenant` (other tenants' lines are passed over).
    fn line(
        &mut self,
        correlator: &Correlator,
        tenant: &str,
        line: &[u8],
    ) -> Result<(), StoreError> {
        if line.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        let Ok(event) = serde_json::from_slice::<Value>(line) else {
            self.summary.skipped += 1;
            return Ok(());
        };
        if event.get("tenant").and_then(Value::as_str) != Some(tenant) {
            return Ok(());
        }
        let Some(time_ms) = event
            .get("time")
            .and_then(Value::as_str)
            .and_then(plugin_protocol::event_time_ms)
        else {
            self.summary.skipped += 1;
            return Ok(());
        };
        self.summary.events += 1;
        for entry in records::index_entries(&event, time_ms) {
            self.put(entry.write(tenant))?;
            self.summary.entries += 1;
        }
        if records::is_failure(&event, correlator.settings().min_severity) {
            let revision = event.get("revision").and_then(Value::as_u64).unwrap_or(1);
            let json = String::from_utf8_lossy(line).trim_end().to_owned();
            if let Some(write) = failure_write(tenant, &event, time_ms, &json) {
                let newer = self
                    .failures
                    .get(&write.1)
                    .is_none_or(|seen| *seen < revision);
                if newer {
                    if self.failures.insert(write.1.clone(), revision).is_none() {
                        self.summary.failures += 1;
                    }
                    self.put(write)?;
                }
            }
        }
        Ok(())
    }
}

/// Drops `tenant`'s index and builds it again from `archives` (JSONL sink files, read
/// as [`archive_files`] lists them) and the event log.
pub fn rebuild(
    pipeline: &Pipeline,
    correlator: &Correlator,
    tenant: &str,
    archives: &[PathBuf],
) -> Result<RebuildSummary, RebuildError> {
    let store = pipeline.store();
    clear(store, tenant)?;
    let mut writer = Writer {
        store,
        batch: Batch::new(),
        pending: 0,
        failures: HashMap::new(),
        summary: RebuildSummary::default(),
    };
    for path in archives {
        let archive_error = |source| RebuildError::Archive {
            path: path.display().to_string(),
            cause: source,
        };
        let file = std::fs::File::open(path).map_err(archive_error)?;
        let mut reader = std::io::BufReader::new(file);
        let mut line = Vec::new();
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line).map_err(archive_error)? == 0 {
                break;
            }
            writer.line(correlator, tenant, &line)?;
        }
        writer.summary.files.push(path.clone());
    }
    let mut after = 0;
    loop {
        let commits = pipeline.outbox_after(after, COMMITS_PER_READ)?;
        let Some((last, _)) = commits.last() else {
            break;
        };
        after = *last;
        for (_, record) in &commits {
            for line in record.split(|b| *b == b'\n') {
                writer.line(correlator, tenant, line)?;
            }
        }
    }
    writer.flush()?;
    correlator.forget_recent();
    Ok(writer.summary)
}

/// Removes every index entry of `tenant`.
fn clear(store: &Store, tenant: &str) -> Result<(), StoreError> {
    let from = prefix(&[tenant]);
    for table in INDEX_TABLES {
        store.delete_prefix(table, &from, WRITES_PER_BATCH)?;
    }
    Ok(())
}
