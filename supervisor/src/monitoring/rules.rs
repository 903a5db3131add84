//! The built-in alert rules: each looks at the integrations' health and the daemon's
//! own (sinks, the event log) and names the conditions that hold now. No configuration
//! is needed; thresholds come from `[alerts]` and `[pipeline]`.
//!
//! | rule | when | severity |
//! | --- | --- | --- |
//! | `integration_action_required` | an auth, permission or config error | error |
//! | `integration_failing` | failures past `health.failing_after`, a breaker open | error |
//! | `integration_disabled` | disabled by the daemon (refusals) | error |
//! | `credential_failed` | disabled because its credential failed or expired | error |
//! | `plugin_crash_loop` | its plugin restarts too often | critical |
//! | `credential_expiring_7d` / `_1d` | a credential expires within 7 days / 1 day | warning / error |
//! | `breaker_open` | a dependency's breaker open for 5 minutes | warning |
//! | `data_stale` | no successful collect for 5 poll intervals | warning |
//! | `dead_letters_growing` | `alerts.dead_letters_per_15m` dead letters in 15 minutes, while the queue holds them (a purge or replay resolves it) | warning |
//! | `event_log_backlog` | the event log at 80% of its quota | error |
//! | `sink_failing` | a sink failing for 5 minutes | error |
//! | `source_failing` | a JetStream source failing for 5 minutes | error |
//! | `upkeep_failing` | an upkeep task of the state (the correlation index's retention) failing for 5 minutes | error |
//! | `node_lost` | a node of the cluster not heard from for `cluster.node_timeout` | error with tenants placed on it, else warning |

use std::collections::{BTreeMap, BTreeSet};

use plugin_protocol::{Link, Severity};

use super::alert::{Condition, Keep, fingerprint};
use super::view::IntegrationHealth;
use crate::cluster::NodeStatus;
use crate::health::{Freshness, HealthState};
use crate::pipeline::sinks::SinkStatus;

const DAY_MS: u64 = 86_400_000;
const FIVE_MINUTES_MS: u64 = 300_000;

/// The daemon's own facts the rules read.
#[derive(Debug, Clone, Default)]
pub struct DaemonFacts {
    pub sinks: Vec<SinkStatus>,
    /// The JetStream sources.
    pub sources: Vec<SinkStatus>,
    /// The upkeep tasks of the state (the correlation index's retention).
    pub upkeep: Vec<SinkStatus>,
    /// The cluster's nodes (`[cluster]`).
    pub nodes: Vec<NodeStatus>,
    pub log_bytes: u64,
    pub log_quota_bytes: u64,
}

/// The thresholds the rules take.
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    pub dead_letters_per_15m: u64,
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn integration_condition(
    health: &IntegrationHealth,
    rule: &'static str,
    severity: Severity,
    summary: String,
    description: String,
) -> Condition {
    let mut pairs = vec![("plugin", health.plugin.as_str())];
    if let Some(error) = &health.last_error {
        pairs.push(("class", error.class.as_str()));
    }
    Condition {
        rule,
        tenant: Some(health.tenant.clone()),
        integration: Some(health.integration.clone()),
        subject: None,
        severity,
        summary,
        description,
        labels: labels(&pairs),
        links: vec![Link {
            rel: "health".to_owned(),
            title: Some(format!(
                "health of {}/{}",
                health.tenant, health.integration
            )),
            url: format!(
                "/v1/health?tenant={}&integration={}",
                health.tenant, health.integration
            ),
        }],
    }
}

/// What the rules cannot tell now (see [`Keep`]): integrations still starting, breakers
/// still open and sinks still failing, whatever their clocks say.
pub fn keep(integrations: &[IntegrationHealth], daemon: &DaemonFacts) -> Keep {
    let mut keep = Keep::default();
    for health in integrations {
        if health.state == HealthState::Starting {
            keep.integrations
                .insert((health.tenant.clone(), health.integration.clone()));
        }
        for breaker in health.breakers.iter().filter(|b| b.open_since_ms.is_some()) {
            keep.fingerprints.insert(fingerprint(
                "breaker_open",
                Some(&health.tenant),
                Some(&health.integration),
                Some(&breaker.name),
            ));
        }
    }
    let failing = [
        ("sink_failing", &daemon.sinks),
        ("source_failing", &daemon.sources),
        ("upkeep_failing", &daemon.upkeep),
    ];
    for (rule, statuses) in failing {
        for status in statuses.iter().filter(|s| s.failing_since_ms.is_some()) {
            keep.fingerprints
                .insert(fingerprint(rule, None, None, Some(&status.name)));
        }
    }
    keep
}

/// The conditions that hold now.
pub fn evaluate(
    integrations: &[IntegrationHealth],
    daemon: &DaemonFacts,
    thresholds: Thresholds,
    now_ms: u64,
) -> Vec<Condition> {
    let mut out = Vec::new();
    let mut credentials_seen = BTreeSet::new();
    for health in integrations {
        let name = format!("{}/{}", health.tenant, health.integration);
        // An integration the daemon disabled for its refusals still needs the person
        // the first alert called: that alert resolves when the cause goes, not when
        // the daemon stops trying.
        let disabled_by_health = health.disabled.as_ref().is_some_and(|d| d.by == "health");
        match health.state {
            HealthState::ActionRequired => out.push(integration_condition(
                health,
                "integration_action_required",
                Severity::Error,
                format!("{name} needs a person: {}", health.reason),
                "An authentication, permission or configuration error: retrying cannot help. Fix the credential or the configuration; the integration recovers by itself once its check passes.".to_owned(),
            )),
            HealthState::Disabled if disabled_by_health => out.push(integration_condition(
                health,
                "integration_action_required",
                Severity::Error,
                format!("{name} needs a person: {}", health.reason),
                "An authentication, permission or configuration error disabled it: retrying cannot help. Fix the credential or the configuration; the integration comes back by itself once its check passes.".to_owned(),
            )),
            HealthState::Failing => out.push(integration_condition(
                health,
                "integration_failing",
                Severity::Error,
                format!("{name} is failing: {}", health.reason),
                "Errors persist past the threshold; collects back off until they succeed.".to_owned(),
            )),
            _ => {}
        }
        if let Some(disabled) = &health.disabled {
            if disabled.by == "health" {
                out.push(integration_condition(
                    health,
                    "integration_disabled",
                    Severity::Error,
                    format!("{name} was disabled by the daemon"),
                    disabled.reason.clone(),
                ));
            } else if let Some(credential) = disabled.by.strip_prefix("credential:") {
                let mut condition = integration_condition(
                    health,
                    "credential_failed",
                    Severity::Error,
                    format!("{name} is disabled: credential `{credential}` failed"),
                    disabled.reason.clone(),
                );
                condition.subject = Some(credential.to_owned());
                condition
                    .labels
                    .insert("credential".to_owned(), credential.to_owned());
                out.push(condition);
            }
        }
        if health.process.state == "crash-loop" {
            out.push(integration_condition(
                health,
                "plugin_crash_loop",
                Severity::Critical,
                format!(
                    "the {} plugin of {name} is crash-looping ({} restarts)",
                    health.plugin, health.process.restarts
                ),
                health
                    .last_error
                    .as_ref()
                    .map(|e| e.message.clone())
                    .unwrap_or_default(),
            ));
        }
        // Stale data is the consequence of any other integration alert: only raised
        // on its own, when nothing else explains it (an inhibition, as Alertmanager's).
        let explained = matches!(
            health.state,
            HealthState::ActionRequired | HealthState::Failing | HealthState::Disabled
        ) || health.process.state == "crash-loop";
        if health.freshness == Freshness::Stale && !explained {
            out.push(integration_condition(
                health,
                "data_stale",
                Severity::Warning,
                format!(
                    "{name} has not collected for {}s (polls every {})",
                    health.last_success.as_ref().map_or(0, |m| m.age_seconds),
                    humantime::format_duration(std::time::Duration::from_millis(
                        (health.poll_interval_seconds * 1000.0) as u64
                    ))
                ),
                "Data is stale: no collect succeeded for five poll intervals.".to_owned(),
            ));
        }
        if thresholds.dead_letters_per_15m > 0
            && health.dead_letters_15m >= thresholds.dead_letters_per_15m
            && health.tenant_dead_letters > 0
        {
            out.push(integration_condition(
                health,
                "dead_letters_growing",
                Severity::Warning,
                format!(
                    "{name}: {} dead letters in 15 minutes",
                    health.dead_letters_15m
                ),
                format!(
                    "Events fail validation; see `integrationctl dlq list --tenant {}`.",
                    health.tenant
                ),
            ));
        }
        for breaker in &health.breakers {
            if breaker
                .open_since_ms
                .is_some_and(|since| now_ms.saturating_sub(since) >= FIVE_MINUTES_MS)
            {
                let mut condition = integration_condition(
                    health,
                    "breaker_open",
                    Severity::Warning,
                    format!(
                        "{name}: circuit breaker for {} open for 5 minutes",
                        breaker.name
                    ),
                    breaker.detail.clone(),
                );
                condition.subject = Some(breaker.name.clone());
                out.push(condition);
            }
        }
        for credential in &health.credentials {
            let Some(expires) = credential.expires_ms else {
                continue;
            };
            if !credentials_seen.insert((health.tenant.clone(), credential.name.clone())) {
                continue;
            }
            let left = expires.saturating_sub(now_ms);
            for (rule, window, severity) in [
                ("credential_expiring_7d", 7 * DAY_MS, Severity::Warning),
                ("credential_expiring_1d", DAY_MS, Severity::Error),
            ] {
                if left <= window {
                    out.push(Condition {
                        rule,
                        tenant: Some(health.tenant.clone()),
                        integration: None,
                        subject: Some(credential.name.clone()),
                        severity,
                        summary: format!(
                            "credential `{}` of tenant {} expires {}",
                            credential.name,
                            health.tenant,
                            credential.expires_at.as_deref().unwrap_or("soon")
                        ),
                        description:
                            "Store a renewed secret with `integrationctl credentials rotate`."
                                .to_owned(),
                        labels: labels(&[
                            ("credential", &credential.name),
                            ("kind", &credential.kind),
                        ]),
                        links: Vec::new(),
                    });
                }
            }
        }
    }
    if daemon.log_quota_bytes > 0
        && daemon.log_bytes.saturating_mul(5) >= daemon.log_quota_bytes.saturating_mul(4)
    {
        out.push(Condition {
            rule: "event_log_backlog",
            tenant: None,
            integration: None,
            subject: None,
            severity: Severity::Error,
            summary: format!(
                "the event log holds {} of its {} byte quota",
                daemon.log_bytes, daemon.log_quota_bytes
            ),
            description: "A sink is not keeping up; at the quota, collection pauses and webhooks are answered 503.".to_owned(),
            labels: BTreeMap::new(),
            links: Vec::new(),
        });
    }
    let kinds = [
        ("sink_failing", "sink", &daemon.sinks),
        ("source_failing", "source", &daemon.sources),
        ("upkeep_failing", "upkeep", &daemon.upkeep),
    ];
    for (rule, kind, statuses) in kinds {
        for status in statuses.iter().filter(|status| {
            status
                .failing_since_ms
                .is_some_and(|since| now_ms.saturating_sub(since) >= FIVE_MINUTES_MS)
        }) {
            out.push(Condition {
                rule,
                tenant: None,
                integration: None,
                subject: Some(status.name.clone()),
                severity: Severity::Error,
                summary: format!("{kind} `{}` has been failing for 5 minutes", status.name),
                description: status.last_error.clone().unwrap_or_default(),
                labels: labels(&[(kind, &status.name)]),
                links: Vec::new(),
            });
        }
    }
    for node in daemon.nodes.iter().filter(|node| node.state == "lost") {
        let (severity, consequence) = if node.tenants.is_empty() {
            (Severity::Warning, "No tenant is placed on it.".to_owned())
        } else {
            (
                Severity::Error,
                format!(
                    "Requests for its {} tenant(s) forwarded to it fail with 503 until it is back or they are moved: {}.",
                    node.tenants.len(),
                    node.tenants.join(", ")
                ),
            )
        };
        out.push(Condition {
            rule: "node_lost",
            tenant: None,
            integration: None,
            subject: Some(node.name.clone()),
            severity,
            summary: format!("cluster node `{}` is lost", node.name),
            description: match node.silent_seconds {
                Some(seconds) => format!("Not heard from for {seconds} s. {consequence}"),
                None => format!("Named by placements, but never heard from. {consequence}"),
            },
            labels: labels(&[("node", &node.name)]),
            links: Vec::new(),
        });
    }

    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000_000;

    fn sink(failing_for_ms: Option<u64>) -> SinkStatus {
        SinkStatus {
            name: "http".to_owned(),
            failing_since_ms: failing_for_ms.map(|ms| NOW - ms),
            last_error: Some("HTTP 503".to_owned()),
            delivered_events: 0,
            failures: 3,
        }
    }

    fn rules_of(daemon: &DaemonFacts) -> Vec<&'static str> {
        evaluate(
            &[],
            daemon,
            Thresholds {
                dead_letters_per_15m: 10,
            },
            NOW,
        )
        .iter()
        .map(|c| c.rule)
        .collect()
    }

    #[test]
    fn a_lost_node_alerts_as_an_error_when_tenants_are_placed_on_it() {
        let node = |name: &str, state: &'static str, tenants: &[&str]| NodeStatus {
            name: name.to_owned(),
            address: Some(format!("http://{name}")),
            state,
            silent_seconds: Some(45),
            tenants: tenants.iter().map(|t| (*t).to_owned()).collect(),
        };
        let daemon = DaemonFacts {
            nodes: vec![
                node("a", "alive", &["acme"]),
                node("b", "lost", &["globex", "initech"]),
                node("c", "lost", &[]),
            ],
            ..DaemonFacts::default()
        };
        let conditions = evaluate(
            &[],
            &daemon,
            Thresholds {
                dead_letters_per_15m: 10,
            },
            NOW,
        );
        let lost: Vec<_> = conditions
            .iter()
            .map(|c| (c.rule, c.subject.as_deref(), c.severity))
            .collect();
        assert_eq!(
            lost,
            [
                ("node_lost", Some("b"), Severity::Error),
                ("node_lost", Some("c"), Severity::Warning),
            ]
        );
        assert!(
            conditions[0].description.contains("globex, initech"),
            "{}",
            conditions[0].description
        );
    }

    #[test]
    fn a_sink_alerts_after_five_minutes_of_failures_and_is_kept_while_it_fails() {
        let four_minutes = DaemonFacts {
            sinks: vec![sink(Some(240_000))],
            ..DaemonFacts::default()
        };
        assert!(rules_of(&four_minutes).is_empty());
        let five_minutes = DaemonFacts {
            sinks: vec![sink(Some(FIVE_MINUTES_MS))],
            ..DaemonFacts::default()
        };
        assert_eq!(rules_of(&five_minutes), ["sink_failing"]);
        let source_down = DaemonFacts {
            sources: vec![sink(Some(FIVE_MINUTES_MS))],
            ..DaemonFacts::default()
        };
        assert_eq!(rules_of(&source_down), ["source_failing"]);
        let upkeep_failing = DaemonFacts {
            upkeep: vec![sink(Some(FIVE_MINUTES_MS))],
            ..DaemonFacts::default()
        };
        assert_eq!(rules_of(&upkeep_failing), ["upkeep_failing"]);
        assert!(
            keep(&[], &upkeep_failing)
                .fingerprints
                .contains(&fingerprint("upkeep_failing", None, None, Some("http")))
        );
        // After a restart its clock starts over, but a failing sink's alert stays.
        let keep = keep(&[], &four_minutes);
        assert!(
            keep.fingerprints
                .contains(&fingerprint("sink_failing", None, None, Some("http")))
        );
        assert!(
            super::keep(
                &[],
                &DaemonFacts {
                    sinks: vec![sink(None)],
                    ..DaemonFacts::default()
                }
            )
            .fingerprints
            .is_empty()
        );
    }

    #[test]
    fn the_event_log_alerts_at_80_percent_of_its_quota() {
        let at = |bytes| DaemonFacts {
            log_bytes: bytes,
            log_quota_bytes: 1000,
            ..DaemonFacts::default()
        };
        assert!(rules_of(&at(799)).is_empty());
        assert_eq!(rules_of(&at(800)), ["event_log_backlog"]);
        let no_quota = DaemonFacts {
            log_bytes: u64::MAX,
            ..DaemonFacts::default()
        };
        assert!(rules_of(&no_quota).is_empty());
    }
}
