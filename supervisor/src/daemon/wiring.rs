//! The daemon's wiring between components that do not know each other: the process
//! manager's observers (the pipeline's sources, enrichment, metrics) and the plugins
//! enrichment asks. Each component defines the interface it needs; only this file
//! knows both sides.

use std::sync::Arc;
use std::time::Duration;

use plugin_kit::host::PluginRpcClient;
use plugin_kit::{Capabilities, Capability};
use tokio::task::JoinHandle;

use crate::correlation::Correlator;
use crate::correlation::completion::{ClientLookup, EnrichClients};
use crate::health::{InstanceLabels, Metrics};
use crate::pipeline::sources::{collect, inbox_drain};
use crate::pipeline::{BatchOutcome, CollectReport, Pipeline};
use crate::process::{CollectedBatch, InstanceObserver, InstanceState, Manager};

/// Instances' collect results in the metrics.
#[derive(Debug)]
pub(super) struct MetricsObserver(pub Arc<Metrics>);

impl InstanceObserver for MetricsObserver {
    fn collect_committed(&self, _instance: &InstanceLabels, batch: &CollectedBatch) {
        self.0.batch_committed(
            batch.commit_seconds,
            batch.stored,
            batch.duplicates,
            batch.dead_lettered,
        );
    }
}

/// The data path of every instance: the pipeline's sources while it runs, its field
/// mappings, and enrichment's view of which plugin serves it and whether it runs.
#[derive(Debug)]
pub(super) struct DataPath {
    pub pipeline: Arc<Pipeline>,
    pub correlator: Arc<Correlator>,
    pub collect_interval: Duration,
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
                self.collect_interval,
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
    fn committed(&self, outcome: &BatchOutcome, seconds: f64) {
        self.downstream.collect_committed(
            &self.instance,
            &CollectedBatch {
                stored: outcome.stored,
                duplicates: outcome.duplicates,
                dead_lettered: outcome.dead_lettered,
                commit_seconds: seconds,
            },
        );
    }

    fn failed(&self, error: &str) {
        self.downstream.collect_failed(&self.instance, error);
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
