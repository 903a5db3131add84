//! The admin gRPC service: status and plugin management for operators.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tonic::{Request, Response, Status};

use super::peer::require_operator;
use super::proto;
use super::proto::admin_server::Admin;
use crate::config::AdminConfig;
use crate::process::{InstanceStatus, Manager};
use crate::registry::{InstalledPlugin, Refusal, Registry, RegistryError};

/// Serves `betalogs.admin.v1.Admin`.
#[derive(Debug)]
pub struct AdminService {
    registry: Arc<Registry>,
    manager: Arc<Manager>,
    admin: AdminConfig,
    started: Instant,
}

impl AdminService {
    pub fn new(registry: Arc<Registry>, manager: Arc<Manager>, admin: AdminConfig) -> Self {
        Self {
            registry,
            manager,
            admin,
            started: Instant::now(),
        }
    }

    fn rescan_and_report(&self) -> Result<Vec<Refusal>, Status> {
        let refused = self.registry.rescan().map_err(registry_status)?;
        for refusal in &refused {
            tracing::error!(plugin = %refusal.plugin, error = %refusal.reason, "plugin refused");
        }
        Ok(refused)
    }
}

fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

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
        capabilities: manifest.capabilities,
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
        require_operator(&request, &self.admin)?;
        let instances = self
            .manager
            .status()
            .await
            .into_iter()
            .map(instance_to_proto)
            .collect();
        let refused = self
            .registry
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
            .collect();
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
        require_operator(&request, &self.admin)?;
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
        require_operator(&request, &self.admin)?;
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
        let caller = require_operator(&request, &self.admin)?;
        let body = request.into_inner();
        let version = Some(body.version.as_str()).filter(|v| !v.is_empty());
        let sha256 = Some(body.sha256.as_str()).filter(|v| !v.is_empty());
        let pin = self
            .registry
            .trust(&body.name, version, sha256, &caller.label())
            .map_err(registry_status)?;
        tracing::info!(plugin = %pin.name, version = %pin.version, sha256 = %pin.sha256, by = %pin.pinned_by, "plugin trusted");
        self.manager.retry_refused().await;
        Ok(Response::new(proto::TrustPluginResponse {
            name: pin.name,
            version: pin.version,
            sha256: pin.sha256,
        }))
    }

    async fn restart_plugin(
        &self,
        request: Request<proto::RestartPluginRequest>,
    ) -> Result<Response<proto::RestartPluginResponse>, Status> {
        require_operator(&request, &self.admin)?;
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
        require_operator(&request, &self.admin)?;
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
}
