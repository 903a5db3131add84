//! Rebuilding a state directory from a backup, offline.
//!
//! Nothing is written until the file has proved to be a backup this build can read and
//! whole (its digest matches); a restore that fails halfway removes what it wrote. The
//! result is checked the way the daemon will use it: the database opens (migrating an
//! older format), the audit trail verifies, and the event log agrees with its index.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::format::{BACKUP_FORMAT, Frame, FrameError, FrameReader, Manifest};
use crate::store::{ChainError, FORMAT_VERSION, ImportError, Store, Table};

/// Why a restore did not happen. Each names the backup or the directory.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("cannot read the backup {path}: {cause}")]
    Read { path: String, cause: std::io::Error },
    #[error("{path} is not an integrationd backup (it does not begin as one)")]
    NotABackup { path: String },
    #[error(
        "{path} is a backup of format {found}, newer than this integrationd reads (up to {BACKUP_FORMAT}); restore it with a newer integrationd"
    )]
    TooNew { path: String, found: u32 },
    #[error(
        "{path} holds a state database of format {found} (written by {written_by}); this integrationd reads up to format {FORMAT_VERSION}: restore it with {written_by} or newer"
    )]
    StoreTooNew {
        path: String,
        found: u32,
        written_by: String,
    },
    #[error("{path} is damaged: its checksum does not match its contents")]
    Checksum { path: String },
    #[error("{path} is damaged: {cause}")]
    Damaged { path: String, cause: FrameError },
    #[error("{path} is not empty; a restore writes only into a new or empty directory")]
    NotEmpty { path: String },
    #[error("cannot write the restored state in {path}: {cause}")]
    Write { path: String, cause: std::io::Error },
    #[error("cannot write the restored database: {0}")]
    Import(#[from] ImportError),
    #[error("the restored state does not open: {0}")]
    Open(String),
    #[error("the restored audit trail does not verify: {0}")]
    Audit(ChainError),
}

/// What a restore rebuilt, for the operator to check against what they expect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreSummary {
    pub manifest: Manifest,
    pub tenants: usize,
    pub integrations: usize,
    pub credentials: usize,
    pub dead_letters: usize,
    pub cursors: usize,
    /// Commits in the event log.
    pub commits: usize,
    pub audit_records: u64,
}

/// Rebuilds `state_dir` (new, or an empty directory) from the backup at `from`.
pub fn restore(from: &Path, state_dir: &Path) -> Result<RestoreSummary, RestoreError> {
    let path = from.display().to_string();
    let read = |cause| RestoreError::Read {
        path: path.clone(),
        cause,
    };
    let damaged = |cause| RestoreError::Damaged {
        path: path.clone(),
        cause,
    };
    let file = File::open(from).map_err(read)?;
    let len = file.metadata().map_err(read)?.len();
    let mut reader = FrameReader::new(BufReader::new(&file));
    match reader.header().map_err(damaged)? {
        None => return Err(RestoreError::NotABackup { path }),
        Some(found) if found > BACKUP_FORMAT => return Err(RestoreError::TooNew { path, found }),
        Some(_) => {}
    }
    verify_digest(from, len).map_err(|cause| match cause {
        Some(cause) => read(cause),
        None => RestoreError::Checksum { path: path.clone() },
    })?;
    let manifest = match reader.next_frame().map_err(damaged)? {
        Frame::Manifest(manifest) => manifest,
        _ => {
            return Err(damaged(FrameError::Malformed {
                at: 24,
                what: "the manifest is not the first frame".to_owned(),
            }));
        }
    };
    if manifest.store_format > FORMAT_VERSION {
        return Err(RestoreError::StoreTooNew {
            path,
            found: manifest.store_format,
            written_by: manifest.written_by,
        });
    }

    let target = Target::prepare(state_dir)?;
    let (tables, files) = write_contents(&mut reader, state_dir, &path)?;
    if reader.position() != len {
        return Err(damaged(FrameError::Malformed {
            at: reader.position(),
            what: "bytes after the end frame".to_owned(),
        }));
    }
    for (what, found, listed) in [
        ("tables", &tables, &manifest.tables),
        ("files", &files, &manifest.files),
    ] {
        if found != listed {
            return Err(damaged(FrameError::Malformed {
                at: len,
                what: format!("its {what} differ from its manifest: {found:?}, listed {listed:?}"),
            }));
        }
    }
    crate::state_dir::prepare(state_dir).map_err(|err| RestoreError::Write {
        path: err.path,
        cause: err.cause,
    })?;
    let summary = check(state_dir, manifest)?;
    target.keep();
    Ok(summary)
}

/// Hashes everything before the last 32 bytes and compares, through a handle of its
/// own (the frame reader's position stays where it is). `Err(None)`: no match.
fn verify_digest(from: &Path, len: u64) -> Result<(), Option<std::io::Error>> {
    if len < 32 {
        return Err(None);
    }
    let file = File::open(from).map_err(Some)?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut BufReader::new(&file).take(len - 32), &mut hasher).map_err(Some)?;
    let mut stored = [0u8; 32];
    file.read_exact_at(&mut stored, len - 32).map_err(Some)?;
    if hasher.finalize().as_slice() == stored {
        Ok(())
    } else {
        Err(None)
    }
}

type Counts = BTreeMap<String, u64>;

/// Writes the tables and files that follow the manifest; returns what it found of each.
fn write_contents(
    reader: &mut FrameReader<BufReader<&File>>,
    state_dir: &Path,
    path: &str,
) -> Result<(Counts, Counts), RestoreError> {
    let damaged = |cause| RestoreError::Damaged {
        path: path.to_owned(),
        cause,
    };
    let malformed = |at, what: String| RestoreError::Damaged {
        path: path.to_owned(),
        cause: FrameError::Malformed { at, what },
    };
    let mut importer = crate::store::import(state_dir)?;
    let mut tables = Counts::new();
    let mut files = Counts::new();
    let mut current: Option<String> = None;
    loop {
        let at = reader.position();
        match reader.next_frame().map_err(damaged)? {
            Frame::Manifest(_) => return Err(malformed(at, "a second manifest".to_owned())),
            Frame::Table(name) => {
                if tables.contains_key(&name) {
                    return Err(malformed(at, format!("table {name:?} a second time")));
                }
                importer.tree(name.as_bytes())?;
                tables.insert(name.clone(), 0);
                current = Some(name);
            }
            Frame::Entry(key, value) => {
                let Some(count) = current.as_ref().and_then(|name| tables.get_mut(name)) else {
                    return Err(malformed(at, "an entry before any table".to_owned()));
                };
                importer.put(&key, &value)?;
                *count += 1;
            }
            Frame::File { name, len } => {
                let Some(target) = file_path(state_dir, &name) else {
                    return Err(malformed(
                        at,
                        format!(
                            "a file named {name:?} (a backup holds only {} and {}/<segment>.events)",
                            super::ANCHOR_FILE,
                            super::LOG_DIR
                        ),
                    ));
                };
                if files.contains_key(&name) {
                    return Err(malformed(at, format!("file {name:?} a second time")));
                }
                write_file(reader, &target, len, path)?;
                files.insert(name, len);
            }
            Frame::End(_) => break,
        }
    }
    importer.finish()?;
    Ok((tables, files))
}

/// Where a backup's file goes; `None` for a name a backup never holds (nothing outside
/// the two known places is ever written, whatever the file says).
fn file_path(state_dir: &Path, name: &str) -> Option<PathBuf> {
    if name == super::ANCHOR_FILE {
        return Some(state_dir.join(name));
    }
    let segment = name.strip_prefix(super::LOG_DIR)?.strip_prefix('/')?;
    crate::pipeline::is_segment_name(segment).then(|| state_dir.join(super::LOG_DIR).join(segment))
}

fn write_file(
    reader: &mut FrameReader<BufReader<&File>>,
    target: &Path,
    len: u64,
    path: &str,
) -> Result<(), RestoreError> {
    let write = |cause| RestoreError::Write {
        path: target.display().to_string(),
        cause,
    };
    if let Some(parent) = target.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(write)?;
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(target)
        .map_err(write)?;
    let mut out = BufWriter::new(&file);
    reader
        .copy_file(len, &mut out)
        .map_err(|cause| match cause {
            FrameError::Io(cause) => RestoreError::Write {
                path: target.display().to_string(),
                cause,
            },
            cause => RestoreError::Damaged {
                path: path.to_owned(),
                cause,
            },
        })?;
    out.flush().map_err(write)?;
    drop(out);
    file.sync_all().map_err(write)
}

/// Opens the restored state as the daemon will and counts what it holds.
fn check(state_dir: &Path, manifest: Manifest) -> Result<RestoreSummary, RestoreError> {
    let open = |err: &dyn std::fmt::Display| RestoreError::Open(err.to_string());
    let store = Store::open(state_dir).map_err(|e| open(&e))?;
    let audit_records = store
        .audit_verify(None)
        .map_err(|e| open(&e))?
        .map_err(RestoreError::Audit)?;
    let count = |table| store.scan(table, &[]).map(|entries| entries.len());
    let counted = (|| {
        Ok::<_, crate::store::StoreError>(RestoreSummary {
            tenants: count(Table::Tenants)?,
            integrations: count(Table::Integrations)?,
            credentials: count(Table::Credentials)?,
            dead_letters: count(Table::DeadLetters)?,
            cursors: count(Table::Cursors)?,
            commits: count(Table::Outbox)?,
            audit_records,
            manifest,
        })
    })()
    .map_err(|e| open(&e))?;
    // The event log must agree with its index, as the daemon will check at start.
    let pipeline = crate::pipeline::Pipeline::open(store).map_err(|e| open(&e))?;
    drop(pipeline);
    Ok(counted)
}

/// The directory being restored into: removed again (or emptied, if it existed) unless
/// the restore completes.
struct Target {
    dir: PathBuf,
    created: bool,
    kept: bool,
}

impl Target {
    fn prepare(dir: &Path) -> Result<Self, RestoreError> {
        let shown = || dir.display().to_string();
        let created = match std::fs::read_dir(dir) {
            Ok(mut entries) => {
                if entries.next().is_some() {
                    return Err(RestoreError::NotEmpty { path: shown() });
                }
                false
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => true,
            Err(cause) => {
                return Err(RestoreError::Write {
                    path: shown(),
                    cause,
                });
            }
        };
        crate::state_dir::prepare(dir).map_err(|err| RestoreError::Write {
            path: err.path,
            cause: err.cause,
        })?;
        Ok(Self {
            dir: dir.to_owned(),
            created,
            kept: false,
        })
    }

    fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        if self.created {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for entry in entries.flatten() {
                let _ = std::fs::remove_dir_all(entry.path())
                    .or_else(|_| std::fs::remove_file(entry.path()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::format::{self, Hashing};
    use super::*;
    use crate::pipeline::tests_support::event;
    use crate::pipeline::{NoEnrichment, Pipeline, PipelineSettings};
    use crate::store::{AuditDraft, Batch};

    /// A pipeline whose log spans several segments, with an audited tenant record and
    /// a cursor.
    fn busy_state(dir: &Path) -> Pipeline {
        let settings = PipelineSettings {
            segment_bytes: 2_000,
            ..PipelineSettings::default()
        };
        let store = Store::open(dir).expect("store");
        store
            .commit(
                &Batch::new().put(Table::Tenants, "acme", "{}"),
                &AuditDraft::ok(Some("acme"), "uid:0", "tenant.create", "acme", ""),
            )
            .expect("commit");
        let pipeline = Pipeline::open_with(store, settings, std::sync::Arc::new(NoEnrichment))
            .expect("pipeline");
        for n in 1..=12 {
            pipeline
                .commit_batch("acme", "gh", &[event(n)], &format!("cursor-{n}"))
                .expect("commit");
        }
        pipeline
    }

    fn every_table(store: &Store) -> BTreeMap<Vec<u8>, Vec<crate::store::Entry>> {
        let frozen = store.freeze();
        frozen
            .tree_names()
            .into_iter()
            .map(|name| {
                let entries = frozen
                    .entries(&name)
                    .expect("entries")
                    .map(|entry| entry.expect("entry"))
                    .collect();
                (name, entries)
            })
            .collect()
    }

    #[test]
    fn a_restored_state_holds_every_table_every_segment_and_a_verified_trail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pipeline = busy_state(dir.path());
        let mut file = tempfile::NamedTempFile::new().expect("file");
        let taken = super::super::take(&pipeline, file.as_file_mut()).expect("backup");
        assert!(
            taken.manifest.files.len() > 2,
            "several segments and the anchor: {:?}",
            taken.manifest.files
        );
        let target = tempfile::tempdir().expect("tempdir");
        let state = target.path().join("state");
        let restored = restore(file.path(), &state).expect("restore");
        assert_eq!(
            (restored.tenants, restored.commits, restored.audit_records),
            (1, 12, 1)
        );
        assert_eq!(restored.cursors, 1);
        let original = every_table(pipeline.store());
        let (recent, _) = pipeline.recent_events("acme", 0, 100).expect("recent");
        drop(pipeline);
        let reopened = Pipeline::open(Store::open(&state).expect("store")).expect("pipeline");
        assert_eq!(every_table(reopened.store()), original);
        assert_eq!(
            reopened.recent_events("acme", 0, 100).expect("recent").0,
            recent
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&state)
            .expect("meta")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn a_backup_taken_while_commits_go_on_is_a_consistent_moment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pipeline = std::sync::Arc::new(busy_state(dir.path()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let writer = {
            let (pipeline, stop) = (pipeline.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 100;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    pipeline
                        .commit_batch("acme", "gh", &[event(n)], &format!("cursor-{n}"))
                        .expect("commit");
                    let _ = started_tx.send(());
                    n += 1;
                }
            })
        };
        started_rx.recv().expect("the writer commits");
        let mut file = tempfile::NamedTempFile::new().expect("file");
        // Commits acknowledged before the backup starts are in it, whatever follows.
        let before = pipeline
            .recent_events("acme", 0, 100_000)
            .expect("recent")
            .0;
        super::super::take(&pipeline, file.as_file_mut()).expect("backup");
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        writer.join().expect("writer");
        let target = tempfile::tempdir().expect("tempdir");
        let summary = restore(file.path(), target.path()).expect("restore");
        let reopened =
            Pipeline::open(Store::open(target.path()).expect("store")).expect("pipeline");
        let restored = reopened
            .recent_events("acme", 0, 100_000)
            .expect("recent")
            .0;
        assert_eq!(restored.len(), summary.commits);
        assert_eq!(&restored[..before.len()], before.as_slice());
    }

    fn crafted(
        manifest: &Manifest,
        body: impl FnOnce(&mut Hashing<Vec<u8>>),
    ) -> tempfile::NamedTempFile {
        let mut out = Hashing::new(Vec::new());
        format::write_header(&mut out).expect("header");
        format::write_manifest(&mut out, manifest).expect("manifest");
        body(&mut out);
        let (bytes, _, _) = out.finish().expect("finish");
        let file = tempfile::NamedTempFile::new().expect("file");
        std::fs::write(file.path(), bytes).expect("write");
        file
    }

    fn manifest() -> Manifest {
        Manifest {
            store_format: FORMAT_VERSION,
            state_id: String::new(),
            written_by: "integrationd 9.9.9".to_owned(),
            created_unix_ms: 0,
            audit_head: String::new(),
            tables: BTreeMap::new(),
            files: BTreeMap::new(),
            paused_ms: 0,
        }
    }

    fn refused(file: &Path) -> (String, PathBuf, tempfile::TempDir) {
        let target = tempfile::tempdir().expect("tempdir");
        let state = target.path().join("state");
        let err = restore(file, &state).expect_err("refused");
        assert!(
            !state.exists(),
            "nothing is left of a refused restore ({err})"
        );
        (err.to_string(), state, target)
    }

    #[test]
    fn newer_formats_are_refused_and_named() {
        let newer_store = crafted(
            &Manifest {
                store_format: FORMAT_VERSION + 1,
                ..manifest()
            },
            |_| {},
        );
        let (message, _, _) = refused(newer_store.path());
        assert_eq!(
            message,
            format!(
                "{} holds a state database of format {} (written by integrationd 9.9.9); this integrationd reads up to format {FORMAT_VERSION}: restore it with integrationd 9.9.9 or newer",
                newer_store.path().display(),
                FORMAT_VERSION + 1
            )
        );
        let mut bytes = std::fs::read(newer_store.path()).expect("read");
        bytes[20..24].copy_from_slice(&(BACKUP_FORMAT + 1).to_be_bytes());
        std::fs::write(newer_store.path(), bytes).expect("write");
        let (message, _, _) = refused(newer_store.path());
        assert!(
            message.contains(&format!(
                "is a backup of format {}, newer than",
                BACKUP_FORMAT + 1
            )),
            "{message}"
        );
    }

    #[test]
    fn damaged_and_foreign_files_are_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pipeline = busy_state(dir.path());
        let mut file = tempfile::NamedTempFile::new().expect("file");
        super::super::take(&pipeline, file.as_file_mut()).expect("backup");
        let good = std::fs::read(file.path()).expect("read");
        let shown = file.path().display().to_string();

        let mut flipped = good.clone();
        let middle = flipped.len() / 2;
        flipped[middle] ^= 1;
        std::fs::write(file.path(), &flipped).expect("write");
        let (message, _, _) = refused(file.path());
        assert_eq!(
            message,
            format!("{shown} is damaged: its checksum does not match its contents")
        );
        std::fs::write(file.path(), &good[..good.len() - 100]).expect("write");
        assert!(
            refused(file.path())
                .0
                .ends_with("its checksum does not match its contents")
        );
        std::fs::write(file.path(), b"tenant,credential\n").expect("write");
        assert_eq!(
            refused(file.path()).0,
            format!("{shown} is not an integrationd backup (it does not begin as one)")
        );
    }

    #[test]
    fn a_backup_cannot_write_outside_its_two_places() {
        for name in [
            "../escape",
            "pipeline/log/../../x.events",
            "db/conf",
            "/etc/passwd",
        ] {
            let file = crafted(&manifest(), |out| {
                format::write_file_header(out, name, 1).expect("file");
                out.write_all(b"x").expect("byte");
            });
            let (message, state, target) = refused(file.path());
            assert!(
                message.contains(&format!("a file named {name:?}")),
                "{message}"
            );
            assert!(!state.exists() && !target.path().join("escape").exists());
        }
    }

    #[test]
    fn contents_must_match_the_manifest_and_the_directory_must_be_empty() {
        let file = crafted(
            &Manifest {
                tables: BTreeMap::from([("tenants".to_owned(), 2)]),
                ..manifest()
            },
            |out| {
                format::write_table(out, "tenants").expect("table");
                format::write_entry(out, b"acme", b"{}").expect("entry");
            },
        );
        let (message, _, _) = refused(file.path());
        assert!(
            message.contains("its tables differ from its manifest"),
            "{message}"
        );

        let occupied = tempfile::tempdir().expect("tempdir");
        std::fs::write(occupied.path().join("keep.txt"), "mine").expect("write");
        let err = restore(file.path(), occupied.path()).expect_err("not empty");
        assert_eq!(
            err.to_string(),
            format!(
                "{} is not empty; a restore writes only into a new or empty directory",
                occupied.path().display()
            )
        );
        assert!(occupied.path().join("keep.txt").exists());
    }
}

#[cfg(test)]
mod upgrade_tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use super::super::format::{Frame, FrameReader};
    use super::*;
    use crate::credentials::{Credentials, MasterKeySource};
    use crate::pipeline::Pipeline;

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/backup/fixtures")
            .join(name)
    }

    /// Every table's entries as the fixture holds them.
    fn fixture_tables() -> BTreeMap<String, Vec<crate::store::Entry>> {
        let file = File::open(fixture("state-format-1.backup")).expect("fixture");
        let mut reader = FrameReader::new(BufReader::new(file));
        assert_eq!(reader.header().expect("header"), Some(1));
        let mut tables: BTreeMap<String, Vec<_>> = BTreeMap::new();
        let mut current = String::new();
        loop {
            match reader.next_frame().expect("frame") {
                Frame::Manifest(manifest) => assert_eq!(manifest.store_format, 1),
                Frame::Table(name) => {
                    tables.insert(name.clone(), Vec::new());
                    current = name;
                }
                Frame::Entry(key, value) => {
                    tables.get_mut(&current).expect("table").push((key, value));
                }
                Frame::File { len, .. } => {
                    reader.copy_file(len, &mut std::io::sink()).expect("file")
                }
                Frame::End(_) => return tables,
            }
        }
    }

    #[test]
    fn a_format_1_state_is_migrated_and_keeps_everything() {
        let target = tempfile::tempdir().expect("tempdir");
        let summary = restore(&fixture("state-format-1.backup"), target.path()).expect("restore");
        assert_eq!(
            (
                summary.tenants,
                summary.integrations,
                summary.credentials,
                summary.dead_letters,
                summary.cursors,
                summary.commits
            ),
            (2, 2, 2, 1, 1, 7)
        );
        // 14 records of the old build, then the migration's own.
        assert_eq!(summary.audit_records, 15);

        let store = Store::open(target.path()).expect("open");
        assert_eq!(
            store.freeze().format_version().expect("format"),
            FORMAT_VERSION
        );
        assert_eq!(store.state_id().expect("state id").len(), 32);
        let migration = store
            .audit_records(1, |record| record.action == "state.migrate")
            .expect("audit");
        assert_eq!(migration.len(), 1);
        assert!(
            migration[0].detail.contains("format 1 to 2"),
            "{:?}",
            migration[0]
        );

        // Every entry of the old state is there, byte for byte. Only the format record
        // and the audit chain's head moved on.
        let frozen = store.freeze();
        for (table, entries) in fixture_tables() {
            let now: BTreeMap<Vec<u8>, Vec<u8>> = frozen
                .entries(table.as_bytes())
                .expect("entries")
                .map(|entry| entry.expect("entry"))
                .collect();
            for (key, value) in entries {
                if (table == "__sled__default" && key == b"format_version") || table == "audit.head"
                {
                    continue;
                }
                assert_eq!(
                    now.get(&key),
                    Some(&value),
                    "{table} {}",
                    String::from_utf8_lossy(&key)
                );
            }
        }
        drop(frozen);

        // The credentials still open with the state's master key.
        let key_dir = tempfile::tempdir().expect("tempdir");
        let key = key_dir.path().join("master.key");
        std::fs::copy(fixture("master.key"), &key).expect("key");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let credentials = Credentials::open(store.clone(), &MasterKeySource::File(key), false)
            .expect("credentials");
        let secret = credentials
            .read("acme", "hook-secret", "uid:0", "upgrade test")
            .expect("read");
        use secrecy::ExposeSecret;
        let value: serde_json::Value =
            serde_json::from_str(secret.secret.expose_secret()).expect("json");
        assert_eq!(value["current"], "fixture-webhook-secret");

        // And the events, from the event log.
        let pipeline = Pipeline::open(store).expect("pipeline");
        let (events, _) = pipeline.recent_events("acme", 0, 1000).expect("events");
        let all = events.join("\n");
        for delivery in ["fixture0", "fixture4", "bad"] {
            assert!(
                all.contains(&format!("\"id\":\"{delivery}\"")),
                "{delivery}"
            );
        }
    }
}
