//! Request rates at the ingress: a GCRA limiter (governor) keyed by tenant, so one
//! tenant's flood is answered 429 without slowing the others, and one keyed by client
//! address for deliveries that fail authentication: junk from anyone spends that
//! sender's budget, never the tenant's.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

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

/// Senders whose deliveries keep failing authentication.
#[derive(Debug)]
pub struct AuthFailures {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
    /// Addresses over their budget, until when.
    blocked: Mutex<HashMap<IpAddr, Instant>>,
}

/// How many addresses are remembered before the forgotten ones are dropped.
const REMEMBERED_ADDRESSES: usize = 10_000;

impl AuthFailures {
    /// `per_minute` failures per address, all at once at the most.
    pub fn new(per_minute: u32) -> Self {
        let per_minute = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
        Self {
            limiter: RateLimiter::keyed(Quota::per_minute(per_minute).allow_burst(per_minute)),
            clock: DefaultClock::default(),
            blocked: Mutex::default(),
        }
    }

    fn blocked(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Instant>> {
        self.blocked.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `Ok` unless `client` is over its failure budget; else how long until it is not.
    pub fn check(&self, client: IpAddr) -> Result<(), Duration> {
        let now = Instant::now();
        match self.blocked().get(&client) {
            Some(until) if *until > now => Err(*until - now),
            _ => Ok(()),
        }
    }

    /// Counts one failed delivery from `client`.
    pub fn record(&self, client: IpAddr) {
        if let Err(not_until) = self.limiter.check_key(&client) {
            let wait = not_until.wait_time_from(self.clock.now());
            let mut blocked = self.blocked();
            if blocked.len() >= REMEMBERED_ADDRESSES {
                let now = Instant::now();
                blocked.retain(|_, until| *until > now);
                self.limiter.retain_recent();
            }
            blocked.insert(client, Instant::now() + wait);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_block_only_the_address_that_sent_them() {
        let failures = AuthFailures::new(3);
        let (bad, good): (IpAddr, IpAddr) = (
            "192.0.2.1".parse().expect("ip"),
            "192.0.2.2".parse().expect("ip"),
        );
        for _ in 0..3 {
            failures.check(bad).expect("within the budget");
            failures.record(bad);
        }
        failures
            .check(bad)
            .expect("the budget is spent, not exceeded");
        failures.record(bad);
        let wait = failures.check(bad).expect_err("over the budget");
        assert!(wait <= Duration::from_secs(60), "{wait:?}");
        failures.check(good).expect("another sender is unaffected");
    }

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
