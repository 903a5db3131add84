//! A circuit breaker, sans I/O: callers pass the time. Closed, it lets calls through and
//! counts consecutive transient failures; at the threshold it opens and refuses calls
//! for the cool-down; then it is half-open and lets one probe call through, whose
//! outcome closes it again or re-opens it.

use std::time::{Duration, Instant};

/// Where the breaker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open { until: Instant },
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(&self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open { .. } => "open",
            BreakerState::HalfOpen => "half-open",
        }
    }
}

/// The breaker's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSettings {
    /// Consecutive transient failures that open it.
    pub failure_threshold: u32,
    /// How long it stays open before a probe.
    pub cool_down: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            cool_down: Duration::from_secs(30),
        }
    }
}

/// The breaker.
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    settings: BreakerSettings,
    state: BreakerState,
    failures: u32,
    probe_in_flight: bool,
}

/// A refused call: the breaker is open until then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub until: Instant,
}

impl CircuitBreaker {
    pub fn new(settings: BreakerSettings) -> Self {
        Self {
            settings,
            state: BreakerState::Closed,
            failures: 0,
            probe_in_flight: false,
        }
    }

    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// Whether a call may go now (a half-open breaker lets one probe through).
    pub fn allow(&mut self, now: Instant) -> Result<(), Refused> {
        match self.state {
            BreakerState::Closed => Ok(()),
            BreakerState::Open { until } if now < until => Err(Refused { until }),
            BreakerState::Open { .. } | BreakerState::HalfOpen => {
                if self.probe_in_flight {
                    return Err(Refused {
                        until: now + self.settings.cool_down.min(Duration::from_secs(1)),
                    });
                }
                self.state = BreakerState::HalfOpen;
                self.probe_in_flight = true;
                Ok(())
            }
        }
    }

    /// A call succeeded (or failed permanently, which says nothing of the service).
    pub fn on_success(&mut self) {
        self.state = BreakerState::Closed;
        self.failures = 0;
        self.probe_in_flight = false;
    }

    /// A call failed transiently.
    pub fn on_failure(&mut self, now: Instant) {
        self.probe_in_flight = false;
        match self.state {
            BreakerState::HalfOpen => self.open(now),
            BreakerState::Closed => {
                self.failures += 1;
                if self.failures >= self.settings.failure_threshold {
                    self.open(now);
                }
            }
            BreakerState::Open { .. } => {}
        }
    }

    fn open(&mut self, now: Instant) {
        self.state = BreakerState::Open {
            until: now + self.settings.cool_down,
        };
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> CircuitBreaker {
        CircuitBreaker::new(BreakerSettings {
            failure_threshold: 3,
            cool_down: Duration::from_secs(10),
        })
    }

    #[test]
    fn opens_after_consecutive_failures_and_probes_after_the_cool_down() {
        let start = Instant::now();
        let mut b = breaker();
        for _ in 0..2 {
            b.allow(start).expect("closed");
            b.on_failure(start);
        }
        b.on_success();
        for _ in 0..3 {
            b.allow(start).expect("closed: the success reset the count");
            b.on_failure(start);
        }
        assert_eq!(b.state().as_str(), "open");
        assert_eq!(
            b.allow(start + Duration::from_secs(9)),
            Err(Refused {
                until: start + Duration::from_secs(10)
            })
        );
        let later = start + Duration::from_secs(10);
        b.allow(later).expect("one probe");
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(b.allow(later).is_err(), "only one probe at a time");
        b.on_failure(later);
        assert!(
            matches!(b.state(), BreakerState::Open { until } if until == later + Duration::from_secs(10))
        );
        let again = later + Duration::from_secs(10);
        b.allow(again).expect("probe");
        b.on_success();
        assert_eq!(b.state(), BreakerState::Closed);
        b.allow(again).expect("closed");
    }
}
