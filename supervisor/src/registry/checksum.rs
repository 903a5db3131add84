//! SHA-256 of plugin executables, verified before every spawn.
//!
//! What runs must be byte for byte what was verified, whoever owns the file. So the
//! executable is read once, hashed while it is copied into a sealed memfd (no write,
//! grow, shrink or further seals), and the memfd is what gets executed
//! (`/proc/self/fd/N`): a file rewritten in place after the hash is never the one that
//! runs. Like sshd's `StrictModes`, an executable, or any directory above it, that
//! someone other than root or the daemon's user could write is refused outright: such a
//! file's owner controls what the next verification sees. A world-writable directory with
//! the sticky bit (`/tmp`) is accepted: only an entry's owner can replace it there.
//!
//! Files are opened without blocking and must be regular: `plugins trust` on a FIFO or
//! a device is refused at once instead of waiting for a writer.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use nix::fcntl::{FcntlArg, OFlag, SealFlag, fcntl};
use nix::sys::memfd::{MFdFlags, memfd_create};
use sha2::{Digest, Sha256};

/// An executable that matched its pin: a sealed in-memory copy of the verified bytes.
#[derive(Debug, Clone)]
pub struct VerifiedExecutable {
    sealed: Arc<OwnedFd>,
    /// The file the bytes came from (shown to the plugin as `argv[0]`).
    pub path: PathBuf,
    pub sha256: String,
}

impl VerifiedExecutable {
    /// What to execute: the sealed copy, through this process's descriptor table.
    pub fn exec_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.sealed.as_raw_fd()))
    }

    /// The sealed copy's descriptor, which the child keeps open across exec so that an
    /// interpreter can read a script through [`Self::exec_path`].
    pub fn exec_fd(&self) -> std::os::fd::RawFd {
        self.sealed.as_raw_fd()
    }
}

/// Why an executable may not run.
#[derive(Debug, thiserror::Error)]
pub enum ChecksumError {
    #[error("cannot read executable {path}: {cause}")]
    Io { path: String, cause: std::io::Error },
    #[error("executable {path} is not a regular file")]
    NotAFile { path: String },
    #[error("{what} {path} is writable by group or others (mode {mode:o}); refusing to run it")]
    Writable {
        what: &'static str,
        path: String,
        mode: u32,
    },
    #[error(
        "{what} {path} is owned by uid {owner}, not root or the daemon's user (uid {daemon}); refusing to run it"
    )]
    Owner {
        what: &'static str,
        path: String,
        owner: u32,
        daemon: u32,
    },
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
    #[error("cannot make a sealed copy of executable {path}: {cause}")]
    Seal { path: String, cause: nix::Error },
}

/// What identifies one version of a file on disk: a change of content changes at least
/// its ctime, which no unprivileged user can set back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl FileStamp {
    fn of(meta: &std::fs::Metadata) -> Self {
        let ns = |secs: i64, nanos: i64| i128::from(secs) * 1_000_000_000 + i128::from(nanos);
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
            ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// An executable opened for verification, after the ownership and mode checks.
#[derive(Debug)]
pub struct Opened {
    file: File,
    /// The path with every symbolic link resolved.
    pub path: PathBuf,
    pub stamp: FileStamp,
    /// The file's owner, for operators deciding whether to trust it.
    pub owner: u32,
}

/// Sealed copies of verified executables, reused while each file is unchanged: a restart
/// (a crash loop, say) costs a `stat` and the ownership checks, not a re-hash. The
/// registry keeps one for the supervisor, and `integrationd bench` one of its own, so
/// that it spawns as the daemon does.
#[derive(Debug, Default)]
pub struct SealedCopies {
    copies: Mutex<HashMap<PathBuf, (FileStamp, VerifiedExecutable)>>,
}

impl SealedCopies {
    /// [`open_checked`] then [`verify_opened`], with the copy made last time when the file has not changed
    /// since and it had the same trusted hash.
    pub fn verify(
        &self,
        path: &Path,
        trusted: Option<&str>,
    ) -> Result<VerifiedExecutable, ChecksumError> {
        let opened = open_checked(path)?;
        let mut copies = self.copies.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((stamp, copy)) = copies.get(&opened.path)
            && *stamp == opened.stamp
            && trusted.is_some_and(|t| constant_time_eq(t.as_bytes(), copy.sha256.as_bytes()))
        {
            return Ok(copy.clone());
        }
        let (path, stamp) = (opened.path.clone(), opened.stamp);
        copies.remove(&path);
        let verified = verify_opened(opened, trusted)?;
        copies.insert(path, (stamp, verified.clone()));
        Ok(verified)
    }
}

/// Hashes the file at `path` (what `plugins trust` records).
pub fn sha256_file(path: &Path) -> Result<String, ChecksumError> {
    sha256_opened(open_checked(path)?)
}

/// Hashes an opened executable.
pub fn sha256_opened(mut opened: Opened) -> Result<String, ChecksumError> {
    let shown = opened.path.clone();
    hash_into(&mut opened.file, &shown, None)
}

/// Hashes an opened executable into a sealed copy and compares with `trusted`.
pub fn verify_opened(
    mut opened: Opened,
    trusted: Option<&str>,
) -> Result<VerifiedExecutable, ChecksumError> {
    let path = opened.path.clone();
    let shown = path.display().to_string();
    let seal_error = |source| ChecksumError::Seal {
        path: shown.clone(),
        cause: source,
    };
    let sealed = memfd_create(
        c"integrationd-plugin",
        MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
    )
    .map_err(seal_error)?;
    let mut copy = File::from(sealed);
    let found = hash_into(&mut opened.file, &path, Some(&mut copy))?;
    match trusted {
        None => return Err(ChecksumError::NotTrusted { path: shown, found }),
        Some(expected) if !constant_time_eq(expected.as_bytes(), found.as_bytes()) => {
            return Err(ChecksumError::Mismatch {
                path: shown,
                expected: expected.to_owned(),
                found,
            });
        }
        Some(_) => {}
    }
    let sealed = OwnedFd::from(copy);
    add_seals(&sealed).map_err(seal_error)?;
    Ok(VerifiedExecutable {
        sealed: Arc::new(sealed),
        path,
        sha256: found,
    })
}

/// Seals the copy against any change. The kernel refuses a write seal with EBUSY while
/// some of the copy's pages are still referenced from elsewhere for a moment (it waits
/// briefly itself); that has been seen with many plugins spawned at once on a busy
/// machine (CI, 2026-12-07), so the seal is asked for again a few times before the
/// error is reported.
fn add_seals(sealed: &OwnedFd) -> Result<(), nix::Error> {
    const ATTEMPTS: u32 = 20;
    let seals = SealFlag::F_SEAL_WRITE
        | SealFlag::F_SEAL_SHRINK
        | SealFlag::F_SEAL_GROW
        | SealFlag::F_SEAL_SEAL;
    let mut attempt = 1;
    loop {
        match fcntl(sealed.as_fd(), FcntlArg::F_ADD_SEALS(seals)) {
            Err(nix::Error::EBUSY) if attempt < ATTEMPTS => {
                attempt += 1;
                // Nothing announces the pages' release: wait a little and ask again.
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            outcome => return outcome.map(drop),
        }
    }
}

/// Resolves `path`, checks the owner and mode of the file and of every directory above
/// it, and opens it without blocking and without following a link swapped in since.
pub fn open_checked(path: &Path) -> Result<Opened, ChecksumError> {
    let io = |source| ChecksumError::Io {
        path: path.display().to_string(),
        cause: source,
    };
    let resolved = std::fs::canonicalize(path).map_err(io)?;
    let daemon = nix::unistd::geteuid().as_raw();
    let mut ancestor = resolved.parent();
    while let Some(dir) = ancestor {
        let meta = std::fs::metadata(dir).map_err(io)?;
        check_writers("directory", dir, &meta, daemon, true)?;
        ancestor = dir.parent();
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_NONBLOCK | OFlag::O_NOFOLLOW | OFlag::O_NOCTTY).bits())
        .open(&resolved)
        .map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(ChecksumError::NotAFile {
            path: resolved.display().to_string(),
        });
    }
    check_writers("executable", &resolved, &meta, daemon, false)?;
    Ok(Opened {
        file,
        stamp: FileStamp::of(&meta),
        owner: meta.uid(),
        path: resolved,
    })
}

/// Only root and the daemon's user may be able to change `path`.
fn check_writers(
    what: &'static str,
    path: &Path,
    meta: &std::fs::Metadata,
    daemon: u32,
    sticky_allowed: bool,
) -> Result<(), ChecksumError> {
    let owner = meta.uid();
    if owner != 0 && owner != daemon {
        return Err(ChecksumError::Owner {
            what,
            path: path.display().to_string(),
            owner,
            daemon,
        });
    }
    let mode = meta.mode() & 0o7777;
    let sticky = mode & 0o1000 != 0;
    if mode & 0o022 != 0 && !(sticky_allowed && sticky) {
        return Err(ChecksumError::Writable {
            what,
            path: path.display().to_string(),
            mode,
        });
    }
    Ok(())
}

/// Hashes `file` from its start, copying the bytes into `copy` when given.
fn hash_into(
    file: &mut File,
    path: &Path,
    mut copy: Option<&mut File>,
) -> Result<String, ChecksumError> {
    let io = |source| ChecksumError::Io {
        path: path.display().to_string(),
        cause: source,
    };
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 256 * 1024];
    loop {
        let read = file.read(&mut buffer).map_err(io)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        if let Some(copy) = copy.as_deref_mut() {
            copy.write_all(&buffer[..read]).map_err(io)?;
        }
    }
    Ok(hex::encode(hasher.finalize()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

/// Parses an operator-given checksum: 64 hex digits, any case.
pub fn parse_sha256(text: &str) -> Option<String> {
    let lower = text.trim().to_ascii_lowercase();
    (lower.len() == 64 && lower.bytes().all(|b| b.is_ascii_hexdigit())).then_some(lower)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// Opens, checks and verifies `path` as a spawn does.
    fn open_verified(
        path: &Path,
        trusted: Option<&str>,
    ) -> Result<VerifiedExecutable, ChecksumError> {
        verify_opened(open_checked(path)?, trusted)
    }

    fn write_exec(dir: &Path, content: &[u8], mode: u32) -> PathBuf {
        let path = dir.join("plugin");
        std::fs::write(&path, content).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        path
    }

    /// A private directory (0700) under the test's temp dir, so the checks above it pass.
    fn private_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
            .expect("chmod");
        dir
    }

    #[test]
    fn known_vector_and_verification() {
        let dir = private_dir();
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
        let dir = private_dir();
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
    fn refuses_files_and_directories_another_user_can_write() {
        // The tests run as root; a file handed to uid 65534 stands for another user's.
        let dir = private_dir();
        let path = write_exec(dir.path(), b"x", 0o755);
        nix::unistd::chown(&path, Some(nix::unistd::Uid::from_raw(65534)), None).expect("chown");
        let err = sha256_file(&path).expect_err("another owner").to_string();
        assert!(
            err.contains("owned by uid 65534") && err.contains("executable"),
            "{err}"
        );

        let parent = private_dir();
        let package = parent.path().join("package");
        std::fs::create_dir(&package).expect("dir");
        let path = write_exec(&package, b"x", 0o755);
        nix::unistd::chown(&package, Some(nix::unistd::Uid::from_raw(65534)), None).expect("chown");
        let err = sha256_file(&path)
            .expect_err("directory of another")
            .to_string();
        assert!(err.contains("directory") && err.contains("65534"), "{err}");

        nix::unistd::chown(&package, Some(nix::unistd::Uid::from_raw(0)), None).expect("chown");
        std::fs::set_permissions(&package, std::fs::Permissions::from_mode(0o775)).expect("chmod");
        let err = sha256_file(&path)
            .expect_err("group-writable dir")
            .to_string();
        assert!(err.contains("directory") && err.contains("775"), "{err}");

        // Sticky and world-writable, as /tmp: only an entry's owner can replace it.
        std::fs::set_permissions(&package, std::fs::Permissions::from_mode(0o1777)).expect("chmod");
        assert!(sha256_file(&path).is_ok());
    }

    #[test]
    fn what_runs_is_the_verified_copy_even_when_the_file_is_rewritten_in_place() {
        let dir = private_dir();
        let path = dir.path().join("tool");
        std::fs::copy("/bin/true", &path).expect("copy");
        let trusted = sha256_file(&path).expect("hash");
        let verified = open_verified(&path, Some(&trusted)).expect("verified");
        // The owner rewrites the same inode with other bytes after the check.
        std::fs::write(&path, std::fs::read("/bin/false").expect("read")).expect("rewrite");
        let status = std::process::Command::new(verified.exec_path())
            .status()
            .expect("exec");
        assert!(status.success(), "the rewritten file ran: {status}");
    }

    #[test]
    fn a_sealed_copy_is_reused_only_while_its_file_is_unchanged() {
        let dir = private_dir();
        let path = dir.path().join("tool");
        std::fs::copy("/bin/true", &path).expect("copy");
        let trusted = sha256_file(&path).expect("hash");
        let copies = SealedCopies::default();
        let first = copies.verify(&path, Some(&trusted)).expect("verified");
        let again = copies.verify(&path, Some(&trusted)).expect("verified");
        assert_eq!(first.exec_path(), again.exec_path(), "the same sealed copy");

        // Rewritten in place (same inode and size), then swapped for another file: each
        // is hashed again and refused, never served from the copy.
        let same_size = vec![0u8; std::fs::metadata(&path).expect("meta").len() as usize];
        std::fs::write(&path, &same_size).expect("rewrite");
        let err = copies.verify(&path, Some(&trusted)).expect_err("rewritten");
        assert!(matches!(err, ChecksumError::Mismatch { .. }), "{err}");
        let swapped = dir.path().join("other");
        std::fs::copy("/bin/false", &swapped).expect("copy");
        std::fs::rename(&swapped, &path).expect("swap");
        let err = copies.verify(&path, Some(&trusted)).expect_err("swapped");
        assert!(matches!(err, ChecksumError::Mismatch { .. }), "{err}");
        // A copy already handed out still runs the verified bytes.
        let status = std::process::Command::new(first.exec_path())
            .status()
            .expect("exec");
        assert!(status.success());
    }

    #[test]
    fn a_fifo_is_refused_without_waiting_for_a_writer() {
        let dir = private_dir();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644))
            .expect("mkfifo");
        let err = sha256_file(&fifo).expect_err("fifo");
        assert!(matches!(err, ChecksumError::NotAFile { .. }), "{err}");
    }

    #[test]
    fn parses_operator_checksums() {
        assert_eq!(parse_sha256(&"AB".repeat(32)), Some("ab".repeat(32)));
        assert_eq!(parse_sha256("abc"), None);
        assert_eq!(parse_sha256(&"zz".repeat(32)), None);
    }
}
