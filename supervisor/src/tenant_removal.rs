//! Removing everything this node keeps for a tenant, in one audited commit: when the
//! tenant is deleted, and when it has moved to another node of a cluster (its state
//! went with it). Both must leave nothing behind, so both use this.

use std::sync::Arc;

use crate::credentials::{CredentialError, Credentials};
use crate::integrations::{IntegrationError, Integrations};
use crate::pipeline::Pipeline;
use crate::store::{AuditDraft, Store, StoreError, Table};
use crate::tenants::{TenantError, Tenants};

/// Why a tenant's state could not be removed; nothing was, then.
#[derive(Debug, thiserror::Error)]
pub enum RemovalError {
    #[error(transparent)]
    Tenant(#[from] TenantError),
    #[error(transparent)]
    Integration(#[from] IntegrationError),
    #[error(transparent)]
    Credential(#[from] CredentialError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a removal took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Removed {
    pub tokens: usize,
    pub integrations: usize,
    /// `None` without a master key (no credentials can exist).
    pub credentials: Option<usize>,
    /// Dead letters, inbox, cursors and correlation index entries.
    pub pipeline_entries: usize,
}

/// The components that keep a tenant's state.
#[derive(Debug, Clone)]
pub struct TenantState {
    pub store: Store,
    pub tenants: Tenants,
    pub integrations: Integrations,
    pub credentials: Option<Arc<Credentials>>,
    pub pipeline: Arc<Pipeline>,
}

impl TenantState {
    /// Removes `name`'s record, tokens, flags, integrations, alert channels, key and
    /// credentials in one commit audited as `action` by `actor`, then what the
    /// pipeline keeps for it, under the same writer turn (no one can create the name
    /// again meanwhile). Blocking. Its events in the shared log stay, out of a new
    /// tenant's reach.
    pub fn remove(&self, name: &str, actor: &str, action: &str) -> Result<Removed, RemovalError> {
        let _turn = self.store.writer();
        let tokens = self.tenants.tokens(name)?.len();
        let mut batch = self.tenants.delete_batch(name)?;
        let integrations = self.integrations.list(Some(name)).map_or(0, |l| l.len());
        batch.extend(self.integrations.delete_tenant_batch(name)?);
        for (key, _) in self
            .store
            .scan(Table::AlertChannels, format!("{name}\0").as_bytes())?
        {
            batch = batch.delete(Table::AlertChannels, key);
        }
        let mut detail =
            format!("{tokens} token(s) revoked; {integrations} integration(s) removed");
        let credentials = match &self.credentials {
            Some(credentials) => {
                let count = credentials.list(name)?.len();
                batch.extend(credentials.delete_tenant_batch(name)?);
                detail.push_str(&format!("; key and {count} credential(s) destroyed"));
                Some(count)
            }
            None => None,
        };
        let audit = AuditDraft::ok(Some(name), actor, action, &format!("tenant:{name}"), detail);
        self.store.commit(&batch, &audit)?;
        if let Some(credentials) = &self.credentials {
            credentials.forget_tenant(name);
        }
        let pipeline_entries = self.pipeline.forget_tenant(name)?;
        Ok(Removed {
            tokens,
            integrations,
            credentials,
            pipeline_entries,
        })
    }
}
