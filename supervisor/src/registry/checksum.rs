//! SHA-256 of plugin executables, verified before every spawn.
//!
//! The executable is opened once, hashed through that descriptor, and later executed
//! through the same descriptor (`/proc/self/fd/N`), so a file replaced on disk after the
//! check is never the one executed. Group- or world-writable executables are refused:
//! someone else could rewrite them in place between the hash and the exec.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// An executable that matched its pin, held open for execution.
#[derive(Debug)]
pub struct VerifiedExecutable {
    pub file: File,
    pub path: PathBuf,
    pub sha256: String,
}

/// Why an executable may not run.
#[derive(Debug, thiserror::Error)]
pub enum ChecksumError {
    #[error("cannot read executable {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("executable {path} is not a regular file")]
    NotAFile { path: String },
    #[error("executable {path} is writable by group or others (mode {mode:o}); refusing to run it")]
    Writable { path: String, mode: u32 },
    #[error(
        "executable {path} has SHA-256 {found}, which is not trusted; trust it with `integrationctl plugins trust`"
    )]
    NotTrusted { path: String, found: String },
    #[error(
        "executable {path} has SHA-256 {found}, but {expected} is trusted: refused, not executed"
    )]
    Mismatch {
        path: String,
        expected: String,
        found: String,
    },
}

/// Hashes the file at `path` (what `plugins trust` records).
pub fn sha256_file(path: &Path) -> Result<String, ChecksumError> {
    let mut file = open_checked(path)?;
    hash(&mut file, path)
}

/// Opens `path`, hashes it and compares with `trusted` (lowercase hex).
pub fn open_verified(
    path: &Path,
    trusted: Option<&str>,
) -> Result<VerifiedExecutable, ChecksumError> {
    let mut file = open_checked(path)?;
    let found = hash(&mut file, path)?;
    let shown = path.display().to_string();
    match trusted {
        None => Err(ChecksumError::NotTrusted { path: shown, found }),
        Some(expected) if !constant_time_eq(expected.as_bytes(), found.as_bytes()) => {
            Err(ChecksumError::Mismatch {
                path: shown,
                expected: expected.to_owned(),
                found,
            })
        }
        Some(_) => Ok(VerifiedExecutable {
            file,
            path: path.to_path_buf(),
            sha256: found,
        }),
    }
}

fn open_checked(path: &Path) -> Result<File, ChecksumError> {
    let io = |source| ChecksumError::Io {
        path: path.display().to_string(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(ChecksumError::NotAFile {
            path: path.display().to_string(),
        });
    }
    let mode = meta.permissions().mode();
    if mode & 0o022 != 0 {
        return Err(ChecksumError::Writable {
            path: path.display().to_string(),
            mode: mode & 0o7777,
        });
    }
    Ok(file)
}

fn hash(file: &mut File, path: &Path) -> Result<String, ChecksumError> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 256 * 1024];
    loop {
        let read = file.read(&mut buffer).map_err(|source| ChecksumError::Io {
            path: path.display().to_string(),
            source,
        })?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(hex::encode(hasher.finalize()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Parses an operator-given checksum: 64 hex digits, any case.
pub fn parse_sha256(text: &str) -> Option<String> {
    let lower = text.trim().to_ascii_lowercase();
    (lower.len() == 64 && lower.bytes().all(|b| b.is_ascii_hexdigit())).then_some(lower)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_exec(dir: &Path, content: &[u8], mode: u32) -> PathBuf {
        let path = dir.join("plugin");
        std::fs::write(&path, content).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        path
    }

    #[test]
    fn known_vector_and_verification() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write_exec(dir.path(), b"abc", 0o755);
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(sha256_file(&path).expect("hash"), abc);
        assert!(open_verified(&path, Some(abc)).is_ok());
        let wrong = "0".repeat(64);
        let err = open_verified(&path, Some(&wrong))
            .expect_err("mismatch")
            .to_string();
        assert!(
            err.contains("refused, not executed") && err.contains(abc),
            "{err}"
        );
        let err = open_verified(&path, None)
            .expect_err("untrusted")
            .to_string();
        assert!(err.contains("not trusted"), "{err}");
    }

    #[test]
    fn refuses_writable_and_non_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write_exec(dir.path(), b"x", 0o777);
        assert!(matches!(
            sha256_file(&path),
            Err(ChecksumError::Writable { .. })
        ));
        assert!(matches!(
            sha256_file(dir.path()),
            Err(ChecksumError::NotAFile { .. })
        ));
        assert!(matches!(
            sha256_file(&dir.path().join("missing")),
            Err(ChecksumError::Io { .. })
        ));
    }

    #[test]
    fn parses_operator_checksums() {
        assert_eq!(parse_sha256(&"AB".repeat(32)), Some("ab".repeat(32)));
        assert_eq!(parse_sha256("abc"), None);
        assert_eq!(parse_sha256(&"zz".repeat(32)), None);
    }
}
