//! The set of plugin instances: starts the configured ones, reconciles on reload,
//! restarts on request and stops them all on shutdown.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::instance::{self, Control, InstanceContext};
use super::restart::RestartSettings;
use super::spawn::SpawnSettings;
use super::state::{InstanceState, InstanceStatus};
use crate::config::{InstanceConfig, ProcessConfig};
use crate::health::{InstanceLabels, Metrics};
use crate::names::InstanceKey;
use crate::registry::Registry;
use plugin_kit::signature::HostScheme;
use plugin_protocol::Capability;

/// What the manager needs from the configuration.
#[derive(Debug, Clone)]
pub struct ManagerSettings {
    pub process: ProcessConfig,
    pub runtime_dir: PathBuf,
    pub configurer: Option<Arc<dyn super::InstanceConfigurer>>,
    /// Told what happens to every instance (the daemon wires the pipeline's sources,
    /// enrichment and health here).
    pub observer: Arc<dyn super::InstanceObserver>,
}

/// Where a webhook delivery goes.
#[derive(Debug)]
pub enum WebhookTarget {
    /// No such integration for the tenant (or it is disabled).
    Unknown,
    /// The integration's plugin does not take webhooks.
    NoWebhooks { plugin: String },
    /// The plugin is not running now: the delivery may wait in the inbox if the host can
    /// verify it with `scheme` (what the plugin reported for the integration at its last
    /// `Configure`, else the manifest's `[webhook]`).
    Down { scheme: Option<HostScheme> },
    Up {
        client: plugin_kit::host::PluginRpcClient,
        scheme: Option<HostScheme>,
    },
}

/// Errors preparing the runtime directory.
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    #[error("runtime directory {path}: {message}")]
    RuntimeDir { path: String, message: String },
}

#[derive(Debug)]
struct Handle {
    plugin: String,
    slot: Arc<super::instance::PluginSlot>,
    status: Arc<Mutex<InstanceStatus>>,
    control: mpsc::Sender<Control>,
    task: JoinHandle<()>,
}

/// Owns every instance task.
#[derive(Debug)]
pub struct Manager {
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    settings: ManagerSettings,
    instances: tokio::sync::Mutex<BTreeMap<InstanceKey, Handle>>,
    next_socket: std::sync::atomic::AtomicU64,
}

impl Manager {
    /// Prepares the private runtime directory (0700, owned by us, stale sockets of a
    /// previous run removed).
    pub fn new(
        registry: Arc<Registry>,
        metrics: Arc<Metrics>,
        settings: ManagerSettings,
    ) -> Result<Self, ManagerError> {
        prepare_runtime_dir(&settings.runtime_dir)?;
        Ok(Self {
            registry,
            metrics,
            settings,
            instances: tokio::sync::Mutex::default(),
            next_socket: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Starts instances that are configured but not running, and stops those no
    /// longer configured (or now configured with another plugin).
    pub async fn reconcile(&self, desired: &[InstanceConfig]) {
        let mut instances = self.instances.lock().await;
        let wanted: BTreeMap<InstanceKey, &InstanceConfig> = desired
            .iter()
            .map(|c| (InstanceKey::new(c.tenant.as_str(), c.integration()), c))
            .collect();
        let stale: Vec<InstanceKey> = instances
            .iter()
            .filter(|(key, handle)| wanted.get(*key).is_none_or(|c| *c.plugin != handle.plugin))
            .map(|(key, _)| key.clone())
            .collect();
        let stops: Vec<Handle> = stale
            .iter()
            .filter_map(|key| instances.remove(key))
            .collect();
        stop_handles(stops).await;
        for (key, config) in wanted {
            if let std::collections::btree_map::Entry::Vacant(slot) = instances.entry(key) {
                slot.insert(self.spawn_instance(config));
            }
        }
    }

    fn spawn_instance(&self, config: &InstanceConfig) -> Handle {
        let process = &self.settings.process;
        let labels = InstanceLabels {
            plugin: config.plugin.to_string(),
            tenant: config.tenant.to_string(),
            integration: config.integration().to_owned(),
        };
        self.metrics.instance_added(&labels);
        self.settings.observer.added(&labels);
        let index = self
            .next_socket
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let status = Arc::new(Mutex::new(InstanceStatus {
            plugin: labels.plugin.clone(),
            tenant: labels.tenant.clone(),
            integration: labels.integration.clone(),
            state: InstanceState::Starting,
            pid: None,
            version: None,
            protocol_version: None,
            restarts: 0,
            last_error: None,
            since: SystemTime::now(),
            next_restart_at: None,
            dependencies: Vec::new(),
        }));
        let env = process
            .pass_env
            .iter()
            .filter_map(|name| std::env::var_os(name).map(|value| (OsString::from(name), value)))
            .collect();
        let slot = Arc::new(super::instance::PluginSlot::default());
        let ctx = Arc::new(InstanceContext {
            labels,
            registry: self.registry.clone(),
            metrics: self.metrics.clone(),
            spawn: SpawnSettings {
                socket: self.settings.runtime_dir.join(format!("p{index}.sock")),
                env,
                limits: process.limits.to_resource_limits(),
                start_timeout: process.start_timeout,
            },
            restart: RestartSettings {
                initial_delay: process.restart_initial_delay,
                max_delay: process.restart_max_delay,
                reset_after: process.restart_reset_after,
                crash_loop_restarts: process.crash_loop_restarts,
                window: process.crash_loop_window,
            },
            heartbeat_interval: process.heartbeat_interval,
            heartbeat_timeout: process.heartbeat_timeout,
            heartbeat_misses: process.heartbeat_misses,
            grace_period: process.grace_period,
            status: status.clone(),
            configurer: self.settings.configurer.clone(),
            observer: self.settings.observer.clone(),
            slot: slot.clone(),
        });
        let (control, receiver) = mpsc::channel(4);
        let task = tokio::spawn(instance::run(ctx, receiver));
        Handle {
            plugin: config.plugin.to_string(),
            slot,
            status,
            control,
            task,
        }
    }

    /// A snapshot of every instance, sorted by tenant and integration.
    pub async fn status(&self) -> Vec<InstanceStatus> {
        let instances = self.instances.lock().await;
        instances
            .values()
            .map(|h| h.status.lock().expect("status lock poisoned").clone())
            .collect()
    }

    /// Restarts the instances of `plugin` (of one tenant, if given). Returns how many.
    pub async fn restart(&self, plugin: &str, tenant: Option<&str>) -> usize {
        let instances = self.instances.lock().await;
        let mut count = 0;
        for (key, handle) in instances.iter() {
            if handle.plugin == plugin && tenant.is_none_or(|t| key.is_of(t)) {
                let _ = handle.control.send(Control::Restart).await;
                count += 1;
            }
        }
        count
    }

    /// Where a webhook for `tenant`'s `integration` goes.
    pub async fn webhook_target(&self, instance: &InstanceKey) -> WebhookTarget {
        let instances = self.instances.lock().await;
        let Some(handle) = instances.get(instance) else {
            return WebhookTarget::Unknown;
        };
        let scheme = handle
            .slot
            .reported_authentication()
            .map(HostScheme::Reported)
            .or_else(|| {
                self.registry
                    .selected(&handle.plugin)
                    .and_then(|package| package.manifest.webhook.clone())
                    .map(HostScheme::Manifest)
            });
        match (
            handle.slot.has(Capability::Webhook),
            handle.slot.client_for(Capability::Webhook),
        ) {
            (Some(false), _) => WebhookTarget::NoWebhooks {
                plugin: handle.plugin.clone(),
            },
            (_, Some(client)) => WebhookTarget::Up { client, scheme },
            _ => WebhookTarget::Down { scheme },
        }
    }

    /// The running plugin of `tenant`'s `integration`, when it has `capability`.
    pub async fn client_for(
        &self,
        instance: &InstanceKey,
        capability: Capability,
    ) -> Option<plugin_kit::host::PluginRpcClient> {
        let instances = self.instances.lock().await;
        instances.get(instance)?.slot.client_for(capability)
    }

    /// The running plugin of an instance, whatever it can do.
    pub async fn client(
        &self,
        instance: &InstanceKey,
    ) -> Option<plugin_kit::host::PluginRpcClient> {
        let instances = self.instances.lock().await;
        instances.get(instance)?.slot.client()
    }

    /// Restarts one instance (after its configuration changed). Returns whether it exists.
    pub async fn restart_instance(&self, instance: &InstanceKey) -> bool {
        let instances = self.instances.lock().await;
        match instances.get(instance) {
            Some(handle) => handle.control.send(Control::Restart).await.is_ok(),
            None => false,
        }
    }

    /// Starts a probe of `plugin` (verified like any spawn) for admitting a configuration.
    pub async fn probe(&self, plugin: &str) -> Result<super::Probe, String> {
        let package = self.registry.selected(plugin).ok_or_else(|| {
            self.registry
                .refusal(plugin)
                .unwrap_or_else(|| format!("plugin `{plugin}` is not installed"))
        })?;
        let index = self
            .next_socket
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let process = &self.settings.process;
        let settings = SpawnSettings {
            socket: self.settings.runtime_dir.join(format!("probe{index}.sock")),
            env: Vec::new(),
            limits: process.limits.to_resource_limits(),
            start_timeout: process.start_timeout,
        };
        let labels = InstanceLabels {
            plugin: plugin.to_owned(),
            tenant: "-".to_owned(),
            integration: "probe".to_owned(),
        };
        super::spawn::start(&self.registry, &package, &settings, &labels)
            .await
            .map(|running| super::Probe { running })
            .map_err(|err| err.to_string())
    }

    /// Retries instances that were refused (after a rescan or a new trust pin).
    pub async fn retry_refused(&self) {
        let instances = self.instances.lock().await;
        for handle in instances.values() {
            let refused =
                handle.status.lock().expect("status lock poisoned").state == InstanceState::Refused;
            if refused {
                let _ = handle.control.send(Control::Restart).await;
            }
        }
    }

    /// Stops every instance gracefully, all at once.
    pub async fn stop_all(&self) {
        let handles: Vec<Handle> = std::mem::take(&mut *self.instances.lock().await)
            .into_values()
            .collect();
        stop_handles(handles).await;
    }
}

async fn stop_handles(handles: Vec<Handle>) {
    let mut waits = Vec::new();
    for handle in handles {
        let (ack, done) = oneshot::channel();
        if handle.control.send(Control::Stop(ack)).await.is_ok() {
            waits.push((done, handle.task));
        }
    }
    for (done, task) in waits {
        let _ = done.await;
        let _ = task.await;
    }
}

fn prepare_runtime_dir(dir: &Path) -> Result<(), ManagerError> {
    let error = |message: String| ManagerError::RuntimeDir {
        path: dir.display().to_string(),
        message,
    };
    std::fs::create_dir_all(dir).map_err(|e| error(format!("cannot create: {e}")))?;
    let meta = std::fs::metadata(dir).map_err(|e| error(format!("cannot inspect: {e}")))?;
    if meta.uid() != nix::unistd::geteuid().as_raw() {
        return Err(error(format!(
            "is owned by uid {}, not by this daemon",
            meta.uid()
        )));
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| error(format!("cannot set mode 0700: {e}")))?;
    let entries = std::fs::read_dir(dir).map_err(|e| error(format!("cannot list: {e}")))?;
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        if path.extension().is_some_and(|ext| ext == "sock") {
            match std::fs::remove_file(&path) {
                Ok(()) => tracing::info!(socket = %path.display(), "removed a stale plugin socket"),
                Err(e) => {
                    return Err(error(format!(
                        "cannot remove stale socket {}: {e}",
                        path.display()
                    )));
                }
            }
        }
    }
    Ok(())
}
