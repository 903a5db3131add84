//! The admin gRPC service: status and plugin management for operators.

use std::sync::Arc;
use std::time::Instant;

use tonic::{Request, Response, Status};

use super::peer::{Authenticator, Principal};
use super::proto;
use super::proto::admin_server::Admin;
use crate::config::AdminConfig;
use crate::credentials::{
    CredentialError, CredentialInfo, Credentials, MasterKeySource, NewSecret, SecretBytes,
};
use crate::process::{InstanceStatus, Manager};
use crate::registry::{InstalledPlugin, Refusal, Registry, RegistryError};
use crate::store::{AuditDraft, AuditRecord, Store};
use crate::tenants::{TenantError, Tenants, TokenScope};

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
}

/// Serves `betalogs.admin.v1.Admin`.
#[derive(Debug)]
pub struct AdminService {
    registry: Arc<Registry>,
    manager: Arc<Manager>,
    desired: Arc<crate::desired::Desired>,
    auth: Authenticator,
    tenants: Tenants,
    store: Store,
    credentials: Option<Arc<Credentials>>,
    pub(super) integrations: crate::integrations::Integrations,
    pub(super) flags: crate::tenants::Flags,
    pub(super) pipeline: Arc<crate::pipeline::Pipeline>,
    pub(super) correlator: Arc<crate::correlation::Correlator>,
    admin: AdminConfig,
    allowed_endpoints: crate::endpoints::AllowedEndpoints,
    started: Instant,
}

impl AdminService {
    pub fn new(components: Components, admin: AdminConfig) -> Self {
        let tenants = Tenants::new(components.store.clone());
        let auth = Authenticator::new(admin.clone(), tenants.clone());
        Self {
            registry: components.registry,
            manager: components.desired.manager().clone(),
            desired: components.desired,
            auth,
            tenants,
            store: components.store,
            credentials: components.credentials,
            integrations: components.integrations,
            flags: components.flags,
            pipeline: components.pipeline,
            correlator: components.correlator,
            admin,
            allowed_endpoints: components.allowed_endpoints,
            started: Instant::now(),
        }
    }

    pub(super) fn manager_ref(&self) -> &Arc<Manager> {
        &self.manager
    }

    pub(super) fn desired_ref(&self) -> &Arc<crate::desired::Desired> {
        &self.desired
    }

    pub(super) fn auth_ref(&self) -> &Authenticator {
        &self.auth
    }

    pub(super) fn allowed_endpoints(&self) -> &crate::endpoints::AllowedEndpoints {
        &self.allowed_endpoints
    }

    pub(super) fn admin_config(&self) -> &AdminConfig {
        &self.admin
    }

    pub(super) fn tenants_ref(&self) -> &Tenants {
        &self.tenants
    }

    pub(super) fn registry_ref(&self) -> &Arc<Registry> {
        &self.registry
    }

    fn credentials(&self) -> Result<Arc<Credentials>, Status> {
        self.credentials
            .clone()
            .ok_or_else(|| Status::failed_precondition(CredentialError::NoMasterKey.to_string()))
    }

    fn rescan_and_report(&self) -> Result<Vec<Refusal>, Status> {
        let refused = self.registry.rescan().map_err(registry_status)?;
        for refusal in &refused {
            tracing::error!(plugin = %refusal.plugin, error = %refusal.reason, "plugin refused");
        }
        Ok(refused)
    }
}

use plugin_kit::clock::unix_ms;

fn instance_to_proto(status: InstanceStatus) -> proto::InstanceStatus {
    proto::InstanceStatus {
        plugin: status.plugin,
        tenant: status.tenant,
        integration: status.integration,
        state: status.state.as_str().to_owned(),
        pid: status.pid.unwrap_or_default(),
        version: status.version.unwrap_or_default(),
        protocol_version: status.protocol_version.unwrap_or_default(),
        restarts: status.restarts,
        last_error: status.last_error.unwrap_or_default(),
        since_unix_ms: unix_ms(status.since),
        next_restart_unix_ms: status.next_restart_at.map(unix_ms).unwrap_or_default(),
        dependencies: status
            .dependencies
            .into_iter()
            .map(|d| proto::Dependency {
                name: d.name,
                breaker: d.breaker,
                detail: d.detail,
            })
            .collect(),
    }
}

fn plugin_to_proto(plugin: InstalledPlugin) -> proto::PluginInfo {
    let manifest = plugin.package.manifest;
    proto::PluginInfo {
        name: manifest.name,
        version: manifest.version.to_string(),
        description: manifest.description,
        directory: plugin.package.dir.display().to_string(),
        executable: plugin.executable.display().to_string(),
        protocol_versions: manifest.protocol_versions,
        capabilities: manifest.capabilities.names(),
        framework: manifest.framework.to_string(),
        dependencies: manifest
            .dependencies
            .into_iter()
            .map(|(k, v)| (k, v.to_string()))
            .collect(),
        selected: plugin.selected,
        trusted_sha256: plugin
            .pin
            .as_ref()
            .map(|p| p.sha256.clone())
            .unwrap_or_default(),
        trusted_by: plugin.pin.map(|p| p.pinned_by).unwrap_or_default(),
        refusal: plugin.refusal.unwrap_or_default(),
        executable_owner_uid: plugin.owner,
    }
}

fn refusal_to_proto(refusal: Refusal) -> proto::PluginRefusal {
    proto::PluginRefusal {
        plugin: refusal.plugin,
        version: refusal.version.map(|v| v.to_string()).unwrap_or_default(),
        reason: refusal.reason,
    }
}

fn registry_status(err: RegistryError) -> Status {
    match err {
        RegistryError::Unknown(_) | RegistryError::UnknownVersion { .. } => {
            Status::not_found(err.to_string())
        }
        RegistryError::BadChecksum(_) | RegistryError::Checksum(_) => {
            Status::failed_precondition(err.to_string())
        }
        RegistryError::PluginDir { .. } | RegistryError::Store(_) => {
            Status::internal(err.to_string())
        }
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn status(
        &self,
        request: Request<proto::StatusRequest>,
    ) -> Result<Response<proto::StatusResponse>, Status> {
        let principal = self.auth.authenticate(&request)?;
        let own = principal.tenant().map(str::to_owned);
        let instances = self
            .manager
            .status()
            .await
            .into_iter()
            .filter(|i| own.as_deref().is_none_or(|t| t == i.tenant))
            .map(instance_to_proto)
            .collect();
        // Plugin refusals are operator information.
        let refused = if own.is_some() {
            Vec::new()
        } else {
            self.registry
                .list()
                .map_err(registry_status)?
                .into_iter()
                .filter(|p| p.refusal.is_some())
                .map(|p| proto::PluginRefusal {
                    plugin: p.package.manifest.name.clone(),
                    version: p.package.manifest.version.to_string(),
                    reason: p.refusal.unwrap_or_default(),
                })
                .chain(self.registry.unreadable().into_iter().map(refusal_to_proto))
                .collect()
        };
        Ok(Response::new(proto::StatusResponse {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            pid: std::process::id(),
            uptime_seconds: self.started.elapsed().as_secs(),
            instances,
            refused,
        }))
    }

    async fn list_plugins(
        &self,
        request: Request<proto::ListPluginsRequest>,
    ) -> Result<Response<proto::ListPluginsResponse>, Status> {
        self.auth.operator(&request)?;
        let plugins = self
            .registry
            .list()
            .map_err(registry_status)?
            .into_iter()
            .map(plugin_to_proto)
            .collect();
        let unreadable = self
            .registry
            .unreadable()
            .into_iter()
            .map(refusal_to_proto)
            .collect();
        Ok(Response::new(proto::ListPluginsResponse {
            plugins,
            unreadable,
        }))
    }

    async fn show_plugin(
        &self,
        request: Request<proto::ShowPluginRequest>,
    ) -> Result<Response<proto::ShowPluginResponse>, Status> {
        self.auth.operator(&request)?;
        let name = &request.get_ref().name;
        let versions: Vec<proto::PluginInfo> = self
            .registry
            .list()
            .map_err(registry_status)?
            .into_iter()
            .filter(|p| &p.package.manifest.name == name)
            .map(plugin_to_proto)
            .collect();
        if versions.is_empty() {
            return Err(Status::not_found(format!(
                "plugin `{name}` is not installed"
            )));
        }
        let instances = self
            .manager
            .status()
            .await
            .into_iter()
            .filter(|s| &s.plugin == name)
            .map(instance_to_proto)
            .collect();
        Ok(Response::new(proto::ShowPluginResponse {
            versions,
            instances,
        }))
    }

    async fn trust_plugin(
        &self,
        request: Request<proto::TrustPluginRequest>,
    ) -> Result<Response<proto::TrustPluginResponse>, Status> {
        let caller = self.auth.operator(&request)?;
        let body = request.into_inner();
        let version = Some(body.version.as_str()).filter(|v| !v.is_empty());
        let sha256 = Some(body.sha256.as_str()).filter(|v| !v.is_empty());
        let (version, sha256) = (version.map(str::to_owned), sha256.map(str::to_owned));
        let (registry, by) = (self.registry.clone(), caller.label());
        // File work (hashing a package's executable) stays off the async runtime.
        let trusted = tokio::task::spawn_blocking(move || {
            registry.trust(&body.name, version.as_deref(), sha256.as_deref(), &by)
        })
        .await
        .map_err(|_| Status::internal("trusting the plugin failed unexpectedly"))?
        .map_err(registry_status)?;
        let pin = trusted.pin;
        tracing::info!(plugin = %pin.name, version = %pin.version, sha256 = %pin.sha256, by = %pin.pinned_by, executable = %trusted.executable.display(), owner = ?trusted.owner, "plugin trusted");
        self.manager.retry_refused().await;
        Ok(Response::new(proto::TrustPluginResponse {
            name: pin.name,
            version: pin.version,
            sha256: pin.sha256,
            executable: trusted.executable.display().to_string(),
            executable_owner_uid: trusted.owner,
        }))
    }

    async fn restart_plugin(
        &self,
        request: Request<proto::RestartPluginRequest>,
    ) -> Result<Response<proto::RestartPluginResponse>, Status> {
        self.auth.operator(&request)?;
        let body = request.into_inner();
        let tenant = Some(body.tenant.as_str()).filter(|t| !t.is_empty());
        let restarted = self.manager.restart(&body.name, tenant).await;
        if restarted == 0 {
            return Err(Status::not_found(format!(
                "no running instance of plugin `{}`",
                body.name
            )));
        }
        Ok(Response::new(proto::RestartPluginResponse {
            restarted: u32::try_from(restarted).unwrap_or(u32::MAX),
        }))
    }

    async fn rescan_plugins(
        &self,
        request: Request<proto::RescanPluginsRequest>,
    ) -> Result<Response<proto::RescanPluginsResponse>, Status> {
        self.auth.operator(&request)?;
        let refused = self.rescan_and_report()?;
        self.manager.retry_refused().await;
        let plugins = self
            .registry
            .list()
            .map_err(registry_status)?
            .into_iter()
            .map(plugin_to_proto)
            .collect();
        Ok(Response::new(proto::RescanPluginsResponse {
            plugins,
            refused: refused.into_iter().map(refusal_to_proto).collect(),
        }))
    }

    async fn create_tenant(
        &self,
        request: Request<proto::CreateTenantRequest>,
    ) -> Result<Response<proto::TenantInfo>, Status> {
        let principal = self.auth.operator(&request)?;
        let tenant = self
            .tenants
            .create(&request.get_ref().name, &principal.label())
            .map_err(tenant_status)?;
        Ok(Response::new(proto::TenantInfo {
            name: tenant.name,
            created_unix_ms: tenant.created_ms,
        }))
    }

    async fn list_tenants(
        &self,
        request: Request<proto::ListTenantsRequest>,
    ) -> Result<Response<proto::ListTenantsResponse>, Status> {
        self.auth.operator(&request)?;
        let tenants = self
            .tenants
            .list()
            .map_err(tenant_status)?
            .into_iter()
            .map(|t| proto::TenantInfo {
                name: t.name,
                created_unix_ms: t.created_ms,
            })
            .collect();
        Ok(Response::new(proto::ListTenantsResponse { tenants }))
    }

    async fn delete_tenant(
        &self,
        request: Request<proto::DeleteTenantRequest>,
    ) -> Result<Response<proto::DeleteTenantResponse>, Status> {
        let principal = self.auth.operator(&request)?;
        let name = request.into_inner().name;
        let _turn = self.store.writer();
        let tokens = self.tenants.tokens(&name).map_err(tenant_status)?.len();
        let mut batch = self.tenants.delete_batch(&name).map_err(tenant_status)?;
        let mut detail = format!("{tokens} token(s) revoked");
        let integrations = self
            .integrations
            .list(Some(&name))
            .map(|l| l.len())
            .unwrap_or(0);
        batch.extend(
            self.integrations
                .delete_tenant_batch(&name)
                .map_err(|e| Status::internal(e.to_string()))?,
        );
        detail.push_str(&format!("; {integrations} integration(s) removed"));
        if let Some(credentials) = &self.credentials {
            let count = credentials.list(&name).map_err(credential_status)?.len();
            batch.extend(
                credentials
                    .delete_tenant_batch(&name)
                    .map_err(credential_status)?,
            );
            detail.push_str(&format!("; key and {count} credential(s) destroyed"));
        }
        let audit = AuditDraft::ok(
            Some(&name),
            &principal.label(),
            "tenant.delete",
            &format!("tenant:{name}"),
            detail,
        );
        self.store
            .commit(&batch, &audit)
            .map_err(|e| Status::internal(e.to_string()))?;
        if let Some(credentials) = &self.credentials {
            credentials.forget_tenant(&name);
        }
        // What the pipeline kept for it, under the same turn: no one can create the name
        // again meanwhile. Its events in the shared log stay out of a new tenant's reach.
        let pipeline = self.pipeline.clone();
        let forgotten = name.clone();
        let removed = tokio::task::block_in_place(move || pipeline.forget_tenant(&forgotten))
            .map_err(|e| Status::internal(e.to_string()))?;
        tracing::info!(tenant = %name, removed, "tenant deleted with its dead letters, inbox, cursors and index");
        drop(_turn);
        // Its plugin processes stop with it.
        self.desired.apply().await;
        Ok(Response::new(proto::DeleteTenantResponse {
            name,
            tokens_revoked: u32::try_from(tokens).unwrap_or(u32::MAX),
        }))
    }

    async fn create_token(
        &self,
        request: Request<proto::CreateTokenRequest>,
    ) -> Result<Response<proto::CreateTokenResponse>, Status> {
        let principal = self.auth.operator(&request)?;
        let body = request.into_inner();
        let scope_text = if body.scope.is_empty() {
            "admin"
        } else {
            body.scope.as_str()
        };
        let scope = TokenScope::parse(scope_text).ok_or_else(|| {
            Status::invalid_argument(format!("scope `{scope_text}` is not `admin` or `ingest`"))
        })?;
        let held = self
            .tenants
            .tokens(&body.tenant)
            .map_err(tenant_status)?
            .len();
        check_quota(
            &body.tenant,
            held,
            self.admin.max_tokens_per_tenant,
            "tokens",
            "admin.max_tokens_per_tenant",
        )?;
        let issued = self
            .tenants
            .create_token(&body.tenant, scope, &principal.label())
            .map_err(tenant_status)?;
        use secrecy::ExposeSecret;
        Ok(Response::new(proto::CreateTokenResponse {
            tenant: issued.info.tenant,
            token: issued.token.expose_secret().to_owned(),
            id: issued.info.id,
            scope: scope.as_str().to_owned(),
        }))
    }

    async fn list_tokens(
        &self,
        request: Request<proto::ListTokensRequest>,
    ) -> Result<Response<proto::ListTokensResponse>, Status> {
        self.auth.operator(&request)?;
        let tenant = &request.get_ref().tenant;
        self.tenants.require(tenant).map_err(tenant_status)?;
        let tokens = self
            .tenants
            .tokens(tenant)
            .map_err(tenant_status)?
            .into_iter()
            .map(token_to_proto)
            .collect();
        Ok(Response::new(proto::ListTokensResponse { tokens }))
    }

    async fn revoke_token(
        &self,
        request: Request<proto::RevokeTokenRequest>,
    ) -> Result<Response<proto::TokenInfo>, Status> {
        let principal = self.auth.operator(&request)?;
        let info = self
            .tenants
            .revoke_token(&request.get_ref().id, &principal.label())
            .map_err(tenant_status)?;
        Ok(Response::new(token_to_proto(info)))
    }

    async fn set_credential(
        &self,
        request: Request<proto::SetCredentialRequest>,
    ) -> Result<Response<proto::CredentialInfo>, Status> {
        let principal = self.auth.for_tenant(&request, &request.get_ref().tenant)?;
        let credentials = self.credentials()?;
        let body = request.into_inner();
        self.tenants.require(&body.tenant).map_err(tenant_status)?;
        let held = credentials.list(&body.tenant).map_err(credential_status)?;
        if !held.iter().any(|c| c.name == body.name) {
            check_quota(
                &body.tenant,
                held.len(),
                self.admin.max_credentials_per_tenant,
                "credentials",
                "admin.max_credentials_per_tenant",
            )?;
        }
        let new = NewSecret {
            kind: body.kind,
            raw: SecretBytes::new(body.secret),
            expires_ms: (body.expires_unix_ms > 0).then_some(body.expires_unix_ms),
            rotate: body.rotate,
        };
        let tenant = body.tenant;
        let name = body.name;
        let author = principal.label();
        let info =
            tokio::task::spawn_blocking(move || credentials.set(&tenant, &name, &new, &author))
                .await
                .map_err(|e| Status::internal(e.to_string()))?
                .map_err(credential_status)?;
        self.revalidate_users(&info.tenant, &info.name, &principal.label())
            .await;
        Ok(Response::new(credential_to_proto(info)))
    }

    async fn list_credentials(
        &self,
        request: Request<proto::ListCredentialsRequest>,
    ) -> Result<Response<proto::ListCredentialsResponse>, Status> {
        self.auth.for_tenant(&request, &request.get_ref().tenant)?;
        let credentials = self.credentials()?;
        self.tenants
            .require(&request.get_ref().tenant)
            .map_err(tenant_status)?;
        let list = credentials
            .list(&request.get_ref().tenant)
            .map_err(credential_status)?;
        Ok(Response::new(proto::ListCredentialsResponse {
            credentials: list.into_iter().map(credential_to_proto).collect(),
        }))
    }

    async fn delete_credential(
        &self,
        request: Request<proto::DeleteCredentialRequest>,
    ) -> Result<Response<proto::CredentialInfo>, Status> {
        let principal = self.auth.for_tenant(&request, &request.get_ref().tenant)?;
        let credentials = self.credentials()?;
        let body = request.into_inner();
        let info = credentials
            .delete(&body.tenant, &body.name, &principal.label())
            .map_err(credential_status)?;
        Ok(Response::new(credential_to_proto(info)))
    }

    async fn rotate_tenant_key(
        &self,
        request: Request<proto::RotateTenantKeyRequest>,
    ) -> Result<Response<proto::RotateTenantKeyResponse>, Status> {
        let principal = self.auth.for_tenant(&request, &request.get_ref().tenant)?;
        let credentials = self.credentials()?;
        let tenant = request.into_inner().tenant;
        self.tenants.require(&tenant).map_err(tenant_status)?;
        let count = tokio::task::spawn_blocking(move || {
            credentials.rotate_tenant_key(&tenant, &principal.label())
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(credential_status)?;
        Ok(Response::new(proto::RotateTenantKeyResponse {
            reencrypted: count,
        }))
    }

    async fn rotate_master_key(
        &self,
        request: Request<proto::RotateMasterKeyRequest>,
    ) -> Result<Response<proto::RotateMasterKeyResponse>, Status> {
        let principal = self.auth.operator(&request)?;
        let credentials = self.credentials()?;
        let source = MasterKeySource::parse(&request.get_ref().new_master_key)
            .and_then(|s| {
                s.resolve()
                    .map_err(|e| crate::credentials::MasterKeyError::Read {
                        path: request.get_ref().new_master_key.clone(),
                        cause: e,
                    })
            })
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let recipient = tokio::task::spawn_blocking(move || {
            credentials.rotate_master(&source, &principal.label())
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(credential_status)?;
        Ok(Response::new(proto::RotateMasterKeyResponse { recipient }))
    }

    async fn add_integration(
        &self,
        request: Request<proto::AddIntegrationRequest>,
    ) -> Result<Response<proto::IntegrationInfo>, Status> {
        self.add_integration_call(request).await
    }

    async fn update_integration(
        &self,
        request: Request<proto::UpdateIntegrationRequest>,
    ) -> Result<Response<proto::IntegrationInfo>, Status> {
        self.update_integration_call(request).await
    }

    async fn set_integration_enabled(
        &self,
        request: Request<proto::SetIntegrationEnabledRequest>,
    ) -> Result<Response<proto::IntegrationInfo>, Status> {
        self.set_integration_enabled_call(request).await
    }

    async fn remove_integration(
        &self,
        request: Request<proto::IntegrationRef>,
    ) -> Result<Response<proto::IntegrationInfo>, Status> {
        self.remove_integration_call(request).await
    }

    async fn list_integrations(
        &self,
        request: Request<proto::ListIntegrationsRequest>,
    ) -> Result<Response<proto::ListIntegrationsResponse>, Status> {
        self.list_integrations_call(request).await
    }

    async fn show_integration(
        &self,
        request: Request<proto::IntegrationRef>,
    ) -> Result<Response<proto::IntegrationInfo>, Status> {
        self.show_integration_call(request).await
    }

    async fn integration_history(
        &self,
        request: Request<proto::IntegrationRef>,
    ) -> Result<Response<proto::IntegrationHistoryResponse>, Status> {
        self.integration_history_call(request).await
    }

    async fn rollback_integration(
        &self,
        request: Request<proto::RollbackIntegrationRequest>,
    ) -> Result<Response<proto::IntegrationInfo>, Status> {
        self.rollback_integration_call(request).await
    }

    async fn list_flags(
        &self,
        request: Request<proto::ListFlagsRequest>,
    ) -> Result<Response<proto::ListFlagsResponse>, Status> {
        self.list_flags_call(request).await
    }

    async fn set_flag(
        &self,
        request: Request<proto::SetFlagRequest>,
    ) -> Result<Response<proto::FlagInfo>, Status> {
        self.set_flag_call(request).await
    }

    async fn list_audit(
        &self,
        request: Request<proto::ListAuditRequest>,
    ) -> Result<Response<proto::ListAuditResponse>, Status> {
        let principal = self.auth.authenticate(&request)?;
        let body = request.into_inner();
        let tenant = match (&principal, body.tenant.as_str()) {
            (Principal::Tenant(token), "") => Some(token.tenant.clone()),
            (Principal::Tenant(token), asked) if asked != token.tenant => {
                return Err(Status::permission_denied(
                    "this token belongs to another tenant",
                ));
            }
            (_, "") => None,
            (_, asked) => Some(asked.to_owned()),
        };
        let limit = if body.limit == 0 {
            100
        } else {
            body.limit as usize
        };
        let until = if body.until_unix_ms == 0 {
            u64::MAX
        } else {
            body.until_unix_ms
        };
        // A tenant sees its own records of its own incarnation, numbered among
        // themselves: global sequence numbers (and the chain's hashes) would show how
        // much other tenants did in between. Operators see the whole trail.
        let own_view = matches!(principal, Principal::Tenant(_));
        let since = match (&tenant, own_view) {
            (Some(name), true) => {
                self.tenants
                    .incarnation(name)
                    .map_err(tenant_status)?
                    .since_audit_seq
            }
            _ => 0,
        };
        let mut kept = Vec::new();
        let mut newer = 0u64;
        for record in self.store.audit_rev() {
            let record = record.map_err(|e| Status::internal(e.to_string()))?;
            if record.seq < since {
                break;
            }
            if tenant
                .as_ref()
                .is_some_and(|t| record.tenant.as_ref() != Some(t))
            {
                continue;
            }
            let wanted = record.action.starts_with(&body.action_prefix)
                && record.time_ms >= body.since_unix_ms
                && record.time_ms <= until;
            if wanted && kept.len() < limit {
                kept.push((newer, record));
            }
            newer += 1;
            if !own_view && kept.len() >= limit {
                break;
            }
        }
        let total = newer;
        let records = kept
            .into_iter()
            .map(|(newer_than_it, record)| {
                let mut shown = audit_to_proto(record);
                if own_view {
                    shown.seq = total - newer_than_it;
                    shown.prev_sha256.clear();
                }
                shown
            })
            .collect();
        Ok(Response::new(proto::ListAuditResponse { records }))
    }

    async fn verify_audit(
        &self,
        request: Request<proto::VerifyAuditRequest>,
    ) -> Result<Response<proto::VerifyAuditResponse>, Status> {
        self.auth.operator(&request)?;
        let given = request.into_inner().anchor;
        let external = match given.trim() {
            "" => None,
            text => Some(crate::store::AuditAnchor::parse(text).ok_or_else(|| {
                Status::invalid_argument(
                    "--anchor must be SEQ:SHA256 (a record number and 64 hex digits)",
                )
            })?),
        };
        let store = self.store.clone();
        let (outcome, head) = tokio::task::spawn_blocking(move || {
            let outcome = store.audit_verify(external.as_ref())?;
            Ok::<_, crate::store::StoreError>((outcome, store.audit_head()?))
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| Status::internal(e.to_string()))?;
        let head = head.map(|h| h.to_string()).unwrap_or_default();
        Ok(Response::new(match outcome {
            Ok(records) => proto::VerifyAuditResponse {
                ok: true,
                records,
                error: String::new(),
                head,
            },
            Err(broken) => proto::VerifyAuditResponse {
                ok: false,
                records: 0,
                error: broken.to_string(),
                head,
            },
        }))
    }

    async fn list_dead_letters(
        &self,
        request: Request<proto::DeadLetterQuery>,
    ) -> Result<Response<proto::ListDeadLettersResponse>, Status> {
        self.list_dead_letters_call(request).await
    }

    async fn show_dead_letter(
        &self,
        request: Request<proto::DeadLetterRef>,
    ) -> Result<Response<proto::DeadLetter>, Status> {
        self.show_dead_letter_call(request).await
    }

    async fn replay_dead_letters(
        &self,
        request: Request<proto::DeadLetterQuery>,
    ) -> Result<Response<proto::ReplayDeadLettersResponse>, Status> {
        self.replay_dead_letters_call(request).await
    }

    async fn purge_dead_letters(
        &self,
        request: Request<proto::DeadLetterQuery>,
    ) -> Result<Response<proto::PurgeDeadLettersResponse>, Status> {
        self.purge_dead_letters_call(request).await
    }

    async fn list_deployments(
        &self,
        request: Request<proto::ListDeploymentsRequest>,
    ) -> Result<Response<proto::ListDeploymentsResponse>, Status> {
        self.list_deployments_call(request).await
    }

    async fn rebuild_index(
        &self,
        request: Request<proto::RebuildIndexRequest>,
    ) -> Result<Response<proto::RebuildIndexResponse>, Status> {
        self.rebuild_index_call(request).await
    }

    type EnrichStream = super::pipeline_calls::EnrichProgressStream;

    async fn enrich(
        &self,
        request: Request<proto::EnrichRequest>,
    ) -> Result<Response<Self::EnrichStream>, Status> {
        self.enrich_call(request).await
    }

    type TailEventsStream = super::pipeline_calls::EventLines;

    async fn tail_events(
        &self,
        request: Request<proto::TailEventsRequest>,
    ) -> Result<Response<Self::TailEventsStream>, Status> {
        self.tail_events_call(request).await
    }
}

fn tenant_status(err: TenantError) -> Status {
    match err {
        TenantError::Exists(_) => Status::already_exists(err.to_string()),
        TenantError::Unknown(_) | TenantError::UnknownToken(_) => {
            Status::not_found(err.to_string())
        }
        TenantError::BadName(_) | TenantError::Reserved(_) => {
            Status::invalid_argument(err.to_string())
        }
        TenantError::Store(_) => Status::internal(err.to_string()),
    }
}

/// Refuses one more of `what` when `tenant` holds `held` and `max` are allowed.
pub(super) fn check_quota(
    tenant: &str,
    held: usize,
    max: usize,
    what: &str,
    setting: &str,
) -> Result<(), Status> {
    if held >= max {
        return Err(Status::resource_exhausted(format!(
            "tenant `{tenant}` has {held} {what}, the most it may have ({setting} = {max}); remove one or ask the operator to raise the limit"
        )));
    }
    Ok(())
}

fn token_to_proto(info: crate::tenants::TokenInfo) -> proto::TokenInfo {
    proto::TokenInfo {
        id: info.id,
        tenant: info.tenant,
        scope: info.scope.as_str().to_owned(),
        created_unix_ms: info.created_ms,
    }
}

fn audit_to_proto(record: AuditRecord) -> proto::AuditRecord {
    proto::AuditRecord {
        seq: record.seq,
        time_unix_ms: record.time_ms,
        tenant: record.tenant.unwrap_or_default(),
        actor: record.actor,
        action: record.action,
        target: record.target,
        outcome: record.outcome,
        detail: record.detail,
        prev_sha256: record.prev,
    }
}

fn credential_status(err: CredentialError) -> Status {
    match &err {
        CredentialError::Unknown { .. } => Status::not_found(err.to_string()),
        CredentialError::UnknownKind(_)
        | CredentialError::BadName(_)
        | CredentialError::Secret(_) => Status::invalid_argument(err.to_string()),
        CredentialError::NoMasterKey
        | CredentialError::MasterKey(_)
        | CredentialError::WrongMasterKey { .. }
        | CredentialError::WrongPassphrase => Status::failed_precondition(err.to_string()),
        CredentialError::Undecryptable { .. }
        | CredentialError::TenantKey(_)
        | CredentialError::Encrypt(_)
        | CredentialError::Store(_) => Status::internal(err.to_string()),
    }
}

fn credential_to_proto(info: CredentialInfo) -> proto::CredentialInfo {
    proto::CredentialInfo {
        tenant: info.tenant,
        name: info.name,
        kind: info.kind,
        created_unix_ms: info.created_ms,
        updated_unix_ms: info.updated_ms,
        expires_unix_ms: info.expires_ms.unwrap_or(0),
        last_used_unix_ms: info.last_used_ms.unwrap_or(0),
        key_version: info.key_version,
    }
}
