//! Who serves what: the plugin of each integration, which of them answer `Enrich`,
//! which run now, and their remembered answers. Enrichment names its sources and says
//! what may be missing from this.

use serde_json::{Value, json};

use super::enrich::failure_key;
use super::{ANSWER_TTL, Ask, Completion, Correlator, MAX_ANSWERS, PROBLEM_TTL, Registered};
use crate::names::InstanceKey;

impl Correlator {
    /// Records which plugin serves `tenant`/`integration`, and whether it answers
    /// `Enrich`.
    pub fn register(&self, instance: &InstanceKey, plugin: &str, enrich: bool) {
        self.plugins
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(
                instance.clone(),
                Registered {
                    plugin: plugin.to_owned(),
                    enrich,
                },
            );
    }

    pub(super) fn realtime_for(&self, tenant: &str) -> bool {
        self.realtime.as_ref().is_none_or(|flags| {
            flags
                .get(Some(tenant), "realtime_enrichment")
                .map_or(true, |flag| flag.value)
        })
    }

    /// Records which plugin serves `tenant`/`integration`, as configured (before its
    /// instance has started and said what it can do): enrichments name their source
    /// correctly from the daemon's start.
    pub fn name_plugin(&self, instance: &InstanceKey, plugin: &str) {
        let mut plugins = self
            .plugins
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = instance.clone();
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
    pub(super) fn has_answers(&self, tenant: &str) -> bool {
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
    pub(super) fn can_ask(&self, tenant: &str, integration: &str) -> bool {
        let key = InstanceKey::new(tenant, integration);
        self.completions.is_some()
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
    pub(super) fn enrichers(&self, tenant: &str) -> Vec<String> {
        let plugins = self
            .plugins
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        plugins
            .iter()
            .filter(|(key, r)| key.is_of(tenant) && r.enrich)
            .map(|(key, _)| key.integration.clone())
            .filter(|integration| self.can_ask(tenant, integration))
            .collect()
    }

    /// Hands the asks about a stored failure (at `revision`) to the completer.
    pub fn ask(&self, tenant: &str, event: &Value, time_ms: u64, revision: u64, asks: Vec<Ask>) {
        if asks.is_empty() {
            return;
        }
        let (Some(sender), Some(key)) = (&self.completions, failure_key(tenant, event, time_ms))
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
    pub fn set_running(&self, instance: &InstanceKey, running: bool) {
        let mut down = self
            .down
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = instance.clone();
        if running {
            down.remove(&key);
        } else {
            down.insert(key);
        }
    }

    /// Why `tenant`'s enrichment may be incomplete now: its integrations that are not
    /// running (their deliveries and alarms may not be in the index).
    pub(super) fn missing_sources(&self, tenant: &str) -> Option<String> {
        let down = self
            .down
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let names: Vec<String> = down
            .iter()
            .filter(|key| key.is_of(tenant))
            .map(|key| {
                format!(
                    "{} ({})",
                    key.integration,
                    self.plugin_of(tenant, &key.integration)
                )
            })
            .collect();
        (!names.is_empty()).then(|| {
            format!(
                "not running, their deliveries and alarms may be missing: {}",
                names.join(", ")
            )
        })
    }

    pub(super) fn plugin_of(&self, tenant: &str, integration: &str) -> String {
        self.plugins
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&InstanceKey::new(tenant, integration))
            .map(|r| r.plugin.clone())
            .unwrap_or_else(|| integration.to_owned())
    }

    pub(super) fn source(&self, tenant: &str, integration: &str) -> Value {
        json!({"plugin": self.plugin_of(tenant, integration), "integration": integration, "tenant": tenant})
    }
}
