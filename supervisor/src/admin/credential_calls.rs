//! Credentials: stored encrypted, never answered; a changed one is checked against every integration using it.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::integration_calls::IntegrationCalls;
use super::peer::Authenticator;
use super::proto;
use super::quota;
use crate::config::AdminConfig;
use crate::credentials::{CredentialError, Credentials, MasterKeySource, NewSecret, SecretBytes};
use crate::tenants::Tenants;

/// The credential calls, with the components they need.
#[derive(Debug, Clone)]
pub(super) struct CredentialCalls {
    pub(super) auth: Authenticator,
    pub(super) tenants: Tenants,
    pub(super) credentials: Option<Arc<Credentials>>,
    pub(super) admin: AdminConfig,
    pub(super) users: IntegrationCalls,
}

impl CredentialCalls {
    pub(super) async fn set_credential(
        &self,
        request: Request<proto::SetCredentialRequest>,
    ) -> Result<Response<proto::CredentialInfo>, Status> {
        let principal = self.auth.for_tenant(&request, &request.get_ref().tenant)?;
        let credentials = self.credentials()?;
        let body = request.into_inner();
        self.tenants.require(&body.tenant).map_err(Status::from)?;
        let held = credentials.list(&body.tenant).map_err(Status::from)?;
        if !held.iter().any(|c| c.name == body.name) {
            quota::check(
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
                .map_err(Status::from)?;
        self.users
            .revalidate_users(&info.tenant, &info.name, &principal.label())
            .await;
        Ok(Response::new(proto::CredentialInfo::from(info)))
    }

    pub(super) async fn list_credentials(
        &self,
        request: Request<proto::ListCredentialsRequest>,
    ) -> Result<Response<proto::ListCredentialsResponse>, Status> {
        self.auth.for_tenant(&request, &request.get_ref().tenant)?;
        let credentials = self.credentials()?;
        self.tenants
            .require(&request.get_ref().tenant)
            .map_err(Status::from)?;
        let list = credentials
            .list(&request.get_ref().tenant)
            .map_err(Status::from)?;
        Ok(Response::new(proto::ListCredentialsResponse {
            credentials: list.into_iter().map(proto::CredentialInfo::from).collect(),
        }))
    }

    pub(super) async fn delete_credential(
        &self,
        request: Request<proto::DeleteCredentialRequest>,
    ) -> Result<Response<proto::CredentialInfo>, Status> {
        let principal = self.auth.for_tenant(&request, &request.get_ref().tenant)?;
        let credentials = self.credentials()?;
        let body = request.into_inner();
        let info = credentials
            .delete(&body.tenant, &body.name, &principal.label())
            .map_err(Status::from)?;
        Ok(Response::new(proto::CredentialInfo::from(info)))
    }

    pub(super) async fn rotate_tenant_key(
        &self,
        request: Request<proto::RotateTenantKeyRequest>,
    ) -> Result<Response<proto::RotateTenantKeyResponse>, Status> {
        let principal = self.auth.for_tenant(&request, &request.get_ref().tenant)?;
        let credentials = self.credentials()?;
        let tenant = request.into_inner().tenant;
        self.tenants.require(&tenant).map_err(Status::from)?;
        let count = tokio::task::spawn_blocking(move || {
            credentials.rotate_tenant_key(&tenant, &principal.label())
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(Status::from)?;
        Ok(Response::new(proto::RotateTenantKeyResponse {
            reencrypted: count,
        }))
    }

    pub(super) async fn rotate_master_key(
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
        .map_err(Status::from)?;
        Ok(Response::new(proto::RotateMasterKeyResponse { recipient }))
    }

    fn credentials(&self) -> Result<Arc<Credentials>, Status> {
        self.credentials
            .clone()
            .ok_or_else(|| Status::failed_precondition(CredentialError::NoMasterKey.to_string()))
    }
}
