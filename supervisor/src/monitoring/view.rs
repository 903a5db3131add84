//! The health document of each integration (`GET /v1/health`, `integrationctl
//! health`): the facts the [`HealthBook`](crate::health::HealthBook) recorded, the
//! process manager's view of its plugin, whether it is disabled or paused, and the
//! credentials it uses, with the state they add up to. [`build`] is pure over its
//! inputs.

use std::collections::HashMap;

use serde::Serialize;

use crate::config::HealthConfig;
use crate::credentials::CredentialInfo;
use crate::health::model::{
    Breaker, Disabled, FIFTEEN_MINUTES, FIVE_MINUTES, Facts, LastError, ONE_DAY, ONE_HOUR, assess,
};
use crate::health::{Freshness, HealthState, ProcessPhase};
use crate::names::InstanceKey;
use crate::process::{InstanceState, InstanceStatus};

/// An integration the daemon should run (a stored integration or a configured instance).
#[derive(Debug, Clone, PartialEq)]
pub struct Configured {
    pub key: InstanceKey,
    pub plugin: String,
    pub disabled: Option<Disabled>,
    pub paused: bool,
    /// The credentials its configuration names.
    pub credentials: Vec<String>,
}

/// A time as the document writes it: RFC 3339, and its age in seconds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Moment {
    pub at: String,
    pub age_seconds: u64,
}

pub(crate) fn rfc3339(ms: u64) -> String {
    plugin_kit::clock::rfc3339_ms(ms)
}

fn moment(ms: Option<u64>, now_ms: u64) -> Option<Moment> {
    ms.map(|ms| Moment {
        at: rfc3339(ms),
        age_seconds: now_ms.saturating_sub(ms) / 1000,
    })
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ErrorView {
    pub class: String,
    pub message: String,
    pub source: String,
    pub at: String,
}

impl ErrorView {
    pub fn of(error: &LastError) -> Self {
        Self {
            class: error.class.as_str().to_owned(),
            message: error.message.clone(),
            source: error.source.to_owned(),
            at: rfc3339(error.at_ms),
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BreakerView {
    pub name: String,
    pub state: String,
    pub detail: String,
    pub open_since: Option<String>,
    #[serde(skip)]
    pub open_since_ms: Option<u64>,
}

impl BreakerView {
    fn of(breaker: &Breaker) -> Self {
        Self {
            name: breaker.name.clone(),
            state: breaker.state.clone(),
            detail: breaker.detail.clone(),
            open_since: breaker.open_since_ms.map(rfc3339),
            open_since_ms: breaker.open_since_ms,
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CredentialView {
    pub name: String,
    pub kind: String,
    pub expires_at: Option<String>,
    #[serde(skip)]
    pub expires_ms: Option<u64>,
    /// When it was last stored or renewed.
    pub updated_at: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ProcessView {
    /// The process manager's state: starting, healthy, degraded, backoff, crash-loop, ...
    pub state: String,
    pub pid: Option<u32>,
    pub restarts: u64,
    pub uptime_seconds: Option<u64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WebhookCounts {
    pub accepted: u64,
    pub refused: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CheckView {
    pub at: String,
    pub ok: bool,
}

/// One integration's health, as the API returns it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct IntegrationHealth {
    pub tenant: String,
    pub integration: String,
    pub plugin: String,
    pub state: HealthState,
    /// Why, in one sentence (empty when healthy).
    pub reason: String,
    pub disabled: Option<Disabled>,
    pub last_success: Option<Moment>,
    pub last_event: Option<Moment>,
    pub consecutive_failures: u32,
    pub errors_5m: u64,
    pub errors_1h: u64,
    /// Errors among the collects, checks and webhook deliveries of the last hour.
    pub error_rate_1h: Option<f64>,
    /// Events stored per minute over the last hour, oldest first (the last is the
    /// minute under way).
    pub events_per_minute: Vec<u64>,
    pub events_1h: u64,
    pub last_error: Option<ErrorView>,
    pub freshness: Freshness,
    pub poll_interval_seconds: f64,
    pub lag_seconds: Option<f64>,
    pub breakers: Vec<BreakerView>,
    pub credentials: Vec<CredentialView>,
    pub dead_letters_15m: u64,
    pub dead_letters_24h: u64,
    /// Dead letters the tenant's queue holds now (all its integrations).
    pub tenant_dead_letters: usize,
    /// Webhook deliveries waiting for the plugin, for the whole tenant.
    pub tenant_inbox_depth: usize,
    pub webhooks_5m: WebhookCounts,
    pub process: ProcessView,
    pub last_check: Option<CheckView>,
}

/// What [`build`] reads.
pub struct Inputs<'a> {
    pub configured: &'a [Configured],
    pub facts: HashMap<InstanceKey, Facts>,
    pub processes: HashMap<InstanceKey, InstanceStatus>,
    pub credentials: &'a HashMap<(String, String), CredentialInfo>,
    pub inbox_depth: &'a dyn Fn(&str) -> usize,
    pub dead_letters_held: &'a dyn Fn(&str) -> usize,
    pub config: &'a HealthConfig,
    pub now_ms: u64,
}

fn phase_of(state: InstanceState) -> ProcessPhase {
    match state {
        InstanceState::Starting => ProcessPhase::Starting,
        InstanceState::Healthy => ProcessPhase::Running,
        InstanceState::Degraded => ProcessPhase::Degraded,
        InstanceState::Backoff => ProcessPhase::Restarting,
        InstanceState::CrashLoop => ProcessPhase::CrashLoop,
        InstanceState::Refused => ProcessPhase::Refused,
        InstanceState::Stopping | InstanceState::Stopped => ProcessPhase::Stopped,
    }
}

/// Every configured integration's health, worst first.
pub fn build(inputs: &Inputs<'_>) -> Vec<IntegrationHealth> {
    let now = inputs.now_ms;
    let mut out: Vec<IntegrationHealth> = inputs
        .configured
        .iter()
        .map(|configured| {
            let mut facts = inputs
                .facts
                .get(&configured.key)
                .cloned()
                .unwrap_or_else(|| Facts::new(&configured.plugin, now));
            let process = inputs.processes.get(&configured.key);
            if let Some(status) = process {
                facts.phase = phase_of(status.state);
                facts.pid = status.pid;
                facts.restarts = status.restarts;
                if facts.last_error().is_none()
                    && let Some(reason) = &status.last_error
                    && status.state != InstanceState::Healthy
                {
                    facts.recent_errors.push_back(LastError {
                        class: plugin_protocol::ErrorClass::Internal,
                        message: reason.clone(),
                        source: "process",
                        at_ms: plugin_kit::clock::unix_ms(status.since),
                    });
                }
            } else {
                facts.phase = ProcessPhase::Stopped;
            }
            facts.disabled.clone_from(&configured.disabled);
            facts.paused = configured.paused;
            let (state, reason) = assess(&facts, now, inputs.config);
            let events_per_minute = facts.events.last_hour(now);
            let uptime_seconds = process
                .filter(|s| s.pid.is_some())
                .map(|s| now.saturating_sub(plugin_kit::clock::unix_ms(s.since)) / 1000);
            IntegrationHealth {
                tenant: configured.key.tenant.clone(),
                integration: configured.key.integration.clone(),
                plugin: configured.plugin.clone(),
                state,
                reason,
                disabled: configured.disabled.clone(),
                last_success: moment(facts.last_success_ms, now),
                last_event: moment(facts.last_event_ms, now),
                consecutive_failures: facts.consecutive_failures,
                errors_5m: facts.errors.within(now, FIVE_MINUTES),
                errors_1h: facts.errors.within(now, ONE_HOUR),
                error_rate_1h: facts.error_rate(now),
                events_1h: events_per_minute.iter().sum(),
                events_per_minute,
                last_error: facts.last_error().map(ErrorView::of),
                freshness: facts.freshness(now),
                poll_interval_seconds: facts.poll_interval.as_secs_f64(),
                #[allow(clippy::cast_precision_loss)]
                lag_seconds: facts.lag_ms.map(|ms| ms as f64 / 1000.0),
                breakers: facts.breakers.iter().map(BreakerView::of).collect(),
                credentials: configured
                    .credentials
                    .iter()
                    .filter_map(|name| {
                        let info = inputs
                            .credentials
                            .get(&(configured.key.tenant.clone(), name.clone()))?;
                        Some(CredentialView {
                            name: info.name.clone(),
                            kind: info.kind.clone(),
                            expires_at: info.expires_ms.map(rfc3339),
                            expires_ms: info.expires_ms,
                            updated_at: rfc3339(info.updated_ms),
                        })
                    })
                    .collect(),
                dead_letters_15m: facts.dead_letters.within(now, FIFTEEN_MINUTES),
                dead_letters_24h: facts.dead_letters.within(now, ONE_DAY),
                tenant_dead_letters: (inputs.dead_letters_held)(&configured.key.tenant),
                tenant_inbox_depth: (inputs.inbox_depth)(&configured.key.tenant),
                webhooks_5m: WebhookCounts {
                    accepted: facts.webhooks_accepted.within(now, FIVE_MINUTES),
                    refused: facts.webhooks_refused.within(now, FIVE_MINUTES),
                },
                process: ProcessView {
                    state: process.map_or("stopped", |s| s.state.as_str()).to_owned(),
                    pid: facts.pid,
                    restarts: facts.restarts,
                    uptime_seconds,
                },
                last_check: facts.last_check.map(|(at, ok)| CheckView {
                    at: rfc3339(at),
                    ok,
                }),
            }
        })
        .collect();
    out.sort_by(|a, b| {
        b.state
            .badness()
            .cmp(&a.state.badness())
            .then_with(|| a.tenant.cmp(&b.tenant))
            .then_with(|| a.integration.cmp(&b.integration))
    });
    out
}
