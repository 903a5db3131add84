//! The database as a backup sees it: a consistent read of every tree while writes wait
//! ([`Frozen`]), and the raw import a restore rebuilds a database with ([`Importer`]).
//! Both deal in tree names and the database's own bytes, so a backup keeps secrets as
//! they are stored: ciphertexts, wrapped keys and token hashes.

use std::path::{Path, PathBuf};
use std::sync::RwLockWriteGuard;

use super::{Entry, FORMAT_KEY, StoreError, anchor, open_locked, owned};

/// The whole database at one moment: no write can start or finish while this lives.
pub struct Frozen<'a> {
    db: &'a sled::Db,
    state_dir: &'a Path,
    _gate: RwLockWriteGuard<'a, ()>,
}

impl std::fmt::Debug for Frozen<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frozen")
            .field("state_dir", &self.state_dir)
            .finish_non_exhaustive()
    }
}

impl<'a> Frozen<'a> {
    pub(super) fn new(
        db: &'a sled::Db,
        state_dir: &'a Path,
        gate: RwLockWriteGuard<'a, ()>,
    ) -> Self {
        Self {
            db,
            state_dir,
            _gate: gate,
        }
    }

    /// Every tree's name, sled's default tree (which holds the format version) included,
    /// sorted.
    pub fn tree_names(&self) -> Vec<Vec<u8>> {
        let mut names: Vec<Vec<u8>> = self.db.tree_names().iter().map(|n| n.to_vec()).collect();
        names.sort();
        names
    }

    /// The entries of the tree called `name`, in key order, read as they are taken.
    pub fn entries(
        &self,
        name: &[u8],
    ) -> Result<impl Iterator<Item = Result<Entry, StoreError>> + use<>, StoreError> {
        Ok(self.db.open_tree(name)?.iter().map(owned))
    }

    /// The format version the database records (0 when it records none).
    pub fn format_version(&self) -> Result<u32, StoreError> {
        Ok(self
            .db
            .get(FORMAT_KEY)?
            .and_then(|raw| <[u8; 4]>::try_from(raw.as_ref()).ok())
            .map_or(0, u32::from_be_bytes))
    }

    /// The anchor file's bytes as of this moment (every commit writes it before its
    /// write lock is released), if there is one.
    pub fn anchor_file(&self) -> std::io::Result<Option<Vec<u8>>> {
        match std::fs::read(anchor::path_in(self.state_dir)) {
            Ok(raw) => Ok(Some(raw)),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err),
        }
    }
}

/// How many entries an import writes per batch: large enough to be quick, small enough
/// that a large tree does not sit in memory whole.
const IMPORT_BATCH: usize = 10_000;

/// Builds a new database under `state_dir/db` from raw trees and entries.
pub struct Importer {
    db: sled::Db,
    tree: Option<sled::Tree>,
    batch: sled::Batch,
    pending: usize,
}

impl std::fmt::Debug for Importer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Importer")
            .field("pending", &self.pending)
            .finish_non_exhaustive()
    }
}

/// Why a database could not be imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{0} already holds a state database; a restore only writes a new one")]
    Exists(PathBuf),
    #[error("an entry came before any table")]
    NoTree,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Starts a new database in `state_dir/db`, which must not exist yet.
pub fn import(state_dir: &Path) -> Result<Importer, ImportError> {
    let path = state_dir.join("db");
    if path.exists() {
        return Err(ImportError::Exists(path));
    }
    let db = open_locked(&sled::Config::new().path(&path)).map_err(|cause| StoreError::Open {
        path: path.display().to_string(),
        cause,
    })?;
    Ok(Importer {
        db,
        tree: None,
        batch: sled::Batch::default(),
        pending: 0,
    })
}

impl Importer {
    /// The entries that follow belong to the tree called `name`.
    pub fn tree(&mut self, name: &[u8]) -> Result<(), ImportError> {
        self.write_pending()?;
        self.tree = Some(self.db.open_tree(name).map_err(StoreError::from)?);
        Ok(())
    }

    /// One entry of the current tree.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), ImportError> {
        if self.tree.is_none() {
            return Err(ImportError::NoTree);
        }
        self.batch.insert(key, value);
        self.pending += 1;
        if self.pending >= IMPORT_BATCH {
            self.write_pending()?;
        }
        Ok(())
    }

    fn write_pending(&mut self) -> Result<(), ImportError> {
        if self.pending == 0 {
            return Ok(());
        }
        let tree = self.tree.as_ref().ok_or(ImportError::NoTree)?;
        tree.apply_batch(std::mem::take(&mut self.batch))
            .map_err(StoreError::from)?;
        self.pending = 0;
        Ok(())
    }

    /// Writes what is pending and flushes the database to disk.
    pub fn finish(mut self) -> Result<(), ImportError> {
        self.write_pending()?;
        self.db.flush().map_err(StoreError::from)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Batch, Store, Table};
    use super::*;

    #[test]
    fn a_frozen_database_imports_into_an_identical_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        store
            .commit(
                &Batch::new().put(Table::Tenants, "acme", "{}"),
                &super::super::AuditDraft::ok(None, "uid:0", "tenant.create", "acme", ""),
            )
            .expect("commit");
        for i in 0..(IMPORT_BATCH as u32 + 5) {
            store
                .apply(&Batch::new().put(Table::Cursors, i.to_be_bytes(), "c"))
                .expect("apply");
        }
        let copy = tempfile::tempdir().expect("tempdir");
        {
            let frozen = store.freeze();
            assert_eq!(
                frozen.format_version().expect("version"),
                super::super::FORMAT_VERSION
            );
            assert!(frozen.anchor_file().expect("anchor").is_some());
            let mut importer = import(copy.path()).expect("import");
            for name in frozen.tree_names() {
                importer.tree(&name).expect("tree");
                for entry in frozen.entries(&name).expect("entries") {
                    let (key, value) = entry.expect("entry");
                    importer.put(&key, &value).expect("put");
                }
            }
            importer.finish().expect("finish");
        }
        let restored = Store::open(copy.path()).expect("open the copy");
        assert_eq!(
            restored.get(Table::Tenants, b"acme").expect("get"),
            Some(b"{}".to_vec())
        );
        assert_eq!(
            restored.scan(Table::Cursors, &[]).expect("scan").len(),
            IMPORT_BATCH + 5
        );
        assert_eq!(restored.audit_seq().expect("seq"), 1);
        assert!(matches!(import(copy.path()), Err(ImportError::Exists(_))));
    }

    #[test]
    fn writes_wait_while_the_database_is_frozen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let frozen = store.freeze();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let writer = store.clone();
        let thread = std::thread::spawn(move || {
            writer
                .apply(&Batch::new().put(Table::Cursors, "k", "v"))
                .expect("apply");
            done_tx.send(()).expect("send");
        });
        // The write cannot finish while frozen: nothing arrives within the wait.
        assert!(
            done_rx
                .recv_timeout(std::time::Duration::from_millis(200))
                .is_err()
        );
        assert_eq!(
            frozen
                .entries(b"pipeline.cursors")
                .expect("entries")
                .count(),
            0
        );
        drop(frozen);
        done_rx
            .recv_timeout(std::time::Duration::from_secs(5))
            .expect("the write goes through once thawed");
        thread.join().expect("join");
    }
}
