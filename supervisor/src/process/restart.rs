//! The restart policy: exponential backoff with jitter, reset after a healthy period,
//! and crash-loop detection. A plain state machine driven with injected time.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Tuning, from `[process]` in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartSettings {
    pub initial_delay: Duration,
    pub max_delay: Duration,
    pub reset_after: Duration,
    /// More restarts than this within `window` is a crash loop.
    pub crash_loop_restarts: u32,
    pub window: Duration,
}

/// What to do after an exit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RestartDecision {
    pub delay: Duration,
    pub crash_loop: bool,
}

/// Backoff state of one plugin instance.
#[derive(Debug, Clone)]
pub struct RestartPolicy {
    settings: RestartSettings,
    /// Consecutive failed runs since the last reset.
    attempt: u32,
    recent_exits: VecDeque<Instant>,
    healthy_since: Option<Instant>,
}

/// Jitter takes up to this fraction off a delay, never adds to it, so the configured
/// delays are upper bounds an operator can rely on.
const JITTER_FRACTION: f64 = 0.2;

impl RestartPolicy {
    pub fn new(settings: RestartSettings) -> Self {
        Self {
            settings,
            attempt: 0,
            recent_exits: VecDeque::new(),
            healthy_since: None,
        }
    }

    /// The instance answered its first health check at `now`.
    pub fn on_healthy(&mut self, now: Instant) {
        self.healthy_since.get_or_insert(now);
    }

    /// An operator asked for a restart: start over, with no backoff.
    pub fn reset(&mut self) {
        self.attempt = 0;
        self.recent_exits.clear();
        self.healthy_since = None;
    }

    /// The instance crashed, hung or failed to start at `now`. `random` in `[0, 1)`
    /// picks the jitter.
    pub fn on_exit(&mut self, now: Instant, random: f64) -> RestartDecision {
        if let Some(since) = self.healthy_since.take()
            && now.saturating_duration_since(since) >= self.settings.reset_after
        {
            self.attempt = 0;
        }
        self.recent_exits.push_back(now);
        while let Some(&oldest) = self.recent_exits.front() {
            if now.saturating_duration_since(oldest) > self.settings.window {
                self.recent_exits.pop_front();
            } else {
                break;
            }
        }
        let crash_loop = self.recent_exits.len() > self.settings.crash_loop_restarts as usize;
        let exponential = self
            .settings
            .initial_delay
            .saturating_mul(2u32.saturating_pow(self.attempt.min(31)));
        let base = if crash_loop {
            self.settings.max_delay
        } else {
            exponential.min(self.settings.max_delay)
        };
        self.attempt = self.attempt.saturating_add(1);
        let jitter = 1.0 - JITTER_FRACTION * random.clamp(0.0, 1.0);
        RestartDecision {
            delay: base.mul_f64(jitter),
            crash_loop,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> RestartSettings {
        RestartSettings {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
            reset_after: Duration::from_secs(30),
            crash_loop_restarts: 5,
            window: Duration::from_secs(60),
        }
    }

    #[test]
    fn delays_double_from_the_first_and_are_capped() {
        let mut policy = RestartPolicy::new(settings());
        let start = Instant::now();
        let delays: Vec<u128> = (0..8)
            .map(|i| {
                policy
                    .on_exit(start + Duration::from_secs(100 * i), 0.0)
                    .delay
                    .as_millis()
            })
            .collect();
        assert_eq!(delays, vec![100, 200, 400, 800, 1600, 3200, 5000, 5000]);
    }

    #[test]
    fn jitter_only_shortens() {
        let mut policy = RestartPolicy::new(settings());
        let decision = policy.on_exit(Instant::now(), 0.999);
        assert!(decision.delay <= Duration::from_millis(100));
        assert!(decision.delay >= Duration::from_millis(80));
    }

    #[test]
    fn five_crashes_in_a_minute_is_not_a_loop_six_is() {
        let mut policy = RestartPolicy::new(settings());
        let start = Instant::now();
        for i in 0..5 {
            assert!(
                !policy
                    .on_exit(start + Duration::from_secs(i), 0.0)
                    .crash_loop
            );
        }
        let sixth = policy.on_exit(start + Duration::from_secs(5), 0.0);
        assert!(sixth.crash_loop);
        assert_eq!(
            sixth.delay,
            Duration::from_secs(5),
            "a crash loop retries at the cap"
        );
    }

    #[test]
    fn crashes_spread_over_time_are_not_a_loop() {
        let mut policy = RestartPolicy::new(settings());
        let start = Instant::now();
        for i in 0..20 {
            assert!(
                !policy
                    .on_exit(start + Duration::from_secs(61 * i), 0.0)
                    .crash_loop
            );
        }
    }

    #[test]
    fn a_healthy_period_resets_the_backoff() {
        let mut policy = RestartPolicy::new(settings());
        let start = Instant::now();
        for i in 0..4 {
            policy.on_exit(start + Duration::from_secs(i), 0.0);
        }
        policy.on_healthy(start + Duration::from_secs(10));
        let short = policy.on_exit(start + Duration::from_secs(20), 0.0);
        assert_eq!(
            short.delay,
            Duration::from_millis(1600),
            "healthy for 10s < reset_after: no reset"
        );
        policy.on_healthy(start + Duration::from_secs(30));
        let reset = policy.on_exit(start + Duration::from_secs(61), 0.0);
        assert_eq!(reset.delay, Duration::from_millis(100));
    }

    #[test]
    fn operator_reset_clears_everything() {
        let mut policy = RestartPolicy::new(settings());
        let start = Instant::now();
        for i in 0..7 {
            policy.on_exit(start + Duration::from_millis(i), 0.0);
        }
        policy.reset();
        let decision = policy.on_exit(start + Duration::from_millis(8), 0.0);
        assert_eq!(
            decision,
            RestartDecision {
                delay: Duration::from_millis(100),
                crash_loop: false
            }
        );
    }
}
