//! Committing events: each submission's valid events (deduplicated by id), its dead
//! letters, its cursor and any writes that must land with them are written in one
//! transaction and flushed before the submitter hears back. Submissions that arrive
//! while a flush is under way are committed together in the next one (group commit), so
//! a flush's cost is shared by every plugin and webhook waiting on it.
//!
//! Validation is the caller's work (`prepare`), on its own thread; the committer only
//! checks ids, assigns the outbox sequence and writes.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, oneshot};

use super::dedup::{self, DedupWindow};
use super::enricher::{Enricher, NoEnrichment, Superseded};
use super::log::{EventLog, Location, LogError};
use super::sources::Inbox;
use super::validate::{EventValidator, Validated};
use crate::store::{Batch, Store, StoreError, Table};
use plugin_kit::clock::now_ms;

/// Events committed together at most (more wait for the next flush).
const GROUP_EVENTS: usize = 50_000;

/// The integration name dead letters of platform events are filed under when the event
/// names none.
pub const PLATFORM_INTEGRATION: &str = "platform";

/// Ids remembered for deduplication by default.
pub const DEFAULT_DEDUP_WINDOW: usize = 1_000_000;

/// What became of a submission.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    pub stored: usize,
    pub duplicates: usize,
    pub dead_lettered: usize,
}

/// Why the outbox could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Log(#[from] LogError),
}

/// Why a submission was not committed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommitError {
    #[error("cannot commit events: {0}")]
    Store(String),
    #[error("the pipeline is shutting down")]
    Stopped,
    #[error(
        "the event log is at its disk quota ({quota} bytes): a sink is not keeping up; nothing was stored"
    )]
    BacklogFull { quota: u64 },
}

/// An event that could not be accepted, with why and what it was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub id: String,
    pub tenant: String,
    pub integration: String,
    /// `size`, `parse`, `schema`, `binding`, `mapping`, `webhook`, `sink`.
    pub stage: String,
    pub reason: String,
    pub time_ms: u64,
    /// The payload as received (cut at 1 MiB).
    pub payload: String,
}

impl DeadLetter {
    /// A new dead letter, with an id that sorts by time, and by creation within one
    /// millisecond (a process-wide counter), so "the oldest" is exact.
    pub fn new(
        tenant: &str,
        integration: &str,
        stage: &str,
        reason: String,
        payload: &str,
    ) -> Self {
        static CREATED: AtomicU64 = AtomicU64::new(0);
        let now = now_ms();
        let order = CREATED.fetch_add(1, Ordering::Relaxed) & 0xff_ffff;
        Self {
            id: format!(
                "{now:013}-{order:06x}{}",
                hex::encode(rand::random::<[u8; 3]>())
            ),
            tenant: tenant.to_owned(),
            integration: integration.to_owned(),
            stage: stage.to_owned(),
            reason,
            time_ms: now,
            payload: cut(payload, super::MAX_EVENT_BYTES).to_owned(),
        }
    }
}

/// `text` cut to at most `max` bytes on a character boundary.
fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

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

/// One unit of work for the committer.
#[derive(Debug, Default)]
pub struct Submission {
    pub tenant: String,
    pub integration: String,
    /// The integration's new collect cursor, if this submission moves it.
    pub cursor: Option<String>,
    pub accepted: Vec<Validated>,
    pub dead: Vec<DeadLetter>,
    /// Other writes that must land with these events (an inbox entry removed, say).
    pub extra: Batch,
}

struct Job {
    submission: Submission,
    reply: oneshot::Sender<Result<BatchOutcome, CommitError>>,
}

/// The pipeline's durable state, its committer and the sinks' wake-up.
#[derive(Debug)]
pub struct Pipeline {
    store: Store,
    inbox: Inbox,
    /// Each integration's field mappings, set when its instance is configured.
    mappings: std::sync::RwLock<
        std::collections::HashMap<(String, String), Arc<plugin_kit::FieldMappings>>,
    >,
    log: Arc<EventLog>,
    sinks: Mutex<SinkOffsets>,
    dead_letters: Arc<super::dead_letter_bound::DeadLetterBound>,
    pub(in crate::pipeline) validator: EventValidator,
    /// Realtime enrichment, asked about every valid event.
    pub(in crate::pipeline) enricher: Arc<dyn Enricher>,
    /// See [`PipelineSettings::archive`].
    archive: Option<std::path::PathBuf>,
    committed: Arc<Notify>,
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    committer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// The registered sinks' offsets, and how far the log has been pruned.
#[derive(Debug)]
struct SinkOffsets {
    offsets: std::collections::BTreeMap<String, u64>,
    pruned: u64,
}

/// Development builds before the event log kept each event in the outbox itself and
/// indexed events one key each (`tenant\0id` → sequence): moves such events into the
/// log (one record each) and their ids into per-commit digest lists.
fn migrate_unlogged(
    store: &Store,
    log_dir: &std::path::Path,
    segment_bytes: u64,
) -> Result<(), OpenError> {
    let first = store.range_from(Table::Outbox, &[], 1)?;
    let Some((_, value)) = first.first() else {
        return Ok(());
    };
    if Location::decode(value).is_some() && value.len() == 20 {
        return Ok(());
    }
    let log = EventLog::open(log_dir, segment_bytes, None, None)?;
    let mut batch = Batch::new();
    // The old per-event index entries go; each record's digests come from its events,
    // which name their source.
    for (key, _) in store.scan(Table::Events, &[])? {
        if key.contains(&0) {
            batch = batch.delete(Table::Events, key);
        }
    }
    #[derive(serde::Deserialize)]
    struct Source<'a> {
        #[serde(borrow)]
        tenant: std::borrow::Cow<'a, str>,
        #[serde(borrow)]
        integration: std::borrow::Cow<'a, str>,
        #[serde(borrow)]
        id: std::borrow::Cow<'a, str>,
    }
    let mut moved = 0usize;
    for (key, value) in store.scan(Table::Outbox, &[])? {
        let seq = seq_of(&key).ok_or_else(|| corrupt(&key, "not a sequence"))?;
        let digests: Vec<u128> = value
            .split(|b| *b == b'\n')
            .filter_map(|line| serde_json::from_slice::<Source>(line).ok())
            .map(|event| dedup::id_digest(&event.tenant, 0, &event.integration, &event.id))
            .collect();
        let mut record = value;
        record.push(b'\n');
        let location = log.append(seq, &record)?;
        batch = batch.put(Table::Outbox, key.clone(), location.encode());
        if !digests.is_empty() {
            batch = batch.put(Table::Events, key, dedup::encode(&digests));
        }
        moved += 1;
    }
    store.apply(&batch)?;
    tracing::info!(events = moved, "moved outbox events into the event log");
    Ok(())
}

fn seq_of(key: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(key).ok().map(u64::from_be_bytes)
}

fn corrupt(key: &[u8], reason: &str) -> StoreError {
    StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: reason.to_owned(),
    }
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").finish_non_exhaustive()
    }
}

fn cursor_key(tenant: &str, integration: &str) -> Vec<u8> {
    format!("{tenant}\0{integration}").into_bytes()
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

    /// The last committed cursor of an integration ("" before the first batch).
    pub fn cursor(&self, tenant: &str, integration: &str) -> Result<String, StoreError> {
        Ok(self
            .store
            .get(Table::Cursors, &cursor_key(tenant, integration))?
            .map(|raw| String::from_utf8_lossy(&raw).into_owned())
            .unwrap_or_default())
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
    pub fn set_mappings(
        &self,
        tenant: &str,
        integration: &str,
        mappings: plugin_kit::FieldMappings,
    ) {
        let mut all = self
            .mappings
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = (tenant.to_owned(), integration.to_owned());
        if mappings.is_empty() {
            all.remove(&key);
        } else {
            all.insert(key, Arc::new(mappings));
        }
    }

    /// Drops the field mappings of every integration of `tenant`.
    pub(super) fn forget_mappings(&self, tenant: &str) {
        self.mappings
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|(owner, _), _| owner != tenant);
    }

    fn mappings_of(
        &self,
        tenant: &str,
        integration: &str,
    ) -> Option<Arc<plugin_kit::FieldMappings>> {
        self.mappings
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&(tenant.to_owned(), integration.to_owned()))
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

    /// The enrichment every valid event goes through.
    pub(crate) fn enricher(&self) -> &dyn Enricher {
        self.enricher.as_ref()
    }

    /// The webhook inbox.
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

    /// Up to `limit` commits after `offset`: (sequence, its newline-terminated event
    /// lines).
    pub fn outbox_after(
        &self,
        offset: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, ReadError> {
        let mut records = Vec::new();
        for (key, value) in
            self.store
                .range_from(Table::Outbox, &(offset + 1).to_be_bytes(), limit)?
        {
            let seq = seq_of(&key).ok_or_else(|| corrupt(&key, "not a sequence"))?;
            let location =
                Location::decode(&value).ok_or_else(|| corrupt(&key, "not a log location"))?;
            records.push((seq, self.log.read(location)?));
        }
        Ok(records)
    }

    /// Where sink `name` is (0 before its first delivery); registers it, so the log
    /// keeps what it has not delivered.
    pub fn sink_offset(&self, name: &str) -> Result<u64, StoreError> {
        let offset = self
            .store
            .get(Table::SinkOffsets, name.as_bytes())?
            .and_then(|raw| seq_of(&raw))
            .unwrap_or(0);
        let mut sinks = self
            .sinks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        sinks.offsets.insert(name.to_owned(), offset);
        Ok(offset)
    }

    /// Records that sink `name` delivered everything through `offset`, and prunes what
    /// every registered sink has delivered: whole segments of the log, their index
    /// entries first (so the index never points at a deleted file). What stays in the
    /// active segment remains readable (`events tail`).
    pub fn advance_sink(&self, name: &str, offset: u64) -> Result<(), ReadError> {
        let mut sinks = self
            .sinks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        sinks.offsets.insert(name.to_owned(), offset);
        let delivered = sinks.offsets.values().copied().min().unwrap_or(0);
        let mut batch = Batch::new().put(
            Table::SinkOffsets,
            name.as_bytes().to_vec(),
            offset.to_be_bytes().to_vec(),
        );
        let prunable = self
            .log
            .prunable_through(delivered)
            .filter(|through| *through > sinks.pruned);
        if let Some(through) = prunable {
            for seq in sinks.pruned + 1..=through {
                batch = batch.delete(Table::Outbox, seq.to_be_bytes().to_vec());
            }
        }
        self.store.apply(&batch)?;
        if let Some(through) = prunable {
            sinks.pruned = through;
            self.log.prune_through(through)?;
        }
        Ok(())
    }

    /// The event log's size on disk.
    pub fn log_bytes(&self) -> u64 {
        self.log.bytes()
    }

    /// A tenant's dead letters, oldest first.
    pub fn dead_letters(&self, tenant: &str) -> Result<Vec<DeadLetter>, StoreError> {
        self.store
            .scan(Table::DeadLetters, format!("{tenant}\0").as_bytes())?
            .into_iter()
            .map(|(k, v)| {
                serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt {
                    key: String::from_utf8_lossy(&k).into_owned(),
                    reason: e.to_string(),
                })
            })
            .collect()
    }

    /// Dead letters dropped per tenant because its queue was full, for `/metrics`.
    pub fn dead_letter_evictions(
        &self,
    ) -> prometheus_client::metrics::family::Family<
        crate::health::TenantLabel,
        prometheus_client::metrics::counter::Counter,
    > {
        self.dead_letters.evicted.clone()
    }

    /// Counts a tenant's dead letters again after a change outside the committer.
    pub(super) fn recount_dead_letters(&self, tenant: &str) -> Result<(), StoreError> {
        self.dead_letters.recount(&self.store, tenant)
    }

    /// The store, for the sinks' offsets.
    pub fn store(&self) -> &Store {
        &self.store
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

/// The revision of the failure stored under `key` in the correlation index, if any (a
/// record that does not say is revision 1; one that cannot be read is taken as absent).
fn stored_revision(store: &Store, key: &[u8]) -> Result<Option<u64>, CommitError> {
    #[derive(Deserialize)]
    struct RevisionOf {
        revision: Option<u64>,
    }
    let raw = store
        .get(Table::Failures, key)
        .map_err(|e| CommitError::Store(e.to_string()))?;
    Ok(raw
        .and_then(|raw| serde_json::from_slice::<RevisionOf>(&raw).ok())
        .map(|of| of.revision.unwrap_or(1)))
}

/// The single writer of events.
struct Committer {
    store: Store,
    log: Arc<EventLog>,
    quota: u64,
    alerted: std::sync::atomic::AtomicBool,
    next_seq: AtomicU64,
    committed: Arc<Notify>,
    window: Mutex<DedupWindow>,
    incarnations: super::incarnation::Incarnations,
    dead_letters: Arc<super::dead_letter_bound::DeadLetterBound>,
    /// Where a revision that lost a race goes to be redone (see `commit_group`).
    pub(in crate::pipeline) enricher: Arc<dyn Enricher>,
}

impl Committer {
    /// Refuses a record that would take the log past its quota; alerts at 80%.
    fn check_quota(&self, adding: u64) -> Result<(), CommitError> {
        let after = self.log.bytes() + adding;
        let near = after >= self.quota / 5 * 4;
        if near != self.alerted.swap(near, Ordering::Relaxed) {
            if near {
                tracing::error!(
                    alert = true,
                    log_bytes = after,
                    quota = self.quota,
                    "the event log is above 80% of its disk quota: a sink is not keeping up"
                );
            } else {
                tracing::info!(
                    log_bytes = after,
                    quota = self.quota,
                    "the event log is back below 80% of its disk quota"
                );
            }
        }
        if after > self.quota {
            return Err(CommitError::BacklogFull { quota: self.quota });
        }
        Ok(())
    }

    fn run(&self, jobs: &mpsc::Receiver<Job>) {
        while let Ok(first) = jobs.recv() {
            let mut group = vec![first];
            let mut events = group[0].submission.accepted.len();
            while events < GROUP_EVENTS {
                match jobs.try_recv() {
                    Ok(job) => {
                        events += job.submission.accepted.len();
                        group.push(job);
                    }
                    Err(_) => break,
                }
            }
            match self.commit_group(&group) {
                Ok(outcomes) => {
                    self.committed.notify_waiters();
                    for (job, outcome) in group.into_iter().zip(outcomes) {
                        let _ = job.reply.send(Ok(outcome));
                    }
                }
                Err(err) => {
                    if !matches!(err, CommitError::BacklogFull { .. }) {
                        tracing::error!(error = %err, "cannot commit events");
                    }
                    for job in group {
                        let _ = job.reply.send(Err(err.clone()));
                    }
                }
            }
        }
    }

    fn commit_group(&self, group: &[Job]) -> Result<Vec<BatchOutcome>, CommitError> {
        let seq = self.next_seq.load(Ordering::SeqCst);
        let mut window = self
            .window
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut batch = Batch::new();
        let mut lines = Vec::new();
        let mut digests = Vec::new();
        let mut seen = HashSet::new();
        // Revisions of failures taken in this group: failure key → revision.
        let mut revised: HashMap<Vec<u8>, u64> = HashMap::new();
        let mut superseded = Vec::new();
        let mut letters_plan = super::dead_letter_bound::GroupPlan::default();
        let mut outcomes = Vec::with_capacity(group.len());
        for job in group {
            let submission = &job.submission;
            let incarnation = self.incarnations.of(&submission.tenant);
            let mut outcome = BatchOutcome::default();
            for event in &submission.accepted {
                // Revisions are numbered from the stored failure by whoever makes one (a
                // late deployment, the completer, a batch run), each on its own: two made
                // from the same stored revision take the same number, and the later one
                // would be lost with what it added. It is not stored; the completer
                // enriches the failure again from what is stored now.
                let revises = event.revision.zip(event.revised_failure());
                if let Some((revision, key)) = revises {
                    let current = match revised.get(key) {
                        Some(taken) => Some(*taken),
                        None => stored_revision(&self.store, key)?,
                    };
                    if let Some(current) = current.filter(|current| *current >= revision) {
                        outcome.duplicates += 1;
                        superseded.push(Superseded {
                            tenant: submission.tenant.clone(),
                            key: key.to_vec(),
                            revision: current,
                            time_ms: event.time_ms,
                        });
                        continue;
                    }
                }
                let digest = dedup::id_digest(
                    &submission.tenant,
                    incarnation,
                    &submission.integration,
                    &event.dedup_id(),
                );
                if window.contains(digest) || !seen.insert(digest) {
                    outcome.duplicates += 1;
                    continue;
                }
                if let Some((revision, key)) = revises {
                    revised.insert(key.to_vec(), revision);
                }
                for (table, key, value) in &event.writes {
                    batch = batch.put(*table, key.clone(), value.clone());
                }
                lines.extend_from_slice(event.json.as_bytes());
                lines.push(b'\n');
                digests.push(digest);
                outcome.stored += 1;
            }
            let (room, not_kept) = self
                .dead_letters
                .make_room(
                    &self.store,
                    &submission.tenant,
                    submission.dead.len(),
                    &mut letters_plan,
                )
                .map_err(|e| CommitError::Store(e.to_string()))?;
            batch.extend(room);
            // Invalid all the same: reported as dead-lettered, counted as dropped.
            outcome.dead_lettered += not_kept;
            for letter in submission.dead.iter().skip(not_kept) {
                let value = serde_json::to_vec(letter)
                    .map_err(|e| CommitError::Store(format!("dead letter {}: {e}", letter.id)))?;
                batch = batch.put(
                    Table::DeadLetters,
                    format!("{}\0{}", submission.tenant, letter.id),
                    value,
                );
                outcome.dead_lettered += 1;
            }
            if let Some(cursor) = &submission.cursor {
                batch = batch.put(
                    Table::Cursors,
                    cursor_key(&submission.tenant, &submission.integration),
                    cursor.as_bytes().to_vec(),
                );
            }
            batch.extend(submission.extra.clone());
            outcomes.push(outcome);
        }
        let stored = !lines.is_empty();
        let mut location = None;
        if stored {
            self.check_quota(lines.len() as u64)?;
            let appended = self
                .log
                .append(seq, &lines)
                .map_err(|e| CommitError::Store(e.to_string()))?;
            let key = seq.to_be_bytes().to_vec();
            batch = batch
                .put(Table::Events, key.clone(), dedup::encode(&digests))
                .put(Table::Outbox, key, appended.encode());
            location = Some(appended);
        }
        if stored {
            // Ids that leave the window leave the store with this commit.
            for forgotten in window.push(seq, digests) {
                batch = batch.delete(Table::Events, forgotten.to_be_bytes().to_vec());
            }
        }
        if !batch.is_empty()
            && let Err(err) = self.store.apply(&batch)
        {
            if let Some(location) = location {
                if let Err(undo) = self.log.undo(location) {
                    tracing::error!(error = %undo, "cannot take back an uncommitted log record; it is cut at the next start");
                }
                // The window remembered ids that were not stored.
                window.forget_last();
            }
            return Err(CommitError::Store(err.to_string()));
        }
        if stored {
            self.next_seq.store(seq + 1, Ordering::SeqCst);
        }
        self.dead_letters.committed(letters_plan);
        for revision in superseded {
            self.enricher.superseded(revision);
        }
        Ok(outcomes)
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::event;
    use super::*;

    #[test]
    fn valid_events_flow_invalid_ones_are_dead_lettered_and_repeats_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pipeline = Pipeline::open(Store::open(dir.path()).expect("store")).expect("pipeline");
        let batch = vec![
            event(1),
            "{\"broken\": true}".to_owned(),
            event(2),
            event(2),
        ];
        let outcome = pipeline
            .commit_batch("acme", "gh", &batch, "2")
            .expect("commit");
        assert_eq!(
            outcome,
            BatchOutcome {
                stored: 2,
                duplicates: 1,
                dead_lettered: 1
            }
        );
        assert_eq!(pipeline.cursor("acme", "gh").expect("cursor"), "2");
        let again = pipeline
            .commit_batch("acme", "gh", &[event(1), event(3)], "3")
            .expect("commit");
        assert_eq!(
            again,
            BatchOutcome {
                stored: 1,
                duplicates: 1,
                dead_lettered: 0
            }
        );
        let outbox = pipeline.outbox_after(0, 10).expect("outbox");
        assert_eq!(
            outbox.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            vec![1, 2],
            "one outbox entry per commit"
        );
        let lines: usize = outbox
            .iter()
            .map(|(_, blob)| blob.iter().filter(|b| **b == b'\n').count())
            .sum();
        assert_eq!(lines, 3);
        let letters = pipeline.dead_letters("acme").expect("dlq");
        assert_eq!(letters.len(), 1);
        assert_eq!(letters[0].stage, "schema");
        assert!(letters[0].payload.contains("broken"));
        assert!(pipeline.dead_letters("globex").expect("dlq").is_empty());
        // Reopened, sequence numbers continue.
        drop(pipeline);
        let pipeline = Pipeline::open(Store::open(dir.path()).expect("store")).expect("pipeline");
        pipeline
            .commit_batch("acme", "gh", &[event(4)], "4")
            .expect("commit");
        assert_eq!(pipeline.outbox_after(2, 10).expect("outbox")[0].0, 3);
    }
}

#[cfg(test)]
mod log_tests {
    use super::tests_support::event;
    use super::*;

    fn lines(pipeline: &Pipeline, after: u64) -> usize {
        pipeline
            .outbox_after(after, 1000)
            .expect("outbox")
            .iter()
            .map(|(_, record)| record.iter().filter(|b| **b == b'\n').count())
            .sum()
    }

    #[test]
    fn delivered_commits_are_pruned_and_the_sequence_carries_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        let small_segments = PipelineSettings {
            segment_bytes: 1,
            ..PipelineSettings::default()
        };
        let open = || {
            Pipeline::open_with(
                Store::open(dir.path()).expect("store"),
                small_segments.clone(),
                Arc::new(super::NoEnrichment),
            )
            .expect("pipeline")
        };
        let pipeline = open();
        for n in 1..=3 {
            pipeline
                .commit_batch("acme", "gh", &[event(n)], &n.to_string())
                .expect("commit");
        }
        let segments = || {
            std::fs::read_dir(dir.path().join("pipeline/log"))
                .expect("log")
                .count()
        };
        assert_eq!(segments(), 3, "one commit a segment");
        assert_eq!(pipeline.sink_offset("a").expect("offset"), 0);
        assert_eq!(pipeline.sink_offset("b").expect("offset"), 0);
        pipeline.advance_sink("a", 3).expect("advance");
        assert_eq!(lines(&pipeline, 0), 3, "sink b has delivered nothing yet");
        pipeline.advance_sink("b", 2).expect("advance");
        assert_eq!(
            pipeline
                .outbox_after(0, 10)
                .expect("outbox")
                .iter()
                .map(|(seq, _)| *seq)
                .collect::<Vec<_>>(),
            vec![3],
            "what both delivered is gone, the active segment stays"
        );
        assert_eq!(segments(), 1);
        drop(pipeline);
        let pipeline = open();
        assert_eq!(pipeline.sink_offset("b").expect("offset"), 2);
        pipeline
            .commit_batch("acme", "gh", &[event(3), event(4)], "4")
            .expect("commit");
        assert_eq!(pipeline.outbox_after(3, 10).expect("outbox")[0].0, 4);
        assert_eq!(
            lines(&pipeline, 3),
            1,
            "event 3 is still known after a restart"
        );
    }

    #[test]
    fn field_mappings_apply_before_validation_and_their_errors_are_dead_lettered() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pipeline = Pipeline::open(Store::open(dir.path()).expect("store")).expect("pipeline");
        let compile = |rules: serde_json::Value| {
            plugin_kit::FieldMappings::compile(Some(&rules)).expect("rules")
        };
        pipeline.set_mappings(
            "acme",
            "gh",
            compile(serde_json::json!([
                {"set": "service.name", "template": "svc-{/n}"},
                {"set": "x", "from": "/absent", "required": true}
            ])),
        );
        let outcome = pipeline
            .commit_batch("acme", "gh", &[event(1)], "1")
            .expect("commit");
        assert_eq!(outcome.dead_lettered, 1);
        let letter = &pipeline.dead_letters("acme").expect("dlq")[0];
        assert_eq!(letter.stage, "mapping");
        assert!(
            letter
                .reason
                .contains("mapping rule 1 (set x from /absent) on event `ev_"),
            "{}",
            letter.reason
        );

        // The mapping fixed, the dead letter replays into a mapped event.
        pipeline.set_mappings(
            "acme",
            "gh",
            compile(serde_json::json!([{"set": "service.name", "template": "svc-{/n}"}])),
        );
        let replayed = pipeline.replay_dead_letters("acme", &[]).expect("replay");
        assert_eq!(replayed.stored, 1);
        let record = &pipeline.outbox_after(0, 10).expect("outbox")[0].1;
        let stored: serde_json::Value =
            serde_json::from_slice(record.strip_suffix(b"\n").expect("a line")).expect("json");
        assert_eq!(stored["data"]["service.name"], "svc-1");
    }

    #[test]
    fn a_full_log_refuses_commits_and_keeps_what_it_has() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pipeline = Pipeline::open_with(
            Store::open(dir.path()).expect("store"),
            PipelineSettings {
                backlog_quota_bytes: 2000,
                ..PipelineSettings::default()
            },
            Arc::new(super::NoEnrichment),
        )
        .expect("pipeline");
        pipeline
            .commit_batch("acme", "gh", &[event(1)], "1")
            .expect("commit");
        let refused = pipeline
            .commit_batch("acme", "gh", &(2..10).map(event).collect::<Vec<_>>(), "9")
            .expect_err("over quota");
        assert!(matches!(refused, CommitError::BacklogFull { quota: 2000 }));
        assert_eq!(pipeline.cursor("acme", "gh").expect("cursor"), "1");
        assert_eq!(lines(&pipeline, 0), 1);
    }

    #[test]
    fn a_platform_event_is_the_platform_integrations_and_never_suppresses_another_sources() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pipeline = Pipeline::open(Store::open(dir.path()).expect("store")).expect("pipeline");
        let of = super::tests_support::event_of;
        // A forged event naming the plugin's integration is refused as a platform event.
        let forged: serde_json::Value = serde_json::from_str(&of("gh", 1)).expect("json");
        let submission = pipeline.prepare_platform("acme", &[forged]);
        assert!(submission.accepted.is_empty());
        assert_eq!(submission.dead.len(), 1);
        assert_eq!(submission.dead[0].integration, PLATFORM_INTEGRATION);
        // One posted as the platform's, first, with the very id the plugin's will have.
        let posted: serde_json::Value =
            serde_json::from_str(&of(PLATFORM_INTEGRATION, 1)).expect("json");
        let first = pipeline
            .commit_blocking(pipeline.prepare_platform("acme", &[posted]))
            .expect("commit");
        assert_eq!(first.stored, 1);
        // The plugin's real event is stored all the same: another source, not a repeat.
        let real = pipeline
            .commit_batch("acme", "gh", &[of("gh", 1)], "1")
            .expect("commit");
        assert_eq!((real.stored, real.duplicates), (1, 0));
        let again = pipeline
            .commit_batch("acme", "gh", &[of("gh", 1)], "1")
            .expect("commit");
        assert_eq!(again.duplicates, 1, "a real repeat is still one");
    }

    #[test]
    fn outbox_entries_of_the_format_before_the_log_are_moved_into_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let old = event(1);
        let id = serde_json::from_str::<serde_json::Value>(&old).expect("json")["id"]
            .as_str()
            .expect("id")
            .to_owned();
        store
            .apply(
                &Batch::new()
                    .put(Table::Outbox, 1u64.to_be_bytes().to_vec(), old.clone())
                    .put(
                        Table::Events,
                        format!("acme\0{id}").into_bytes(),
                        1u64.to_be_bytes().to_vec(),
                    ),
            )
            .expect("old format");
        let pipeline = Pipeline::open(store).expect("migrated");
        let records = pipeline.outbox_after(0, 10).expect("outbox");
        assert_eq!(records, vec![(1, format!("{old}\n").into_bytes())]);
        let again = pipeline
            .commit_batch("acme", "gh", &[event(1), event(2)], "2")
            .expect("commit");
        assert_eq!((again.stored, again.duplicates), (1, 1));
    }
}

#[cfg(test)]
pub(super) mod tests_support {
    use plugin_kit::{Category, EventBuilder, MapContext};

    pub fn event(n: u32) -> String {
        event_of("gh", n)
    }

    /// Event `n` as `integration` of `acme` sends it (the same id whatever the source).
    pub fn event_of(integration: &str, n: u32) -> String {
        let context = MapContext {
            tenant: "acme".into(),
            integration: integration.into(),
        };
        let event = EventBuilder::new(
            "com.betalogs.system.metric",
            Category::System,
            "https://example.com",
            format!("m-{n}"),
            "2026-11-25T10:00:00Z",
        )
        .original(serde_json::json!({"n": n}))
        .build(&context);
        serde_json::to_string(&event).expect("json")
    }
}
