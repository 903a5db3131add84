//! The daemon's TOML configuration. Unknown keys and bad values are errors that name
//! the file, the line and the key; command-line flags override the file.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

mod cluster;
mod nats;

pub use cluster::ClusterConfig;
pub use nats::{NatsSinkConfig, NatsSourceConfig, StreamStorage};

use crate::endpoints::AllowedEndpoints;
use crate::names::{Name, is_name};

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {cause}")]
    Read { path: String, cause: std::io::Error },
    #[error("config file {path}: {message}")]
    Invalid { path: String, message: String },
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Directory of the sled database and the default sinks.
    #[serde(default = "defaults::state_dir")]
    pub state_dir: PathBuf,
    /// Directory of installed plugin packages (one subdirectory each, with `plugin.toml`).
    #[serde(default = "defaults::plugin_dir")]
    pub plugin_dir: PathBuf,
    /// Private (0700) directory for plugin sockets; defaults to `<state_dir>/run`.
    #[serde(default)]
    pub runtime_dir: Option<PathBuf>,
    /// The admin socket `integrationctl` talks to.
    #[serde(default = "defaults::admin_socket")]
    pub admin_socket: PathBuf,
    /// Address of the HTTP listener (`/healthz`, `/metrics`, webhooks).
    #[serde(default = "defaults::http_listen")]
    pub http_listen: SocketAddr,
    #[serde(default)]
    pub log_format: LogFormat,
    /// The async runtime's worker threads. One by default: a plugin call's reply
    /// passes through several tasks, and with two workers each hop may have to wake
    /// the other, parked one (heartbeat p50 about 90 µs against 60 µs, measured with
    /// `integrationd bench heartbeat`). CPU-heavy work (validation, enrichment,
    /// commits, the database) runs on the blocking pool and the commit thread either
    /// way; a second worker gave about 7% more webhook deliveries/s and 10% more
    /// `/v1/logs` events/s on a 2-core machine. *Restart.*
    #[serde(default = "defaults::worker_threads")]
    pub worker_threads: usize,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub registry: RegistryConfig,
    #[serde(default)]
    pub process: ProcessConfig,
    #[serde(default)]
    pub credentials: CredentialsConfig,
    #[serde(default)]
    pub sinks: SinksConfig,
    #[serde(default)]
    pub sources: SourcesConfig,
    #[serde(default)]
    pub pipeline: PipelineConfig,
    #[serde(default)]
    pub ingress: IngressConfig,
    #[serde(default)]
    pub integrations: IntegrationsConfig,
    /// Feature flag defaults; tenants override them at runtime.
    #[serde(default)]
    pub flags: FlagDefaults,
    /// Realtime enrichment: regression windows and the failure severity.
    #[serde(default)]
    pub enrichment: EnrichmentConfig,
    /// Plugin instances to keep running.
    #[serde(default)]
    pub instances: Vec<InstanceConfig>,
    /// `[health]`: when an integration counts as late, failing or hung.
    #[serde(default)]
    pub health: HealthConfig,
    /// `[alerts]`: the alert lifecycle and the operators' notification channels.
    #[serde(default)]
    pub alerts: AlertsConfig,
    /// `[cluster]`: this daemon as a node serving the tenants placed on it. Without
    /// it the daemon runs alone. *Restart.*
    #[serde(default)]
    pub cluster: Option<ClusterConfig>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Who may use operator commands on the admin socket (root always may), and how much
/// one tenant may create: each integration is a process, so without a quota one tenant
/// administrator could exhaust the host.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    pub operator_uids: Vec<u32>,
    pub operator_gids: Vec<u32>,
    pub max_integrations_per_tenant: usize,
    pub max_credentials_per_tenant: usize,
    pub max_tokens_per_tenant: usize,
    /// How often the audit chain's head goes into the event stream (when it grew).
    #[serde(deserialize_with = "duration")]
    pub audit_anchor_interval: Duration,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            operator_uids: Vec::new(),
            operator_gids: Vec::new(),
            max_integrations_per_tenant: 50,
            max_credentials_per_tenant: 200,
            max_tokens_per_tenant: 20,
            audit_anchor_interval: Duration::from_secs(3600),
        }
    }
}

/// What tenants' integrations may do.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct IntegrationsConfig {
    /// The endpoints an integration's configuration may name (`api_url`,
    /// `endpoint_url`, any http(s) URL in it): `scheme://host[:port]`, `*.domain`, `:*`.
    /// Compiled as the file is parsed.
    #[serde(deserialize_with = "allowed_endpoints")]
    pub allowed_endpoints: AllowedEndpoints,
}

impl Default for IntegrationsConfig {
    fn default() -> Self {
        Self {
            allowed_endpoints: AllowedEndpoints::new(crate::endpoints::DEFAULT_ALLOWED)
                .expect("the default allow list compiles (tested)"),
        }
    }
}

fn allowed_endpoints<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<AllowedEndpoints, D::Error> {
    let patterns = Vec::<String>::deserialize(deserializer)?;
    AllowedEndpoints::new(&patterns).map_err(serde::de::Error::custom)
}

/// Event sinks.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct SinksConfig {
    /// The JSONL file sink; defaults to `<state_dir>/sinks/events.jsonl`.
    pub jsonl_path: Option<PathBuf>,
    /// Rotate the JSONL file when it reaches this size.
    pub jsonl_max_bytes: u64,
    /// HTTP ingest endpoints (`[[sinks.http]]`), each with its own offset.
    pub http: Vec<HttpSinkConfig>,
    /// NATS JetStream streams (`[[sinks.nats]]`), each with its own offset.
    pub nats: Vec<NatsSinkConfig>,
}

/// Event sources beside plugins and the HTTP ingress.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct SourcesConfig {
    /// Platform events pulled from NATS JetStream (`[[sources.nats]]`).
    pub nats: Vec<NatsSourceConfig>,
}

/// An HTTP sink: batches of events POSTed as NDJSON with a bearer token.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HttpSinkConfig {
    /// Names the sink's offset and its dead letters; unique among sinks.
    pub name: String,
    pub url: String,
    /// A file holding the bearer token (read at start; the token never sits in this
    /// file, so the config can be shared and logged).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Events per request at most.
    #[serde(default = "defaults::http_sink_batch")]
    pub batch_events: usize,
    #[serde(default = "defaults::http_sink_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    /// First and longest wait between retries (exponential, with jitter).
    #[serde(
        default = "defaults::http_sink_retry_min",
        deserialize_with = "duration"
    )]
    pub retry_min: Duration,
    #[serde(
        default = "defaults::http_sink_retry_max",
        deserialize_with = "duration"
    )]
    pub retry_max: Duration,
}

impl Default for SinksConfig {
    fn default() -> Self {
        Self {
            jsonl_path: None,
            jsonl_max_bytes: 256 * 1024 * 1024,
            http: Vec::new(),
            nats: Vec::new(),
        }
    }
}

/// The event pipeline's limits.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Event ids remembered to drop repeats (the latest this many events).
    pub dedup_window: usize,
    /// Disk quota of the event log (what the slowest sink has not delivered): past it,
    /// collection pauses and webhooks are answered 503; an alert is raised at 80%.
    pub backlog_quota_bytes: u64,
    /// The state database's page cache in MiB (restart): by default 512, or an eighth
    /// of the machine's memory when less. A correlation index of a million deliveries
    /// answers lookups in under 100 us p99 with 512; the cache holds only pages read.
    pub store_cache_mb: u64,
    /// Dead letters kept per tenant; beyond it the oldest are dropped (and counted).
    pub dead_letters_per_tenant: usize,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            dedup_window: 1_000_000,
            backlog_quota_bytes: 4 * 1024 * 1024 * 1024,
            store_cache_mb: crate::store::default_cache_mb(),
            dead_letters_per_tenant: 10_000,
        }
    }
}

/// `[health]`: the thresholds of the integration health model.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// How often every running integration's `Check` runs again, to find permissions
    /// lost since admission (0s: never).
    #[serde(deserialize_with = "duration")]
    pub recheck_interval: Duration,
    /// A `Collect` stream that yields nothing this long while the plugin answers its
    /// heartbeats is hung: the instance is restarted.
    #[serde(deserialize_with = "duration")]
    pub collect_stall_timeout: Duration,
    /// Consecutive failed collects after which an integration is `failing`.
    pub failing_after: u32,
    /// Consecutive authentication or permission failures after which an integration
    /// is disabled (0: never); it comes back when its credential or configuration
    /// changes and `Check` passes.
    pub disable_after: u32,
    /// The longest wait between collects of a failing integration (the backoff's cap).
    #[serde(deserialize_with = "duration")]
    pub collect_backoff_max: Duration,
    /// Whether the data path records into health: committed batches, webhook
    /// deliveries and their per-integration metrics. On in production; off only to
    /// measure what health costs the data path (`pipeline-bench --health`,
    /// `webhook-bench --health`), since without it health misses successes and
    /// freshness.
    pub record_data_path: bool,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            recheck_interval: Duration::from_secs(3600),
            collect_stall_timeout: Duration::from_secs(600),
            failing_after: 3,
            disable_after: 5,
            collect_backoff_max: Duration::from_secs(600),
            record_data_path: true,
        }
    }
}

/// `[alerts]`: how alerts live (Alertmanager's pending, firing, resolved) and where
/// operators receive them.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// How often the rules are evaluated.
    #[serde(deserialize_with = "duration")]
    pub evaluate_interval: Duration,
    /// How long a condition must hold before its alert fires (0s: at once).
    #[serde(deserialize_with = "duration")]
    pub pending_for: Duration,
    /// A firing alert is notified again after this long.
    #[serde(deserialize_with = "duration")]
    pub repeat_interval: Duration,
    /// Dead letters within 15 minutes, per integration, that raise an alert.
    pub dead_letters_per_15m: u64,
    /// The longest wait between two attempts to deliver a notification.
    #[serde(deserialize_with = "duration")]
    pub delivery_retry_max: Duration,
    /// Operators' channels: every tenant's alerts unless `tenants` narrows them.
    pub channels: Vec<AlertChannelConfig>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            evaluate_interval: Duration::from_secs(5),
            pending_for: Duration::from_secs(60),
            repeat_interval: Duration::from_secs(4 * 3600),
            dead_letters_per_15m: 10,
            delivery_retry_max: Duration::from_secs(60),
            channels: Vec::new(),
        }
    }
}

/// The body a channel is sent.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ChannelFormat {
    /// The documented JSON alert, signed with HMAC-SHA256.
    #[default]
    Betalogs,
    /// A Slack incoming-webhook message.
    Slack,
    /// A Microsoft Teams incoming-webhook message.
    Teams,
}

impl ChannelFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Betalogs => "betalogs",
            Self::Slack => "slack",
            Self::Teams => "teams",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Betalogs, Self::Slack, Self::Teams]
            .into_iter()
            .find(|f| f.as_str() == text)
    }
}

/// `[[alerts.channels]]`: one operator notification channel.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AlertChannelConfig {
    pub name: Name,
    pub url: String,
    #[serde(default)]
    pub format: ChannelFormat,
    /// The HMAC key of the `betalogs` format (read at start; 0600 file).
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Only these tenants' alerts (empty: all, and the daemon's own).
    #[serde(default)]
    pub tenants: Vec<Name>,
    #[serde(default = "defaults::min_severity", deserialize_with = "severity")]
    pub min_severity: plugin_protocol::Severity,
}

/// `[flags]`: feature flag defaults; tenants override them at runtime.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct FlagDefaults {
    pub realtime_enrichment: bool,
    /// Plugin name → enabled; plugins not listed are enabled.
    pub plugins: BTreeMap<String, bool>,
}

impl Default for FlagDefaults {
    fn default() -> Self {
        Self {
            realtime_enrichment: true,
            plugins: BTreeMap::new(),
        }
    }
}

/// `[enrichment]`: realtime enrichment's regression windows and failure severity,
/// parsed once here.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct EnrichmentConfig {
    /// Off: no correlation index and no realtime enrichment at all.
    pub enabled: bool,
    /// How long before a failure a deployment may have caused it.
    #[serde(deserialize_with = "duration")]
    pub window: Duration,
    /// Failures are events of this severity or above.
    #[serde(deserialize_with = "severity")]
    pub min_severity: plugin_protocol::Severity,
    /// Per tenant (`"acme"`) or per tenant and service (`"acme/checkout"`) windows,
    /// e.g. `"30m"`.
    #[serde(deserialize_with = "durations")]
    pub windows: BTreeMap<String, Duration>,
    /// Also ask the tenant's enriching plugins (CloudWatch) for the metric values
    /// around each failure: a plugin call and a second revision per failure.
    pub metric_values: bool,
    /// How long a plugin may take to answer what the index lacks.
    #[serde(deserialize_with = "duration")]
    pub plugin_deadline: Duration,
    /// How long the index keeps what it learns (deployments, commits, merges, alarm
    /// transitions, resolutions) and the enriched failures, by their event time. Older
    /// entries are pruned in the background, so the index does not grow without bound;
    /// it must cover the longest regression window.
    #[serde(deserialize_with = "duration")]
    pub retention: Duration,
}

impl EnrichmentConfig {
    /// The retention must cover every regression window: a failure is enriched with
    /// the deployments within its window, which must still be in the index.
    fn check_retention(&self) -> Result<(), String> {
        let show = |d: Duration| humantime::format_duration(d).to_string();
        if self.retention < self.window {
            return Err(format!(
                "enrichment.retention ({}) is shorter than enrichment.window ({})",
                show(self.retention),
                show(self.window)
            ));
        }
        if let Some((scope, window)) = self.windows.iter().find(|(_, w)| **w > self.retention) {
            return Err(format!(
                "enrichment.retention ({}) is shorter than enrichment.windows.\"{scope}\" ({})",
                show(self.retention),
                show(*window)
            ));
        }
        Ok(())
    }
}

impl Default for EnrichmentConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            window: Duration::from_secs(2 * 60 * 60),
            min_severity: plugin_protocol::Severity::Error,
            windows: BTreeMap::new(),
            metric_values: false,
            plugin_deadline: Duration::from_secs(2),
            retention: Duration::from_secs(90 * 24 * 60 * 60),
        }
    }
}

/// The HTTP ingress (`/v1/webhooks`, `/v1/events`): limits per request and per tenant.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct IngressConfig {
    /// Larger request bodies are answered 413.
    pub max_body_bytes: usize,
    /// Requests per second per tenant (webhooks and platform events together), with
    /// bursts up to `burst`; beyond it, 429 with `Retry-After`.
    pub rate_per_second: u32,
    pub burst: u32,
    /// Deliveries kept per tenant while their plugin is down; beyond it, 503.
    pub inbox_max_entries: usize,
    /// How long a plugin may take to verify and map a delivery; past it the delivery
    /// is answered 503 and not stored (the sender retries).
    #[serde(deserialize_with = "duration")]
    pub webhook_timeout: Duration,
    /// A connection must send its request headers within this.
    #[serde(deserialize_with = "duration")]
    pub header_timeout: Duration,
    /// A request body must arrive whole within this.
    #[serde(deserialize_with = "duration")]
    pub body_timeout: Duration,
    /// A keep-alive connection with no request in flight is closed after this.
    #[serde(deserialize_with = "duration")]
    pub idle_timeout: Duration,
    /// Bytes of request bodies being read at once, all connections together; beyond
    /// it, 503 (the sender retries) rather than memory without bound.
    pub max_body_memory_bytes: usize,
    /// Connections open at once, in all; beyond it new ones are closed at once.
    pub max_connections: usize,
    /// Connections open at once from one client address.
    pub max_connections_per_client: usize,
    /// Deliveries failing authentication, per client address and minute; beyond it,
    /// 429. Only authenticated deliveries count against a tenant's rate.
    pub auth_failures_per_minute: u32,
    /// OTLP log records (`POST /v1/logs`) at or above this severity become failure
    /// events (`debug`, `info`, `warning`, `error`, `critical`); the rest are counted,
    /// not stored.
    pub otlp_min_severity: plugin_protocol::Severity,
}

impl Default for IngressConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 25 * 1024 * 1024,
            rate_per_second: 1000,
            burst: 2000,
            inbox_max_entries: 10_000,
            webhook_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
            max_body_memory_bytes: 256 * 1024 * 1024,
            max_connections: 1024,
            max_connections_per_client: 64,
            auth_failures_per_minute: 60,
            otlp_min_severity: plugin_protocol::Severity::Error,
        }
    }
}

/// Where the master key comes from.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CredentialsConfig {
    /// `file:PATH` (an age identity file, mode 0600), `systemd:NAME`
    /// (`$CREDENTIALS_DIRECTORY/NAME`) or `passphrase-file:PATH` (scrypt). Unset: no
    /// credentials can be stored.
    #[serde(default)]
    pub master_key: Option<String>,
    /// DEVELOPMENT ONLY: create the `file:` key if it does not exist.
    #[serde(default)]
    pub generate_missing_key: bool,
    /// How often expiring credentials are looked at for renewal.
    #[serde(default = "defaults::renewal_interval", deserialize_with = "duration")]
    pub renewal_interval: Duration,
}

impl Default for CredentialsConfig {
    fn default() -> Self {
        Self {
            master_key: None,
            generate_missing_key: false,
            renewal_interval: defaults::renewal_interval(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// DEVELOPMENT ONLY: pin every discovered plugin's current checksum at discovery.
    /// A production configuration trusts nothing implicitly.
    #[serde(default)]
    pub trust_build_output: bool,
    /// Plugin name → exact version to run instead of the newest compatible one.
    #[serde(default)]
    pub pins: BTreeMap<String, semver::Version>,
}

/// Process-manager settings: limits, timeouts, heartbeats and restart policy.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ProcessConfig {
    #[serde(deserialize_with = "duration")]
    pub start_timeout: Duration,
    /// Time a plugin gets to stop after `Shutdown` before SIGTERM, and again before SIGKILL.
    #[serde(deserialize_with = "duration")]
    pub grace_period: Duration,
    #[serde(deserialize_with = "duration")]
    pub heartbeat_interval: Duration,
    #[serde(deserialize_with = "duration")]
    pub heartbeat_timeout: Duration,
    /// Consecutive missed heartbeats after which a plugin counts as hung.
    pub heartbeat_misses: u32,
    #[serde(deserialize_with = "duration")]
    pub restart_initial_delay: Duration,
    #[serde(deserialize_with = "duration")]
    pub restart_max_delay: Duration,
    /// A plugin healthy this long has its backoff reset.
    #[serde(deserialize_with = "duration")]
    pub restart_reset_after: Duration,
    /// More restarts than this within `crash_loop_window` is a crash loop.
    pub crash_loop_restarts: u32,
    #[serde(deserialize_with = "duration")]
    pub crash_loop_window: Duration,
    pub limits: LimitsConfig,
    /// Pause between the end of one `Collect` stream and the next.
    #[serde(deserialize_with = "duration")]
    pub collect_interval: Duration,
    /// Environment variables passed through to plugins (everything else is cleared).
    pub pass_env: Vec<String>,
}

impl Default for ProcessConfig {
    fn default() -> Self {
        Self {
            start_timeout: Duration::from_secs(10),
            grace_period: Duration::from_secs(5),
            heartbeat_interval: Duration::from_secs(3),
            heartbeat_timeout: Duration::from_secs(2),
            heartbeat_misses: 2,
            restart_initial_delay: Duration::from_millis(250),
            restart_max_delay: Duration::from_secs(60),
            restart_reset_after: Duration::from_secs(60),
            crash_loop_restarts: 5,
            crash_loop_window: Duration::from_secs(60),
            limits: LimitsConfig::default(),
            collect_interval: Duration::from_secs(30),
            pass_env: vec!["RUST_LOG".to_owned()],
        }
    }
}

/// Resource limits per plugin process.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// `RLIMIT_AS` in MiB; 0 means unlimited.
    pub memory_mb: u64,
    pub open_files: u64,
    /// `RLIMIT_CPU` in seconds; 0 means unlimited.
    pub cpu_seconds: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            memory_mb: 1024,
            open_files: 1024,
            cpu_seconds: 0,
        }
    }
}

impl LimitsConfig {
    pub fn to_resource_limits(&self) -> plugin_kit::host::ResourceLimits {
        let nonzero = |value: u64| (value > 0).then_some(value);
        plugin_kit::host::ResourceLimits {
            address_space_bytes: nonzero(self.memory_mb).map(|mb| mb * 1024 * 1024),
            open_files: nonzero(self.open_files),
            cpu_seconds: nonzero(self.cpu_seconds),
        }
    }
}

/// The largest `ingress.max_body_bytes`: a body the ingress accepts must fit one plugin
/// call (`plugin_protocol::MAX_MESSAGE_BYTES`) with its headers.
pub const MAX_INGRESS_BODY_BYTES: usize = 32 * 1024 * 1024;

impl LimitsConfig {
    /// Each limit is 0 (unlimited) or within a range a process can live with: a
    /// plugin cannot start in less than 16 MiB of address space or 16 descriptors, and a
    /// limit too large to express in bytes would wrap around to a tiny one.
    fn check(&self) -> Result<(), String> {
        const MAX_MEMORY_MB: u64 = 1024 * 1024;
        const MAX_OPEN_FILES: u64 = 1024 * 1024;
        let in_range = |value: u64, min: u64, max: u64| value == 0 || (min..=max).contains(&value);
        if !in_range(self.memory_mb, 16, MAX_MEMORY_MB) {
            return Err(format!(
                "process.limits.memory_mb = {} is out of range: 0 (unlimited) or 16 to {MAX_MEMORY_MB}",
                self.memory_mb
            ));
        }
        if !in_range(self.open_files, 16, MAX_OPEN_FILES) {
            return Err(format!(
                "process.limits.open_files = {} is out of range: 0 (unlimited) or 16 to {MAX_OPEN_FILES}",
                self.open_files
            ));
        }
        if self.cpu_seconds > u64::from(u32::MAX) {
            return Err(format!(
                "process.limits.cpu_seconds = {} is out of range: 0 (unlimited) to {}",
                self.cpu_seconds,
                u32::MAX
            ));
        }
        Ok(())
    }
}

/// One plugin instance the supervisor keeps running.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct InstanceConfig {
    pub plugin: Name,
    #[serde(default = "defaults::tenant")]
    pub tenant: Name,
    /// Defaults to the plugin name.
    #[serde(default)]
    pub integration: Option<Name>,
}

impl InstanceConfig {
    pub fn integration(&self) -> &str {
        self.integration.as_deref().unwrap_or(&self.plugin)
    }
}

mod defaults {
    use std::net::SocketAddr;
    use std::path::PathBuf;
    use std::time::Duration;

    pub fn min_severity() -> plugin_protocol::Severity {
        plugin_protocol::Severity::Warning
    }

    pub fn http_sink_batch() -> usize {
        1000
    }

    pub fn http_sink_timeout() -> Duration {
        Duration::from_secs(10)
    }

    pub fn http_sink_retry_min() -> Duration {
        Duration::from_millis(200)
    }

    pub fn http_sink_retry_max() -> Duration {
        Duration::from_secs(30)
    }

    pub fn state_dir() -> PathBuf {
        "/var/lib/integrationd".into()
    }
    pub fn plugin_dir() -> PathBuf {
        "/usr/lib/integrationd/plugins".into()
    }
    pub fn admin_socket() -> PathBuf {
        "/run/integrationd/admin.sock".into()
    }
    pub fn worker_threads() -> usize {
        1
    }
    pub fn http_listen() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 8787))
    }
    pub fn renewal_interval() -> std::time::Duration {
        std::time::Duration::from_secs(60)
    }
    pub fn tenant() -> crate::names::Name {
        crate::names::Name::new("system").expect("a valid name")
    }
}

fn severity<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<plugin_protocol::Severity, D::Error> {
    let text = String::deserialize(deserializer)?;
    serde_json::from_value(serde_json::Value::String(text.clone())).map_err(|_| {
        serde::de::Error::custom(format!(
            "`{text}` is not debug, info, warning, error or critical"
        ))
    })
}

/// Refusal wording for a sink's name and a source's.
const AMONG_SINKS: &str = "unique among sinks (`jsonl` is taken)";
const AMONG_SOURCES: &str = "unique among sources";

/// A sink's or a source's name: a name, and not one already `taken` by its kind.
fn unique_name<'a>(
    key: &str,
    name: &'a str,
    taken: &mut std::collections::BTreeSet<&'a str>,
    among: &str,
) -> Result<(), String> {
    if is_name(name) && taken.insert(name) {
        return Ok(());
    }
    Err(format!(
        "{key}.name = `{name}`: use 1-64 letters, digits, `-` or `_`, {among}"
    ))
}

fn durations<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, Duration>, D::Error> {
    let texts = BTreeMap::<String, String>::deserialize(deserializer)?;
    texts
        .into_iter()
        .map(|(scope, text)| {
            humantime::parse_duration(&text)
                .map(|window| (scope.clone(), window))
                .map_err(|err| {
                    serde::de::Error::custom(format!("windows.{scope} = `{text}`: {err}"))
                })
        })
        .collect()
}

fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    humantime::parse_duration(&text).map_err(|err| {
        serde::de::Error::custom(format!(
            "`{text}` is not a duration ({err}); write e.g. \"250ms\", \"5s\", \"1m\""
        ))
    })
}

impl Default for Config {
    fn default() -> Self {
        Self::parse("", Path::new("<defaults>")).expect("the empty config is valid")
    }
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            cause: source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses config text. Relative paths stay as written; [`Config::resolve_paths`]
    /// anchors them.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|err| ConfigError::Invalid {
            path: path.display().to_string(),
            message: err.to_string(),
        })?;
        config.validate(path)?;
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.display().to_string(),
            message,
        };
        if !(1..=64).contains(&self.worker_threads) {
            return Err(invalid(format!(
                "worker_threads = {}: from 1 to 64",
                self.worker_threads
            )));
        }
        let p = &self.process;
        if p.heartbeat_timeout.is_zero() || p.heartbeat_interval.is_zero() {
            return Err(invalid(
                "process.heartbeat_interval and process.heartbeat_timeout must be above zero"
                    .into(),
            ));
        }
        if p.heartbeat_misses == 0 {
            return Err(invalid(
                "process.heartbeat_misses must be at least 1".into(),
            ));
        }
        p.limits.check().map_err(invalid)?;
        if self.admin.audit_anchor_interval.is_zero() {
            return Err(invalid(
                "admin.audit_anchor_interval must be above zero".into(),
            ));
        }
        if p.restart_max_delay < p.restart_initial_delay {
            return Err(invalid(format!(
                "process.restart_max_delay ({:?}) is below process.restart_initial_delay ({:?})",
                p.restart_max_delay, p.restart_initial_delay
            )));
        }
        let i = &self.ingress;
        if i.rate_per_second == 0 || i.burst == 0 {
            return Err(invalid(
                "ingress.rate_per_second and ingress.burst must be at least 1".into(),
            ));
        }
        if i.header_timeout.is_zero()
            || i.body_timeout.is_zero()
            || i.idle_timeout.is_zero()
            || i.max_connections == 0
            || i.max_connections_per_client == 0
            || i.max_body_memory_bytes < i.max_body_bytes
            || i.auth_failures_per_minute == 0
        {
            return Err(invalid(
                "ingress.header_timeout, body_timeout, idle_timeout, max_connections, max_connections_per_client and auth_failures_per_minute must be above zero, and max_body_memory_bytes at least max_body_bytes".into(),
            ));
        }
        if i.max_body_bytes < 1024
            || i.max_body_bytes > MAX_INGRESS_BODY_BYTES
            || i.inbox_max_entries == 0
            || i.webhook_timeout.is_zero()
        {
            return Err(invalid(format!(
                "ingress.max_body_bytes must be from 1024 to {MAX_INGRESS_BODY_BYTES} (32 MiB: every accepted body must fit a plugin call), ingress.inbox_max_entries and ingress.webhook_timeout above zero"
            )));
        }
        if self.pipeline.dead_letters_per_tenant == 0 {
            return Err(invalid(
                "pipeline.dead_letters_per_tenant must be at least 1".into(),
            ));
        }
        if self.pipeline.dedup_window == 0 || self.pipeline.backlog_quota_bytes < 1024 * 1024 {
            return Err(invalid(
                "pipeline.dedup_window must be above zero and pipeline.backlog_quota_bytes at least 1 MiB".into(),
            ));
        }
        self.enrichment.check_retention().map_err(invalid)?;
        let mut sink_names = std::collections::BTreeSet::from(["jsonl"]);
        for (index, sink) in self.sinks.http.iter().enumerate() {
            unique_name(
                &format!("sinks.http[{index}]"),
                &sink.name,
                &mut sink_names,
                AMONG_SINKS,
            )
            .map_err(invalid)?;
            if !(sink.url.starts_with("http://") || sink.url.starts_with("https://")) {
                return Err(invalid(format!(
                    "sinks.http[{index}].url = `{}`: an http:// or https:// URL",
                    sink.url
                )));
            }
            if sink.batch_events == 0
                || sink.timeout.is_zero()
                || sink.retry_min.is_zero()
                || sink.retry_max < sink.retry_min
            {
                return Err(invalid(format!(
                    "sinks.http[{index}]: batch_events and timeout above zero, retry_min above zero and at most retry_max"
                )));
            }
        }
        for (index, sink) in self.sinks.nats.iter().enumerate() {
            unique_name(
                &format!("sinks.nats[{index}]"),
                &sink.name,
                &mut sink_names,
                AMONG_SINKS,
            )
            .map_err(invalid)?;
            sink.check()
                .map_err(|why| invalid(format!("sinks.nats[{index}] (`{}`): {why}", sink.name)))?;
        }
        let mut source_names = std::collections::BTreeSet::new();
        for (index, source) in self.sources.nats.iter().enumerate() {
            unique_name(
                &format!("sources.nats[{index}]"),
                &source.name,
                &mut source_names,
                AMONG_SOURCES,
            )
            .map_err(invalid)?;
            source.check().map_err(|why| {
                invalid(format!("sources.nats[{index}] (`{}`): {why}", source.name))
            })?;
        }
        if let Some(cluster) = &self.cluster {
            cluster
                .check()
                .map_err(|why| invalid(format!("cluster: {why}")))?;
        }
        let mut seen = std::collections::BTreeSet::new();
        for (index, instance) in self.instances.iter().enumerate() {
            let key = (instance.tenant.as_str(), instance.integration());
            if !seen.insert(key) {
                return Err(invalid(format!(
                    "instances[{index}]: tenant `{}` already has an integration `{}`",
                    key.0, key.1
                )));
            }
        }
        Ok(())
    }

    /// Makes every path absolute, relative ones against the current directory: plugins
    /// get their socket path in the environment and must not depend on our directory.
    pub fn resolve_paths(&mut self) -> Result<(), ConfigError> {
        let absolute = |path: &mut PathBuf, key: &str| -> Result<(), ConfigError> {
            *path = std::path::absolute(&*path).map_err(|source| ConfigError::Read {
                path: format!("{key} = {}", path.display()),
                cause: source,
            })?;
            Ok(())
        };
        absolute(&mut self.state_dir, "state_dir")?;
        absolute(&mut self.plugin_dir, "plugin_dir")?;
        absolute(&mut self.admin_socket, "admin_socket")?;
        if let Some(dir) = &mut self.runtime_dir {
            absolute(dir, "runtime_dir")?;
        }
        Ok(())
    }

    /// Where plugin sockets live.
    pub fn runtime_dir(&self) -> PathBuf {
        self.runtime_dir
            .clone()
            .unwrap_or_else(|| self.state_dir.join("run"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, Path::new("/etc/integrationd.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn a_cluster_section_is_checked_naming_the_key() {
        let base = "[cluster]\nnode = \"eu-1\"\nservers = [\"nats://127.0.0.1:4222\"]\n";
        let config = parse(base).expect("valid");
        let cluster = config.cluster.expect("cluster");
        assert_eq!(cluster.bucket, "betalogs_placement");
        assert_eq!(
            cluster.advertised("127.0.0.1:8080".parse().expect("addr")),
            "http://127.0.0.1:8080"
        );
        assert!(parse("").expect("alone").cluster.is_none());
        for (extra, expected) in [
            ("node = \"eu 1\"", "node = \"eu 1\": use 1-64 letters"),
            (
                "advertise = \"ftp://x\"",
                "advertise = \"ftp://x\": an http:// or https:// URL",
            ),
            (
                "bucket = \"a.b\"",
                "bucket = \"a.b\": a key-value bucket name",
            ),
            ("replicas = 7", "replicas = 7: from 1 to 5"),
            (
                "heartbeat_interval = \"10s\"\nnode_timeout = \"15s\"",
                "node_timeout (15s) must be at least twice heartbeat_interval (10s)",
            ),
        ] {
            let text = base.replace("node = \"eu-1\"\n", "").replace(
                "[cluster]\n",
                &format!(
                    "[cluster]\n{}{extra}\n",
                    if extra.starts_with("node ") {
                        ""
                    } else {
                        "node = \"eu-1\"\n"
                    }
                ),
            );
            let err = parse(&text).expect_err(extra);
            assert!(err.contains("cluster: ") && err.contains(expected), "{err}");
        }
    }

    /// The configuration the Debian package installs parses, and points where the unit's
    /// StateDirectory=, RuntimeDirectory= and LoadCredential= put things.
    #[test]
    fn the_packaged_configuration_parses_and_matches_the_unit() {
        let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
        let text = std::fs::read_to_string(deploy.join("debian/integrationd.toml")).expect("read");
        let config = parse(&text).expect("the packaged configuration parses");
        let unit =
            std::fs::read_to_string(deploy.join("systemd/integrationd.service")).expect("read");
        assert_eq!(config.state_dir, PathBuf::from("/var/lib/integrationd"));
        assert!(unit.contains("StateDirectory=integrationd"));
        assert!(config.admin_socket.starts_with("/run/integrationd/"));
        assert!(unit.contains("RuntimeDirectory=integrationd"));
        assert!(unit.contains("LoadCredential=master-key:/etc/integrationd/master.key"));
        assert_eq!(
            config.credentials.master_key.as_deref(),
            Some("systemd:master-key")
        );
        assert!(!config.registry.trust_build_output);
    }

    #[test]
    fn empty_file_gives_production_defaults() {
        let config = parse("").expect("valid");
        assert!(!config.registry.trust_build_output);
        assert_eq!(
            config.process.restart_initial_delay,
            Duration::from_millis(250)
        );
        assert_eq!(
            config.runtime_dir(),
            PathBuf::from("/var/lib/integrationd/run")
        );
    }

    #[test]
    fn resource_limits_out_of_range_are_refused_not_wrapped() {
        for (line, named) in [
            ("memory_mb = 1", "memory_mb = 1 is out of range"),
            (
                "memory_mb = 18446744073709551615",
                "memory_mb = 18446744073709551615 is out of range",
            ),
            ("open_files = 3", "open_files = 3 is out of range"),
            ("cpu_seconds = 99999999999", "cpu_seconds = 99999999999"),
        ] {
            let err = parse(&format!("[process.limits]\n{line}\n")).expect_err(line);
            assert!(err.contains(named), "{line}: {err}");
        }
        let limits = parse("[process.limits]\nmemory_mb = 0\nopen_files = 64\n")
            .expect("in range")
            .process
            .limits
            .to_resource_limits();
        assert_eq!(limits.address_space_bytes, None);
        assert_eq!(limits.open_files, Some(64));
    }

    #[test]
    fn an_ingress_body_limit_above_a_plugin_call_is_refused() {
        let err = parse("[ingress]\nmax_body_bytes = 67108864\n").expect_err("too large");
        assert!(
            err.contains("max_body_bytes must be from 1024 to 33554432"),
            "{err}"
        );
    }

    #[test]
    fn an_index_retention_shorter_than_a_regression_window_is_refused() {
        let err = parse("[enrichment]\nretention = \"1h\"\n").expect_err("below 2h");
        assert!(
            err.contains("enrichment.retention (1h) is shorter than enrichment.window (2h)"),
            "{err}"
        );
        let err = parse(
            "[enrichment]\nretention = \"3h\"\n[enrichment.windows]\n\"acme/checkout\" = \"4h\"\n",
        )
        .expect_err("below a scoped window");
        assert!(
            err.contains("enrichment.retention (3h) is shorter than enrichment.windows.\"acme/checkout\" (4h)"),
            "{err}"
        );
        let err = parse("worker_threads = 0\n").expect_err("no worker");
        assert!(err.contains("worker_threads = 0: from 1 to 64"), "{err}");
        assert_eq!(Config::default().worker_threads, 1);
        let config = parse("[enrichment]\nwindow = \"1m\"\nretention = \"2m\"\n").expect("valid");
        assert_eq!(config.enrichment.retention, Duration::from_secs(120));
        assert_eq!(
            Config::default().enrichment.retention,
            Duration::from_secs(90 * 86_400),
            "90 days by default"
        );
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let err = parse("state_dir = \"/x\"\n\n[process]\nheartbeat_intervall = \"1s\"\n")
            .expect_err("unknown");
        assert!(err.contains("/etc/integrationd.toml"), "{err}");
        assert!(err.contains("line 4"), "{err}");
        assert!(err.contains("heartbeat_intervall"), "{err}");
    }

    #[test]
    fn bad_values_are_named() {
        let err = parse("[process]\ngrace_period = \"soon\"\n").expect_err("bad duration");
        assert!(
            err.contains("`soon` is not a duration") && err.contains("line 2"),
            "{err}"
        );
        let err = parse("http_listen = \"localhost\"\n").expect_err("bad addr");
        assert!(
            err.contains("http_listen") || err.contains("line 1"),
            "{err}"
        );
        let err = parse("[process]\nheartbeat_misses = -1\n").expect_err("negative");
        assert!(
            err.contains("heartbeat_misses") || err.contains("line 2"),
            "{err}"
        );
        // The allow list is compiled as it is parsed: a bad pattern names its line.
        let err =
            parse("[integrations]\nallowed_endpoints = [\"ftp://x\"]\n").expect_err("bad pattern");
        assert!(err.contains("line 2") && err.contains("ftp://x"), "{err}");
        // Names are checked as they are parsed: the error shows the line and the value.
        let err = parse("[[instances]]\nplugin = \"../etc\"\n").expect_err("bad name");
        assert!(
            err.contains("line 2") && err.contains("`../etc` is not a valid name"),
            "{err}"
        );
        let err = parse("[[instances]]\nplugin = \"a\"\n[[instances]]\nplugin = \"a\"\n")
            .expect_err("dup");
        assert!(err.contains("already has"), "{err}");
        let err = parse("[process]\nrestart_initial_delay = \"2m\"\nrestart_max_delay = \"1m\"\n")
            .expect_err("order");
        assert!(err.contains("restart_max_delay"), "{err}");
    }

    #[test]
    fn relative_paths_are_anchored_to_the_current_directory() {
        let mut config =
            parse("state_dir = \"state\"\nadmin_socket = \"state/admin.sock\"\n").expect("valid");
        config.resolve_paths().expect("resolve");
        let cwd = std::env::current_dir().expect("cwd");
        assert_eq!(config.state_dir, cwd.join("state"));
        assert_eq!(config.admin_socket, cwd.join("state/admin.sock"));
        assert!(config.runtime_dir().is_absolute());
        assert!(config.plugin_dir.is_absolute());
    }

    #[test]
    fn hostile_input_is_rejected_not_panicked() {
        assert!(parse("\u{0}\u{1}garbage[[[").is_err());
        assert!(parse(&"[".repeat(10_000)).is_err());
    }
}
