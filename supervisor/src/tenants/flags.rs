//! Feature flags: built-in defaults, the config file's `[flags]`, operator-wide runtime
//! overrides and per-tenant overrides, in rising precedence. A change takes effect
//! without a restart and concerns only the tenant it names.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use super::{TenantError, corrupt};
pub use crate::config::FlagDefaults;
use crate::store::{AuditDraft, Batch, Store, Table};

/// One flag's effective value and where it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlagValue {
    pub key: String,
    pub value: bool,
    /// `default`, `config`, `global` or `tenant`.
    pub source: &'static str,
}

/// Flag errors.
#[derive(Debug, thiserror::Error)]
pub enum FlagError {
    #[error("unknown flag `{0}`: use `plugin.<name>` or `realtime_enrichment`")]
    UnknownKey(String),
    #[error("flag value `{0}` is not true/false/on/off")]
    BadValue(String),
    #[error("`{0}` is not KEY=VALUE")]
    NotAssignment(String),
    #[error(transparent)]
    Tenant(#[from] TenantError),
}

/// The flags component.
#[derive(Debug, Clone)]
pub struct Flags {
    store: Store,
    defaults: FlagDefaults,
    /// Effective values already read, valid while the flags table's generation is the
    /// one recorded: the pipeline asks for `realtime_enrichment` on every failure, and
    /// two database reads each time showed in its throughput.
    memo: Arc<Mutex<Memo>>,
}

#[derive(Debug, Default)]
struct Memo {
    generation: u64,
    /// `tenant \0 key` (empty tenant: operator-wide) → value.
    values: HashMap<String, FlagValue>,
}

const GLOBAL: &str = "\0global";

fn check_key(key: &str) -> Result<(), FlagError> {
    let plugin = key
        .strip_prefix("plugin.")
        .is_some_and(crate::names::is_name);
    if plugin || key == "realtime_enrichment" {
        Ok(())
    } else {
        Err(FlagError::UnknownKey(key.to_owned()))
    }
}

fn parse_bool(value: &str) -> Result<bool, FlagError> {
    match value {
        "true" | "on" => Ok(true),
        "false" | "off" => Ok(false),
        other => Err(FlagError::BadValue(other.to_owned())),
    }
}

impl Flags {
    pub fn new(store: Store, defaults: FlagDefaults) -> Self {
        Self {
            store,
            defaults,
            memo: Arc::default(),
        }
    }

    fn stored(&self, scope: &str, key: &str) -> Result<Option<bool>, FlagError> {
        match self
            .store
            .get(Table::Flags, format!("{scope}\0{key}").as_bytes())
            .map_err(TenantError::from)?
        {
            None => Ok(None),
            Some(raw) => Ok(Some(
                serde_json::from_slice(&raw).map_err(|e| TenantError::from(corrupt(key, e)))?,
            )),
        }
    }

    /// The effective value of `key` for `tenant` (`None`: operator-wide).
    pub fn get(&self, tenant: Option<&str>, key: &str) -> Result<FlagValue, FlagError> {
        check_key(key)?;
        // Read before the table: a write after this makes the memo stale.
        let generation = self.store.generation(Table::Flags);
        let memo_key = format!("{}\0{key}", tenant.unwrap_or_default());
        {
            let memo = self.memo.lock().unwrap_or_else(PoisonError::into_inner);
            if memo.generation == generation
                && let Some(value) = memo.values.get(&memo_key)
            {
                return Ok(value.clone());
            }
        }
        let value = self.read(tenant, key)?;
        let mut memo = self.memo.lock().unwrap_or_else(PoisonError::into_inner);
        if memo.generation != generation {
            memo.values.clear();
            memo.generation = generation;
        }
        memo.values.insert(memo_key, value.clone());
        Ok(value)
    }

    /// The effective value of `key` for `tenant`, from the table and the defaults.
    fn read(&self, tenant: Option<&str>, key: &str) -> Result<FlagValue, FlagError> {
        if let Some(tenant) = tenant
            && let Some(value) = self.stored(tenant, key)?
        {
            return Ok(FlagValue {
                key: key.to_owned(),
                value,
                source: "tenant",
            });
        }
        if let Some(value) = self.stored(GLOBAL, key)? {
            return Ok(FlagValue {
                key: key.to_owned(),
                value,
                source: "global",
            });
        }
        let configured = match key.strip_prefix("plugin.") {
            Some(plugin) => self.defaults.plugins.get(plugin).copied(),
            None => Some(self.defaults.realtime_enrichment).filter(|v| !*v),
        };
        Ok(match configured {
            Some(value) => FlagValue {
                key: key.to_owned(),
                value,
                source: "config",
            },
            None => FlagValue {
                key: key.to_owned(),
                value: true,
                source: "default",
            },
        })
    }

    /// Whether `tenant` may run `plugin`.
    pub fn plugin_enabled(&self, tenant: &str, plugin: &str) -> bool {
        self.get(Some(tenant), &format!("plugin.{plugin}"))
            .map(|f| f.value)
            .unwrap_or(true)
    }

    /// Every flag that has a value for `tenant`, plus `plugin.<name>` for `plugins`.
    pub fn list(
        &self,
        tenant: Option<&str>,
        plugins: &[String],
    ) -> Result<Vec<FlagValue>, FlagError> {
        let mut keys: Vec<String> = vec!["realtime_enrichment".to_owned()];
        keys.extend(plugins.iter().map(|p| format!("plugin.{p}")));
        keys.extend(self.defaults.plugins.keys().map(|p| format!("plugin.{p}")));
        for scope in [Some(GLOBAL), tenant].into_iter().flatten() {
            for (key, _) in self
                .store
                .scan(Table::Flags, format!("{scope}\0").as_bytes())
                .map_err(TenantError::from)?
            {
                keys.push(String::from_utf8_lossy(&key[scope.len() + 1..]).into_owned());
            }
        }
        keys.sort();
        keys.dedup();
        keys.iter().map(|key| self.get(tenant, key)).collect()
    }

    /// Sets `KEY=VALUE` for `tenant` (or operator-wide); audited as `actor`.
    pub fn set(
        &self,
        tenant: Option<&str>,
        assignment: &str,
        actor: &str,
    ) -> Result<FlagValue, FlagError> {
        let (key, value) = assignment
            .split_once('=')
            .ok_or_else(|| FlagError::NotAssignment(assignment.to_owned()))?;
        let (key, value) = (key.trim(), parse_bool(value.trim())?);
        check_key(key)?;
        let scope = tenant.unwrap_or(GLOBAL);
        let _turn = self.store.writer();
        let batch = Batch::new().put(
            Table::Flags,
            format!("{scope}\0{key}"),
            serde_json::to_vec(&value).map_err(|e| TenantError::from(corrupt(key, e)))?,
        );
        let audit = AuditDraft::ok(
            tenant,
            actor,
            "flag.set",
            &format!("flag:{key}"),
            format!("{key}={value}"),
        );
        self.store
            .commit(&batch, &audit)
            .map_err(TenantError::from)?;
        Ok(FlagValue {
            key: key.to_owned(),
            value,
            source: if tenant.is_some() { "tenant" } else { "global" },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_is_tenant_then_global_then_config_then_default() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let defaults = FlagDefaults {
            realtime_enrichment: true,
            plugins: [("cloudwatch".to_owned(), false)].into(),
        };
        let flags = Flags::new(store, defaults);
        assert!(flags.plugin_enabled("acme", "github"));
        assert!(!flags.plugin_enabled("acme", "cloudwatch"));
        assert_eq!(
            flags
                .get(Some("acme"), "plugin.cloudwatch")
                .expect("get")
                .source,
            "config"
        );
        flags
            .set(None, "plugin.github=off", "uid:0")
            .expect("global");
        assert!(!flags.plugin_enabled("acme", "github"));
        flags
            .set(Some("acme"), "plugin.github=on", "uid:0")
            .expect("tenant");
        assert!(flags.plugin_enabled("acme", "github"));
        assert!(
            !flags.plugin_enabled("globex", "github"),
            "other tenants keep the global value"
        );
        flags
            .set(Some("globex"), "realtime_enrichment=false", "uid:0")
            .expect("set");
        assert!(
            flags
                .get(Some("acme"), "realtime_enrichment")
                .expect("get")
                .value
        );
        assert!(
            !flags
                .get(Some("globex"), "realtime_enrichment")
                .expect("get")
                .value
        );
    }

    #[test]
    fn a_value_read_once_follows_writes_made_elsewhere() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let flags = Flags::new(store.clone(), FlagDefaults::default());
        assert!(
            flags
                .get(Some("acme"), "realtime_enrichment")
                .expect("get")
                .value
        );
        // Another handle's write (the admin socket's) shows at once.
        Flags::new(store.clone(), FlagDefaults::default())
            .set(Some("acme"), "realtime_enrichment=off", "uid:0")
            .expect("set");
        let read = flags.get(Some("acme"), "realtime_enrichment").expect("get");
        assert_eq!((read.value, read.source), (false, "tenant"));
        // Remembered per tenant: another tenant keeps the default.
        let other = flags
            .get(Some("globex"), "realtime_enrichment")
            .expect("get");
        assert_eq!((other.value, other.source), (true, "default"));
        // A write that does not go through flags at all (deleting the tenant).
        store
            .apply(&Batch::new().delete(Table::Flags, "acme\0realtime_enrichment"))
            .expect("delete");
        let read = flags.get(Some("acme"), "realtime_enrichment").expect("get");
        assert_eq!((read.value, read.source), (true, "default"));
    }

    #[test]
    fn bad_keys_and_values_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let flags = Flags::new(
            Store::open(dir.path()).expect("store"),
            FlagDefaults::default(),
        );
        assert!(
            flags
                .set(None, "telepathy=on", "uid:0")
                .expect_err("key")
                .to_string()
                .contains("unknown flag `telepathy`")
        );
        assert!(
            flags
                .set(None, "plugin.github=maybe", "uid:0")
                .expect_err("value")
                .to_string()
                .contains("`maybe`")
        );
        assert!(
            flags
                .set(None, "plugin.github", "uid:0")
                .expect_err("form")
                .to_string()
                .contains("KEY=VALUE")
        );
    }
}
