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
mod enrich;
mod jobs;
mod lookups;
mod memo;
mod plugins;
pub mod rebuild;
pub mod records;
pub mod retention;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tokio::sync::mpsc;

pub use crate::config::EnrichmentConfig;
use crate::names::InstanceKey;
pub use crate::pipeline::{Correlated, Enricher, IndexWrite, Revision, Superseded};
use crate::store::{Store, StoreError};
use crate::tenants::Flags;
pub use jobs::JobGuard;
use memo::Memo;
use records::{AlarmRecord, CommitRecord, DeliveryRecord, PullRecord};

/// Deployments attached to one failure at most.
const MAX_DEPLOYMENTS: usize = 5;
/// Suspect commits listed per deployment at most.
const MAX_SUSPECTS: usize = 50;
/// Failures revised by one late deployment at most.
const MAX_REVISED: usize = 1_000;

/// A deployment with the failures that followed it (the change-failure view).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeploymentView {
    pub service: String,
    pub environment: String,
    pub time_ms: u64,
    pub deployment: Option<String>,
    pub revision: Option<String>,
    pub url: Option<String>,
    /// The deployed commit's page.
    pub commit_url: Option<String>,
    /// Ids of the failures that list this deployment as the newest before them.
    pub failures: Vec<String>,
    /// The same failures, with what links them to evidence.
    pub evidence: Vec<FailureEvidence>,
    /// From the first of those failures to the resolution of the last of them (their
    /// incidents or alarms, by correlation id), once all are resolved.
    pub time_to_restore_ms: Option<u64>,
}

/// A failure that followed a deployment, and the links its enrichments carry
/// (deployment, commit, pull request, alarm).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FailureEvidence {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub time: String,
    pub subject: Option<String>,
    pub links: Vec<EvidenceLink>,
    /// When the failure's incident or alarm was resolved (RFC 3339), if it was.
    pub resolved: Option<String>,
}

/// One link of an enrichment: `rel` is `deployment`, `commit`, `pull_request`, `alarm`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EvidenceLink {
    pub rel: String,
    pub url: String,
}

/// Per service: how many deployments, how many were followed by a failure, and the
/// ratio (DORA's change-failure rate).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChangeFailureRate {
    pub service: String,
    pub deployments: u64,
    pub failed: u64,
    pub change_failure_rate: f64,
    /// Failed deployments whose failures are all resolved.
    pub restored: u64,
    /// Their mean time to restore.
    pub mean_time_to_restore_ms: Option<u64>,
}

/// The change-failure rate and mean time to restore of each service in `deployments`
/// (service, followed by failures, time to restore), by service name.
pub fn change_failure_rates<'a>(
    deployments: impl IntoIterator<Item = (&'a str, bool, Option<u64>)>,
) -> Vec<ChangeFailureRate> {
    #[derive(Default)]
    struct Counts {
        deployments: u64,
        failed: u64,
        restored: u64,
        restore_ms: u64,
    }
    let mut services: std::collections::BTreeMap<&str, Counts> = std::collections::BTreeMap::new();
    for (service, failed, restore) in deployments {
        let entry = services.entry(service).or_default();
        entry.deployments += 1;
        entry.failed += u64::from(failed);
        if let (true, Some(ms)) = (failed, restore) {
            entry.restored += 1;
            entry.restore_ms = entry.restore_ms.saturating_add(ms);
        }
    }
    services
        .into_iter()
        .map(|(service, counts)| ChangeFailureRate {
            service: service.to_owned(),
            deployments: counts.deployments,
            failed: counts.failed,
            #[allow(clippy::cast_precision_loss)]
            change_failure_rate: counts.failed as f64 / counts.deployments.max(1) as f64,
            restored: counts.restored,
            mean_time_to_restore_ms: (counts.restored > 0)
                .then(|| counts.restore_ms / counts.restored),
        })
        .collect()
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
    settings: EnrichmentConfig,
    /// Each instance's plugin, for naming an enrichment's source and knowing whom to
    /// ask.
    plugins: RwLock<HashMap<InstanceKey, Registered>>,
    /// Where completions go, when the daemon's completer runs: asks of plugins, and
    /// revisions that lost a race in the committer.
    completions: Option<mpsc::Sender<Completion>>,
    /// `(tenant, ask key)` → the plugin's enrichments, and when they came.
    answers: std::sync::Mutex<HashMap<(String, String), Answer>>,
    /// The instances not running now: their context may be missing from the index, and
    /// enrichment says so (`partial`).
    down: RwLock<std::collections::BTreeSet<InstanceKey>>,
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
    /// `realtime_enrichment` flag); all are without flags.
    realtime: Option<Flags>,
    /// Batch jobs running now, by job key: one run of a job at a time.
    jobs: (
        std::sync::Mutex<std::collections::HashSet<Vec<u8>>>,
        std::sync::Condvar,
    ),
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
    /// The correlator of `store`, complete: `flags` say which tenants' failures are
    /// enriched as they arrive (all, without), and `completions` is where what the index
    /// lacks is asked of plugins (nothing is, without).
    pub fn new(
        store: Store,
        settings: EnrichmentConfig,
        flags: Option<Flags>,
        completions: Option<mpsc::Sender<Completion>>,
    ) -> Self {
        Self {
            store,
            settings,
            plugins: RwLock::new(HashMap::new()),
            completions,
            answers: std::sync::Mutex::new(HashMap::new()),
            down: RwLock::new(std::collections::BTreeSet::new()),
            recent: Memo::default(),
            recent_suspects: Memo::default(),
            realtime: flags,
            recent_alarms: Memo::default(),
            jobs: Default::default(),
        }
    }

    /// Forgets the deployments read for realtime failures (after the index changed
    /// under them: a rebuild, a tenant deleted).
    pub fn forget_recent(&self) {
        self.recent.forget(|_| true);
        self.recent_suspects.forget(|_| true);
        self.recent_alarms.forget(|_| true);
    }

    pub fn settings(&self) -> &EnrichmentConfig {
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
}

/// The pipeline's enrichment is this index.
impl Enricher for Correlator {
    fn correlate(&self, tenant: &str, event: &Value, time_ms: u64) -> Correlated {
        Correlator::correlate(self, tenant, event, time_ms)
    }

    fn superseded(&self, revision: Superseded) {
        let Some(completions) = &self.completions else {
            return;
        };
        let completion = Completion {
            tenant: revision.tenant,
            key: revision.key,
            revision: revision.revision,
            time_ms: revision.time_ms,
            asks: Vec::new(),
        };
        if completions.try_send(completion).is_err() {
            tracing::warn!("the completion queue is full; a failure keeps an earlier revision");
        }
    }

    fn forget_tenant(&self, _tenant: &str) {
        self.forget_recent();
    }
}

#[cfg(test)]
mod tests;
