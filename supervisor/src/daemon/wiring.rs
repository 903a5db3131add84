//! The daemon's wiring between components that do not know each other: the process
//! manager's observers (the pipeline's sources, enrichment, metrics) and the plugins
//! enrichment asks. Each component defines the interface it needs; only this file
//! knows both sides.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use plugin_kit::host::PluginRpcClient;
use plugin_kit::{Capabilities, Capability, ErrorClass};
use tokio::task::JoinHandle;

use crate::config::HealthConfig;
use crate::correlation::Correlator;
use crate::correlation::completion::{ClientLookup, EnrichClients};
use crate::desired::Desired;
use crate::health::{HealthBook, InstanceLabels, Metrics};
use crate::integrations::Integrations;
use crate::names::InstanceKey;
use crate::pipeline::sources::{collect, inbox_drain};
use crate::pipeline::{BatchOutcome, CollectReport, Pipeline};
use crate::process::{CollectedBatch, InstanceObserver, InstanceState, Manager};

/// Instances' collect results in the metrics.
#[derive(Debug)]
pub(super) struct MetricsObserver(pub Arc<Metrics>);

impl InstanceObserver for MetricsObserver {
    fn collect_committed(&self, instance: &InstanceLabels, batch: &CollectedBatch) {
        self.0.batch_committed(
            batch.commit_seconds,
            batch.stored,
            batch.duplicates,
            batch.dead_lettered,
        );
        self.0.integration_events(
            &instance.tenant,
            &instance.integration,
            "collect",
            [
                ("stored", batch.stored),
                ("duplicate", batch.duplicates),
                ("dead_lettered", batch.dead_lettered),
                ("refused", 0),
            ],
        );
    }
}

/// The data path of every instance: the pipeline's sources while it runs, its field
/// mappings, and enrichment's view of which plugin serves it and whether it runs.
#[derive(Debug)]
pub(super) struct DataPath {
    pub pipeline: Arc<Pipeline>,
    pub correlator: Arc<Correlator>,
    pub pacing: collect::Pacing,
    pub webhook_timeout: Duration,
    /// Told about collected batches (health, metrics).
    pub downstream: Arc<dyn InstanceObserver>,
}

impl InstanceObserver for DataPath {
    fn added(&self, instance: &InstanceLabels) {
        self.correlator
            .name_plugin(&instance.key(), &instance.plugin);
    }

    fn state_changed(&self, instance: &InstanceLabels, _from: InstanceState, to: InstanceState) {
        // Enrichment says when a source of context is down against the operator's
        // wishes (a stop on purpose is not a gap).
        self.correlator.set_running(
            &instance.key(),
            matches!(
                to,
                InstanceState::Healthy | InstanceState::Stopping | InstanceState::Stopped
            ),
        );
    }

    fn configuring(
        &self,
        instance: &InstanceLabels,
        mappings: &Arc<plugin_kit::FieldMappings>,
        capabilities: Capabilities,
    ) {
        self.pipeline
            .set_mappings(&instance.key(), mappings.clone());
        self.correlator.register(
            &instance.key(),
            &instance.plugin,
            capabilities.contains(Capability::Enrich),
        );
    }

    fn running(
        &self,
        instance: &InstanceLabels,
        client: &PluginRpcClient,
        capabilities: Capabilities,
    ) -> Vec<JoinHandle<()>> {
        let mut tasks = Vec::new();
        if capabilities.contains(Capability::Collect) {
            let report = Arc::new(Report {
                instance: instance.clone(),
                downstream: self.downstream.clone(),
            });
            tasks.push(tokio::spawn(collect::run(
                client.clone(),
                self.pipeline.clone(),
                report,
                instance.clone(),
                self.pacing,
            )));
        }
        if capabilities.contains(Capability::Webhook) {
            tasks.push(tokio::spawn(inbox_drain::run(
                client.clone(),
                self.pipeline.clone(),
                instance.clone(),
                self.webhook_timeout,
            )));
        }
        tasks
    }
}

/// One instance's collect results, passed on to the instance observers.
#[derive(Debug)]
struct Report {
    instance: InstanceLabels,
    downstream: Arc<dyn InstanceObserver>,
}

impl CollectReport for Report {
    fn committed(&self, outcome: &BatchOutcome, seconds: f64, newest_event_ms: Option<u64>) {
        self.downstream.collect_committed(
            &self.instance,
            &CollectedBatch {
                stored: outcome.stored,
                duplicates: outcome.duplicates,
                dead_lettered: outcome.dead_lettered,
                commit_seconds: seconds,
                newest_event_ms,
            },
        );
    }

    fn passed(&self) {
        self.downstream.collect_passed(&self.instance);
    }

    fn failed(&self, class: ErrorClass, error: &str) {
        self.downstream.collect_failed(&self.instance, class, error);
    }

    fn stalled(&self, waited: Duration) {
        self.downstream.collect_stalled(&self.instance, waited);
    }

    fn unsupported(&self) {
        self.downstream.collect_unsupported(&self.instance);
    }
}

/// What health does about what it sees: disables an integration whose credential keeps
/// being refused, restarts an instance hung in `Collect`.
#[derive(Debug)]
pub(super) struct HealthResponder {
    pub integrations: Integrations,
    /// Set once the desired-state component exists (it is built after the manager,
    /// whose observers include this).
    pub desired: OnceLock<Arc<Desired>>,
}

const HEALTH_ACTOR: &str = "daemon:health";

impl HealthResponder {
    fn disable(self: &Arc<Self>, instance: &InstanceKey, reason: String) {
        let this = self.clone();
        let instance = instance.clone();
        tokio::spawn(async move {
            match this.integrations.disable_for_health(
                &instance.tenant,
                &instance.integration,
                &reason,
                HEALTH_ACTOR,
            ) {
                Ok(true) => {
                    tracing::error!(tenant = %instance.tenant, integration = %instance.integration, reason = %reason, "integration disabled after repeated refusals");
                    if let Some(desired) = this.desired.get() {
                        desired.apply().await;
                    }
                }
                Ok(false) => {}
                // A configuration-file instance is not an integration: it keeps
                // backing off and stays `action_required`.
                Err(crate::integrations::IntegrationError::Unknown { .. }) => {}
                Err(err) => {
                    tracing::error!(error = %err, "cannot disable an integration");
                }
            }
        });
    }

    fn restart(self: &Arc<Self>, instance: &InstanceKey) {
        let this = self.clone();
        let instance = instance.clone();
        tokio::spawn(async move {
            if let Some(desired) = this.desired.get() {
                desired.manager().restart_instance(&instance).await;
            }
        });
    }
}

/// Every instance's health facts in the [`HealthBook`], and health's responses.
#[derive(Debug)]
pub(super) struct HealthObserver {
    pub book: Arc<HealthBook>,
    pub config: HealthConfig,
    pub poll_interval: Duration,
    pub responder: Arc<HealthResponder>,
}

impl InstanceObserver for HealthObserver {
    fn added(&self, instance: &InstanceLabels) {
        self.book.known(&instance.key(), &instance.plugin);
    }

    fn running(
        &self,
        instance: &InstanceLabels,
        client: &PluginRpcClient,
        capabilities: Capabilities,
    ) -> Vec<JoinHandle<()>> {
        self.book.running(
            &instance.key(),
            capabilities.contains(Capability::Collect),
            self.poll_interval,
        );
        if self.config.recheck_interval.is_zero() {
            return Vec::new();
        }
        vec![tokio::spawn(recheck(
            client.clone(),
            self.book.clone(),
            instance.key(),
            self.config.recheck_interval,
        ))]
    }

    fn exited(&self, instance: &InstanceLabels, reason: &str, _restart_in: Duration) {
        self.book.process_failed(&instance.key(), reason);
    }

    fn dependencies(
        &self,
        instance: &InstanceLabels,
        dependencies: &[plugin_protocol::v1::DependencyStatus],
    ) {
        self.book.breakers(&instance.key(), dependencies);
    }

    fn collect_committed(&self, instance: &InstanceLabels, batch: &CollectedBatch) {
        self.book.collected(
            &instance.key(),
            (batch.stored, batch.dead_lettered),
            batch.newest_event_ms,
        );
    }

    fn collect_passed(&self, instance: &InstanceLabels) {
        self.book.collect_passed(&instance.key());
    }

    fn collect_unsupported(&self, instance: &InstanceLabels) {
        self.book.not_collecting(&instance.key());
    }

    fn collect_failed(&self, instance: &InstanceLabels, class: ErrorClass, error: &str) {
        let verdict = self.book.collect_failed(&instance.key(), class, error);
        if class.needs_action()
            && self.config.disable_after > 0
            && verdict.refusals >= self.config.disable_after
        {
            self.responder.disable(
                &instance.key(),
                format!(
                    "disabled by the daemon after {} consecutive {class} failures: {error}",
                    verdict.refusals
                ),
            );
        }
    }

    fn collect_stalled(&self, instance: &InstanceLabels, waited: Duration) {
        self.book.failed(
            &instance.key(),
            "collect",
            ErrorClass::Timeout,
            &format!(
                "Collect yielded nothing for {}s while the plugin answered heartbeats; restarted",
                waited.as_secs()
            ),
        );
        tracing::warn!(tenant = %instance.tenant, integration = %instance.integration, waited_s = waited.as_secs(), "Collect stalled while the plugin answered heartbeats; restarting the instance");
        self.responder.restart(&instance.key());
    }
}

/// Runs `Check` every `interval` while the instance runs, so that a permission lost
/// after admission is found even when nothing else fails.
async fn recheck(
    mut client: PluginRpcClient,
    book: Arc<HealthBook>,
    instance: InstanceKey,
    interval: Duration,
) {
    loop {
        tokio::time::sleep(interval).await;
        let outcome =
            crate::health::check_outcome(client.check(plugin_protocol::v1::CheckRequest {}).await);
        book.checked(&instance, outcome.failure());
    }
}

/// Enrichment asks the running plugins through the process manager.
#[derive(Debug)]
pub(super) struct ManagerClients(pub Arc<Manager>);

impl EnrichClients for ManagerClients {
    fn enrich_client<'a>(&'a self, tenant: &'a str, integration: &'a str) -> ClientLookup<'a> {
        Box::pin(async move {
            let instance = crate::names::InstanceKey::new(tenant, integration);
            self.0.client_for(&instance, Capability::Enrich).await
        })
    }
}
