//! Where alerts are sent: operators' channels from the configuration, and tenants' own,
//! stored in the state database with their signing secret kept as a credential. A
//! channel receives an alert when its severity is high enough and, for a tenant's
//! channel (or an operator's narrowed with `tenants`), when the alert is that tenant's.

use std::collections::BTreeMap;

use plugin_protocol::Severity;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use super::alert::Alert;
use crate::config::{AlertChannelConfig, ChannelFormat};
use crate::store::{Batch, Store, StoreError, Table};

/// Who a channel belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Owner {
    Operator,
    Tenant(String),
}

/// The key a channel's notifications are queued under.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelKey {
    pub owner: Owner,
    pub name: String,
}

impl ChannelKey {
    /// `operator/NAME` or `tenant/TENANT/NAME` (names hold no `/`).
    pub fn queue(&self) -> String {
        match &self.owner {
            Owner::Operator => format!("operator/{}", self.name),
            Owner::Tenant(tenant) => format!("tenant/{tenant}/{}", self.name),
        }
    }
}

/// A channel, ready to send to.
#[derive(Clone)]
pub struct Channel {
    pub key: ChannelKey,
    pub url: String,
    pub format: ChannelFormat,
    pub secret: Option<SecretString>,
    /// Operator channels only: these tenants' alerts (empty: all, the daemon's too).
    pub tenants: Vec<String>,
    pub min_severity: Severity,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("key", &self.key)
            .field("format", &self.format)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

impl Channel {
    /// Whether this channel receives `alert`.
    pub fn accepts(&self, alert: &Alert) -> bool {
        if alert.severity < self.min_severity {
            return false;
        }
        match &self.key.owner {
            Owner::Tenant(tenant) => alert.tenant.as_deref() == Some(tenant.as_str()),
            Owner::Operator => {
                self.tenants.is_empty()
                    || alert
                        .tenant
                        .as_deref()
                        .is_some_and(|t| self.tenants.iter().any(|allowed| allowed == t))
            }
        }
    }
}

/// Why a configured channel cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("alerts.channels `{name}`: cannot read secret_file {path}: {cause}")]
    SecretFile {
        name: String,
        path: String,
        cause: std::io::Error,
    },
    #[error("alerts.channels `{name}`: the `betalogs` format signs its body and needs secret_file")]
    MissingSecret { name: String },
    #[error("alerts.channels: `{0}` is named twice")]
    Duplicate(String),
}

/// The operators' channels, their secrets read once at start.
pub fn operator_channels(configs: &[AlertChannelConfig]) -> Result<Vec<Channel>, ChannelError> {
    let mut seen = std::collections::HashSet::new();
    configs
        .iter()
        .map(|config| {
            let name = config.name.to_string();
            if !seen.insert(name.clone()) {
                return Err(ChannelError::Duplicate(name));
            }
            let secret = match &config.secret_file {
                Some(path) => {
                    let text = std::fs::read_to_string(path).map_err(|cause| {
                        ChannelError::SecretFile {
                            name: name.clone(),
                            path: path.display().to_string(),
                            cause,
                        }
                    })?;
                    Some(SecretString::from(text.trim().to_owned()))
                }
                None if config.format == ChannelFormat::Betalogs => {
                    return Err(ChannelError::MissingSecret { name });
                }
                None => None,
            };
            Ok(Channel {
                key: ChannelKey {
                    owner: Owner::Operator,
                    name,
                },
                url: config.url.clone(),
                format: config.format,
                secret,
                tenants: config.tenants.iter().map(ToString::to_string).collect(),
                min_severity: config.min_severity,
            })
        })
        .collect()
}

/// A tenant's channel as stored (its secret is the credential `secret_credential`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TenantChannel {
    pub tenant: String,
    pub name: String,
    pub url: String,
    pub format: String,
    pub min_severity: Severity,
    pub secret_credential: Option<String>,
    pub created_by: String,
    pub created_ms: u64,
}

/// The credential a tenant channel's secret is stored as.
pub fn secret_credential_name(channel: &str) -> String {
    format!("alert-channel-{channel}")
}

fn key(tenant: &str, name: &str) -> Vec<u8> {
    format!("{tenant}\0{name}").into_bytes()
}

/// Tenants' channels in the state database.
#[derive(Debug, Clone)]
pub struct TenantChannels {
    store: Store,
}

impl TenantChannels {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    pub fn put(&self, channel: &TenantChannel) -> Result<(), StoreError> {
        let value = serde_json::to_vec(channel).map_err(|e| StoreError::Corrupt {
            key: channel.name.clone(),
            reason: e.to_string(),
        })?;
        self.store.apply(&Batch::new().put(
            Table::AlertChannels,
            key(&channel.tenant, &channel.name),
            value,
        ))
    }

    pub fn remove(&self, tenant: &str, name: &str) -> Result<Option<TenantChannel>, StoreError> {
        let found = self.get(tenant, name)?;
        if found.is_some() {
            self.store
                .apply(&Batch::new().delete(Table::AlertChannels, key(tenant, name)))?;
        }
        Ok(found)
    }

    pub fn get(&self, tenant: &str, name: &str) -> Result<Option<TenantChannel>, StoreError> {
        self.store
            .get(Table::AlertChannels, &key(tenant, name))?
            .map(|bytes| decode(name, &bytes))
            .transpose()
    }

    /// One tenant's channels, or every tenant's.
    pub fn list(&self, tenant: Option<&str>) -> Result<Vec<TenantChannel>, StoreError> {
        let prefix = tenant
            .map(|t| format!("{t}\0").into_bytes())
            .unwrap_or_default();
        let mut found = BTreeMap::new();
        for (key, value) in self.store.scan(Table::AlertChannels, &prefix)? {
            let channel = decode(&String::from_utf8_lossy(&key), &value)?;
            found.insert(key, channel);
        }
        Ok(found.into_values().collect())
    }
}

fn decode(name: &str, bytes: &[u8]) -> Result<TenantChannel, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        key: name.to_owned(),
        reason: format!("alert channel: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitoring::alert::AlertState;

    fn alert(tenant: Option<&str>, severity: Severity) -> Alert {
        Alert {
            id: "a".into(),
            fingerprint: "f".into(),
            rule: "integration_failing".into(),
            tenant: tenant.map(str::to_owned),
            integration: None,
            subject: None,
            severity,
            summary: String::new(),
            description: String::new(),
            labels: BTreeMap::new(),
            links: Vec::new(),
            state: AlertState::Firing,
            pending_since_ms: 0,
            started_at_ms: None,
            resolved_at_ms: None,
            notified_at_ms: None,
            notifications: 0,
        }
    }

    fn channel(owner: Owner, tenants: &[&str]) -> Channel {
        Channel {
            key: ChannelKey {
                owner,
                name: "c".into(),
            },
            url: String::new(),
            format: ChannelFormat::Slack,
            secret: None,
            tenants: tenants.iter().map(|t| (*t).to_owned()).collect(),
            min_severity: Severity::Warning,
        }
    }

    #[test]
    fn a_tenant_channel_receives_only_its_tenant_and_severity_filters() {
        let acme = channel(Owner::Tenant("acme".into()), &[]);
        assert!(acme.accepts(&alert(Some("acme"), Severity::Error)));
        assert!(!acme.accepts(&alert(Some("globex"), Severity::Error)));
        assert!(
            !acme.accepts(&alert(None, Severity::Critical)),
            "not the daemon's"
        );
        assert!(!acme.accepts(&alert(Some("acme"), Severity::Info)));
        let all = channel(Owner::Operator, &[]);
        assert!(all.accepts(&alert(None, Severity::Error)));
        assert!(all.accepts(&alert(Some("globex"), Severity::Warning)));
        let narrowed = channel(Owner::Operator, &["acme"]);
        assert!(narrowed.accepts(&alert(Some("acme"), Severity::Error)));
        assert!(!narrowed.accepts(&alert(Some("globex"), Severity::Error)));
        assert!(!narrowed.accepts(&alert(None, Severity::Error)));
    }

    #[test]
    fn tenant_channels_are_stored_per_tenant() {
        let dir = tempfile::tempdir().expect("dir");
        let channels = TenantChannels::new(Store::open(dir.path()).expect("store"));
        let stored = TenantChannel {
            tenant: "acme".into(),
            name: "ops".into(),
            url: "https://hooks.example/x".into(),
            format: "slack".into(),
            min_severity: Severity::Warning,
            secret_credential: None,
            created_by: "uid:0".into(),
            created_ms: 1,
        };
        channels.put(&stored).expect("put");
        assert_eq!(
            channels.list(Some("acme")).expect("list"),
            std::slice::from_ref(&stored)
        );
        assert!(channels.list(Some("acm")).expect("list").is_empty());
        assert_eq!(channels.list(None).expect("all").len(), 1);
        assert_eq!(
            channels.remove("acme", "ops").expect("remove"),
            Some(stored)
        );
        assert_eq!(channels.remove("acme", "ops").expect("again"), None);
    }
}
