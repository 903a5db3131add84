//! Tenants and their tokens. A tenant is a name; its tokens authenticate tenant
//! administrators (`admin` scope) and platform event producers (`ingest` scope). Only a
//! hash of each token is stored, so the database never holds a usable token.

mod flags;
mod tokens;

use plugin_kit::clock::now_ms;
use serde::{Deserialize, Serialize};

use crate::store::{AuditDraft, Batch, Store, StoreError, Table};
pub use flags::{FlagError, Flags};
pub use tokens::{ALL_TENANTS, TokenInfo, TokenScope, bearer_token_id};

/// Errors from tenant operations, worded for the caller.
#[derive(Debug, thiserror::Error)]
pub enum TenantError {
    #[error("tenant `{0}` already exists")]
    Exists(String),
    #[error("tenant `{0}` does not exist")]
    Unknown(String),
    #[error("`{0}` is not a valid tenant name: use 1-64 letters, digits, `-` or `_`")]
    BadName(String),
    #[error("`{0}` is reserved for the daemon's own instances; choose another tenant name")]
    Reserved(String),
    #[error("token `{0}` does not exist")]
    UnknownToken(String),
    #[error("a token for all tenants can only have the `monitor` scope")]
    AllTenantsScope,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Tenant names the daemon keeps for itself: `system` owns the operator's configured
/// instances, so a tenant of that name could stop them through its flags. Compared
/// without regard to case.
pub const RESERVED_TENANTS: &[&str] = &["system"];

/// Whether `name` is reserved for the daemon.
pub fn is_reserved(name: &str) -> bool {
    RESERVED_TENANTS
        .iter()
        .any(|r| r.eq_ignore_ascii_case(name))
}

/// Which tenant of a name exists now, and where its own data starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Incarnation {
    /// Part of the deduplication keys.
    pub id: u64,
    /// The first event-log sequence that can be its own.
    pub since_event_seq: u64,
    /// Its first audit record.
    pub since_audit_seq: u64,
}

/// One tenant. A name deleted and created again is a new tenant: its incarnation and
/// the positions it starts from keep everything of the old one out of its reach (what
/// could not be deleted, the shared event log and audit trail, is filtered by them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    pub name: String,
    pub created_ms: u64,
    /// Random at creation: part of the tenant's deduplication keys, so an old
    /// incarnation's event ids do not suppress the new one's.
    #[serde(default)]
    pub incarnation: u64,
    /// The first event-log sequence that can be this tenant's.
    #[serde(default)]
    pub since_event_seq: u64,
    /// The first audit record that is this tenant's (its `tenant.create`).
    #[serde(default)]
    pub since_audit_seq: u64,
}

/// The tenants component.
#[derive(Debug, Clone)]
pub struct Tenants {
    store: Store,
}

fn corrupt(key: &str, err: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        key: key.to_owned(),
        reason: err.to_string(),
    }
}

impl Tenants {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// The state database, for callers that audit on the tenants' behalf.
    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn get(&self, name: &str) -> Result<Option<Tenant>, TenantError> {
        match self.store.get(Table::Tenants, name.as_bytes())? {
            None => Ok(None),
            Some(raw) => Ok(Some(
                serde_json::from_slice(&raw).map_err(|e| corrupt(name, e))?,
            )),
        }
    }

    /// Fails unless `name` exists.
    pub fn require(&self, name: &str) -> Result<Tenant, TenantError> {
        self.get(name)?
            .ok_or_else(|| TenantError::Unknown(name.to_owned()))
    }

    pub fn list(&self) -> Result<Vec<Tenant>, TenantError> {
        self.store
            .scan(Table::Tenants, b"")?
            .into_iter()
            .map(|(key, raw)| {
                serde_json::from_slice(&raw)
                    .map_err(|e| corrupt(&String::from_utf8_lossy(&key), e).into())
            })
            .collect()
    }

    /// The event-log sequence the next commit gets: where a tenant created now starts.
    fn next_event_seq(&self) -> Result<u64, TenantError> {
        let last = self
            .store
            .last_key(Table::Outbox)?
            .and_then(|key| <[u8; 8]>::try_from(key.as_slice()).ok())
            .map_or(0, u64::from_be_bytes);
        Ok(last + 1)
    }

    /// Creates a tenant; audited as `actor`.
    pub fn create(&self, name: &str, actor: &str) -> Result<Tenant, TenantError> {
        if !crate::names::is_name(name) {
            return Err(TenantError::BadName(name.to_owned()));
        }
        if is_reserved(name) {
            return Err(TenantError::Reserved(name.to_owned()));
        }
        let _turn = self.store.writer();
        if self.get(name)?.is_some() {
            return Err(TenantError::Exists(name.to_owned()));
        }
        let since_event_seq = self.next_event_seq()?;
        let tenant = Tenant {
            name: name.to_owned(),
            created_ms: now_ms(),
            incarnation: rand::random::<u64>() | 1,
            since_event_seq,
            since_audit_seq: self.store.audit_seq()? + 1,
        };
        let value = serde_json::to_vec(&tenant).map_err(|e| corrupt(name, e))?;
        let audit = AuditDraft::ok(
            Some(name),
            actor,
            "tenant.create",
            &format!("tenant:{name}"),
            "",
        );
        self.store
            .commit(&Batch::new().put(Table::Tenants, name, value), &audit)?;
        Ok(tenant)
    }

    /// The writes and audit record that make `name` exist here as it existed on
    /// node `from`, moved: its creation time and incarnation kept (its event ids
    /// deduplicate alike), its positions this node's (its handed-over audit records
    /// start at `since_audit_seq`). The caller commits them with the rest of the move.
    pub fn adoption(
        &self,
        name: &str,
        created_ms: u64,
        incarnation: u64,
        since_audit_seq: u64,
    ) -> Result<Batch, TenantError> {
        if !crate::names::is_name(name) {
            return Err(TenantError::BadName(name.to_owned()));
        }
        if is_reserved(name) {
            return Err(TenantError::Reserved(name.to_owned()));
        }
        if self.get(name)?.is_some() {
            return Err(TenantError::Exists(name.to_owned()));
        }
        let since_event_seq = self.next_event_seq()?;
        let tenant = Tenant {
            name: name.to_owned(),
            created_ms,
            incarnation,
            since_event_seq,
            since_audit_seq,
        };
        let value = serde_json::to_vec(&tenant).map_err(|e| corrupt(name, e))?;
        Ok(Batch::new().put(Table::Tenants, name, value))
    }

    /// Where the incarnation of `name` that exists now starts. A name with no record
    /// (`system`, the operator's instances) has always existed: all zeros.
    pub fn incarnation(&self, name: &str) -> Result<Incarnation, TenantError> {
        Ok(self
            .get(name)?
            .map_or(Incarnation::default(), |tenant| Incarnation {
                id: tenant.incarnation,
                since_event_seq: tenant.since_event_seq,
                since_audit_seq: tenant.since_audit_seq,
            }))
    }

    /// The writes that remove a tenant and its tokens and flags. Other components add
    /// theirs (credentials, keys) before the caller commits the whole batch.
    pub fn delete_batch(&self, name: &str) -> Result<Batch, TenantError> {
        self.require(name)?;
        let mut batch = Batch::new().delete(Table::Tenants, name);
        for token in self.tokens(name)? {
            batch = batch.delete(Table::Tokens, token.id);
        }
        for (key, _) in self
            .store
            .scan(Table::Flags, format!("{name}\0").as_bytes())?
        {
            batch = batch.delete(Table::Flags, key);
        }
        Ok(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_daemons_own_tenant_name_cannot_be_created() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tenants = Tenants::new(Store::open(dir.path()).expect("store"));
        for name in ["system", "SYSTEM", "System"] {
            let err = tenants.create(name, "test").expect_err(name);
            assert!(matches!(err, TenantError::Reserved(_)), "{name}: {err}");
            assert!(err.to_string().contains("reserved"), "{err}");
        }
        tenants
            .create("systems", "test")
            .expect("a longer name is a name");
    }
}
