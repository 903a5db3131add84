//! Choosing which installed plugin versions can run: protocol and framework
//! compatibility and pins. Pure: no I/O, tested directly.

use std::collections::BTreeMap;
use std::path::PathBuf;

use semver::Version;

use super::manifest::Manifest;

/// An installed package: its manifest and where it lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    pub dir: PathBuf,
    pub manifest: Manifest,
}

impl Package {
    fn label(&self) -> String {
        format!(
            "plugin `{}` {} ({})",
            self.manifest.name,
            self.manifest.version,
            self.dir.display()
        )
    }
}

/// A package or manifest that cannot run, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Plugin name if the manifest could be read, else the package directory name.
    pub plugin: String,
    pub version: Option<Version>,
    pub reason: String,
}

/// What may run, and what may not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolution {
    pub selected: BTreeMap<String, Package>,
    pub refused: Vec<Refusal>,
}

/// The facts resolution checks against.
#[derive(Debug, Clone)]
pub struct Host<'a> {
    pub framework: &'a Version,
    pub protocols: &'a [u32],
    pub pins: &'a BTreeMap<String, Version>,
}

/// Picks, for each plugin name, the newest compatible version (or the pinned one).
pub fn resolve(packages: Vec<Package>, host: &Host<'_>) -> Resolution {
    let mut resolution = Resolution::default();
    let mut compatible: BTreeMap<String, Vec<Package>> = BTreeMap::new();
    for package in packages {
        let manifest = &package.manifest;
        let refuse = |reason: String| Refusal {
            plugin: manifest.name.clone(),
            version: Some(manifest.version.clone()),
            reason,
        };
        if !manifest
            .protocol_versions
            .iter()
            .any(|v| host.protocols.contains(v))
        {
            resolution.refused.push(refuse(format!(
                "{} speaks protocol versions {:?}, this supervisor speaks {:?}",
                package.label(),
                manifest.protocol_versions,
                host.protocols
            )));
            continue;
        }
        if !manifest.framework.matches(host.framework) {
            resolution.refused.push(refuse(format!(
                "{} requires integrationd {}, this is {}",
                package.label(),
                manifest.framework,
                host.framework
            )));
            continue;
        }
        let versions = compatible.entry(manifest.name.clone()).or_default();
        if let Some(other) = versions
            .iter()
            .find(|p| p.manifest.version == manifest.version)
        {
            resolution.refused.push(refuse(format!(
                "{} is installed twice; using {}",
                package.label(),
                other.dir.display()
            )));
            continue;
        }
        versions.push(package);
    }

    for (name, mut versions) in compatible {
        versions.sort_by(|a, b| b.manifest.version.cmp(&a.manifest.version));
        let chosen = match host.pins.get(&name) {
            Some(pin) => match versions.iter().position(|p| &p.manifest.version == pin) {
                Some(index) => versions.swap_remove(index),
                None => {
                    resolution.refused.push(Refusal {
                        plugin: name.clone(),
                        version: Some(pin.clone()),
                        reason: format!(
                            "plugin `{name}` is pinned to {pin}, which is not installed (installed: {})",
                            list_versions(&versions)
                        ),
                    });
                    continue;
                }
            },
            None => versions.remove(0),
        };
        resolution.selected.insert(name, chosen);
    }

    resolution
}

fn list_versions(versions: &[Package]) -> String {
    let list: Vec<String> = versions
        .iter()
        .map(|p| p.manifest.version.to_string())
        .collect();
    if list.is_empty() {
        "none compatible".to_owned()
    } else {
        list.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn package(name: &str, version: &str, extra: &str) -> Package {
        let text = format!(
            "name = \"{name}\"\nversion = \"{version}\"\nexecutable = \"bin\"\nprotocol_versions = [1]\nframework = \">=0.1\"\n{extra}"
        );
        Package {
            dir: format!("/plugins/{name}-{version}").into(),
            manifest: Manifest::parse(&text).expect("manifest"),
        }
    }

    fn run(packages: Vec<Package>, pins: &[(&str, &str)]) -> Resolution {
        let framework = Version::new(0, 1, 0);
        let pins = pins
            .iter()
            .map(|(n, v)| ((*n).to_owned(), Version::parse(v).expect("v")))
            .collect();
        resolve(
            packages,
            &Host {
                framework: &framework,
                protocols: &[1],
                pins: &pins,
            },
        )
    }

    fn reason(resolution: &Resolution, plugin: &str) -> String {
        resolution
            .refused
            .iter()
            .find(|r| r.plugin == plugin)
            .map(|r| r.reason.clone())
            .unwrap_or_default()
    }

    #[test]
    fn picks_newest_compatible_unless_pinned() {
        let packages = || {
            vec![
                package("a", "1.0.0", ""),
                package("a", "1.2.0", ""),
                package("a", "1.1.0", ""),
            ]
        };
        let newest = run(packages(), &[]);
        assert_eq!(newest.selected["a"].manifest.version, Version::new(1, 2, 0));
        let pinned = run(packages(), &[("a", "1.1.0")]);
        assert_eq!(pinned.selected["a"].manifest.version, Version::new(1, 1, 0));
        let missing = run(packages(), &[("a", "9.0.0")]);
        assert!(reason(&missing, "a").contains("pinned to 9.0.0, which is not installed"));
    }

    #[test]
    fn incompatible_versions_fall_back_to_older_ones() {
        let mut new = package("a", "2.0.0", "");
        new.manifest.protocol_versions = vec![9];
        let mut future = package("a", "3.0.0", "");
        future.manifest.framework = semver::VersionReq::parse(">=5").expect("req");
        let resolution = run(vec![package("a", "1.0.0", ""), new, future], &[]);
        assert_eq!(
            resolution.selected["a"].manifest.version,
            Version::new(1, 0, 0)
        );
        let reasons: Vec<_> = resolution
            .refused
            .iter()
            .map(|r| r.reason.as_str())
            .collect();
        assert!(
            reasons
                .iter()
                .any(|r| r.contains("speaks protocol versions [9], this supervisor speaks [1]")),
            "{reasons:?}"
        );
        assert!(
            reasons
                .iter()
                .any(|r| r.contains("requires integrationd >=5, this is 0.1.0")),
            "{reasons:?}"
        );
    }
}
