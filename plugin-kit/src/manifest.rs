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
    /// Arguments passed to the executable.
    #[serde(default)]
    pub args: Vec<String>,
    /// How the service authenticates its webhook deliveries, so that the host can verify
    /// one it keeps while the plugin is down (without it, such deliveries are refused).
    /// Parsed as the manifest is: what is kept is the scheme itself.
    #[serde(default, deserialize_with = "webhook_scheme")]
    pub webhook: Option<crate::signature::Scheme>,
    /// Credential kinds this plugin defines beyond the built-in ones. Tenants store them
    /// as `PLUGIN/KIND` (`credentials set --kind reports/api-token`), and the host
    /// refuses a secret that does not match the kind's JSON Schema.
    #[serde(default)]
    pub credential_kinds: BTreeMap<String, CredentialKind>,
    /// Configuration keys whose URLs this plugin only writes into events (a `source`,
    /// evidence links) and never requests, so that the host's endpoint allow-list, which
    /// guards where a tenant may send the plugin and its credentials, leaves them alone.
    /// `[*]` stands for any array index: `routes[*].links[*].url`.
    #[serde(default)]
    pub label_urls: Vec<String>,
}

/// `[credential_kinds.KIND]` in a manifest: a JSON Schema for the kind's secrets, given
/// inline (`schema`, a TOML table) or as a JSON file in the package (`schema_file`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CredentialKind {
    #[serde(default)]
    pub description: String,
    /// The schema; filled from `schema_file` by [`Manifest::load_schema_files`].
    #[serde(default)]
    pub schema: Option<serde_json::Value>,
    /// A path relative to the package directory, inside it.
    #[serde(default)]
    pub schema_file: Option<PathBuf>,
}

/// Schema files larger than this are refused unread.
pub const MAX_SCHEMA_FILE_BYTES: u64 = 64 * 1024;

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

/// Keys that manifests once had, recognised only to say why they are refused.
#[derive(Deserialize)]
struct Removed {
    dependencies: Option<serde::de::IgnoredAny>,
}

/// Plugins talk only to integrationd, never to each other, so one plugin's presence or
/// start order cannot matter to another: a declared dependency would promise something
/// nothing keeps. Refused rather than ignored, so an author who relied on it finds out.
const REMOVED_DEPENDENCIES: &str = "`[dependencies]` is no longer part of the manifest: plugins talk only to integrationd, never to each other, so no plugin can need another; remove the section";

impl Manifest {
    /// Parses and validates manifest text.
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Ok(Removed {
            dependencies: Some(_),
        }) = toml::from_str::<Removed>(text)
        {
            return Err(REMOVED_DEPENDENCIES.to_owned());
        }
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
        for (kind, declared) in &self.credential_kinds {
            let at = format!("credential_kinds.{kind}");
            if !plugin_protocol::is_name(kind) {
                return Err(format!("{at}: use 1-64 letters, digits, `-` or `_`"));
            }
            match (&declared.schema, &declared.schema_file) {
                (Some(_), Some(_)) => {
                    return Err(format!("{at}: give `schema` or `schema_file`, not both"));
                }
                (None, None) => return Err(format!("{at}: needs `schema` or `schema_file`")),
                (Some(schema), None) if !schema.is_object() => {
                    return Err(format!("{at}.schema is not a table"));
                }
                (_, Some(file)) if !is_inside_package(file) => {
                    return Err(format!(
                        "{at}.schema_file `{}` must be a relative path inside the package",
                        file.display()
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The executable's path for a package in `dir`.
    pub fn executable_in(&self, dir: &Path) -> PathBuf {
        dir.join(&self.executable)
    }

    /// Reads each credential kind's `schema_file` from the package in `dir` into its
    /// `schema`, so that what follows sees one form. Errors name the kind and the file.
    pub fn load_schema_files(&mut self, dir: &Path) -> Result<(), String> {
        for (kind, declared) in &mut self.credential_kinds {
            let Some(file) = &declared.schema_file else {
                continue;
            };
            let path = dir.join(file);
            let at = format!("credential_kinds.{kind}.schema_file {}", path.display());
            let meta = std::fs::symlink_metadata(&path).map_err(|err| format!("{at}: {err}"))?;
            if !meta.is_file() {
                return Err(format!(
                    "{at}: is not a regular file (symbolic links are refused)"
                ));
            }
            if meta.len() > MAX_SCHEMA_FILE_BYTES {
                return Err(format!(
                    "{at}: is {} bytes, more than the {MAX_SCHEMA_FILE_BYTES}-byte limit",
                    meta.len()
                ));
            }
            let text = std::fs::read(&path).map_err(|err| format!("{at}: {err}"))?;
            let schema: serde_json::Value =
                serde_json::from_slice(&text).map_err(|err| format!("{at}: not JSON: {err}"))?;
            if !schema.is_object() {
                return Err(format!("{at}: is not a JSON object"));
            }
            declared.schema = Some(schema);
        }
        Ok(())
    }

    /// The kinds this plugin declares, by full name (`PLUGIN/KIND`), with their schemas
    /// (those still only in a file are left out until [`Manifest::load_schema_files`]).
    pub fn declared_credential_kinds(&self) -> impl Iterator<Item = (String, &serde_json::Value)> {
        self.credential_kinds.iter().filter_map(|(kind, declared)| {
            let schema = declared.schema.as_ref()?;
            Some((
                plugin_protocol::plugin_credential_kind(&self.name, kind),
                schema,
            ))
        })
    }
}

/// Relative, with no `..`: a path that stays inside the package directory.
fn is_inside_package(path: &Path) -> bool {
    use std::path::Component;
    !path.as_os_str().is_empty()
        && path
            .components()
            .all(|part| matches!(part, Component::Normal(_) | Component::CurDir))
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
    for kind in &described.credential_kinds {
        let declared = kind
            .strip_prefix(&format!("{}/", manifest.name))
            .is_some_and(|own| manifest.credential_kinds.contains_key(own));
        if !declared && !plugin_protocol::is_built_in_credential_kind(kind) {
            return Err(format!(
                "Describe names credential kind `{kind}`, which is neither built in ({}) nor declared in the manifest as [credential_kinds.KIND] (named `{}/KIND`)",
                plugin_protocol::BUILT_IN_CREDENTIAL_KINDS.join(", "),
                manifest.name
            ));
        }
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
"#;

    #[test]
    fn parses_a_complete_manifest() {
        let manifest = Manifest::parse(VALID).expect("valid");
        assert_eq!(manifest.name, "github");
        assert_eq!(manifest.version, Version::new(1, 2, 0));
        assert!(manifest.framework.matches(&Version::new(0, 1, 0)));
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
                format!("{VALID}[dependencies]\ncloudwatch = \">=1\"\n"),
                "`[dependencies]` is no longer part of the manifest",
            ),
            (format!("extra = 1\n{VALID}"), "unknown field `extra`"),
            (
                format!("{VALID}[credential_kinds.token]\ndescription = \"x\"\n"),
                "credential_kinds.token: needs `schema` or `schema_file`",
            ),
            (
                format!("{VALID}[credential_kinds.token]\nschema_file = \"../../etc/passwd\"\n"),
                "must be a relative path inside the package",
            ),
            (
                format!("{VALID}[credential_kinds.\"a b\"]\nschema_file = \"k.json\"\n"),
                "credential_kinds.a b: use 1-64",
            ),
            (
                format!(
                    "{VALID}[credential_kinds.token]\nschema_file = \"k.json\"\nschema = {{ type = \"object\" }}\n"
                ),
                "not both",
            ),
            ("\u{0}\u{ffff}[[[".to_owned(), "TOML parse error"),
        ];
        for (text, expected) in cases {
            let err = Manifest::parse(&text).expect_err(expected);
            assert!(err.contains(expected), "expected `{expected}` in: {err}");
        }
    }

    #[test]
    fn credential_kind_schemas_come_inline_or_from_a_file_in_the_package() {
        let text = format!(
            "{VALID}[credential_kinds.token]\ndescription = \"API token\"\nschema = {{ type = \"object\", required = [\"token\"] }}\n[credential_kinds.pair]\nschema_file = \"schemas/pair.json\"\n"
        );
        let mut manifest = Manifest::parse(&text).expect("valid");
        let names = |m: &Manifest| {
            m.declared_credential_kinds()
                .map(|(name, _)| name)
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&manifest), ["github/token"]);
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = manifest.load_schema_files(dir.path()).expect_err("no file");
        assert!(
            missing.contains("credential_kinds.pair.schema_file"),
            "{missing}"
        );
        std::fs::create_dir(dir.path().join("schemas")).expect("mkdir");
        std::fs::write(dir.path().join("schemas/pair.json"), "[1]").expect("write");
        let not_object = manifest.load_schema_files(dir.path()).expect_err("array");
        assert!(not_object.contains("not a JSON object"), "{not_object}");
        std::fs::write(dir.path().join("schemas/pair.json"), r#"{"type":"object"}"#)
            .expect("write");
        manifest.load_schema_files(dir.path()).expect("loads");
        assert_eq!(names(&manifest), ["github/pair", "github/token"]);
    }

    #[test]
    fn describe_may_name_built_in_kinds_and_its_own_declared_ones_only() {
        let text = format!("{VALID}[credential_kinds.token]\nschema = {{ type = \"object\" }}\n");
        let manifest = Manifest::parse(&text).expect("valid");
        let mut own = described();
        own.credential_kinds = vec!["webhook-secret".into(), "github/token".into()];
        assert_eq!(check_description(&manifest, &own, 1), Ok(()));
        for stray in ["github/other", "cloudwatch/token", "password"] {
            let mut other = described();
            other.credential_kinds = vec![stray.into()];
            let err = check_description(&manifest, &other, 1).expect_err(stray);
            assert!(err.contains(&format!("credential kind `{stray}`")), "{err}");
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
