//! The heartbeat policy: how many consecutive missed health checks make a plugin
//! degraded, and how many make it hung (to be killed and restarted).

/// What the supervisor should conclude after one heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Healthy,
    /// Missed at least one heartbeat, not yet enough to kill it.
    Degraded {
        missed: u32,
    },
    /// Missed `misses_allowed` in a row: kill and restart.
    Hung {
        missed: u32,
    },
}

/// Counts consecutive misses.
#[derive(Debug, Clone)]
pub struct HeartbeatPolicy {
    misses_allowed: u32,
    missed: u32,
}

impl HeartbeatPolicy {
    pub fn new(misses_allowed: u32) -> Self {
        Self {
            misses_allowed: misses_allowed.max(1),
            missed: 0,
        }
    }

    /// `answered`: the check returned SERVING within its timeout.
    pub fn on_result(&mut self, answered: bool) -> Verdict {
        if answered {
            self.missed = 0;
            return Verdict::Healthy;
        }
        self.missed += 1;
        if self.missed >= self.misses_allowed {
            Verdict::Hung {
                missed: self.missed,
            }
        } else {
            Verdict::Degraded {
                missed: self.missed,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_misses_make_a_plugin_hung() {
        let mut policy = HeartbeatPolicy::new(3);
        assert_eq!(policy.on_result(false), Verdict::Degraded { missed: 1 });
        assert_eq!(policy.on_result(false), Verdict::Degraded { missed: 2 });
        assert_eq!(policy.on_result(false), Verdict::Hung { missed: 3 });
    }

    #[test]
    fn an_answer_clears_the_misses() {
        let mut policy = HeartbeatPolicy::new(2);
        assert_eq!(policy.on_result(false), Verdict::Degraded { missed: 1 });
        assert_eq!(policy.on_result(true), Verdict::Healthy);
        assert_eq!(policy.on_result(false), Verdict::Degraded { missed: 1 });
    }

    #[test]
    fn zero_allowed_means_one() {
        let mut policy = HeartbeatPolicy::new(0);
        assert_eq!(policy.on_result(false), Verdict::Hung { missed: 1 });
    }
}
