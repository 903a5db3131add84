//! The live health facts of every integration, recorded from the data path (collect
//! results, webhook outcomes, checks, breakers) as it runs. One short lock per record;
//! nothing here waits on I/O, so the data path never waits on health.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use plugin_protocol::ErrorClass;

use super::model::{Breaker, FIVE_MINUTES, Facts, ONE_DAY};
use crate::names::InstanceKey;

/// What a recorded failure means for the integration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureVerdict {
    /// Consecutive failures that need a person, this one included.
    pub refusals: u32,
    /// Consecutive failures of any kind.
    pub failures: u32,
}

/// Health facts by integration.
#[derive(Debug)]
pub struct HealthBook {
    records: Mutex<HashMap<InstanceKey, Facts>>,
    /// Whether committed batches and webhook deliveries are recorded (see
    /// `health.record_data_path`).
    data_path: bool,
}

impl Default for HealthBook {
    fn default() -> Self {
        Self::new()
    }
}

impl HealthBook {
    pub fn new() -> Self {
        Self::recording_data_path(true)
    }

    /// A book that records the data path's successes or, for measuring their cost,
    /// does not.
    pub fn recording_data_path(data_path: bool) -> Self {
        Self {
            records: Mutex::default(),
            data_path,
        }
    }

    fn with<T>(
        &self,
        key: &InstanceKey,
        plugin: Option<&str>,
        change: impl FnOnce(&mut Facts) -> T,
    ) -> T {
        let now = plugin_kit::clock::now_ms();
        let mut records = self
            .records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let facts = records
            .entry(key.clone())
            .or_insert_with(|| Facts::new(plugin.unwrap_or(""), now));
        if let Some(plugin) = plugin
            && facts.plugin != plugin
        {
            plugin.clone_into(&mut facts.plugin);
        }
        change(facts)
    }

    /// An instance exists (it may not run yet).
    pub fn known(&self, key: &InstanceKey, plugin: &str) {
        self.with(key, Some(plugin), |_| {});
    }

    /// Its plugin runs and collects every `poll_interval` (or does not collect).
    pub fn running(&self, key: &InstanceKey, collects: bool, poll_interval: Duration) {
        self.with(key, None, |facts| {
            facts.collects = collects;
            facts.poll_interval = poll_interval;
        });
    }

    /// Its plugin does not collect for it: only its webhooks and heartbeats say how it
    /// is, and it is not "starting" for want of a collect.
    pub fn not_collecting(&self, key: &InstanceKey) {
        self.with(key, None, |facts| facts.collects = false);
    }

    /// A collected batch was committed: `stored` events, `dead_lettered` sent to the
    /// dead-letter queue; `newest_event_ms` is the latest event time in it.
    pub fn collected(
        &self,
        key: &InstanceKey,
        (stored, dead_lettered): (usize, usize),
        newest_event_ms: Option<u64>,
    ) {
        if !self.data_path {
            return;
        }
        let now = plugin_kit::clock::now_ms();
        self.with(key, None, |facts| {
            facts.succeeded(now);
            facts.events.add(now, stored as u64);
            if let Some(newest) = newest_event_ms {
                facts.last_event_ms = Some(facts.last_event_ms.map_or(newest, |t| t.max(newest)));
                facts.lag_ms = Some(now.saturating_sub(newest));
            }
            facts.dead_letters.add(now, dead_lettered as u64, ONE_DAY);
        });
    }

    /// A collect stream ended well: the integration works, with or without new data.
    pub fn collect_passed(&self, key: &InstanceKey) {
        if !self.data_path {
            return;
        }
        let now = plugin_kit::clock::now_ms();
        self.with(key, None, |facts| facts.succeeded(now));
    }

    /// A collect call, stream or commit failed.
    pub fn collect_failed(
        &self,
        key: &InstanceKey,
        class: ErrorClass,
        message: &str,
    ) -> FailureVerdict {
        self.failed(key, "collect", class, message)
    }

    /// Something of this integration failed (`source`: collect, check, webhook).
    pub fn failed(
        &self,
        key: &InstanceKey,
        source: &'static str,
        class: ErrorClass,
        message: &str,
    ) -> FailureVerdict {
        let now = plugin_kit::clock::now_ms();
        self.with(key, None, |facts| {
            facts.failed(source, class, message, now);
            FailureVerdict {
                refusals: facts.consecutive_refusals,
                failures: facts.consecutive_failures,
            }
        })
    }

    /// Its process ended against our wishes (crash, hang, failed start).
    pub fn process_failed(&self, key: &InstanceKey, reason: &str) {
        let now = plugin_kit::clock::now_ms();
        self.with(key, None, |facts| {
            facts.error(super::model::LastError {
                class: ErrorClass::Internal,
                message: reason.to_owned(),
                source: "process",
                at_ms: now,
            });
        });
    }

    /// A `Check` ran: a pass clears a refusal streak (the credential works again).
    pub fn checked(&self, key: &InstanceKey, failure: Option<(ErrorClass, &str)>) {
        let now = plugin_kit::clock::now_ms();
        self.with(key, None, |facts| {
            facts.last_check = Some((now, failure.is_none()));
            match failure {
                None => {
                    if facts.last_error().is_some_and(|e| e.class.needs_action()) {
                        facts.consecutive_refusals = 0;
                        facts.consecutive_failures = 0;
                    }
                }
                Some((class, message)) => facts.failed("check", class, message, now),
            }
        });
    }

    /// The breakers its plugin reported.
    pub fn breakers(&self, key: &InstanceKey, reported: &[plugin_protocol::v1::DependencyStatus]) {
        let now = plugin_kit::clock::now_ms();
        self.with(key, None, |facts| {
            let before = std::mem::take(&mut facts.breakers);
            facts.breakers = super::kept_dependencies(reported)
                .map(|dependency| {
                    let open_since_ms = (dependency.breaker == "open").then(|| {
                        before
                            .iter()
                            .find(|b| b.name == dependency.name)
                            .and_then(|b| b.open_since_ms)
                            .unwrap_or(now)
                    });
                    Breaker {
                        name: dependency.name.clone(),
                        state: dependency.breaker.clone(),
                        detail: dependency.detail.clone(),
                        open_since_ms,
                    }
                })
                .collect();
        });
    }

    /// A webhook delivery to a known integration was answered: accepted (stored or
    /// acknowledged) or refused. Returns false for an unknown integration, which gets
    /// no record: strangers' names are not kept.
    pub fn webhook(&self, key: &InstanceKey, accepted: bool, dead_lettered: usize) -> bool {
        if !self.data_path {
            return false;
        }
        let now = plugin_kit::clock::now_ms();
        let mut records = self
            .records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(facts) = records.get_mut(key) else {
            return false;
        };
        if accepted {
            facts.webhooks_accepted.add(now, 1, FIVE_MINUTES);
            facts.successes.add(now, 1, super::model::ONE_HOUR);
            // An integration fed by webhooks alone succeeds when one is taken; one that
            // collects keeps its last success (and its freshness) for its collects.
            if !facts.collects {
                facts.last_success_ms = Some(now);
            }
        } else {
            facts.webhooks_refused.add(now, 1, FIVE_MINUTES);
        }
        facts.dead_letters.add(now, dead_lettered as u64, ONE_DAY);
        true
    }

    /// What a webhook delivery to a known integration became: events stored, events
    /// sent to the dead-letter queue.
    pub fn webhook_committed(&self, key: &InstanceKey, stored: usize, dead_lettered: usize) {
        if !self.data_path || stored + dead_lettered == 0 {
            return;
        }
        let now = plugin_kit::clock::now_ms();
        if let Some(facts) = self
            .records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get_mut(key)
        {
            facts.events.add(now, stored as u64);
            facts.dead_letters.add(now, dead_lettered as u64, ONE_DAY);
        }
    }

    /// Whether the book knows the integration.
    pub fn knows(&self, key: &InstanceKey) -> bool {
        self.records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains_key(key)
    }

    /// Every integration's facts as they are now.
    pub fn snapshot(&self) -> Vec<(InstanceKey, Facts)> {
        self.records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(key, facts)| (key.clone(), facts.clone()))
            .collect()
    }

    /// One integration's facts.
    pub fn get(&self, key: &InstanceKey) -> Option<Facts> {
        self.records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(key)
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_count_until_a_success_and_a_passing_check_clears_refusals() {
        let book = HealthBook::new();
        let key = InstanceKey::new("acme", "gh");
        book.known(&key, "github");
        assert_eq!(
            book.collect_failed(&key, ErrorClass::Auth, "401"),
            FailureVerdict {
                refusals: 1,
                failures: 1
            }
        );
        assert_eq!(
            book.collect_failed(&key, ErrorClass::Auth, "401").refusals,
            2
        );
        book.checked(&key, None);
        let facts = book.get(&key).expect("known");
        assert_eq!(facts.consecutive_refusals, 0);
        assert_eq!(facts.last_check.map(|(_, ok)| ok), Some(true));
        book.collect_failed(&key, ErrorClass::Unavailable, "502");
        book.collected(&key, (5, 2), Some(1));
        book.webhook_committed(&key, 3, 0);
        book.webhook_committed(&InstanceKey::new("stranger", "x"), 3, 0);
        let facts = book.get(&key).expect("known");
        let now = plugin_kit::clock::now_ms();
        assert_eq!(facts.events.last_hour(now).iter().sum::<u64>(), 8);
        assert_eq!(facts.consecutive_failures, 0);
        assert_eq!(facts.last_event_ms, Some(1));
        assert_eq!(
            facts
                .dead_letters
                .within(plugin_kit::clock::now_ms(), ONE_DAY),
            2
        );
        assert!(book.webhook(&key, false, 1));
        assert!(!book.webhook(&InstanceKey::new("stranger", "x"), true, 0));
        assert!(!book.knows(&InstanceKey::new("stranger", "x")));
    }

    #[test]
    fn an_integration_its_plugin_does_not_collect_for_is_not_kept_starting() {
        use super::super::model::{HealthState, ProcessPhase, assess};
        use crate::config::HealthConfig;
        let book = HealthBook::new();
        let key = InstanceKey::new("acme", "gh-webhooks-only");
        book.known(&key, "github");
        book.running(&key, true, Duration::from_secs(60));
        let state = |book: &HealthBook| {
            let mut facts = book.get(&key).expect("known");
            facts.phase = ProcessPhase::Running;
            assess(
                &facts,
                plugin_kit::clock::now_ms(),
                &HealthConfig::default(),
            )
            .0
        };
        assert_eq!(state(&book), HealthState::Starting, "waiting for a collect");
        book.not_collecting(&key);
        assert_eq!(state(&book), HealthState::Healthy);
        assert!(book.webhook(&key, true, 0));
        assert!(
            book.get(&key).expect("known").last_success_ms.is_some(),
            "its last success is its last webhook"
        );
        let collecting = InstanceKey::new("acme", "gh-api");
        book.known(&collecting, "github");
        book.running(&collecting, true, Duration::from_secs(60));
        book.webhook(&collecting, true, 0);
        assert_eq!(
            book.get(&collecting).expect("known").last_success_ms,
            None,
            "a collecting integration's last success is its collects'"
        );
    }

    #[test]
    fn an_open_breaker_keeps_the_time_it_opened() {
        let book = HealthBook::new();
        let key = InstanceKey::new("acme", "cw");
        let open = plugin_protocol::v1::DependencyStatus {
            name: "cloudwatch 1/eu-west-1".into(),
            breaker: "open".into(),
            detail: String::new(),
            calls: None,
        };
        book.breakers(&key, std::slice::from_ref(&open));
        let since = book.get(&key).expect("known").breakers[0].open_since_ms;
        book.breakers(&key, std::slice::from_ref(&open));
        assert_eq!(
            book.get(&key).expect("known").breakers[0].open_since_ms,
            since
        );
        let closed = plugin_protocol::v1::DependencyStatus {
            breaker: "closed".into(),
            ..open
        };
        book.breakers(&key, &[closed]);
        assert_eq!(
            book.get(&key).expect("known").breakers[0].open_since_ms,
            None
        );
    }
}
