//! The state directory's permissions. Everything in it is the daemon's alone: the
//! database (`db/`), the event log (`pipeline/`) and the plugin sockets (`run/`) are
//! private to its user; the JSONL sink's files may be read by its group (a log
//! shipper), never by others. New files get this from the daemon's umask (0077, set
//! at start); a directory left by an older version or a careless copy is tightened at
//! start, before anything is read from it.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

/// The umask the daemon runs with: files 0600, directories 0700, unless a file is
/// explicitly given wider rights (the admin socket's 0660).
pub const UMASK: u32 = 0o077;

/// Why the state directory could not be prepared.
#[derive(Debug, thiserror::Error)]
#[error("state directory {path}: {cause}")]
pub struct StateDirError {
    pub path: String,
    /// Shown in the message, not chained: said once.
    pub cause: std::io::Error,
}

/// Creates `dir` (0700) if missing and tightens what is already there.
pub fn prepare(dir: &Path) -> Result<(), StateDirError> {
    let error = |path: &Path| {
        let path = path.display().to_string();
        move |cause| StateDirError { path, cause }
    };
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(error(dir))?;
    }
    restrict(dir, 0o077).map_err(error(dir))?;
    for (child, denied) in [
        ("db", 0o077),
        ("pipeline", 0o077),
        ("run", 0o077),
        ("sinks", 0o027),
    ] {
        let path = dir.join(child);
        if path.exists() {
            tighten_tree(&path, denied).map_err(error(&path))?;
        }
    }
    Ok(())
}

/// Takes the `denied` bits off `path` and everything below it (directories keep their
/// owner's search bit). Sockets and links are left alone: a socket's mode is set where
/// it is made, and a link's target is not ours to change.
fn tighten_tree(path: &Path, denied: u32) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    let kind = meta.file_type();
    if kind.is_symlink() {
        return Ok(());
    }
    if kind.is_dir() {
        restrict(path, denied)?;
        for entry in std::fs::read_dir(path)? {
            tighten_tree(&entry?.path(), denied)?;
        }
    } else if kind.is_file() {
        restrict(path, denied)?;
    }
    Ok(())
}

fn restrict(path: &Path, denied: u32) -> std::io::Result<()> {
    let mode = std::fs::metadata(path)?.permissions().mode() & 0o7777;
    if mode & denied != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & !denied))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path)
            .expect("metadata")
            .permissions()
            .mode()
            & 0o777
    }

    #[test]
    fn an_existing_state_directory_is_tightened() {
        let root = tempfile::tempdir().expect("tempdir");
        let state = root.path().join("state");
        for dir in ["db", "pipeline/log", "sinks"] {
            std::fs::create_dir_all(state.join(dir)).expect("dir");
        }
        for (file, wide) in [
            ("db/conf", 0o644),
            ("db/blobs", 0o666),
            ("pipeline/log/0001.log", 0o644),
            ("sinks/events.jsonl", 0o666),
        ] {
            let path = state.join(file);
            std::fs::write(&path, b"x").expect("file");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(wide)).expect("chmod");
        }
        for dir in ["", "db", "pipeline", "sinks"] {
            std::fs::set_permissions(state.join(dir), std::fs::Permissions::from_mode(0o777))
                .expect("chmod");
        }

        prepare(&state).expect("prepare");

        assert_eq!(mode(&state), 0o700);
        assert_eq!(mode(&state.join("db")), 0o700);
        assert_eq!(mode(&state.join("db/conf")), 0o600);
        assert_eq!(mode(&state.join("db/blobs")), 0o600);
        assert_eq!(mode(&state.join("pipeline/log/0001.log")), 0o600);
        assert_eq!(mode(&state.join("sinks")), 0o750);
        assert_eq!(mode(&state.join("sinks/events.jsonl")), 0o640);
    }

    #[test]
    fn a_missing_state_directory_is_created_private() {
        let root = tempfile::tempdir().expect("tempdir");
        let state = root.path().join("a/b/state");
        prepare(&state).expect("prepare");
        assert_eq!(mode(&state), 0o700);
    }
}
