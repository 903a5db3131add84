//! The process manager: one supervising task per plugin instance, each with its own
//! process group, heartbeat and restart policy.

mod heartbeat;
mod instance;
mod log_budget;
mod manager;
mod plugin_logs;
mod restart;
pub(crate) mod spawn;
mod state;

pub use manager::{Manager, ManagerError, ManagerSettings};
pub use restart::{RestartDecision, RestartPolicy, RestartSettings};
pub use state::{InstanceState, InstanceStatus};
