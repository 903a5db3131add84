//! Which failures are worth retrying, and when: exponential backoff with full jitter
//! (a random wait between zero and the exponential bound, as AWS's architecture blog
//! recommends), capped, unless the service said when (`Retry-After`, a rate-limit reset).

use std::time::Duration;

/// What a call's result means for retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Success,
    /// Worth trying again (throttled, unavailable, timed out), after `after` if the
    /// service said so.
    Transient {
        after: Option<Duration>,
    },
    /// Retrying cannot help (bad request, not found, forbidden).
    Permanent,
}

/// The retry settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    pub base: Duration,
    pub cap: Duration,
    /// A service asking for a longer wait than this fails the call instead.
    pub max_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            base: Duration::from_millis(200),
            cap: Duration::from_secs(20),
            max_wait: Duration::from_secs(120),
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `attempt + 1` (0-based `attempt` just failed), with
    /// `unit` a uniform random number in [0, 1).
    pub fn delay(&self, attempt: u32, after: Option<Duration>, unit: f64) -> Duration {
        if let Some(after) = after {
            return after;
        }
        let exponential = self
            .base
            .saturating_mul(2u32.saturating_pow(attempt.min(30)))
            .min(self.cap);
        exponential.mul_f64(unit.clamp(0.0, 1.0))
    }
}

/// The verdict on an HTTP status and its headers (`Retry-After` in seconds;
/// GitHub-style `x-ratelimit-remaining: 0` with `x-ratelimit-reset` in Unix seconds).
pub fn http_verdict(
    status: u16,
    header: impl Fn(&str) -> Option<String>,
    now_unix: u64,
) -> Verdict {
    let retry_after = header("retry-after")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let exhausted = header("x-ratelimit-remaining").is_some_and(|v| v.trim() == "0");
    let reset = header("x-ratelimit-reset")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|reset| Duration::from_secs(reset.saturating_sub(now_unix).max(1)));
    match status {
        200..=399 => Verdict::Success,
        429 => Verdict::Transient {
            after: retry_after.or(reset),
        },
        // GitHub answers an exhausted quota (primary or secondary) with 403.
        403 if retry_after.is_some() || exhausted => Verdict::Transient {
            after: retry_after.or(reset),
        },
        408 | 425 | 500 | 502 | 503 | 504 => Verdict::Transient { after: retry_after },
        _ => Verdict::Permanent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn statuses_and_rate_limit_headers_decide_the_verdict() {
        assert_eq!(http_verdict(200, headers(&[]), 0), Verdict::Success);
        assert_eq!(http_verdict(404, headers(&[]), 0), Verdict::Permanent);
        assert_eq!(
            http_verdict(403, headers(&[]), 0),
            Verdict::Permanent,
            "a plain 403 is a permission"
        );
        assert_eq!(
            http_verdict(429, headers(&[("Retry-After", "3")]), 0),
            Verdict::Transient {
                after: Some(Duration::from_secs(3))
            }
        );
        assert_eq!(
            http_verdict(
                403,
                headers(&[
                    ("x-ratelimit-remaining", "0"),
                    ("x-ratelimit-reset", "1060")
                ]),
                1000
            ),
            Verdict::Transient {
                after: Some(Duration::from_secs(60))
            }
        );
        assert_eq!(
            http_verdict(503, headers(&[]), 0),
            Verdict::Transient { after: None }
        );
    }

    #[test]
    fn backoff_is_full_jitter_under_a_capped_exponential() {
        let policy = RetryPolicy {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(1),
            ..RetryPolicy::default()
        };
        assert_eq!(policy.delay(0, None, 0.999_999).as_millis(), 99);
        assert_eq!(policy.delay(2, None, 0.5), Duration::from_millis(200));
        assert_eq!(
            policy.delay(10, None, 0.5),
            Duration::from_millis(500),
            "capped"
        );
        assert_eq!(policy.delay(0, None, 0.0), Duration::ZERO);
        assert_eq!(
            policy.delay(3, Some(Duration::from_secs(7)), 0.5),
            Duration::from_secs(7)
        );
    }
}
