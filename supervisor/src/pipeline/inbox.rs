//! The webhook inbox: deliveries that arrived while their plugin was down, stored raw
//! (headers and body, as the plugin would have seen them) and flushed before the sender
//! gets its 202. Bounded per tenant, so one tenant's outage cannot fill the disk. An
//! entry leaves in the same transaction that stores the events made from it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use plugin_protocol::v1;
use prost::Message;
use tokio::sync::Notify;

use crate::store::{Batch, Store, StoreError, Table};

/// Why a delivery was not stored.
#[derive(Debug, thiserror::Error)]
pub enum InboxError {
    #[error("the inbox of tenant `{tenant}` is full ({max} deliveries waiting for their plugin)")]
    Full { tenant: String, max: usize },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A stored delivery and its key.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    pub key: Vec<u8>,
    pub request: v1::WebhookRequest,
}

/// The inbox, with each tenant's count in memory.
#[derive(Debug)]
pub struct Inbox {
    store: Store,
    max_per_tenant: usize,
    counts: Mutex<HashMap<String, usize>>,
    next: AtomicU64,
    arrived: Notify,
}

fn prefix(tenant: &str, integration: &str) -> Vec<u8> {
    format!("{tenant}\0{integration}\0").into_bytes()
}

impl Inbox {
    /// Counts what is waiting, per tenant.
    pub fn open(store: Store, max_per_tenant: usize) -> Result<Self, StoreError> {
        let mut counts: HashMap<String, usize> = HashMap::new();
        let mut last = 0;
        for (key, _) in store.scan(Table::Inbox, &[])? {
            if let Some(split) = key.iter().position(|b| *b == 0) {
                *counts
                    .entry(String::from_utf8_lossy(&key[..split]).into_owned())
                    .or_default() += 1;
            }
            if let Some(tail) = key.len().checked_sub(8).and_then(|at| key.get(at..)) {
                let seq = u64::from_be_bytes(tail.try_into().expect("8 bytes"));
                last = last.max(seq);
            }
        }
        // Keys sort by arrival: a time-based start keeps order across restarts.
        let start = (plugin_kit::clock::now_ms() << 20).max(last + 1);
        Ok(Self {
            store,
            max_per_tenant,
            counts: Mutex::new(counts),
            next: AtomicU64::new(start),
            arrived: Notify::new(),
        })
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Stores a delivery durably (flushed), unless the tenant's inbox is full.
    pub fn put(
        &self,
        tenant: &str,
        integration: &str,
        request: &v1::WebhookRequest,
    ) -> Result<(), InboxError> {
        {
            let mut counts = self.counts();
            let count = counts.entry(tenant.to_owned()).or_default();
            if *count >= self.max_per_tenant {
                return Err(InboxError::Full {
                    tenant: tenant.to_owned(),
                    max: self.max_per_tenant,
                });
            }
            *count += 1;
        }
        let mut key = prefix(tenant, integration);
        key.extend_from_slice(&self.next.fetch_add(1, Ordering::SeqCst).to_be_bytes());
        if let Err(err) =
            self.store
                .apply(&Batch::new().put(Table::Inbox, key, request.encode_to_vec()))
        {
            self.release(tenant, 1);
            return Err(err.into());
        }
        self.arrived.notify_waiters();
        Ok(())
    }

    /// The oldest `limit` deliveries of an integration.
    pub fn pending(
        &self,
        tenant: &str,
        integration: &str,
        limit: usize,
    ) -> Result<Vec<Pending>, StoreError> {
        let prefix = prefix(tenant, integration);
        let mut found = Vec::new();
        for (key, value) in self.store.range_from(Table::Inbox, &prefix, limit)? {
            if !key.starts_with(&prefix) {
                break;
            }
            match v1::WebhookRequest::decode(value.as_slice()) {
                Ok(request) => found.push(Pending { key, request }),
                Err(err) => {
                    return Err(StoreError::Corrupt {
                        key: String::from_utf8_lossy(&key).into_owned(),
                        reason: format!("inbox entry: {err}"),
                    });
                }
            }
        }
        Ok(found)
    }

    /// The write that removes an entry (committed with the events made from it).
    pub fn removal(key: &[u8]) -> Batch {
        Batch::new().delete(Table::Inbox, key.to_vec())
    }

    /// Counts entries removed by a committed `removal`.
    pub fn release(&self, tenant: &str, removed: usize) {
        if let Some(count) = self.counts().get_mut(tenant) {
            *count = count.saturating_sub(removed);
        }
    }

    /// Counts a tenant's entries again after they were written outside `put` (a
    /// tenant moved here), and keeps new keys after theirs.
    pub fn recount(&self, tenant: &str) -> Result<(), StoreError> {
        let entries = self
            .store
            .scan(Table::Inbox, format!("{tenant}\0").as_bytes())?;
        let last = entries
            .iter()
            .filter_map(|(key, _)| key.len().checked_sub(8).and_then(|at| key.get(at..)))
            .filter_map(|tail| <[u8; 8]>::try_from(tail).ok())
            .map(u64::from_be_bytes)
            .max()
            .unwrap_or(0);
        self.next.fetch_max(last + 1, Ordering::SeqCst);
        self.counts().insert(tenant.to_owned(), entries.len());
        if !entries.is_empty() {
            self.arrived.notify_waiters();
        }
        Ok(())
    }

    /// Forgets a deleted tenant's count (its entries were removed with it).
    pub fn forget(&self, tenant: &str) {
        self.counts().remove(tenant);
    }

    /// How many deliveries of a tenant wait.
    pub fn waiting(&self, tenant: &str) -> usize {
        self.counts().get(tenant).copied().unwrap_or(0)
    }

    /// Resolves when a delivery is stored after this call (even before it is polled).
    pub fn arrived(&self) -> tokio::sync::futures::Notified<'_> {
        self.arrived.notified()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(n: u8) -> v1::WebhookRequest {
        v1::WebhookRequest {
            headers: vec![v1::Header {
                name: "x-n".into(),
                value: n.to_string(),
            }],
            body: vec![n],
            host_verified: false,
        }
    }

    #[test]
    fn keeps_deliveries_in_order_per_integration_and_bounds_each_tenant() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let inbox = Inbox::open(store.clone(), 2).expect("inbox");
        inbox.put("acme", "gh", &delivery(1)).expect("put");
        inbox.put("acme", "gh2", &delivery(2)).expect("put");
        assert!(matches!(
            inbox.put("acme", "gh", &delivery(3)),
            Err(InboxError::Full { max: 2, .. })
        ));
        inbox
            .put("globex", "gh", &delivery(4))
            .expect("another tenant");
        let pending = inbox.pending("acme", "gh", 10).expect("pending");
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].request, delivery(1));

        store
            .apply(&Inbox::removal(&pending[0].key))
            .expect("remove");
        inbox.release("acme", 1);
        inbox.put("acme", "gh", &delivery(5)).expect("room again");
        drop(inbox);
        let inbox = Inbox::open(store, 2).expect("reopen");
        assert_eq!(inbox.waiting("acme"), 2, "counted again at start");
        let later = inbox.pending("acme", "gh", 10).expect("pending");
        assert_eq!(later[0].request, delivery(5));
        inbox
            .put("acme", "gh", &delivery(6))
            .expect_err("still bounded");
    }
}
