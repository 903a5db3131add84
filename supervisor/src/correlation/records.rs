//! What the correlation index keeps of an event, and its keys. Pure: reads an event's
//! JSON, writes bytes.
//!
//! Keys are `tenant \0 part \0 part … \0 time(8 bytes, big-endian) \0 id`, so that one
//! tenant's entries for one service and environment are contiguous and in time order,
//! and a lookup "before time T" is one reverse range scan.

use plugin_protocol::Severity;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::store::Table;

/// The trees of the index: what a rebuild empties and fills for a tenant, and what
/// retention prunes.
pub const INDEX_TABLES: [Table; 6] = [
    Table::Deliveries,
    Table::Commits,
    Table::Pulls,
    Table::AlarmStates,
    Table::Failures,
    Table::Resolutions,
];

/// Where an index table's entries carry their time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeLayout {
    /// In the key, after `parts` key parts ([`time_key`]): oldest first in a group.
    Ascending { parts: usize },
    /// In the key, after `parts` key parts ([`newest_first_key`]): newest first.
    Descending { parts: usize },
    /// In the value's `time_ms` (keys name the thing, not the time).
    InValue,
}

/// How `table` (one of [`INDEX_TABLES`]) keeps its entries' times; the one place that
/// knows, next to [`IndexEntry::write`] and the failures' key.
pub fn time_layout(table: Table) -> TimeLayout {
    match table {
        Table::Deliveries => TimeLayout::Descending { parts: 3 },
        Table::Commits => TimeLayout::Ascending { parts: 2 },
        Table::AlarmStates | Table::Failures => TimeLayout::Ascending { parts: 3 },
        _ => TimeLayout::InValue,
    }
}

/// The group of `key` (its first `parts` parts with their separators): keys of one
/// group differ only in time and id. `None` when the key has fewer parts.
pub fn group_of(key: &[u8], parts: usize) -> Option<&[u8]> {
    let mut end = 0;
    for _ in 0..parts {
        end += key.get(end..)?.iter().position(|b| *b == 0)? + 1;
    }
    Some(&key[..end])
}

/// The first key after every key that starts with `group` (which ends with the
/// separator).
pub fn after_group(group: &[u8]) -> Vec<u8> {
    let mut next = group.to_vec();
    if let Some(last) = next.last_mut() {
        *last = 1;
    }
    next
}

/// A delivery: a deployment (or its success), a release, a merge, a push.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    pub id: String,
    /// `deployment`, `release`, `pull_request`, `push`.
    pub kind: String,
    pub integration: String,
    pub time_ms: u64,
    pub service: String,
    pub environment: String,
    /// Deployments: the repository-scoped deployment id (a created event and its success
    /// share it).
    pub deployment: Option<String>,
    pub revision: Option<String>,
    pub repository: Option<String>,
    pub url: Option<String>,
    pub commit_url: Option<String>,
}

/// A commit seen in a push.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommitRecord {
    pub sha: String,
    pub integration: String,
    pub time_ms: u64,
    pub message: Option<String>,
    pub author: Option<String>,
    pub url: Option<String>,
}

/// A merged pull request, found by its merge commit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PullRecord {
    pub number: Option<u64>,
    pub title: Option<String>,
    pub url: Option<String>,
    /// When it was merged, for retention (records indexed before it was kept have
    /// none; retention stamps them when it first sees them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_ms: Option<u64>,
}

/// One alarm state transition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlarmRecord {
    pub id: String,
    pub integration: String,
    pub arn: String,
    pub name: String,
    /// `ALARM`, `OK`, `INSUFFICIENT_DATA`.
    pub state: String,
    pub time_ms: u64,
    pub url: Option<String>,
}

/// What an event adds to the index.
#[derive(Debug, Clone, PartialEq)]
pub enum IndexEntry {
    Delivery(DeliveryRecord),
    Commit {
        repository: String,
        record: CommitRecord,
    },
    Pull {
        repository: String,
        merge_sha: String,
        record: PullRecord,
    },
    Alarm {
        service: String,
        record: AlarmRecord,
    },
    /// An incident or alarm resolved: `com.betalogs.{system|security}.*.resolved` with a
    /// correlation id.
    Resolution {
        correlation: String,
        record: ResolutionRecord,
    },
}

/// When what a correlation id names was resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolutionRecord {
    pub id: String,
    pub time_ms: u64,
}

impl IndexEntry {
    /// The table, key and value this entry is stored as.
    pub fn write(&self, tenant: &str) -> super::IndexWrite {
        // Serializing these plain records cannot fail.
        let json = |v: &dyn erased::Json| v.to_vec();
        match self {
            Self::Delivery(r) => (
                Table::Deliveries,
                newest_first_key(&[tenant, &r.service, &r.environment], r.time_ms, &r.id),
                json(r),
            ),
            Self::Commit { repository, record } => (
                Table::Commits,
                time_key(&[tenant, repository], record.time_ms, &record.sha),
                json(record),
            ),
            Self::Pull {
                repository,
                merge_sha,
                record,
            } => (
                Table::Pulls,
                prefix(&[tenant, repository, merge_sha]),
                json(record),
            ),
            Self::Alarm { service, record } => (
                Table::AlarmStates,
                time_key(&[tenant, service, &record.arn], record.time_ms, &record.id),
                json(record),
            ),
            // The latest resolution wins: a reopened and resolved again incident was
            // restored when it was resolved the last time.
            Self::Resolution {
                correlation,
                record,
            } => (
                Table::Resolutions,
                prefix(&[tenant, correlation]),
                json(record),
            ),
        }
    }
}

mod erased {
    /// Object-safe serialization for the records.
    pub trait Json {
        fn to_vec(&self) -> Vec<u8>;
    }
    impl<T: serde::Serialize> Json for T {
        fn to_vec(&self) -> Vec<u8> {
            serde_json::to_vec(self).unwrap_or_default()
        }
    }
}

/// `a \0 b \0 … \0`.
pub fn prefix(parts: &[&str]) -> Vec<u8> {
    let mut key = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum::<usize>() + 10);
    for part in parts {
        key.extend_from_slice(part.as_bytes());
        key.push(0);
    }
    key
}

/// `prefix(parts) time \0 id`.
pub fn time_key(parts: &[&str], time_ms: u64, id: &str) -> Vec<u8> {
    let mut key = prefix(parts);
    key.extend_from_slice(&time_ms.to_be_bytes());
    key.push(0);
    key.extend_from_slice(id.as_bytes());
    key
}

/// `prefix(parts) (u64::MAX - time) \0 id`: newest first in key order. Lookups of
/// "the latest before T" read forwards, which sled does much faster than backwards.
pub fn newest_first_key(parts: &[&str], time_ms: u64, id: &str) -> Vec<u8> {
    time_key(parts, u64::MAX - time_ms, id)
}

/// The range of every key of `prefix` made by [`newest_first_key`] with a time in
/// `from..=to`, newest first.
pub fn newest_first_range(prefix: &[u8], from_ms: u64, to_ms: u64) -> (Vec<u8>, Vec<u8>) {
    time_range(prefix, u64::MAX - to_ms, u64::MAX - from_ms)
}

/// The time in a key made by [`time_key`] under `prefix_len` bytes of prefix.
pub fn key_time(key: &[u8], prefix_len: usize) -> Option<u64> {
    let bytes: [u8; 8] = key.get(prefix_len..prefix_len + 8)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// The range `[prefix + from, prefix + to + 0xff]`: every key of `prefix` whose time
/// is in `from..=to`.
pub fn time_range(prefix: &[u8], from_ms: u64, to_ms: u64) -> (Vec<u8>, Vec<u8>) {
    let mut start = prefix.to_vec();
    start.extend_from_slice(&from_ms.to_be_bytes());
    let mut end = prefix.to_vec();
    end.extend_from_slice(&to_ms.to_be_bytes());
    end.push(0xff);
    (start, end)
}

fn text<'a>(value: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut at = value;
    for key in path {
        at = at.get(*key)?;
    }
    at.as_str()
}

/// A data field: `data["service.name"]`.
pub fn field<'a>(event: &'a Value, name: &str) -> Option<&'a str> {
    event.get("data")?.get(name)?.as_str()
}

/// The first link of `event` whose rel is one of `rels`, in that order of preference.
pub fn link<'a>(event: &'a Value, rels: &[&str]) -> Option<&'a str> {
    let links = event.get("data")?.get("links")?.as_array()?;
    rels.iter().find_map(|rel| {
        links
            .iter()
            .find(|l| l.get("rel").and_then(Value::as_str) == Some(rel))
            .and_then(|l| l.get("url")?.as_str())
    })
}

/// Key parts must not contain the separator.
fn clean(part: &str) -> Option<&str> {
    (!part.contains('\0') && part.len() <= 512).then_some(part)
}

/// What `event` (valid, of `tenant`) adds to the index.
pub fn index_entries(event: &Value, time_ms: u64) -> Vec<IndexEntry> {
    let Some(event_type) = text(event, &["type"]) else {
        return Vec::new();
    };
    // Most events (metrics, log lines) add nothing: no work for them.
    let resolution = is_resolution(event_type);
    if !event_type.starts_with("com.betalogs.delivery.")
        && alarm_state(event_type).is_none()
        && !resolution
    {
        return Vec::new();
    }
    let id = text(event, &["id"]).unwrap_or_default().to_owned();
    let integration = text(event, &["integration"]).unwrap_or_default().to_owned();
    let service = field(event, "service.name").and_then(clean);
    let repository = field(event, "vcs.repository.name")
        .and_then(clean)
        .map(str::to_ascii_lowercase);
    let revision = field(event, "vcs.ref.head.revision").map(str::to_owned);
    let mut entries = Vec::new();
    if let Some(kind) = event_type.strip_prefix("com.betalogs.delivery.") {
        let delivery_kind = match kind {
            "deployment" | "deployment.succeeded" => Some("deployment"),
            "release" => Some("release"),
            "pull_request.merged" => Some("pull_request"),
            "push"
                if event.get("data").and_then(|d| d.get("vcs.ref.default"))
                    == Some(&Value::Bool(true)) =>
            {
                Some("push")
            }
            _ => None,
        };
        if let (Some(kind), Some(service)) = (delivery_kind, service) {
            let environment = field(event, "deployment.environment")
                .and_then(clean)
                .unwrap_or_default();
            entries.push(IndexEntry::Delivery(DeliveryRecord {
                id: id.clone(),
                kind: kind.to_owned(),
                integration: integration.clone(),
                time_ms,
                service: service.to_owned(),
                environment: environment.to_owned(),
                deployment: event
                    .get("data")
                    .and_then(|d| d.get("deployment.id"))
                    .map(|v| match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .map(|d| format!("{}#{d}", repository.as_deref().unwrap_or(service))),
                revision: revision.clone(),
                repository: repository.clone(),
                url: link(
                    event,
                    &[
                        "deployment_target",
                        "deployment_log",
                        "deployments",
                        "release",
                        "pull_request",
                        "compare",
                    ],
                )
                .or_else(|| link(event, &["commit"]))
                .map(str::to_owned),
                commit_url: link(event, &["commit"]).map(str::to_owned),
            }));
        }
        if kind == "commit"
            && let (Some(repository), Some(sha)) =
                (&repository, revision.as_deref().and_then(clean))
        {
            entries.push(IndexEntry::Commit {
                repository: repository.clone(),
                record: CommitRecord {
                    sha: sha.to_owned(),
                    integration: integration.clone(),
                    time_ms,
                    message: field(event, "vcs.commit.message").map(str::to_owned),
                    author: field(event, "vcs.commit.author")
                        .or_else(|| field(event, "vcs.actor"))
                        .map(str::to_owned),
                    url: link(event, &["commit"]).map(str::to_owned),
                },
            });
        }
        if kind == "pull_request.merged"
            && let (Some(repository), Some(merge_sha)) = (
                &repository,
                field(event, "vcs.change.merge_commit").and_then(clean),
            )
        {
            entries.push(IndexEntry::Pull {
                repository: repository.clone(),
                merge_sha: merge_sha.to_owned(),
                record: PullRecord {
                    number: event
                        .get("data")
                        .and_then(|d| d.get("vcs.change.id"))
                        .and_then(Value::as_u64),
                    title: text(event, &["subject"]).map(str::to_owned),
                    url: link(event, &["pull_request"]).map(str::to_owned),
                    time_ms: Some(time_ms),
                },
            });
        }
    }
    if let Some(state) = alarm_state(event_type)
        && let (Some(service), Some(arn)) =
            (service, text(event, &["correlationid"]).and_then(clean))
    {
        entries.push(IndexEntry::Alarm {
            service: service.to_owned(),
            record: AlarmRecord {
                id,
                integration,
                arn: arn.to_owned(),
                name: field(event, "alarm.name")
                    .or_else(|| text(event, &["subject"]))
                    .unwrap_or(arn)
                    .to_owned(),
                state: state.to_owned(),
                time_ms,
                url: link(event, &["alarm"]).map(str::to_owned),
            },
        });
    }
    if resolution && let Some(correlation) = text(event, &["correlationid"]).and_then(clean) {
        entries.push(IndexEntry::Resolution {
            correlation: correlation.to_owned(),
            record: ResolutionRecord {
                id: text(event, &["id"]).unwrap_or_default().to_owned(),
                time_ms,
            },
        });
    }
    entries
}

/// `com.betalogs.{system|security}.….resolved`: an incident or alarm is over.
fn is_resolution(event_type: &str) -> bool {
    (event_type.starts_with("com.betalogs.system.")
        || event_type.starts_with("com.betalogs.security."))
        && event_type.ends_with(".resolved")
}

/// `com.betalogs.<category>.alarm.<raised|resolved|insufficient_data>` → the state.
fn alarm_state(event_type: &str) -> Option<&'static str> {
    let rest = event_type
        .strip_prefix("com.betalogs.system.")
        .or_else(|| event_type.strip_prefix("com.betalogs.security."))?;
    match rest {
        "alarm.raised" => Some("ALARM"),
        "alarm.resolved" => Some("OK"),
        "alarm.insufficient_data" => Some("INSUFFICIENT_DATA"),
        _ => None,
    }
}

/// Severity by name.
pub fn severity_of(event: &Value) -> Option<Severity> {
    // Read in place: this runs for every event.
    Severity::deserialize(event.get("severity")?).ok()
}

/// Whether `event` is a failure to enrich: a `system` or `security` event at or above
/// `min_severity`, not itself an alarm resolution or a delivery.
pub fn is_failure(event: &Value, min_severity: Severity) -> bool {
    let category = text(event, &["category"]).unwrap_or_default();
    (category == "system" || category == "security")
        && severity_of(event).is_some_and(|s| s >= min_severity)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(environment: &str) -> Value {
        json!({
            "id": "ev_1", "type": "com.betalogs.delivery.deployment", "integration": "gh",
            "category": "delivery", "severity": "info", "time": "2026-11-30T10:00:00Z",
            "data": {
                "service.name": "checkout", "deployment.environment": environment,
                "deployment.id": 42, "vcs.ref.head.revision": "abc", "vcs.repository.name": "Acme/Checkout",
                "links": [{"rel": "commit", "url": "https://github.com/acme/checkout/commit/abc"},
                          {"rel": "deployments", "url": "https://github.com/acme/checkout/deployments"}]
            }
        })
    }

    #[test]
    fn deployments_are_keyed_by_service_environment_and_time() {
        let entries = index_entries(&deployment("production"), 1_000);
        let [IndexEntry::Delivery(record)] = entries.as_slice() else {
            panic!("{entries:?}")
        };
        assert_eq!(record.deployment.as_deref(), Some("acme/checkout#42"));
        assert_eq!(
            record.url.as_deref(),
            Some("https://github.com/acme/checkout/deployments")
        );
        let (table, key, _) = entries[0].write("acme");
        assert_eq!(table, Table::Deliveries);
        let prefix = prefix(&["acme", "checkout", "production"]);
        assert!(key.starts_with(&prefix));
        assert_eq!(key_time(&key, prefix.len()), Some(u64::MAX - 1_000));
        let (from, to) = newest_first_range(&prefix, 999, 1_000);
        assert!(from <= key && key <= to);
        let (from, to) = newest_first_range(&prefix, 1_001, 2_000);
        assert!(!(from <= key && key <= to));
        // Newer keys sort first.
        let newer = newest_first_key(&["acme", "checkout", "production"], 1_001, "ev_0");
        assert!(newer < key);
    }

    #[test]
    fn alarms_commits_and_merges_are_indexed_and_other_events_are_not() {
        let alarm = json!({
            "id": "ev_2", "type": "com.betalogs.system.alarm.raised", "integration": "cw",
            "category": "system", "severity": "error", "correlationid": "arn:aws:cloudwatch:us-east-1:1:alarm:x",
            "data": {"service.name": "checkout", "alarm.name": "x", "links": []}
        });
        assert!(
            matches!(index_entries(&alarm, 5).as_slice(), [IndexEntry::Alarm { record, .. }] if record.state == "ALARM")
        );
        let commit = json!({
            "id": "ev_3", "type": "com.betalogs.delivery.commit", "integration": "gh",
            "data": {"service.name": "checkout", "vcs.repository.name": "acme/checkout", "vcs.ref.head.revision": "def",
                     "vcs.commit.message": "fix", "links": [{"rel": "commit", "url": "https://github.com/acme/checkout/commit/def"}]}
        });
        assert!(
            matches!(index_entries(&commit, 5).as_slice(), [IndexEntry::Commit { record, .. }] if record.sha == "def")
        );
        let metric = json!({"id": "ev_4", "type": "com.betalogs.system.metric", "data": {"service.name": "checkout"}});
        assert!(index_entries(&metric, 5).is_empty());
        let hostile = json!({"id": "ev_5", "type": "com.betalogs.delivery.deployment", "data": {"service.name": "a\u{0}b", "deployment.environment": "production"}});
        assert!(
            index_entries(&hostile, 5).is_empty(),
            "no separator in a key part"
        );
    }

    #[test]
    fn resolutions_are_indexed_by_correlation_id_and_nothing_else_resolves() {
        let resolved = json!({
            "id": "ev_9", "type": "com.betalogs.system.incident.resolved", "integration": "pd",
            "correlationid": "PGR0VU2", "data": {"service.name": "checkout", "links": []}
        });
        assert_eq!(
            index_entries(&resolved, 7),
            vec![IndexEntry::Resolution {
                correlation: "PGR0VU2".into(),
                record: ResolutionRecord {
                    id: "ev_9".into(),
                    time_ms: 7
                },
            }]
        );
        let uncorrelated =
            json!({"id": "ev_10", "type": "com.betalogs.system.incident.resolved", "data": {}});
        assert!(index_entries(&uncorrelated, 7).is_empty());
        let delivery = json!({"id": "ev_11", "type": "com.betalogs.delivery.ticket.resolved", "correlationid": "x", "data": {}});
        assert!(
            index_entries(&delivery, 7).is_empty(),
            "deliveries resolve nothing"
        );
    }

    #[test]
    fn failures_are_system_or_security_events_at_the_threshold() {
        let event =
            |category: &str, severity: &str| json!({"category": category, "severity": severity});
        assert!(is_failure(&event("system", "error"), Severity::Error));
        assert!(is_failure(&event("security", "critical"), Severity::Error));
        assert!(!is_failure(&event("system", "warning"), Severity::Error));
        assert!(!is_failure(&event("delivery", "critical"), Severity::Error));
        assert!(is_failure(&event("system", "warning"), Severity::Warning));
    }
}
