//! Committing what a plugin collected: each batch's valid events (deduplicated by id),
//! its dead letters and the new cursor are written in one transaction and flushed before
//! the plugin's next batch is read. A crash resumes from the last committed cursor, and
//! events read again are recognised by id and dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::validate::EventValidator;
use crate::store::{Batch, Store, StoreError, Table};
use crate::tenants::now_ms;

/// What became of a batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    pub stored: usize,
    pub duplicates: usize,
    pub dead_lettered: usize,
}

/// An event that could not be accepted, with why and what it was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub id: String,
    pub tenant: String,
    pub integration: String,
    /// `size`, `parse`, `schema`, `binding`.
    pub stage: String,
    pub reason: String,
    pub time_ms: u64,
    /// The payload as received (cut at 1 MiB).
    pub payload: String,
}

/// The pull path's durable state and the sinks' wake-up.
#[derive(Debug)]
pub struct Pipeline {
    store: Store,
    validator: EventValidator,
    next_seq: AtomicU64,
    committed: Arc<Notify>,
    writer: std::sync::Mutex<()>,
}

fn event_key(tenant: &str, id: &str) -> Vec<u8> {
    format!("{tenant}\0{id}").into_bytes()
}

fn cursor_key(tenant: &str, integration: &str) -> Vec<u8> {
    format!("{tenant}\0{integration}").into_bytes()
}

impl Pipeline {
    pub fn open(store: Store) -> Result<Self, StoreError> {
        let last = store
            .last_key(Table::Outbox)?
            .and_then(|k| <[u8; 8]>::try_from(k.as_slice()).ok())
            .map_or(0, u64::from_be_bytes);
        Ok(Self {
            store,
            validator: EventValidator::new(),
            next_seq: AtomicU64::new(last + 1),
            committed: Arc::new(Notify::new()),
            writer: std::sync::Mutex::new(()),
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

    /// Validates and commits one batch with its cursor.
    pub fn commit_batch(
        &self,
        tenant: &str,
        integration: &str,
        events: &[String],
        cursor: &str,
    ) -> Result<BatchOutcome, StoreError> {
        let _turn = self
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut outcome = BatchOutcome::default();
        let mut batch = Batch::new().put(
            Table::Cursors,
            cursor_key(tenant, integration),
            cursor.as_bytes().to_vec(),
        );
        let mut seen = std::collections::HashSet::new();
        let mut seq = self.next_seq.load(Ordering::SeqCst);
        let now = now_ms();
        for (index, raw) in events.iter().enumerate() {
            match self.validator.validate(raw, tenant, integration) {
                Ok(event) => {
                    let key = event_key(tenant, &event.id);
                    if !seen.insert(event.id.clone()) || self.store.contains(Table::Events, &key)? {
                        outcome.duplicates += 1;
                        continue;
                    }
                    let json = serde_json::to_string(&event).map_err(|e| StoreError::Corrupt {
                        key: event.id.clone(),
                        reason: e.to_string(),
                    })?;
                    batch = batch
                        .put(Table::Events, key, seq.to_be_bytes().to_vec())
                        .put(Table::Outbox, seq.to_be_bytes().to_vec(), json);
                    seq += 1;
                    outcome.stored += 1;
                }
                Err(rejection) => {
                    let letter = DeadLetter {
                        id: format!(
                            "{now:013}-{index:05}-{}",
                            hex::encode(rand::random::<[u8; 4]>())
                        ),
                        tenant: tenant.to_owned(),
                        integration: integration.to_owned(),
                        stage: rejection.stage.to_owned(),
                        reason: rejection.reasons.join("; "),
                        time_ms: now,
                        payload: raw.chars().take(super::MAX_EVENT_BYTES).collect(),
                    };
                    let value = serde_json::to_vec(&letter).map_err(|e| StoreError::Corrupt {
                        key: letter.id.clone(),
                        reason: e.to_string(),
                    })?;
                    batch = batch.put(
                        Table::DeadLetters,
                        format!("{tenant}\0{}", letter.id),
                        value,
                    );
                    outcome.dead_lettered += 1;
                }
            }
        }
        self.store.apply(&batch)?;
        self.next_seq.store(seq, Ordering::SeqCst);
        self.committed.notify_waiters();
        Ok(outcome)
    }

    /// Up to `limit` outbox entries after `offset`: (sequence, event JSON).
    pub fn outbox_after(
        &self,
        offset: u64,
        limit: usize,
    ) -> Result<Vec<(u64, String)>, StoreError> {
        Ok(self
            .store
            .range_from(Table::Outbox, &(offset + 1).to_be_bytes(), limit)?
            .into_iter()
            .filter_map(|(k, v)| {
                let seq = u64::from_be_bytes(<[u8; 8]>::try_from(k.as_slice()).ok()?);
                Some((seq, String::from_utf8_lossy(&v).into_owned()))
            })
            .collect())
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

    /// The store, for the sinks' offsets.
    pub fn store(&self) -> &Store {
        &self.store
    }
}

#[cfg(test)]
mod tests {
    use plugin_kit::{Category, EventBuilder, MapContext};

    use super::*;

    fn event(n: u32) -> String {
        let context = MapContext {
            tenant: "acme".into(),
            integration: "gh".into(),
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
            vec![1, 2, 3]
        );
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
        assert_eq!(pipeline.outbox_after(3, 10).expect("outbox")[0].0, 4);
    }
}
