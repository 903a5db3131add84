//! How many stderr lines per second one plugin may have re-emitted. Past the budget,
//! lines are counted and dropped, so a plugin flooding its stderr costs the supervisor
//! a read and a counter, not a log write.

use std::time::{Duration, Instant};

/// Per-second line budget for one plugin's stderr.
#[derive(Debug, Clone)]
pub struct LogBudget {
    per_second: u32,
    window_start: Instant,
    used: u32,
    dropped: u64,
}

/// What to do with one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineVerdict {
    /// Emit it; `dropped_before` lines were dropped since the last emitted one.
    Emit {
        dropped_before: u64,
    },
    Drop,
}

impl LogBudget {
    pub fn new(per_second: u32, now: Instant) -> Self {
        Self {
            per_second,
            window_start: now,
            used: 0,
            dropped: 0,
        }
    }

    pub fn on_line(&mut self, now: Instant) -> LineVerdict {
        if now.saturating_duration_since(self.window_start) >= Duration::from_secs(1) {
            self.window_start = now;
            self.used = 0;
        }
        if self.used < self.per_second {
            self.used += 1;
            LineVerdict::Emit {
                dropped_before: std::mem::take(&mut self.dropped),
            }
        } else {
            self.dropped += 1;
            LineVerdict::Drop
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_past_the_budget_and_reports_the_count() {
        let start = Instant::now();
        let mut budget = LogBudget::new(2, start);
        assert_eq!(
            budget.on_line(start),
            LineVerdict::Emit { dropped_before: 0 }
        );
        assert_eq!(
            budget.on_line(start),
            LineVerdict::Emit { dropped_before: 0 }
        );
        assert_eq!(budget.on_line(start), LineVerdict::Drop);
        assert_eq!(
            budget.on_line(start + Duration::from_millis(999)),
            LineVerdict::Drop
        );
        let next = start + Duration::from_secs(1);
        assert_eq!(
            budget.on_line(next),
            LineVerdict::Emit { dropped_before: 2 }
        );
        assert_eq!(
            budget.on_line(next),
            LineVerdict::Emit { dropped_before: 0 }
        );
    }
}
