//! What a deleted tenant leaves in the pipeline: its dead letters, inbox, collect
//! cursors and correlation index are removed; its events in the shared log (which the
//! sinks may still deliver) stay, but out of reach of a new tenant of the same name,
//! whose record starts past them (`Tenant::since_event_seq`).

use super::facade::Pipeline;
use crate::store::{StoreError, Table};

/// The tables whose keys start with `tenant \0` and hold nothing but the tenant's own.
pub const TENANT_TABLES: [Table; 10] = [
    Table::DeadLetters,
    Table::Inbox,
    Table::Cursors,
    Table::Deliveries,
    Table::Commits,
    Table::Pulls,
    Table::AlarmStates,
    Table::Failures,
    Table::EnrichJobs,
    Table::Resolutions,
];

/// Writes per transaction when removing a tenant's entries.
const REMOVALS_PER_BATCH: usize = 10_000;

impl Pipeline {
    /// Removes everything the pipeline keeps for `tenant` (blocking). Call it after the
    /// tenant's record is gone and under the store's writer turn, so that nothing can
    /// write for that name meanwhile. Returns how many entries were removed.
    pub fn forget_tenant(&self, tenant: &str) -> Result<usize, StoreError> {
        let prefix = format!("{tenant}\0").into_bytes();
        let mut removed = 0;
        for table in TENANT_TABLES {
            removed += self
                .store()
                .delete_prefix(table, &prefix, REMOVALS_PER_BATCH)?;
        }
        self.recount_dead_letters(tenant)?;
        self.inbox().forget(tenant);
        self.forget_mappings(tenant);
        self.enricher.forget_tenant(tenant);
        Ok(removed)
    }
}

impl Pipeline {
    /// Takes in what was written for `tenant` outside the pipeline (its state handed
    /// over by another node): counts its dead letters and inbox again, and drops
    /// cached enrichment lookups.
    pub fn adopt_tenant(&self, tenant: &str) -> Result<(), StoreError> {
        self.recount_dead_letters(tenant)?;
        self.inbox().recount(tenant)?;
        self.enricher.forget_tenant(tenant);
        Ok(())
    }
}
