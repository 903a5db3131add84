//! Tenants and their tokens (operators); deleting a tenant deletes what every component keeps for it.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::peer::Authenticator;
use super::proto;
use super::quota;
use crate::cluster::{Cluster, ClusterError, Owner};
use crate::config::AdminConfig;
use crate::credentials::Credentials;
use crate::desired::Desired;
use crate::handover::{Handover, MoveError};
use crate::integrations::Integrations;
use crate::pipeline::Pipeline;
use crate::store::Store;
use crate::tenant_removal::{RemovalError, Removed, TenantState};
use crate::tenants::{TenantError, Tenants, TokenScope};

/// The tenant calls, with the components they need.
#[derive(Debug, Clone)]
pub(super) struct TenantCalls {
    pub(super) auth: Authenticator,
    pub(super) tenants: Tenants,
    pub(super) store: Store,
    pub(super) integrations: Integrations,
    pub(super) credentials: Option<Arc<Credentials>>,
    pub(super) pipeline: Arc<Pipeline>,
    pub(super) desired: Arc<Desired>,
    pub(super) admin: AdminConfig,
    pub(super) cluster: Option<Arc<Cluster>>,
    pub(super) handover: Option<Arc<Handover>>,
}

impl TenantCalls {
    pub(super) async fn create_tenant(
        &self,
        request: Request<proto::CreateTenantRequest>,
    ) -> Result<Response<proto::TenantInfo>, Status> {
        let principal = self.auth.operator(&request)?;
        let name = &request.get_ref().name;
        // Placed first: two nodes creating one name at once cannot both win.
        if let Some(cluster) = &self.cluster
            && crate::names::is_name(name)
        {
            cluster.claim(name).await.map_err(cluster_refusal)?;
        }
        let tenant = self
            .tenants
            .create(name, &principal.label())
            .map_err(Status::from)?;
        Ok(Response::new(proto::TenantInfo {
            name: tenant.name,
            created_unix_ms: tenant.created_ms,
        }))
    }

    pub(super) async fn list_tenants(
        &self,
        request: Request<proto::ListTenantsRequest>,
    ) -> Result<Response<proto::ListTenantsResponse>, Status> {
        self.auth.operator(&request)?;
        let tenants = self
            .tenants
            .list()
            .map_err(Status::from)?
            .into_iter()
            .map(|t| proto::TenantInfo {
                name: t.name,
                created_unix_ms: t.created_ms,
            })
            .collect();
        Ok(Response::new(proto::ListTenantsResponse { tenants }))
    }

    pub(super) async fn delete_tenant(
        &self,
        request: Request<proto::DeleteTenantRequest>,
    ) -> Result<Response<proto::DeleteTenantResponse>, Status> {
        let principal = self.auth.operator(&request)?;
        let name = request.into_inner().name;
        let state = self.state();
        let token_ids: Vec<String> = self
            .tenants
            .tokens(&name)
            .map(|tokens| tokens.into_iter().map(|t| t.id).collect())
            .unwrap_or_default();
        let removing = name.clone();
        let actor = principal.label();
        let removed = match tokio::task::block_in_place(move || {
            state.remove(&removing, &actor, "tenant.delete")
        }) {
            Ok(removed) => removed,
            // Deleted here already, its placement left behind by a failed release.
            Err(RemovalError::Tenant(TenantError::Unknown(_)))
                if self
                    .cluster
                    .as_ref()
                    .is_some_and(|cluster| cluster.owner(&name) == Owner::Here) =>
            {
                Removed {
                    tokens: 0,
                    integrations: 0,
                    credentials: None,
                    pipeline_entries: 0,
                }
            }
            Err(err) => return Err(removal_refusal(err)),
        };
        let tokens = removed.tokens;
        tracing::info!(tenant = %name, removed = removed.pipeline_entries, "tenant deleted with its dead letters, inbox, cursors and index");
        // Its plugin processes stop with it.
        self.desired.apply().await;
        if let Some(cluster) = &self.cluster {
            forget_tokens(cluster, token_ids.iter().map(String::as_str)).await;
        }
        if let Some(cluster) = &self.cluster
            && let Err(err) = cluster.release(&name).await
        {
            tracing::error!(tenant = %name, error = %err, "tenant deleted, but its placement stays in the cluster bucket; deleting it again removes it");
            return Err(Status::unavailable(format!(
                "tenant `{name}` was deleted on this node, but {err}; run the delete again to remove its placement"
            )));
        }
        Ok(Response::new(proto::DeleteTenantResponse {
            name,
            tokens_revoked: u32::try_from(tokens).unwrap_or(u32::MAX),
        }))
    }

    pub(super) async fn cluster_status(
        &self,
        request: Request<proto::ClusterStatusRequest>,
    ) -> Result<Response<proto::JsonDocument>, Status> {
        self.auth.operator(&request)?;
        let cluster = self.cluster.as_ref().ok_or_else(|| {
            Status::failed_precondition(
                "this daemon runs alone: its configuration has no [cluster] section",
            )
        })?;
        let document = serde_json::json!({
            "node": cluster.node(),
            "address": cluster.address(),
            "nodes": cluster.nodes(),
        });
        Ok(Response::new(proto::JsonDocument {
            json: document.to_string(),
        }))
    }

    pub(super) async fn move_tenant(
        &self,
        request: Request<proto::MoveTenantRequest>,
    ) -> Result<Response<proto::MoveTenantResponse>, Status> {
        let principal = self.auth.operator(&request)?;
        let body = request.into_inner();
        let handover = self.handover.as_ref().ok_or_else(|| {
            Status::failed_precondition(
                "this daemon runs alone: its configuration has no [cluster] section",
            )
        })?;
        let report = handover
            .move_out(&body.name, &body.to, &principal.label())
            .await
            .map_err(|err| match err {
                MoveError::NotHere { .. }
                | MoveError::SameNode(_)
                | MoveError::ConfiguredHere(_)
                | MoveError::NodeNotAlive(_)
                | MoveError::NoKeyThere(..) => Status::failed_precondition(err.to_string()),
                MoveError::Cluster(ClusterError::Moving { .. }) => Status::aborted(err.to_string()),
                _ => Status::unavailable(err.to_string()),
            })?;
        Ok(Response::new(proto::MoveTenantResponse {
            name: body.name,
            to: body.to,
            entries: report.entries as u64,
            bytes: report.bytes,
            audit_records: report.audit_records as u64,
            milliseconds: report.milliseconds,
        }))
    }

    /// The components that keep a tenant's state.
    fn state(&self) -> TenantState {
        TenantState {
            store: self.store.clone(),
            tenants: self.tenants.clone(),
            integrations: self.integrations.clone(),
            credentials: self.credentials.clone(),
            pipeline: self.pipeline.clone(),
        }
    }

    pub(super) async fn create_token(
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
            Status::invalid_argument(format!(
                "scope `{scope_text}` is not `admin`, `ingest` or `monitor`"
            ))
        })?;
        if body.all_tenants {
            if scope != TokenScope::Monitor || !body.tenant.is_empty() {
                return Err(Status::invalid_argument(
                    "--all-tenants issues an operator's monitoring token: use it with --scope monitor and without --tenant",
                ));
            }
            let issued = self
                .tenants
                .create_token(crate::tenants::ALL_TENANTS, scope, &principal.label())
                .map_err(Status::from)?;
            use secrecy::ExposeSecret;
            return Ok(Response::new(proto::CreateTokenResponse {
                tenant: issued.info.tenant,
                token: issued.token.expose_secret().to_owned(),
                id: issued.info.id,
                scope: scope.as_str().to_owned(),
            }));
        }
        let held = self
            .tenants
            .tokens(&body.tenant)
            .map_err(Status::from)?
            .len();
        quota::check(
            &body.tenant,
            held,
            self.admin.max_tokens_per_tenant,
            "tokens",
            "admin.max_tokens_per_tenant",
        )?;
        let issued = self
            .tenants
            .create_token(&body.tenant, scope, &principal.label())
            .map_err(Status::from)?;
        if let Some(cluster) = &self.cluster
            && let Err(err) = cluster.register_token(&issued.info.id, &body.tenant).await
        {
            let _ = self
                .tenants
                .revoke_token(&issued.info.id, &principal.label());
            return Err(Status::unavailable(format!(
                "the token could not be registered in the cluster, so it was revoked again: {err}"
            )));
        }
        use secrecy::ExposeSecret;
        Ok(Response::new(proto::CreateTokenResponse {
            tenant: issued.info.tenant,
            token: issued.token.expose_secret().to_owned(),
            id: issued.info.id,
            scope: scope.as_str().to_owned(),
        }))
    }

    pub(super) async fn list_tokens(
        &self,
        request: Request<proto::ListTokensRequest>,
    ) -> Result<Response<proto::ListTokensResponse>, Status> {
        self.auth.operator(&request)?;
        let tenant = &request.get_ref().tenant;
        self.tenants.require(tenant).map_err(Status::from)?;
        let tokens = self
            .tenants
            .tokens(tenant)
            .map_err(Status::from)?
            .into_iter()
            .map(proto::TokenInfo::from)
            .collect();
        Ok(Response::new(proto::ListTokensResponse { tokens }))
    }

    pub(super) async fn revoke_token(
        &self,
        request: Request<proto::RevokeTokenRequest>,
    ) -> Result<Response<proto::TokenInfo>, Status> {
        let principal = self.auth.operator(&request)?;
        let info = self
            .tenants
            .revoke_token(&request.get_ref().id, &principal.label())
            .map_err(Status::from)?;
        if let Some(cluster) = &self.cluster {
            forget_tokens(cluster, [info.id.as_str()]).await;
        }
        Ok(Response::new(proto::TokenInfo::from(info)))
    }
}

/// Forgets revoked tokens' placement. A stale one is harmless (the owner finds no such
/// token), so a failure is logged, not returned.
async fn forget_tokens<'a>(cluster: &Cluster, ids: impl IntoIterator<Item = &'a str>) {
    for id in ids {
        if let Err(err) = cluster.forget_token(id).await {
            tracing::warn!(token = id, error = %err, "a revoked token stays in the cluster's placement (harmless: it no longer authenticates)");
        }
    }
}

/// A placement refused or failed, as the admin API says it.
fn cluster_refusal(err: ClusterError) -> Status {
    match err {
        ClusterError::PlacedElsewhere { .. } => Status::already_exists(err.to_string()),
        _ => Status::unavailable(err.to_string()),
    }
}

/// A removal that failed, as the admin API says it.
fn removal_refusal(err: RemovalError) -> Status {
    match err {
        RemovalError::Tenant(err) => Status::from(err),
        RemovalError::Credential(err) => Status::from(err),
        RemovalError::Integration(err) => Status::from(err),
        RemovalError::Store(err) => Status::internal(err.to_string()),
    }
}
