//! Moving a state directory of an earlier development format forward.

use super::dedup;
use super::keys::{corrupt, seq_of};
use super::log::{EventLog, Location};
use crate::pipeline::OpenError;
use crate::store::{Batch, Store, Table};

/// Development builds before the event log kept each event in the outbox itself and
/// indexed events one key each (`tenant\0id` → sequence): moves such events into the
/// log (one record each) and their ids into per-commit digest lists.
pub(super) fn migrate_unlogged(
    store: &Store,
    log_dir: &std::path::Path,
    segment_bytes: u64,
) -> Result<(), OpenError> {
    let first = store.range_from(Table::Outbox, &[], 1)?;
    let Some((_, value)) = first.first() else {
        return Ok(());
    };
    if Location::decode(value).is_some() && value.len() == 20 {
        return Ok(());
    }
    let log = EventLog::open(log_dir, segment_bytes, None, None)?;
    let mut batch = Batch::new();
    // The old per-event index entries go; each record's digests come from its events,
    // which name their source.
    for (key, _) in store.scan(Table::Events, &[])? {
        if key.contains(&0) {
            batch = batch.delete(Table::Events, key);
        }
    }
    #[derive(serde::Deserialize)]
    struct Source<'a> {
        #[serde(borrow)]
        tenant: std::borrow::Cow<'a, str>,
        #[serde(borrow)]
        integration: std::borrow::Cow<'a, str>,
        #[serde(borrow)]
        id: std::borrow::Cow<'a, str>,
    }
    let mut moved = 0usize;
    for (key, value) in store.scan(Table::Outbox, &[])? {
        let seq = seq_of(&key).ok_or_else(|| corrupt(&key, "not a sequence"))?;
        let digests: Vec<u128> = value
            .split(|b| *b == b'\n')
            .filter_map(|line| serde_json::from_slice::<Source>(line).ok())
            .map(|event| dedup::id_digest(&event.tenant, 0, &event.integration, &event.id))
            .collect();
        let mut record = value;
        record.push(b'\n');
        let location = log.append(seq, &record)?;
        batch = batch.put(Table::Outbox, key.clone(), location.encode());
        if !digests.is_empty() {
            batch = batch.put(Table::Events, key, dedup::encode(&digests));
        }
        moved += 1;
    }
    store.apply(&batch)?;
    tracing::info!(events = moved, "moved outbox events into the event log");
    Ok(())
}
