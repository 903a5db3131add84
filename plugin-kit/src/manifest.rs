//! `plugin.toml`: what a plugin package declares about itself, and the check that a
//! running plugin's `Describe` agrees with it. The host runs both before it trusts a
//! plugin; a plugin's own tests run them too (`PluginUnderTest::check_manifest` in
//! the testing module), so a mismatch shows up in the
//! author's tests, not as a refusal in production.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use plugin_protocol::{Capabilities, v1};
use semver::{Version, VersionReq};
use serde::Deserialize;

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
    pub capabilities: Capabilities,
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
    /// Parsed as the manifest is: what is kept is the scheme itself.
    #[serde(default, deserialize_with = "webhook_scheme")]
    pub webhook: Option<crate::signature::Scheme>,
}

fn webhook_scheme<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<crate::signature::Scheme>, D::Error> {
    WebhookAuthentication::deserialize(deserializer)?
        .scheme()
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// `[webhook]` in a manifest.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct WebhookAuthentication {
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
    fn scheme(&self) -> Result<crate::signature::Scheme, String> {
        use crate::signature::Scheme;
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

impl Manifest {
    /// Parses and validates manifest text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let manifest: Manifest = toml::from_str(text).map_err(|err| err.to_string())?;
        manifest.validate()?;
        Ok(manifest)
    }

    fn validate(&self) -> Result<(), String> {
        if !plugin_protocol::is_name(&self.name) {
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

/// `Describe` must agree with the manifest the operator trusted.
pub fn check_description(
    manifest: &Manifest,
    described: &v1::DescribeResponse,
    negotiated: u32,
) -> Result<(), String> {
    if described.name != manifest.name {
        return Err(format!(
            "Describe says name `{}`, the manifest says `{}`",
            described.name, manifest.name
        ));
    }
    if described.version != manifest.version.to_string() {
        return Err(format!(
            "Describe says version {}, the manifest says {}",
            described.version, manifest.version
        ));
    }
    if described.protocol_version != negotiated {
        return Err(format!(
            "Describe says protocol {}, the handshake negotiated {negotiated}",
            described.protocol_version
        ));
    }
    let offered = Capabilities::parse(&described.capabilities)
        .map_err(|unknown| format!("Describe offers an {unknown}"))?;
    if offered != manifest.capabilities {
        return Err(format!(
            "Describe offers capabilities {offered:?}, the manifest declares {:?}",
            manifest.capabilities
        ));
    }
    if !described.config_schema_json.is_empty()
        && serde_json::from_str::<serde_json::Value>(&described.config_schema_json).is_err()
    {
        return Err("Describe returned a config schema that is not JSON".to_owned());
    }
    Ok(())
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

    fn described() -> v1::DescribeResponse {
        v1::DescribeResponse {
            name: "github".into(),
            version: "1.2.0".into(),
            protocol_version: 1,
            capabilities: vec!["collect".into(), "webhook".into()],
            ..Default::default()
        }
    }

    #[test]
    fn describe_must_agree_with_the_manifest_in_name_version_protocol_and_capabilities() {
        let manifest = Manifest::parse(VALID).expect("valid");
        assert_eq!(check_description(&manifest, &described(), 1), Ok(()));
        type Change = fn(&mut v1::DescribeResponse);
        let cases: [(Change, &str); 5] = [
            (|d| d.name = "other".into(), "name `other`"),
            (|d| d.version = "9.9.9".into(), "version 9.9.9"),
            (|d| d.protocol_version = 2, "protocol 2"),
            (|d| d.capabilities.push("enrich".into()), "capabilities"),
            (
                |d| d.capabilities.push("telepathy".into()),
                "capability `telepathy`",
            ),
        ];
        for (change, named) in cases {
            let mut other = described();
            change(&mut other);
            let err = check_description(&manifest, &other, 1).expect_err(named);
            assert!(err.contains(named), "expected `{named}` in: {err}");
        }
    }
}
