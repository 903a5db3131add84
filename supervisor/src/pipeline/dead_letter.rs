//! One dead letter: an event or delivery that could not be accepted, with why and what
//! it was. A leaf record, built by every source and stored by the committer.

use plugin_kit::clock::now_ms;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};

/// An event that could not be accepted, with why and what it was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub id: String,
    pub tenant: String,
    pub integration: String,
    /// `size`, `parse`, `schema`, `binding`, `mapping`, `webhook`, `sink`.
    pub stage: String,
    pub reason: String,
    pub time_ms: u64,
    /// The payload as received (cut at 1 MiB).
    pub payload: String,
}

impl DeadLetter {
    /// A new dead letter, with an id that sorts by time, and by creation within one
    /// millisecond (a process-wide counter), so "the oldest" is exact.
    pub fn new(
        tenant: &str,
        integration: &str,
        stage: &str,
        reason: String,
        payload: &str,
    ) -> Self {
        static CREATED: AtomicU64 = AtomicU64::new(0);
        let now = now_ms();
        let order = CREATED.fetch_add(1, Ordering::Relaxed) & 0xff_ffff;
        Self {
            id: format!(
                "{now:013}-{order:06x}{}",
                hex::encode(rand::random::<[u8; 3]>())
            ),
            tenant: tenant.to_owned(),
            integration: integration.to_owned(),
            stage: stage.to_owned(),
            reason,
            time_ms: now,
            payload: cut(payload, super::MAX_EVENT_BYTES).to_owned(),
        }
    }
}

/// `text` cut to at most `max` bytes on a character boundary.
fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
