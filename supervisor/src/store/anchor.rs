//! The audit chain's anchor outside the database. The chain proves that no record was
//! changed in place, but a database rolled back to an older copy, or one that lost its
//! tail (a corrupted page, a one-byte edit that makes sled drop everything after it), is
//! a shorter chain that still verifies. So the head (sequence number and the SHA-256 of
//! the last record) is also written to `<state_dir>/audit.anchor`, a file sled does not
//! own, after every audited commit, and into the event stream (`audit.anchor` events,
//! which the sinks carry off the host). Verification fails when the chain ends before an
//! anchor, or its record at an anchor's sequence has another hash.
//!
//! Restoring the whole state directory (anchor file included) from an older copy is only
//! detectable against an anchor kept elsewhere: `integrationctl audit verify --anchor
//! SEQ:SHA256` with the latest one the sinks delivered.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A point the chain must reach: record `seq`, whose stored bytes hash to `sha256`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditAnchor {
    pub seq: u64,
    /// Lowercase hex.
    pub sha256: String,
}

impl AuditAnchor {
    /// Parses `SEQ:SHA256` as an operator writes it.
    pub fn parse(text: &str) -> Option<Self> {
        let (seq, sha256) = text.trim().split_once(':')?;
        let sha256 = sha256.to_ascii_lowercase();
        (sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit())).then_some(())?;
        Some(Self {
            seq: seq.parse().ok()?,
            sha256,
        })
    }
}

impl std::fmt::Display for AuditAnchor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.seq, self.sha256)
    }
}

/// The anchor file of a state directory.
pub(super) fn path_in(state_dir: &Path) -> PathBuf {
    state_dir.join("audit.anchor")
}

/// Reads the anchor file; `Ok(None)` when there is none yet.
pub(super) fn read(path: &Path) -> Result<Option<AuditAnchor>, String> {
    match std::fs::read(path) {
        Ok(raw) => serde_json::from_slice(&raw)
            .map(Some)
            .map_err(|err| format!("the audit anchor {} is unreadable: {err}", path.display())),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(format!(
            "the audit anchor {} is unreadable: {err}",
            path.display()
        )),
    }
}

/// Replaces the anchor file (a new file renamed over the old: never half written). Not
/// synced: after a crash the anchor may lag the chain by the last records, which
/// verification accepts (a chain may be longer than its anchor, never shorter).
pub(super) fn write(path: &Path, anchor: &AuditAnchor) -> std::io::Result<()> {
    let temporary = path.with_extension("anchor.new");
    {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)?;
        file.write_all(&serde_json::to_vec(anchor).map_err(std::io::Error::other)?)?;
    }
    std::fs::rename(&temporary, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchors_parse_as_operators_write_them() {
        let hash = "AB".repeat(32);
        let anchor = AuditAnchor::parse(&format!("42:{hash}")).expect("anchor");
        assert_eq!(
            (anchor.seq, anchor.sha256.as_str()),
            (42, "ab".repeat(32).as_str())
        );
        assert_eq!(anchor.to_string(), format!("42:{}", "ab".repeat(32)));
        for bad in ["42", "x:ab", &format!("42:{}", "zz".repeat(32)), "42:abc"] {
            assert!(AuditAnchor::parse(bad).is_none(), "{bad}");
        }
    }
}
