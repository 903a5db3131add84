//! Trusted plugin checksums, owned by the registry: `name@version` → SHA-256.

use serde::{Deserialize, Serialize};

use super::StoreError;

/// One trusted executable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustPin {
    pub name: String,
    pub version: String,
    /// Lowercase hex SHA-256 of the executable.
    pub sha256: String,
    /// Unix seconds when it was pinned.
    pub pinned_at: u64,
    /// Who pinned it: `uid:N`, or `config:trust_build_output`.
    pub pinned_by: String,
}

/// The registry's trust tree.
#[derive(Debug, Clone)]
pub struct TrustTable {
    tree: sled::Tree,
}

impl TrustTable {
    pub(super) fn new(tree: sled::Tree) -> Self {
        Self { tree }
    }

    fn key(name: &str, version: &str) -> String {
        format!("{name}@{version}")
    }

    /// The pin for one plugin version, if any.
    pub fn get(&self, name: &str, version: &str) -> Result<Option<TrustPin>, StoreError> {
        let key = Self::key(name, version);
        self.tree
            .get(key.as_bytes())?
            .map(|raw| {
                serde_json::from_slice(&raw).map_err(|err| StoreError::Corrupt {
                    key: key.clone(),
                    reason: err.to_string(),
                })
            })
            .transpose()
    }

    /// The write that records (or replaces) a pin; commit it with its audit record.
    pub fn pin_batch(pin: &TrustPin) -> Result<super::Batch, StoreError> {
        let key = Self::key(&pin.name, &pin.version);
        let value = serde_json::to_vec(pin).map_err(|err| StoreError::Corrupt {
            key: key.clone(),
            reason: err.to_string(),
        })?;
        Ok(super::Batch::new().put(super::Table::Trust, key, value))
    }
}

#[cfg(test)]
mod tests {
    use super::super::Store;
    use super::*;

    #[test]
    fn pins_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pin = TrustPin {
            name: "github".into(),
            version: "1.0.0".into(),
            sha256: "ab".repeat(32),
            pinned_at: 1,
            pinned_by: "uid:0".into(),
        };
        let store = Store::open(dir.path()).expect("open");
        let batch = TrustTable::pin_batch(&pin).expect("batch");
        let audit =
            super::super::AuditDraft::ok(None, "uid:0", "plugin.trust", "plugin:github", "");
        store.commit(&batch, &audit).expect("pin");
        drop(store);
        let table = Store::open(dir.path()).expect("reopen").trust();
        assert_eq!(table.get("github", "1.0.0").expect("get"), Some(pin));
        assert_eq!(table.get("github", "2.0.0").expect("get"), None);
    }
}
