//! Logs: the configured log groups and those found by prefix, read with
//! `FilterLogEvents`. Each group has a cursor: the time from which the next poll reads
//! and the ids of the lines already read at or after it. A poll reads from that time
//! (which lies `log_lookback` before the newest line seen, for lines CloudWatch ingests
//! late) and skips the ids it has, so many lines with one timestamp and late lines are
//! neither lost nor read twice. The cursor moves only when a group's read is complete;
//! a read interrupted mid-page is read again, and the pipeline drops the lines it
//! already stored (event ids come from CloudWatch's event ids).

use std::collections::{BTreeMap, HashSet};

use aws_sdk_cloudwatchlogs::types::FilteredLogEvent;
use plugin_kit::{Category, EventBuilder, MapContext, Severity};
use serde::{Deserialize, Serialize};

use crate::console;
use crate::metrics::ReadError;
use crate::targets::{AwsError, Target};

/// Ids kept per group for deduplication; beyond it the oldest go (the pipeline's own
/// deduplication still catches a repeat).
pub const MAX_SEEN_IDS: usize = 10_000;
/// JSON attributes copied into an event, at most.
const MAX_ATTRIBUTES: usize = 64;

/// Where a log group's next read starts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupCursor {
    /// Unix milliseconds.
    pub from_ms: i64,
    /// `(timestamp, event id)` of lines read at or after `from_ms`.
    #[serde(default)]
    pub seen: Vec<(i64, String)>,
}

/// The groups to read: the configured names, then those found by prefix.
pub async fn groups(
    target: &Target,
    names: &[String],
    prefixes: &[String],
) -> Result<Vec<String>, AwsError> {
    let mut groups: Vec<String> = names.to_vec();
    for prefix in prefixes {
        let mut next: Option<String> = None;
        loop {
            let page = target
                .call("logs:DescribeLogGroups", || {
                    target
                        .logs
                        .describe_log_groups()
                        .log_group_name_prefix(prefix)
                        .set_next_token(next.clone())
                        .send()
                })
                .await?;
            groups.extend(
                page.log_groups()
                    .iter()
                    .filter_map(|g| g.log_group_name().map(str::to_owned)),
            );
            next = page.next_token().map(str::to_owned);
            if next.is_none() {
                break;
            }
        }
    }
    groups.sort();
    groups.dedup();
    Ok(groups)
}

/// What one group's read needs besides the target.
#[derive(Debug)]
pub struct GroupRead<'a> {
    pub group: &'a str,
    pub filter_pattern: Option<&'a str>,
    pub end_ms: i64,
    pub lookback_ms: i64,
    pub page_size: Option<i32>,
    pub service: Option<&'a str>,
}

/// Reads one group from `cursor` up to `end_ms`; calls `page` with each page's new
/// events and returns the group's next cursor.
pub async fn read<F, Fut, E>(
    target: &Target,
    context: &MapContext,
    read: &GroupRead<'_>,
    cursor: &GroupCursor,
    mut page: F,
) -> Result<GroupCursor, ReadError<E>>
where
    F: FnMut(Vec<String>) -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
{
    let mut pages = PageReader::new(cursor);
    let mut next: Option<String> = None;
    let mapper = LineMapper {
        account: &target.account,
        region: &target.region,
        group: read.group,
        service: read.service,
        context,
    };
    loop {
        let response = target
            .call("logs:FilterLogEvents", || {
                target
                    .logs
                    .filter_log_events()
                    .log_group_name(read.group)
                    .start_time(cursor.from_ms)
                    .end_time(read.end_ms)
                    .set_filter_pattern(read.filter_pattern.map(str::to_owned))
                    .set_limit(read.page_size)
                    .set_next_token(next.clone())
                    .send()
            })
            .await
            .map_err(ReadError::Aws)?;
        let events = pages.page(&mapper, response.events());
        page(events).await.map_err(ReadError::Closed)?;
        // An empty page with a token is not the end: CloudWatch pages by time and
        // streams, and answers empty pages while it searches.
        next = response.next_token().map(str::to_owned);
        if next.is_none() {
            break;
        }
    }
    Ok(pages.finish(cursor, read.lookback_ms))
}

/// One group's read in progress: the lines already seen and the newest time.
#[derive(Debug)]
pub struct PageReader {
    seen: HashSet<String>,
    fresh: Vec<(i64, String)>,
    newest: i64,
}

impl PageReader {
    pub fn new(cursor: &GroupCursor) -> Self {
        Self {
            seen: cursor.seen.iter().map(|(_, id)| id.clone()).collect(),
            fresh: Vec::new(),
            newest: cursor.from_ms,
        }
    }

    /// The events of one page's lines not read before.
    pub fn page(&mut self, mapper: &LineMapper<'_>, lines: &[FilteredLogEvent]) -> Vec<String> {
        let mut events = Vec::with_capacity(lines.len());
        for line in lines {
            let (Some(id), Some(timestamp)) = (line.event_id(), line.timestamp()) else {
                continue;
            };
            if !self.seen.insert(id.to_owned()) {
                continue;
            }
            self.newest = self.newest.max(timestamp);
            self.fresh.push((timestamp, id.to_owned()));
            match mapper.event(line) {
                Ok(json) => events.push(json),
                Err(err) => {
                    tracing::warn!(group = mapper.group, error = %err, "cannot encode a log event");
                }
            }
        }
        events
    }

    /// The group's next cursor: from `lookback_ms` before the newest line, with the
    /// ids read since then.
    pub fn finish(self, cursor: &GroupCursor, lookback_ms: i64) -> GroupCursor {
        let from_ms = self.newest.saturating_sub(lookback_ms).max(cursor.from_ms);
        let mut kept: Vec<(i64, String)> = cursor
            .seen
            .iter()
            .cloned()
            .chain(self.fresh)
            .filter(|(timestamp, _)| *timestamp >= from_ms)
            .collect();
        kept.sort();
        if kept.len() > MAX_SEEN_IDS {
            kept.drain(..kept.len() - MAX_SEEN_IDS);
        }
        GroupCursor {
            from_ms,
            seen: kept,
        }
    }
}

/// Maps the lines of one group.
#[derive(Debug)]
pub struct LineMapper<'a> {
    pub account: &'a str,
    pub region: &'a str,
    pub group: &'a str,
    pub service: Option<&'a str>,
    pub context: &'a MapContext,
}

impl LineMapper<'_> {
    /// One line as a `system` log event: JSON lines are parsed into attributes; the
    /// severity comes from a level field or the message.
    pub fn event(&self, line: &FilteredLogEvent) -> Result<String, serde_json::Error> {
        let id = line.event_id().unwrap_or_default();
        let stream = line.log_stream_name().unwrap_or_default();
        let timestamp = line.timestamp().unwrap_or_default();
        let message = line.message().unwrap_or_default();
        let parsed: Option<serde_json::Map<String, serde_json::Value>> =
            if message.trim_start().starts_with('{') {
                serde_json::from_str(message).ok()
            } else {
                None
            };
        let level = parsed.as_ref().and_then(|object| {
            ["level", "severity", "log.level", "lvl", "levelname"]
                .iter()
                .find_map(|key| object.get(*key).and_then(serde_json::Value::as_str))
        });
        let severity = level
            .and_then(severity_from_level)
            .unwrap_or_else(|| severity_from_message(message));
        let text = parsed
            .as_ref()
            .and_then(|object| {
                ["message", "msg"]
                    .iter()
                    .find_map(|key| object.get(*key).and_then(serde_json::Value::as_str))
            })
            .unwrap_or(message);
        let time = console::rfc3339_ms(timestamp);
        let mut original = String::with_capacity(message.len() + stream.len() + 128);
        original.push_str("{\"eventId\":");
        original.push_str(&serde_json::to_string(id)?);
        original.push_str(",\"logStreamName\":");
        original.push_str(&serde_json::to_string(stream)?);
        original.push_str(",\"timestamp\":");
        original.push_str(&timestamp.to_string());
        if let Some(ingested) = line.ingestion_time() {
            original.push_str(",\"ingestionTime\":");
            original.push_str(&ingested.to_string());
        }
        original.push_str(",\"message\":");
        original.push_str(&serde_json::to_string(message)?);
        original.push('}');
        let mut builder = EventBuilder::new(
            "com.betalogs.system.log",
            Category::System,
            console::source(self.account, self.region, "logs"),
            format!("log:{}:{}:{}:{id}", self.account, self.region, self.group),
            time.as_str(),
        )
        .severity(severity)
        .subject(stream)
        // The line's trace or request id replaces it below when it has one.
        .correlation(format!(
            "aws:{}:{}:logs:{}",
            self.account, self.region, self.group
        ));
        builder = console::cloud_fields(builder, self.account, self.region)
            .field("aws.log.group.name", self.group)
            .field("aws.log.stream.name", stream)
            .field("log.message", text)
            .link(
                "log",
                console::log_stream(self.region, self.group, stream, timestamp),
            )
            .original_json_text(&original);
        if let Some(service) = self.service {
            builder = builder.field("service.name", service);
        }
        if let Some(object) = &parsed {
            if let Some(trace) = ["trace_id", "traceId", "request_id", "requestId"]
                .iter()
                .find_map(|key| object.get(*key).and_then(serde_json::Value::as_str))
            {
                builder = builder.correlation(trace);
            }
            let attributes: BTreeMap<String, serde_json::Value> = object
                .iter()
                .filter(|(_, v)| v.is_string() || v.is_number() || v.is_boolean())
                .filter_map(|(key, value)| Some((attribute_name(key)?, value.clone())))
                .take(MAX_ATTRIBUTES)
                .collect();
            for (name, value) in attributes {
                builder = builder.field(name, value);
            }
        }
        builder.to_json(self.context)
    }
}

/// `log.attributes.<key>` with the key in the schema's field alphabet
/// (`[a-z0-9_]`), or `None` for a key with nothing usable in it.
fn attribute_name(key: &str) -> Option<String> {
    let mut name = String::with_capacity(key.len() + 15);
    name.push_str("log.attributes.");
    let before = name.len();
    for c in key.chars() {
        match c {
            'a'..='z' | '0'..='9' | '_' => name.push(c),
            'A'..='Z' => name.push(c.to_ascii_lowercase()),
            _ => name.push('_'),
        }
    }
    (name.len() > before && name.len() <= 128).then_some(name)
}

fn severity_from_level(level: &str) -> Option<Severity> {
    let level = level.trim().to_ascii_lowercase();
    Some(match level.as_str() {
        "fatal" | "critical" | "crit" | "panic" | "emerg" | "emergency" | "alert" => {
            Severity::Critical
        }
        "error" | "err" => Severity::Error,
        "warn" | "warning" => Severity::Warning,
        "info" | "notice" | "information" => Severity::Info,
        "debug" | "trace" | "verbose" => Severity::Debug,
        _ => return None,
    })
}

/// A level word at the start of the message or standing alone in it (`ERROR`,
/// `[WARN]`, `level=error`).
fn severity_from_message(message: &str) -> Severity {
    let head = &message[..message.len().min(200)];
    let mut found = Severity::Info;
    for word in head.split(|c: char| !c.is_ascii_alphabetic()) {
        if word.len() < 3 || word.len() > 9 {
            continue;
        }
        let severity = match word {
            "FATAL" | "CRITICAL" | "PANIC" | "fatal" | "critical" | "panic" => Severity::Critical,
            "ERROR" | "error" | "Error" => Severity::Error,
            "WARN" | "WARNING" | "warn" | "warning" | "Warning" => Severity::Warning,
            _ => continue,
        };
        // Severities are ordered, least severe first.
        found = found.max(severity);
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(id: &str, timestamp: i64, message: &str) -> FilteredLogEvent {
        FilteredLogEvent::builder()
            .event_id(id)
            .log_stream_name("web/1")
            .timestamp(timestamp)
            .ingestion_time(timestamp + 5)
            .message(message)
            .build()
    }

    fn map(message: &str) -> plugin_kit::CanonicalEvent {
        let context = MapContext {
            tenant: "acme".into(),
            integration: "cw".into(),
        };
        let mapper = LineMapper {
            account: "123456789012",
            region: "eu-west-1",
            group: "/ecs/checkout",
            service: Some("checkout"),
            context: &context,
        };
        let json = mapper
            .event(&line("3700", 1_700_000_000_123, message))
            .expect("json");
        crate::schema_check::assert_valid(&json);
        serde_json::from_str(&json).expect("event")
    }

    #[test]
    fn a_group_cursor_skips_lines_read_and_keeps_those_in_the_lookback() {
        let context = MapContext {
            tenant: "acme".into(),
            integration: "cw".into(),
        };
        let mapper = LineMapper {
            account: "123456789012",
            region: "eu-west-1",
            group: "/g",
            service: None,
            context: &context,
        };
        let start = GroupCursor {
            from_ms: 0,
            seen: Vec::new(),
        };
        let mut reader = PageReader::new(&start);
        let first = [
            line("a", 100, "x"),
            line("b", 200, "y"),
            line("c", 200, "z"),
        ];
        assert_eq!(reader.page(&mapper, &first).len(), 3);
        assert_eq!(reader.page(&mapper, &first).len(), 0, "a page read twice");
        let cursor = reader.finish(&start, 50);
        assert_eq!(cursor.from_ms, 150);
        assert_eq!(cursor.seen, [(200, "b".to_owned()), (200, "c".to_owned())]);
        // Next poll: the same millisecond again, with a new line in it.
        let mut reader = PageReader::new(&cursor);
        let again = [
            line("b", 200, "y"),
            line("c", 200, "z"),
            line("d", 200, "w"),
        ];
        assert_eq!(reader.page(&mapper, &again).len(), 1);
        let next = reader.finish(&cursor, 50);
        assert_eq!(next.from_ms, 150);
        assert_eq!(next.seen.len(), 3);
    }

    #[test]
    fn json_lines_become_attributes_with_their_level() {
        let event = map(
            r#"{"level":"ERROR","message":"payment failed","traceId":"t-1","Order ID":7,"nested":{"x":1},"ok":false}"#,
        );
        assert_eq!(event.severity, Severity::Error);
        assert_eq!(event.correlationid.as_deref(), Some("t-1"));
        let data = serde_json::to_value(&event.data).expect("data");
        assert_eq!(data["log.message"], "payment failed");
        assert_eq!(data["log.attributes.order_id"], 7);
        assert_eq!(data["log.attributes.ok"], false);
        assert!(data.get("log.attributes.nested").is_none());
        assert_eq!(data["aws.log.group.name"], "/ecs/checkout");
        assert_eq!(data["service.name"], "checkout");
        assert_eq!(data["original"]["eventId"], "3700");
        assert_eq!(event.time, "2023-11-14T22:13:20.123Z");
        assert!(event.data.links[0].url.contains("log-events/web$252F1"));
    }

    #[test]
    fn plain_lines_take_their_severity_from_the_message() {
        for (message, severity) in [
            ("2024-01-01 ERROR db timeout", Severity::Error),
            ("[WARN] slow", Severity::Warning),
            ("FATAL: out of memory", Severity::Critical),
            ("all good, no errors", Severity::Info),
            ("level=error msg=x", Severity::Error),
            ("", Severity::Info),
            ("{not json", Severity::Info),
        ] {
            assert_eq!(map(message).severity, severity, "{message}");
        }
    }

    #[test]
    fn hostile_lines_still_map() {
        let control = "\u{0}\u{1b}[31m\"quoted\"\n\\";
        let event = map(control);
        assert_eq!(event.data.original["message"], control);
        let big = "x".repeat(256 * 1024);
        assert_eq!(
            map(&big).data.original["message"].as_str().map(str::len),
            Some(big.len())
        );
        let keys: String = (0..500).map(|i| format!("\"k{i}\":{i},")).collect();
        let wide = map(&format!("{{{keys}\"end\":1}}"));
        let data = serde_json::to_value(&wide.data).expect("data");
        let attributes = data
            .as_object()
            .expect("object")
            .keys()
            .filter(|k| k.starts_with("log.attributes."))
            .count();
        assert_eq!(attributes, MAX_ATTRIBUTES);
        let deep = format!("{}{}", "{\"a\":".repeat(10_000), "}".repeat(10_000));
        assert_eq!(map(&deep).severity, Severity::Info);
    }
}
