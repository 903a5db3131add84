//! Names of plugins, tenants and integrations, and the key of one plugin instance.
//!
//! A leaf module: everything else uses it, it uses nothing of the crate. The rule itself
//! is the protocol's ([`plugin_protocol::is_name`]): plugins and manifests use it too.

use std::fmt;

use serde::{Deserialize, Serialize};

pub use plugin_protocol::{NAME_RULE, is_name};

/// A name that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a valid name: {NAME_RULE}")]
pub struct BadName(pub String);

/// A validated name of a tenant, an integration or a plugin.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Name(String);

impl Name {
    pub fn new(value: impl Into<String>) -> Result<Self, BadName> {
        let value = value.into();
        if is_name(&value) {
            Ok(Self(value))
        } else {
            Err(BadName(value))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Name {
    type Error = BadName;
    fn try_from(value: String) -> Result<Self, BadName> {
        Self::new(value)
    }
}

impl From<Name> for String {
    fn from(name: Name) -> Self {
        name.0
    }
}

impl std::ops::Deref for Name {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One plugin instance: an integration of a tenant. Ordered by tenant, then
/// integration, so that maps keyed by it list a tenant's instances together.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceKey {
    pub tenant: String,
    pub integration: String,
}

impl InstanceKey {
    pub fn new(tenant: impl Into<String>, integration: impl Into<String>) -> Self {
        Self {
            tenant: tenant.into(),
            integration: integration.into(),
        }
    }

    /// Whether this instance is `tenant`'s.
    pub fn is_of(&self, tenant: &str) -> bool {
        self.tenant == tenant
    }
}

impl fmt::Display for InstanceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.tenant, self.integration)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_short_and_safe_in_paths_keys_and_labels() {
        for good in ["acme", "a", "gh-prod_2", &"x".repeat(64)] {
            assert!(Name::new(good).is_ok(), "{good}");
        }
        for bad in ["", "a/b", "a b", "a\0b", "ünï", "..", &"x".repeat(65)] {
            assert_eq!(Name::new(bad), Err(BadName(bad.to_owned())));
        }
        let parsed: Result<Name, _> = serde_json::from_str("\"../etc\"");
        assert!(parsed.is_err());
    }

    #[test]
    fn instance_keys_order_by_tenant_first() {
        let mut keys = [
            InstanceKey::new("b", "a"),
            InstanceKey::new("a", "z"),
            InstanceKey::new("a", "b"),
        ];
        keys.sort();
        assert_eq!(keys[0].to_string(), "a/b");
        assert_eq!(keys[2].to_string(), "b/a");
        assert!(keys[0].is_of("a"));
    }
}
