//! A Prometheus histogram whose buckets are filled from another process's reports (a
//! plugin's call latencies) rather than by observing values here: the client library's
//! own histogram can only observe one value at a time.

use std::sync::{Arc, Mutex};

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

#[derive(Debug, Default)]
struct Totals {
    /// Upper bounds, ascending, then `+Inf`.
    bounds: Vec<f64>,
    /// Per bucket, not cumulative; one per bound.
    counts: Vec<u64>,
    sum: f64,
}

/// Cumulative since this daemon started; clones share the totals.
#[derive(Debug, Clone, Default)]
pub struct ReportedHistogram {
    totals: Arc<Mutex<Totals>>,
}

impl ReportedHistogram {
    /// Adds `counts` (one per bound in `bounds`, and one above the last) and `sum`.
    /// Different bounds from before start the totals over: buckets cannot be merged.
    pub fn add(&self, bounds: &[f64], counts: &[u64], sum: f64) {
        if counts.len() != bounds.len() + 1 {
            return;
        }
        let mut totals = self
            .totals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let with_infinity = bounds.iter().copied().chain([f64::INFINITY]);
        if !totals.bounds.iter().copied().eq(with_infinity.clone()) {
            *totals = Totals {
                bounds: with_infinity.collect(),
                counts: vec![0; counts.len()],
                sum: 0.0,
            };
        }
        for (total, count) in totals.counts.iter_mut().zip(counts) {
            *total = total.saturating_add(*count);
        }
        totals.sum += sum;
    }
}

impl TypedMetric for ReportedHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for ReportedHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let totals = self
            .totals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let buckets: Vec<(f64, u64)> = totals
            .bounds
            .iter()
            .copied()
            .zip(totals.counts.iter().copied())
            .collect();
        let count = totals.counts.iter().sum();
        encoder.encode_histogram::<NoLabelSet>(totals.sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}
