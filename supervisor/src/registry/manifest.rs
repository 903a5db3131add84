//! Reading `plugin.toml` from a package directory. What a manifest says and how it is
//! checked is `plugin_kit::manifest`, shared with plugins' own tests.

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

pub use plugin_kit::manifest::{Manifest, check_description};

/// A manifest that could not be used.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{path}: {message}")]
pub struct ManifestError {
    pub path: String,
    pub message: String,
}

/// Manifests larger than this are refused unread.
const MAX_MANIFEST_BYTES: u64 = 64 * 1024;

/// Reads `dir/plugin.toml`.
pub fn load(dir: &Path) -> Result<Manifest, ManifestError> {
    let path = dir.join("plugin.toml");
    let error = |message: String| ManifestError {
        path: path.display().to_string(),
        message,
    };
    // Opened without blocking and read only if regular: a FIFO in the plugin
    // directory must not stall a rescan (and the admin socket with it).
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_NOCTTY).bits())
        .open(&path)
        .map_err(|err| error(format!("cannot read: {err}")))?;
    let meta = file
        .metadata()
        .map_err(|err| error(format!("cannot read: {err}")))?;
    if !meta.is_file() {
        return Err(error("is not a regular file".to_owned()));
    }
    let size = meta.len();
    if size > MAX_MANIFEST_BYTES {
        return Err(error(format!(
            "is {size} bytes, more than the {MAX_MANIFEST_BYTES}-byte limit"
        )));
    }
    let mut text = String::new();
    std::io::Read::read_to_string(
        &mut std::io::Read::take(file, MAX_MANIFEST_BYTES + 1),
        &mut text,
    )
    .map_err(|err| error(format!("cannot read: {err}")))?;
    let mut manifest = Manifest::parse(&text).map_err(error)?;
    manifest.load_schema_files(dir).map_err(error)?;
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_that_is_a_fifo_is_refused_without_waiting_for_a_writer() {
        let dir = tempfile::tempdir().expect("tempdir");
        nix::unistd::mkfifo(
            &dir.path().join("plugin.toml"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .expect("mkfifo");
        let err = load(dir.path()).expect_err("fifo");
        assert!(err.message.contains("not a regular file"), "{err}");
    }

    #[test]
    fn oversized_manifest_is_refused_unread() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("plugin.toml"), "#".repeat(100_000)).expect("write");
        let err = load(dir.path()).expect_err("too big").to_string();
        assert!(
            err.contains("byte limit") && err.contains("plugin.toml"),
            "{err}"
        );
    }
}
