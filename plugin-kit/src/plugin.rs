//! The trait a plugin author implements. Every method but [`Plugin::describe`] has a
//! default that answers `UNIMPLEMENTED`, so a plugin implements only what it offers.

use std::future::Future;
use std::pin::Pin;

use plugin_protocol::v1;
use tokio_stream::Stream;
use tonic::Status;

/// A stream of event batches returned from [`Plugin::collect`].
pub type EventStream = Pin<Box<dyn Stream<Item = Result<v1::EventBatch, Status>> + Send>>;

/// What a plugin says about itself in `Describe`; checked by the supervisor against
/// the plugin's manifest.
#[derive(Debug, Clone, Default)]
pub struct Description {
    pub name: String,
    pub version: String,
    pub description: String,
    pub capabilities: plugin_protocol::Capabilities,
    /// JSON Schema of the integration configuration.
    pub config_schema: serde_json::Value,
    pub credential_kinds: Vec<String>,
}

impl Description {
    /// The `Describe` answer for protocol major `protocol_version`.
    pub fn to_response(&self, protocol_version: u32) -> v1::DescribeResponse {
        v1::DescribeResponse {
            name: self.name.clone(),
            version: self.version.clone(),
            description: self.description.clone(),
            capabilities: self.capabilities.names(),
            config_schema_json: self.config_schema.to_string(),
            credential_kinds: self.credential_kinds.clone(),
            protocol_version,
        }
    }
}

/// The configuration of a plugin that takes none: an empty object.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoConfiguration {}

/// An integration plugin. `serve` runs it behind the v1 gRPC protocol.
pub trait Plugin: Send + Sync + 'static {
    /// Static facts about the plugin.
    fn describe(&self) -> Description;

    /// Receives the integration's configuration and credentials. Read them with
    /// [`crate::config::Configured::parse`]. The default, for a plugin that takes no
    /// configuration, accepts an empty one (`{}`, as the supervisor sends an instance of
    /// its own file) and refuses any key, naming it.
    fn configure(
        &self,
        request: v1::ConfigureRequest,
    ) -> impl Future<Output = Result<(), Status>> + Send {
        let parsed = crate::config::Configured::<NoConfiguration>::parse(&request);
        async move { parsed.map(|_| ()).map_err(Status::from) }
    }

    /// How the configured integration's webhook deliveries are authenticated, when that
    /// is the integration's choice rather than the manifest's `[webhook]`: reported to the
    /// host after each successful [`Plugin::configure`], so that the host can verify and
    /// keep deliveries while the plugin is down. `None` (the default): the manifest
    /// decides.
    fn webhook_authentication(&self) -> Option<crate::signature::Authentication> {
        None
    }

    /// Validates credentials and permissions.
    fn check(&self) -> impl Future<Output = Result<v1::CheckResponse, Status>> + Send {
        async { Err(Status::unimplemented("this plugin has no check")) }
    }

    /// Streams event batches after `cursor`.
    fn collect(&self, cursor: String) -> impl Future<Output = Result<EventStream, Status>> + Send {
        let _ = cursor;
        async { Err(Status::unimplemented("this plugin does not collect")) }
    }

    /// Verifies and maps one webhook delivery.
    fn handle_webhook(
        &self,
        request: v1::WebhookRequest,
    ) -> impl Future<Output = Result<v1::WebhookResponse, Status>> + Send {
        let _ = request;
        async { Err(Status::unimplemented("this plugin takes no webhooks")) }
    }

    /// Renews an expiring credential this plugin owns.
    fn renew_credential(
        &self,
        request: v1::RenewCredentialRequest,
    ) -> impl Future<Output = Result<v1::RenewCredentialResponse, Status>> + Send {
        let _ = request;
        async { Err(Status::unimplemented("this plugin renews no credentials")) }
    }

    /// The state of the plugin's external dependencies, for the supervisor's status and
    /// metrics: one entry per [`crate::resilience::Resilience`] it uses
    /// ([`crate::resilience::Resilience::status`]).
    fn dependencies(&self) -> Vec<v1::DependencyStatus> {
        Vec::new()
    }

    /// Looks up context for one event.
    fn enrich(
        &self,
        request: v1::EnrichRequest,
    ) -> impl Future<Output = Result<v1::EnrichResponse, Status>> + Send {
        let _ = request;
        async { Err(Status::unimplemented("this plugin does not enrich")) }
    }
}
