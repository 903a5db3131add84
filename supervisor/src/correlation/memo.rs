//! Reads that realtime failures reuse for a short while: a burst of failures after one
//! deployment asks the same questions of the index.

use std::collections::HashMap;
use std::time::Duration;

use super::MAX_ANSWERS;

/// How long a read of the newest deployments is reused.
pub(super) const RECENT_TTL: Duration = Duration::from_secs(2);
/// Events older than this (against the clock) are not realtime: no cache.
pub(super) const RECENT_TTL_MS: u64 = 5 * 60 * 1000;

/// Reads that realtime failures reuse for [`RECENT_TTL`]: a burst after one deployment
/// reads the same deployments, suspects and alarms. Entries are dropped when the index gains what
/// could change them.
#[derive(Debug)]
pub(super) struct Memo<K, V> {
    entries: std::sync::Mutex<HashMap<K, (V, std::time::Instant)>>,
}

impl<K, V> Default for Memo<K, V> {
    fn default() -> Self {
        Self {
            entries: std::sync::Mutex::new(HashMap::new()),
        }
    }
}

impl<K: std::hash::Hash + Eq, V: Clone> Memo<K, V> {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, (V, std::time::Instant)>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn get(&self, key: &K) -> Option<V> {
        self.lock()
            .get(key)
            .filter(|(_, at)| at.elapsed() < RECENT_TTL)
            .map(|(value, _)| value.clone())
    }

    pub(super) fn put(&self, key: K, value: V) {
        let mut entries = self.lock();
        if entries.len() >= MAX_ANSWERS {
            entries.retain(|_, (_, at)| at.elapsed() < RECENT_TTL);
        }
        entries.insert(key, (value, std::time::Instant::now()));
    }

    /// Drops the entries `stale` names.
    pub(super) fn forget(&self, mut stale: impl FnMut(&K) -> bool) {
        self.lock().retain(|key, _| !stale(key));
    }
}
