//! Per-tenant request rates at the ingress: a GCRA limiter (governor) keyed by tenant,
//! so one tenant's flood is answered 429 without slowing the others.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// The tenants' limiter.
#[derive(Debug)]
pub struct TenantRates {
    limiter: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
}

impl TenantRates {
    /// `per_second` sustained, bursts up to `burst` (both at least 1).
    pub fn new(per_second: u32, burst: u32) -> Self {
        let per_second = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        let clock = DefaultClock::default();
        Self {
            limiter: RateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst)),
            clock,
        }
    }

    /// `Ok` when the tenant may make a request now, else how long until it may.
    pub fn check(&self, tenant: &str) -> Result<(), Duration> {
        self.limiter
            .check_key(&tenant.to_owned())
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_over_its_burst_is_refused_and_others_are_not() {
        let rates = TenantRates::new(1, 3);
        for _ in 0..3 {
            rates.check("acme").expect("within the burst");
        }
        let wait = rates.check("acme").expect_err("over the burst");
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
        rates.check("globex").expect("another tenant is unaffected");
    }
}
