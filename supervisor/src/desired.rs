//! The set of plugin instances that should run: the config file's `[[instances]]` plus
//! every enabled integration whose plugin the tenant may run (flag `plugin.<name>`).
//! Recomputed and applied after any change to either; the manager starts what is new and
//! stops what is gone, touching nothing else.

use std::sync::{Arc, OnceLock, RwLock};

use crate::cluster::Cluster;

use crate::config::InstanceConfig;
use crate::integrations::Integrations;
use crate::names::Name;
use crate::process::Manager;
use crate::tenants::Flags;

/// Desired instances and the means to apply them.
#[derive(Debug)]
pub struct Desired {
    config_instances: RwLock<Vec<InstanceConfig>>,
    integrations: Integrations,
    flags: Flags,
    manager: Arc<Manager>,
    /// On a node of a cluster: tenants placed elsewhere or moving do not run here.
    cluster: OnceLock<Arc<Cluster>>,
}

impl Desired {
    pub fn new(
        config_instances: Vec<InstanceConfig>,
        integrations: Integrations,
        flags: Flags,
        manager: Arc<Manager>,
    ) -> Self {
        Self {
            config_instances: RwLock::new(config_instances),
            integrations,
            flags,
            manager,
            cluster: OnceLock::new(),
        }
    }

    /// Makes placement decide which tenants run here (once, at start).
    pub fn set_cluster(&self, cluster: Arc<Cluster>) {
        let _ = self.cluster.set(cluster);
    }

    fn runs_here(&self, tenant: &str) -> bool {
        self.cluster
            .get()
            .is_none_or(|cluster| cluster.runs_here(tenant))
    }

    /// The configuration file's instances.
    pub fn config_instances(&self) -> Vec<InstanceConfig> {
        self.config_instances
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// After a SIGHUP reload.
    pub fn set_config_instances(&self, instances: Vec<InstanceConfig>) {
        *self
            .config_instances
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = instances;
    }

    /// What should run now.
    pub fn compute(&self) -> Vec<InstanceConfig> {
        let mut out: Vec<InstanceConfig> = self
            .config_instances
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter(|i| {
                self.flags.plugin_enabled(&i.tenant, &i.plugin) && self.runs_here(&i.tenant)
            })
            .cloned()
            .collect();
        match self.integrations.list(None) {
            Ok(integrations) => {
                for integration in integrations {
                    let taken = out.iter().any(|i| {
                        *i.tenant == integration.tenant && i.integration() == integration.name
                    });
                    if !integration.enabled
                        || taken
                        || !self.runs_here(&integration.tenant)
                        || !self
                            .flags
                            .plugin_enabled(&integration.tenant, &integration.plugin)
                    {
                        continue;
                    }
                    // Names were checked when the integration was stored.
                    let names = (
                        Name::new(integration.plugin),
                        Name::new(integration.tenant),
                        Name::new(integration.name),
                    );
                    match names {
                        (Ok(plugin), Ok(tenant), Ok(name)) => out.push(InstanceConfig {
                            plugin,
                            tenant,
                            integration: Some(name),
                        }),
                        (plugin, tenant, name) => {
                            let bad = [plugin.err(), tenant.err(), name.err()];
                            tracing::error!(alert = true, names = ?bad, "a stored integration has an invalid name; it does not run");
                        }
                    }
                }
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot read integrations; keeping them as they run")
            }
        }
        out
    }

    /// Starts and stops instances to match [`Desired::compute`].
    pub async fn apply(&self) {
        let desired = self.compute();
        self.manager.reconcile(&desired).await;
    }

    pub fn manager(&self) -> &Arc<Manager> {
        &self.manager
    }
}
