//! Completion: what the index lacks about a stored failure, asked of the plugin that
//! knows (through its `Enrich`), and a new revision of the failure with the answer.
//!
//! Realtime enrichment never waits for a plugin: a failure whose context is missing
//! goes to the sinks at once, `partial`, naming what was asked. The completer asks each
//! plugin with a deadline; an answer is kept for a while (a burst of failures after one
//! deployment asks the same question once), and the failure is revised with it. A
//! plugin that is down, slow or refusing leaves the failure `partial` with the reason,
//! in that revision.
//!
//! Answers are taken as the plugin's own: each entry's `source` is set here to the
//! asked integration and its tenant, whatever the plugin wrote, so no answer can claim
//! another tenant; only http(s) links are kept, and entries and answers are bounded.

use std::sync::Arc;
use std::time::Duration;

use plugin_protocol::v1;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc, watch};

use plugin_kit::host::PluginRpcClient;

use super::{Ask, Completion, CorrelationError, Correlator};
use crate::pipeline::{CommitError, Pipeline, Submission};
use crate::store::Table;

/// A future the completer awaits, boxed so that [`EnrichClients`] can be a trait object.
pub type ClientLookup<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Option<PluginRpcClient>> + Send + 'a>>;

/// Where the completer finds the running plugin of an integration that answers
/// `Enrich`. The process manager is one: the daemon wires it, so enrichment does not
/// import the process manager.
pub trait EnrichClients: Send + Sync + std::fmt::Debug {
    /// The client of `tenant`'s `integration`, while its plugin runs and enriches.
    fn enrich_client<'a>(&'a self, tenant: &'a str, integration: &'a str) -> ClientLookup<'a>;
}

/// Completions queued at most (beyond it, failures stay partial).
pub const QUEUE: usize = 4_096;
/// Completions worked on at once.
const CONCURRENT: usize = 8;
/// How long a completion waits for its failure to be stored.
const STORED_WITHIN: Duration = Duration::from_secs(10);
/// Entries taken from one answer at most.
const MAX_ENTRIES: usize = 100;
/// Bytes of one answered entry at most.
const MAX_ENTRY_BYTES: usize = 64 * 1024;

/// Why a completion did not revise its failure.
#[derive(Debug, thiserror::Error)]
pub enum CompletionError {
    #[error(transparent)]
    Correlation(#[from] CorrelationError),
    #[error(transparent)]
    Commit(#[from] CommitError),
    #[error("the failure was not stored within {0:?}")]
    NotStored(Duration),
}

/// Asks plugins and revises failures.
#[derive(Debug, Clone)]
pub struct Completer {
    pipeline: Arc<Pipeline>,
    correlator: Arc<Correlator>,
    plugins: Arc<dyn EnrichClients>,
    /// How long a plugin may take over one `Enrich`.
    deadline: Duration,
}

impl Completer {
    pub fn new(
        pipeline: Arc<Pipeline>,
        correlator: Arc<Correlator>,
        plugins: Arc<dyn EnrichClients>,
        deadline: Duration,
    ) -> Self {
        Self {
            pipeline,
            correlator,
            plugins,
            deadline,
        }
    }

    /// Works on completions until `stop` (or every sender is gone).
    pub async fn run(
        self,
        mut completions: mpsc::Receiver<Completion>,
        mut stop: watch::Receiver<bool>,
    ) {
        let slots = Arc::new(Semaphore::new(CONCURRENT));
        loop {
            let completion = tokio::select! {
                next = completions.recv() => match next {
                    Some(completion) => completion,
                    None => return,
                },
                _ = stop.changed() => return,
            };
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let completer = self.clone();
            tokio::spawn(async move {
                let tenant = completion.tenant.clone();
                if let Err(err) = completer.complete(completion).await {
                    tracing::warn!(tenant, error = %err, "cannot complete a failure's enrichment; it stays partial");
                }
                drop(slot);
            });
        }
    }

    /// Asks what is not answered yet, then revises the failure.
    pub async fn complete(&self, completion: Completion) -> Result<bool, CompletionError> {
        let correlator = &self.correlator;
        for ask in &completion.asks {
            if correlator.answer(&completion.tenant, &ask.key).is_some() {
                continue;
            }
            let answer = self.ask(&completion.tenant, ask).await;
            if let Err(problem) = &answer {
                tracing::warn!(tenant = %completion.tenant, integration = %ask.integration, problem, "a plugin did not complete an enrichment");
            }
            correlator.remember(&completion.tenant, &ask.key, answer);
        }
        let stored = self.stored(&completion).await?;
        let (pipeline, correlator) = (self.pipeline.clone(), self.correlator.clone());
        tokio::task::spawn_blocking(move || revise(&pipeline, &correlator, &completion, &stored))
            .await
            .unwrap_or(Ok(false))
    }

    /// One plugin's answer, or why there is none.
    async fn ask(&self, tenant: &str, ask: &Ask) -> Result<Vec<Value>, String> {
        let who = format!("integration `{}` ({})", ask.integration, ask.plugin);
        let Some(mut client) = self.plugins.enrich_client(tenant, &ask.integration).await else {
            return Err(format!("{who} is not running: {} unknown", ask.what));
        };
        let request = v1::EnrichRequest {
            event_json: ask.query.to_string(),
        };
        let answer = match tokio::time::timeout(self.deadline, client.enrich(request)).await {
            Ok(Ok(answer)) => answer.into_inner(),
            Ok(Err(status)) => {
                return Err(format!(
                    "{who} could not tell {} ({:?}: {})",
                    ask.what,
                    status.code(),
                    status.message()
                ));
            }
            Err(_) => {
                return Err(format!(
                    "{who} did not tell {} within {:?}",
                    ask.what, self.deadline
                ));
            }
        };
        Ok(entries(tenant, ask, &answer.enrichments_json))
    }

    /// The failure as stored at the completion's revision or later.
    async fn stored(&self, completion: &Completion) -> Result<Value, CompletionError> {
        let committed = self.pipeline.committed();
        let deadline = tokio::time::Instant::now() + STORED_WITHIN;
        loop {
            // Registered before the read: a commit between the two still wakes us.
            let notified = committed.notified();
            let raw = self
                .pipeline
                .store()
                .get(Table::Failures, &completion.key)
                .map_err(CorrelationError::from)?;
            if let Some(raw) = raw {
                let stored: Value = serde_json::from_slice(&raw)
                    .map_err(|e| CorrelationError::Corrupt(e.to_string()))?;
                if stored.get("revision").and_then(Value::as_u64).unwrap_or(1)
                    >= completion.revision
                {
                    return Ok(stored);
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(CompletionError::NotStored(STORED_WITHIN));
            }
        }
    }
}

/// The usable entries of a plugin's answer, as this tenant's and this integration's.
fn entries(tenant: &str, ask: &Ask, answer: &[String]) -> Vec<Value> {
    answer
        .iter()
        .filter(|raw| raw.len() <= MAX_ENTRY_BYTES)
        .filter_map(|raw| serde_json::from_str::<Value>(raw).ok())
        .filter(|entry| entry.get("kind").and_then(Value::as_str).is_some())
        .filter_map(|mut entry| {
            let object = entry.as_object_mut()?;
            object.insert(
                "source".to_owned(),
                json!({"plugin": ask.plugin, "integration": ask.integration, "tenant": tenant}),
            );
            // Evidence is a web page: no other scheme reaches a sink.
            let links: Vec<Value> = object
                .get("links")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|link| super::web(link.get("url").and_then(Value::as_str)).is_some())
                .cloned()
                .collect();
            object.insert("links".to_owned(), Value::Array(links));
            Some(entry)
        })
        .take(MAX_ENTRIES)
        .collect()
}

/// Commits a new revision of `stored` enriched with the answers at hand (or why there
/// are none), when that changes it. Returns whether it did.
pub(super) fn revise(
    pipeline: &Pipeline,
    correlator: &Correlator,
    completion: &Completion,
    stored: &Value,
) -> Result<bool, CompletionError> {
    let completed = correlator.completed(&completion.tenant, stored, completion.time_ms)?;
    let unchanged = ["enrichments", "enrichment_status", "enrichment_note"]
        .iter()
        .all(|field| completed["data"][field] == stored["data"][field]);
    if unchanged {
        return Ok(false);
    }
    let revision = stored.get("revision").and_then(Value::as_u64).unwrap_or(1) + 1;
    let mut submission = Submission {
        tenant: completion.tenant.clone(),
        integration: crate::pipeline::PLATFORM_INTEGRATION.to_owned(),
        ..Submission::default()
    };
    super::batch::add_revision(
        &mut submission,
        completion.key.clone(),
        completed,
        revision,
        completion.time_ms,
    );
    pipeline.commit_blocking(submission)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask() -> Ask {
        Ask {
            integration: "gh".into(),
            plugin: "github".into(),
            key: "k".into(),
            query: json!({}),
            what: "the suspect commits".into(),
        }
    }

    #[test]
    fn answers_are_the_asked_integrations_bounded_and_link_only_to_web_pages() {
        let hostile = [
            // Claims another tenant and links to a script.
            json!({"kind": "suspect_commit", "source": {"tenant": "globex"},
                   "links": [{"rel": "commit", "url": "javascript:alert(1)"},
                             {"rel": "commit", "url": "https://github.com/a/b/commit/1"}]})
            .to_string(),
            // Not JSON, no kind, not an object, too big.
            "{not json".to_owned(),
            json!({"reason": "no kind"}).to_string(),
            json!(["a list"]).to_string(),
            json!({"kind": "x", "data": "a".repeat(MAX_ENTRY_BYTES)}).to_string(),
        ];
        let kept = entries("acme", &ask(), &hostile);
        assert_eq!(kept.len(), 1, "{kept:?}");
        assert_eq!(
            kept[0]["source"],
            json!({"plugin": "github", "integration": "gh", "tenant": "acme"})
        );
        assert_eq!(
            kept[0]["links"],
            json!([{"rel": "commit", "url": "https://github.com/a/b/commit/1"}])
        );
        let many: Vec<String> = (0..500)
            .map(|i| json!({"kind": "suspect_commit", "data": {"i": i}}).to_string())
            .collect();
        assert_eq!(entries("acme", &ask(), &many).len(), MAX_ENTRIES);
    }
}
