//! Alarms: state changes, polled with `DescribeAlarms` (a target's cursor is the
//! newest state update time seen) or pushed by SNS and EventBridge (see `webhook`).
//! Both paths describe a change as an [`AlarmChange`] and map it the same way, so a
//! change seen both ways is one event (same id). Rules decide whether an alarm is a
//! `security` or a `system` event and how severe its ALARM state is; ALARM raises, OK
//! resolves, INSUFFICIENT_DATA warns.

use std::collections::BTreeMap;

use aws_sdk_cloudwatch::types::MetricAlarm;
use plugin_kit::{Category, EventBuilder, MapContext, Severity};
use serde::{Deserialize, Serialize};

use crate::console;
use crate::settings::{AlarmRule, severity_by_name};
use crate::targets::{AwsError, Target};

/// Whether any rule needs the alarms' tags.
pub fn rules_need_tags(rules: &[AlarmRule]) -> bool {
    rules.iter().any(|r| !r.tags.is_empty())
}

/// Whether `rule` matches the alarm of `change`.
fn rule_matches(rule: &AlarmRule, change: &AlarmChange<'_>) -> bool {
    rule.name
        .as_deref()
        .is_none_or(|pattern| plugin_kit::glob::matches(pattern, change.name))
        && rule
            .namespace
            .as_deref()
            .is_none_or(|namespace| change.namespace == Some(namespace))
        && rule.tags.iter().all(|(key, value)| {
            change
                .tags
                .as_ref()
                .is_some_and(|tags| tags.get(key) == Some(value))
        })
}

/// One alarm state change, however it was learnt.
#[derive(Debug, Clone)]
pub struct AlarmChange<'a> {
    pub account: &'a str,
    pub region: &'a str,
    pub name: &'a str,
    pub arn: &'a str,
    /// `ALARM`, `OK` or `INSUFFICIENT_DATA`.
    pub state: &'a str,
    pub previous_state: Option<&'a str>,
    pub reason: Option<&'a str>,
    pub time_ms: i64,
    pub namespace: Option<&'a str>,
    pub metric: Option<&'a str>,
    pub dimensions: Vec<(String, String)>,
    /// `None` when the path that learnt of the change cannot see tags.
    pub tags: Option<BTreeMap<String, String>>,
    /// `poll`, `sns` or `eventbridge`.
    pub via: &'static str,
}

/// Maps one change.
pub fn event(
    change: &AlarmChange<'_>,
    rules: &[AlarmRule],
    service_map: &BTreeMap<String, String>,
    context: &MapContext,
    original: serde_json::Value,
) -> Result<String, serde_json::Error> {
    let rule = rules.iter().find(|rule| rule_matches(rule, change));
    let category = match rule.and_then(|r| r.category.as_deref()) {
        Some("security") => Category::Security,
        _ => Category::System,
    };
    let alarm_severity = rule
        .and_then(|r| r.severity.as_deref())
        .and_then(severity_by_name)
        .unwrap_or(Severity::Error);
    let (kind, severity) = match change.state {
        "ALARM" => ("raised", alarm_severity),
        "OK" => ("resolved", Severity::Info),
        _ => ("insufficient_data", Severity::Warning),
    };
    let event_type = format!(
        "com.betalogs.{}.alarm.{kind}",
        match category {
            Category::Security => "security",
            _ => "system",
        }
    );
    let time = console::rfc3339_ms(change.time_ms);
    let dimensions = change
        .dimensions
        .iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut builder = EventBuilder::new(
        event_type,
        category,
        console::source(change.account, change.region, "cloudwatch"),
        format!("alarm:{}:{}:{}", change.arn, change.state, change.time_ms),
        time.as_str(),
    )
    .severity(severity)
    .subject(change.name)
    .correlation(change.arn);
    builder = console::cloud_fields(builder, change.account, change.region)
        .field("alarm.name", change.name)
        .field("alarm.arn", change.arn)
        .field("alarm.state", change.state)
        .field("alarm.received_via", change.via)
        .link("alarm", console::alarm(change.region, change.name))
        .original(original);
    if let Some(previous) = change.previous_state {
        builder = builder.field("alarm.previous_state", previous);
    }
    if let Some(reason) = change.reason {
        builder = builder.field("alarm.reason", reason);
    }
    if let Some(namespace) = change.namespace {
        builder = builder.field("aws.cloudwatch.namespace", namespace);
    }
    if let Some(metric) = change.metric {
        builder = builder.field("aws.cloudwatch.metric_name", metric);
    }
    if !dimensions.is_empty() {
        builder = builder.field("aws.cloudwatch.dimensions", dimensions.as_str());
    }
    let service = rule
        .and_then(|r| r.service.as_deref())
        .or_else(|| service_map.get(change.name).map(String::as_str));
    if let Some(service) = service {
        builder = builder.field("service.name", service);
    }
    builder.to_json(context)
}

/// Where a target's next alarm read starts: the newest state update read, and the
/// alarms updated in that very millisecond (another alarm changing in it later is
/// still read; these are not read again).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlarmCursor {
    pub since_ms: i64,
    #[serde(default)]
    pub at_since: Vec<String>,
}

impl AlarmCursor {
    fn is_new(&self, arn: &str, updated_ms: i64) -> bool {
        updated_ms > self.since_ms
            || (updated_ms == self.since_ms && !self.at_since.iter().any(|a| a == arn))
    }

    /// The cursor after reading `changes` (`(time, arn)`).
    pub fn after<'a>(&self, changes: impl IntoIterator<Item = (i64, &'a str)>) -> Self {
        let mut next = self.clone();
        for (time, arn) in changes {
            if time > next.since_ms {
                next.since_ms = time;
                next.at_since.clear();
            }
            if time == next.since_ms && !next.at_since.iter().any(|a| a == arn) {
                next.at_since.push(arn.to_owned());
            }
        }
        next
    }
}

/// A changed alarm: its state update time, ARN and event.
#[derive(Debug)]
pub struct PolledChange {
    pub time_ms: i64,
    pub arn: String,
    pub event_json: String,
}

/// The metric alarms whose state changed since `cursor`, oldest first.
pub async fn poll(
    target: &Target,
    context: &MapContext,
    rules: &[AlarmRule],
    service_map: &BTreeMap<String, String>,
    cursor: &AlarmCursor,
) -> Result<Vec<PolledChange>, AwsError> {
    let mut changed: Vec<MetricAlarm> = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let page = target
            .call("cloudwatch:DescribeAlarms", || {
                target
                    .cloudwatch
                    .describe_alarms()
                    .set_next_token(next.clone())
                    .send()
            })
            .await?;
        changed.extend(
            page.metric_alarms()
                .iter()
                .filter(|alarm| {
                    updated_ms(alarm)
                        .is_some_and(|ms| cursor.is_new(alarm.alarm_arn().unwrap_or(""), ms))
                })
                .cloned(),
        );
        next = page.next_token().map(str::to_owned);
        if next.is_none() {
            break;
        }
    }
    let mut events = Vec::with_capacity(changed.len());
    for alarm in &changed {
        let (Some(name), Some(arn), Some(state), Some(time_ms)) = (
            alarm.alarm_name(),
            alarm.alarm_arn(),
            alarm.state_value(),
            updated_ms(alarm),
        ) else {
            continue;
        };
        let tags = if rules_need_tags(rules) {
            let response = target
                .call("cloudwatch:ListTagsForResource", || {
                    target
                        .cloudwatch
                        .list_tags_for_resource()
                        .resource_arn(arn)
                        .send()
                })
                .await?;
            Some(
                response
                    .tags()
                    .iter()
                    .filter_map(|t| Some((t.key()?.to_owned(), t.value()?.to_owned())))
                    .collect(),
            )
        } else {
            None
        };
        let dimensions: Vec<(String, String)> = alarm
            .dimensions()
            .iter()
            .filter_map(|d| Some((d.name()?.to_owned(), d.value()?.to_owned())))
            .collect();
        let change = AlarmChange {
            account: &target.account,
            region: &target.region,
            name,
            arn,
            state: state.as_str(),
            previous_state: None,
            reason: alarm.state_reason(),
            time_ms,
            namespace: alarm.namespace(),
            metric: alarm.metric_name(),
            dimensions,
            tags,
            via: "poll",
        };
        let original = serde_json::json!({
            "AlarmName": name,
            "AlarmArn": arn,
            "StateValue": state.as_str(),
            "StateReason": alarm.state_reason(),
            "StateUpdatedTimestamp": console::rfc3339_ms(time_ms),
            "Namespace": alarm.namespace(),
            "MetricName": alarm.metric_name(),
            "Dimensions": change.dimensions.iter().map(|(n, v)| serde_json::json!({"Name": n, "Value": v})).collect::<Vec<_>>(),
        });
        match event(&change, rules, service_map, context, original) {
            Ok(event_json) => events.push(PolledChange {
                time_ms,
                arn: arn.to_owned(),
                event_json,
            }),
            Err(err) => tracing::warn!(alarm = name, error = %err, "cannot encode an alarm event"),
        }
    }
    events.sort_by_key(|change| change.time_ms);
    Ok(events)
}

fn updated_ms(alarm: &MetricAlarm) -> Option<i64> {
    alarm
        .state_updated_timestamp()
        .and_then(|t| t.to_millis().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change<'a>(name: &'a str, state: &'static str) -> AlarmChange<'a> {
        AlarmChange {
            account: "123456789012",
            region: "us-east-1",
            name,
            arn: "arn:aws:cloudwatch:us-east-1:123456789012:alarm:x",
            state,
            previous_state: Some("OK"),
            reason: Some("Threshold Crossed"),
            time_ms: 1_700_000_000_000,
            namespace: Some("AWS/EC2"),
            metric: Some("CPUUtilization"),
            dimensions: vec![("InstanceId".into(), "i-1".into())],
            tags: Some(BTreeMap::from([("team".into(), "sec".into())])),
            via: "poll",
        }
    }

    fn map(change: &AlarmChange<'_>, rules: &[AlarmRule]) -> plugin_kit::CanonicalEvent {
        let context = MapContext {
            tenant: "acme".into(),
            integration: "cw".into(),
        };
        let json = event(
            change,
            rules,
            &BTreeMap::new(),
            &context,
            serde_json::json!({}),
        )
        .expect("json");
        crate::schema_check::assert_valid(&json);
        serde_json::from_str(&json).expect("event")
    }

    #[test]
    fn the_alarm_cursor_reads_each_change_once_even_within_one_millisecond() {
        let start = AlarmCursor::default();
        let first = start.after([(5, "a"), (7, "b")]);
        assert_eq!(
            first,
            AlarmCursor {
                since_ms: 7,
                at_since: vec!["b".into()]
            }
        );
        assert!(!first.is_new("b", 7));
        assert!(
            first.is_new("c", 7),
            "another alarm in the same millisecond"
        );
        assert!(!first.is_new("a", 5));
        assert!(first.is_new("b", 8));
        let second = first.after([(7, "c")]);
        assert_eq!(second.at_since, ["b", "c"]);
    }

    #[test]
    fn states_raise_resolve_and_warn() {
        let raised = map(&change("cpu-high", "ALARM"), &[]);
        assert_eq!(raised.event_type, "com.betalogs.system.alarm.raised");
        assert_eq!(raised.severity, Severity::Error);
        let resolved = map(&change("cpu-high", "OK"), &[]);
        assert_eq!(resolved.event_type, "com.betalogs.system.alarm.resolved");
        assert_eq!(resolved.severity, Severity::Info);
        let unknown = map(&change("cpu-high", "INSUFFICIENT_DATA"), &[]);
        assert_eq!(unknown.severity, Severity::Warning);
        assert_ne!(raised.id, resolved.id);
    }

    #[test]
    fn the_first_matching_rule_decides_category_and_severity() {
        let rules = [
            AlarmRule {
                name: Some("guardduty-*".into()),
                category: Some("security".into()),
                severity: Some("critical".into()),
                ..AlarmRule::default()
            },
            AlarmRule {
                tags: BTreeMap::from([("team".into(), "sec".into())]),
                category: Some("security".into()),
                ..AlarmRule::default()
            },
            AlarmRule {
                namespace: Some("AWS/EC2".into()),
                severity: Some("warning".into()),
                service: Some("fleet".into()),
                ..AlarmRule::default()
            },
        ];
        let by_name = map(&change("guardduty-finding", "ALARM"), &rules);
        assert_eq!(by_name.event_type, "com.betalogs.security.alarm.raised");
        assert_eq!(by_name.severity, Severity::Critical);
        let by_tag = map(&change("cpu", "ALARM"), &rules);
        assert_eq!(by_tag.category, Category::Security);
        assert_eq!(by_tag.severity, Severity::Error);
        let mut untagged = change("cpu", "ALARM");
        untagged.tags = None;
        let by_namespace = map(&untagged, &rules);
        assert_eq!(by_namespace.category, Category::System);
        assert_eq!(by_namespace.severity, Severity::Warning);
        let data = serde_json::to_value(&by_namespace.data).expect("data");
        assert_eq!(data["service.name"], "fleet");
        assert!(
            AlarmRule {
                category: Some("audit".into()),
                ..AlarmRule::default()
            }
            .validate()
            .is_err()
        );
    }
}
