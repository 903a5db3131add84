//! The only module that touches sled. Each component owns named trees and reaches them
//! through a typed API here. Every change is committed in one transaction together with
//! its audit record (so a change without its record cannot happen: fail closed), and
//! flushed before the caller hears of it.

mod anchor;
mod audit;
mod migrations;
mod snapshot;
mod trust;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

pub use anchor::AuditAnchor;
pub use audit::{AuditDraft, AuditRecord, ChainError};
use audit::{HEAD_KEY, Head};
pub use snapshot::{Frozen, ImportError, Importer, import};
pub use trust::{TrustPin, TrustTable};

/// The trees that hold state, each owned by one component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    /// Registry: trusted plugin checksums.
    Trust,
    /// Tenants: one record per tenant.
    Tenants,
    /// Tenants: admin and ingest tokens (hashes only).
    Tokens,
    /// Credentials: ciphertexts and metadata.
    Credentials,
    /// Credentials: each tenant's age identity, wrapped by the master key.
    TenantKeys,
    /// Tenants: per-tenant feature flag overrides.
    Flags,
    /// Integrations: configured plugin instances per tenant, with their versions.
    Integrations,
    /// Pipeline: per outbox entry, the digests of its events' ids (the deduplication
    /// window is rebuilt from the latest).
    Events,
    /// Pipeline: each integration's last committed `Collect` cursor.
    Cursors,
    /// Pipeline: events in commit order, for the sinks: one entry per commit, its
    /// events as newline-terminated JSON lines.
    Outbox,
    /// Pipeline: each sink's delivered position in the outbox.
    SinkOffsets,
    /// Pipeline: dead letters with their reason.
    DeadLetters,
    /// Pipeline: webhook deliveries received while their plugin was down.
    Inbox,
    /// Correlation: delivery events (deployments, releases, merges, pushes) by tenant,
    /// service, environment and time.
    Deliveries,
    /// Correlation: commits by tenant, repository and time.
    Commits,
    /// Correlation: merged pull requests by tenant, repository and merge commit.
    Pulls,
    /// Correlation: alarm state transitions by tenant, service, alarm and time.
    AlarmStates,
    /// Correlation: failures (system and security events at or above the enrichment
    /// severity) by tenant, service, environment and time, as last enriched.
    Failures,
    /// Correlation: when each incident or alarm was resolved, by tenant and correlation
    /// id (the time to restore of the failures that carry it).
    Resolutions,
    /// Correlation: batch enrichment progress, per job.
    EnrichJobs,
    /// Alerts: every alert by id, pending, firing or resolved.
    Alerts,
    /// Alerts: notifications not yet delivered, per channel in order.
    AlertOutbox,
    /// Alerts: tenants' notification channels.
    AlertChannels,
}

impl Table {
    const ALL: [Table; 23] = [
        Table::Trust,
        Table::Tenants,
        Table::Tokens,
        Table::Credentials,
        Table::TenantKeys,
        Table::Flags,
        Table::Integrations,
        Table::Events,
        Table::Cursors,
        Table::Outbox,
        Table::SinkOffsets,
        Table::DeadLetters,
        Table::Inbox,
        Table::Deliveries,
        Table::Commits,
        Table::Pulls,
        Table::AlarmStates,
        Table::Failures,
        Table::EnrichJobs,
        Table::Alerts,
        Table::AlertOutbox,
        Table::AlertChannels,
        Table::Resolutions,
    ];

    /// The sled tree this table is (also what metrics and backups call it).
    pub fn tree_name(self) -> &'static str {
        match self {
            Table::Trust => "registry.trust",
            Table::Tenants => "tenants",
            Table::Tokens => "tenants.tokens",
            Table::Credentials => "credentials",
            Table::TenantKeys => "credentials.tenant_keys",
            Table::Flags => "tenants.flags",
            Table::Integrations => "integrations",
            Table::Events => "pipeline.events",
            Table::Cursors => "pipeline.cursors",
            Table::Outbox => "pipeline.outbox",
            Table::SinkOffsets => "pipeline.sink_offsets",
            Table::DeadLetters => "pipeline.dlq",
            Table::Inbox => "pipeline.inbox",
            Table::Deliveries => "correlation.deliveries",
            Table::Commits => "correlation.commits",
            Table::Pulls => "correlation.pulls",
            Table::AlarmStates => "correlation.alarm_states",
            Table::Failures => "correlation.failures",
            Table::Resolutions => "correlation.resolutions",
            Table::EnrichJobs => "correlation.enrich_jobs",
            Table::Alerts => "alerts",
            Table::AlertOutbox => "alerts.outbox",
            Table::AlertChannels => "alerts.channels",
        }
    }

    /// Position in the transaction's tree list (after the two audit trees).
    fn slot(self) -> usize {
        2 + Table::ALL
            .iter()
            .position(|t| *t == self)
            .expect("every table is in ALL")
    }
}

/// A sled entry as the store hands it out.
fn owned(entry: sled::Result<(sled::IVec, sled::IVec)>) -> Result<Entry, StoreError> {
    entry
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .map_err(StoreError::from)
}

/// The largest page cache a store takes by default: enough for a correlation index of
/// a million deliveries to answer lookups within 100 us at p99 (`enrichment-bench
/// lookup`; with 8 MiB, p99 was 244 us).
pub const DEFAULT_CACHE_MAX_MB: u64 = 512;

/// The page cache a store takes by default: [`DEFAULT_CACHE_MAX_MB`], or an eighth of
/// the machine's memory when that is less (at least 8 MiB). sled fills its cache only
/// with pages it reads, so an idle daemon stays as small as with a small cache: the
/// size is a ceiling that a large index grows into, not memory taken at start.
pub fn default_cache_mb() -> u64 {
    let total_mb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| memory_total_mb(&text));
    cache_for_memory(total_mb)
}

/// `MemTotal` of `/proc/meminfo`, in MiB.
fn memory_total_mb(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

fn cache_for_memory(total_mb: Option<u64>) -> u64 {
    match total_mb {
        Some(total) => (total / 8).clamp(8, DEFAULT_CACHE_MAX_MB),
        // Memory unknown: a modest cache.
        None => 64,
    }
}

/// A key and its value, as read.
pub type Entry = (Vec<u8>, Vec<u8>);

/// Writes that must happen together.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    ops: Vec<(Table, Vec<u8>, Option<Vec<u8>>)>,
}

impl Batch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn put(mut self, table: Table, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        self.ops.push((table, key.into(), Some(value.into())));
        self
    }

    pub fn delete(mut self, table: Table, key: impl Into<Vec<u8>>) -> Self {
        self.ops.push((table, key.into(), None));
        self
    }

    /// Appends another batch's writes.
    pub fn extend(&mut self, other: Batch) {
        self.ops.extend(other.ops);
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// The on-disk format this build writes. A database written by a newer build is
/// refused; an older one is migrated on open (`migrations`). 2: the state has an id.
pub const FORMAT_VERSION: u32 = 2;
const FORMAT_KEY: &[u8] = b"format_version";

/// Errors from the state database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the state database in {path}: {cause}")]
    Open { path: String, cause: sled::Error },
    #[error(
        "the state database in {path} was written by a newer integrationd (format {found}, this build reads up to {FORMAT_VERSION}); upgrade integrationd or restore a backup"
    )]
    TooNew { path: String, found: u32 },
    #[error("the state database in {path} has a corrupt format version record")]
    CorruptVersion { path: String },
    #[error("state database: {0}")]
    Sled(sled::Error),
    #[error("state database record `{key}` is corrupt: {reason}")]
    Corrupt { key: String, reason: String },
}

impl From<sled::Error> for StoreError {
    fn from(error: sled::Error) -> Self {
        Self::Sled(error)
    }
}

/// The opened state database.
#[derive(Debug, Clone)]
pub struct Store {
    db: sled::Db,
    audit: sled::Tree,
    audit_head: sled::Tree,
    tables: [sled::Tree; Table::ALL.len()],
    /// Writers take turns: read-check-write sequences in the components stay consistent,
    /// and the audit chain has one writer.
    writer: Arc<Mutex<()>>,
    /// Every write holds this shared; a snapshot holds it exclusively ([`Store::freeze`]),
    /// so what it reads is one moment of the whole database.
    gate: Arc<std::sync::RwLock<()>>,
    /// Per table, how many writes it has had through this handle and its clones (the
    /// daemon's only writers): a cache of a table's contents is current while this
    /// has not moved.
    generations: Arc<[AtomicU64; Table::ALL.len()]>,
    state_dir: std::path::PathBuf,
    /// The highest sequence written to the anchor file by this process.
    anchored: Arc<Mutex<u64>>,
}

/// How long opening waits for the database's file lock to be released by this
/// process: sled lets go of it when its last background write ends, which can be a
/// moment after the previous handle was dropped (a reopen in the same process).
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Opens `config`, waiting up to [`LOCK_WAIT`] while the file lock is held. Another
/// process holding it (a second daemon on the same state) still fails: after the wait.
fn open_locked(config: &sled::Config) -> Result<sled::Db, sled::Error> {
    let started = std::time::Instant::now();
    loop {
        match config.open() {
            Err(sled::Error::Io(err))
                if err.to_string().contains("could not acquire lock")
                    && started.elapsed() < LOCK_WAIT =>
            {
                // No event announces the release: poll it.
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

impl Store {
    /// Opens (or creates) the database under `state_dir/db` with the default page
    /// cache ([`default_cache_mb`]), checking its format.
    pub fn open(state_dir: &Path) -> Result<Self, StoreError> {
        Self::open_with_cache(state_dir, default_cache_mb())
    }

    /// As [`Store::open`], with a page cache of `cache_mb` MiB: a large correlation
    /// index wants its pages in memory (lookups that miss read and decode a page).
    pub fn open_with_cache(state_dir: &Path, cache_mb: u64) -> Result<Self, StoreError> {
        let path = state_dir.join("db");
        let shown = path.display().to_string();
        let config = sled::Config::new()
            .path(&path)
            .cache_capacity(cache_mb.saturating_mul(1024 * 1024));
        let db = open_locked(&config).map_err(|source| StoreError::Open {
            path: shown.clone(),
            cause: source,
        })?;
        let migrated = match db.get(FORMAT_KEY)? {
            None => {
                migrations::initialize(&db)?;
                Vec::new()
            }
            Some(raw) => {
                let bytes: [u8; 4] =
                    raw.as_ref()
                        .try_into()
                        .map_err(|_| StoreError::CorruptVersion {
                            path: shown.clone(),
                        })?;
                let found = u32::from_be_bytes(bytes);
                if found > FORMAT_VERSION {
                    return Err(StoreError::TooNew { path: shown, found });
                }
                migrations::migrate(&db, found)?
            }
        };
        let audit = db.open_tree("audit")?;
        let audit_head = db.open_tree("audit.head")?;
        let mut tables = Vec::with_capacity(Table::ALL.len());
        for table in Table::ALL {
            tables.push(db.open_tree(table.tree_name())?);
        }
        let tables: [sled::Tree; Table::ALL.len()] = tables.try_into().expect("one tree per table");
        let store = Self {
            db,
            audit,
            audit_head,
            tables,
            writer: Arc::default(),
            gate: Arc::default(),
            generations: Arc::new(std::array::from_fn(|_| AtomicU64::new(0))),
            state_dir: state_dir.to_owned(),
            anchored: Arc::default(),
        };
        if !migrated.is_empty() {
            store.audit(&AuditDraft::ok(
                None,
                "integrationd",
                "state.migrate",
                &format!("format {FORMAT_VERSION}"),
                migrated.join("; "),
            ))?;
        }
        Ok(store)
    }

    /// The state's id: random, made when the state was, kept by backups and restores.
    pub fn state_id(&self) -> Result<String, StoreError> {
        let raw = self
            .db
            .get(migrations::STATE_ID_KEY)?
            .ok_or_else(|| StoreError::Corrupt {
                key: "state_id".to_owned(),
                reason: "missing".to_owned(),
            })?;
        String::from_utf8(raw.to_vec()).map_err(|_| StoreError::Corrupt {
            key: "state_id".to_owned(),
            reason: "not text".to_owned(),
        })
    }

    /// The state directory the database lives in.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    fn tree(&self, table: Table) -> &sled::Tree {
        &self.tables[table.slot() - 2]
    }

    /// The registry's table of trusted plugin checksums.
    pub fn trust(&self) -> TrustTable {
        TrustTable::new(self.tree(Table::Trust).clone())
    }

    /// How many writes `table` has had. A cache reads this before it reads the table
    /// and is stale once it differs: a write counts after it is applied.
    pub fn generation(&self, table: Table) -> u64 {
        self.generations[table.slot() - 2].load(Ordering::Acquire)
    }

    fn count_writes(&self, batch: &Batch) {
        for (table, _, _) in &batch.ops {
            self.generations[table.slot() - 2].fetch_add(1, Ordering::Release);
        }
    }

    /// Reads one value.
    pub fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.tree(table).get(key)?.map(|v| v.to_vec()))
    }

    /// Every (key, value) whose key starts with `prefix`, in key order.
    pub fn scan(&self, table: Table, prefix: &[u8]) -> Result<Vec<Entry>, StoreError> {
        self.tree(table).scan_prefix(prefix).map(owned).collect()
    }

    /// Waits while a snapshot is being taken; held for the whole of a write (its flush
    /// and the anchor included).
    fn gate_open(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        self.gate
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Stops every write until the returned view is dropped: a consistent moment of the
    /// whole database (and of the anchor file, written inside each commit) for a backup.
    /// Reads go on meanwhile; writers wait.
    pub fn freeze(&self) -> Frozen<'_> {
        let gate = self
            .gate
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Frozen::new(&self.db, &self.state_dir, gate)
    }

    /// Takes the writer's turn: hold it across the reads a batch depends on.
    pub fn writer(&self) -> std::sync::MutexGuard<'_, ()> {
        self.writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Applies `batch` and appends `audit` in one transaction, then flushes. Either both
    /// are durable when this returns `Ok`, or neither happened.
    pub fn commit(&self, batch: &Batch, audit: &AuditDraft) -> Result<AuditRecord, StoreError> {
        let _open = self.gate_open();
        let time_ms = plugin_kit::clock::now_ms();
        let mut trees: Vec<sled::Tree> = vec![self.audit.clone(), self.audit_head.clone()];
        trees.extend(self.tables.iter().cloned());
        let result = trees.as_slice().transaction(|tx| {
            let head = match tx[1].get(HEAD_KEY)? {
                None => Head::GENESIS,
                Some(raw) => Head::decode(&raw).ok_or_else(|| {
                    ConflictableTransactionError::Abort(StoreError::Corrupt {
                        key: "audit.head".to_owned(),
                        reason: "not a sequence number and hash".to_owned(),
                    })
                })?,
            };
            let (record, bytes, next) = audit::next_record(head, audit, time_ms)
                .map_err(ConflictableTransactionError::Abort)?;
            tx[0].insert(&record.seq.to_be_bytes(), bytes)?;
            tx[1].insert(HEAD_KEY, next.encode().as_slice())?;
            for (table, key, value) in &batch.ops {
                let tree = &tx[table.slot()];
                match value {
                    Some(value) => tree.insert(key.as_slice(), value.as_slice())?,
                    None => tree.remove(key.as_slice())?,
                };
            }
            Ok((record, next))
        });
        let (record, head) = match result {
            Ok(done) => done,
            Err(TransactionError::Abort(err)) => return Err(err),
            Err(TransactionError::Storage(err)) => return Err(err.into()),
        };
        self.count_writes(batch);
        self.db.flush()?;
        self.anchor(head);
        Ok(record)
    }

    /// Writes the chain's head to the anchor file, unless a later one is there already.
    /// A failure is logged loudly but does not undo the committed change: verification
    /// then reports the anchor as behind, never a chain that is fine as broken.
    fn anchor(&self, head: Head) {
        let mut anchored = self.anchored.lock().unwrap_or_else(|p| p.into_inner());
        if head.seq <= *anchored {
            return;
        }
        let anchor = AuditAnchor {
            seq: head.seq,
            sha256: hex::encode(head.hash),
        };
        match anchor::write(&anchor::path_in(&self.state_dir), &anchor) {
            Ok(()) => *anchored = head.seq,
            Err(err) => tracing::error!(
                error = %err,
                seq = head.seq,
                "cannot write the audit anchor outside the database; a later rollback of the audit trail could go unnoticed"
            ),
        }
    }

    /// The chain's head as an anchor to keep off the host (`audit verify --anchor`).
    pub fn audit_head(&self) -> Result<Option<AuditAnchor>, StoreError> {
        Ok(self
            .audit_head
            .get(HEAD_KEY)?
            .and_then(|raw| Head::decode(&raw))
            .filter(|head| head.seq > 0)
            .map(|head| AuditAnchor {
                seq: head.seq,
                sha256: hex::encode(head.hash),
            }))
    }

    /// Appends many audit records in one transaction (imports, benchmarks), then flushes.
    pub fn audit_many(&self, drafts: &[AuditDraft]) -> Result<u64, StoreError> {
        let _turn = self.writer();
        let _open = self.gate_open();
        let time_ms = plugin_kit::clock::now_ms();
        let trees = [self.audit.clone(), self.audit_head.clone()];
        let result = trees.as_slice().transaction(|tx| {
            let mut head = match tx[1].get(HEAD_KEY)? {
                None => Head::GENESIS,
                Some(raw) => Head::decode(&raw).ok_or_else(|| {
                    ConflictableTransactionError::Abort(StoreError::Corrupt {
                        key: "audit.head".to_owned(),
                        reason: "not a sequence number and hash".to_owned(),
                    })
                })?,
            };
            for draft in drafts {
                let (record, bytes, next) = audit::next_record(head, draft, time_ms)
                    .map_err(ConflictableTransactionError::Abort)?;
                tx[0].insert(&record.seq.to_be_bytes(), bytes)?;
                head = next;
            }
            tx[1].insert(HEAD_KEY, head.encode().as_slice())?;
            Ok(head)
        });
        let head = match result {
            Ok(head) => head,
            Err(TransactionError::Abort(err)) => return Err(err),
            Err(TransactionError::Storage(err)) => return Err(err.into()),
        };
        self.db.flush()?;
        self.anchor(head);
        Ok(head.seq)
    }

    /// Applies a data-plane batch (events, cursors, offsets) in one transaction and
    /// flushes. Data is not audited; configuration and secrets always are (`commit`).
    pub fn apply(&self, batch: &Batch) -> Result<(), StoreError> {
        let _open = self.gate_open();
        let trees: Vec<sled::Tree> = self.tables.to_vec();
        let result = trees.as_slice().transaction(|tx| {
            for (table, key, value) in &batch.ops {
                let tree = &tx[table.slot() - 2];
                match value {
                    Some(value) => tree.insert(key.as_slice(), value.as_slice())?,
                    None => tree.remove(key.as_slice())?,
                };
            }
            Ok::<(), ConflictableTransactionError<StoreError>>(())
        });
        match result {
            Ok(()) => {}
            Err(TransactionError::Abort(err)) => return Err(err),
            Err(TransactionError::Storage(err)) => return Err(err.into()),
        }
        self.count_writes(batch);
        self.db.flush()?;
        Ok(())
    }

    /// Whether `key` exists in `table`.
    pub fn contains(&self, table: Table, key: &[u8]) -> Result<bool, StoreError> {
        Ok(self.tree(table).contains_key(key)?)
    }

    /// The last key of `table`, if any.
    pub fn last_key(&self, table: Table) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.tree(table).last()?.map(|(k, _)| k.to_vec()))
    }

    /// Up to `limit` entries of `table` with keys at or after `from`, in key order.
    pub fn range_from(
        &self,
        table: Table,
        from: &[u8],
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        self.tree(table)
            .range(from.to_vec()..)
            .take(limit)
            .map(owned)
            .collect()
    }

    /// Entries of `table` with keys in `from..=to`, last key first, at most `limit`.
    pub fn range_rev(
        &self,
        table: Table,
        from: &[u8],
        to: &[u8],
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        self.tree(table)
            .range(from.to_vec()..=to.to_vec())
            .rev()
            .take(limit)
            .map(owned)
            .collect()
    }

    /// Entries of `table` with keys in `from..=to`, in key order, read as they are
    /// taken (a caller that stops early reads no more).
    pub fn range_iter(
        &self,
        table: Table,
        from: &[u8],
        to: &[u8],
    ) -> impl Iterator<Item = Result<Entry, StoreError>> + use<> {
        self.tree(table)
            .range(from.to_vec()..=to.to_vec())
            .map(owned)
    }

    /// Deletes every entry of `table` whose key starts with `prefix`, in batches of
    /// `per_batch` (not one transaction: for large removals whose keys nobody else can
    /// write meanwhile). Returns how many were deleted.
    pub fn delete_prefix(
        &self,
        table: Table,
        prefix: &[u8],
        per_batch: usize,
    ) -> Result<usize, StoreError> {
        let mut deleted = 0;
        let mut batch = Batch::new();
        let mut pending = 0;
        for entry in self.tree(table).scan_prefix(prefix) {
            let (key, _) = entry?;
            batch = batch.delete(table, key.to_vec());
            pending += 1;
            if pending >= per_batch.max(1) {
                self.apply(&std::mem::take(&mut batch))?;
                deleted += pending;
                pending = 0;
            }
        }
        if pending > 0 {
            self.apply(&batch)?;
            deleted += pending;
        }
        Ok(deleted)
    }

    /// Entries of `table` with keys in `from..=to`, in key order, at most `limit`.
    pub fn range(
        &self,
        table: Table,
        from: &[u8],
        to: &[u8],
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        self.range_iter(table, from, to).take(limit).collect()
    }

    /// Every entry of `table`, last key first.
    pub fn iter_rev(
        &self,
        table: Table,
    ) -> impl Iterator<Item = Result<Entry, StoreError>> + use<> {
        self.tree(table).iter().rev().map(owned)
    }

    /// Appends an audit record alone (a read, a refused access).
    pub fn audit(&self, audit: &AuditDraft) -> Result<AuditRecord, StoreError> {
        let _turn = self.writer();
        self.commit(&Batch::new(), audit)
    }

    /// Every audit record, newest first.
    pub fn audit_rev(&self) -> impl Iterator<Item = Result<AuditRecord, StoreError>> + use<> {
        self.audit.iter().rev().map(|entry| {
            let (key, value) = entry?;
            serde_json::from_slice(&value).map_err(|err| StoreError::Corrupt {
                key: format!("audit {}", hex::encode(&key)),
                reason: err.to_string(),
            })
        })
    }

    /// Audit records, newest first, that `keep` accepts, at most `limit`.
    pub fn audit_records(
        &self,
        limit: usize,
        keep: impl Fn(&AuditRecord) -> bool,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let mut out = Vec::new();
        for entry in self.audit.iter().rev() {
            let (key, value) = entry?;
            let record: AuditRecord =
                serde_json::from_slice(&value).map_err(|err| StoreError::Corrupt {
                    key: format!("audit {}", hex::encode(&key)),
                    reason: err.to_string(),
                })?;
            if keep(&record) {
                out.push(record);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// The sequence number of the latest audit record (0 before the first).
    pub fn audit_seq(&self) -> Result<u64, StoreError> {
        Ok(match self.audit_head.get(HEAD_KEY)? {
            None => 0,
            Some(raw) => Head::decode(&raw).map_or(0, |head| head.seq),
        })
    }

    /// Walks the whole audit chain against its head, the anchor file and `external`
    /// (an anchor the operator kept off the host). `Ok(Ok(n))`: `n` records, intact.
    pub fn audit_verify(
        &self,
        external: Option<&AuditAnchor>,
    ) -> Result<Result<u64, ChainError>, StoreError> {
        let head = match self.audit_head.get(HEAD_KEY)? {
            None => Head::GENESIS,
            Some(raw) => Head::decode(&raw).ok_or_else(|| StoreError::Corrupt {
                key: "audit.head".to_owned(),
                reason: "not a sequence number and hash".to_owned(),
            })?,
        };
        let file = anchor::read(&anchor::path_in(&self.state_dir)).map_err(|reason| {
            StoreError::Corrupt {
                key: "audit.anchor".to_owned(),
                reason,
            }
        })?;
        let mut anchors = Vec::new();
        if let Some(file) = &file {
            anchors.push((file, "the anchor file outside the database"));
        }
        if let Some(external) = external {
            anchors.push((external, "the anchor given"));
        }
        audit::verify_chain(self.audit.iter(), head, &anchors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_cache_is_an_eighth_of_memory_up_to_512_mib() {
        let meminfo = "MemTotal:       24576000 kB\nMemFree:         1000 kB\n";
        assert_eq!(memory_total_mb(meminfo), Some(24_000));
        assert_eq!(cache_for_memory(Some(24_000)), DEFAULT_CACHE_MAX_MB);
        assert_eq!(cache_for_memory(Some(2_048)), 256);
        assert_eq!(cache_for_memory(Some(32)), 8);
        assert_eq!(cache_for_memory(None), 64);
        assert_eq!(memory_total_mb("MemFree: 3 kB\n"), None);
    }

    fn draft(action: &str) -> AuditDraft {
        AuditDraft::ok(Some("acme"), "uid:0", action, "thing", "detail")
    }

    #[test]
    fn a_commit_writes_the_change_and_its_audit_record_together() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let record = store
            .commit(
                &Batch::new().put(Table::Tenants, "acme", "{}"),
                &draft("tenant.create"),
            )
            .expect("commit");
        assert_eq!(record.seq, 1);
        assert_eq!(record.prev, "0".repeat(64));
        drop(store);
        let store = Store::open(dir.path()).expect("reopen");
        assert_eq!(
            store.get(Table::Tenants, b"acme").expect("get"),
            Some(b"{}".to_vec())
        );
        assert_eq!(store.audit_verify(None).expect("verify"), Ok(1));
    }

    #[test]
    fn no_audit_record_means_no_change() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        store
            .commit(&Batch::new(), &draft("first"))
            .expect("commit");
        store
            .audit_head
            .insert(HEAD_KEY, b"garbage".as_slice())
            .expect("corrupt the head");
        let err = store.commit(
            &Batch::new().put(Table::Tenants, "acme", "{}"),
            &draft("tenant.create"),
        );
        assert!(matches!(err, Err(StoreError::Corrupt { .. })), "{err:?}");
        assert_eq!(
            store.get(Table::Tenants, b"acme").expect("get"),
            None,
            "fail closed"
        );
    }

    fn chain(n: u64) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        for i in 0..n {
            store.audit(&draft(&format!("action.{i}"))).expect("append");
        }
        (dir, store)
    }

    #[test]
    fn verify_detects_modified_removed_reordered_and_truncated_records() {
        let (_dir, store) = chain(5);
        assert_eq!(store.audit_verify(None).expect("verify"), Ok(5));

        let key = 3u64.to_be_bytes();
        let original = store.audit.get(key).expect("get").expect("record 3");
        let forged = String::from_utf8(original.to_vec())
            .expect("utf8")
            .replace("action.2", "action.X");
        store.audit.insert(key, forged.as_bytes()).expect("modify");
        assert_eq!(
            store.audit_verify(None).expect("verify"),
            Err(ChainError::BrokenLink {
                seq: 4,
                previous: 3
            })
        );
        store.audit.insert(key, original.clone()).expect("restore");

        store.audit.remove(key).expect("remove");
        assert_eq!(
            store.audit_verify(None).expect("verify"),
            Err(ChainError::Gap {
                expected: 3,
                found: 4
            })
        );
        store.audit.insert(key, original.clone()).expect("restore");

        let four = store
            .audit
            .get(4u64.to_be_bytes())
            .expect("get")
            .expect("record 4");
        store.audit.insert(key, four.clone()).expect("swap");
        store
            .audit
            .insert(4u64.to_be_bytes(), original.clone())
            .expect("swap");
        assert!(matches!(
            store.audit_verify(None).expect("verify"),
            Err(ChainError::Gap { .. })
        ));
        store.audit.insert(key, original).expect("restore");
        store
            .audit
            .insert(4u64.to_be_bytes(), four)
            .expect("restore");
        assert_eq!(store.audit_verify(None).expect("verify"), Ok(5));

        store.audit.remove(5u64.to_be_bytes()).expect("truncate");
        assert_eq!(
            store.audit_verify(None).expect("verify"),
            Err(ChainError::Truncated { last: 4, head: 5 })
        );
    }

    #[test]
    fn a_shorter_chain_that_still_links_is_caught_by_the_anchors() {
        let (dir, store) = chain(5);
        let five = store.audit_head().expect("head").expect("anchor");
        assert_eq!(five.seq, 5);
        // The database loses its tail and its head is consistent with what is left, as
        // after a rollback to an older copy or a page that dropped the last records.
        let three = store
            .audit
            .get(3u64.to_be_bytes())
            .expect("get")
            .expect("record 3");
        store.audit.remove(5u64.to_be_bytes()).expect("drop");
        store.audit.remove(4u64.to_be_bytes()).expect("drop");
        let head = Head {
            seq: 3,
            hash: <sha2::Sha256 as sha2::Digest>::digest(&three).into(),
        };
        store
            .audit_head
            .insert(HEAD_KEY, head.encode().as_slice())
            .expect("head");
        assert_eq!(
            store.audit_verify(None).expect("verify"),
            Err(ChainError::BehindAnchor {
                last: 3,
                anchored: 5,
                anchor: "the anchor file outside the database"
            })
        );
        // The anchor file rolled back too (the whole state directory restored): only an
        // anchor kept elsewhere tells.
        std::fs::remove_file(dir.path().join("audit.anchor")).expect("remove anchor");
        assert_eq!(store.audit_verify(None).expect("verify"), Ok(3));
        assert_eq!(
            store.audit_verify(Some(&five)).expect("verify"),
            Err(ChainError::BehindAnchor {
                last: 3,
                anchored: 5,
                anchor: "the anchor given"
            })
        );
        let other = AuditAnchor {
            seq: 3,
            sha256: "0".repeat(64),
        };
        assert_eq!(
            store.audit_verify(Some(&other)).expect("verify"),
            Err(ChainError::AnchorMismatch {
                seq: 3,
                anchor: "the anchor given"
            })
        );
    }

    #[test]
    fn bulk_appends_continue_the_same_chain() {
        let (_dir, store) = chain(2);
        let drafts: Vec<AuditDraft> = (0..50).map(|i| draft(&format!("bulk.{i}"))).collect();
        assert_eq!(store.audit_many(&drafts).expect("bulk"), 52);
        store.audit(&draft("after")).expect("append");
        assert_eq!(store.audit_verify(None).expect("verify"), Ok(53));
    }

    #[test]
    fn lists_newest_first_with_a_filter() {
        let (_dir, store) = chain(4);
        let records = store
            .audit_records(2, |r| r.action != "action.3")
            .expect("list");
        let actions: Vec<&str> = records.iter().map(|r| r.action.as_str()).collect();
        assert_eq!(actions, vec!["action.2", "action.1"]);
    }

    #[test]
    fn refuses_a_database_from_a_newer_build() {
        let dir = tempfile::tempdir().expect("tempdir");
        drop(Store::open(dir.path()).expect("fresh"));
        {
            let db = open_locked(&sled::Config::new().path(dir.path().join("db"))).expect("raw");
            db.insert(FORMAT_KEY, &(FORMAT_VERSION + 1).to_be_bytes())
                .expect("insert");
            db.flush().expect("flush");
        }
        let err = Store::open(dir.path()).expect_err("too new").to_string();
        assert!(err.contains("newer integrationd"), "{err}");
        assert!(
            err.contains(&format!("format {}", FORMAT_VERSION + 1)),
            "{err}"
        );
    }

    #[test]
    fn reopens_its_own_database() {
        let dir = tempfile::tempdir().expect("tempdir");
        drop(Store::open(dir.path()).expect("fresh"));
        assert!(Store::open(dir.path()).is_ok());
    }
}
