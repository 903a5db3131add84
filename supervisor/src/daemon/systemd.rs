//! Talking to systemd when run as a `Type=notify` service: the state lines
//! (`READY=1`, `RELOADING=1`, `STOPPING=1`) and the watchdog.
//!
//! The watchdog pings only while the daemon's core takes work: the committer (every
//! write goes through its thread) answers a probe, and the health loop keeps
//! evaluating. A daemon whose runtime, committer or health loop is wedged stops
//! pinging, and systemd restarts it (`WatchdogSec=` with `Restart=on-failure`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::monitoring::Monitoring;
use crate::pipeline::Pipeline;

/// Sends a state line to systemd when `NOTIFY_SOCKET` names its socket.
pub(super) fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let socket = match std::os::unix::net::UnixDatagram::unbound() {
        Ok(socket) => socket,
        Err(err) => {
            tracing::warn!(error = %err, "cannot notify systemd");
            return;
        }
    };
    let bytes = path.as_encoded_bytes();
    let sent = if let Some(abstract_name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(abstract_name)
            .and_then(|addr| socket.send_to_addr(state.as_bytes(), &addr))
    } else {
        socket.send_to(state.as_bytes(), &path)
    };
    if let Err(err) = sent {
        tracing::warn!(error = %err, "cannot notify systemd");
    }
}

/// The watchdog timeout systemd set for this process (`WATCHDOG_USEC`, when
/// `WATCHDOG_PID` is absent or names this process), if any.
pub(super) fn watchdog_timeout() -> Option<Duration> {
    watchdog_from(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    )
}

fn watchdog_from(usec: Option<&str>, pid: Option<&str>, own: u32) -> Option<Duration> {
    if let Some(pid) = pid
        && pid.trim().parse::<u32>().ok() != Some(own)
    {
        return None;
    }
    let usec = usec?.trim().parse::<u64>().ok().filter(|usec| *usec > 0)?;
    Some(Duration::from_micros(usec))
}

/// What the watchdog checks before each ping.
pub(super) struct Core {
    pub pipeline: Arc<Pipeline>,
    pub monitoring: Arc<Monitoring>,
}

/// Why a ping was withheld.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum Stall {
    #[error("the committer has not answered a probe in {0:?}")]
    Committer(Duration),
    #[error("the committer has stopped")]
    CommitterStopped,
    #[error("the health loop last evaluated {age:?} ago (every {every:?} expected)")]
    HealthLoop { age: Duration, every: Duration },
}

impl Core {
    /// Whether the core takes work: the committer answers within `patience`, and the
    /// health loop evaluated within its interval plus `timeout` (the watchdog's).
    async fn check(&self, patience: Duration, timeout: Duration) -> Result<(), Stall> {
        match tokio::time::timeout(patience, self.pipeline.probe()).await {
            Err(_) => return Err(Stall::Committer(patience)),
            Ok(Err(crate::pipeline::CommitError::Stopped)) => {
                return Err(Stall::CommitterStopped);
            }
            // Any other answer (a full backlog, a store error) is an answer: the
            // committer is alive, and those failures have their own health and alerts.
            Ok(_) => {}
        }
        let (age, every) = self.monitoring.evaluation_age();
        health_loop_verdict(age, every, timeout)
    }
}

/// The health loop is late when it has not finished an evaluation within its interval
/// plus `patience` (an evaluation itself may take a moment).
fn health_loop_verdict(age: Duration, every: Duration, patience: Duration) -> Result<(), Stall> {
    if age > every + patience {
        return Err(Stall::HealthLoop { age, every });
    }
    Ok(())
}

/// Pings systemd's watchdog three times per `timeout` while the core takes work, until
/// `stop`. A withheld ping is logged once per stall, and its end once.
pub(super) async fn run_watchdog(core: Core, timeout: Duration, mut stop: watch::Receiver<bool>) {
    let period = timeout / 3;
    // One check per period however long a check takes (a slow probe does not stretch
    // the gap between pings); a late tick runs at once, then the period restarts.
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stalled = false;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        match core.check(period, timeout).await {
            Ok(()) => {
                if std::mem::take(&mut stalled) {
                    tracing::warn!("the daemon's core takes work again; watchdog pings resume");
                }
                notify("WATCHDOG=1");
            }
            Err(stall) => {
                if !std::mem::replace(&mut stalled, true) {
                    tracing::error!(
                        error = %stall,
                        watchdog = ?timeout,
                        "withholding systemd's watchdog ping: systemd restarts the daemon if this lasts"
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_is_ours_only_when_systemd_says_so() {
        let own = 4242;
        assert_eq!(
            watchdog_from(Some("30000000"), None, own),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            watchdog_from(Some("30000000"), Some("4242"), own),
            Some(Duration::from_secs(30))
        );
        // Set for another process (the daemon's parent, say): not ours.
        assert_eq!(watchdog_from(Some("30000000"), Some("1"), own), None);
        assert_eq!(watchdog_from(None, None, own), None);
        assert_eq!(watchdog_from(Some("0"), None, own), None);
        assert_eq!(watchdog_from(Some("soon"), None, own), None);
    }

    #[test]
    fn a_health_loop_is_late_only_past_its_interval_and_the_patience() {
        let every = Duration::from_secs(5);
        let patience = Duration::from_secs(10);
        assert_eq!(
            health_loop_verdict(Duration::from_secs(15), every, patience),
            Ok(())
        );
        assert!(matches!(
            health_loop_verdict(Duration::from_secs(16), every, patience),
            Err(Stall::HealthLoop { .. })
        ));
    }
}
