//! One poll: for each target (account and region) its alarms, metrics and log groups,
//! each with its own cursor. Pages go out as batches carrying the cursor as it was
//! before them; a part's cursor moves with an empty batch once the part is complete, so
//! the supervisor commits it only after everything it covers is durable. A target that
//! fails (denied, throttled past its retries, its breaker open) is reported and the
//! others go on.

use std::collections::BTreeMap;

use plugin_kit::resilience::Failures;
use plugin_kit::{MapContext, Status, v1};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::alarms::{self, AlarmCursor};
use crate::logs::{self, GroupCursor, GroupRead};
use crate::metrics::{self, ReadError};
use crate::now_ms;
use crate::settings::Settings;
use crate::targets::{AwsError, Target};

/// The collect cursor.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Cursor {
    /// `account/region` → end of the last metric window (Unix seconds).
    #[serde(default)]
    pub metrics: BTreeMap<String, u64>,
    /// `account/region/group` → the group's cursor.
    #[serde(default)]
    pub logs: BTreeMap<String, GroupCursor>,
    /// `account/region` → the newest alarm state updates read.
    #[serde(default)]
    pub alarms: BTreeMap<String, AlarmCursor>,
}

impl Cursor {
    /// An empty or unreadable cursor starts over from the backfill start (nothing is
    /// lost; the pipeline drops what it already has).
    pub fn parse(text: &str) -> Self {
        plugin_kit::cursor::decode(text)
    }

    pub fn encode(&self) -> String {
        plugin_kit::cursor::encode(self)
    }
}

type Sender = mpsc::Sender<Result<v1::EventBatch, Status>>;

/// The consumer is gone: stop.
#[derive(Debug)]
pub struct Closed;

/// Sends batches with the cursor as last committed by this poll.
struct Output<'a> {
    out: &'a Sender,
    cursor: Cursor,
    encoded: String,
}

impl Output<'_> {
    async fn page(&self, events_json: Vec<String>) -> Result<(), Closed> {
        if events_json.is_empty() {
            return Ok(());
        }
        self.out
            .send(Ok(v1::EventBatch {
                events_json,
                cursor: self.encoded.clone(),
            }))
            .await
            .map_err(|_| Closed)
    }

    async fn advance(&mut self, change: impl FnOnce(&mut Cursor)) -> Result<(), Closed> {
        change(&mut self.cursor);
        self.encoded = self.cursor.encode();
        self.out
            .send(Ok(v1::EventBatch {
                events_json: Vec::new(),
                cursor: self.encoded.clone(),
            }))
            .await
            .map_err(|_| Closed)
    }
}

/// Runs one poll over every target.
pub async fn poll(targets: &[Target], settings: &Settings, cursor: Cursor, out: Sender) {
    let context = MapContext {
        tenant: settings.tenant.clone(),
        integration: settings.integration.clone(),
    };
    let encoded = cursor.encode();
    let mut output = Output {
        out: &out,
        cursor,
        encoded,
    };
    let mut failures = Failures::default();
    for target in targets {
        match poll_target(target, settings, &context, &mut output).await {
            Ok(failed) => {
                for err in failed {
                    failures.push(err.class, err.to_string());
                }
            }
            Err(Closed) => return,
        }
    }
    if let Some(status) = failures.into_status("read(s)") {
        let _ = out.send(Err(status)).await;
    }
}

/// One target's alarms, metrics and logs; returns what failed.
async fn poll_target(
    target: &Target,
    settings: &Settings,
    context: &MapContext,
    output: &mut Output<'_>,
) -> Result<Vec<AwsError>, Closed> {
    let key = target.key();
    let mut failures = Vec::new();
    let mut failed = |err: AwsError| {
        tracing::warn!(target = %key, error = %err, "a read failed; the others go on");
        failures.push(err);
    };
    let now = now_ms();
    let backfill_ms = i64::try_from(settings.backfill.as_millis()).unwrap_or(i64::MAX);

    if settings.wants("alarm") {
        let cursor = output
            .cursor
            .alarms
            .get(&key)
            .cloned()
            .unwrap_or_else(|| AlarmCursor {
                since_ms: now - backfill_ms,
                at_since: Vec::new(),
            });
        match alarms::poll(
            target,
            context,
            &settings.alarm_rules,
            &settings.service_map,
            &cursor,
        )
        .await
        {
            Ok(changes) if !changes.is_empty() => {
                let next = cursor.after(changes.iter().map(|c| (c.time_ms, c.arn.as_str())));
                output
                    .page(changes.into_iter().map(|c| c.event_json).collect())
                    .await?;
                output
                    .advance(|c| {
                        c.alarms.insert(key.clone(), next);
                    })
                    .await?;
            }
            Ok(_) => {}
            Err(err) => failed(err),
        }
    }

    if settings.wants("metric")
        && !(settings.metrics.is_empty() && settings.metric_discovery.is_empty())
    {
        match metrics::resolve(target, settings).await {
            Ok(queries) if !queries.is_empty() => {
                let window = metrics::window(
                    u64::try_from(now / 1000).unwrap_or(0),
                    settings.metric_delay.as_secs(),
                    metrics::alignment(&queries),
                    output.cursor.metrics.get(&key).copied(),
                    settings.backfill.as_secs(),
                );
                if let Some(window) = window {
                    let read = metrics::read(target, context, &queries, window, |events| {
                        output.page(events)
                    })
                    .await;
                    match read {
                        Ok(()) => {
                            output
                                .advance(|c| {
                                    c.metrics.insert(key.clone(), window.1);
                                })
                                .await?;
                        }
                        Err(ReadError::Aws(err)) => failed(err),
                        Err(ReadError::Closed(closed)) => return Err(closed),
                    }
                }
            }
            Ok(_) => {}
            Err(err) => failed(err),
        }
    }

    if settings.wants("log")
        && !(settings.log_groups.is_empty() && settings.log_group_prefixes.is_empty())
    {
        match logs::groups(target, &settings.log_groups, &settings.log_group_prefixes).await {
            Ok(groups) => {
                for group in &groups {
                    let group_key = format!(
                        "{key}{}{group}",
                        if group.starts_with('/') { "" } else { "/" }
                    );
                    let cursor = output
                        .cursor
                        .logs
                        .get(&group_key)
                        .cloned()
                        .unwrap_or_else(|| GroupCursor {
                            from_ms: now - backfill_ms,
                            seen: Vec::new(),
                        });
                    let read = GroupRead {
                        group,
                        filter_pattern: settings.log_filter_pattern.as_deref(),
                        end_ms: now,
                        lookback_ms: i64::try_from(settings.log_lookback.as_millis())
                            .unwrap_or(i64::MAX),
                        page_size: settings.log_page_size,
                        service: settings.service_for(group),
                    };
                    match logs::read(target, context, &read, &cursor, |events| {
                        output.page(events)
                    })
                    .await
                    {
                        Ok(next) => {
                            if next != cursor {
                                output
                                    .advance(|c| {
                                        c.logs.insert(group_key, next);
                                    })
                                    .await?;
                            }
                        }
                        Err(ReadError::Aws(err)) => failed(err),
                        Err(ReadError::Closed(closed)) => return Err(closed),
                    }
                }
            }
            Err(err) => failed(err),
        }
    }
    Ok(failures)
}
