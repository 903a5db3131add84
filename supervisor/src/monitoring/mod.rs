//! Monitoring: every integration's health as one document, the alert rules evaluated
//! over it, the alerts' lifecycle in the state database, and their delivery to the
//! sinks (as canonical events) and to people (notification channels).
//!
//! ```text
//! HealthBook ─┐
//! Manager ────┼─ view::build ─ rules::evaluate ─ alert::advance ─ AlertStore ─ delivery
//! Integrations┘                                                   (one transaction)   ├ events → Pipeline
//!                                                                                      └ channels → HTTP
//! ```
//!
//! [`Monitoring`] is the facade the admin API and the HTTP listener ask.

pub mod alert;
pub mod alert_store;
pub mod channels;
pub mod delivery;
pub mod message;
pub mod rules;
pub mod view;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::config::{AlertsConfig, HealthConfig};
use crate::credentials::{CredentialInfo, Credentials};
use crate::desired::Desired;
use crate::health::HealthBook;
use crate::health::model::Disabled;
use crate::integrations::{Integration, Integrations};
use crate::names::InstanceKey;
use crate::pipeline::Pipeline;
use crate::pipeline::sinks::SinkStatus;
use crate::store::{StoreError, Table};
use crate::tenants::Flags;
use alert::{Alert, AlertState, Lifecycle};
use alert_store::{AlertStore, EVENTS_QUEUE};
use channels::{Channel, ChannelKey, Owner, TenantChannels};
use delivery::Deliveries;
use view::{Configured, IntegrationHealth};

/// Resolved alerts are kept this long.
const RESOLVED_RETENTION_MS: u64 = 7 * 86_400_000;

/// What is configured, cached until the tables it is read from change.
#[derive(Debug, Default)]
struct ConfiguredCache {
    generations: (u64, u64, u64),
    configured: Arc<Vec<Configured>>,
    credentials: Arc<CredentialIndex>,
}

/// Credential metadata by (tenant, name).
type CredentialIndex = HashMap<(String, String), CredentialInfo>;

/// The channels as of the (channels, credentials) table generations.
type ChannelCache = ((u64, u64), Option<Vec<Channel>>);

/// The components monitoring reads.
#[derive(Debug, Clone)]
pub struct Sources {
    pub book: Arc<HealthBook>,
    pub desired: Arc<Desired>,
    pub integrations: Integrations,
    pub flags: Flags,
    pub credentials: Option<Arc<Credentials>>,
    pub pipeline: Arc<Pipeline>,
    /// This node's cluster, when it is one of several: lost nodes are alerted on.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
}

/// The health document: serialized as it is, without a `serde_json::Value` between.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HealthDocument {
    pub generated_at: String,
    pub tenant: Option<String>,
    pub summary: std::collections::BTreeMap<&'static str, usize>,
    pub integrations: Vec<IntegrationHealth>,
    pub alerts: Vec<serde_json::Value>,
    /// The daemon's sinks and sources: in the operator's (daemon-wide) document only.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sinks: Vec<SinkStatus>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<SinkStatus>,
    /// The cluster's nodes, alive or lost (`[cluster]`): daemon-wide only.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<crate::cluster::NodeStatus>,
}

/// The monitoring facade.
#[derive(Debug)]
pub struct Monitoring {
    sources: Sources,
    health: HealthConfig,
    alerts_config: AlertsConfig,
    backlog_quota_bytes: u64,
    alerts: Arc<AlertStore>,
    live: Mutex<HashMap<String, Alert>>,
    operator_channels: Vec<Channel>,
    tenant_channels: TenantChannels,
    deliveries: Deliveries,
    cache: Mutex<ConfiguredCache>,
    /// Tenants' channels with their secrets, read again only after channels or
    /// credentials changed (each secret read is audited).
    channel_cache: Mutex<ChannelCache>,
    /// When the health loop last finished an evaluation (ms since the epoch): the
    /// watchdog pings systemd only while this keeps moving.
    evaluated_ms: std::sync::atomic::AtomicU64,
}

/// Why monitoring could not start.
#[derive(Debug, thiserror::Error)]
pub enum MonitoringError {
    #[error(transparent)]
    Channel(#[from] channels::ChannelError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn disabled_of(integration: &Integration) -> Option<Disabled> {
    if integration.enabled {
        return None;
    }
    let reason = integration
        .disabled_reason
        .clone()
        .unwrap_or_else(|| "disabled".to_owned());
    let by = if integration.disabled_by_health {
        "health".to_owned()
    } else if let Some(credential) = &integration.disabled_by_credential {
        format!("credential:{credential}")
    } else {
        "operator".to_owned()
    };
    Some(Disabled { by, reason })
}

impl Monitoring {
    pub fn new(
        sources: Sources,
        health: HealthConfig,
        alerts_config: AlertsConfig,
        backlog_quota_bytes: u64,
        stop: watch::Receiver<bool>,
    ) -> Result<Self, MonitoringError> {
        let store = sources.pipeline.store().clone();
        let alerts = Arc::new(AlertStore::open(store.clone())?);
        let live = alerts.live()?;
        let operator_channels = channels::operator_channels(&alerts_config.channels)?;
        let deliveries = Deliveries::new(
            alerts.clone(),
            sources.pipeline.clone(),
            alerts_config.delivery_retry_max,
            stop,
        );
        Ok(Self {
            sources,
            health,
            alerts_config,
            backlog_quota_bytes,
            alerts,
            live: Mutex::new(live),
            operator_channels,
            tenant_channels: TenantChannels::new(store),
            deliveries,
            cache: Mutex::default(),
            channel_cache: Mutex::new(((0, 0), None)),
            evaluated_ms: std::sync::atomic::AtomicU64::new(plugin_kit::clock::now_ms()),
        })
    }

    /// Configured integrations and the credentials they name, read again only after
    /// integrations, flags or credentials changed.
    fn configured(&self) -> (Arc<Vec<Configured>>, Arc<CredentialIndex>) {
        let store = self.sources.pipeline.store();
        let generations = (
            store.generation(Table::Integrations),
            store.generation(Table::Flags),
            store.generation(Table::Credentials),
        );
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if cache.generations == generations && !cache.configured.is_empty() {
            return (cache.configured.clone(), cache.credentials.clone());
        }
        let mut configured: Vec<Configured> = Vec::new();
        for instance in self.sources.desired.config_instances() {
            configured.push(Configured {
                key: InstanceKey::new(instance.tenant.as_str(), instance.integration()),
                plugin: instance.plugin.to_string(),
                disabled: None,
                paused: !self
                    .sources
                    .flags
                    .plugin_enabled(&instance.tenant, &instance.plugin),
                credentials: Vec::new(),
            });
        }
        match self.sources.integrations.list(None) {
            Ok(integrations) => {
                for integration in integrations {
                    let key = InstanceKey::new(&integration.tenant, &integration.name);
                    if configured.iter().any(|c| c.key == key) {
                        continue;
                    }
                    let credentials =
                        crate::integrations::credential_refs(&integration.current().config)
                            .map(|refs| refs.into_iter().map(|r| r.name).collect())
                            .unwrap_or_default();
                    configured.push(Configured {
                        paused: !self
                            .sources
                            .flags
                            .plugin_enabled(&integration.tenant, &integration.plugin),
                        disabled: disabled_of(&integration),
                        plugin: integration.plugin,
                        key,
                        credentials,
                    });
                }
            }
            Err(err) => tracing::error!(error = %err, "cannot read integrations for their health"),
        }
        let credentials = self
            .sources
            .credentials
            .as_ref()
            .and_then(|c| c.list_all().ok())
            .unwrap_or_default()
            .into_iter()
            .map(|info| ((info.tenant.clone(), info.name.clone()), info))
            .collect();
        cache.generations = generations;
        cache.configured = Arc::new(configured);
        cache.credentials = Arc::new(credentials);
        (cache.configured.clone(), cache.credentials.clone())
    }

    /// The tenants with a configured integration, sorted (from the cached list, without
    /// building anyone's health).
    pub fn tenants(&self) -> Vec<String> {
        let (configured, _) = self.configured();
        let mut tenants: Vec<String> = configured.iter().map(|c| c.key.tenant.clone()).collect();
        tenants.sort_unstable();
        tenants.dedup();
        tenants
    }

    /// The health of every integration (of `tenant`, if given), worst first.
    pub async fn health(&self, tenant: Option<&str>) -> Vec<IntegrationHealth> {
        let (configured, credentials) = self.configured();
        let configured: Vec<Configured> = configured
            .iter()
            .filter(|c| tenant.is_none_or(|t| c.key.is_of(t)))
            .cloned()
            .collect();
        let processes = self
            .sources
            .desired
            .manager()
            .status()
            .await
            .into_iter()
            .filter(|s| tenant.is_none_or(|t| s.tenant == t))
            .map(|s| (InstanceKey::new(&s.tenant, &s.integration), s))
            .collect();
        let facts = self
            .sources
            .book
            .snapshot()
            .into_iter()
            .filter(|(key, _)| tenant.is_none_or(|t| key.is_of(t)))
            .collect();
        let inbox = self.sources.pipeline.inbox();
        let inbox_depth = |tenant: &str| inbox.waiting(tenant);
        let pipeline = &self.sources.pipeline;
        let dead_letters_held = |tenant: &str| pipeline.dead_letters_held(tenant);
        view::build(&view::Inputs {
            configured: &configured,
            facts,
            processes,
            credentials: &credentials,
            inbox_depth: &inbox_depth,
            dead_letters_held: &dead_letters_held,
            config: &self.health,
            now_ms: plugin_kit::clock::now_ms(),
        })
    }

    /// The health document (`GET /v1/health`, `integrationctl health`): every
    /// integration of `tenant` (or all), narrowed to `integration` if given, and the
    /// firing alerts.
    pub async fn health_document(
        &self,
        tenant: Option<&str>,
        integration: Option<&str>,
    ) -> HealthDocument {
        let mut integrations = self.health(tenant).await;
        if let Some(name) = integration {
            integrations.retain(|i| i.integration == name);
        }
        let mut summary = std::collections::BTreeMap::<&'static str, usize>::new();
        for health in &integrations {
            *summary.entry(health.state.as_str()).or_default() += 1;
        }
        let pipeline = &self.sources.pipeline;
        let daemon_wide = tenant.is_none() && integration.is_none();
        let (sinks, sources, nodes) = if daemon_wide {
            (
                pipeline.sink_health().all(),
                pipeline.source_health().all(),
                self.nodes(),
            )
        } else {
            (Vec::new(), Vec::new(), Vec::new())
        };
        HealthDocument {
            sinks,
            sources,
            nodes,
            generated_at: view::rfc3339(plugin_kit::clock::now_ms()),
            tenant: tenant.map(str::to_owned),
            summary,
            integrations,
            alerts: self
                .firing(tenant)
                .iter()
                .map(message::alert_json)
                .collect(),
        }
    }

    /// The cluster's nodes (none when the daemon runs alone).
    fn nodes(&self) -> Vec<crate::cluster::NodeStatus> {
        self.sources
            .cluster
            .as_ref()
            .map(|cluster| cluster.nodes())
            .unwrap_or_default()
    }

    /// The alerts document (`GET /v1/alerts`, `integrationctl alerts list`).
    pub fn alerts_document(
        &self,
        tenant: Option<&str>,
        state: Option<AlertState>,
    ) -> Result<serde_json::Value, StoreError> {
        let alerts = self.alerts(tenant, state)?;
        Ok(serde_json::json!({
            "generated_at": view::rfc3339(plugin_kit::clock::now_ms()),
            "tenant": tenant,
            "alerts": alerts.iter().map(message::alert_json).collect::<Vec<_>>(),
        }))
    }

    /// Alerts (of `tenant`, if given; in `state`, if given), newest first.
    pub fn alerts(
        &self,
        tenant: Option<&str>,
        state: Option<AlertState>,
    ) -> Result<Vec<Alert>, StoreError> {
        let mut alerts: Vec<Alert> = self
            .alerts
            .all()?
            .into_iter()
            .filter(|a| tenant.is_none_or(|t| a.tenant.as_deref() == Some(t)))
            .filter(|a| state.is_none_or(|s| a.state == s))
            .collect();
        alerts.sort_by_key(|a| std::cmp::Reverse(a.pending_since_ms));
        Ok(alerts)
    }

    /// The firing alerts (of `tenant`).
    pub fn firing(&self, tenant: Option<&str>) -> Vec<Alert> {
        let live = self
            .live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut firing: Vec<Alert> = live
            .values()
            .filter(|a| a.state == AlertState::Firing)
            .filter(|a| tenant.is_none_or(|t| a.tenant.as_deref() == Some(t)))
            .cloned()
            .collect();
        firing.sort_by_key(|a| std::cmp::Reverse(a.started_at_ms));
        firing
    }

    /// Every channel that receives alerts: the operators' and the tenants'.
    pub fn channels(&self) -> Vec<Channel> {
        let store = self.sources.pipeline.store();
        let generations = (
            store.generation(Table::AlertChannels),
            store.generation(Table::Credentials),
        );
        let mut cache = self
            .channel_cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if cache.0 == generations
            && let Some(channels) = &cache.1
        {
            return channels.clone();
        }
        let mut all = self.operator_channels.clone();
        match self.tenant_channels.list(None) {
            Ok(stored) => {
                for channel in stored {
                    match self.tenant_channel(&channel) {
                        Ok(channel) => all.push(channel),
                        Err(why) => {
                            tracing::error!(tenant = %channel.tenant, channel = %channel.name, error = %why, "a tenant's alert channel cannot be used")
                        }
                    }
                }
            }
            Err(err) => tracing::error!(error = %err, "cannot read tenants' alert channels"),
        }
        // Reading a secret audits the read, which is a write of its own: take the
        // generations after it, or the cache would be stale at once.
        cache.0 = (
            store.generation(Table::AlertChannels),
            store.generation(Table::Credentials),
        );
        cache.1 = Some(all.clone());
        all
    }

    fn tenant_channel(&self, stored: &channels::TenantChannel) -> Result<Channel, String> {
        let format = crate::config::ChannelFormat::parse(&stored.format)
            .ok_or_else(|| format!("unknown format `{}`", stored.format))?;
        let secret = match &stored.secret_credential {
            None => None,
            Some(name) => {
                let credentials = self
                    .sources
                    .credentials
                    .as_ref()
                    .ok_or("credentials are not configured on this daemon")?;
                let read = credentials
                    .read(
                        &stored.tenant,
                        name,
                        "daemon:alerts",
                        "sign alert notifications",
                    )
                    .map_err(|e| e.to_string())?;
                // Stored as an `api-key`: the secret is a JSON string.
                let text: String =
                    serde_json::from_str(secrecy::ExposeSecret::expose_secret(&read.secret))
                        .map_err(|_| format!("credential `{name}` is not an api-key"))?;
                Some(secrecy::SecretString::from(text))
            }
        };
        Ok(Channel {
            key: ChannelKey {
                owner: Owner::Tenant(stored.tenant.clone()),
                name: stored.name.clone(),
            },
            url: stored.url.clone(),
            format,
            secret,
            tenants: Vec::new(),
            min_severity: stored.min_severity,
        })
    }

    /// The running plugin of an integration (for an on-demand `Check`).
    pub async fn client(&self, key: &InstanceKey) -> Option<plugin_kit::host::PluginRpcClient> {
        self.sources.desired.manager().client(key).await
    }

    pub fn tenant_channels(&self) -> &TenantChannels {
        &self.tenant_channels
    }

    pub fn deliveries(&self) -> &Deliveries {
        &self.deliveries
    }

    pub fn alert_store(&self) -> &AlertStore {
        &self.alerts
    }

    /// Channels changed: delivery tasks follow.
    pub fn channels_changed(&self) {
        self.deliveries.run_for(&self.channels());
    }

    /// One evaluation: the rules over the health of everything, the lifecycle moved on,
    /// the changes and notifications stored together, the deliveries woken.
    pub async fn evaluate(&self, channels: &[Channel]) {
        let now = plugin_kit::clock::now_ms();
        let integrations = self.health(None).await;
        let daemon = rules::DaemonFacts {
            sinks: self.sources.pipeline.sink_health().all(),
            sources: self.sources.pipeline.source_health().all(),
            upkeep: self.sources.pipeline.upkeep_health().all(),
            nodes: self.nodes(),
            log_bytes: self.sources.pipeline.log_bytes(),
            log_quota_bytes: self.backlog_quota_bytes,
        };
        let conditions = rules::evaluate(
            &integrations,
            &daemon,
            rules::Thresholds {
                dead_letters_per_15m: self.alerts_config.dead_letters_per_15m,
            },
            now,
        );
        let lifecycle = Lifecycle {
            pending_for: self.alerts_config.pending_for,
            repeat_interval: self.alerts_config.repeat_interval,
        };
        let mut live = self
            .live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let keep = rules::keep(&integrations, &daemon);
        let advance = alert::advance_keeping(&live, &conditions, &keep, now, lifecycle);
        tracing::debug!(
            integrations = integrations.len(),
            conditions = conditions.len(),
            changed = advance.changed.len(),
            elapsed_us = plugin_kit::clock::now_ms().saturating_sub(now) * 1000,
            "alert rules evaluated"
        );
        if advance.changed.is_empty() {
            return;
        }
        let route = |notification: &alert::Notification| {
            let mut queues: Vec<String> = channels
                .iter()
                .filter(|c| c.accepts(&notification.alert))
                .map(|c| c.key.queue())
                .collect();
            queues.push(EVENTS_QUEUE.to_owned());
            queues
        };
        let recorded = {
            let alerts = self.alerts.clone();
            let advance_ref = &advance;
            tokio::task::block_in_place(|| alerts.record(advance_ref, route))
        };
        if let Err(err) = recorded {
            tracing::error!(error = %err, "cannot store alert changes; evaluated again next time");
            return;
        }
        for alert in &advance.changed {
            match alert.state {
                AlertState::Resolved => {
                    tracing::info!(alert = %alert.id, rule = %alert.rule, tenant = ?alert.tenant, integration = ?alert.integration, "alert resolved");
                    live.remove(&alert.fingerprint);
                }
                AlertState::Firing => {
                    if alert.notifications == 1 && alert.notified_at_ms == Some(now) {
                        tracing::error!(alert = %alert.id, rule = %alert.rule, tenant = ?alert.tenant, integration = ?alert.integration, summary = %alert.summary, "alert firing");
                    }
                    live.insert(alert.fingerprint.clone(), alert.clone());
                }
                AlertState::Pending => {
                    live.insert(alert.fingerprint.clone(), alert.clone());
                }
            }
        }
        *self
            .live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = live;
        if !advance.notifications.is_empty() {
            self.deliveries.queued();
        }
    }

    /// How long ago the health loop last finished an evaluation, and how long apart
    /// its evaluations are meant to be.
    pub fn evaluation_age(&self) -> (Duration, Duration) {
        let last = self.evaluated_ms.load(std::sync::atomic::Ordering::Relaxed);
        let age = plugin_kit::clock::now_ms().saturating_sub(last);
        (
            Duration::from_millis(age),
            self.alerts_config.evaluate_interval,
        )
    }

    /// Evaluates every `alerts.evaluate_interval` until `stop`.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        self.channels_changed();
        let mut pruned_at = 0;
        loop {
            let channels = self.channels();
            self.evaluate(&channels).await;
            let now = plugin_kit::clock::now_ms();
            self.evaluated_ms
                .store(now, std::sync::atomic::Ordering::Relaxed);
            if now.saturating_sub(pruned_at) > 3_600_000 {
                pruned_at = now;
                if let Err(err) = self
                    .alerts
                    .prune_resolved(now.saturating_sub(RESOLVED_RETENTION_MS))
                {
                    tracing::warn!(error = %err, "cannot prune old resolved alerts");
                }
            }
            tokio::select! {
                () = tokio::time::sleep(self.alerts_config.evaluate_interval) => {}
                _ = stop.wait_for(|stop| *stop) => return,
            }
        }
    }
}
