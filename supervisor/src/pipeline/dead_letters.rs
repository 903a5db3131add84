//! The dead-letter queue of a tenant: list, show, replay, purge. Replay sends an entry
//! through validation again (after a plugin or mapping fix, say): a now-valid event is
//! stored and its dead letter removed in the same transaction; one still invalid stays,
//! with the new reason.

use super::commit::CommitError;
use super::dead_letter::DeadLetter;
use super::facade::Pipeline;
use crate::store::{Batch, StoreError, Table};

/// Dead-letter queue errors.
#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    #[error("tenant `{tenant}` has no dead letter `{id}`")]
    Unknown { tenant: String, id: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Commit(#[from] CommitError),
}

/// A dead letter without its payload: what an integration's page lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterSummary {
    pub id: String,
    pub stage: String,
    pub reason: String,
    pub time_ms: u64,
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayOutcome {
    /// Entries now stored as events (or found already stored).
    pub stored: usize,
    pub duplicates: usize,
    /// Entries still invalid, with why.
    pub still_invalid: Vec<(String, String)>,
}

/// A stored dead letter that does not decode.
fn corrupt(key: &[u8], error: &serde_json::Error) -> StoreError {
    StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: error.to_string(),
    }
}

impl Pipeline {
    /// A tenant's dead letters, oldest first.
    pub fn dead_letters(&self, tenant: &str) -> Result<Vec<DeadLetter>, StoreError> {
        self.store
            .scan(Table::DeadLetters, format!("{tenant}\0").as_bytes())?
            .into_iter()
            .map(|(k, v)| serde_json::from_slice(&v).map_err(|e| corrupt(&k, &e)))
            .collect()
    }

    /// The newest `limit` dead letters of one integration, newest first, without their
    /// payloads, and how many it has in all. Each stored letter is read without
    /// copying its payload (for an integration's page, refreshed every few seconds).
    pub fn dead_letter_summaries(
        &self,
        tenant: &str,
        integration: &str,
        limit: usize,
    ) -> Result<(usize, Vec<DeadLetterSummary>), StoreError> {
        #[derive(serde::Deserialize)]
        struct Light<'a> {
            #[serde(borrow)]
            integration: std::borrow::Cow<'a, str>,
            #[serde(borrow)]
            id: std::borrow::Cow<'a, str>,
            #[serde(borrow)]
            stage: std::borrow::Cow<'a, str>,
            #[serde(borrow)]
            reason: std::borrow::Cow<'a, str>,
            time_ms: u64,
        }
        let from = format!("{tenant}\0");
        let to = format!("{tenant}\u{1}");
        let mut total = 0;
        let mut newest: std::collections::VecDeque<DeadLetterSummary> =
            std::collections::VecDeque::with_capacity(limit);
        for entry in self
            .store
            .range_iter(Table::DeadLetters, from.as_bytes(), to.as_bytes())
        {
            let (key, value) = entry?;
            let light: Light<'_> = serde_json::from_slice(&value).map_err(|e| corrupt(&key, &e))?;
            if light.integration != integration {
                continue;
            }
            total += 1;
            if newest.len() == limit {
                newest.pop_front();
            }
            if limit > 0 {
                newest.push_back(DeadLetterSummary {
                    id: light.id.into_owned(),
                    stage: light.stage.into_owned(),
                    reason: light.reason.into_owned(),
                    time_ms: light.time_ms,
                });
            }
        }
        Ok((total, newest.into_iter().rev().collect()))
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
    /// How many dead letters `tenant` holds (kept in memory; no read).
    pub fn dead_letters_held(&self, tenant: &str) -> usize {
        self.dead_letters.held(tenant)
    }

    pub(super) fn recount_dead_letters(&self, tenant: &str) -> Result<(), StoreError> {
        self.dead_letters.recount(&self.store, tenant)
    }
}

fn key(tenant: &str, id: &str) -> Vec<u8> {
    format!("{tenant}\0{id}").into_bytes()
}

impl Pipeline {
    /// One dead letter of a tenant.
    pub fn dead_letter(&self, tenant: &str, id: &str) -> Result<DeadLetter, DeadLetterError> {
        let raw = self
            .store()
            .get(Table::DeadLetters, &key(tenant, id))?
            .ok_or_else(|| DeadLetterError::Unknown {
                tenant: tenant.to_owned(),
                id: id.to_owned(),
            })?;
        serde_json::from_slice(&raw).map_err(|e| {
            DeadLetterError::Store(StoreError::Corrupt {
                key: id.to_owned(),
                reason: e.to_string(),
            })
        })
    }

    /// The named dead letters of a tenant, or all of them when `ids` is empty.
    fn selected(&self, tenant: &str, ids: &[String]) -> Result<Vec<DeadLetter>, DeadLetterError> {
        if ids.is_empty() {
            return Ok(self.dead_letters(tenant)?);
        }
        ids.iter().map(|id| self.dead_letter(tenant, id)).collect()
    }

    /// Sends dead letters through validation again (blocking).
    pub fn replay_dead_letters(
        &self,
        tenant: &str,
        ids: &[String],
    ) -> Result<ReplayOutcome, DeadLetterError> {
        let mut outcome = ReplayOutcome::default();
        let letters = self.selected(tenant, ids)?;
        let replayed = self.replay_each(tenant, letters, &mut outcome);
        self.recount_dead_letters(tenant)?;
        replayed?;
        Ok(outcome)
    }

    fn replay_each(
        &self,
        tenant: &str,
        letters: Vec<DeadLetter>,
        outcome: &mut ReplayOutcome,
    ) -> Result<(), DeadLetterError> {
        for letter in letters {
            let mut submission = self.prepare(
                &letter.tenant,
                &letter.integration,
                std::slice::from_ref(&letter.payload),
            );
            match submission.dead.pop() {
                Some(again) => {
                    // Still invalid: the entry stays, with today's reason.
                    let updated = DeadLetter {
                        reason: again.reason.clone(),
                        stage: again.stage,
                        ..letter.clone()
                    };
                    submission.extra = Batch::new().put(
                        Table::DeadLetters,
                        key(tenant, &letter.id),
                        serde_json::to_vec(&updated).map_err(|e| {
                            DeadLetterError::Store(StoreError::Corrupt {
                                key: letter.id.clone(),
                                reason: e.to_string(),
                            })
                        })?,
                    );
                    self.commit_blocking(submission)?;
                    outcome.still_invalid.push((letter.id, again.reason));
                }
                None => {
                    submission.extra =
                        Batch::new().delete(Table::DeadLetters, key(tenant, &letter.id));
                    let committed = self.commit_blocking(submission)?;
                    outcome.stored += committed.stored;
                    outcome.duplicates += committed.duplicates;
                }
            }
        }
        Ok(())
    }

    /// Deletes the named dead letters of a tenant, or all of them; returns how many.
    pub fn purge_dead_letters(
        &self,
        tenant: &str,
        ids: &[String],
    ) -> Result<usize, DeadLetterError> {
        let letters = self.selected(tenant, ids)?;
        let mut batch = Batch::new();
        for letter in &letters {
            batch = batch.delete(Table::DeadLetters, key(tenant, &letter.id));
        }
        self.store().apply(&batch)?;
        self.recount_dead_letters(tenant)?;
        Ok(letters.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[test]
    fn replay_stores_what_is_now_valid_and_keeps_the_rest_with_its_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pipeline = Pipeline::open(Store::open(dir.path()).expect("store")).expect("pipeline");
        let good = super::super::commit::tests_support::event(1);
        let mut broken: serde_json::Value = serde_json::from_str(&good).expect("json");
        broken["category"] = serde_json::json!("finance");
        pipeline
            .commit_batch("acme", "gh", &[broken.to_string(), "{oops".to_owned()], "1")
            .expect("commit");
        let letters = pipeline.dead_letters("acme").expect("dlq");
        assert_eq!(letters.len(), 2);
        assert!(pipeline.dead_letters("globex").expect("dlq").is_empty());
        assert!(matches!(
            pipeline.dead_letter("globex", &letters[0].id),
            Err(DeadLetterError::Unknown { .. })
        ));

        // "Fix" the first entry, as a corrected mapping would, then replay everything.
        let fixed = DeadLetter {
            payload: good.clone(),
            ..letters[0].clone()
        };
        let schema_letter = if letters[0].stage == "schema" {
            &letters[0]
        } else {
            &letters[1]
        };
        pipeline
            .store()
            .apply(
                &Batch::new().put(
                    Table::DeadLetters,
                    key("acme", &schema_letter.id),
                    serde_json::to_vec(&DeadLetter {
                        id: schema_letter.id.clone(),
                        ..fixed
                    })
                    .expect("json"),
                ),
            )
            .expect("fix");
        let outcome = pipeline.replay_dead_letters("acme", &[]).expect("replay");
        assert_eq!(outcome.stored, 1);
        assert_eq!(outcome.still_invalid.len(), 1);
        let left = pipeline.dead_letters("acme").expect("dlq");
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].stage, "parse");

        assert_eq!(pipeline.purge_dead_letters("acme", &[]).expect("purge"), 1);
        assert!(pipeline.dead_letters("acme").expect("dlq").is_empty());
    }
}
