//! The only module that touches sled. Each component owns named trees and reaches them
//! through a typed API here; every write that is acknowledged is flushed first.

mod trust;

use std::path::Path;

pub use trust::{TrustPin, TrustTable};

/// The on-disk format this build writes. A database written by a newer build is
/// refused; an older one is migrated on open.
pub const FORMAT_VERSION: u32 = 1;
const FORMAT_KEY: &[u8] = b"format_version";

/// Errors from the state database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the state database in {path}: {source}")]
    Open { path: String, source: sled::Error },
    #[error(
        "the state database in {path} was written by a newer integrationd (format {found}, this build reads up to {FORMAT_VERSION}); upgrade integrationd or restore a backup"
    )]
    TooNew { path: String, found: u32 },
    #[error("the state database in {path} has a corrupt format version record")]
    CorruptVersion { path: String },
    #[error("state database: {0}")]
    Sled(#[from] sled::Error),
    #[error("state database record `{key}` is corrupt: {reason}")]
    Corrupt { key: String, reason: String },
}

/// The opened state database.
#[derive(Debug, Clone)]
pub struct Store {
    db: sled::Db,
}

impl Store {
    /// Opens (or creates) the database under `state_dir/db`, checking its format.
    pub fn open(state_dir: &Path) -> Result<Self, StoreError> {
        let path = state_dir.join("db");
        let shown = path.display().to_string();
        let db = sled::Config::new()
            .path(&path)
            .cache_capacity(8 * 1024 * 1024)
            .open()
            .map_err(|source| StoreError::Open {
                path: shown.clone(),
                source,
            })?;
        match db.get(FORMAT_KEY)? {
            None => {
                db.insert(FORMAT_KEY, &FORMAT_VERSION.to_be_bytes())?;
                db.flush()?;
            }
            Some(raw) => {
                let bytes: [u8; 4] =
                    raw.as_ref()
                        .try_into()
                        .map_err(|_| StoreError::CorruptVersion {
                            path: shown.clone(),
                        })?;
                let found = u32::from_be_bytes(bytes);
                if found > FORMAT_VERSION {
                    return Err(StoreError::TooNew { path: shown, found });
                }
                // Older formats would be migrated here, one step at a time.
            }
        }
        Ok(Self { db })
    }

    /// The registry's table of trusted plugin checksums.
    pub fn trust(&self) -> Result<TrustTable, StoreError> {
        Ok(TrustTable::new(self.db.open_tree("registry.trust")?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_a_database_from_a_newer_build() {
        let dir = tempfile::tempdir().expect("tempdir");
        drop(Store::open(dir.path()).expect("fresh"));
        {
            let db = sled::open(dir.path().join("db")).expect("raw");
            db.insert(FORMAT_KEY, &(FORMAT_VERSION + 1).to_be_bytes())
                .expect("insert");
            db.flush().expect("flush");
        }
        let err = Store::open(dir.path()).expect_err("too new").to_string();
        assert!(err.contains("newer integrationd"), "{err}");
        assert!(
            err.contains(&format!("format {}", FORMAT_VERSION + 1)),
            "{err}"
        );
    }

    #[test]
    fn reopens_its_own_database() {
        let dir = tempfile::tempdir().expect("tempdir");
        drop(Store::open(dir.path()).expect("fresh"));
        assert!(Store::open(dir.path()).is_ok());
    }
}
