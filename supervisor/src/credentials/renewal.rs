//! When to renew an expiring credential: at two thirds of its lifetime, and at the latest
//! 15 minutes before it expires. Pure: tested with plain numbers.

/// Renewal happens no later than this before expiry.
pub const LATEST_BEFORE_EXPIRY_MS: u64 = 15 * 60 * 1000;

/// The Unix millisecond at which a credential issued at `issued_ms` and expiring at
/// `expires_ms` is due for renewal.
pub fn renew_at(issued_ms: u64, expires_ms: u64) -> u64 {
    let lifetime = expires_ms.saturating_sub(issued_ms);
    let two_thirds = issued_ms + lifetime / 3 * 2;
    let latest = expires_ms.saturating_sub(LATEST_BEFORE_EXPIRY_MS);
    two_thirds.min(latest).max(issued_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: u64 = 60_000;

    #[test]
    fn two_thirds_of_the_lifetime_or_fifteen_minutes_before_whichever_is_first() {
        assert_eq!(
            renew_at(0, 60 * MINUTE),
            40 * MINUTE,
            "a one-hour token at 40 minutes"
        );
        assert_eq!(
            renew_at(0, 24 * 60 * MINUTE),
            16 * 60 * MINUTE,
            "a day at 16 hours"
        );
        assert_eq!(
            renew_at(0, 30 * MINUTE),
            15 * MINUTE,
            "30 minutes: 15 before beats two thirds"
        );
        assert_eq!(
            renew_at(1000, 1000 + 10 * MINUTE),
            1000,
            "shorter than 15 minutes: at once"
        );
        assert_eq!(renew_at(5000, 4000), 5000, "already expired: at once");
    }
}
