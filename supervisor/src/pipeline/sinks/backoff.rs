//! Retrying a destination or a source that fails, the same way everywhere: exponential
//! backoff from `base` to `cap` with full jitter (plugin-kit's schedule), each failure
//! recorded for health, the first and every power of two logged, and the wait cut short
//! when the daemon stops.

use std::time::Duration;

use plugin_kit::resilience::RetryPolicy;
use tokio::sync::watch;

use super::SinkHealth;

/// The failures of one sink or source since it last worked.
#[derive(Debug)]
pub struct Backoff {
    policy: RetryPolicy,
    failures: u32,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            policy: RetryPolicy {
                max_attempts: u32::MAX,
                base,
                cap,
                max_wait: Duration::from_secs(3600),
            },
            failures: 0,
        }
    }

    /// Records `why` against `name` in `health`, logs it as `what` (the first failure
    /// and each power of two), and waits the next delay, or `after` when the other side
    /// asked for one (within the policy). False when told to stop meanwhile.
    pub async fn wait(
        &mut self,
        health: &SinkHealth,
        name: &str,
        what: &str,
        why: &str,
        after: Option<Duration>,
        stop: &mut watch::Receiver<bool>,
    ) -> bool {
        let delay = self
            .policy
            .delay(self.failures, after, rand::random::<f64>())
            .max(Duration::from_millis(10));
        self.failures += 1;
        health.failed(name, why);
        if self.failures == 1 || self.failures.is_power_of_two() {
            tracing::warn!(name, failures = self.failures, retry_in = ?delay, error = %why, "{what}");
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => true,
            changed = stop.changed() => !(changed.is_err() || *stop.borrow()),
        }
    }

    /// After a success: how many failures came before it, if any; the count starts over.
    pub fn recovered(&mut self) -> Option<u32> {
        (self.failures > 0).then(|| std::mem::take(&mut self.failures))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn failures_are_recorded_and_counted_until_a_success() {
        let health = SinkHealth::default();
        let (_keep, mut stop) = watch::channel(false);
        let mut backoff = Backoff::new(Duration::from_millis(1), Duration::from_millis(5));
        assert_eq!(backoff.recovered(), None);
        for _ in 0..3 {
            assert!(
                backoff
                    .wait(&health, "bus", "failed", "503", None, &mut stop)
                    .await
            );
        }
        assert_eq!(health.all()[0].failures, 3);
        assert_eq!(backoff.recovered(), Some(3));
        assert_eq!(backoff.recovered(), None);
    }

    #[tokio::test]
    async fn a_stop_cuts_the_wait_short() {
        let health = SinkHealth::default();
        let (tell, mut stop) = watch::channel(false);
        let mut backoff = Backoff::new(Duration::from_secs(3600), Duration::from_secs(3600));
        tell.send(true).expect("stop");
        assert!(
            !backoff
                .wait(&health, "bus", "failed", "down", None, &mut stop)
                .await
        );
    }
}
