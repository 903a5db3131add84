//! The dead-letter queue's bound per tenant. A sender that posts only invalid events
//! must not fill the disk: past `pipeline.dead_letters_per_tenant` the tenant's oldest
//! dead letters make room for the new ones (the newest are the ones worth reading), and
//! each one dropped is counted per tenant (`integrationd_pipeline_dead_letters_evicted`)
//! and logged, never dropped silently. Counts live in memory, counted from the table at
//! start and after any change made outside the committer (replay, purge, a tenant's
//! deletion).

use std::collections::HashMap;
use std::sync::Mutex;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::store::{Batch, Store, StoreError, Table};

/// The default bound.
pub const DEFAULT_DEAD_LETTERS_PER_TENANT: usize = 10_000;

use crate::health::TenantLabel;

#[derive(Debug)]
pub(super) struct DeadLetterBound {
    max: usize,
    counts: Mutex<HashMap<String, usize>>,
    pub(super) evicted: Family<TenantLabel, Counter>,
}

fn prefix(tenant: &str) -> Vec<u8> {
    format!("{tenant}\0").into_bytes()
}

impl DeadLetterBound {
    pub(super) fn open(store: &Store, max: usize) -> Result<Self, StoreError> {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for entry in store.range_iter(Table::DeadLetters, &[], &[0xff]) {
            let (key, _) = entry?;
            if let Some(split) = key.iter().position(|b| *b == 0) {
                *counts
                    .entry(String::from_utf8_lossy(&key[..split]).into_owned())
                    .or_default() += 1;
            }
        }
        Ok(Self {
            max: max.max(1),
            counts: Mutex::new(counts),
            evicted: Family::default(),
        })
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Plans room for `incoming` new dead letters of `tenant` in a commit group whose
    /// earlier submissions `planned` records: the deletions to add to the batch, and
    /// how many of the incoming (the oldest first) are not kept.
    pub(super) fn make_room(
        &self,
        store: &Store,
        tenant: &str,
        incoming: usize,
        planned: &mut GroupPlan,
    ) -> Result<(Batch, usize), StoreError> {
        let stored = self.counts().get(tenant).copied().unwrap_or(0);
        let plan = planned.tenants.entry(tenant.to_owned()).or_default();
        let skipped = incoming.saturating_sub(self.max);
        let kept = incoming - skipped;
        let held = stored.saturating_sub(plan.evicted) + plan.added;
        let mut over = (held + kept).saturating_sub(self.max);
        let mut batch = Batch::new();
        // The oldest stored ones go first (ids sort by time), then ones added earlier
        // in this group would be next; those are not stored yet, so at most the stored.
        let evictable = stored.saturating_sub(plan.evicted);
        let from_store = over.min(evictable);
        if from_store > 0 {
            let oldest = store.range_from(
                Table::DeadLetters,
                &prefix(tenant),
                plan.evicted + from_store,
            )?;
            for (key, _) in oldest
                .into_iter()
                .skip(plan.evicted)
                .take_while(|(key, _)| key.starts_with(&prefix(tenant)))
            {
                batch = batch.delete(Table::DeadLetters, key);
            }
            plan.evicted += from_store;
            over -= from_store;
        }
        // Room that could not be made (earlier letters of this group fill it): the
        // oldest incoming ones are not kept either.
        let not_kept = skipped + over;
        plan.added += incoming - not_kept;
        plan.dropped += not_kept;
        Ok((batch, not_kept))
    }

    /// After the group committed: the counts move and evictions are reported.
    pub(super) fn committed(&self, plan: GroupPlan) {
        let mut counts = self.counts();
        for (tenant, plan) in plan.tenants {
            let count = counts.entry(tenant.clone()).or_default();
            *count = (*count + plan.added).saturating_sub(plan.evicted);
            let dropped = plan.evicted + plan.dropped;
            if dropped > 0 {
                self.evicted
                    .get_or_create(&TenantLabel {
                        tenant: tenant.clone(),
                    })
                    .inc_by(dropped as u64);
                tracing::error!(
                    tenant = %tenant,
                    dropped,
                    max = self.max,
                    "the tenant's dead-letter queue is full: its oldest dead letters were dropped to keep the newest"
                );
            }
        }
    }

    /// Counts `tenant`'s dead letters again (after a replay, purge or deletion).
    /// How many dead letters `tenant` holds.
    pub(super) fn held(&self, tenant: &str) -> usize {
        self.counts().get(tenant).copied().unwrap_or(0)
    }

    pub(super) fn recount(&self, store: &Store, tenant: &str) -> Result<(), StoreError> {
        let from = prefix(tenant);
        let mut to = from.clone();
        to.push(0xff);
        let mut count = 0;
        for entry in store.range_iter(Table::DeadLetters, &from, &to) {
            entry?;
            count += 1;
        }
        self.counts().insert(tenant.to_owned(), count);
        Ok(())
    }
}

/// What one commit group does to each tenant's queue.
#[derive(Debug, Default)]
pub(super) struct GroupPlan {
    tenants: HashMap<String, TenantPlan>,
}

#[derive(Debug, Default)]
struct TenantPlan {
    /// Stored dead letters deleted to make room.
    evicted: usize,
    /// New dead letters kept.
    added: usize,
    /// New dead letters not kept (more than the bound at once).
    dropped: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::{Pipeline, PipelineSettings};

    fn invalid(n: usize) -> String {
        format!("not an event {n}")
    }

    #[test]
    fn a_full_queue_keeps_the_newest_and_counts_what_it_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pipeline = Pipeline::open_with(
            Store::open(dir.path()).expect("store"),
            PipelineSettings {
                dead_letters_per_tenant: 3,
                ..PipelineSettings::default()
            },
            std::sync::Arc::new(crate::pipeline::NoEnrichment),
        )
        .expect("pipeline");
        let good = super::super::commit::tests_support::event;
        for n in 0..4 {
            let outcome = pipeline
                .commit_batch("acme", "gh", &[invalid(n), good(n as u32)], &n.to_string())
                .expect("commit");
            assert_eq!((outcome.stored, outcome.dead_lettered), (1, 1));
        }
        // Five at once: more than the bound; the newest three stay.
        let burst: Vec<String> = (10..15).map(invalid).collect();
        pipeline
            .commit_batch("acme", "gh", &burst, "burst")
            .expect("commit");
        let kept: Vec<String> = pipeline
            .dead_letters("acme")
            .expect("list")
            .into_iter()
            .map(|l| l.payload)
            .collect();
        assert_eq!(kept, [invalid(12), invalid(13), invalid(14)]);
        let dropped = pipeline
            .dead_letter_evictions()
            .get_or_create(&TenantLabel {
                tenant: "acme".into(),
            })
            .get();
        assert_eq!(dropped, 6, "4 + 5 in, 3 kept");
        // An integration's page: its newest first, without payloads, and the count.
        pipeline
            .commit_batch("acme", "other", &[invalid(30)], "30")
            .expect("commit");
        let (total, newest) = pipeline
            .dead_letter_summaries("acme", "gh", 2)
            .expect("summaries");
        assert_eq!(
            total, 2,
            "the bound of 3 kept one of `other`'s and two of gh's"
        );
        let all = pipeline.dead_letters("acme").expect("list");
        let gh: Vec<&str> = all
            .iter()
            .rev()
            .filter(|l| l.integration == "gh")
            .map(|l| l.id.as_str())
            .collect();
        assert_eq!(newest.iter().map(|l| l.id.as_str()).collect::<Vec<_>>(), gh);
        assert_eq!(newest[0].stage, "parse");
        assert_eq!(
            pipeline
                .dead_letter_summaries("acme", "nothing", 5)
                .expect("summaries"),
            (0, Vec::new())
        );
        // Another tenant's queue is its own.
        pipeline
            .commit_batch("globex", "gh", &[invalid(1)], "1")
            .expect("commit");
        assert_eq!(pipeline.dead_letters("globex").expect("list").len(), 1);
        // A purge makes room again, counted from the table.
        pipeline.purge_dead_letters("acme", &[]).expect("purge");
        pipeline
            .commit_batch("acme", "gh", &[invalid(20)], "20")
            .expect("commit");
        assert_eq!(pipeline.dead_letters("acme").expect("list").len(), 1);
    }
}
