//! `integrationctl backup --to FILE`.
//!
//! The file appears only when complete: the chunks go to `FILE.partial` (0600, never
//! over anything), whose size and SHA-256 must match what the daemon reports before it
//! is synced and renamed. A failed or interrupted backup leaves no file behind.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use sha2::{Digest, Sha256};
use supervisor::admin::proto;

use crate::render::{Output, print_json};
use crate::session::{Answer, Session, status_error, with_token};

/// `integrationctl backup`.
pub async fn run(session: &mut Session, to: &Path) -> anyhow::Result<()> {
    let (client, token, output) = session.parts();
    if to.exists() {
        anyhow::bail!("{} exists; a backup never overwrites a file", to.display());
    }
    let partial = PathBuf::from(format!("{}.partial", to.display()));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&partial)
        .with_context(|| format!("cannot create {}", partial.display()))?;
    let removal = RemoveOnDrop(partial.clone());
    let mut out = std::io::BufWriter::new(&file);
    let mut hasher = Sha256::new();
    let mut written = 0u64;
    let mut chunks = client
        .backup(with_token(proto::BackupRequest {}, token)?)
        .await
        .answer()?;
    let mut summary = None;
    while let Some(chunk) = chunks.message().await.map_err(status_error)? {
        out.write_all(&chunk.data)
            .with_context(|| format!("cannot write {}", partial.display()))?;
        hasher.update(&chunk.data);
        written += chunk.data.len() as u64;
        if chunk.summary.is_some() {
            summary = chunk.summary;
            break;
        }
    }
    let summary = summary.context("the daemon ended the backup before it was complete")?;
    let sha256 = hex::encode(hasher.finalize());
    if written != summary.bytes || sha256 != summary.sha256 {
        anyhow::bail!(
            "the backup arrived damaged ({written} bytes, SHA-256 {sha256}; the daemon sent {} bytes, SHA-256 {})",
            summary.bytes,
            summary.sha256
        );
    }
    out.flush()
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", partial.display()))?;
    drop(out);
    std::fs::hard_link(&partial, to)
        .with_context(|| format!("cannot create {} (does it exist now?)", to.display()))?;
    drop(removal);
    let manifest: serde_json::Value = serde_json::from_str(&summary.manifest_json)
        .context("the daemon sent an unreadable manifest")?;
    match output {
        Output::Json => print_json(&serde_json::json!({
            "file": to.display().to_string(),
            "bytes": summary.bytes,
            "sha256": summary.sha256,
            "manifest": manifest,
        }))?,
        Output::Table => print_summary(to, &summary, &manifest),
    }
    Ok(())
}

fn print_summary(to: &Path, summary: &proto::BackupSummary, manifest: &serde_json::Value) {
    let count = |key: &str| manifest[key].as_object().map_or(0, serde_json::Map::len);
    let entries: u64 = manifest["tables"].as_object().map_or(0, |tables| {
        tables.values().filter_map(serde_json::Value::as_u64).sum()
    });
    println!("backup written to {}", to.display());
    println!("  {} bytes, SHA-256 {}", summary.bytes, summary.sha256);
    println!(
        "  {} tables ({entries} entries), {} files (the event log and the audit anchor)",
        count("tables"),
        count("files")
    );
    if let Some(head) = manifest["audit_head"].as_str().filter(|h| !h.is_empty()) {
        println!("  audit head {head}");
    }
    println!(
        "  writes waited {} ms while it was read",
        manifest["paused_ms"].as_u64().unwrap_or_default()
    );
    println!(
        "restore with `integrationd restore --from {} --state-dir DIR`; the master key is not in it",
        to.display()
    );
}

/// Removes the partial file when dropped: on failure nothing is left, and on success
/// the backup lives on under its final name (a hard link, which unlike a rename never
/// replaces a file that appeared meanwhile).
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
