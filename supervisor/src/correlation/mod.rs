//! Correlation: the index of delivery events (deployments, releases, merges, pushes),
//! commits, merged pull requests and alarm transitions, per tenant; and enrichment of
//! failures from it.
//!
//! The pipeline calls [`Correlator::correlate`] for every valid event while it prepares
//! a submission (on its own thread, before the commit): the event's index entries are
//! written in the same transaction as the event, and a failure (a `system` or `security`
//! event at or above the configured severity) is stored enriched with the deployments
//! to its service and environment within the regression window before it, their
//! suspect commits with their pull requests, and the alarms in ALARM for its service.
//! A deployment that arrives after failures it precedes revises them: each gets a new
//! revision (same id) that goes to the sinks.
//!
//! Lookups read only the index, never a plugin, so enrichment costs no waiting and an
//! unreachable plugin cannot delay ingestion. What the index lacks (the suspect commits
//! of a deployment whose pushes were never seen; metric values, when asked for) is
//! asked of the plugin that knows, after the failure is stored, by [`completion`]: the
//! failure goes on at once marked `partial` with what was asked, and the answer comes
//! as a new revision. Every key starts with the tenant: no lookup can reach another
//! tenant's entries, and a plugin is only asked about its own tenant.

pub mod batch;
pub mod completion;
pub mod rebuild;
pub mod records;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use plugin_protocol::Severity;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::store::{Store, StoreError, Table};
use records::{
    AlarmRecord, CommitRecord, DeliveryRecord, IndexEntry, PullRecord, key_time,
    newest_first_range, prefix, time_key, time_range,
};

/// Deployments attached to one failure at most.
const MAX_DEPLOYMENTS: usize = 5;
/// Suspect commits listed per deployment at most.
const MAX_SUSPECTS: usize = 50;
/// Failures revised by one late deployment at most.
const MAX_REVISED: usize = 1_000;

/// `[enrichment]` in the daemon's configuration.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct EnrichmentConfig {
    /// Off: no correlation index and no realtime enrichment at all.
    pub enabled: bool,
    /// How long before a failure a deployment may have caused it.
    #[serde(deserialize_with = "crate::config::duration")]
    pub window: Duration,
    /// Failures are events of this severity or above.
    pub min_severity: String,
    /// Per tenant (`"acme"`) or per tenant and service (`"acme/checkout"`) windows,
    /// e.g. `"30m"`.
    pub windows: BTreeMap<String, String>,
    /// Also ask the tenant's enriching plugins (CloudWatch) for the metric values
    /// around each failure: a plugin call and a second revision per failure.
    pub metric_values: bool,
    /// How long a plugin may take to answer what the index lacks.
    #[serde(deserialize_with = "crate::config::duration")]
    pub plugin_deadline: Duration,
}

impl Default for EnrichmentConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            window: Duration::from_secs(2 * 60 * 60),
            min_severity: "error".to_owned(),
            windows: BTreeMap::new(),
            metric_values: false,
            plugin_deadline: Duration::from_secs(2),
        }
    }
}

/// The settings, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorrelationSettings {
    pub enabled: bool,
    pub window: Duration,
    pub min_severity: Severity,
    pub windows: BTreeMap<String, Duration>,
    pub metric_values: bool,
}

impl Default for CorrelationSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            window: Duration::from_secs(2 * 60 * 60),
            min_severity: Severity::Error,
            windows: BTreeMap::new(),
            metric_values: false,
        }
    }
}

impl EnrichmentConfig {
    pub fn settings(&self) -> Result<CorrelationSettings, String> {
        let min_severity: Severity =
            serde_json::from_value(Value::String(self.min_severity.clone())).map_err(|_| {
                format!(
                    "enrichment.min_severity `{}` is not debug, info, warning, error or critical",
                    self.min_severity
                )
            })?;
        let mut windows = BTreeMap::new();
        for (scope, text) in &self.windows {
            let window = humantime::parse_duration(text)
                .map_err(|e| format!("enrichment.windows.{scope} = `{text}`: {e}"))?;
            windows.insert(scope.clone(), window);
        }
        Ok(CorrelationSettings {
            enabled: self.enabled,
            window: self.window,
            min_severity,
            windows,
            metric_values: self.metric_values,
        })
    }
}

/// One write to the index: table, key, value.
pub type IndexWrite = (Table, Vec<u8>, Vec<u8>);

/// What correlating one event produced.
#[derive(Debug, Default)]
pub struct Correlated {
    /// Index writes to commit with the event.
    pub writes: Vec<IndexWrite>,
    /// The event as it is to be stored, when enrichment changed it.
    pub enriched: Option<String>,
    /// Earlier failures this event revises (a late deployment), to store and deliver.
    pub revisions: Vec<Revision>,
}

/// A new revision of a stored event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revision {
    pub id: String,
    pub revision: u64,
    pub time_ms: u64,
    pub json: String,
    /// The failure's key in [`Table::Failures`]: written with the revision, only if
    /// the revision is stored.
    pub key: Vec<u8>,
}

/// A deployment with the failures that followed it (the change-failure view).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeploymentView {
    pub service: String,
    pub environment: String,
    pub time_ms: u64,
    pub deployment: Option<String>,
    pub revision: Option<String>,
    pub url: Option<String>,
    /// Ids of the failures that list this deployment as the newest before them.
    pub failures: Vec<String>,
}

/// Why a correlation read failed.
#[derive(Debug, thiserror::Error)]
pub enum CorrelationError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("a correlation record is unreadable: {0}")]
    Corrupt(String),
}

/// Context the index lacks, to ask of a plugin.
#[derive(Debug, Clone, PartialEq)]
pub struct Ask {
    pub integration: String,
    pub plugin: String,
    /// What the answer is remembered by (with the tenant).
    pub key: String,
    /// The event sent to the plugin's `Enrich`: `data."enrichment.want"` says what is
    /// wanted.
    pub query: Value,
    /// What is asked for, for people.
    pub what: String,
}

impl Ask {
    fn describe(&self) -> String {
        format!(
            "{} of integration `{}` ({})",
            self.what, self.integration, self.plugin
        )
    }
}

/// The completer's queue, once the daemon's completer runs.
pub type CompletionQueue = Arc<std::sync::OnceLock<tokio::sync::mpsc::Sender<Completion>>>;

/// A stored failure to complete with plugins' answers.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub tenant: String,
    /// Its key in [`Table::Failures`].
    pub key: Vec<u8>,
    /// The revision the asks were made for: the completion waits until it is stored.
    pub revision: u64,
    pub time_ms: u64,
    pub asks: Vec<Ask>,
}

/// What a plugin of an integration is and can do.
#[derive(Debug, Clone)]
struct Registered {
    plugin: String,
    enrich: bool,
}

/// Plugins' answers are reused this long (a burst of failures after one deployment asks
/// the same question).
const ANSWER_TTL: Duration = Duration::from_secs(10 * 60);
/// Why a plugin did not answer is reused this long: a burst of failures while a plugin
/// is down or refusing asks it once, and says why in each.
const PROBLEM_TTL: Duration = Duration::from_secs(60);
/// Answers remembered at most.
const MAX_ANSWERS: usize = 10_000;

/// A plugin's enrichments (or why there are none), and when they came.
type Answer = (Result<Vec<Value>, String>, std::time::Instant);

/// The correlation index and enrichment.
#[derive(Debug)]
pub struct Correlator {
    store: Store,
    settings: CorrelationSettings,
    /// `(tenant, integration)` → its plugin, for naming an enrichment's source and
    /// knowing whom to ask.
    plugins: RwLock<HashMap<(String, String), Registered>>,
    /// Where completions go, once the daemon's completer runs (shared with the
    /// pipeline's committer, which hands over revisions that lost a race).
    completions: CompletionQueue,
    /// `(tenant, ask key)` → the plugin's enrichments, and when they came.
    answers: std::sync::Mutex<HashMap<(String, String), Answer>>,
    /// `(tenant, integration)` of the instances not running now: their context may be
    /// missing from the index, and enrichment says so (`partial`).
    down: RwLock<std::collections::BTreeSet<(String, String)>>,
    /// `(tenant, service, environment)` → its newest deployments, as last read: failures
    /// come in bursts, and a burst asks the same question. Dropped when a deployment
    /// for the key is indexed, and after [`RECENT_TTL`] (a deployment prepared
    /// concurrently with the read is seen that much later at worst).
    recent: Memo<(String, String, String), Arc<Vec<DeliveryRecord>>>,
    /// `(tenant, deployment id)` → its suspects, for realtime failures.
    recent_suspects: Memo<(String, String), Suspects>,
    /// `(tenant, service)` → its alarm transitions, for realtime failures.
    recent_alarms: Memo<(String, String), Arc<Vec<AlarmRecord>>>,
    /// Whether a tenant's failures are enriched as they arrive (the
    /// `realtime_enrichment` flag); all are when unset.
    realtime: std::sync::OnceLock<crate::tenants::Flags>,
    /// Batch jobs running now, by job key: one run of a job at a time.
    jobs: (
        std::sync::Mutex<std::collections::HashSet<Vec<u8>>>,
        std::sync::Condvar,
    ),
}

/// How long a read of the newest deployments is reused.
const RECENT_TTL: Duration = Duration::from_secs(2);
/// Events older than this (against the clock) are not realtime: no cache.
const RECENT_TTL_MS: u64 = 5 * 60 * 1000;

/// Reads that realtime failures reuse for [`RECENT_TTL`]: a burst after one deployment
/// reads the same deployments, suspects and alarms. Entries are dropped when the index gains what
/// could change them.
#[derive(Debug)]
struct Memo<K, V> {
    entries: std::sync::Mutex<HashMap<K, (V, std::time::Instant)>>,
}

impl<K, V> Default for Memo<K, V> {
    fn default() -> Self {
        Self {
            entries: std::sync::Mutex::new(HashMap::new()),
        }
    }
}

impl<K: std::hash::Hash + Eq, V: Clone> Memo<K, V> {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, (V, std::time::Instant)>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn get(&self, key: &K) -> Option<V> {
        self.lock()
            .get(key)
            .filter(|(_, at)| at.elapsed() < RECENT_TTL)
            .map(|(value, _)| value.clone())
    }

    fn put(&self, key: K, value: V) {
        let mut entries = self.lock();
        if entries.len() >= MAX_ANSWERS {
            entries.retain(|_, (_, at)| at.elapsed() < RECENT_TTL);
        }
        entries.insert(key, (value, std::time::Instant::now()));
    }

    /// Drops the entries `stale` names.
    fn forget(&self, mut stale: impl FnMut(&K) -> bool) {
        self.lock().retain(|key, _| !stale(key));
    }
}

/// The suspect commits of a deployment, with their pull requests.
type Suspects = Arc<Vec<(CommitRecord, Option<PullRecord>)>>;

fn decode<T: serde::de::DeserializeOwned>(raw: &[u8]) -> Result<T, CorrelationError> {
    serde_json::from_slice(raw).map_err(|e| CorrelationError::Corrupt(e.to_string()))
}

fn minutes(ms: u64) -> String {
    let minutes = ms / 60_000;
    if minutes == 0 {
        format!("{} s", ms / 1000)
    } else {
        format!("{minutes} min")
    }
}

fn web(url: Option<&str>) -> Option<&str> {
    url.filter(|u| (u.starts_with("https://") || u.starts_with("http://")) && u.len() <= 2048)
}

impl Correlator {
    pub fn new(store: Store, settings: CorrelationSettings) -> Self {
        Self {
            store,
            settings,
            plugins: RwLock::new(HashMap::new()),
            completions: CompletionQueue::default(),
            answers: std::sync::Mutex::new(HashMap::new()),
            down: RwLock::new(std::collections::BTreeSet::new()),
            recent: Memo::default(),
            recent_suspects: Memo::default(),
            realtime: std::sync::OnceLock::new(),
            recent_alarms: Memo::default(),
            jobs: Default::default(),
        }
    }

    /// Marks batch job `key` running until the guard drops, once an earlier run of it
    /// has stopped (an interrupted run finishes its chunk first); `None` when that
    /// takes longer than `wait`.
    pub fn start_job(&self, key: &[u8], wait: Duration) -> Option<JobGuard<'_>> {
        let (running, stopped) = &self.jobs;
        let deadline = std::time::Instant::now() + wait;
        let mut jobs = running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while jobs.contains(key) {
            let left = deadline.checked_duration_since(std::time::Instant::now())?;
            jobs = stopped
                .wait_timeout(jobs, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
        jobs.insert(key.to_vec());
        Some(JobGuard {
            correlator: self,
            key: key.to_vec(),
        })
    }

    /// Forgets the deployments read for realtime failures (after the index changed
    /// under them: a rebuild).
    pub fn forget_recent(&self) {
        self.recent.forget(|_| true);
        self.recent_suspects.forget(|_| true);
        self.recent_alarms.forget(|_| true);
    }

    /// Records which plugin serves `tenant`/`integration`, and whether it answers
    /// `Enrich`.
    pub fn register(&self, tenant: &str, integration: &str, plugin: &str, enrich: bool) {
        self.plugins
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(
                (tenant.to_owned(), integration.to_owned()),
                Registered {
                    plugin: plugin.to_owned(),
                    enrich,
                },
            );
    }

    /// Connects the feature flags: a tenant's `realtime_enrichment` says whether its
    /// failures are enriched as they arrive (once; all are before).
    pub fn use_flags(&self, flags: crate::tenants::Flags) {
        let _ = self.realtime.set(flags);
    }

    fn realtime_for(&self, tenant: &str) -> bool {
        self.realtime.get().is_none_or(|flags| {
            flags
                .get(Some(tenant), "realtime_enrichment")
                .map_or(true, |flag| flag.value)
        })
    }

    /// Records which plugin serves `tenant`/`integration`, as configured (before its
    /// instance has started and said what it can do): enrichments name their source
    /// correctly from the daemon's start.
    pub fn name_plugin(&self, tenant: &str, integration: &str, plugin: &str) {
        let mut plugins = self
            .plugins
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = (tenant.to_owned(), integration.to_owned());
        // What a running instance said it can do stays while its plugin is the same.
        if plugins.get(&key).is_none_or(|known| known.plugin != plugin) {
            plugins.insert(
                key,
                Registered {
                    plugin: plugin.to_owned(),
                    enrich: false,
                },
            );
        }
    }

    /// The completer's queue, for the committer: a revision committed after another
    /// one of the same failure is redone from what is stored.
    pub fn completion_queue(&self) -> CompletionQueue {
        self.completions.clone()
    }

    /// Connects the completer: from now on, context the index lacks is asked of
    /// plugins. Returns the receiving end (once; later calls get `None`).
    pub fn connect_completions(
        &self,
        capacity: usize,
    ) -> Option<tokio::sync::mpsc::Receiver<Completion>> {
        let (sender, receiver) = tokio::sync::mpsc::channel(capacity);
        self.completions.set(sender).ok().map(|()| receiver)
    }

    /// Remembers `tenant`'s answer to `key`: the enrichments, or why there are none.
    pub fn remember(&self, tenant: &str, key: &str, answer: Result<Vec<Value>, String>) {
        let mut answers = self
            .answers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if answers.len() >= MAX_ANSWERS {
            answers.retain(|_, (_, at)| at.elapsed() < ANSWER_TTL);
            if answers.len() >= MAX_ANSWERS {
                answers.clear();
            }
        }
        answers.insert(
            (tenant.to_owned(), key.to_owned()),
            (answer, std::time::Instant::now()),
        );
    }

    /// Whether any answer of `tenant`'s is remembered.
    fn has_answers(&self, tenant: &str) -> bool {
        self.answers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .keys()
            .any(|(t, _)| t == tenant)
    }

    /// `tenant`'s remembered answer to `key`.
    pub fn answer(&self, tenant: &str, key: &str) -> Option<Result<Vec<Value>, String>> {
        self.answers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&(tenant.to_owned(), key.to_owned()))
            .filter(|(answer, at)| {
                at.elapsed()
                    < if answer.is_ok() {
                        ANSWER_TTL
                    } else {
                        PROBLEM_TTL
                    }
            })
            .map(|(answer, _)| answer.clone())
    }

    /// Whether `tenant`'s `integration` can be asked now: a completer runs, its plugin
    /// answers `Enrich`, its instance runs.
    fn can_ask(&self, tenant: &str, integration: &str) -> bool {
        let key = (tenant.to_owned(), integration.to_owned());
        self.completions.get().is_some()
            && self
                .plugins
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(&key)
                .is_some_and(|r| r.enrich)
            && !self
                .down
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .contains(&key)
    }

    /// `tenant`'s integrations that answer `Enrich` and run now.
    fn enrichers(&self, tenant: &str) -> Vec<String> {
        let plugins = self
            .plugins
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        plugins
            .iter()
            .filter(|((t, _), r)| t == tenant && r.enrich)
            .map(|((_, integration), _)| integration.clone())
            .filter(|integration| self.can_ask(tenant, integration))
            .collect()
    }

    /// Hands the asks about a stored failure (at `revision`) to the completer.
    pub fn ask(&self, tenant: &str, event: &Value, time_ms: u64, revision: u64, asks: Vec<Ask>) {
        if asks.is_empty() {
            return;
        }
        let (Some(sender), Some(key)) =
            (self.completions.get(), failure_key(tenant, event, time_ms))
        else {
            return;
        };
        let completion = Completion {
            tenant: tenant.to_owned(),
            key,
            revision,
            time_ms,
            asks,
        };
        if sender.try_send(completion).is_err() {
            tracing::warn!(
                tenant,
                "the completion queue is full; a failure stays partial"
            );
        }
    }

    /// Records whether `tenant`/`integration`'s instance runs.
    pub fn set_running(&self, tenant: &str, integration: &str, running: bool) {
        let mut down = self
            .down
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = (tenant.to_owned(), integration.to_owned());
        if running {
            down.remove(&key);
        } else {
            down.insert(key);
        }
    }

    /// Why `tenant`'s enrichment may be incomplete now: its integrations that are not
    /// running (their deliveries and alarms may not be in the index).
    fn missing_sources(&self, tenant: &str) -> Option<String> {
        let down = self
            .down
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let names: Vec<String> = down
            .iter()
            .filter(|(t, _)| t == tenant)
            .map(|(_, integration)| {
                format!("{integration} ({})", self.plugin_of(tenant, integration))
            })
            .collect();
        (!names.is_empty()).then(|| {
            format!(
                "not running, their deliveries and alarms may be missing: {}",
                names.join(", ")
            )
        })
    }

    fn plugin_of(&self, tenant: &str, integration: &str) -> String {
        self.plugins
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&(tenant.to_owned(), integration.to_owned()))
            .map(|r| r.plugin.clone())
            .unwrap_or_else(|| integration.to_owned())
    }

    pub fn settings(&self) -> &CorrelationSettings {
        &self.settings
    }

    /// The regression window of `tenant`'s `service`.
    pub fn window(&self, tenant: &str, service: &str) -> Duration {
        self.settings
            .windows
            .get(&format!("{tenant}/{service}"))
            .or_else(|| self.settings.windows.get(tenant))
            .copied()
            .unwrap_or(self.settings.window)
    }

    /// Index writes, enrichment and revisions for one valid event of `tenant`.
    pub fn correlate(&self, tenant: &str, event: &Value, time_ms: u64) -> Correlated {
        let mut out = Correlated::default();
        if !self.settings.enabled {
            return out;
        }
        let entries = records::index_entries(event, time_ms);
        for entry in &entries {
            out.writes.push(entry.write(tenant));
            match entry {
                IndexEntry::Delivery(d) => {
                    self.recent.forget(|(t, service, environment)| {
                        t == tenant && *service == d.service && *environment == d.environment
                    });
                    // A deployment before another changes what that one shipped.
                    self.recent_suspects.forget(|(t, _)| t == tenant);
                }
                IndexEntry::Commit { .. } | IndexEntry::Pull { .. } => {
                    self.recent_suspects.forget(|(t, _)| t == tenant);
                }
                IndexEntry::Alarm { service, .. } => {
                    self.recent_alarms
                        .forget(|(t, s)| t == tenant && s == service);
                }
            }
        }
        let failure = records::is_failure(event, self.settings.min_severity);
        if failure && !self.realtime_for(tenant) {
            // Kept as it came, for `enrich` and the change-failure view.
            out.writes
                .extend(failure_write(tenant, event, time_ms, &event.to_string()));
        } else if failure {
            match self.enriched(tenant, event, time_ms, &[]) {
                Ok((enriched, asks)) => {
                    let json = enriched.to_string();
                    out.writes
                        .extend(failure_write(tenant, &enriched, time_ms, &json));
                    let revision = event.get("revision").and_then(Value::as_u64).unwrap_or(1);
                    self.ask(tenant, &enriched, time_ms, revision, asks);
                    out.enriched = Some(json);
                }
                Err(err) => {
                    tracing::error!(tenant, error = %err, "cannot enrich an event; it goes on unenriched");
                    let mut partial = event.clone();
                    mark(
                        &mut partial,
                        Vec::new(),
                        Some(Note::Partial(format!(
                            "the correlation index could not be read: {err}"
                        ))),
                    );
                    out.enriched = Some(partial.to_string());
                }
            }
        }
        let deployments: Vec<&DeliveryRecord> = entries
            .iter()
            .filter_map(|e| match e {
                IndexEntry::Delivery(d) if d.kind == "deployment" => Some(d),
                _ => None,
            })
            .collect();
        for deployment in deployments {
            match self.revise_after(tenant, deployment) {
                Ok(revisions) => out.revisions.extend(revisions),
                Err(err) => {
                    tracing::error!(tenant, error = %err, "cannot revise failures after a late deployment");
                }
            }
        }
        out
    }

    /// `event` with its enrichments (replacing any it had), and what to ask plugins
    /// for once it is stored (see [`Correlator::ask`]).
    pub fn enriched(
        &self,
        tenant: &str,
        event: &Value,
        time_ms: u64,
        pending: &[&DeliveryRecord],
    ) -> Result<(Value, Vec<Ask>), CorrelationError> {
        self.enrich(tenant, event, time_ms, pending, true)
    }

    /// `event` enriched from the index and the plugins' answers at hand (or why they
    /// did not answer), asking nothing more.
    pub fn completed(
        &self,
        tenant: &str,
        event: &Value,
        time_ms: u64,
    ) -> Result<Value, CorrelationError> {
        self.enrich(tenant, event, time_ms, &[], false)
            .map(|(event, _)| event)
    }

    fn enrich(
        &self,
        tenant: &str,
        event: &Value,
        time_ms: u64,
        pending: &[&DeliveryRecord],
        asking: bool,
    ) -> Result<(Value, Vec<Ask>), CorrelationError> {
        let mut asks = Vec::new();
        // Why plugins asked earlier did not answer.
        let mut problems = Vec::new();
        let service = records::field(event, "service.name").unwrap_or_default();
        let stated = records::field(event, "deployment.environment");
        let environment = stated.unwrap_or("production");
        let mut enrichments = Vec::new();
        if !service.is_empty() {
            let window = self.window(tenant, service);
            let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
            let deployments =
                self.deployments_before(tenant, service, environment, time_ms, window_ms, pending)?;
            for (rank, deployment) in deployments.iter().enumerate() {
                let age = time_ms.saturating_sub(deployment.time_ms);
                let closeness = 1.0 - 0.5 * (age as f64 / window_ms.max(1) as f64);
                let score = if stated.is_some() {
                    closeness
                } else {
                    closeness * 0.6
                };
                let reason = if stated.is_some() {
                    format!(
                        "deployed {} before, same service and environment",
                        minutes(age)
                    )
                } else {
                    format!(
                        "deployed {} before to {environment}, same service (the event names no environment)",
                        minutes(age)
                    )
                };
                let mut links = Vec::new();
                if let Some(url) = web(deployment.url.as_deref()) {
                    links.push(json!({"rel": "deployment", "url": url}));
                }
                if let Some(url) = web(deployment.commit_url.as_deref()) {
                    links.push(json!({"rel": "commit", "url": url}));
                }
                enrichments.push(json!({
                    "source": self.source(tenant, &deployment.integration),
                    "kind": "deployment",
                    "reason": reason,
                    "score": score.clamp(0.0, 1.0),
                    "links": links,
                    "data": {
                        "event_id": deployment.id,
                        "deployment": deployment.deployment,
                        "environment": deployment.environment,
                        "revision": deployment.revision,
                        "minutes_before": age as f64 / 60_000.0,
                        "newest": rank == 0,
                    }
                }));
                // The suspects of the newest deployment only: older ones' commits were
                // running before without this failure.
                if rank == 0 {
                    let suspects = self.suspects_of(tenant, deployment, pending, time_ms)?;
                    if suspects.is_empty() {
                        self.suspects_elsewhere(
                            tenant,
                            deployment,
                            pending,
                            asking,
                            (&mut enrichments, &mut asks, &mut problems),
                        )?;
                    }
                    for (commit, pull) in suspects.iter() {
                        let mut links = Vec::new();
                        if let Some(url) = web(commit.url.as_deref()) {
                            links.push(json!({"rel": "commit", "url": url}));
                        }
                        if let Some(url) = pull.as_ref().and_then(|p| web(p.url.as_deref())) {
                            links.push(json!({"rel": "pull_request", "url": url}));
                        }
                        let short: String = commit.sha.chars().take(12).collect();
                        enrichments.push(json!({
                            "source": self.source(tenant, &commit.integration),
                            "kind": "suspect_commit",
                            "reason": format!("commit {short} was shipped by the deployment {} before, since the previous one", minutes(age)),
                            "score": if pull.is_some() { 0.6 } else { 0.5 },
                            "links": links,
                            "data": {
                                "sha": commit.sha,
                                "message": commit.message,
                                "author": commit.author,
                                "pull_request": pull.as_ref().and_then(|p| p.number),
                            }
                        }));
                    }
                }
            }
            for alarm in self.firing(tenant, service, time_ms)? {
                let links: Vec<Value> = web(alarm.url.as_deref())
                    .map(|url| json!({"rel": "alarm", "url": url}))
                    .into_iter()
                    .collect();
                enrichments.push(json!({
                    "source": self.source(tenant, &alarm.integration),
                    "kind": "alarm",
                    "reason": format!("alarm {} was in ALARM for {} when this happened (same service)", alarm.name, minutes(time_ms.saturating_sub(alarm.time_ms))),
                    "score": 0.8,
                    "links": links,
                    "data": {"arn": alarm.arn, "event_id": alarm.id, "since_ms": alarm.time_ms}
                }));
            }
        }
        if self.settings.metric_values && !service.is_empty() {
            self.metric_values(
                tenant,
                (service, environment),
                time_ms,
                asking,
                (&mut enrichments, &mut asks, &mut problems),
            );
        }
        let mut enriched = event.clone();
        let note = if service.is_empty() {
            Some(Note::Complete(
                "the event names no service.name: nothing to correlate with".to_owned(),
            ))
        } else {
            let mut reasons: Vec<String> = self.missing_sources(tenant).into_iter().collect();
            reasons.extend(problems);
            if !asks.is_empty() {
                let asked: Vec<String> = asks.iter().map(Ask::describe).collect();
                reasons.push(format!(
                    "asked for {}: a revision follows",
                    asked.join(", ")
                ));
            }
            (!reasons.is_empty()).then(|| Note::Partial(reasons.join("; ")))
        };
        mark(&mut enriched, enrichments, note);
        Ok((enriched, asks))
    }

    /// The suspect commits of `deployment` when the index has none: a plugin's answer
    /// at hand, or an ask of the integration that reported the deployment.
    fn suspects_elsewhere(
        &self,
        tenant: &str,
        deployment: &DeliveryRecord,
        pending: &[&DeliveryRecord],
        asking: bool,
        (enrichments, asks, problems): (&mut Vec<Value>, &mut Vec<Ask>, &mut Vec<String>),
    ) -> Result<(), CorrelationError> {
        let (Some(repository), Some(head)) = (&deployment.repository, &deployment.revision) else {
            return Ok(());
        };
        // Nothing to ask (no completer, a plugin that cannot enrich or is down) and
        // nothing answered for this tenant: no lookup of the base either.
        let may_ask = asking && self.can_ask(tenant, &deployment.integration);
        if !may_ask && !self.has_answers(tenant) {
            return Ok(());
        }
        let base = self
            .previous(tenant, deployment, pending)?
            .and_then(|p| p.revision)
            .filter(|base| base != head);
        let key = format!(
            "suspect_commits\0{}\0{repository}\0{}\0{head}",
            deployment.integration,
            base.as_deref().unwrap_or_default()
        );
        match self.answer(tenant, &key) {
            Some(Ok(entries)) => enrichments.extend(entries),
            Some(Err(problem)) => problems.push(problem),
            None if may_ask => {
                let mut data = json!({
                    "enrichment.want": "suspect_commits",
                    "vcs.repository.name": repository,
                    "vcs.ref.head.revision": head,
                    "service.name": deployment.service,
                    "deployment.environment": deployment.environment,
                });
                if let Some(base) = &base {
                    data["vcs.ref.base.revision"] = json!(base);
                }
                asks.push(Ask {
                    integration: deployment.integration.clone(),
                    plugin: self.plugin_of(tenant, &deployment.integration),
                    key,
                    query: query(tenant, deployment.time_ms, data),
                    what: format!(
                        "the suspect commits of deployment {}",
                        deployment.deployment.as_deref().unwrap_or(&deployment.id)
                    ),
                });
            }
            None => {}
        }
        Ok(())
    }

    /// The metric values around `time_ms` for `service`: the answers at hand, and asks
    /// of the tenant's enriching integrations that have not answered.
    fn metric_values(
        &self,
        tenant: &str,
        (service, environment): (&str, &str),
        time_ms: u64,
        asking: bool,
        (enrichments, asks, problems): (&mut Vec<Value>, &mut Vec<Ask>, &mut Vec<String>),
    ) {
        for integration in self.enrichers(tenant) {
            let key = format!(
                "metric_values\0{integration}\0{service}\0{environment}\0{}",
                time_ms / 60_000
            );
            match self.answer(tenant, &key) {
                Some(Ok(entries)) => enrichments.extend(entries),
                Some(Err(problem)) => problems.push(problem),
                None if asking => {
                    asks.push(Ask {
                        plugin: self.plugin_of(tenant, &integration),
                        integration,
                        key,
                        query: query(
                            tenant,
                            time_ms,
                            json!({
                                "enrichment.want": "metric_values",
                                "service.name": service,
                                "deployment.environment": environment,
                            }),
                        ),
                        what: "the metric values around the failure".to_owned(),
                    });
                }
                None => {}
            }
        }
    }

    fn source(&self, tenant: &str, integration: &str) -> Value {
        json!({"plugin": self.plugin_of(tenant, integration), "integration": integration, "tenant": tenant})
    }

    /// Deployments (one per deployment id, at their earliest event) to `service` in
    /// `environment` within `window_ms` before `time_ms`, newest first.
    pub fn deployments_before(
        &self,
        tenant: &str,
        service: &str,
        environment: &str,
        time_ms: u64,
        window_ms: u64,
        pending: &[&DeliveryRecord],
    ) -> Result<Vec<DeliveryRecord>, CorrelationError> {
        let from_ms = time_ms.saturating_sub(window_ms);
        let cache_key = (
            tenant.to_owned(),
            service.to_owned(),
            environment.to_owned(),
        );
        let cached = self.recent.get(&cache_key).filter(|_| pending.is_empty());
        let mut found = match cached {
            // The newest deployments of all are no newer than the event: those in its
            // window are the answer (the usual case: failures follow deployments).
            Some(latest) if latest.iter().all(|d| d.time_ms <= time_ms) => latest
                .iter()
                .filter(|d| d.time_ms >= from_ms)
                .cloned()
                .collect(),
            // An old event (batch enrichment, late data): its window only.
            _ if !is_realtime(time_ms) => {
                let key_prefix = prefix(&[tenant, service, environment]);
                self.read_deployments(&key_prefix, from_ms, time_ms)?
            }
            _ => {
                let key_prefix = prefix(&[tenant, service, environment]);
                let latest = self.read_deployments(&key_prefix, 0, u64::MAX)?;
                let answer = if latest.iter().all(|d| d.time_ms <= time_ms) {
                    latest
                        .iter()
                        .filter(|d| d.time_ms >= from_ms)
                        .cloned()
                        .collect()
                } else {
                    self.read_deployments(&key_prefix, from_ms, time_ms)?
                };
                // Not while a deployment is being indexed: the store does not have
                // it yet.
                if pending.is_empty() {
                    self.recent.put(cache_key, Arc::new(latest));
                }
                answer
            }
        };
        found.extend(
            pending
                .iter()
                .filter(|d| {
                    d.kind == "deployment"
                        && d.service == service
                        && d.environment == environment
                        && d.time_ms <= time_ms
                        && d.time_ms + window_ms >= time_ms
                })
                .map(|d| (*d).clone()),
        );
        Ok(newest_per_deployment(found, MAX_DEPLOYMENTS))
    }

    /// The newest [`MAX_DEPLOYMENTS`] deployments under `key_prefix` with a time in
    /// `from_ms..=to_ms`, each at its events as read, newest first. Reads only until
    /// enough are found (a deployment's created and succeeded events count once).
    fn read_deployments(
        &self,
        key_prefix: &[u8],
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<DeliveryRecord>, CorrelationError> {
        let (from, to) = newest_first_range(key_prefix, from_ms, to_ms);
        let mut found: Vec<DeliveryRecord> = Vec::new();
        let mut distinct = std::collections::HashSet::new();
        for entry in self.store.range_iter(Table::Deliveries, &from, &to) {
            let (_, raw) = entry?;
            let record: DeliveryRecord = decode(&raw)?;
            if record.kind != "deployment" {
                continue;
            }
            let key = record
                .deployment
                .clone()
                .unwrap_or_else(|| record.id.clone());
            if distinct.len() == MAX_DEPLOYMENTS && !distinct.contains(&key) {
                break;
            }
            distinct.insert(key);
            found.push(record);
        }
        Ok(found)
    }

    /// The commits `deployment` shipped since the deployment before it, with the pull
    /// requests that merged them.
    fn suspects(
        &self,
        tenant: &str,
        deployment: &DeliveryRecord,
        pending: &[&DeliveryRecord],
    ) -> Result<Vec<(CommitRecord, Option<PullRecord>)>, CorrelationError> {
        let Some(repository) = &deployment.repository else {
            return Ok(Vec::new());
        };
        let previous = self.previous(tenant, deployment, pending)?;
        let since = previous.map_or(
            deployment.time_ms.saturating_sub(24 * 60 * 60 * 1000),
            |p| p.time_ms + 1,
        );
        let key_prefix = prefix(&[tenant, repository]);
        let (from, to) = time_range(&key_prefix, since, deployment.time_ms);
        let mut suspects = Vec::new();
        for (_, raw) in self
            .store
            .range_rev(Table::Commits, &from, &to, MAX_SUSPECTS)?
        {
            let commit: CommitRecord = decode(&raw)?;
            let pull = self
                .store
                .get(Table::Pulls, &prefix(&[tenant, repository, &commit.sha]))?
                .map(|raw| decode::<PullRecord>(&raw))
                .transpose()?;
            suspects.push((commit, pull));
        }
        Ok(suspects)
    }

    /// The deployment before `deployment` (another deployment id) to the same service
    /// and environment, however long before.
    fn previous(
        &self,
        tenant: &str,
        deployment: &DeliveryRecord,
        pending: &[&DeliveryRecord],
    ) -> Result<Option<DeliveryRecord>, CorrelationError> {
        let key_prefix = prefix(&[tenant, &deployment.service, &deployment.environment]);
        let (from, to) = newest_first_range(&key_prefix, 0, deployment.time_ms);
        let mut candidates: Vec<DeliveryRecord> = Vec::new();
        for entry in self
            .store
            .range_iter(Table::Deliveries, &from, &to)
            .take(64)
        {
            let (_, raw) = entry?;
            let record: DeliveryRecord = decode(&raw)?;
            if record.kind == "deployment" && record.deployment != deployment.deployment {
                candidates.push(record);
                break;
            }
        }
        candidates.extend(
            pending
                .iter()
                .filter(|d| {
                    d.kind == "deployment"
                        && d.service == deployment.service
                        && d.environment == deployment.environment
                        && d.time_ms < deployment.time_ms
                        && d.deployment != deployment.deployment
                })
                .map(|d| (*d).clone()),
        );
        Ok(candidates.into_iter().max_by_key(|d| d.time_ms))
    }

    /// [`Correlator::suspects`], reused for a realtime burst.
    fn suspects_of(
        &self,
        tenant: &str,
        deployment: &DeliveryRecord,
        pending: &[&DeliveryRecord],
        time_ms: u64,
    ) -> Result<Suspects, CorrelationError> {
        let reusable = pending.is_empty() && is_realtime(time_ms);
        let key = (
            tenant.to_owned(),
            deployment
                .deployment
                .clone()
                .unwrap_or_else(|| deployment.id.clone()),
        );
        if reusable && let Some(suspects) = self.recent_suspects.get(&key) {
            return Ok(suspects);
        }
        let suspects = Arc::new(self.suspects(tenant, deployment, pending)?);
        if reusable {
            self.recent_suspects.put(key, suspects.clone());
        }
        Ok(suspects)
    }

    /// The alarms of `service` whose last transition at or before `time_ms` is ALARM.
    fn firing(
        &self,
        tenant: &str,
        service: &str,
        time_ms: u64,
    ) -> Result<Vec<AlarmRecord>, CorrelationError> {
        let key = (tenant.to_owned(), service.to_owned());
        let reusable = is_realtime(time_ms);
        let transitions = match self.recent_alarms.get(&key).filter(|_| reusable) {
            Some(transitions) => transitions,
            None => {
                let mut read = Vec::new();
                for (_, raw) in self
                    .store
                    .scan(Table::AlarmStates, &prefix(&[tenant, service]))?
                {
                    read.push(decode::<AlarmRecord>(&raw)?);
                }
                let read = Arc::new(read);
                if reusable {
                    self.recent_alarms.put(key, read.clone());
                }
                read
            }
        };
        let mut last: BTreeMap<&str, &AlarmRecord> = BTreeMap::new();
        for record in transitions.iter().filter(|r| r.time_ms <= time_ms) {
            match last.get(record.arn.as_str()) {
                Some(seen) if seen.time_ms > record.time_ms => {}
                _ => {
                    last.insert(&record.arn, record);
                }
            }
        }
        Ok(last
            .into_values()
            .filter(|a| a.state == "ALARM")
            .cloned()
            .collect())
    }

    /// Failures after `deployment` within its window, enriched again with it: those
    /// whose enrichments change get a new revision.
    fn revise_after(
        &self,
        tenant: &str,
        deployment: &DeliveryRecord,
    ) -> Result<Vec<Revision>, CorrelationError> {
        let window_ms =
            u64::try_from(self.window(tenant, &deployment.service).as_millis()).unwrap_or(u64::MAX);
        let key_prefix = prefix(&[tenant, &deployment.service, &deployment.environment]);
        let (from, to) = time_range(
            &key_prefix,
            deployment.time_ms,
            deployment.time_ms.saturating_add(window_ms),
        );
        let mut out = Vec::new();
        for (key, raw) in self.store.range(Table::Failures, &from, &to, MAX_REVISED)? {
            let Some(time_ms) = key_time(&key, key_prefix.len()) else {
                continue;
            };
            let stored: Value = decode(&raw)?;
            let (enriched, asks) = self.enriched(tenant, &stored, time_ms, &[deployment])?;
            if enriched["data"]["enrichments"] == stored["data"]["enrichments"] {
                continue;
            }
            let revision = stored.get("revision").and_then(Value::as_u64).unwrap_or(1) + 1;
            let mut revised = enriched;
            revised["revision"] = json!(revision);
            self.ask(tenant, &revised, time_ms, revision, asks);
            out.push(Revision {
                id: revised["id"].as_str().unwrap_or_default().to_owned(),
                revision,
                time_ms,
                json: revised.to_string(),
                key,
            });
        }
        Ok(out)
    }

    /// Each deployment of `tenant` (to `service`, if given) with the failures that
    /// list it as the newest deployment before them, newest deployment first.
    pub fn deployments(
        &self,
        tenant: &str,
        service: Option<&str>,
    ) -> Result<Vec<DeploymentView>, CorrelationError> {
        let scope: Vec<&str> = match service {
            Some(service) => vec![tenant, service],
            None => vec![tenant],
        };
        let mut views: Vec<DeploymentView> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut found = Vec::new();
        for (_, raw) in self.store.scan(Table::Deliveries, &prefix(&scope))? {
            let record: DeliveryRecord = decode(&raw)?;
            if record.kind == "deployment" {
                found.push(record);
            }
        }
        for record in newest_per_deployment(found, usize::MAX) {
            let key = record
                .deployment
                .clone()
                .unwrap_or_else(|| record.id.clone());
            index.insert(key, views.len());
            views.push(DeploymentView {
                service: record.service,
                environment: record.environment,
                time_ms: record.time_ms,
                deployment: record.deployment,
                revision: record.revision,
                url: record.url,
                failures: Vec::new(),
            });
        }
        for (_, raw) in self.store.scan(Table::Failures, &prefix(&scope))? {
            let failure: Value = decode(&raw)?;
            let newest = failure["data"]["enrichments"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|e| e["kind"] == "deployment" && e["data"]["newest"] == true);
            if let Some(newest) = newest {
                let key = newest["data"]["deployment"]
                    .as_str()
                    .or_else(|| newest["data"]["event_id"].as_str())
                    .unwrap_or_default();
                if let Some(&at) = index.get(key) {
                    views[at]
                        .failures
                        .push(failure["id"].as_str().unwrap_or_default().to_owned());
                }
            }
        }
        Ok(views)
    }
}

/// A running batch job; dropping it lets the next run of the job start.
#[derive(Debug)]
pub struct JobGuard<'c> {
    correlator: &'c Correlator,
    key: Vec<u8>,
}

impl Drop for JobGuard<'_> {
    fn drop(&mut self) {
        let (running, stopped) = &self.correlator.jobs;
        running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.key);
        stopped.notify_all();
    }
}

/// Whether an event at `time_ms` is realtime (within [`RECENT_TTL_MS`] of now): its
/// lookups may reuse a burst's reads.
fn is_realtime(time_ms: u64) -> bool {
    time_ms.saturating_add(RECENT_TTL_MS) >= plugin_kit::clock::now_ms()
}

/// One record per deployment (its earliest), newest first, at most `limit`.
fn newest_per_deployment(mut found: Vec<DeliveryRecord>, limit: usize) -> Vec<DeliveryRecord> {
    found.sort_by_key(|d| d.time_ms);
    let mut seen = std::collections::HashSet::new();
    let mut unique: Vec<DeliveryRecord> = found
        .into_iter()
        .filter(|d| seen.insert(d.deployment.clone().unwrap_or_else(|| d.id.clone())))
        .collect();
    unique.reverse();
    unique.truncate(limit);
    unique
}

/// A note on an enrichment: why it is partial, or a remark on a complete one.
enum Note {
    Complete(String),
    Partial(String),
}

/// Sets `data.enrichments` and the status.
fn mark(event: &mut Value, enrichments: Vec<Value>, note: Option<Note>) {
    let Some(data) = event.get_mut("data").and_then(Value::as_object_mut) else {
        return;
    };
    data.insert("enrichments".to_owned(), Value::Array(enrichments));
    let (status, note) = match note {
        None => ("complete", None),
        Some(Note::Complete(note)) => ("complete", Some(note)),
        Some(Note::Partial(note)) => ("partial", Some(note)),
    };
    data.insert("enrichment_status".to_owned(), json!(status));
    match note {
        Some(note) => {
            data.insert("enrichment_note".to_owned(), Value::String(note));
        }
        None => {
            data.remove("enrichment_note");
        }
    }
}

/// The failure's key in [`Table::Failures`]; `None` when a key part would hold the
/// separator.
fn failure_key(tenant: &str, event: &Value, time_ms: u64) -> Option<Vec<u8>> {
    let service = records::field(event, "service.name").unwrap_or_default();
    let environment = records::field(event, "deployment.environment").unwrap_or("production");
    if service.contains('\0') || environment.contains('\0') {
        return None;
    }
    let id = event["id"].as_str().unwrap_or_default();
    Some(time_key(&[tenant, service, environment], time_ms, id))
}

/// The failure's entry in [`Table::Failures`].
fn failure_write(tenant: &str, event: &Value, time_ms: u64, json: &str) -> Option<IndexWrite> {
    failure_key(tenant, event, time_ms).map(|key| (Table::Failures, key, json.as_bytes().to_vec()))
}

/// The event an ask sends to a plugin's `Enrich`: the tenant, a time, what is wanted.
fn query(tenant: &str, time_ms: u64, data: Value) -> Value {
    let time =
        humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_millis(time_ms))
            .to_string();
    json!({"tenant": tenant, "time": time, "data": data})
}

#[cfg(test)]
mod tests;
