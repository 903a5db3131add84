//! The pipeline's keys and the records every part of it shares: the event log's
//! sequence keys, the collect cursors' keys, the readers' offsets. A leaf: the facade,
//! the committer and the readers all use it.

use super::log::LogError;
use crate::store::StoreError;

/// Why the outbox could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Log(#[from] LogError),
}

/// The registered sinks' offsets, and how far the log has been pruned.
#[derive(Debug)]
pub(super) struct SinkOffsets {
    pub(super) offsets: std::collections::BTreeMap<String, u64>,
    pub(super) pruned: u64,
}

pub(super) fn seq_of(key: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(key).ok().map(u64::from_be_bytes)
}

pub(super) fn corrupt(key: &[u8], reason: &str) -> StoreError {
    StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: reason.to_owned(),
    }
}

pub(super) fn cursor_key(tenant: &str, integration: &str) -> Vec<u8> {
    format!("{tenant}\0{integration}").into_bytes()
}
