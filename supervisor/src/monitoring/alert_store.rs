//! Alerts and their undelivered notifications in the state database. An alert's change
//! and the notifications it causes are written in one transaction, so a crash neither
//! forgets a firing alert nor sends its notification twice as a new one: after a
//! restart the queue is read again and each notification is sent with the idempotency
//! key it was queued with.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use super::alert::{Advance, Alert, AlertState, Notification};
use crate::store::{Batch, Store, StoreError, Table};

/// The queue alert events go through on their way into the pipeline.
pub const EVENTS_QUEUE: &str = "events";

fn corrupt(key: &[u8], err: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: err.to_string(),
    }
}

fn queue_prefix(queue: &str) -> Vec<u8> {
    let mut prefix = queue.as_bytes().to_vec();
    prefix.push(0);
    prefix
}

/// The alerts tables.
#[derive(Debug)]
pub struct AlertStore {
    store: Store,
    next: AtomicU64,
}

impl AlertStore {
    pub fn open(store: Store) -> Result<Self, StoreError> {
        let mut last = 0;
        for (key, _) in store.scan(Table::AlertOutbox, &[])? {
            if let Some(tail) = key.len().checked_sub(8).and_then(|at| key.get(at..)) {
                let mut seq = [0u8; 8];
                seq.copy_from_slice(tail);
                last = last.max(u64::from_be_bytes(seq));
            }
        }
        // Sequence numbers grow across restarts even with an empty queue.
        let start = (plugin_kit::clock::now_ms() << 12).max(last + 1);
        Ok(Self {
            store,
            next: AtomicU64::new(start),
        })
    }

    /// Every alert, resolved ones included.
    pub fn all(&self) -> Result<Vec<Alert>, StoreError> {
        self.store
            .scan(Table::Alerts, &[])?
            .into_iter()
            .map(|(key, value)| serde_json::from_slice(&value).map_err(|e| corrupt(&key, e)))
            .collect()
    }

    /// The pending and firing alerts, by fingerprint.
    pub fn live(&self) -> Result<HashMap<String, Alert>, StoreError> {
        Ok(self
            .all()?
            .into_iter()
            .filter(|a| a.state != AlertState::Resolved)
            .map(|a| (a.fingerprint.clone(), a))
            .collect())
    }

    /// Stores the changed alerts and queues each notification on the queues `route`
    /// names, in one transaction.
    pub fn record(
        &self,
        advance: &Advance,
        route: impl Fn(&Notification) -> Vec<String>,
    ) -> Result<usize, StoreError> {
        let mut batch = Batch::new();
        for alert in &advance.changed {
            let value = serde_json::to_vec(alert).map_err(|e| corrupt(alert.id.as_bytes(), e))?;
            batch = batch.put(Table::Alerts, alert.id.as_bytes().to_vec(), value);
        }
        let mut queued = 0;
        for notification in &advance.notifications {
            let value = serde_json::to_vec(notification)
                .map_err(|e| corrupt(notification.key.as_bytes(), e))?;
            for queue in route(notification) {
                batch = batch.put(Table::AlertOutbox, self.queue_key(&queue), value.clone());
                queued += 1;
            }
        }
        if !batch.is_empty() {
            self.store.apply(&batch)?;
        }
        Ok(queued)
    }

    /// Queues one notification on one queue (a test notification).
    pub fn enqueue(&self, queue: &str, notification: &Notification) -> Result<(), StoreError> {
        let value = serde_json::to_vec(notification)
            .map_err(|e| corrupt(notification.key.as_bytes(), e))?;
        self.store
            .apply(&Batch::new().put(Table::AlertOutbox, self.queue_key(queue), value))
    }

    fn queue_key(&self, queue: &str) -> Vec<u8> {
        let mut key = queue_prefix(queue);
        key.extend_from_slice(&self.next.fetch_add(1, Ordering::SeqCst).to_be_bytes());
        key
    }

    /// The oldest notification waiting on `queue`.
    pub fn next(&self, queue: &str) -> Result<Option<(Vec<u8>, Notification)>, StoreError> {
        let prefix = queue_prefix(queue);
        let Some((key, value)) = self
            .store
            .range_from(Table::AlertOutbox, &prefix, 1)?
            .into_iter()
            .next()
        else {
            return Ok(None);
        };
        if !key.starts_with(&prefix) {
            return Ok(None);
        }
        let notification = serde_json::from_slice(&value).map_err(|e| corrupt(&key, e))?;
        Ok(Some((key, notification)))
    }

    /// A notification was delivered.
    pub fn delivered(&self, key: &[u8]) -> Result<(), StoreError> {
        self.store
            .apply(&Batch::new().delete(Table::AlertOutbox, key.to_vec()))
    }

    /// How many notifications wait on `queue`.
    pub fn waiting(&self, queue: &str) -> Result<usize, StoreError> {
        Ok(self
            .store
            .scan(Table::AlertOutbox, &queue_prefix(queue))?
            .len())
    }

    /// Drops a removed channel's queue.
    pub fn drop_queue(&self, queue: &str) -> Result<usize, StoreError> {
        self.store
            .delete_prefix(Table::AlertOutbox, &queue_prefix(queue), 10_000)
    }

    /// Forgets resolved alerts older than `before_ms`.
    pub fn prune_resolved(&self, before_ms: u64) -> Result<usize, StoreError> {
        let old: Vec<Alert> = self
            .all()?
            .into_iter()
            .filter(|a| {
                a.state == AlertState::Resolved && a.resolved_at_ms.unwrap_or(0) < before_ms
            })
            .collect();
        if old.is_empty() {
            return Ok(0);
        }
        let mut batch = Batch::new();
        for alert in &old {
            batch = batch.delete(Table::Alerts, alert.id.as_bytes().to_vec());
        }
        self.store.apply(&batch)?;
        Ok(old.len())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use plugin_protocol::Severity;

    use super::*;
    use crate::monitoring::alert::{Condition, Lifecycle, advance};

    fn condition() -> Condition {
        Condition {
            rule: "plugin_crash_loop",
            tenant: Some("acme".into()),
            integration: Some("gh".into()),
            subject: None,
            severity: Severity::Critical,
            summary: "crash loop".into(),
            description: String::new(),
            labels: BTreeMap::new(),
            links: Vec::new(),
        }
    }

    #[test]
    fn a_firing_alert_and_its_queued_notifications_survive_a_reopen_in_order() {
        let dir = tempfile::tempdir().expect("dir");
        let life = Lifecycle {
            pending_for: Duration::ZERO,
            repeat_interval: Duration::from_secs(3600),
        };
        {
            let alerts = AlertStore::open(Store::open(dir.path()).expect("store")).expect("open");
            let fired = advance(&alerts.live().expect("live"), &[condition()], 1_000, life);
            let queued = alerts
                .record(&fired, |_| vec!["operator/ops".into(), EVENTS_QUEUE.into()])
                .expect("record");
            assert_eq!(queued, 2);
            let resolved = advance(&alerts.live().expect("live"), &[], 2_000, life);
            alerts
                .record(&resolved, |_| vec!["operator/ops".into()])
                .expect("record");
        }
        let alerts = AlertStore::open(Store::open(dir.path()).expect("store")).expect("reopen");
        assert!(alerts.live().expect("live").is_empty());
        assert_eq!(alerts.all().expect("all")[0].state, AlertState::Resolved);
        assert_eq!(alerts.waiting("operator/ops").expect("waiting"), 2);
        let (key, first) = alerts.next("operator/ops").expect("next").expect("one");
        assert!(first.key.ends_with(":firing"));
        alerts.delivered(&key).expect("done");
        let (_, second) = alerts.next("operator/ops").expect("next").expect("two");
        assert!(second.key.ends_with(":resolved"));
        assert_eq!(alerts.waiting(EVENTS_QUEUE).expect("events"), 1);
        assert!(alerts.next("operator/op").expect("other").is_none());
        assert_eq!(alerts.prune_resolved(3_000).expect("prune"), 1);
    }
}
