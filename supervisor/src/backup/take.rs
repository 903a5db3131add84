//! Taking a backup of a running daemon's state.
//!
//! Writes wait only while the database is read into a spool file in the state
//! directory (unlinked at once, so nothing is left behind), not while the backup
//! travels to the operator: the event log's segments are opened in the same pause and
//! copied afterwards, up to their size at that moment.

use std::collections::BTreeMap;
use std::io::{BufWriter, Read, Seek, Write};
use std::time::Instant;

use super::format::{self, Hashing, Manifest};
use crate::pipeline::{OpenError, Pipeline};
use crate::store::StoreError;

/// Why a backup could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Log(#[from] OpenError),
    #[error("the event log segment {0} is shorter than its committed records")]
    ShortSegment(String),
    #[error("the backup spool in the state directory: {0}")]
    Spool(std::io::Error),
    #[error("sending the backup: {0}")]
    Send(std::io::Error),
    #[error("the table name {0:?} is not UTF-8")]
    TableName(Vec<u8>),
}

/// What a backup holds, as reported to the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSummary {
    pub manifest: Manifest,
    /// Bytes in the file.
    pub bytes: u64,
    /// SHA-256 of the whole file, hex.
    pub sha256: String,
}

/// Writes a backup of `pipeline`'s store and event log to `out`.
pub fn take(pipeline: &Pipeline, out: impl Write) -> Result<BackupSummary, BackupError> {
    let store = pipeline.store();
    let mut spool =
        BufWriter::new(tempfile::tempfile_in(store.state_dir()).map_err(BackupError::Spool)?);
    let mut tables = BTreeMap::new();
    let started = Instant::now();
    let (segments, anchor, store_format, audit_head, state_id) = {
        let frozen = store.freeze();
        let segments = pipeline.log_segments_for_backup()?;
        let anchor = frozen.anchor_file().map_err(BackupError::Spool)?;
        for raw in frozen.tree_names() {
            let name =
                String::from_utf8(raw.clone()).map_err(|_| BackupError::TableName(raw.clone()))?;
            format::write_table(&mut spool, &name).map_err(BackupError::Spool)?;
            let mut count = 0u64;
            for entry in frozen.entries(&raw)? {
                let (key, value) = entry?;
                format::write_entry(&mut spool, &key, &value).map_err(BackupError::Spool)?;
                count += 1;
            }
            tables.insert(name, count);
        }
        spool.flush().map_err(BackupError::Spool)?;
        (
            segments,
            anchor,
            frozen.format_version()?,
            store
                .audit_head()?
                .map(|head| head.to_string())
                .unwrap_or_default(),
            store.state_id()?,
        )
    };
    let paused_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);

    let mut files = BTreeMap::new();
    if let Some(anchor) = &anchor {
        files.insert(super::ANCHOR_FILE.to_owned(), anchor.len() as u64);
    }
    for segment in &segments {
        files.insert(super::segment_file(&segment.name), segment.len);
    }
    let manifest = Manifest {
        store_format,
        state_id,
        written_by: super::written_by(),
        created_unix_ms: plugin_kit::clock::now_ms(),
        audit_head,
        tables,
        files,
        paused_ms,
    };

    let mut out = Hashing::new(out);
    format::write_header(&mut out).map_err(BackupError::Send)?;
    format::write_manifest(&mut out, &manifest).map_err(BackupError::Send)?;
    let mut spool = spool
        .into_inner()
        .map_err(|err| BackupError::Spool(err.into_error()))?;
    spool.rewind().map_err(BackupError::Spool)?;
    std::io::copy(&mut spool, &mut out).map_err(BackupError::Send)?;
    if let Some(anchor) = &anchor {
        format::write_file_header(&mut out, super::ANCHOR_FILE, anchor.len() as u64)
            .map_err(BackupError::Send)?;
        out.write_all(anchor).map_err(BackupError::Send)?;
    }
    for segment in segments {
        let name = super::segment_file(&segment.name);
        format::write_file_header(&mut out, &name, segment.len).map_err(BackupError::Send)?;
        let copied = std::io::copy(&mut (&segment.file).take(segment.len), &mut out)
            .map_err(BackupError::Send)?;
        if copied < segment.len {
            // A segment never shrinks below what was committed; one that did is damaged.
            return Err(BackupError::ShortSegment(name));
        }
    }
    let (_, bytes, whole) = out.finish().map_err(BackupError::Send)?;
    Ok(BackupSummary {
        manifest,
        bytes,
        sha256: hex::encode(whole),
    })
}
