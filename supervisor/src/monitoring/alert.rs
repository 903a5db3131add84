//! Alerts and their lifecycle, as Alertmanager has it: a condition that holds becomes a
//! `pending` alert; held for `pending_for` it `fires` (and is notified); when the
//! condition goes it is `resolved` (and notified again). While it fires it is notified
//! again every `repeat_interval`. One alert per condition (its fingerprint) at a time:
//! the same condition seen again is the same alert, not a new one.
//!
//! [`advance`] is pure: the evaluator hands it the stored alerts, what the rules see
//! now and the time; it answers with the alerts to store and the notifications to send.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use plugin_protocol::{Link, Severity};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::health::model::millis;

/// Where an alert is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    Pending,
    Firing,
    Resolved,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Firing => "firing",
            Self::Resolved => "resolved",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Pending, Self::Firing, Self::Resolved]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

/// What a rule sees now: a condition that holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    /// e.g. `integration_action_required`.
    pub rule: &'static str,
    /// `None` for the daemon's own alerts (a sink, the event log).
    pub tenant: Option<String>,
    pub integration: Option<String>,
    /// What else tells two conditions of one rule apart (a credential, a sink).
    pub subject: Option<String>,
    pub severity: Severity,
    pub summary: String,
    pub description: String,
    pub labels: BTreeMap<String, String>,
    pub links: Vec<Link>,
}

impl Condition {
    /// The identity of the condition: the same rule, tenant, integration and subject.
    pub fn fingerprint(&self) -> String {
        fingerprint(
            self.rule,
            self.tenant.as_deref(),
            self.integration.as_deref(),
            self.subject.as_deref(),
        )
    }
}

pub fn fingerprint(
    rule: &str,
    tenant: Option<&str>,
    integration: Option<&str>,
    subject: Option<&str>,
) -> String {
    let mut hash = Sha256::new();
    for part in [Some(rule), tenant, integration, subject] {
        hash.update(part.unwrap_or("").as_bytes());
        hash.update([0]);
    }
    hex::encode(&hash.finalize()[..8])
}

/// One alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Stable for the alert's life: its fingerprint and when it started pending.
    pub id: String,
    pub fingerprint: String,
    pub rule: String,
    pub tenant: Option<String>,
    pub integration: Option<String>,
    pub subject: Option<String>,
    pub severity: Severity,
    pub summary: String,
    pub description: String,
    pub labels: BTreeMap<String, String>,
    pub links: Vec<Link>,
    pub state: AlertState,
    pub pending_since_ms: u64,
    /// When it fired.
    pub started_at_ms: Option<u64>,
    pub resolved_at_ms: Option<u64>,
    /// When it was last notified (firing or a repeat).
    pub notified_at_ms: Option<u64>,
    /// How many firing notifications were sent (the first and the repeats).
    pub notifications: u32,
}

impl Alert {
    fn new(condition: &Condition, now_ms: u64) -> Self {
        let fingerprint = condition.fingerprint();
        Self {
            id: format!("{fingerprint}-{now_ms:x}"),
            fingerprint,
            rule: condition.rule.to_owned(),
            tenant: condition.tenant.clone(),
            integration: condition.integration.clone(),
            subject: condition.subject.clone(),
            severity: condition.severity,
            summary: condition.summary.clone(),
            description: condition.description.clone(),
            labels: condition.labels.clone(),
            links: condition.links.clone(),
            state: AlertState::Pending,
            pending_since_ms: now_ms,
            started_at_ms: None,
            resolved_at_ms: None,
            notified_at_ms: None,
            notifications: 0,
        }
    }

    /// What the rule says now, kept current while the alert lives.
    fn refresh(&mut self, condition: &Condition) {
        self.severity = condition.severity;
        self.summary.clone_from(&condition.summary);
        self.description.clone_from(&condition.description);
        self.labels.clone_from(&condition.labels);
        self.links.clone_from(&condition.links);
    }
}

/// Why a notification is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationKind {
    Firing,
    /// Still firing after the repeat interval.
    Repeat,
    Resolved,
    /// `integrationctl alerts test`.
    Test,
}

impl NotificationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Firing => "firing",
            Self::Repeat => "repeat",
            Self::Resolved => "resolved",
            Self::Test => "test",
        }
    }
}

/// A notification of one alert at one moment of its life.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// The receiver's idempotency key: the same for every attempt to send it.
    pub key: String,
    pub kind: NotificationKind,
    pub alert: Alert,
    pub created_ms: u64,
}

/// The lifecycle's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifecycle {
    pub pending_for: Duration,
    pub repeat_interval: Duration,
}

/// What changes: alerts to store and notifications to send.
#[derive(Debug, Default, PartialEq)]
pub struct Advance {
    pub changed: Vec<Alert>,
    pub notifications: Vec<Notification>,
}

fn notification(alert: &Alert, kind: NotificationKind, now_ms: u64) -> Notification {
    let key = match kind {
        NotificationKind::Repeat => format!("{}:repeat:{}", alert.id, alert.notifications),
        other => format!("{}:{}", alert.id, other.as_str()),
    };
    Notification {
        key,
        kind,
        alert: alert.clone(),
        created_ms: now_ms,
    }
}

/// What cannot be told now: the live alerts it covers are kept as they are, neither
/// resolved nor notified again. After a restart the daemon knows nothing of an
/// integration until it runs, and clocks that make alerts fire (a breaker open for 5
/// minutes) start over: their alerts must not resolve for that.
#[derive(Debug, Default)]
pub struct Keep {
    /// Alerts whose cause is still there though it would not fire anew yet.
    pub fingerprints: std::collections::HashSet<String>,
    /// (tenant, integration) whose health is not known yet.
    pub integrations: std::collections::HashSet<(String, String)>,
}

impl Keep {
    fn covers(&self, alert: &Alert) -> bool {
        self.fingerprints.contains(&alert.fingerprint)
            || alert
                .tenant
                .as_ref()
                .zip(alert.integration.as_ref())
                .is_some_and(|(t, i)| self.integrations.contains(&(t.clone(), i.clone())))
    }
}

/// Moves the live alerts (pending and firing, by fingerprint) on, given the conditions
/// that hold now (with nothing to keep).
#[cfg(test)]
pub fn advance(
    live: &HashMap<String, Alert>,
    conditions: &[Condition],
    now_ms: u64,
    lifecycle: Lifecycle,
) -> Advance {
    advance_keeping(live, conditions, &Keep::default(), now_ms, lifecycle)
}

/// Moves the live alerts (pending and firing, by fingerprint) on, given the conditions
/// that hold now, keeping what `keep` covers.
pub fn advance_keeping(
    live: &HashMap<String, Alert>,
    conditions: &[Condition],
    keep: &Keep,
    now_ms: u64,
    lifecycle: Lifecycle,
) -> Advance {
    let mut out = Advance::default();
    let mut held = std::collections::HashSet::new();
    for condition in conditions {
        let fingerprint = condition.fingerprint();
        if !held.insert(fingerprint.clone()) {
            continue;
        }
        let mut alert = match live.get(&fingerprint) {
            Some(alert) => {
                let mut alert = alert.clone();
                alert.refresh(condition);
                alert
            }
            None => Alert::new(condition, now_ms),
        };
        let before = live.get(&fingerprint);
        match alert.state {
            AlertState::Pending
                if now_ms.saturating_sub(alert.pending_since_ms)
                    >= millis(lifecycle.pending_for) =>
            {
                alert.state = AlertState::Firing;
                alert.started_at_ms = Some(now_ms);
                alert.notified_at_ms = Some(now_ms);
                alert.notifications = 1;
                out.notifications
                    .push(notification(&alert, NotificationKind::Firing, now_ms));
            }
            AlertState::Firing
                if !lifecycle.repeat_interval.is_zero()
                    && now_ms.saturating_sub(alert.notified_at_ms.unwrap_or(now_ms))
                        >= millis(lifecycle.repeat_interval) =>
            {
                alert.notified_at_ms = Some(now_ms);
                alert.notifications += 1;
                out.notifications
                    .push(notification(&alert, NotificationKind::Repeat, now_ms));
            }
            _ => {}
        }
        if before != Some(&alert) {
            out.changed.push(alert);
        }
    }
    for (fingerprint, alert) in live {
        if held.contains(fingerprint) || keep.covers(alert) {
            continue;
        }
        let mut alert = alert.clone();
        let was_firing = alert.state == AlertState::Firing;
        alert.state = AlertState::Resolved;
        alert.resolved_at_ms = Some(now_ms);
        // A pending alert that never fired goes quietly.
        if was_firing {
            out.notifications
                .push(notification(&alert, NotificationKind::Resolved, now_ms));
        }
        out.changed.push(alert);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn condition(summary: &str) -> Condition {
        Condition {
            rule: "integration_action_required",
            tenant: Some("acme".into()),
            integration: Some("gh".into()),
            subject: None,
            severity: Severity::Error,
            summary: summary.into(),
            description: String::new(),
            labels: BTreeMap::new(),
            links: Vec::new(),
        }
    }

    #[test]
    fn what_cannot_be_told_yet_is_kept_firing_and_not_notified_again() {
        let life = Lifecycle {
            pending_for: Duration::ZERO,
            repeat_interval: Duration::ZERO,
        };
        let mut live = HashMap::new();
        let fired = advance(&live, &[condition("x")], 0, life);
        apply(&mut live, &fired);
        // Restarted: the integration is starting, its condition not seen yet.
        let keep = Keep {
            integrations: [("acme".to_owned(), "gh".to_owned())].into(),
            ..Keep::default()
        };
        let kept = advance_keeping(&live, &[], &keep, 1_000, life);
        assert!(kept.changed.is_empty() && kept.notifications.is_empty());
        let again = advance_keeping(&live, &[condition("x")], &keep, 2_000, life);
        assert!(
            again.notifications.is_empty(),
            "still the same firing alert"
        );
        // Known again, and the cause gone: resolved once.
        let resolved = advance(&live, &[], 3_000, life);
        assert_eq!(resolved.notifications.len(), 1);
        assert_eq!(resolved.notifications[0].kind, NotificationKind::Resolved);
    }

    fn apply(live: &mut HashMap<String, Alert>, advance: &Advance) {
        for alert in &advance.changed {
            if alert.state == AlertState::Resolved {
                live.remove(&alert.fingerprint);
            } else {
                live.insert(alert.fingerprint.clone(), alert.clone());
            }
        }
    }

    const LIFE: Lifecycle = Lifecycle {
        pending_for: Duration::from_secs(60),
        repeat_interval: Duration::from_secs(3600),
    };

    #[test]
    fn pending_then_firing_then_repeated_then_resolved_each_notified_once() {
        let mut live = HashMap::new();
        let held = [condition("auth error")];
        let t0 = 1_000_000;
        let first = advance(&live, &held, t0, LIFE);
        assert_eq!(first.changed[0].state, AlertState::Pending);
        assert!(first.notifications.is_empty());
        apply(&mut live, &first);
        // Still pending: nothing changes, nothing is sent.
        let quiet = advance(&live, &held, t0 + 30_000, LIFE);
        assert_eq!(quiet, Advance::default());
        let fired = advance(&live, &held, t0 + 60_000, LIFE);
        assert_eq!(fired.notifications.len(), 1);
        assert_eq!(fired.notifications[0].kind, NotificationKind::Firing);
        let id = fired.changed[0].id.clone();
        assert_eq!(fired.notifications[0].key, format!("{id}:firing"));
        apply(&mut live, &fired);
        // Evaluated again while firing: deduplicated.
        assert!(
            advance(&live, &held, t0 + 61_000, LIFE)
                .notifications
                .is_empty()
        );
        let repeat = advance(&live, &held, t0 + 60_000 + 3_600_000, LIFE);
        assert_eq!(repeat.notifications[0].kind, NotificationKind::Repeat);
        assert_eq!(repeat.notifications[0].key, format!("{id}:repeat:2"));
        apply(&mut live, &repeat);
        let resolved = advance(&live, &[], t0 + 4_000_000, LIFE);
        assert_eq!(resolved.changed[0].state, AlertState::Resolved);
        assert_eq!(resolved.changed[0].id, id, "the same alert, resolved");
        assert_eq!(resolved.notifications[0].key, format!("{id}:resolved"));
        apply(&mut live, &resolved);
        assert!(live.is_empty());
        // The condition again later: a new alert with a new id.
        let again = advance(&live, &held, t0 + 5_000_000, LIFE);
        assert_ne!(again.changed[0].id, id);
        assert_eq!(
            again.changed[0].fingerprint,
            resolved.changed[0].fingerprint
        );
    }

    #[test]
    fn a_pending_alert_that_goes_is_resolved_without_a_notification() {
        let mut live = HashMap::new();
        let first = advance(&live, &[condition("x")], 0, LIFE);
        apply(&mut live, &first);
        let gone = advance(&live, &[], 10_000, LIFE);
        assert_eq!(gone.changed[0].state, AlertState::Resolved);
        assert!(gone.notifications.is_empty());
    }

    #[test]
    fn with_no_pending_time_it_fires_at_once_and_keeps_its_summary_current() {
        let life = Lifecycle {
            pending_for: Duration::ZERO,
            ..LIFE
        };
        let mut live = HashMap::new();
        let fired = advance(&live, &[condition("one")], 5, life);
        assert_eq!(fired.changed[0].state, AlertState::Firing);
        apply(&mut live, &fired);
        let changed = advance(&live, &[condition("two")], 6, life);
        assert_eq!(changed.changed[0].summary, "two");
        assert!(changed.notifications.is_empty());
    }
}
