//! Calling external services without hammering them or hanging on them: retries with
//! exponential backoff and full jitter for transient failures only, `Retry-After` and
//! rate-limit resets honoured, a token-bucket budget that several clients share (one
//! per credential or account), and a circuit breaker. [`Resilience::run`] wraps any
//! async call (an AWS SDK call, say) given a verdict on its result;
//! [`ResilientHttp`] is the same around reqwest. Every attempt is counted by outcome
//! and timed, and reported with the breaker's state, so the host's metrics show each
//! dependency's calls without the plugin doing anything.

mod breaker;
mod classify;
mod http;
mod retry;

use std::future::Future;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use plugin_protocol::{CallOutcome, CallRecorder};

pub use breaker::{BreakerSettings, BreakerState, CircuitBreaker, Refused};
pub use classify::{Failures, aws_class, reqwest_class};
pub use http::ResilientHttp;
/// The HTTP client [`ResilientHttp`] takes requests for, so a plugin names its types
/// without a version of its own.
pub use reqwest;
pub use retry::{RetryPolicy, Verdict, http_verdict};

/// A request budget (token bucket) to share between every client spending one
/// credential's or account's quota.
pub type RateBudget = governor::DefaultDirectRateLimiter;

/// A budget of `per_second` requests with bursts up to `burst`.
pub fn rate_budget(per_second: u32, burst: u32) -> Arc<RateBudget> {
    let per_second = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    Arc::new(governor::RateLimiter::direct(
        governor::Quota::per_second(per_second).allow_burst(burst),
    ))
}

/// Why a call did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum CallError<E: std::error::Error + 'static> {
    #[error("{name}: circuit open after repeated failures; next try in {retry_in:?}")]
    BreakerOpen { name: String, retry_in: Duration },
    #[error("{name}: failed after {attempts} attempt(s): {cause}")]
    Failed {
        name: String,
        attempts: u32,
        cause: E,
    },
}

/// Retries, budget and breaker for one dependency (a service endpoint, an account and
/// region).
#[derive(Debug)]
pub struct Resilience {
    name: String,
    retry: RetryPolicy,
    breaker: Mutex<CircuitBreaker>,
    budget: Option<Arc<RateBudget>>,
    calls: Mutex<CallRecorder>,
}

impl Resilience {
    pub fn new(name: impl Into<String>, retry: RetryPolicy, breaker: BreakerSettings) -> Self {
        Self {
            name: name.into(),
            retry,
            breaker: Mutex::new(CircuitBreaker::new(breaker)),
            budget: None,
            calls: Mutex::default(),
        }
    }

    /// Spends `budget` (shared with others) before each attempt.
    pub fn with_budget(mut self, budget: Arc<RateBudget>) -> Self {
        self.budget = Some(budget);
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The breaker's state, for health and status reports.
    pub fn breaker_state(&self) -> BreakerState {
        self.breaker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .state()
    }

    /// This dependency as the plugin reports it (`Plugin::dependencies`).
    pub fn status(&self) -> plugin_protocol::v1::DependencyStatus {
        let state = self.breaker_state();
        let detail = match state {
            BreakerState::Open { until } => format!(
                "refusing calls for {:?} after repeated failures",
                until.saturating_duration_since(Instant::now())
            ),
            BreakerState::HalfOpen => "probing".to_owned(),
            BreakerState::Closed => String::new(),
        };
        plugin_protocol::v1::DependencyStatus {
            name: self.name.clone(),
            breaker: state.as_str().to_owned(),
            detail,
            calls: Some(self.calls().snapshot()),
        }
    }

    fn calls(&self) -> std::sync::MutexGuard<'_, CallRecorder> {
        self.calls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn breaker(&self) -> std::sync::MutexGuard<'_, CircuitBreaker> {
        self.breaker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `call` until it succeeds, fails permanently, runs out of attempts, or the
    /// breaker opens. A transient `Ok` (an HTTP 503, say) on the last attempt is
    /// returned as it is, for the caller to read.
    pub async fn run<T, E, F, Fut>(
        &self,
        mut call: F,
        verdict: impl Fn(&Result<T, E>) -> Verdict,
    ) -> Result<T, CallError<E>>
    where
        E: std::error::Error + 'static,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut attempt = 0;
        loop {
            let now = Instant::now();
            if let Err(refused) = self.breaker().allow(now) {
                self.calls().record(CallOutcome::RefusedByBreaker, None);
                return Err(CallError::BreakerOpen {
                    name: self.name.clone(),
                    retry_in: refused.until.saturating_duration_since(now),
                });
            }
            if let Some(budget) = &self.budget {
                budget.until_ready().await;
            }
            let started = Instant::now();
            let result = call().await;
            let latency = Some(started.elapsed());
            attempt += 1;
            let after = match verdict(&result) {
                verdict @ (Verdict::Success | Verdict::Permanent) => {
                    let outcome = if verdict == Verdict::Success {
                        CallOutcome::Ok
                    } else {
                        CallOutcome::Error
                    };
                    self.calls().record(outcome, latency);
                    self.breaker().on_success();
                    return self.finish(result, attempt);
                }
                Verdict::Transient { after } => {
                    self.calls().record(CallOutcome::RetryableError, latency);
                    self.breaker().on_failure(Instant::now());
                    after
                }
            };
            let wait = self.retry.delay(attempt - 1, after, rand::random::<f64>());
            if attempt >= self.retry.max_attempts || wait > self.retry.max_wait {
                return self.finish(result, attempt);
            }
            tracing::debug!(dependency = %self.name, attempt, wait = ?wait, "transient failure; retrying");
            tokio::time::sleep(wait).await;
        }
    }

    fn finish<T, E: std::error::Error + 'static>(
        &self,
        result: Result<T, E>,
        attempts: u32,
    ) -> Result<T, CallError<E>> {
        result.map_err(|source| CallError::Failed {
            name: self.name.clone(),
            attempts,
            cause: source,
        })
    }
}
