//! What the process manager tells the rest of the daemon about its instances.
//!
//! The manager defines this interface and calls it; it imports nothing of what listens
//! (the pipeline's sources, enrichment, health). The daemon wires the observers. Each
//! call is made from the instance's own task and must not block: an observer that has
//! work to do hands it to a task of its own.

use std::sync::Arc;

use plugin_kit::host::PluginRpcClient;
use plugin_kit::{Capabilities, ErrorClass, FieldMappings};
use tokio::task::JoinHandle;

use super::state::InstanceState;
use crate::health::InstanceLabels;

/// Listens to instances' lives. Every method has a default that does nothing, so an
/// observer implements only what it cares about.
pub trait InstanceObserver: Send + Sync + std::fmt::Debug {
    /// An instance was added (before its first start).
    fn added(&self, _instance: &InstanceLabels) {}

    /// Its state changed.
    fn state_changed(&self, _instance: &InstanceLabels, _from: InstanceState, _to: InstanceState) {}

    /// Its plugin described itself with `capabilities` and is about to be configured;
    /// its events go through `mappings` (compiled when its configuration was admitted).
    fn configuring(
        &self,
        _instance: &InstanceLabels,
        _mappings: &Arc<FieldMappings>,
        _capabilities: Capabilities,
    ) {
    }

    /// It runs and takes calls: the tasks returned run while it does (they are aborted
    /// when it stops, however it stops).
    fn running(
        &self,
        _instance: &InstanceLabels,
        _client: &PluginRpcClient,
        _capabilities: Capabilities,
    ) -> Vec<JoinHandle<()>> {
        Vec::new()
    }

    /// Its process ended against our wishes (exited, hung, failed to start); it is
    /// restarted after `restart_in`.
    fn exited(&self, _instance: &InstanceLabels, _reason: &str, _restart_in: std::time::Duration) {}

    /// Its plugin reported its dependencies' circuit breakers.
    fn dependencies(
        &self,
        _instance: &InstanceLabels,
        _dependencies: &[plugin_protocol::v1::DependencyStatus],
    ) {
    }

    /// A batch it collected was committed.
    fn collect_committed(&self, _instance: &InstanceLabels, _batch: &CollectedBatch) {}

    /// A collect stream ended well (with or without new events).
    fn collect_passed(&self, _instance: &InstanceLabels) {}

    /// A collect call, its stream or its commit failed.
    fn collect_failed(&self, _instance: &InstanceLabels, _class: ErrorClass, _error: &str) {}

    /// Its `Collect` stream stalled while heartbeats still answered: it is hung.
    fn collect_stalled(&self, _instance: &InstanceLabels, _waited: std::time::Duration) {}

    /// Its plugin does not collect for it (`Collect` is unimplemented for its
    /// configuration).
    fn collect_unsupported(&self, _instance: &InstanceLabels) {}
}

/// What became of one collected batch.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CollectedBatch {
    pub stored: usize,
    pub duplicates: usize,
    pub dead_lettered: usize,
    /// From the submission to its durability.
    pub commit_seconds: f64,
    /// The latest event time among the stored events.
    pub newest_event_ms: Option<u64>,
}

/// Several observers, told in order.
#[derive(Debug, Default, Clone)]
pub struct Observers(Vec<Arc<dyn InstanceObserver>>);

impl Observers {
    pub fn new(observers: Vec<Arc<dyn InstanceObserver>>) -> Self {
        Self(observers)
    }
}

impl InstanceObserver for Observers {
    fn added(&self, instance: &InstanceLabels) {
        self.0.iter().for_each(|o| o.added(instance));
    }

    fn state_changed(&self, instance: &InstanceLabels, from: InstanceState, to: InstanceState) {
        self.0
            .iter()
            .for_each(|o| o.state_changed(instance, from, to));
    }

    fn configuring(
        &self,
        instance: &InstanceLabels,
        mappings: &Arc<FieldMappings>,
        capabilities: Capabilities,
    ) {
        self.0
            .iter()
            .for_each(|o| o.configuring(instance, mappings, capabilities));
    }

    fn running(
        &self,
        instance: &InstanceLabels,
        client: &PluginRpcClient,
        capabilities: Capabilities,
    ) -> Vec<JoinHandle<()>> {
        self.0
            .iter()
            .flat_map(|o| o.running(instance, client, capabilities))
            .collect()
    }

    fn exited(&self, instance: &InstanceLabels, reason: &str, restart_in: std::time::Duration) {
        self.0
            .iter()
            .for_each(|o| o.exited(instance, reason, restart_in));
    }

    fn dependencies(
        &self,
        instance: &InstanceLabels,
        dependencies: &[plugin_protocol::v1::DependencyStatus],
    ) {
        self.0
            .iter()
            .for_each(|o| o.dependencies(instance, dependencies));
    }

    fn collect_committed(&self, instance: &InstanceLabels, batch: &CollectedBatch) {
        self.0
            .iter()
            .for_each(|o| o.collect_committed(instance, batch));
    }

    fn collect_passed(&self, instance: &InstanceLabels) {
        self.0.iter().for_each(|o| o.collect_passed(instance));
    }

    fn collect_failed(&self, instance: &InstanceLabels, class: ErrorClass, error: &str) {
        self.0
            .iter()
            .for_each(|o| o.collect_failed(instance, class, error));
    }

    fn collect_unsupported(&self, instance: &InstanceLabels) {
        self.0.iter().for_each(|o| o.collect_unsupported(instance));
    }

    fn collect_stalled(&self, instance: &InstanceLabels, waited: std::time::Duration) {
        self.0
            .iter()
            .for_each(|o| o.collect_stalled(instance, waited));
    }
}
