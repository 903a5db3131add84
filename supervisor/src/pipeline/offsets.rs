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
        let mut records = Vec::new();
        for (key, value) in
            self.store
                .range_from(Table::Outbox, &(offset + 1).to_be_bytes(), limit)?
        {
            let seq = seq_of(&key).ok_or_else(|| corrupt(&key, "not a sequence"))?;
            let location =
                Location::decode(&value).ok_or_else(|| corrupt(&key, "not a log location"))?;
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
