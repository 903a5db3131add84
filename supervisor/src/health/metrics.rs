//! Per-plugin-instance metrics, in a Prometheus-compatible registry from the start.

use std::collections::HashMap;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::reported_histogram::ReportedHistogram;

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
    external_calls: Family<CallLabels, Counter>,
    external_call_seconds: Family<DependencyLabels, ReportedHistogram>,
    /// The last call totals each dependency reported, to count the differences.
    reported_calls: Mutex<HashMap<DependencyLabels, plugin_protocol::v1::CallStats>>,
    integration_events: Family<PathOutcomeLabels, Counter>,
    webhook_requests: Family<WebhookStatusLabels, Counter>,
    webhook_seconds: Family<IntegrationLabels, Histogram, fn() -> Histogram>,
    health: HealthSeries,
    /// Whether the per-integration series of the data path are kept (see
    /// `health.record_data_path`).
    data_path: std::sync::atomic::AtomicBool,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DependencyLabels {
    plugin: String,
    tenant: String,
    integration: String,
    dependency: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    plugin: String,
    tenant: String,
    integration: String,
    dependency: String,
    /// ok, retryable_error, error, refused_by_breaker.
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// One integration (bounded: only configured ones get series).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IntegrationLabels {
    pub tenant: String,
    pub integration: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IntegrationStateLabels {
    tenant: String,
    integration: String,
    plugin: String,
    state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PathOutcomeLabels {
    tenant: String,
    integration: String,
    /// collect, webhook, platform.
    path: &'static str,
    /// stored, duplicate, dead_lettered, refused.
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WebhookStatusLabels {
    tenant: String,
    integration: String,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CredentialLabels {
    tenant: String,
    credential: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AlertLabels {
    rule: String,
    severity: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SinkLabels {
    sink: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelLabels {
    channel: String,
}

fn webhook_histogram() -> Histogram {
    // 0.5 ms .. ~8 s
    Histogram::new(exponential_buckets(0.000_5, 2.0, 15))
}

/// What the health view says of one integration, for its gauges.
#[derive(Debug, Clone)]
pub struct IntegrationGauges<'a> {
    pub tenant: &'a str,
    pub integration: &'a str,
    pub plugin: &'a str,
    pub state: &'static str,
    pub last_success_secs: Option<u64>,
    pub lag_seconds: Option<f64>,
    pub dead_letters_24h: u64,
}

/// The series rebuilt from the health view at each scrape (they follow configuration:
/// a removed integration's series go with it).
#[derive(Debug, Default)]
struct HealthSeries {
    state: Family<IntegrationStateLabels, Gauge>,
    last_success: Family<IntegrationLabels, Gauge>,
    lag: Family<IntegrationLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    dead_letters: Family<IntegrationLabels, Gauge>,
    inbox_depth: Family<TenantLabel, Gauge>,
    credential_expiry: Family<CredentialLabels, Gauge>,
    alerts_firing: Family<AlertLabels, Gauge>,
    sink_delivered: Family<SinkLabels, Gauge>,
    sink_failures: Family<SinkLabels, Gauge>,
    sink_failing: Family<SinkLabels, Gauge>,
    channel_queued: Family<ChannelLabels, Gauge>,
    event_log_bytes: Gauge,
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
        let external_calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "external_calls",
            "Calls plugins made to external dependencies (measured in plugin-kit), by outcome: ok, retryable_error, error, refused_by_breaker",
            external_calls.clone(),
        );
        let external_call_seconds = Family::<DependencyLabels, ReportedHistogram>::default();
        registry.register(
            "external_call_seconds",
            "Latency of the calls plugins made to external dependencies",
            external_call_seconds.clone(),
        );
        let integration_events = Family::<PathOutcomeLabels, Counter>::default();
        registry.register(
            "integration_events",
            "Events per integration by path (collect, webhook, platform) and outcome (stored, duplicate, dead_lettered, refused)",
            integration_events.clone(),
        );
        let webhook_requests = Family::<WebhookStatusLabels, Counter>::default();
        registry.register(
            "webhook_requests",
            "Webhook deliveries by answered status (integrations that exist; others count under empty labels)",
            webhook_requests.clone(),
        );
        let webhook_seconds =
            Family::<IntegrationLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                webhook_histogram,
            );
        registry.register(
            "webhook_request_seconds",
            "Time to answer a webhook delivery",
            webhook_seconds.clone(),
        );
        let health = HealthSeries::default();
        registry.register(
            "integration_state",
            "1 for the health state each integration is in",
            health.state.clone(),
        );
        registry.register(
            "integration_last_success_timestamp_seconds",
            "When each integration last collected successfully (Unix seconds)",
            health.last_success.clone(),
        );
        registry.register(
            "integration_collect_lag_seconds",
            "From the newest event's time to its commit, for the last batch with events",
            health.lag.clone(),
        );
        registry.register(
            "integration_dead_letters_24h",
            "Dead letters of each integration in the last 24 hours",
            health.dead_letters.clone(),
        );
        registry.register(
            "tenant_inbox_depth",
            "Webhook deliveries waiting for their plugin, per tenant",
            health.inbox_depth.clone(),
        );
        registry.register(
            "credential_expiry_timestamp_seconds",
            "When each expiring credential in use expires (Unix seconds)",
            health.credential_expiry.clone(),
        );
        registry.register(
            "alerts_firing",
            "Firing alerts by rule and severity",
            health.alerts_firing.clone(),
        );
        registry.register(
            "sink_delivered_events",
            "Events each sink delivered since start",
            health.sink_delivered.clone(),
        );
        registry.register(
            "sink_failures",
            "Failed delivery attempts of each sink since start",
            health.sink_failures.clone(),
        );
        registry.register(
            "sink_failing",
            "1 while a sink's deliveries fail",
            health.sink_failing.clone(),
        );
        registry.register(
            "alert_notifications_queued",
            "Notifications waiting for each channel",
            health.channel_queued.clone(),
        );
        registry.register(
            "event_log_bytes",
            "The event log's size on disk: what the slowest sink has not delivered",
            health.event_log_bytes.clone(),
        );
        Self {
            breaker_open,
            external_calls,
            external_call_seconds,
            reported_calls: Mutex::default(),
            data_path: std::sync::atomic::AtomicBool::new(true),
            integration_events,
            webhook_requests,
            webhook_seconds,
            health,
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
        // The new process counts its calls from zero.
        self.reported_calls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|series, _| {
                (&series.tenant, &series.integration) != (&labels.tenant, &labels.integration)
            });
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
        let mut reported = self
            .reported_calls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for dependency in super::kept_dependencies(dependencies) {
            let series = DependencyLabels {
                plugin: labels.plugin.clone(),
                tenant: labels.tenant.clone(),
                integration: labels.integration.clone(),
                dependency: dependency.name.clone(),
            };
            self.breaker_open
                .get_or_create(&series)
                .set(i64::from(dependency.breaker != "closed"));
            let Some(calls) = &dependency.calls else {
                continue;
            };
            let increments = plugin_protocol::call_increments(reported.get(&series), calls);
            for (outcome, count) in increments.attempts {
                self.external_calls
                    .get_or_create(&CallLabels {
                        plugin: series.plugin.clone(),
                        tenant: series.tenant.clone(),
                        integration: series.integration.clone(),
                        dependency: series.dependency.clone(),
                        outcome: outcome.as_str(),
                    })
                    .inc_by(count);
            }
            if let Some(latency) = increments.latency {
                self.external_call_seconds.get_or_create(&series).add(
                    &latency.bounds_seconds,
                    &latency.counts,
                    latency.sum_seconds,
                );
            }
            reported.insert(series, calls.clone());
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

    /// Keep (the default) or, for measuring their cost, skip the data path's
    /// per-integration series: events by path and outcome, webhook requests.
    pub fn record_data_path(&self, on: bool) {
        self.data_path
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    fn data_path(&self) -> bool {
        self.data_path.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Events of one integration that took `path`, by outcome.
    pub fn integration_events(
        &self,
        tenant: &str,
        integration: &str,
        path: &'static str,
        counts: [(&'static str, usize); 4],
    ) {
        if !self.data_path() {
            return;
        }
        for (outcome, count) in counts {
            if count == 0 {
                continue;
            }
            self.integration_events
                .get_or_create(&PathOutcomeLabels {
                    tenant: tenant.to_owned(),
                    integration: integration.to_owned(),
                    path,
                    outcome,
                })
                .inc_by(count as u64);
        }
    }

    /// One answered webhook delivery. `known` is false for a tenant and integration that
    /// do not exist: strangers' names never become labels.
    pub fn webhook(&self, tenant: &str, integration: &str, known: bool, status: u16, seconds: f64) {
        if !self.data_path() {
            return;
        }
        let labels = if known {
            IntegrationLabels {
                tenant: tenant.to_owned(),
                integration: integration.to_owned(),
            }
        } else {
            IntegrationLabels {
                tenant: String::new(),
                integration: String::new(),
            }
        };
        self.webhook_requests
            .get_or_create(&WebhookStatusLabels {
                tenant: labels.tenant.clone(),
                integration: labels.integration.clone(),
                status,
            })
            .inc();
        self.webhook_seconds.get_or_create(&labels).observe(seconds);
    }

    /// Replaces the health-derived gauges with what the view says now.
    pub fn health_view<'a>(
        &self,
        integrations: impl Iterator<Item = IntegrationGauges<'a>>,
        inbox: impl Iterator<Item = (&'a str, usize)>,
        credentials: impl Iterator<Item = (&'a str, &'a str, u64)>,
        firing: impl Iterator<Item = (&'a str, &'a str)>,
    ) {
        let series = &self.health;
        series.state.clear();
        series.last_success.clear();
        series.lag.clear();
        series.dead_letters.clear();
        series.inbox_depth.clear();
        series.credential_expiry.clear();
        series.alerts_firing.clear();
        for gauges in integrations {
            let labels = IntegrationLabels {
                tenant: gauges.tenant.to_owned(),
                integration: gauges.integration.to_owned(),
            };
            for state in super::model::HealthState::ALL {
                series
                    .state
                    .get_or_create(&IntegrationStateLabels {
                        tenant: labels.tenant.clone(),
                        integration: labels.integration.clone(),
                        plugin: gauges.plugin.to_owned(),
                        state: state.as_str(),
                    })
                    .set(i64::from(state.as_str() == gauges.state));
            }
            if let Some(secs) = gauges.last_success_secs {
                series
                    .last_success
                    .get_or_create(&labels)
                    .set(i64::try_from(secs).unwrap_or(i64::MAX));
            }
            if let Some(lag) = gauges.lag_seconds {
                series.lag.get_or_create(&labels).set(lag);
            }
            series
                .dead_letters
                .get_or_create(&labels)
                .set(i64::try_from(gauges.dead_letters_24h).unwrap_or(i64::MAX));
        }
        for (tenant, depth) in inbox {
            series
                .inbox_depth
                .get_or_create(&TenantLabel {
                    tenant: tenant.to_owned(),
                })
                .set(i64::try_from(depth).unwrap_or(i64::MAX));
        }
        for (tenant, credential, expires_secs) in credentials {
            series
                .credential_expiry
                .get_or_create(&CredentialLabels {
                    tenant: tenant.to_owned(),
                    credential: credential.to_owned(),
                })
                .set(i64::try_from(expires_secs).unwrap_or(i64::MAX));
        }
        for (rule, severity) in firing {
            series
                .alerts_firing
                .get_or_create(&AlertLabels {
                    rule: rule.to_owned(),
                    severity: severity.to_owned(),
                })
                .inc();
        }
    }

    /// The sinks' and channels' delivery state, and the event log's size.
    pub fn deliveries<'a>(
        &self,
        sinks: impl Iterator<Item = (&'a str, u64, u64, bool)>,
        channels: impl Iterator<Item = (String, usize)>,
        event_log_bytes: u64,
    ) {
        let series = &self.health;
        for (sink, delivered, failures, failing) in sinks {
            let labels = SinkLabels {
                sink: sink.to_owned(),
            };
            series
                .sink_delivered
                .get_or_create(&labels)
                .set(i64::try_from(delivered).unwrap_or(i64::MAX));
            series
                .sink_failures
                .get_or_create(&labels)
                .set(i64::try_from(failures).unwrap_or(i64::MAX));
            series
                .sink_failing
                .get_or_create(&labels)
                .set(i64::from(failing));
        }
        series.channel_queued.clear();
        for (channel, queued) in channels {
            series
                .channel_queued
                .get_or_create(&ChannelLabels { channel })
                .set(i64::try_from(queued).unwrap_or(i64::MAX));
        }
        series
            .event_log_bytes
            .set(i64::try_from(event_log_bytes).unwrap_or(i64::MAX));
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

    /// Exposes a metric another part of the daemon keeps (the correlation index's
    /// retention sweeps), as `integrationd_<name>`.
    pub fn register(
        &self,
        name: &str,
        help: &str,
        metric: impl prometheus_client::registry::Metric,
    ) {
        self.registry
            .lock()
            .expect("metrics lock poisoned")
            .register(name, help, metric);
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

    #[test]
    fn reported_calls_become_counters_and_a_histogram_across_restarts() {
        use plugin_protocol::{CallOutcome, CallRecorder, v1};
        use std::time::Duration;

        let metrics = Metrics::new();
        let labels = InstanceLabels {
            plugin: "github".into(),
            tenant: "acme".into(),
            integration: "gh".into(),
        };
        let report = |recorder: &CallRecorder| {
            metrics.dependencies(
                &labels,
                &[v1::DependencyStatus {
                    name: "api.github.com".into(),
                    breaker: "closed".into(),
                    detail: String::new(),
                    calls: Some(recorder.snapshot()),
                }],
            );
        };
        let mut recorder = CallRecorder::default();
        recorder.record(CallOutcome::Ok, Some(Duration::from_millis(20)));
        report(&recorder);
        recorder.record(CallOutcome::Ok, Some(Duration::from_millis(20)));
        recorder.record(CallOutcome::RetryableError, Some(Duration::from_secs(2)));
        report(&recorder);
        report(&recorder);
        // The plugin restarts and counts from zero.
        metrics.restarted(&labels);
        let mut fresh = CallRecorder::default();
        fresh.record(CallOutcome::Ok, Some(Duration::from_millis(20)));
        report(&fresh);
        let text = metrics.encode();
        let series =
            r#"{plugin="github",tenant="acme",integration="gh",dependency="api.github.com""#;
        assert!(
            text.contains(&format!(
                r#"integrationd_external_calls_total{series},outcome="ok"}} 3"#
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                r#"integrationd_external_calls_total{series},outcome="retryable_error"}} 1"#
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "integrationd_external_call_seconds_count{series}}} 4"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                r#"integrationd_external_call_seconds_bucket{{le="0.025",{}}} 3"#,
                &series[1..]
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                r#"integrationd_external_call_seconds_bucket{{le="+Inf",{}}} 4"#,
                &series[1..]
            )),
            "{text}"
        );
    }

    #[test]
    fn a_plugin_cannot_flood_the_registry_with_dependencies() {
        let metrics = Metrics::new();
        let labels = InstanceLabels {
            plugin: "hostile".into(),
            tenant: "acme".into(),
            integration: "h".into(),
        };
        let many: Vec<plugin_protocol::v1::DependencyStatus> = (0..1000)
            .map(|i| plugin_protocol::v1::DependencyStatus {
                name: if i == 0 {
                    "x".repeat(10_000)
                } else {
                    format!("dep-{i}")
                },
                breaker: "open".into(),
                detail: String::new(),
                calls: None,
            })
            .collect();
        metrics.dependencies(&labels, &many);
        let text = metrics.encode();
        let series = text
            .lines()
            .filter(|l| l.starts_with("integrationd_plugin_dependency_breaker_open{"))
            .count();
        assert_eq!(series, super::super::MAX_DEPENDENCIES);
        assert!(!text.contains("xxxxxxxxxx"));
    }
}
