//! The lifecycle states of a plugin instance and the status shown to operators.

use std::fmt;
use std::time::SystemTime;

/// Where an instance is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceState {
    /// Checking the executable's checksum and starting the process.
    Starting,
    Healthy,
    /// Missed a heartbeat, not yet enough to be called hung.
    Degraded,
    /// Waiting to restart after a crash, a hang or a failed start.
    Backoff,
    /// Restarted too often within the window; still retried at the maximum delay.
    CrashLoop,
    /// Cannot start until an operator acts (trust, rescan, reinstall).
    Refused,
    Stopping,
    Stopped,
}

impl InstanceState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Healthy => "healthy",
            Self::Degraded => "degraded",
            Self::Backoff => "backoff",
            Self::CrashLoop => "crash-loop",
            Self::Refused => "refused",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
        }
    }
}

impl fmt::Display for InstanceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A snapshot of one instance, for `status` and `plugins show`.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceStatus {
    pub plugin: String,
    pub tenant: String,
    pub integration: String,
    pub state: InstanceState,
    pub pid: Option<u32>,
    pub version: Option<String>,
    pub protocol_version: Option<u32>,
    pub restarts: u64,
    pub last_error: Option<String>,
    pub since: SystemTime,
    pub next_restart_at: Option<SystemTime>,
    /// The plugin's dependencies and their breakers, as its `Status` last said.
    pub dependencies: Vec<plugin_protocol::v1::DependencyStatus>,
}
