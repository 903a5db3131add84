//! Metrics: the configured queries and those found with `ListMetrics`, read with
//! `GetMetricData` (up to 500 queries per call) over windows aligned to the longest
//! period and ending `metric_delay` ago. A target's cursor is the end of its last
//! window, so consecutive polls, across restarts too, read each period exactly once.
//! Each datapoint is one `system` metric event.

use std::collections::BTreeSet;

use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{
    Dimension, DimensionFilter, Metric, MetricDataQuery, MetricStat, ScanBy,
};
use plugin_kit::{Category, EventBuilder, MapContext};

use crate::console;
use crate::settings::Settings;
use crate::targets::{AwsError, Target};

/// `GetMetricData` takes at most this many queries per call.
pub const QUERIES_PER_CALL: usize = 500;
/// The longest window read in one poll; a target further behind catches up over
/// several polls.
pub const MAX_WINDOW_SECONDS: u64 = 24 * 60 * 60;

/// One metric to read.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ResolvedQuery {
    pub namespace: String,
    pub metric: String,
    /// Sorted by name.
    pub dimensions: Vec<(String, String)>,
    pub stat: String,
    pub period: u32,
    pub service: Option<String>,
}

impl ResolvedQuery {
    /// `Name=value,…`, as the metric events carry them.
    pub fn dimensions_text(&self) -> String {
        self.dimensions
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn to_query(&self, id: String) -> MetricDataQuery {
        let metric = Metric::builder()
            .namespace(&self.namespace)
            .metric_name(&self.metric)
            .set_dimensions(Some(
                self.dimensions
                    .iter()
                    .map(|(name, value)| Dimension::builder().name(name).value(value).build())
                    .collect(),
            ))
            .build();
        MetricDataQuery::builder()
            .id(id)
            .metric_stat(
                MetricStat::builder()
                    .metric(metric)
                    .period(i32::try_from(self.period).unwrap_or(i32::MAX))
                    .stat(&self.stat)
                    .build(),
            )
            .return_data(true)
            .build()
    }
}

/// The configured queries, each with its service (its own, or from `service_map` by
/// `namespace/metric`).
pub fn configured(settings: &Settings) -> BTreeSet<ResolvedQuery> {
    settings
        .metrics
        .iter()
        .map(|q| ResolvedQuery {
            namespace: q.namespace.clone(),
            metric: q.metric.clone(),
            dimensions: q.dimensions.clone().into_iter().collect(),
            stat: q.stat.clone(),
            period: q.period,
            service: q.service.clone().or_else(|| {
                settings
                    .service_for(&format!("{}/{}", q.namespace, q.metric))
                    .map(str::to_owned)
            }),
        })
        .collect()
}

/// The configured queries, then those discovered with `ListMetrics`, without repeats.
pub async fn resolve(target: &Target, settings: &Settings) -> Result<Vec<ResolvedQuery>, AwsError> {
    let mut queries = configured(settings);
    for discovery in &settings.metric_discovery {
        let filters: Vec<DimensionFilter> = discovery
            .dimensions
            .iter()
            .map(|(name, value)| {
                DimensionFilter::builder()
                    .name(name)
                    .set_value((!value.is_empty()).then(|| value.clone()))
                    .build()
            })
            .collect();
        let mut next: Option<String> = None;
        loop {
            let page = target
                .call("cloudwatch:ListMetrics", || {
                    target
                        .cloudwatch
                        .list_metrics()
                        .namespace(&discovery.namespace)
                        .set_metric_name(discovery.metric.clone())
                        .set_dimensions(Some(filters.clone()))
                        .set_next_token(next.clone())
                        .send()
                })
                .await?;
            for metric in page.metrics() {
                let (Some(namespace), Some(name)) = (metric.namespace(), metric.metric_name())
                else {
                    continue;
                };
                let mut dimensions: Vec<(String, String)> = metric
                    .dimensions()
                    .iter()
                    .filter_map(|d| Some((d.name()?.to_owned(), d.value()?.to_owned())))
                    .collect();
                dimensions.sort();
                queries.insert(ResolvedQuery {
                    namespace: namespace.to_owned(),
                    metric: name.to_owned(),
                    dimensions,
                    stat: discovery.stat.clone(),
                    period: discovery.period,
                    service: discovery.service.clone(),
                });
            }
            next = page.next_token().map(str::to_owned);
            if next.is_none() {
                break;
            }
        }
    }
    Ok(queries.into_iter().collect())
}

/// The window to read, in Unix seconds `[start, end)`, both multiples of `align`:
/// from the cursor (or `backfill` before the end on a first poll) to `delay` ago,
/// at most [`MAX_WINDOW_SECONDS`] long. `None` when no whole period has passed.
pub fn window(
    now_s: u64,
    delay_s: u64,
    align: u64,
    cursor: Option<u64>,
    backfill_s: u64,
) -> Option<(u64, u64)> {
    let align = align.max(1);
    let end = now_s.saturating_sub(delay_s) / align * align;
    let start = match cursor {
        Some(until) => until,
        None => end.saturating_sub(backfill_s.max(align)) / align * align,
    };
    let end = end.min(start + MAX_WINDOW_SECONDS / align * align.max(1));
    (start < end).then_some((start, end))
}

/// The longest period among the queries: windows align to it.
pub fn alignment(queries: &[ResolvedQuery]) -> u64 {
    queries
        .iter()
        .map(|q| u64::from(q.period))
        .max()
        .unwrap_or(60)
}

/// Reads one window; calls `page` with each response page's events.
pub async fn read<F, Fut, E>(
    target: &Target,
    context: &MapContext,
    queries: &[ResolvedQuery],
    (start, end): (u64, u64),
    mut page: F,
) -> Result<(), ReadError<E>>
where
    F: FnMut(Vec<String>) -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
{
    for (chunk_index, chunk) in queries.chunks(QUERIES_PER_CALL).enumerate() {
        let requests: Vec<MetricDataQuery> = chunk
            .iter()
            .enumerate()
            .map(|(i, q)| q.to_query(format!("m{i}")))
            .collect();
        let mut next: Option<String> = None;
        loop {
            let response = target
                .call("cloudwatch:GetMetricData", || {
                    target
                        .cloudwatch
                        .get_metric_data()
                        .set_metric_data_queries(Some(requests.clone()))
                        .start_time(DateTime::from_secs(i64::try_from(start).unwrap_or(0)))
                        .end_time(DateTime::from_secs(i64::try_from(end).unwrap_or(0)))
                        .scan_by(ScanBy::TimestampAscending)
                        .set_next_token(next.clone())
                        .send()
                })
                .await
                .map_err(ReadError::Aws)?;
            let mut events = Vec::new();
            for result in response.metric_data_results() {
                let Some(query) = result
                    .id()
                    .and_then(|id| id.strip_prefix('m'))
                    .and_then(|i| i.parse::<usize>().ok())
                    .and_then(|i| chunk.get(i))
                else {
                    tracing::warn!(chunk = chunk_index, id = ?result.id(), "GetMetricData answered an unknown query id");
                    continue;
                };
                for (timestamp, value) in result.timestamps().iter().zip(result.values()) {
                    let seconds = timestamp.secs();
                    // Only datapoints inside the window: a neighbour's period is read by
                    // the neighbouring window.
                    if seconds < i64::try_from(start).unwrap_or(0)
                        || seconds >= i64::try_from(end).unwrap_or(i64::MAX)
                    {
                        continue;
                    }
                    match datapoint_event(target, context, query, seconds, *value) {
                        Ok(json) => events.push(json),
                        Err(err) => tracing::warn!(error = %err, "cannot encode a metric event"),
                    }
                }
            }
            page(events).await.map_err(ReadError::Closed)?;
            next = response.next_token().map(str::to_owned);
            if next.is_none() {
                break;
            }
        }
    }
    Ok(())
}

/// Why a read stopped.
#[derive(Debug)]
pub enum ReadError<E> {
    Aws(AwsError),
    /// The consumer went away.
    Closed(E),
}

/// One datapoint as a canonical event.
pub fn datapoint_event(
    target: &Target,
    context: &MapContext,
    query: &ResolvedQuery,
    seconds: i64,
    value: f64,
) -> Result<String, serde_json::Error> {
    datapoint_json(
        &target.account,
        &target.region,
        context,
        query,
        seconds,
        value,
    )
}

fn datapoint_json(
    account: &str,
    region: &str,
    context: &MapContext,
    query: &ResolvedQuery,
    seconds: i64,
    value: f64,
) -> Result<String, serde_json::Error> {
    let dimensions = query.dimensions_text();
    let time = console::rfc3339_ms(seconds.saturating_mul(1000));
    let source_id = format!(
        "metric:{account}:{region}:{}:{}:{dimensions}:{}:{}:{seconds}",
        query.namespace, query.metric, query.stat, query.period
    );
    let correlation = format!(
        "aws:{account}:{region}:{}:{}:{dimensions}",
        query.namespace, query.metric
    );
    let original = serde_json::json!({
        "Namespace": query.namespace,
        "MetricName": query.metric,
        "Dimensions": query.dimensions.iter().map(|(n, v)| serde_json::json!({"Name": n, "Value": v})).collect::<Vec<_>>(),
        "Stat": query.stat,
        "Period": query.period,
        "Timestamp": time,
        "Value": value,
    });
    let mut builder = EventBuilder::new(
        "com.betalogs.system.metric",
        Category::System,
        console::source(account, region, "cloudwatch"),
        source_id,
        time.as_str(),
    )
    .subject(format!("{}/{}", query.namespace, query.metric))
    .correlation(correlation);
    builder = console::cloud_fields(builder, account, region)
        .field("aws.cloudwatch.namespace", query.namespace.as_str())
        .field("aws.cloudwatch.metric_name", query.metric.as_str())
        .field("aws.cloudwatch.stat", query.stat.as_str())
        .field("aws.cloudwatch.period", query.period)
        .field("aws.cloudwatch.dimensions", dimensions.as_str())
        .field("metric.value", value)
        .link(
            "metric",
            console::metric(
                region,
                &query.namespace,
                &query.metric,
                &query.dimensions,
                &query.stat,
                query.period,
            ),
        )
        .original(original);
    if let Some(service) = &query.service {
        builder = builder.field("service.name", service.as_str());
    }
    builder.to_json(context)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::validate_period;

    #[test]
    fn windows_are_aligned_contiguous_and_bounded() {
        // First poll: the backfill, aligned, ending `delay` ago.
        let first = window(10_000, 120, 300, None, 3600).expect("window");
        assert_eq!(first, (6000, 9600));
        // The next poll starts where the last ended: no gap, no overlap.
        assert_eq!(window(10_000, 120, 300, Some(first.1), 3600), None);
        assert_eq!(window(10_019, 120, 300, Some(first.1), 3600), None);
        assert_eq!(
            window(10_020, 120, 300, Some(first.1), 3600),
            Some((9600, 9900))
        );
        // Far behind: one day at most per poll.
        let (start, end) = window(1_000_000, 0, 60, Some(0), 3600).expect("window");
        assert_eq!((start, end), (0, MAX_WINDOW_SECONDS));
    }

    #[test]
    fn periods_are_the_ones_cloudwatch_accepts() {
        for ok in [1, 5, 10, 20, 30, 60, 300, 3600] {
            assert!(validate_period(ok).is_ok(), "{ok}");
        }
        for bad in [0, 2, 45, 90, 61] {
            assert!(validate_period(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_datapoint_is_a_schema_valid_metric_event_with_its_identity() {
        let query = ResolvedQuery {
            namespace: "AWS/EC2".into(),
            metric: "CPUUtilization".into(),
            dimensions: vec![("InstanceId".into(), "i-1".into())],
            stat: "Average".into(),
            period: 60,
            service: Some("checkout".into()),
        };
        let context = MapContext {
            tenant: "acme".into(),
            integration: "cw".into(),
        };
        let json = datapoint_json(
            "123456789012",
            "eu-west-1",
            &context,
            &query,
            1_700_000_040,
            42.5,
        )
        .expect("json");
        let event: plugin_kit::CanonicalEvent = serde_json::from_str(&json).expect("event");
        crate::schema_check::assert_valid(&json);
        let data = serde_json::to_value(&event.data).expect("data");
        assert_eq!(data["metric.value"], 42.5);
        assert_eq!(data["cloud.account.id"], "123456789012");
        assert_eq!(data["service.name"], "checkout");
        assert_eq!(
            event.correlationid.as_deref(),
            Some("aws:123456789012:eu-west-1:AWS/EC2:CPUUtilization:InstanceId=i-1")
        );
        assert_eq!(event.time, "2023-11-14T22:14:00.000Z");
        let again = datapoint_json(
            "123456789012",
            "eu-west-1",
            &context,
            &query,
            1_700_000_040,
            1.0,
        )
        .expect("json");
        let again: plugin_kit::CanonicalEvent = serde_json::from_str(&again).expect("event");
        assert_eq!(
            event.id, again.id,
            "the id comes from the datapoint's identity"
        );
    }
}
