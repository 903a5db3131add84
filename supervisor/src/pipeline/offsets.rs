//! Where each reader of the event log is: the integrations' collect cursors, the sinks'
//! offsets, and pruning what every sink has delivered.

use super::facade::Pipeline;
use super::keys::{ReadError, corrupt, cursor_key, seq_of};
use super::log::Location;
use crate::names::InstanceKey;
use crate::store::{Batch, StoreError, Table};

/// Outbox keys deleted per store batch when a segment is pruned.
const OUTBOX_KEYS_PER_BATCH: u64 = 1_000;

impl Pipeline {
    /// The last committed cursor of an integration ("" before the first batch).
    pub fn cursor(&self, instance: &InstanceKey) -> Result<String, StoreError> {
        Ok(self
            .store
            .get(
                Table::Cursors,
                &cursor_key(&instance.tenant, &instance.integration),
            )?
            .map(|raw| String::from_utf8_lossy(&raw).into_owned())
            .unwrap_or_default())
    }

    /// Up to `limit` commits after `offset`: (sequence, its newline-terminated event
    /// lines).
    pub fn outbox_after(
        &self,
        offset: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, ReadError> {
        self.outbox_within(offset, limit, u64::MAX)
    }

    /// Like [`Pipeline::outbox_after`], but stops before the commit that would take the
    /// lines read past `max_bytes` (the first is read whatever its size): many small
    /// commits are read in one step, a few large ones do not fill memory.
    pub fn outbox_within(
        &self,
        offset: u64,
        limit: usize,
        max_bytes: u64,
    ) -> Result<Vec<(u64, Vec<u8>)>, ReadError> {
        let mut records = Vec::new();
        let mut bytes = 0u64;
        for (key, value) in
            self.store
                .range_from(Table::Outbox, &(offset + 1).to_be_bytes(), limit)?
        {
            let seq = seq_of(&key).ok_or_else(|| corrupt(&key, "not a sequence"))?;
            let location =
                Location::decode(&value).ok_or_else(|| corrupt(&key, "not a log location"))?;
            bytes += u64::from(location.len);
            if bytes > max_bytes && !records.is_empty() {
                break;
            }
            records.push((seq, self.log.read(location)?));
        }
        Ok(records)
    }

    /// Where sink `name` is (0 before its first delivery); registers it, so the log
    /// keeps what it has not delivered.
    pub fn sink_offset(&self, name: &str) -> Result<u64, StoreError> {
        let offset = self
            .store
            .get(Table::SinkOffsets, name.as_bytes())?
            .and_then(|raw| seq_of(&raw))
            .unwrap_or(0);
        let mut sinks = self
            .sinks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        sinks.offsets.insert(name.to_owned(), offset);
        Ok(offset)
    }

    /// Records that sink `name` delivered everything through `offset`, and prunes what
    /// every registered sink has delivered: whole segments of the log, their index
    /// entries first (so the index never points at a deleted file). What stays in the
    /// active segment remains readable (`events tail`).
    pub fn advance_sink(&self, name: &str, offset: u64) -> Result<(), ReadError> {
        let mut sinks = self
            .sinks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        sinks.offsets.insert(name.to_owned(), offset);
        let delivered = sinks.offsets.values().copied().min().unwrap_or(0);
        self.store.apply(&Batch::new().put(
            Table::SinkOffsets,
            name.as_bytes().to_vec(),
            offset.to_be_bytes().to_vec(),
        ))?;
        let prunable = self
            .log
            .prunable_through(delivered)
            .filter(|through| *through > sinks.pruned);
        if let Some(through) = prunable {
            // In batches, oldest first: a segment holds tens of thousands of commits,
            // and one transaction of all their keys costs that much memory at once. A
            // crash between batches leaves the oldest index entries gone and the
            // segment in place, which opening handles like any partly read segment.
            let mut seq = sinks.pruned + 1;
            while seq <= through {
                let last = through.min(seq + OUTBOX_KEYS_PER_BATCH - 1);
                let batch = (seq..=last).fold(Batch::new(), |batch, seq| {
                    batch.delete(Table::Outbox, seq.to_be_bytes().to_vec())
                });
                self.store.apply(&batch)?;
                sinks.pruned = last;
                seq = last + 1;
            }
            self.log.prune_through(through)?;
        }
        Ok(())
    }

    /// The event log's size on disk.
    pub fn log_bytes(&self) -> u64 {
        self.log.bytes()
    }
}

#[cfg(test)]
mod tests {
    use crate::pipeline::Pipeline;
    use crate::pipeline::commit::tests_support::event;
    use crate::store::Store;

    #[test]
    fn a_step_within_a_byte_bound_takes_small_commits_together_and_a_large_one_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pipeline = Pipeline::open(Store::open(dir.path()).expect("store")).expect("pipeline");
        for n in 0..5 {
            pipeline
                .commit_batch("acme", "gh", &[event(n)], &n.to_string())
                .expect("commit");
        }
        let big: Vec<String> = (100..400).map(event).collect();
        pipeline
            .commit_batch("acme", "gh", &big, "big")
            .expect("commit");
        let one = pipeline.outbox_after(0, 1).expect("outbox")[0].1.len() as u64;

        let small = pipeline.outbox_within(0, 100, one * 5).expect("outbox");
        assert_eq!(
            small.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5],
            "the five small commits fit; the large one would pass the bound"
        );
        let large = pipeline.outbox_within(5, 100, one).expect("outbox");
        assert_eq!(large.len(), 1, "a commit over the bound is read alone");
        assert_eq!(
            large[0].1.iter().filter(|b| **b == b'\n').count(),
            300,
            "whole"
        );
        assert_eq!(
            pipeline
                .outbox_within(0, 3, u64::MAX)
                .expect("outbox")
                .len(),
            3,
            "the commit count still bounds a step"
        );
    }
}
