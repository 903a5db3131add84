//! The admin socket: 0660, in a directory of mode 0700 or 0750 owned by the daemon.
//! A stale socket from a killed daemon is removed; a live one means another daemon
//! runs, which is an error.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::Path;

use tokio::net::UnixListener;

#[derive(Debug, thiserror::Error)]
pub enum AdminSocketError {
    #[error("admin socket {path}: {message}")]
    Setup { path: String, message: String },
    #[error("admin socket {path}: another integrationd is already listening there")]
    InUse { path: String },
}

/// Binds the admin socket, preparing its directory.
pub fn bind(path: &Path) -> Result<UnixListener, AdminSocketError> {
    let error = |message: String| AdminSocketError::Setup {
        path: path.display().to_string(),
        message,
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(dir)
            .map_err(|e| error(format!("cannot create directory {}: {e}", dir.display())))?;
    }
    let meta = std::fs::metadata(dir)
        .map_err(|e| error(format!("cannot inspect {}: {e}", dir.display())))?;
    if meta.uid() != nix::unistd::geteuid().as_raw() {
        return Err(error(format!(
            "directory {} is not owned by this daemon's user",
            dir.display()
        )));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o027 != 0 {
        // Tighten a directory we own rather than expose the socket.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode & 0o750))
            .map_err(|e| error(format!("cannot restrict {} to 0750: {e}", dir.display())))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(AdminSocketError::InUse {
                path: path.display().to_string(),
            });
        }
        std::fs::remove_file(path)
            .map_err(|e| error(format!("cannot remove the stale socket: {e}")))?;
        tracing::info!(socket = %path.display(), "removed a stale admin socket");
    }
    let listener = UnixListener::bind(path).map_err(|e| error(format!("cannot bind: {e}")))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(|e| error(format!("cannot set mode 0660: {e}")))?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn binds_0660_in_a_private_directory_and_refuses_a_live_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("run/admin.sock");
        let listener = bind(&path).expect("bind");
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o660);
        assert_eq!(mode(path.parent().expect("dir")) & 0o027, 0);
        assert!(matches!(bind(&path), Err(AdminSocketError::InUse { .. })));
        drop(listener);
        // The file stays behind, like after kill -9: it is stale now and gets replaced.
        assert!(path.exists());
        assert!(bind(&path).is_ok());
    }
}
