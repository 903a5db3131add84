//! Whether each sink delivers: every sink reports its deliveries and failures here, so
//! that health can alert on a sink failing for minutes and the metrics can count them.
//! The sources the daemon consumes itself (JetStream) report the same way, in a registry
//! of their own (`Pipeline::source_health`), and so do the daemon's upkeep tasks
//! (`Pipeline::upkeep_health`: the correlation index's retention).

use std::collections::BTreeMap;
use std::sync::Mutex;

/// One sink's delivery state (or one source's consumption, or one upkeep task's runs).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SinkStatus {
    pub name: String,
    /// Since when its deliveries have been failing (ms), while they are.
    pub failing_since_ms: Option<u64>,
    pub last_error: Option<String>,
    pub delivered_events: u64,
    pub failures: u64,
}

/// Every sink's delivery state.
#[derive(Debug, Default)]
pub struct SinkHealth {
    sinks: Mutex<BTreeMap<String, SinkStatus>>,
}

impl SinkHealth {
    fn with(&self, name: &str, change: impl FnOnce(&mut SinkStatus)) {
        let mut sinks = self
            .sinks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let status = sinks.entry(name.to_owned()).or_insert_with(|| SinkStatus {
            name: name.to_owned(),
            ..SinkStatus::default()
        });
        change(status);
    }

    /// `events` were delivered: the sink works.
    pub fn delivered(&self, name: &str, events: usize) {
        self.with(name, |status| {
            status.failing_since_ms = None;
            status.delivered_events += events as u64;
        });
    }

    /// A delivery failed (it is retried).
    pub fn failed(&self, name: &str, why: &str) {
        let now = plugin_kit::clock::now_ms();
        self.with(name, |status| {
            status.failing_since_ms.get_or_insert(now);
            status.last_error = Some(why.to_owned());
            status.failures += 1;
        });
    }

    pub fn all(&self) -> Vec<SinkStatus> {
        self.sinks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_sink_keeps_when_it_started_failing_until_it_delivers() {
        let health = SinkHealth::default();
        health.failed("bus", "503");
        let since = health.all()[0].failing_since_ms;
        assert!(since.is_some());
        health.failed("bus", "503 again");
        assert_eq!(health.all()[0].failing_since_ms, since);
        assert_eq!(health.all()[0].failures, 2);
        health.delivered("bus", 3);
        let status = &health.all()[0];
        assert_eq!(status.failing_since_ms, None);
        assert_eq!(status.delivered_events, 3);
        assert_eq!(status.last_error.as_deref(), Some("503 again"));
    }
}
