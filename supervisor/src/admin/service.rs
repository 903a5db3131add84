//! The admin gRPC service: status and plugin management for operators.

use std::sync::Arc;
use std::time::Instant;

use tonic::{Request, Response, Status};

use super::audit_calls::AuditCalls;
use super::backup_calls::BackupCalls;
use super::credential_calls::CredentialCalls;
use super::health_calls::HealthCalls;
use super::integration_calls::IntegrationCalls;
use super::peer::Authenticator;
use super::pipeline_calls::PipelineCalls;
use super::plugin_calls::PluginCalls;
use super::proto;
use super::proto::admin_server::Admin;
use super::tenant_calls::TenantCalls;
use crate::config::AdminConfig;
use crate::credentials::Credentials;
use crate::registry::Registry;
use crate::store::Store;
use crate::tenants::Tenants;

/// Everything the admin API works on.
#[derive(Debug)]
pub struct Components {
    pub registry: Arc<Registry>,
    pub desired: Arc<crate::desired::Desired>,
    pub store: Store,
    pub credentials: Option<Arc<Credentials>>,
    pub integrations: crate::integrations::Integrations,
    pub flags: crate::tenants::Flags,
    pub pipeline: Arc<crate::pipeline::Pipeline>,
    pub correlator: Arc<crate::correlation::Correlator>,
    /// Where tenants' configurations may point their plugins.
    pub allowed_endpoints: crate::endpoints::AllowedEndpoints,
    pub monitoring: Arc<crate::monitoring::Monitoring>,
    pub book: Arc<crate::health::HealthBook>,
    /// This node's cluster, when it is one of several.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// Moves tenants to other nodes (with `cluster`).
    pub handover: Option<Arc<crate::handover::Handover>>,
}

/// Serves `betalogs.admin.v1.Admin`: each call goes to the handlers of its area, which
/// hold the components they need.
#[derive(Debug)]
pub struct AdminService {
    plugins: PluginCalls,
    tenants: TenantCalls,
    credentials: CredentialCalls,
    integrations: IntegrationCalls,
    audit: AuditCalls,
    backup: BackupCalls,
    pipeline: PipelineCalls,
    health: HealthCalls,
}

impl AdminService {
    pub fn new(components: Components, admin: AdminConfig) -> Self {
        let tenants = Tenants::new(components.store.clone());
        let auth = Authenticator::new(admin.clone(), tenants.clone());
        let manager = components.desired.manager().clone();
        let integrations = IntegrationCalls {
            auth: auth.clone(),
            tenants: tenants.clone(),
            integrations: components.integrations.clone(),
            flags: components.flags,
            manager: manager.clone(),
            desired: components.desired.clone(),
            registry: components.registry.clone(),
            allowed_endpoints: components.allowed_endpoints.clone(),
            admin: admin.clone(),
        };
        Self {
            health: HealthCalls {
                auth: auth.clone(),
                tenants: tenants.clone(),
                monitoring: components.monitoring.clone(),
                book: components.book,
                credentials: components.credentials.clone(),
                integrations: components.integrations.clone(),
                allowed_endpoints: components.allowed_endpoints,
            },
            plugins: PluginCalls {
                auth: auth.clone(),
                registry: components.registry,
                manager,
                monitoring: components.monitoring,
                started: Instant::now(),
            },
            tenants: TenantCalls {
                auth: auth.clone(),
                tenants: tenants.clone(),
                store: components.store.clone(),
                integrations: components.integrations,
                credentials: components.credentials.clone(),
                pipeline: components.pipeline.clone(),
                desired: components.desired,
                admin: admin.clone(),
                cluster: components.cluster,
                handover: components.handover,
            },
            credentials: CredentialCalls {
                auth: auth.clone(),
                tenants: tenants.clone(),
                credentials: components.credentials,
                admin,
                users: integrations.clone(),
            },
            audit: AuditCalls {
                auth: auth.clone(),
                tenants: tenants.clone(),
                store: components.store,
            },
            integrations,
            backup: BackupCalls {
                auth: auth.clone(),
                pipeline: components.pipeline.clone(),
            },
            pipeline: PipelineCalls {
                auth,
                tenants,
                pipeline: components.pipeline,
                correlator: components.correlator,
            },
        }
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    type BackupStream = super::backup_calls::BackupChunks;
    type EnrichStream = super::pipeline_calls::EnrichProgressStream;
    type TailEventsStream = super::pipeline_calls::EventLines;
    async fn status(
        &self,
        request: Request<proto::StatusRequest>,
    ) -> Result<Response<proto::StatusResponse>, Status> {
        self.plugins.status(request).await
    }

    async fn list_plugins(
        &self,
        request: Request<proto::ListPluginsRequest>,
    ) -> Result<Response<proto::ListPluginsResponse>, Status> {
        self.plugins.list_plugins(request).await
    }

    async fn show_plugin(
        &self,
        request: Request<proto::ShowPluginRequest>,
    ) -> Result<Response<proto::ShowPluginResponse>, Status> {
        self.plugins.show_plugin(request).await
    }

    async fn trust_plugin(
        &self,
        request: Request<proto::TrustPluginRequest>,
    ) -> Result<Response<proto::TrustPluginResponse>, Status> {
        self.plugins.trust_plugin(request).await
    }

    async fn restart_plugin(
        &self,
        request: Request<proto::RestartPluginRequest>,
    ) -> Result<Response<proto::RestartPluginResponse>, Status> {
        self.plugins.restart_plugin(request).await
    }

    async fn rescan_plugins(
        &self,
        request: Request<proto::RescanPluginsRequest>,
    ) -> Result<Response<proto::RescanPluginsResponse>, Status> {
        self.plugins.rescan_plugins(request).await
    }

    async fn create_tenant(
        &self,
        request: Request<proto::CreateTenantRequest>,
    ) -> Result<Response<proto::TenantInfo>, Status> {
        self.tenants.create_tenant(request).await
    }

    async fn list_tenants(
        &self,
        request: Request<proto::ListTenantsRequest>,
    ) -> Result<Response<proto::ListTenantsResponse>, Status> {
        self.tenants.list_tenants(request).await
    }

    async fn delete_tenant(
        &self,
        request: Request<proto::DeleteTenantRequest>,
    ) -> Result<Response<proto::DeleteTenantResponse>, Status> {
        self.tenants.delete_tenant(request).await
    }

    async fn create_token(
        &self,
        request: Request<proto::CreateTokenRequest>,
    ) -> Result<Response<proto::CreateTokenResponse>, Status> {
        self.tenants.create_token(request).await
    }

    async fn list_tokens(
        &self,
        request: Request<proto::ListTokensRequest>,
    ) -> Result<Response<proto::ListTokensResponse>, Status> {
        self.tenants.list_tokens(request).await
    }

    async fn revoke_token(
        &self,
        request: Request<proto::RevokeTokenRequest>,
    ) -> Result<Response<proto::TokenInfo>, Status> {
        self.tenants.revoke_token(request).await
    }

    async fn set_credential(
        &self,
        request: Request<proto::SetCredentialRequest>,
    ) -> Result<Response<proto::CredentialInfo>, Status> {
        self.credentials.set_credential(request).await
    }

    async fn list_credentials(
        &self,
        request: Request<proto::ListCredentialsRequest>,
    ) -> Result<Response<proto::ListCredentialsResponse>, Status> {
        self.credentials.list_credentials(request).await
    }

    async fn delete_credential(
        &self,
        request: Request<proto::DeleteCredentialRequest>,
    ) -> Result<Response<proto::CredentialInfo>, Status> {
        self.credentials.delete_credential(request).await
    }

    async fn rotate_tenant_key(
        &self,
        request: Request<proto::RotateTenantKeyRequest>,
    ) -> Result<Response<proto::RotateTenantKeyResponse>, Status> {
        self.credentials.rotate_tenant_key(request).await
    }

    async fn rotate_master_key(
        &self,
        request: Request<proto::RotateMasterKeyRequest>,
    ) -> Result<Response<proto::RotateMasterKeyResponse>, Status> {
        self.credentials.rotate_master_key(request).await
    }

    async fn add_integration(
        &self,
        request: Request<proto::AddIntegrationRequest>,
    ) -> Result<Response<proto::IntegrationInfo>, Status> {
        self.integrations.add_integration(request).await
    }

    async fn update_integration(
        &self,
        request: Request<proto::UpdateIntegrationRequest>,
    ) -> Result<Response<proto::IntegrationInfo>, Status> {
        self.integrations.update_integration(request).await
    }

    async fn set_integration_enabled(
        &self,
        request: Request<proto::SetIntegrationEnabledRequest>,
    ) -> Result<Response<proto::IntegrationInfo>, Status> {
        self.integrations.set_integration_enabled(request).await
    }

    async fn remove_integration(
        &self,
        request: Request<proto::IntegrationRef>,
    ) -> Result<Response<proto::IntegrationInfo>, Status> {
        self.integrations.remove_integration(request).await
    }

    async fn list_integrations(
        &self,
        request: Request<proto::ListIntegrationsRequest>,
    ) -> Result<Response<proto::ListIntegrationsResponse>, Status> {
        self.integrations.list_integrations(request).await
    }

    async fn show_integration(
        &self,
        request: Request<proto::IntegrationRef>,
    ) -> Result<Response<proto::IntegrationInfo>, Status> {
        self.integrations.show_integration(request).await
    }

    async fn integration_history(
        &self,
        request: Request<proto::IntegrationRef>,
    ) -> Result<Response<proto::IntegrationHistoryResponse>, Status> {
        self.integrations.integration_history(request).await
    }

    async fn rollback_integration(
        &self,
        request: Request<proto::RollbackIntegrationRequest>,
    ) -> Result<Response<proto::IntegrationInfo>, Status> {
        self.integrations.rollback_integration(request).await
    }

    async fn list_flags(
        &self,
        request: Request<proto::ListFlagsRequest>,
    ) -> Result<Response<proto::ListFlagsResponse>, Status> {
        self.integrations.list_flags(request).await
    }

    async fn set_flag(
        &self,
        request: Request<proto::SetFlagRequest>,
    ) -> Result<Response<proto::FlagInfo>, Status> {
        self.integrations.set_flag(request).await
    }

    async fn list_audit(
        &self,
        request: Request<proto::ListAuditRequest>,
    ) -> Result<Response<proto::ListAuditResponse>, Status> {
        self.audit.list_audit(request).await
    }

    async fn verify_audit(
        &self,
        request: Request<proto::VerifyAuditRequest>,
    ) -> Result<Response<proto::VerifyAuditResponse>, Status> {
        self.audit.verify_audit(request).await
    }

    async fn backup(
        &self,
        request: Request<proto::BackupRequest>,
    ) -> Result<Response<Self::BackupStream>, Status> {
        self.backup.backup(request).await
    }

    async fn list_dead_letters(
        &self,
        request: Request<proto::DeadLetterQuery>,
    ) -> Result<Response<proto::ListDeadLettersResponse>, Status> {
        self.pipeline.list_dead_letters(request).await
    }

    async fn show_dead_letter(
        &self,
        request: Request<proto::DeadLetterRef>,
    ) -> Result<Response<proto::DeadLetter>, Status> {
        self.pipeline.show_dead_letter(request).await
    }

    async fn replay_dead_letters(
        &self,
        request: Request<proto::DeadLetterQuery>,
    ) -> Result<Response<proto::ReplayDeadLettersResponse>, Status> {
        self.pipeline.replay_dead_letters(request).await
    }

    async fn purge_dead_letters(
        &self,
        request: Request<proto::DeadLetterQuery>,
    ) -> Result<Response<proto::PurgeDeadLettersResponse>, Status> {
        self.pipeline.purge_dead_letters(request).await
    }

    async fn list_deployments(
        &self,
        request: Request<proto::ListDeploymentsRequest>,
    ) -> Result<Response<proto::ListDeploymentsResponse>, Status> {
        self.pipeline.list_deployments(request).await
    }

    async fn rebuild_index(
        &self,
        request: Request<proto::RebuildIndexRequest>,
    ) -> Result<Response<proto::RebuildIndexResponse>, Status> {
        self.pipeline.rebuild_index(request).await
    }

    async fn enrich(
        &self,
        request: Request<proto::EnrichRequest>,
    ) -> Result<Response<Self::EnrichStream>, Status> {
        self.pipeline.enrich(request).await
    }

    async fn tail_events(
        &self,
        request: Request<proto::TailEventsRequest>,
    ) -> Result<Response<Self::TailEventsStream>, Status> {
        self.pipeline.tail_events(request).await
    }

    async fn cluster_status(
        &self,
        request: Request<proto::ClusterStatusRequest>,
    ) -> Result<Response<proto::JsonDocument>, Status> {
        self.tenants.cluster_status(request).await
    }

    async fn move_tenant(
        &self,
        request: Request<proto::MoveTenantRequest>,
    ) -> Result<Response<proto::MoveTenantResponse>, Status> {
        self.tenants.move_tenant(request).await
    }

    async fn health(
        &self,
        request: Request<proto::HealthRequest>,
    ) -> Result<Response<proto::JsonDocument>, Status> {
        self.health.health(request).await
    }

    async fn check_integration(
        &self,
        request: Request<proto::IntegrationRef>,
    ) -> Result<Response<proto::CheckIntegrationResponse>, Status> {
        self.health.check_integration(request).await
    }

    async fn list_alerts(
        &self,
        request: Request<proto::ListAlertsRequest>,
    ) -> Result<Response<proto::JsonDocument>, Status> {
        self.health.list_alerts(request).await
    }

    async fn add_alert_channel(
        &self,
        request: Request<proto::AddAlertChannelRequest>,
    ) -> Result<Response<proto::AlertChannelInfo>, Status> {
        self.health.add_alert_channel(request).await
    }

    async fn list_alert_channels(
        &self,
        request: Request<proto::ListAlertChannelsRequest>,
    ) -> Result<Response<proto::ListAlertChannelsResponse>, Status> {
        self.health.list_alert_channels(request).await
    }

    async fn remove_alert_channel(
        &self,
        request: Request<proto::AlertChannelRef>,
    ) -> Result<Response<proto::AlertChannelInfo>, Status> {
        self.health.remove_alert_channel(request).await
    }

    async fn test_alert_channel(
        &self,
        request: Request<proto::AlertChannelRef>,
    ) -> Result<Response<proto::TestAlertChannelResponse>, Status> {
        self.health.test_alert_channel(request).await
    }
}
