//! The one wall clock of the workspace: the daemon stamps events, audit records and
//! tokens with it, and plugins judge expiries and windows by it. Kept in one place so
//! that every component agrees on its unit (Unix milliseconds) and on what a clock set
//! before 1970 reads as (zero, never a panic).

use std::time::{SystemTime, UNIX_EPOCH};

/// Unix milliseconds of `time` (0 before the epoch).
pub fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    unix_ms(SystemTime::now())
}

/// Unix milliseconds as RFC 3339 in UTC with milliseconds (`2026-12-01T10:00:00.000Z`),
/// the form events and API answers write times in.
pub fn rfc3339_ms(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + std::time::Duration::from_millis(ms)).to_string()
}

/// Unix seconds now.
pub fn now_secs() -> u64 {
    now_ms() / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_round_trip_and_the_epoch_is_zero() {
        assert_eq!(unix_ms(UNIX_EPOCH), 0);
        let then = UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123);
        assert_eq!(unix_ms(then), 1_700_000_000_123);
        assert!(now_ms() > 1_700_000_000_000);
        assert_eq!(now_secs(), now_ms() / 1000);
        assert_eq!(rfc3339_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }
}
