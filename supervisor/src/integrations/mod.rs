//! Integrations: a configured instance of a plugin for a tenant. Every change is a new
//! version with its author, time and a readable diff; rollback is a new version equal to
//! an old one. The configuration references credentials by name; they are decrypted
//! (and the read audited) only to build the plugin's `Configure` call.

mod diff;
mod validate;

use std::sync::Arc;

use age::secrecy::ExposeSecret;
use plugin_protocol::v1;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use plugin_kit::FieldMappings;

use crate::credentials::{CredentialError, Credentials};
use crate::names::InstanceKey;
use crate::store::{AuditDraft, Batch, Store, StoreError, Table};
pub use diff::diff;
use plugin_kit::clock::now_ms;
pub use validate::against_schema;

/// Integration errors, worded for the caller.
#[derive(Debug, thiserror::Error)]
pub enum IntegrationError {
    #[error("tenant `{tenant}` already has an integration `{name}`")]
    Exists { tenant: String, name: String },
    #[error("tenant `{tenant}` has no integration `{name}`")]
    Unknown { tenant: String, name: String },
    #[error("the stored configuration's field mappings are invalid: {0}")]
    Mappings(String),
    #[error("integration `{name}` has no version {version}")]
    UnknownVersion { name: String, version: u32 },
    #[error("`{0}` is not a valid integration name: use 1-64 letters, digits, `-` or `_`")]
    BadName(String),
    #[error("the configuration is not a JSON object")]
    NotObject,
    #[error("`{path}` must name a stored credential (a string)")]
    BadCredentialRef { path: String },
    #[error("`{path}` names `{name}`, which tenant `{tenant}` does not have")]
    MissingCredential {
        tenant: String,
        path: String,
        name: String,
    },
    #[error(transparent)]
    Credential(#[from] CredentialError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One version of an integration's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntegrationVersion {
    pub version: u32,
    pub config: Value,
    pub author: String,
    pub time_ms: u64,
    /// `add`, `update`, `rollback to N`.
    pub change: String,
    pub diff: String,
}

/// An integration with its history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Integration {
    pub tenant: String,
    pub name: String,
    pub plugin: String,
    pub enabled: bool,
    /// Why it is disabled, when it is.
    pub disabled_reason: Option<String>,
    /// The credential whose failure disabled it; storing a working one re-enables it.
    #[serde(default)]
    pub disabled_by_credential: Option<String>,
    /// Disabled by the daemon after repeated authentication or permission failures; a
    /// changed credential or configuration that passes `Check` re-enables it.
    #[serde(default)]
    pub disabled_by_health: bool,
    pub versions: Vec<IntegrationVersion>,
}

impl Integration {
    /// The version in force.
    pub fn current(&self) -> &IntegrationVersion {
        self.versions
            .last()
            .expect("an integration always has a version")
    }
}

fn key(tenant: &str, name: &str) -> Vec<u8> {
    format!("{tenant}\0{name}").into_bytes()
}

fn corrupt(key: &str, err: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        key: key.to_owned(),
        reason: err.to_string(),
    }
}

/// Each integration version's field mappings, compiled: at admission, or (for versions
/// admitted before the daemon started) the first time an instance asks.
type CompiledMappings =
    Arc<std::sync::RwLock<std::collections::HashMap<(InstanceKey, u32), Arc<FieldMappings>>>>;

/// The integrations component.
#[derive(Debug, Clone)]
pub struct Integrations {
    store: Store,
    credentials: Option<Arc<Credentials>>,
    mappings: CompiledMappings,
}

impl Integrations {
    pub fn new(store: Store, credentials: Option<Arc<Credentials>>) -> Self {
        Self {
            store,
            credentials,
            mappings: CompiledMappings::default(),
        }
    }

    /// The field mappings of `integration` at its current version: compiled at
    /// admission, or once for a version admitted before the daemon started.
    fn mappings_of(
        &self,
        integration: &Integration,
    ) -> Result<Arc<FieldMappings>, IntegrationError> {
        let current = integration.current();
        let instance = InstanceKey::new(&integration.tenant, &integration.name);
        let cached = self
            .mappings
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&(instance.clone(), current.version))
            .cloned();
        if let Some(mappings) = cached {
            return Ok(mappings);
        }
        let compiled = FieldMappings::compile(current.config.get("mappings"))
            .map(Arc::new)
            .map_err(|err| IntegrationError::Mappings(err.to_string()))?;
        self.remember_mappings(instance, current.version, compiled.clone());
        Ok(compiled)
    }

    /// Keeps `mappings` as `instance`'s at `version`, dropping its older versions'.
    fn remember_mappings(&self, instance: InstanceKey, version: u32, mappings: Arc<FieldMappings>) {
        let mut all = self
            .mappings
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        all.retain(|(other, _), _| *other != instance);
        all.insert((instance, version), mappings);
    }

    pub fn get(&self, tenant: &str, name: &str) -> Result<Option<Integration>, IntegrationError> {
        match self.store.get(Table::Integrations, &key(tenant, name))? {
            None => Ok(None),
            Some(raw) => Ok(Some(
                serde_json::from_slice(&raw).map_err(|e| corrupt(name, e))?,
            )),
        }
    }

    pub fn require(&self, tenant: &str, name: &str) -> Result<Integration, IntegrationError> {
        self.get(tenant, name)?
            .ok_or_else(|| IntegrationError::Unknown {
                tenant: tenant.to_owned(),
                name: name.to_owned(),
            })
    }

    /// A tenant's integrations, or everyone's.
    pub fn list(&self, tenant: Option<&str>) -> Result<Vec<Integration>, IntegrationError> {
        let prefix = tenant.map(|t| format!("{t}\0")).unwrap_or_default();
        self.store
            .scan(Table::Integrations, prefix.as_bytes())?
            .into_iter()
            .map(|(k, raw)| {
                serde_json::from_slice(&raw)
                    .map_err(|e| corrupt(&String::from_utf8_lossy(&k), e).into())
            })
            .collect()
    }

    /// Checks the credential references of a configuration (see [`credential_refs`]) and
    /// returns `(role, name)` pairs: the role is the name the plugin finds the secret
    /// under.
    pub fn check_credential_refs(
        &self,
        tenant: &str,
        config: &Value,
    ) -> Result<Vec<(String, String)>, IntegrationError> {
        if !config.is_object() {
            return Err(IntegrationError::NotObject);
        }
        let refs = credential_refs(config)?;
        if refs.is_empty() {
            return Ok(Vec::new());
        }
        let stored: Vec<String> = match &self.credentials {
            Some(credentials) => credentials
                .list(tenant)?
                .into_iter()
                .map(|c| c.name)
                .collect(),
            None => Vec::new(),
        };
        let mut pairs: Vec<(String, String)> = Vec::with_capacity(refs.len());
        for reference in refs {
            if !stored.contains(&reference.name) {
                return Err(IntegrationError::MissingCredential {
                    tenant: tenant.to_owned(),
                    path: reference.path,
                    name: reference.name,
                });
            }
            if !pairs.iter().any(|(role, _)| *role == reference.role) {
                pairs.push((reference.role, reference.name));
            }
        }
        Ok(pairs)
    }

    /// Records a new version (creating the integration when `plugin` is given and it does
    /// not exist). Returns the integration as stored.
    pub fn record_version(
        &self,
        tenant: &str,
        name: &str,
        plugin: Option<&str>,
        (config, mappings): (Value, Arc<FieldMappings>),
        change: &str,
        author: &str,
    ) -> Result<Integration, IntegrationError> {
        if !crate::names::is_name(name) {
            return Err(IntegrationError::BadName(name.to_owned()));
        }
        let _turn = self.store.writer();
        let existing = self.get(tenant, name)?;
        let mut integration = match (existing, plugin) {
            (Some(_), Some(_)) => {
                return Err(IntegrationError::Exists {
                    tenant: tenant.to_owned(),
                    name: name.to_owned(),
                });
            }
            (None, None) => {
                return Err(IntegrationError::Unknown {
                    tenant: tenant.to_owned(),
                    name: name.to_owned(),
                });
            }
            (Some(existing), None) => existing,
            (None, Some(plugin)) => Integration {
                tenant: tenant.to_owned(),
                name: name.to_owned(),
                plugin: plugin.to_owned(),
                enabled: true,
                disabled_reason: None,
                disabled_by_credential: None,
                disabled_by_health: false,
                versions: Vec::new(),
            },
        };
        let previous = integration
            .versions
            .last()
            .map_or(Value::Null, |v| v.config.clone());
        let version = IntegrationVersion {
            version: integration.versions.len() as u32 + 1,
            diff: diff(&previous, &config),
            config,
            author: author.to_owned(),
            time_ms: now_ms(),
            change: change.to_owned(),
        };
        let detail = format!("version {} ({change})\n{}", version.version, version.diff);
        let compiled_key = (InstanceKey::new(tenant, name), version.version);
        integration.versions.push(version);
        let value = serde_json::to_vec(&integration).map_err(|e| corrupt(name, e))?;
        let audit = AuditDraft::ok(
            Some(tenant),
            author,
            &format!("integration.{}", change.split(' ').next().unwrap_or(change)),
            &format!("integration:{name}"),
            detail,
        );
        self.store.commit(
            &Batch::new().put(Table::Integrations, key(tenant, name), value),
            &audit,
        )?;
        self.remember_mappings(compiled_key.0, compiled_key.1, mappings);
        Ok(integration)
    }

    /// Enables or disables (with a reason, shown in status).
    pub fn set_enabled(
        &self,
        tenant: &str,
        name: &str,
        enabled: bool,
        reason: Option<&str>,
        author: &str,
    ) -> Result<Integration, IntegrationError> {
        let _turn = self.store.writer();
        let mut integration = self.require(tenant, name)?;
        integration.enabled = enabled;
        integration.disabled_reason = if enabled {
            None
        } else {
            Some(reason.unwrap_or("disabled by an operator").to_owned())
        };
        integration.disabled_by_credential = None;
        integration.disabled_by_health = false;
        let value = serde_json::to_vec(&integration).map_err(|e| corrupt(name, e))?;
        let action = if enabled {
            "integration.enable"
        } else {
            "integration.disable"
        };
        let audit = AuditDraft::ok(
            Some(tenant),
            author,
            action,
            &format!("integration:{name}"),
            reason.unwrap_or_default(),
        );
        self.store.commit(
            &Batch::new().put(Table::Integrations, key(tenant, name), value),
            &audit,
        )?;
        Ok(integration)
    }

    /// The tenant's integrations whose configuration names `credential`.
    pub fn using_credential(
        &self,
        tenant: &str,
        credential: &str,
    ) -> Result<Vec<Integration>, IntegrationError> {
        Ok(self
            .list(Some(tenant))?
            .into_iter()
            .filter(|i| {
                credential_refs(&i.current().config)
                    .is_ok_and(|refs| refs.iter().any(|r| r.name == credential))
            })
            .collect())
    }

    /// Disables the integrations using `credential` (or only `only`) because it failed;
    /// returns their names.
    pub fn disable_for_credential(
        &self,
        tenant: &str,
        credential: &str,
        only: Option<&str>,
        reason: &str,
        author: &str,
    ) -> Result<Vec<String>, IntegrationError> {
        let mut names = Vec::new();
        for mut integration in self.using_credential(tenant, credential)? {
            if !integration.enabled || only.is_some_and(|name| name != integration.name) {
                continue;
            }
            let _turn = self.store.writer();
            integration.enabled = false;
            integration.disabled_reason = Some(reason.to_owned());
            integration.disabled_by_credential = Some(credential.to_owned());
            let value =
                serde_json::to_vec(&integration).map_err(|e| corrupt(&integration.name, e))?;
            let audit = AuditDraft::ok(
                Some(tenant),
                author,
                "integration.disable",
                &format!("integration:{}", integration.name),
                reason,
            );
            self.store.commit(
                &Batch::new().put(Table::Integrations, key(tenant, &integration.name), value),
                &audit,
            )?;
            names.push(integration.name);
        }
        Ok(names)
    }

    /// Disables an integration whose credential keeps being refused (the daemon's health
    /// rule); false when it was already disabled.
    pub fn disable_for_health(
        &self,
        tenant: &str,
        name: &str,
        reason: &str,
        author: &str,
    ) -> Result<bool, IntegrationError> {
        let _turn = self.store.writer();
        let mut integration = self.require(tenant, name)?;
        if !integration.enabled {
            return Ok(false);
        }
        integration.enabled = false;
        integration.disabled_reason = Some(reason.to_owned());
        integration.disabled_by_health = true;
        let value = serde_json::to_vec(&integration).map_err(|e| corrupt(name, e))?;
        let audit = AuditDraft::ok(
            Some(tenant),
            author,
            "integration.disable",
            &format!("integration:{name}"),
            reason,
        );
        self.store.commit(
            &Batch::new().put(Table::Integrations, key(tenant, name), value),
            &audit,
        )?;
        Ok(true)
    }

    /// Re-enables the integrations a failure of `credential` disabled; returns their names.
    pub fn enable_for_credential(
        &self,
        tenant: &str,
        credential: &str,
        author: &str,
    ) -> Result<Vec<String>, IntegrationError> {
        let mut names = Vec::new();
        for integration in self.list(Some(tenant))? {
            if integration.disabled_by_credential.as_deref() == Some(credential) {
                self.set_enabled(tenant, &integration.name, true, None, author)?;
                names.push(integration.name);
            }
        }
        Ok(names)
    }

    pub fn remove(
        &self,
        tenant: &str,
        name: &str,
        author: &str,
    ) -> Result<Integration, IntegrationError> {
        let _turn = self.store.writer();
        let integration = self.require(tenant, name)?;
        let audit = AuditDraft::ok(
            Some(tenant),
            author,
            "integration.remove",
            &format!("integration:{name}"),
            "",
        );
        self.store.commit(
            &Batch::new().delete(Table::Integrations, key(tenant, name)),
            &audit,
        )?;
        Ok(integration)
    }

    /// The writes that remove all of a tenant's integrations.
    pub fn delete_tenant_batch(&self, tenant: &str) -> Result<Batch, IntegrationError> {
        let mut batch = Batch::new();
        for (k, _) in self
            .store
            .scan(Table::Integrations, format!("{tenant}\0").as_bytes())?
        {
            batch = batch.delete(Table::Integrations, k);
        }
        Ok(batch)
    }

    /// The `Configure` call for an integration's current version, with its credentials
    /// decrypted for `reader`. `None` when there is no such integration.
    pub fn configure_request(
        &self,
        tenant: &str,
        name: &str,
        reader: &str,
    ) -> Result<Option<v1::ConfigureRequest>, IntegrationError> {
        let Some(integration) = self.get(tenant, name)? else {
            return Ok(Some(bare_configure(tenant, name)));
        };
        let config = integration.current().config.clone();
        self.build_configure(tenant, name, &config, reader)
            .map(Some)
    }

    /// The `Configure` call for `config` (a candidate version, or the current one).
    pub fn build_configure(
        &self,
        tenant: &str,
        name: &str,
        config: &Value,
        reader: &str,
    ) -> Result<v1::ConfigureRequest, IntegrationError> {
        let refs = self.check_credential_refs(tenant, config)?;
        let mut credentials = Vec::new();
        for (role, credential) in refs {
            let Some(manager) = &self.credentials else {
                return Err(CredentialError::NoMasterKey.into());
            };
            let secret = manager.read(
                tenant,
                &credential,
                reader,
                &format!("Configure integration `{name}`"),
            )?;
            credentials.push(v1::Credential {
                name: role,
                kind: secret.kind.clone(),
                secret: secret.secret.expose_secret().as_bytes().to_vec(),
            });
        }
        Ok(v1::ConfigureRequest {
            tenant: tenant.to_owned(),
            integration: name.to_owned(),
            config_json: config.to_string(),
            credentials,
        })
    }
}

impl crate::process::InstanceConfigurer for Integrations {
    fn credentials_rejected(&self, tenant: &str, integration: &str, reason: &str) {
        let Ok(Some(record)) = self.get(tenant, integration) else {
            return;
        };
        let refs = self
            .check_credential_refs(tenant, &record.current().config)
            .unwrap_or_default();
        let Some((_, credential)) = refs.first() else {
            return;
        };
        if let Err(err) =
            self.disable_for_credential(tenant, credential, Some(integration), reason, "daemon")
        {
            tracing::error!(error = %err, "cannot disable an integration whose credentials were rejected");
        }
    }

    fn configure_request(
        &self,
        tenant: &str,
        integration: &str,
        reader: &str,
    ) -> Result<Option<crate::process::Configuration>, String> {
        // One read of the record serves both the call and its mappings.
        let configuration = match self.get(tenant, integration) {
            Ok(None) => Ok(crate::process::Configuration {
                request: bare_configure(tenant, integration),
                mappings: Arc::new(FieldMappings::default()),
            }),
            Ok(Some(record)) => self
                .build_configure(tenant, integration, &record.current().config, reader)
                .and_then(|request| {
                    Ok(crate::process::Configuration {
                        request,
                        mappings: self.mappings_of(&record)?,
                    })
                }),
            Err(err) => Err(err),
        };
        configuration.map(Some).map_err(|err| err.to_string())
    }
}

/// The `Configure` call of a config-file instance (no integration record): it still
/// learns whom it serves.
fn bare_configure(tenant: &str, integration: &str) -> v1::ConfigureRequest {
    v1::ConfigureRequest {
        tenant: tenant.to_owned(),
        integration: integration.to_owned(),
        config_json: "{}".to_owned(),
        credentials: Vec::new(),
    }
}

/// One reference to a stored credential in a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialRef {
    /// Where it is, for messages: `credentials.token`, `accounts[1].credentials`.
    pub path: String,
    /// The name the plugin receives the secret under: the role in a
    /// `credentials = {role = name}` map, else the credential's own name.
    pub role: String,
    pub name: String,
}

/// Every credential reference in a configuration, at any depth: a `credentials` key
/// holding a map of role to name (`credentials = {token = "gh"}`), or one name
/// (`accounts = [{credentials = "prod-keys"}]`, one per AWS account).
pub fn credential_refs(config: &Value) -> Result<Vec<CredentialRef>, IntegrationError> {
    fn walk(
        value: &Value,
        path: &str,
        refs: &mut Vec<CredentialRef>,
    ) -> Result<(), IntegrationError> {
        match value {
            Value::Object(object) => {
                for (key, child) in object {
                    let child_path = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    if key != "credentials" {
                        walk(child, &child_path, refs)?;
                        continue;
                    }
                    match child {
                        Value::String(name) => refs.push(CredentialRef {
                            path: child_path,
                            role: name.clone(),
                            name: name.clone(),
                        }),
                        Value::Object(roles) => {
                            for (role, name) in roles {
                                let path = format!("{child_path}.{role}");
                                let name =
                                    name.as_str().ok_or(IntegrationError::BadCredentialRef {
                                        path: path.clone(),
                                    })?;
                                refs.push(CredentialRef {
                                    path,
                                    role: role.clone(),
                                    name: name.to_owned(),
                                });
                            }
                        }
                        _ => return Err(IntegrationError::BadCredentialRef { path: child_path }),
                    }
                }
            }
            Value::Array(items) => {
                for (index, item) in items.iter().enumerate() {
                    walk(item, &format!("{path}[{index}]"), refs)?;
                }
            }
            _ => {}
        }
        Ok(())
    }
    let mut refs = Vec::new();
    walk(config, "", &mut refs)?;
    Ok(refs)
}

#[cfg(test)]
mod credential_ref_tests {
    use super::*;

    #[test]
    fn references_are_found_in_role_maps_and_per_account_names() {
        let config = serde_json::json!({
            "credentials": {"webhook_secret": "hook"},
            "accounts": [
                {"id": "1", "credentials": "prod-keys"},
                {"id": "2", "credentials": "audit-keys", "regions": ["eu-west-1"]}
            ]
        });
        let refs = credential_refs(&config).expect("valid");
        let found: Vec<(&str, &str, &str)> = refs
            .iter()
            .map(|r| (r.path.as_str(), r.role.as_str(), r.name.as_str()))
            .collect();
        assert_eq!(
            found,
            [
                ("accounts[0].credentials", "prod-keys", "prod-keys"),
                ("accounts[1].credentials", "audit-keys", "audit-keys"),
                ("credentials.webhook_secret", "webhook_secret", "hook"),
            ]
        );
    }

    #[test]
    fn a_reference_that_is_not_a_name_is_refused_with_its_path() {
        for (config, path) in [
            (
                serde_json::json!({"credentials": {"token": 1}}),
                "credentials.token",
            ),
            (
                serde_json::json!({"accounts": [{}, {"credentials": ["a"]}]}),
                "accounts[1].credentials",
            ),
        ] {
            let err = credential_refs(&config).expect_err("refused");
            assert_eq!(
                err.to_string(),
                format!("`{path}` must name a stored credential (a string)")
            );
        }
    }
}
