//! Which incarnation of a tenant name is current, for the deduplication keys: a tenant
//! deleted and created again under the same name is a new tenant, and the ids its old
//! incarnation committed must not make its own events "duplicates". Remembered while
//! the tenants table is unchanged (`Store::generation`), so the committer reads the
//! database once per tenant, not once per commit.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::store::{Store, Table};
use crate::tenants::Tenants;

#[derive(Debug)]
pub(super) struct Incarnations {
    tenants: Tenants,
    /// The tenants table's generation the memo is valid for, and the memo.
    memo: Mutex<(u64, HashMap<String, u64>)>,
}

impl Incarnations {
    pub(super) fn new(store: Store) -> Self {
        Self {
            tenants: Tenants::new(store),
            memo: Mutex::new((u64::MAX, HashMap::new())),
        }
    }

    /// The current incarnation of `tenant` (0 for names without a record, such as the
    /// operator's `system`, and for tenants created before incarnations existed).
    pub(super) fn of(&self, tenant: &str) -> u64 {
        let generation = self.tenants.store().generation(Table::Tenants);
        let mut memo = self.memo.lock().unwrap_or_else(|p| p.into_inner());
        if memo.0 != generation {
            *memo = (generation, HashMap::new());
        }
        if let Some(known) = memo.1.get(tenant) {
            return *known;
        }
        // An unreadable record is the same tenant as before: 0 keeps its old keys.
        let incarnation = self
            .tenants
            .incarnation(tenant)
            .map_or(0, |incarnation| incarnation.id);
        memo.1.insert(tenant.to_owned(), incarnation);
        incarnation
    }
}
