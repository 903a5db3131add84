//! Counting the calls a plugin makes to an external dependency. The plugin records
//! each attempt ([`CallRecorder`]) and reports the cumulative totals in
//! `DependencyStatus.calls`; the host turns successive reports into increments
//! ([`increments`]). Both sides share this module so that they agree on the outcomes,
//! the buckets and what a restarted plugin's counters look like.

use std::time::Duration;

use crate::v1;

/// What became of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallOutcome {
    Ok,
    /// A transient failure: retried, or would have been with attempts left.
    RetryableError,
    /// A permanent failure (a 4xx, say): not retried.
    Error,
    /// Not made: the circuit breaker is open.
    RefusedByBreaker,
}

impl CallOutcome {
    pub const ALL: [Self; 4] = [
        Self::Ok,
        Self::RetryableError,
        Self::Error,
        Self::RefusedByBreaker,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::RetryableError => "retryable_error",
            Self::Error => "error",
            Self::RefusedByBreaker => "refused_by_breaker",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == text)
    }

    fn index(self) -> usize {
        match self {
            Self::Ok => 0,
            Self::RetryableError => 1,
            Self::Error => 2,
            Self::RefusedByBreaker => 3,
        }
    }
}

/// Latency bucket bounds in seconds, 5 ms to 30 s: the range of an API call.
pub const CALL_LATENCY_BOUNDS_SECONDS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The most latency buckets the host takes from a report (a hostile plugin cannot
/// make it keep more).
pub const MAX_LATENCY_BUCKETS: usize = 32;

/// A plugin's running totals for one dependency.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallRecorder {
    attempts: [u64; 4],
    /// One per bound, and one above the last.
    latency_counts: [u64; CALL_LATENCY_BOUNDS_SECONDS.len() + 1],
    latency_sum_seconds: f64,
}

impl CallRecorder {
    /// One attempt; `latency` is `None` for one the breaker refused.
    pub fn record(&mut self, outcome: CallOutcome, latency: Option<Duration>) {
        self.attempts[outcome.index()] += 1;
        if let Some(latency) = latency {
            let seconds = latency.as_secs_f64();
            let bucket = CALL_LATENCY_BOUNDS_SECONDS
                .iter()
                .position(|bound| seconds <= *bound)
                .unwrap_or(CALL_LATENCY_BOUNDS_SECONDS.len());
            self.latency_counts[bucket] += 1;
            self.latency_sum_seconds += seconds;
        }
    }

    /// The totals as reported.
    pub fn snapshot(&self) -> v1::CallStats {
        v1::CallStats {
            attempts: CallOutcome::ALL
                .into_iter()
                .filter(|o| self.attempts[o.index()] > 0)
                .map(|o| (o.as_str().to_owned(), self.attempts[o.index()]))
                .collect(),
            latency_bounds_seconds: CALL_LATENCY_BOUNDS_SECONDS.to_vec(),
            latency_counts: self.latency_counts.to_vec(),
            latency_sum_seconds: self.latency_sum_seconds,
        }
    }
}

/// What happened between two reports.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallIncrements {
    pub attempts: Vec<(CallOutcome, u64)>,
    /// `None` when the report's histogram is unusable (see [`increments`]).
    pub latency: Option<LatencyIncrement>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LatencyIncrement {
    pub bounds_seconds: Vec<f64>,
    /// One per bound and one above the last, not cumulative.
    pub counts: Vec<u64>,
    pub sum_seconds: f64,
}

/// Whether `stats` carries a histogram the host can keep: at most
/// [`MAX_LATENCY_BUCKETS`] finite, strictly ascending bounds with one count more.
fn usable_latency(stats: &v1::CallStats) -> bool {
    let bounds = &stats.latency_bounds_seconds;
    bounds.len() <= MAX_LATENCY_BUCKETS
        && stats.latency_counts.len() == bounds.len() + 1
        && bounds.iter().all(|b| b.is_finite())
        && bounds.windows(2).all(|w| w[0] < w[1])
        && stats.latency_sum_seconds.is_finite()
        && stats.latency_sum_seconds >= 0.0
}

/// The increments from `previous` (the last report from the same plugin process, if
/// any) to `current`. A total that went down means the plugin restarted and counts
/// from zero again: `current` is then taken whole. Unknown outcomes are dropped, and
/// so is a histogram that is malformed or whose bounds changed.
pub fn increments(previous: Option<&v1::CallStats>, current: &v1::CallStats) -> CallIncrements {
    let attempts_of = |stats: &v1::CallStats, outcome: CallOutcome| {
        stats.attempts.get(outcome.as_str()).copied().unwrap_or(0)
    };
    let restarted = previous.is_some_and(|previous| {
        CallOutcome::ALL
            .into_iter()
            .any(|o| attempts_of(current, o) < attempts_of(previous, o))
            || previous
                .latency_counts
                .iter()
                .zip(&current.latency_counts)
                .any(|(before, now)| now < before)
    });
    let previous = previous.filter(|_| !restarted);
    let attempts = CallOutcome::ALL
        .into_iter()
        .filter_map(|o| {
            let before = previous.map_or(0, |p| attempts_of(p, o));
            let delta = attempts_of(current, o).saturating_sub(before);
            (delta > 0).then_some((o, delta))
        })
        .collect();
    let latency = usable_latency(current).then(|| {
        let comparable = previous.filter(|p| {
            p.latency_bounds_seconds == current.latency_bounds_seconds && usable_latency(p)
        });
        LatencyIncrement {
            bounds_seconds: current.latency_bounds_seconds.clone(),
            counts: current
                .latency_counts
                .iter()
                .enumerate()
                .map(|(i, now)| now.saturating_sub(comparable.map_or(0, |p| p.latency_counts[i])))
                .collect(),
            sum_seconds: (current.latency_sum_seconds
                - comparable.map_or(0.0, |p| p.latency_sum_seconds))
            .max(0.0),
        }
    });
    CallIncrements { attempts, latency }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorded(calls: &[(CallOutcome, Option<u64>)]) -> CallRecorder {
        let mut recorder = CallRecorder::default();
        for (outcome, millis) in calls {
            recorder.record(*outcome, millis.map(Duration::from_millis));
        }
        recorder
    }

    #[test]
    fn attempts_land_in_their_outcome_and_latency_bucket() {
        let stats = recorded(&[
            (CallOutcome::Ok, Some(3)),
            (CallOutcome::Ok, Some(40)),
            (CallOutcome::RetryableError, Some(60_000)),
            (CallOutcome::RefusedByBreaker, None),
        ])
        .snapshot();
        assert_eq!(stats.attempts["ok"], 2);
        assert_eq!(stats.attempts["retryable_error"], 1);
        assert_eq!(stats.attempts["refused_by_breaker"], 1);
        assert!(!stats.attempts.contains_key("error"));
        assert_eq!(
            stats.latency_counts.len(),
            stats.latency_bounds_seconds.len() + 1
        );
        assert_eq!(stats.latency_counts[0], 1, "3 ms <= 5 ms");
        assert_eq!(stats.latency_counts[3], 1, "40 ms <= 50 ms");
        assert_eq!(stats.latency_counts[12], 1, "60 s is above the last bound");
        assert_eq!(
            stats.latency_counts.iter().sum::<u64>(),
            3,
            "refusals have no latency"
        );
        assert!((stats.latency_sum_seconds - 60.043).abs() < 1e-9);
    }

    #[test]
    fn increments_are_the_differences_and_a_restart_counts_from_zero() {
        let mut recorder = recorded(&[(CallOutcome::Ok, Some(3)), (CallOutcome::Error, Some(3))]);
        let first = recorder.snapshot();
        let whole = increments(None, &first);
        assert_eq!(
            whole.attempts,
            [(CallOutcome::Ok, 1), (CallOutcome::Error, 1)]
        );
        recorder.record(CallOutcome::Ok, Some(Duration::from_millis(200)));
        let second = recorder.snapshot();
        let delta = increments(Some(&first), &second);
        assert_eq!(delta.attempts, [(CallOutcome::Ok, 1)]);
        let latency = delta.latency.expect("histogram");
        assert_eq!(latency.counts.iter().sum::<u64>(), 1);
        assert_eq!(latency.counts[5], 1, "200 ms <= 250 ms");
        assert!((latency.sum_seconds - 0.2).abs() < 1e-9);
        // The plugin restarted: its totals went down.
        let fresh = recorded(&[(CallOutcome::Ok, Some(3))]).snapshot();
        assert_eq!(
            increments(Some(&second), &fresh).attempts,
            [(CallOutcome::Ok, 1)]
        );
        assert!(increments(Some(&second), &second).attempts.is_empty());
    }

    #[test]
    fn hostile_reports_lose_only_their_bad_parts() {
        let mut stats = recorded(&[(CallOutcome::Ok, Some(3))]).snapshot();
        stats.attempts.insert("made-up".to_owned(), u64::MAX);
        stats.latency_counts.pop();
        let taken = increments(None, &stats);
        assert_eq!(taken.attempts, [(CallOutcome::Ok, 1)]);
        assert_eq!(taken.latency, None, "counts and bounds disagree");
        let mut unordered = recorded(&[]).snapshot();
        unordered.latency_bounds_seconds.swap(0, 1);
        assert_eq!(increments(None, &unordered).latency, None);
        let mut huge = recorded(&[]).snapshot();
        huge.latency_bounds_seconds = (0..1000).map(f64::from).collect();
        huge.latency_counts = vec![0; 1001];
        assert_eq!(increments(None, &huge).latency, None);
        let mut negative = recorded(&[]).snapshot();
        negative.latency_sum_seconds = f64::NAN;
        assert_eq!(increments(None, &negative).latency, None);
    }
}
