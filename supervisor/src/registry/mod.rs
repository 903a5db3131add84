//! The plugin registry: discovers packages in the plugin directory, decides which
//! versions can run, and keeps the operator's trust pins.

mod checksum;
mod manifest;
mod resolve;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

pub use checksum::{
    ChecksumError, VerifiedExecutable, open_verified, parse_sha256, sha256_file as sha256_of,
};
pub use manifest::{KNOWN_CAPABILITIES, Manifest};
pub use resolve::{Package, Refusal};
use semver::Version;

use crate::store::{AuditDraft, Store, StoreError, TrustPin, TrustTable};

/// The supervisor's own version: plugins declare a `framework` range against it.
pub fn framework_version() -> Version {
    Version::parse(env!("CARGO_PKG_VERSION")).expect("the crate version is semver")
}

/// Errors from registry operations asked for by an operator.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot read the plugin directory {path}: {source}")]
    PluginDir {
        path: String,
        source: std::io::Error,
    },
    #[error("plugin `{0}` is not installed")]
    Unknown(String),
    #[error("plugin `{name}` has no installed version {version}")]
    UnknownVersion { name: String, version: String },
    #[error("`{0}` is not a SHA-256 checksum (64 hex digits)")]
    BadChecksum(String),
    #[error("{0}")]
    Checksum(#[from] ChecksumError),
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// One installed package as shown to operators.
#[derive(Debug, Clone)]
pub struct InstalledPlugin {
    pub package: Package,
    pub executable: PathBuf,
    pub selected: bool,
    pub pin: Option<TrustPin>,
    /// Why this package cannot run, if it cannot.
    pub refusal: Option<String>,
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
        }
    }

    /// Scans the plugin directory again. Returns the refusals, each naming the plugin and
    /// the problem, for the caller to log.
    pub fn rescan(&self) -> Result<Vec<Refusal>, RegistryError> {
        let (packages, mut refused) = discover(&self.plugin_dir)?;
        let framework = framework_version();
        let host = resolve::Host {
            framework: &framework,
            protocols: plugin_protocol::SUPPORTED_PROTOCOL_VERSIONS,
            pins: &self.pins,
        };
        let resolution = resolve::resolve(packages.clone(), &host);
        refused.extend(resolution.refused);
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
            out.push(InstalledPlugin {
                executable: package.manifest.executable_in(&package.dir),
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
    /// `sha256` as given, or the executable's current one.
    pub fn trust(
        &self,
        name: &str,
        version: Option<&str>,
        sha256: Option<&str>,
        by: &str,
    ) -> Result<TrustPin, RegistryError> {
        let package = self.find(name, version)?;
        let sha256 = match sha256 {
            Some(given) => {
                parse_sha256(given).ok_or_else(|| RegistryError::BadChecksum(given.to_owned()))?
            }
            None => checksum::sha256_file(&package.manifest.executable_in(&package.dir))?,
        };
        let pin = TrustPin {
            name: name.to_owned(),
            version: package.manifest.version.to_string(),
            sha256,
            pinned_at: unix_now(),
            pinned_by: by.to_owned(),
        };
        self.record_pin(&pin)?;
        Ok(pin)
    }

    /// Opens the package's executable and verifies it against its pin. Called before
    /// every spawn; the returned file is what gets executed.
    pub fn verify(&self, package: &Package) -> Result<VerifiedExecutable, RegistryError> {
        let pin = self.trust.get(
            &package.manifest.name,
            &package.manifest.version.to_string(),
        )?;
        Ok(checksum::open_verified(
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

/// Reads every `*/plugin.toml` under `dir`; unreadable manifests become refusals.
fn discover(dir: &Path) -> Result<(Vec<Package>, Vec<Refusal>), RegistryError> {
    let entries = std::fs::read_dir(dir).map_err(|source| RegistryError::PluginDir {
        path: dir.display().to_string(),
        source,
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
        match Manifest::load(&package_dir) {
            Ok(manifest) => packages.push(Package {
                dir: package_dir,
                manifest,
            }),
            Err(err) => refused.push(Refusal {
                plugin: package_dir
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                version: None,
                reason: format!("malformed manifest {err}"),
            }),
        }
    }
    Ok((packages, refused))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}
