//! The window of recently committed event ids, in memory, rebuilt at start from the
//! per-commit digest lists stored beside the outbox.
//!
//! Keeping one sled key per event made the index the pipeline's bottleneck (about 10 µs
//! an insert, measured); one digest list per commit costs one key. Like NATS JetStream's
//! duplicate window, it remembers a bounded number of ids: the latest
//! `pipeline.dedup_window` events (one million by default). Sources repeat recent events
//! (a restart from a cursor, a lookback, a webhook redelivery), which the window covers;
//! a repeat older than the window is delivered again, still with its id, so consumers can
//! drop it.

use std::collections::{HashSet, VecDeque};

use sha2::{Digest, Sha256};

/// Bytes of an id digest as stored.
pub const DIGEST_BYTES: usize = 16;

/// The digest of an event id within its source, an integration of one incarnation of a
/// tenant (stable across restarts). Ids are deterministic, so a digest per tenant alone
/// let one source (a platform client posting first) make another's real event a
/// "duplicate", and a deleted tenant's ids suppress those of a new tenant of its name.
pub fn id_digest(tenant: &str, incarnation: u64, integration: &str, id: &str) -> u128 {
    let mut hasher = Sha256::new();
    hasher.update(tenant.as_bytes());
    hasher.update([0u8]);
    hasher.update(incarnation.to_be_bytes());
    hasher.update(integration.as_bytes());
    hasher.update([0u8]);
    hasher.update(id.as_bytes());
    let digest = hasher.finalize();
    let mut first = [0u8; DIGEST_BYTES];
    first.copy_from_slice(&digest[..DIGEST_BYTES]);
    u128::from_be_bytes(first)
}

/// Encodes a commit's digests for storage.
pub fn encode(digests: &[u128]) -> Vec<u8> {
    digests.iter().flat_map(|d| d.to_be_bytes()).collect()
}

/// Decodes a stored digest list (a torn tail is ignored).
pub fn decode(raw: &[u8]) -> Vec<u128> {
    raw.chunks_exact(DIGEST_BYTES)
        .map(|chunk| {
            let mut bytes = [0u8; DIGEST_BYTES];
            bytes.copy_from_slice(chunk);
            u128::from_be_bytes(bytes)
        })
        .collect()
}

/// The ids of the latest commits, at most `capacity` (whole commits are evicted).
///
/// The ids of all commits are one queue, and each commit is its sequence and how many
/// of them are its: a webhook commits an event or two, and a `Vec` per commit cost more
/// than its ids (a heap block and its header each, per commit).
#[derive(Debug)]
pub struct DedupWindow {
    seen: HashSet<u128>,
    /// The remembered ids, in commit order, oldest first.
    ids: VecDeque<u128>,
    /// Each remembered commit's sequence and number of ids, oldest first.
    commits: VecDeque<(u64, u32)>,
    capacity: usize,
}

impl DedupWindow {
    pub fn new(capacity: usize) -> Self {
        Self {
            seen: HashSet::new(),
            ids: VecDeque::new(),
            commits: VecDeque::new(),
            capacity,
        }
    }

    pub fn contains(&self, digest: u128) -> bool {
        self.seen.contains(&digest)
    }

    /// Remembers commit `seq`'s ids, forgetting the oldest commits beyond the capacity;
    /// returns the sequences forgotten.
    pub fn push(&mut self, seq: u64, digests: Vec<u128>) -> Vec<u64> {
        self.seen.extend(digests.iter().copied());
        self.commits.push_back((seq, count(&digests)));
        self.ids.extend(digests);
        let mut forgotten = Vec::new();
        while self.ids.len() > self.capacity && self.commits.len() > 1 {
            if let Some((old_seq, n)) = self.commits.pop_front() {
                for digest in self.ids.drain(..n as usize) {
                    self.seen.remove(&digest);
                }
                forgotten.push(old_seq);
            }
        }
        forgotten
    }

    /// Forgets the latest commit (it could not be stored after all). Commits evicted
    /// by its push stay forgotten: that only narrows the window.
    pub fn forget_last(&mut self) {
        if let Some((_, n)) = self.commits.pop_back() {
            let from = self.ids.len() - n as usize;
            for digest in self.ids.drain(from..) {
                self.seen.remove(&digest);
            }
        }
    }

    /// Whether older commits should still be loaded at start.
    pub fn wants_more(&self) -> bool {
        self.ids.len() < self.capacity
    }

    /// Adds an older commit in front (loading newest first at start).
    pub fn push_older(&mut self, seq: u64, digests: Vec<u128>) {
        self.seen.extend(digests.iter().copied());
        self.commits.push_front((seq, count(&digests)));
        for digest in digests.into_iter().rev() {
            self.ids.push_front(digest);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.ids.len()
    }
}

/// A commit's number of ids (a commit holds at most a batch, far below `u32::MAX`).
fn count(digests: &[u128]) -> u32 {
    u32::try_from(digests.len()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_the_latest_commits_only() {
        let mut window = DedupWindow::new(4);
        assert!(window.push(1, vec![1, 2]).is_empty());
        assert!(window.push(2, vec![3, 4]).is_empty());
        assert!(window.contains(1) && window.contains(4));
        assert_eq!(window.push(3, vec![5]), vec![1]);
        assert!(
            !window.contains(1) && !window.contains(2),
            "oldest commit evicted"
        );
        assert!(window.contains(3) && window.contains(5));
        assert_eq!(window.len(), 3);
    }

    #[test]
    fn a_commit_forgotten_or_loaded_older_keeps_the_others_ids() {
        let mut window = DedupWindow::new(10);
        window.push(5, vec![50, 51]);
        window.push_older(4, vec![40, 41, 42]);
        window.push_older(3, vec![30]);
        window.push(6, vec![60, 61]);
        window.forget_last();
        assert!(!window.contains(60) && !window.contains(61));
        assert!([30, 40, 41, 42, 50, 51].iter().all(|d| window.contains(*d)));
        assert_eq!(window.len(), 6);
        // Eviction goes oldest first, whole commits: 3, then 4.
        assert_eq!(window.push(7, vec![70, 71, 72, 73, 74, 75]), vec![3, 4]);
        assert!(!window.contains(30) && !window.contains(42));
        assert!(window.contains(50) && window.contains(75));
        assert_eq!(window.len(), 8);
    }

    #[test]
    fn digests_round_trip_and_separate_tenants() {
        let a = id_digest("acme", 7, "gh", "ev_1");
        assert_eq!(a, id_digest("acme", 7, "gh", "ev_1"));
        assert_ne!(a, id_digest("globex", 7, "gh", "ev_1"));
        assert_ne!(
            a,
            id_digest("acme", 7, "platform", "ev_1"),
            "another source's id"
        );
        assert_ne!(
            a,
            id_digest("acme", 8, "gh", "ev_1"),
            "a recreated tenant's id"
        );
        assert_ne!(id_digest("ab", 0, "x", "c"), id_digest("a", 0, "bx", "c"));
        let raw = encode(&[a, 7]);
        assert_eq!(decode(&raw), vec![a, 7]);
        assert_eq!(decode(&raw[..20]), vec![a], "a torn tail is ignored");
    }
}
