//! The process manager: one supervising task per plugin instance, each with its own
//! process group, heartbeat and restart policy.

mod heartbeat;
mod instance;
mod log_budget;
mod manager;
mod observer;
pub(crate) mod plugin_logs;
mod probe;
mod restart;
pub(crate) mod spawn;
mod state;

pub use manager::{Manager, ManagerError, ManagerSettings, WebhookTarget};
pub use observer::{CollectedBatch, InstanceObserver, Observers};
pub use probe::Probe;

/// Supplies the `Configure` call for an instance when it starts (integrations do; the
/// config file's bare instances have none).
pub trait InstanceConfigurer: Send + Sync + std::fmt::Debug {
    /// `Ok(None)`: nothing to configure. `Err`: why the instance cannot be configured.
    fn configure_request(
        &self,
        tenant: &str,
        integration: &str,
        reader: &str,
    ) -> Result<Option<Configuration>, String>;

    /// The plugin refused the instance's credentials (UNAUTHENTICATED or
    /// PERMISSION_DENIED from `Configure`): the integration is disabled until a working
    /// credential is stored.
    fn credentials_rejected(&self, tenant: &str, integration: &str, reason: &str);
}
/// What an instance is configured with: the `Configure` call for its plugin, and the
/// field mappings (compiled when its configuration was admitted) for the pipeline.
#[derive(Debug)]
pub struct Configuration {
    pub request: plugin_protocol::v1::ConfigureRequest,
    pub mappings: std::sync::Arc<plugin_kit::FieldMappings>,
}

pub use state::{InstanceState, InstanceStatus};
