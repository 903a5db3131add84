//! Backups of the whole state, and restores from them.
//!
//! `integrationctl backup` asks the running daemon for one ([`take`]): the database's
//! every table (tenants, tokens as hashes, credentials still encrypted, integrations,
//! flags, trust pins, cursors, sink offsets, dead letters, the audit trail), the audit
//! anchor and the event log, all as of one moment. The master key is not in it: it
//! travels separately. `integrationd restore` ([`restore`]) rebuilds a state directory
//! from one, offline, and checks that it opens and that its audit trail verifies.

mod format;
mod restore;
mod take;

pub use format::{BACKUP_FORMAT, Manifest};
pub use restore::{RestoreError, RestoreSummary, restore};
pub use take::{BackupError, BackupSummary, take};

/// The audit anchor's name in a backup and in the state directory.
const ANCHOR_FILE: &str = "audit.anchor";
/// Where the event log's segments are, in a backup and in the state directory.
const LOG_DIR: &str = "pipeline/log";

fn segment_file(name: &str) -> String {
    format!("{LOG_DIR}/{name}")
}

/// This build, as a backup's manifest names its writer.
fn written_by() -> String {
    format!("integrationd {}", env!("CARGO_PKG_VERSION"))
}
