//! Per-plugin-instance metrics, in a Prometheus-compatible registry from the start.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Identifies one plugin instance.
/// The label of per-tenant series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLabel {
    pub tenant: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InstanceLabels {
    pub plugin: String,
    pub tenant: String,
    pub integration: String,
}

impl InstanceLabels {
    /// The instance these labels are of.
    pub fn key(&self) -> crate::names::InstanceKey {
        crate::names::InstanceKey::new(&self.tenant, &self.integration)
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    plugin: String,
    tenant: String,
    integration: String,
    state: String,
}

fn rpc_histogram() -> Histogram {
    // 25 us .. ~400 ms
    Histogram::new(exponential_buckets(0.000_025, 2.0, 15))
}

/// The daemon's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
    state: Family<StateLabels, Gauge>,
    restarts: Family<InstanceLabels, Counter>,
    heartbeat_seconds: Family<InstanceLabels, Histogram, fn() -> Histogram>,
    heartbeat_failures: Family<InstanceLabels, Counter>,
    commit_seconds: Histogram,
    events: Family<OutcomeLabels, Counter>,
    breaker_open: Family<DependencyLabels, Gauge>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DependencyLabels {
    plugin: String,
    tenant: String,
    integration: String,
    dependency: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("integrationd");
        let state = Family::<StateLabels, Gauge>::default();
        let restarts = Family::<InstanceLabels, Counter>::default();
        let heartbeat_seconds =
            Family::<InstanceLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                rpc_histogram,
            );
        let heartbeat_failures = Family::<InstanceLabels, Counter>::default();
        registry.register(
            "plugin_state",
            "1 for the state each plugin instance is in",
            state.clone(),
        );
        registry.register(
            "plugin_restarts",
            "Restarts of each plugin instance",
            restarts.clone(),
        );
        registry.register(
            "plugin_heartbeat_seconds",
            "Round trip of grpc.health.v1 Check calls to each plugin instance",
            heartbeat_seconds.clone(),
        );
        registry.register(
            "plugin_heartbeat_failures",
            "Heartbeats that failed or timed out",
            heartbeat_failures.clone(),
        );
        // 0.1 ms .. ~1.6 s
        // Ratio √2: the p99 target (20 ms) falls between buckets 15.9 and 22.5 ms, close
        // enough to read a pass or a fail off the histogram.
        let commit_seconds =
            Histogram::new(exponential_buckets(0.000_1, std::f64::consts::SQRT_2, 30));
        let events = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "pipeline_commit_seconds",
            "Durable commit of one collected batch (events, dead letters and cursor, flushed)",
            commit_seconds.clone(),
        );
        registry.register(
            "pipeline_events",
            "Collected events by outcome: stored, duplicate, dead_lettered",
            events.clone(),
        );
        let breaker_open = Family::<DependencyLabels, Gauge>::default();
        registry.register(
            "plugin_dependency_breaker_open",
            "1 while a plugin's circuit breaker for an external dependency is open or half-open",
            breaker_open.clone(),
        );
        Self {
            breaker_open,
            registry: Mutex::new(registry),
            state,
            restarts,
            heartbeat_seconds,
            heartbeat_failures,
            commit_seconds,
            events,
        }
    }

    /// Moves an instance's state gauge from `from` to `to`.
    pub fn state_changed(&self, labels: &InstanceLabels, from: &str, to: &str) {
        let with = |state: &str| StateLabels {
            plugin: labels.plugin.clone(),
            tenant: labels.tenant.clone(),
            integration: labels.integration.clone(),
            state: state.to_owned(),
        };
        self.state.get_or_create(&with(from)).set(0);
        self.state.get_or_create(&with(to)).set(1);
    }

    /// Creates an instance's series at zero, so they exist before anything happens.
    pub fn instance_added(&self, labels: &InstanceLabels) {
        let _ = self.restarts.get_or_create(labels);
        let _ = self.heartbeat_failures.get_or_create(labels);
    }

    pub fn restarted(&self, labels: &InstanceLabels) {
        self.restarts.get_or_create(labels).inc();
    }

    pub fn heartbeat(&self, labels: &InstanceLabels, seconds: Option<f64>) {
        match seconds {
            Some(seconds) => self
                .heartbeat_seconds
                .get_or_create(labels)
                .observe(seconds),
            None => {
                self.heartbeat_failures.get_or_create(labels).inc();
            }
        }
    }

    /// The breakers a plugin reported.
    pub fn dependencies(
        &self,
        labels: &InstanceLabels,
        dependencies: &[plugin_protocol::v1::DependencyStatus],
    ) {
        for dependency in dependencies {
            let series = DependencyLabels {
                plugin: labels.plugin.clone(),
                tenant: labels.tenant.clone(),
                integration: labels.integration.clone(),
                dependency: dependency.name.clone(),
            };
            self.breaker_open
                .get_or_create(&series)
                .set(i64::from(dependency.breaker != "closed"));
        }
    }

    /// One committed batch: how long the durable commit took and what became of its events.
    pub fn batch_committed(
        &self,
        seconds: f64,
        stored: usize,
        duplicates: usize,
        dead_lettered: usize,
    ) {
        self.commit_seconds.observe(seconds);
        for (outcome, count) in [
            ("stored", stored),
            ("duplicate", duplicates),
            ("dead_lettered", dead_lettered),
        ] {
            self.events
                .get_or_create(&OutcomeLabels { outcome })
                .inc_by(count as u64);
        }
    }

    /// Exposes the pipeline's count of dead letters dropped from full queues, per tenant.
    pub fn register_dead_letter_evictions(&self, evicted: Family<TenantLabel, Counter>) {
        self.registry
            .lock()
            .expect("metrics lock poisoned")
            .register(
                "pipeline_dead_letters_evicted",
                "Dead letters dropped because the tenant's dead-letter queue was full (the oldest go first)",
                evicted,
            );
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().expect("metrics lock poisoned");
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_state_restarts_and_latency() {
        let metrics = Metrics::new();
        let labels = InstanceLabels {
            plugin: "github".into(),
            tenant: "acme".into(),
            integration: "gh".into(),
        };
        metrics.state_changed(&labels, "starting", "healthy");
        metrics.restarted(&labels);
        metrics.heartbeat(&labels, Some(0.0001));
        metrics.heartbeat(&labels, None);
        let text = metrics.encode();
        assert!(text.contains(r#"integrationd_plugin_state{plugin="github",tenant="acme",integration="gh",state="healthy"} 1"#), "{text}");
        assert!(text.contains(r#"state="starting"} 0"#), "{text}");
        assert!(text.contains(r#"integrationd_plugin_restarts_total{plugin="github",tenant="acme",integration="gh"} 1"#), "{text}");
        assert!(
            text.contains("integrationd_plugin_heartbeat_seconds_count"),
            "{text}"
        );
        assert!(
            text.contains("integrationd_plugin_heartbeat_failures_total"),
            "{text}"
        );
    }
}
