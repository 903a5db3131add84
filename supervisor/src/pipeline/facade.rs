//! The pipeline's facade: opening it (the event log, the deduplication window, the
//! committer thread), preparing submissions (field mappings, validation, enrichment),
//! and handing them to the committer.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, mpsc};

use tokio::sync::{Notify, oneshot};

use super::commit::{BatchOutcome, CommitError, Committer, Job, Submission};
use super::dead_letter::DeadLetter;
use super::dedup::{self, DedupWindow};
use super::enricher::{Enricher, NoEnrichment};
use super::inbox::Inbox;
use super::keys::{SinkOffsets, corrupt, seq_of};
use super::log::{EventLog, Location, LogError};
use super::migration::migrate_unlogged;
use super::validate::{EventValidator, Validated};
use crate::names::InstanceKey;
use crate::store::{Store, StoreError, Table};

/// The integration name dead letters of platform events are filed under when the event
/// names none.
pub const PLATFORM_INTEGRATION: &str = "platform";

/// Ids remembered for deduplication by default.
pub const DEFAULT_DEDUP_WINDOW: usize = 1_000_000;

/// Adds an accepted event, and the revisions of earlier events it brings, to a
/// submission.
pub(super) fn accept(submission: &mut Submission, mut event: Validated) {
    let revisions = std::mem::take(&mut event.revisions);
    submission.accepted.push(event);
    for revision in revisions {
        submission.accepted.push(Validated {
            id: revision.id,
            time_ms: revision.time_ms,
            writes: vec![(
                Table::Failures,
                revision.key,
                revision.json.as_bytes().to_vec(),
            )],
            json: revision.json,
            revision: Some(revision.revision),
            revisions: Vec::new(),
        });
    }
}

/// The pipeline's durable state, its committer and the sinks' wake-up.
#[derive(Debug)]
pub struct Pipeline {
    pub(super) store: Store,
    pub(super) inbox: Inbox,
    /// Each integration's field mappings, set when its instance is configured.
    pub(super) mappings:
        std::sync::RwLock<std::collections::HashMap<InstanceKey, Arc<plugin_kit::FieldMappings>>>,
    pub(super) log: Arc<EventLog>,
    pub(super) sinks: Mutex<SinkOffsets>,
    pub(super) dead_letters: Arc<super::dead_letter_bound::DeadLetterBound>,
    pub(in crate::pipeline) validator: EventValidator,
    /// Realtime enrichment, asked about every valid event.
    pub(in crate::pipeline) enricher: Arc<dyn Enricher>,
    /// See [`PipelineSettings::archive`].
    pub(super) archive: Option<std::path::PathBuf>,
    pub(super) committed: Arc<Notify>,
    /// Whether each sink delivers (health, metrics).
    pub(super) sink_health: super::sinks::SinkHealth,
    /// Whether each source the daemon consumes itself (JetStream) consumes.
    pub(super) source_health: super::sinks::SinkHealth,
    /// Whether the daemon's upkeep of its state (the correlation index's retention)
    /// succeeds.
    pub(super) upkeep_health: super::sinks::SinkHealth,
    pub(super) jobs: Mutex<Option<mpsc::Sender<Job>>>,
    pub(super) committer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// Tunables of the pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineSettings {
    /// Ids remembered for deduplication (events).
    pub dedup_window: usize,
    /// The event log's disk quota: commits are refused (backpressure) beyond it, and an
    /// alert is raised at 80%. The log holds what the slowest sink has not delivered.
    pub backlog_quota_bytes: u64,
    /// Webhook deliveries kept per tenant while their plugin is down.
    pub inbox_max_entries: usize,
    /// Dead letters kept per tenant; the oldest make room beyond it.
    pub dead_letters_per_tenant: usize,
    /// The event log's segment size: the unit of pruning.
    pub segment_bytes: u64,
    /// The JSONL sink's file, when that sink runs: with its rotations, the events of
    /// record that the correlation index is rebuilt from.
    pub archive: Option<std::path::PathBuf>,
    /// A test hook: while this file exists, the committer takes no work, as a
    /// committer stuck on a hung disk would (the watchdog's test wedges the core
    /// with it). `None` in production.
    pub wedge_while: Option<std::path::PathBuf>,
}

impl Default for PipelineSettings {
    fn default() -> Self {
        Self {
            dedup_window: DEFAULT_DEDUP_WINDOW,
            backlog_quota_bytes: 4 * 1024 * 1024 * 1024,
            inbox_max_entries: 10_000,
            dead_letters_per_tenant: super::dead_letter_bound::DEFAULT_DEAD_LETTERS_PER_TENANT,
            segment_bytes: super::log::SEGMENT_BYTES,
            archive: None,
            wedge_while: None,
        }
    }
}

/// Why the pipeline could not open.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("cannot start the committer thread: {0}")]
    Thread(std::io::Error),
}

impl Pipeline {
    /// A pipeline with the default settings and no enrichment.
    pub fn open(store: Store) -> Result<Self, OpenError> {
        Self::open_with(store, PipelineSettings::default(), Arc::new(NoEnrichment))
    }

    /// Opens the event log under `<state-dir>/pipeline/log` (cutting what was written
    /// but not committed) and loads the ids of the latest commits. `enricher` sees
    /// every valid event before it is committed.
    pub fn open_with(
        store: Store,
        settings: PipelineSettings,
        enricher: Arc<dyn Enricher>,
    ) -> Result<Self, OpenError> {
        let log_dir = store.state_dir().join("pipeline").join("log");
        migrate_unlogged(&store, &log_dir, settings.segment_bytes)?;
        let last = match store.iter_rev(Table::Outbox).next() {
            Some(entry) => {
                let (key, value) = entry?;
                let seq = seq_of(&key).ok_or_else(|| corrupt(&key, "not a sequence"))?;
                let location =
                    Location::decode(&value).ok_or_else(|| corrupt(&key, "not a log location"))?;
                Some((seq, location))
            }
            None => None,
        };
        let first = store
            .range_from(Table::Outbox, &[], 1)?
            .first()
            .and_then(|(key, _)| seq_of(key));
        let log = Arc::new(EventLog::open(
            &log_dir,
            settings.segment_bytes,
            first,
            last,
        )?);
        let mut window = DedupWindow::new(settings.dedup_window);
        for entry in store.iter_rev(Table::Events) {
            if !window.wants_more() {
                break;
            }
            let (key, digests) = entry?;
            let seq = seq_of(&key).ok_or_else(|| corrupt(&key, "not a sequence"))?;
            window.push_older(seq, dedup::decode(&digests));
        }
        let committed = Arc::new(Notify::new());
        let (jobs, receiver) = mpsc::channel();
        let dead_letters = Arc::new(super::dead_letter_bound::DeadLetterBound::open(
            &store,
            settings.dead_letters_per_tenant,
        )?);
        let committer = Committer {
            dead_letters: dead_letters.clone(),
            store: store.clone(),
            log: log.clone(),
            next_seq: AtomicU64::new(last.map_or(0, |(seq, _)| seq) + 1),
            committed: committed.clone(),
            window: Mutex::new(window),
            incarnations: super::incarnation::Incarnations::new(store.clone()),
            quota: settings.backlog_quota_bytes,
            alerted: std::sync::atomic::AtomicBool::new(false),
            enricher: enricher.clone(),
            wedge_while: settings.wedge_while.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("pipeline-commit".into())
            .spawn(move || committer.run(&receiver))
            .map_err(OpenError::Thread)?;
        let pruned = store
            .range_from(Table::Outbox, &[], 1)?
            .first()
            .and_then(|(key, _)| seq_of(key))
            .map_or(0, |first| first - 1);
        Ok(Self {
            inbox: Inbox::open(store.clone(), settings.inbox_max_entries)?,
            mappings: std::sync::RwLock::default(),
            store,
            log,
            validator: EventValidator::new(),
            dead_letters,
            enricher,
            archive: settings.archive.clone(),
            committed,
            sink_health: super::sinks::SinkHealth::default(),
            source_health: super::sinks::SinkHealth::default(),
            upkeep_health: super::sinks::SinkHealth::default(),
            jobs: Mutex::new(Some(jobs)),
            committer: Mutex::new(Some(handle)),
            sinks: Mutex::new(SinkOffsets {
                offsets: std::collections::BTreeMap::new(),
                pruned,
            }),
        })
    }

    /// Woken after every commit (for the sinks).
    pub fn committed(&self) -> Arc<Notify> {
        self.committed.clone()
    }

    /// Validates events of `tenant`/`integration` (CPU only; any thread).
    pub fn prepare(&self, tenant: &str, integration: &str, events: &[String]) -> Submission {
        let mut submission = Submission {
            tenant: tenant.to_owned(),
            integration: integration.to_owned(),
            accepted: Vec::with_capacity(events.len()),
            ..Submission::default()
        };
        let mappings = self.mappings_of(tenant, integration);
        let correlate = |value: &serde_json::Value, time_ms: u64| {
            self.enricher.correlate(tenant, value, time_ms)
        };
        for raw in events {
            let checked = match &mappings {
                None => self.validator.validate(raw, tenant, integration, correlate),
                Some(mappings) => self.map_and_validate(mappings, raw, tenant, integration),
            };
            match checked {
                Ok(event) => accept(&mut submission, event),
                Err(rejection) => submission.dead.push(DeadLetter::new(
                    tenant,
                    integration,
                    rejection.stage,
                    rejection.reasons.join("; "),
                    raw,
                )),
            }
        }
        submission
    }

    /// Sets the field mappings the pipeline applies to an integration's events.
    pub fn set_mappings(&self, instance: &InstanceKey, mappings: Arc<plugin_kit::FieldMappings>) {
        let mut all = self
            .mappings
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = instance.clone();
        if mappings.is_empty() {
            all.remove(&key);
        } else {
            all.insert(key, mappings);
        }
    }

    /// Drops the field mappings of every integration of `tenant`.
    pub(super) fn forget_mappings(&self, tenant: &str) {
        self.mappings
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|key, _| !key.is_of(tenant));
    }

    fn mappings_of(
        &self,
        tenant: &str,
        integration: &str,
    ) -> Option<Arc<plugin_kit::FieldMappings>> {
        self.mappings
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&InstanceKey::new(tenant, integration))
            .cloned()
    }

    fn map_and_validate(
        &self,
        mappings: &plugin_kit::FieldMappings,
        raw: &str,
        tenant: &str,
        integration: &str,
    ) -> Result<Validated, super::Rejection> {
        let mut value = super::validate::parse(raw)?;
        mappings.apply(&mut value).map_err(|e| super::Rejection {
            stage: "mapping",
            reasons: vec![e.to_string()],
        })?;
        self.validator.check(
            &value,
            tenant,
            integration,
            || value.to_string(),
            |value, time_ms| self.enricher.correlate(tenant, value, time_ms),
        )
    }

    /// The JSONL sink's file, when that sink runs.
    pub fn archive(&self) -> Option<&std::path::Path> {
        self.archive.as_deref()
    }

    /// The webhook inbox.
    /// Whether each sink delivers.
    pub fn sink_health(&self) -> &super::sinks::SinkHealth {
        &self.sink_health
    }

    /// Whether each JetStream source consumes.
    pub fn source_health(&self) -> &super::sinks::SinkHealth {
        &self.source_health
    }

    /// Whether each upkeep task of the state (the correlation index's retention)
    /// succeeds: health alerts on one failing for minutes.
    pub fn upkeep_health(&self) -> &super::sinks::SinkHealth {
        &self.upkeep_health
    }

    pub fn inbox(&self) -> &Inbox {
        &self.inbox
    }

    /// Hands a submission to the committer; the answer comes once it is durable.
    pub fn submit(
        &self,
        submission: Submission,
    ) -> oneshot::Receiver<Result<BatchOutcome, CommitError>> {
        let (reply, answer) = oneshot::channel();
        let jobs = self
            .jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(jobs) = jobs.as_ref() {
            // A send fails only when the committer is gone; the dropped reply says so.
            let _ = jobs.send(Job { submission, reply });
        }
        answer
    }

    /// Answers once the committer has taken and answered an empty submission: proof
    /// that the thread every write goes through still takes work (the watchdog's
    /// probe). Writes nothing.
    pub async fn probe(&self) -> Result<(), CommitError> {
        self.commit(Submission {
            tenant: String::new(),
            integration: String::new(),
            cursor: None,
            accepted: Vec::new(),
            dead: Vec::new(),
            extra: crate::store::Batch::new(),
        })
        .await
        .map(drop)
    }

    /// Commits a submission, waiting for it (async callers).
    pub async fn commit(&self, submission: Submission) -> Result<BatchOutcome, CommitError> {
        self.submit(submission)
            .await
            .unwrap_or(Err(CommitError::Stopped))
    }

    /// Commits a submission, blocking the calling thread until it is durable.
    pub fn commit_blocking(&self, submission: Submission) -> Result<BatchOutcome, CommitError> {
        self.submit(submission)
            .blocking_recv()
            .unwrap_or(Err(CommitError::Stopped))
    }

    /// Validates and commits one batch with its cursor, blocking the calling thread
    /// (not for async contexts; `prepare` and `commit` are).
    pub fn commit_batch(
        &self,
        tenant: &str,
        integration: &str,
        events: &[String],
        cursor: &str,
    ) -> Result<BatchOutcome, CommitError> {
        let mut submission = self.prepare(tenant, integration, events);
        submission.cursor = Some(cursor.to_owned());
        self.commit_blocking(submission)
    }

    /// The store, for the sinks' offsets.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The event log's segments, opened for a backup and cut at the last committed
    /// record: call while the store is frozen ([`Store::freeze`]) so they hold exactly
    /// what the frozen index points to (an append whose index entry is still waiting
    /// is left out, as a restart would cut it).
    pub fn log_segments_for_backup(&self) -> Result<Vec<super::log::SegmentCopy>, OpenError> {
        let last = match self.store.iter_rev(Table::Outbox).next() {
            Some(entry) => {
                let (key, value) = entry?;
                Some(Location::decode(&value).ok_or_else(|| corrupt(&key, "not a log location"))?)
            }
            None => None,
        };
        let mut segments = self.log.segments_for_backup()?;
        let Some(last) = last else {
            return Ok(Vec::new());
        };
        segments.retain(|segment| segment.first <= last.segment);
        if let Some(active) = segments.iter_mut().find(|s| s.first == last.segment) {
            active.len = active.len.min(last.offset + u64::from(last.len));
        }
        Ok(segments)
    }
}

impl Drop for Pipeline {
    /// Stops the committer after what was submitted, so the store closes cleanly.
    fn drop(&mut self) {
        self.jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let handle = self
            .committer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }
}
