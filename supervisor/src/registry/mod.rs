//! The plugin registry: discovers packages in the plugin directory, decides which
//! versions can run, and keeps the operator's trust pins.

mod checksum;
mod manifest;
mod resolve;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

pub use checksum::{
    ChecksumError, SealedCopies, VerifiedExecutable, parse_sha256, sha256_file as sha256_of,
};
pub use manifest::{Manifest, check_description};
pub use resolve::{Package, Refusal};
use semver::Version;

use crate::credentials::{PluginKinds, SecretSchema};
use crate::store::{AuditDraft, Store, StoreError, TrustPin, TrustTable};

/// The supervisor's own version: plugins declare a `framework` range against it.
pub fn framework_version() -> Version {
    Version::parse(env!("CARGO_PKG_VERSION")).expect("the crate version is semver")
}

/// Errors from registry operations asked for by an operator.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot read the plugin directory {path}: {cause}")]
    PluginDir { path: String, cause: std::io::Error },
    #[error("plugin `{0}` is not installed")]
    Unknown(String),
    #[error("plugin `{name}` has no installed version {version}")]
    UnknownVersion { name: String, version: String },
    #[error("`{0}` is not a SHA-256 checksum (64 hex digits)")]
    BadChecksum(String),
    #[error(transparent)]
    Checksum(#[from] ChecksumError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One installed package as shown to operators.
#[derive(Debug, Clone)]
pub struct InstalledPlugin {
    pub package: Package,
    /// The executable with every link resolved (as written when it cannot be resolved).
    pub executable: PathBuf,
    /// The uid owning the executable, if it could be read.
    pub owner: Option<u32>,
    pub selected: bool,
    pub pin: Option<TrustPin>,
    /// Why this package cannot run, if it cannot.
    pub refusal: Option<String>,
}

/// A pin just recorded, with what it covers as the operator should see it.
#[derive(Debug, Clone)]
pub struct Trusted {
    pub pin: TrustPin,
    /// The executable with every link resolved.
    pub executable: PathBuf,
    pub owner: Option<u32>,
}

/// The outcome of the last scan.
#[derive(Debug, Clone, Default)]
struct Snapshot {
    selected: BTreeMap<String, Arc<Package>>,
    installed: Vec<Package>,
    refused: Vec<Refusal>,
}

/// Discovered plugins and their trust.
#[derive(Debug)]
pub struct Registry {
    plugin_dir: PathBuf,
    pins: BTreeMap<String, Version>,
    trust_build_output: bool,
    trust: TrustTable,
    store: Store,
    snapshot: RwLock<Snapshot>,
    /// The sealed copy last verified per executable, reused while the file is unchanged.
    sealed: SealedCopies,
    /// The credential kinds the selected packages declare, for the credential manager.
    plugin_kinds: Arc<PluginKinds>,
}

impl Registry {
    pub fn new(
        plugin_dir: PathBuf,
        pins: BTreeMap<String, Version>,
        trust_build_output: bool,
        store: Store,
    ) -> Self {
        Self {
            plugin_dir,
            pins,
            trust_build_output,
            trust: store.trust(),
            store,
            snapshot: RwLock::default(),
            sealed: SealedCopies::default(),
            plugin_kinds: Arc::default(),
        }
    }

    /// The catalog of plugin-declared credential kinds, kept current by every scan.
    pub fn plugin_kinds(&self) -> Arc<PluginKinds> {
        Arc::clone(&self.plugin_kinds)
    }

    /// Scans the plugin directory again. Returns the refusals, each naming the plugin and
    /// the problem, for the caller to log.
    pub fn rescan(&self) -> Result<Vec<Refusal>, RegistryError> {
        let (packages, mut refused) = discover(&self.plugin_dir, self.trust_build_output)?;
        let framework = framework_version();
        let host = resolve::Host {
            framework: &framework,
            protocols: plugin_protocol::SUPPORTED_PROTOCOL_VERSIONS,
            pins: &self.pins,
        };
        let mut resolution = resolve::resolve(packages.clone(), &host);
        refused.extend(resolution.refused);
        let mut kinds = BTreeMap::new();
        resolution.selected.retain(|name, package| {
            match compile_credential_kinds(&package.manifest) {
                Ok(compiled) => {
                    kinds.extend(compiled);
                    true
                }
                Err(reason) => {
                    refused.push(Refusal {
                        plugin: name.clone(),
                        version: Some(package.manifest.version.clone()),
                        reason,
                    });
                    false
                }
            }
        });
        self.plugin_kinds.replace(kinds);
        if self.trust_build_output {
            for package in resolution.selected.values() {
                self.pin_current(package, "config:trust_build_output")?;
            }
        }
        let snapshot = Snapshot {
            selected: resolution
                .selected
                .into_iter()
                .map(|(name, package)| (name, Arc::new(package)))
                .collect(),
            installed: packages,
            refused: refused.clone(),
        };
        *self.snapshot.write().expect("registry lock poisoned") = snapshot;
        Ok(refused)
    }

    /// The version of `name` that runs, if any.
    pub fn selected(&self, name: &str) -> Option<Arc<Package>> {
        self.snapshot
            .read()
            .expect("registry lock poisoned")
            .selected
            .get(name)
            .cloned()
    }

    /// Why `name` cannot run, when it cannot.
    pub fn refusal(&self, name: &str) -> Option<String> {
        let snapshot = self.snapshot.read().expect("registry lock poisoned");
        let reasons: Vec<&str> = snapshot
            .refused
            .iter()
            .filter(|r| r.plugin == name)
            .map(|r| r.reason.as_str())
            .collect();
        (!reasons.is_empty()).then(|| reasons.join("; "))
    }

    /// Every installed package and every refused one, sorted by name and version.
    pub fn list(&self) -> Result<Vec<InstalledPlugin>, RegistryError> {
        let snapshot = self
            .snapshot
            .read()
            .expect("registry lock poisoned")
            .clone();
        let mut out = Vec::new();
        for package in &snapshot.installed {
            let name = &package.manifest.name;
            let version = &package.manifest.version;
            let selected = snapshot
                .selected
                .get(name)
                .is_some_and(|s| &s.manifest.version == version);
            let refusal = snapshot
                .refused
                .iter()
                .find(|r| &r.plugin == name && r.version.as_ref() == Some(version))
                .map(|r| r.reason.clone());
            let written = package.manifest.executable_in(&package.dir);
            let opened = checksum::open_checked(&written).ok();
            out.push(InstalledPlugin {
                owner: opened.as_ref().map(|o| o.owner),
                executable: opened.map_or(written, |o| o.path),
                pin: self.trust.get(name, &version.to_string())?,
                package: package.clone(),
                selected,
                refusal,
            });
        }
        out.sort_by(|a, b| {
            (&a.package.manifest.name, &b.package.manifest.version)
                .cmp(&(&b.package.manifest.name, &a.package.manifest.version))
        });
        Ok(out)
    }

    /// Refusals of packages whose manifest could not even be read.
    pub fn unreadable(&self) -> Vec<Refusal> {
        self.snapshot
            .read()
            .expect("registry lock poisoned")
            .refused
            .iter()
            .filter(|r| r.version.is_none())
            .cloned()
            .collect()
    }

    /// Pins a checksum for `name` (the selected version unless `version` is given):
    /// `sha256` as given, or the executable's current one. Blocking file work: call it
    /// off the async runtime.
    pub fn trust(
        &self,
        name: &str,
        version: Option<&str>,
        sha256: Option<&str>,
        by: &str,
    ) -> Result<Trusted, RegistryError> {
        let package = self.find(name, version)?;
        let written = package.manifest.executable_in(&package.dir);
        let (sha256, executable, owner) = match sha256 {
            Some(given) => {
                let sha256 = parse_sha256(given)
                    .ok_or_else(|| RegistryError::BadChecksum(given.to_owned()))?;
                match checksum::open_checked(&written) {
                    Ok(opened) => (sha256, opened.path, Some(opened.owner)),
                    Err(_) => (sha256, written, None),
                }
            }
            None => {
                let opened = checksum::open_checked(&written)?;
                let (path, owner) = (opened.path.clone(), opened.owner);
                (checksum::sha256_opened(opened)?, path, Some(owner))
            }
        };
        let pin = TrustPin {
            name: name.to_owned(),
            version: package.manifest.version.to_string(),
            sha256,
            pinned_at: unix_now(),
            pinned_by: by.to_owned(),
        };
        self.record_pin(&pin)?;
        Ok(Trusted {
            pin,
            executable,
            owner,
        })
    }

    /// Verifies the package's executable against its pin. Called before every spawn;
    /// the returned sealed copy is what gets executed. The file's owner and mode are
    /// checked each time; it is hashed again only when it changed since the last copy.
    pub fn verify(&self, package: &Package) -> Result<VerifiedExecutable, RegistryError> {
        let pin = self.trust.get(
            &package.manifest.name,
            &package.manifest.version.to_string(),
        )?;
        Ok(self.sealed.verify(
            &package.manifest.executable_in(&package.dir),
            pin.as_ref().map(|p| p.sha256.as_str()),
        )?)
    }

    fn find(&self, name: &str, version: Option<&str>) -> Result<Package, RegistryError> {
        let snapshot = self.snapshot.read().expect("registry lock poisoned");
        let mut candidates: Vec<&Package> = snapshot
            .installed
            .iter()
            .filter(|p| p.manifest.name == name)
            .collect();
        if candidates.is_empty() {
            return Err(RegistryError::Unknown(name.to_owned()));
        }
        match version {
            Some(version) => candidates
                .into_iter()
                .find(|p| p.manifest.version.to_string() == version)
                .cloned()
                .ok_or_else(|| RegistryError::UnknownVersion {
                    name: name.to_owned(),
                    version: version.to_owned(),
                }),
            None => {
                if let Some(selected) = snapshot.selected.get(name) {
                    return Ok((**selected).clone());
                }
                candidates.sort_by(|a, b| b.manifest.version.cmp(&a.manifest.version));
                Ok(candidates[0].clone())
            }
        }
    }

    fn pin_current(&self, package: &Package, by: &str) -> Result<(), RegistryError> {
        let executable = package.manifest.executable_in(&package.dir);
        let sha256 = match checksum::sha256_file(&executable) {
            Ok(sha256) => sha256,
            // Left unpinned: the spawn will report the same error, naming the plugin.
            Err(_) => return Ok(()),
        };
        let version = package.manifest.version.to_string();
        if self
            .trust
            .get(&package.manifest.name, &version)?
            .is_some_and(|pin| pin.sha256 == sha256)
        {
            return Ok(());
        }
        self.record_pin(&TrustPin {
            name: package.manifest.name.clone(),
            version,
            sha256,
            pinned_at: unix_now(),
            pinned_by: by.to_owned(),
        })
    }

    /// Stores a pin with its audit record.
    fn record_pin(&self, pin: &TrustPin) -> Result<(), RegistryError> {
        let _turn = self.store.writer();
        let audit = AuditDraft::ok(
            None,
            &pin.pinned_by,
            "plugin.trust",
            &format!("plugin:{}@{}", pin.name, pin.version),
            format!("sha256 {}", pin.sha256),
        );
        self.store.commit(&TrustTable::pin_batch(pin)?, &audit)?;
        Ok(())
    }
}

/// Reads every `*/plugin.toml` under `dir`; unreadable manifests become refusals, and
/// so do packages that claim another directory's plugin or whose executable lies
/// outside their directory (allowed only with `trust_build_output`, for development).
fn discover(
    dir: &Path,
    trust_build_output: bool,
) -> Result<(Vec<Package>, Vec<Refusal>), RegistryError> {
    let entries = std::fs::read_dir(dir).map_err(|source| RegistryError::PluginDir {
        path: dir.display().to_string(),
        cause: source,
    })?;
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    let mut packages = Vec::new();
    let mut refused = Vec::new();
    for package_dir in dirs {
        if !package_dir.join("plugin.toml").exists() {
            continue;
        }
        match manifest::load(&package_dir) {
            Ok(manifest) => match package_problem(&package_dir, &manifest, trust_build_output) {
                None => packages.push(Package {
                    dir: package_dir,
                    manifest,
                }),
                Some(reason) => refused.push(Refusal {
                    plugin: manifest.name.clone(),
                    version: Some(manifest.version.clone()),
                    reason,
                }),
            },
            Err(err) => {
                let plugin = package_dir
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                refused.push(Refusal {
                    reason: format!("package `{plugin}` has a malformed manifest: {err}"),
                    plugin,
                    version: None,
                });
            }
        }
    }
    Ok((packages, refused))
}

/// Why a package may not be used, if it may not: its directory is named after another
/// plugin (`NAME` or `NAME-…` is expected), or its executable resolves outside it.
fn package_problem(dir: &Path, manifest: &Manifest, trust_build_output: bool) -> Option<String> {
    let dir_name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = &manifest.name;
    let named_after = dir_name == *name
        || dir_name
            .strip_prefix(name.as_str())
            .is_some_and(|rest| rest.starts_with('-'));
    if !named_after {
        return Some(format!(
            "package directory `{dir_name}` claims plugin `{name}`: a package's directory is named `{name}` or `{name}-<anything>`"
        ));
    }
    if trust_build_output {
        return None;
    }
    let executable = manifest.executable_in(dir);
    match (
        std::fs::canonicalize(dir),
        std::fs::canonicalize(&executable),
    ) {
        (Ok(root), Ok(resolved)) if !resolved.starts_with(&root) => Some(format!(
            "executable {} resolves to {}, outside the package directory {}",
            executable.display(),
            resolved.display(),
            root.display()
        )),
        // A missing executable is reported, naming the plugin, when it is verified.
        _ => None,
    }
}

use plugin_kit::clock::now_secs as unix_now;

/// The schemas of the credential kinds `manifest` declares, compiled; a package with a
/// schema that does not compile cannot run, since its secrets could not be checked.
fn compile_credential_kinds(manifest: &Manifest) -> Result<Vec<(String, SecretSchema)>, String> {
    manifest
        .declared_credential_kinds()
        .map(|(kind, schema)| {
            SecretSchema::compile(schema)
                .map(|compiled| (kind.clone(), compiled))
                .map_err(|why| {
                    format!(
                        "plugin `{}` declares credential kind `{kind}` with a schema that is {why}",
                        manifest.name
                    )
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn package(root: &Path, dir: &str, name: &str, executable: &str) {
        let dir = root.join(dir);
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(
            dir.join("plugin.toml"),
            format!(
                "name = {name:?}\nversion = \"9.0.0\"\nexecutable = {executable:?}\nprotocol_versions = [1]\nframework = \"*\"\n"
            ),
        )
        .expect("manifest");
    }

    #[test]
    fn a_package_cannot_claim_another_plugin_or_run_a_file_outside_it() {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::write(root.path().join("outside"), b"x").expect("outside file");
        package(root.path(), "github", "github", "integration-github");
        package(root.path(), "github-2", "github", "integration-github");
        package(root.path(), "evil", "github", "integration-github");
        package(root.path(), "escape", "escape", "../outside");
        package(root.path(), "linked", "linked", "through-link");
        std::os::unix::fs::symlink(
            root.path().join("outside"),
            root.path().join("linked/through-link"),
        )
        .expect("symlink");

        let (packages, refused) = discover(root.path(), false).expect("discover");
        let dirs: Vec<String> = packages
            .iter()
            .map(|p| {
                p.dir
                    .file_name()
                    .expect("name")
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        assert_eq!(dirs, ["github", "github-2"]);
        let reason = |plugin: &str| {
            refused
                .iter()
                .find(|r| r.plugin == plugin)
                .map(|r| r.reason.clone())
                .unwrap_or_default()
        };
        assert!(
            reason("github").contains("package directory `evil` claims plugin `github`"),
            "{refused:?}"
        );
        assert!(reason("escape").contains("outside the package directory"));
        assert!(reason("linked").contains("outside the package directory"));

        // Development set-ups run the build output in place.
        let (packages, _) = discover(root.path(), true).expect("discover");
        assert_eq!(packages.len(), 4);
    }
}
