//! `Enrich`: the metric values around a failure. The supervisor asks with
//! `data."enrichment.want" = "metric_values"`, the failure's `service.name` and time;
//! the answer is one `metric_values` enrichment per configured metric of that service
//! and per account and region, with the datapoints from [`BEFORE_S`] before to
//! [`AFTER_S`] after, its peak, and its console graph. Other questions get an empty
//! answer: this plugin knows nothing about commits.

use plugin_kit::{MapContext, Status, v1};
use serde_json::{Value, json};

use crate::metrics::{self, ReadError, ResolvedQuery};
use crate::settings::Settings;
use crate::targets::Target;
use crate::{Instance, console};

/// Read before the failure.
pub const BEFORE_S: u64 = 15 * 60;
/// Read after the failure.
pub const AFTER_S: u64 = 5 * 60;
/// Datapoints listed per metric at most (the nearest to the failure).
const MAX_POINTS: usize = 60;

fn field<'a>(event: &'a Value, name: &str) -> Option<&'a str> {
    event.get("data")?.get(name)?.as_str()
}

pub(crate) async fn enrich(
    instance: &Instance,
    request: &v1::EnrichRequest,
) -> Result<v1::EnrichResponse, Status> {
    let settings = &instance.settings;
    let event: Value = serde_json::from_str(&request.event_json)
        .map_err(|e| Status::invalid_argument(format!("the event is not JSON: {e}")))?;
    if event.get("tenant").and_then(Value::as_str) != Some(settings.tenant.as_str()) {
        return Err(Status::permission_denied(
            "the event belongs to another tenant",
        ));
    }
    if field(&event, "enrichment.want") != Some("metric_values") {
        return Ok(v1::EnrichResponse::default());
    }
    let service = field(&event, "service.name")
        .ok_or_else(|| Status::invalid_argument("`metric_values` needs `service.name`"))?;
    let at_ms = event
        .get("time")
        .and_then(Value::as_str)
        .and_then(plugin_kit::event_time_ms)
        .ok_or_else(|| Status::invalid_argument("the event's `time` is not RFC 3339"))?;
    let queries: Vec<ResolvedQuery> = metrics::configured(settings)
        .into_iter()
        .filter(|q| q.service.as_deref() == Some(service))
        .collect();
    if queries.is_empty() {
        return Ok(v1::EnrichResponse::default());
    }
    let window = around(at_ms / 1000, metrics::alignment(&queries));
    let mut enrichments = Vec::new();
    let mut failures = Vec::new();
    for target in &instance.targets {
        match values(target, settings, &queries, window).await {
            Ok(found) => enrichments.extend(
                found
                    .into_iter()
                    .filter(|(_, points)| !points.is_empty())
                    .map(|(query, points)| entry(settings, target, query, &points, at_ms)),
            ),
            Err(err) => failures.push(err),
        }
    }
    if enrichments.is_empty() && !failures.is_empty() {
        return Err(Status::unavailable(failures.join("; ")));
    }
    Ok(v1::EnrichResponse {
        enrichments_json: enrichments.iter().map(Value::to_string).collect(),
    })
}

/// `[start, end)` in Unix seconds around `at_s`, on whole periods of `align`.
fn around(at_s: u64, align: u64) -> (u64, u64) {
    let align = align.max(1);
    let start = at_s.saturating_sub(BEFORE_S) / align * align;
    let end = (at_s + AFTER_S).div_ceil(align) * align;
    (start, end)
}

/// Each query's datapoints in `window` from one target, as (Unix ms, value), in time
/// order.
async fn values<'q>(
    target: &Target,
    settings: &Settings,
    queries: &'q [ResolvedQuery],
    window: (u64, u64),
) -> Result<Vec<(&'q ResolvedQuery, Vec<(i64, f64)>)>, String> {
    let context = MapContext {
        tenant: settings.tenant.clone(),
        integration: settings.integration.clone(),
    };
    let mut events: Vec<String> = Vec::new();
    metrics::read(target, &context, queries, window, |page| {
        events.extend(page);
        std::future::ready(Ok::<(), std::convert::Infallible>(()))
    })
    .await
    .map_err(|err| match err {
        ReadError::Aws(err) => format!("{}/{}: {err}", target.account, target.region),
        ReadError::Closed(never) => match never {},
    })?;
    // The datapoint events name their query; they are read back rather than read twice.
    let mut found: Vec<(&ResolvedQuery, Vec<(i64, f64)>)> =
        queries.iter().map(|q| (q, Vec::new())).collect();
    for raw in &events {
        let Ok(event) = serde_json::from_str::<Value>(raw) else {
            continue;
        };
        let data = &event["data"];
        let (Some(value), Some(at)) = (
            data["metric.value"].as_f64(),
            event["time"]
                .as_str()
                .and_then(plugin_kit::event_time_ms)
                .and_then(|ms| i64::try_from(ms).ok()),
        ) else {
            continue;
        };
        let matches = |q: &ResolvedQuery| {
            data["aws.cloudwatch.namespace"] == q.namespace.as_str()
                && data["aws.cloudwatch.metric_name"] == q.metric.as_str()
                && data["aws.cloudwatch.stat"] == q.stat.as_str()
                && data["aws.cloudwatch.period"] == q.period
                && data["aws.cloudwatch.dimensions"] == q.dimensions_text().as_str()
        };
        if let Some((_, points)) = found.iter_mut().find(|(q, _)| matches(q)) {
            points.push((at, value));
        }
    }
    for (_, points) in &mut found {
        points.sort_by_key(|(at, _)| *at);
    }
    Ok(found)
}

/// One metric's values as an enrichment.
fn entry(
    settings: &Settings,
    target: &Target,
    query: &ResolvedQuery,
    points: &[(i64, f64)],
    at_ms: u64,
) -> Value {
    let at = i64::try_from(at_ms).unwrap_or(i64::MAX);
    // The points nearest the failure when there are too many.
    let mut listed: Vec<(i64, f64)> = points.to_vec();
    listed.sort_by_key(|(t, _)| (t - at).abs());
    listed.truncate(MAX_POINTS);
    listed.sort_by_key(|(t, _)| *t);
    let (peak_at, peak) =
        listed.iter().copied().fold(
            (0, f64::NEG_INFINITY),
            |best, p| if p.1 > best.1 { p } else { best },
        );
    let before: Vec<f64> = listed
        .iter()
        .filter(|(t, _)| *t < at)
        .map(|(_, v)| *v)
        .collect();
    let after: Vec<f64> = listed
        .iter()
        .filter(|(t, _)| *t >= at)
        .map(|(_, v)| *v)
        .collect();
    let mean = |values: &[f64]| {
        (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
    };
    let link = console::metric(
        &target.region,
        &query.namespace,
        &query.metric,
        &query.dimensions,
        &query.stat,
        query.period,
    );
    json!({
        "source": {"plugin": "cloudwatch", "integration": settings.integration, "tenant": settings.tenant},
        "kind": "metric_values",
        "reason": format!(
            "{} {} ({}, {} s) around the failure: peak {peak} at {}, {} datapoints",
            query.namespace,
            query.metric,
            query.stat,
            query.period,
            console::rfc3339_ms(peak_at),
            listed.len()
        ),
        "score": 0.4,
        "links": [{"rel": "metric", "url": link}],
        "data": {
            "cloud.account.id": target.account,
            "cloud.region": target.region,
            "namespace": query.namespace,
            "metric": query.metric,
            "dimensions": query.dimensions.iter().map(|(n, v)| json!({"name": n, "value": v})).collect::<Vec<_>>(),
            "stat": query.stat,
            "period": query.period,
            "points": listed.iter().map(|(t, v)| json!({"time": console::rfc3339_ms(*t), "value": v})).collect::<Vec<_>>(),
            "peak": peak,
            "mean_before": mean(&before),
            "mean_after": mean(&after),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_covers_whole_periods_around_the_failure() {
        let at = 1_796_000_130;
        let (start, end) = around(at, 60);
        assert_eq!(start % 60, 0);
        assert_eq!(end % 60, 0);
        assert!(start <= at - BEFORE_S && at - BEFORE_S < start + 60);
        assert!(end >= at + AFTER_S && end < at + AFTER_S + 60);
        assert_eq!(around(10, 60), (0, 360), "no underflow near the epoch");
    }
}
