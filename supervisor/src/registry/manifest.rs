//! `plugin.toml`: what a plugin package declares about itself.

use std::collections::BTreeMap;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use semver::{Version, VersionReq};
use serde::Deserialize;

/// Capabilities a plugin may declare; each maps to protocol calls it answers.
pub const KNOWN_CAPABILITIES: &[&str] = &["check", "collect", "webhook", "enrich"];

/// A parsed and validated manifest.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    pub version: Version,
    #[serde(default)]
    pub description: String,
    /// The executable, relative to the package directory (or absolute).
    pub executable: PathBuf,
    /// Plugin protocol majors the executable speaks.
    pub protocol_versions: Vec<u32>,
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// The integrationd versions this plugin works with, e.g. `">=0.1, <0.2"`.
    pub framework: VersionReq,
    /// Other plugins this one needs, with version requirements.
    #[serde(default)]
    pub dependencies: BTreeMap<String, VersionReq>,
    /// Arguments passed to the executable.
    #[serde(default)]
    pub args: Vec<String>,
    /// How the service authenticates its webhook deliveries, so that the host can verify
    /// one it keeps while the plugin is down (without it, such deliveries are refused).
    #[serde(default)]
    pub webhook: Option<WebhookAuthentication>,
}

/// `[webhook]` in a manifest.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WebhookAuthentication {
    /// `hmac-sha256` (`sha256=<hex>` of the body) or `shared-secret`.
    pub authentication: String,
    /// The header with the signature, or with the secret.
    pub header: String,
    /// `shared-secret` only: the secret may also come as the basic-auth password.
    #[serde(default)]
    pub basic_auth: bool,
}

impl WebhookAuthentication {
    /// The verification scheme this declares.
    pub fn scheme(&self) -> Result<plugin_kit::signature::Scheme, String> {
        use plugin_kit::signature::Scheme;
        let header = self.header.trim().to_ascii_lowercase();
        if header.is_empty()
            || !header
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(format!(
                "webhook.header `{}` is not a header name",
                self.header
            ));
        }
        match (self.authentication.as_str(), self.basic_auth) {
            ("hmac-sha256", false) => Ok(Scheme::HmacSha256 { header }),
            ("hmac-sha256", true) => {
                Err("webhook.basic_auth goes with `shared-secret` only".to_owned())
            }
            ("shared-secret", basic_auth) => Ok(Scheme::SharedSecret { header, basic_auth }),
            (other, _) => Err(format!(
                "webhook.authentication `{other}` is unknown; known: hmac-sha256, shared-secret"
            )),
        }
    }
}

/// A manifest that could not be used.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{path}: {message}")]
pub struct ManifestError {
    pub path: String,
    pub message: String,
}

/// Manifests larger than this are refused unread.
const MAX_MANIFEST_BYTES: u64 = 64 * 1024;

impl Manifest {
    /// Reads `dir/plugin.toml`.
    pub fn load(dir: &Path) -> Result<Self, ManifestError> {
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
        Self::parse(&text).map_err(error)
    }

    /// Parses and validates manifest text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let manifest: Manifest = toml::from_str(text).map_err(|err| err.to_string())?;
        manifest.validate()?;
        Ok(manifest)
    }

    fn validate(&self) -> Result<(), String> {
        if !crate::names::is_name(&self.name) {
            return Err(format!(
                "name `{}`: use 1-64 letters, digits, `-` or `_`",
                self.name
            ));
        }
        if self.protocol_versions.is_empty() {
            return Err("protocol_versions is empty".to_owned());
        }
        if self.executable.as_os_str().is_empty() {
            return Err("executable is empty".to_owned());
        }
        if let Some(unknown) = self
            .capabilities
            .iter()
            .find(|c| !KNOWN_CAPABILITIES.contains(&c.as_str()))
        {
            return Err(format!(
                "capability `{unknown}` is unknown; known: {}",
                KNOWN_CAPABILITIES.join(", ")
            ));
        }
        if let Some(webhook) = &self.webhook {
            webhook.scheme()?;
        }
        if self.dependencies.contains_key(&self.name) {
            return Err(format!("`{}` depends on itself", self.name));
        }
        Ok(())
    }

    /// The executable's path for a package in `dir`.
    pub fn executable_in(&self, dir: &Path) -> PathBuf {
        dir.join(&self.executable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = r#"
name = "github"
version = "1.2.0"
description = "GitHub"
executable = "integration-github"
protocol_versions = [1]
capabilities = ["webhook", "collect"]
framework = ">=0.1, <1"
[dependencies]
cloudwatch = ">=1"
"#;

    #[test]
    fn a_manifest_that_is_a_fifo_is_refused_without_waiting_for_a_writer() {
        let dir = tempfile::tempdir().expect("tempdir");
        nix::unistd::mkfifo(
            &dir.path().join("plugin.toml"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .expect("mkfifo");
        let err = Manifest::load(dir.path()).expect_err("fifo");
        assert!(err.message.contains("not a regular file"), "{err}");
    }

    #[test]
    fn parses_a_complete_manifest() {
        let manifest = Manifest::parse(VALID).expect("valid");
        assert_eq!(manifest.name, "github");
        assert_eq!(manifest.version, Version::new(1, 2, 0));
        assert!(manifest.framework.matches(&Version::new(0, 1, 0)));
        assert_eq!(manifest.dependencies.len(), 1);
    }

    #[test]
    fn names_what_is_wrong() {
        let cases = [
            (
                VALID.replace("version = \"1.2.0\"", "version = \"one\""),
                "version",
            ),
            (
                VALID.replace("name = \"github\"", "name = \"../x\""),
                "name `../x`",
            ),
            (
                VALID.replace("protocol_versions = [1]", "protocol_versions = []"),
                "protocol_versions is empty",
            ),
            (
                VALID.replace("\"webhook\"", "\"telepathy\""),
                "capability `telepathy`",
            ),
            (
                VALID.replace("framework = \">=0.1, <1\"", "framework = \"soon\""),
                "framework",
            ),
            (
                VALID.replace("cloudwatch = \">=1\"", "github = \"1\""),
                "depends on itself",
            ),
            (format!("extra = 1\n{VALID}"), "unknown field `extra`"),
            ("\u{0}\u{ffff}[[[".to_owned(), "TOML parse error"),
        ];
        for (text, expected) in cases {
            let err = Manifest::parse(&text).expect_err(expected);
            assert!(err.contains(expected), "expected `{expected}` in: {err}");
        }
    }

    #[test]
    fn oversized_manifest_is_refused_unread() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("plugin.toml"), "#".repeat(100_000)).expect("write");
        let err = Manifest::load(dir.path()).expect_err("too big").to_string();
        assert!(
            err.contains("byte limit") && err.contains("plugin.toml"),
            "{err}"
        );
    }
}
