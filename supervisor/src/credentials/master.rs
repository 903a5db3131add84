//! The master key: an age X25519 identity that wraps every tenant's key. It comes from a
//! key file (0600 or stricter), from systemd's `$CREDENTIALS_DIRECTORY`, or from a
//! passphrase that unlocks a master identity kept in the database through scrypt.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use age::secrecy::{ExposeSecret, SecretString};

/// Where the master key comes from (`credentials.master_key`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MasterKeySource {
    /// `file:PATH`: an age identity file.
    File(PathBuf),
    /// `systemd:NAME`: `$CREDENTIALS_DIRECTORY/NAME` (systemd `LoadCredential=`).
    Systemd(String),
    /// `passphrase-file:PATH`: a passphrase, stretched with scrypt.
    PassphraseFile(PathBuf),
}

/// Why the master key cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum MasterKeyError {
    #[error(
        "credentials.master_key = `{0}`: use `file:PATH`, `systemd:NAME` or `passphrase-file:PATH`"
    )]
    BadSource(String),
    #[error("master key file {path} does not exist")]
    Missing { path: String },
    #[error(
        "master key file {path} has mode {mode:o}: it must not be readable or writable by group or others (chmod 600)"
    )]
    LoosePermissions { path: String, mode: u32 },
    #[error("cannot read master key file {path}: {cause}")]
    Read { path: String, cause: std::io::Error },
    #[error("master key file {path} holds no age identity (a line `AGE-SECRET-KEY-1…`)")]
    NoIdentity { path: String },
    #[error(
        "`systemd:{0}` needs $CREDENTIALS_DIRECTORY, which is not set (is LoadCredential= configured?)"
    )]
    NoCredentialsDirectory(String),
    #[error("master passphrase file {path} is empty")]
    EmptyPassphrase { path: String },
    #[error("cannot create master key file {path}: {cause}")]
    Create { path: String, cause: std::io::Error },
}

impl MasterKeySource {
    pub fn parse(text: &str) -> Result<Self, MasterKeyError> {
        let bad = || MasterKeyError::BadSource(text.to_owned());
        let (scheme, rest) = text.split_once(':').ok_or_else(bad)?;
        if rest.is_empty() {
            return Err(bad());
        }
        match scheme {
            "file" => Ok(Self::File(rest.into())),
            "systemd" => Ok(Self::Systemd(rest.to_owned())),
            "passphrase-file" => Ok(Self::PassphraseFile(rest.into())),
            _ => Err(bad()),
        }
    }

    /// Makes relative paths absolute.
    pub fn resolve(self) -> std::io::Result<Self> {
        Ok(match self {
            Self::File(path) => Self::File(std::path::absolute(path)?),
            Self::PassphraseFile(path) => Self::PassphraseFile(std::path::absolute(path)?),
            other => other,
        })
    }
}

/// What the source yields: an identity, or a passphrase to unlock the stored one.
pub enum MasterSecret {
    Identity(age::x25519::Identity),
    Passphrase(SecretString),
}

impl std::fmt::Debug for MasterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Identity(identity) => {
                write!(f, "MasterSecret::Identity({})", identity.to_public())
            }
            Self::Passphrase(_) => f.write_str("MasterSecret::Passphrase(<redacted>)"),
        }
    }
}

/// Reads the master secret. `generate_if_missing` (development only) creates a key file.
pub fn load(
    source: &MasterKeySource,
    generate_if_missing: bool,
) -> Result<MasterSecret, MasterKeyError> {
    match source {
        MasterKeySource::File(path) => {
            if generate_if_missing && !path.exists() {
                generate_file(path)?;
            }
            read_identity_file(path).map(MasterSecret::Identity)
        }
        MasterKeySource::Systemd(name) => {
            let dir = std::env::var_os("CREDENTIALS_DIRECTORY")
                .ok_or_else(|| MasterKeyError::NoCredentialsDirectory(name.clone()))?;
            read_identity_file(&Path::new(&dir).join(name)).map(MasterSecret::Identity)
        }
        MasterKeySource::PassphraseFile(path) => {
            let text = read_private(path)?;
            let passphrase = text
                .expose_secret()
                .trim_end_matches(['\n', '\r'])
                .to_owned();
            if passphrase.is_empty() {
                return Err(MasterKeyError::EmptyPassphrase {
                    path: path.display().to_string(),
                });
            }
            Ok(MasterSecret::Passphrase(SecretString::from(passphrase)))
        }
    }
}

/// Reads a file that must be private to its owner.
fn read_private(path: &Path) -> Result<SecretString, MasterKeyError> {
    let shown = path.display().to_string();
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return Err(MasterKeyError::Missing { path: shown });
        }
        Err(source) => {
            return Err(MasterKeyError::Read {
                path: shown,
                cause: source,
            });
        }
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(MasterKeyError::LoosePermissions { path: shown, mode });
    }
    let text = std::fs::read_to_string(path).map_err(|source| MasterKeyError::Read {
        path: shown,
        cause: source,
    })?;
    Ok(SecretString::from(text))
}

fn read_identity_file(path: &Path) -> Result<age::x25519::Identity, MasterKeyError> {
    let text = read_private(path)?;
    text.expose_secret()
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .find_map(|line| line.parse::<age::x25519::Identity>().ok())
        .ok_or_else(|| MasterKeyError::NoIdentity {
            path: path.display().to_string(),
        })
}

/// Writes a new identity file with mode 0600 (development set-ups).
pub fn generate_file(path: &Path) -> Result<(), MasterKeyError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let shown = path.display().to_string();
    // The key is read before the state directory is made, and the development key often
    // lives in it: a missing parent is created private.
    if let Some(parent) = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty() && !p.exists())
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(|source| MasterKeyError::Create {
                path: shown.clone(),
                cause: source,
            })?;
    }
    let identity = age::x25519::Identity::generate();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| MasterKeyError::Create {
            path: shown.clone(),
            cause: source,
        })?;
    writeln!(
        file,
        "# integrationd master key, public key: {}",
        identity.to_public()
    )
    .and_then(|()| writeln!(file, "{}", identity.to_string().expose_secret()))
    .map_err(|source| MasterKeyError::Create {
        path: shown,
        cause: source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse_or_name_the_problem() {
        assert_eq!(
            MasterKeySource::parse("file:/k").expect("file"),
            MasterKeySource::File("/k".into())
        );
        assert_eq!(
            MasterKeySource::parse("systemd:mk").expect("sd"),
            MasterKeySource::Systemd("mk".into())
        );
        for bad in ["", "file:", "/etc/key", "vault:x"] {
            assert!(
                MasterKeySource::parse(bad)
                    .expect_err(bad)
                    .to_string()
                    .contains("use `file:PATH`")
            );
        }
    }

    #[test]
    fn key_files_must_exist_be_private_and_hold_an_identity() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("master.key");
        let source = MasterKeySource::File(path.clone());
        assert!(matches!(
            load(&source, false),
            Err(MasterKeyError::Missing { .. })
        ));
        assert!(matches!(load(&source, true), Ok(MasterSecret::Identity(_))));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = load(&source, false).expect_err("loose");
        assert!(
            err.to_string().contains("mode 644") && err.to_string().contains("chmod 600"),
            "{err}"
        );
        std::fs::write(&path, "not a key\n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert!(matches!(
            load(&source, false),
            Err(MasterKeyError::NoIdentity { .. })
        ));
    }

    #[test]
    fn errors_never_contain_key_material() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("master.key");
        generate_file(&path).expect("generate");
        let text = std::fs::read_to_string(&path).expect("read");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        let err = load(&MasterKeySource::File(path), false)
            .expect_err("loose")
            .to_string();
        assert!(!err.contains("AGE-SECRET-KEY"), "{err}");
        let shown = format!(
            "{:?}",
            MasterSecret::Passphrase(SecretString::from("hunter2".to_owned()))
        );
        assert!(!shown.contains("hunter2"));
        assert!(text.contains("AGE-SECRET-KEY-1"));
    }
}
