//! Plugins: the registry (list, show, trust, rescan), restarts, and the daemon's status.

use std::sync::Arc;
use std::time::Instant;

use tonic::{Request, Response, Status};

use super::peer::Authenticator;
use super::proto;
use crate::process::Manager;
use crate::registry::{Refusal, Registry};

/// The plugin calls, with the components they need.
#[derive(Debug, Clone)]
pub(super) struct PluginCalls {
    pub(super) auth: Authenticator,
    pub(super) registry: Arc<Registry>,
    pub(super) manager: Arc<Manager>,
    pub(super) monitoring: Arc<crate::monitoring::Monitoring>,
    pub(super) started: Instant,
}

impl PluginCalls {
    pub(super) async fn status(
        &self,
        request: Request<proto::StatusRequest>,
    ) -> Result<Response<proto::StatusResponse>, Status> {
        let principal = self.auth.authenticate(&request)?;
        let own = principal.tenant().map(str::to_owned);
        let health: std::collections::HashMap<(String, String), _> = self
            .monitoring
            .health(own.as_deref())
            .await
            .into_iter()
            .map(|h| ((h.tenant.clone(), h.integration.clone()), h))
            .collect();
        let instances = self
            .manager
            .status()
            .await
            .into_iter()
            .filter(|i| own.as_deref().is_none_or(|t| t == i.tenant))
            .map(|status| {
                let key = (status.tenant.clone(), status.integration.clone());
                let mut shown = proto::InstanceStatus::from(status);
                if let Some(health) = health.get(&key) {
                    shown.health = health.state.as_str().to_owned();
                    shown.health_reason.clone_from(&health.reason);
                    if let Some(error) = &health.last_error {
                        shown.error_class.clone_from(&error.class);
                        // The process manager's error is about the process; the
                        // integration's (a refused credential) is what a person
                        // must see.
                        if shown.last_error.is_empty() || health.state.badness() >= 4 {
                            shown.last_error.clone_from(&error.message);
                        }
                    }
                }
                shown
            })
            .collect();
        // Plugin refusals are operator information.
        let refused = if own.is_some() {
            Vec::new()
        } else {
            self.registry
                .list()
                .map_err(Status::from)?
                .into_iter()
                .filter(|p| p.refusal.is_some())
                .map(|p| proto::PluginRefusal {
                    plugin: p.package.manifest.name.clone(),
                    version: p.package.manifest.version.to_string(),
                    reason: p.refusal.unwrap_or_default(),
                })
                .chain(
                    self.registry
                        .unreadable()
                        .into_iter()
                        .map(proto::PluginRefusal::from),
                )
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

    pub(super) async fn list_plugins(
        &self,
        request: Request<proto::ListPluginsRequest>,
    ) -> Result<Response<proto::ListPluginsResponse>, Status> {
        self.auth.operator(&request)?;
        let plugins = self
            .registry
            .list()
            .map_err(Status::from)?
            .into_iter()
            .map(proto::PluginInfo::from)
            .collect();
        let unreadable = self
            .registry
            .unreadable()
            .into_iter()
            .map(proto::PluginRefusal::from)
            .collect();
        Ok(Response::new(proto::ListPluginsResponse {
            plugins,
            unreadable,
        }))
    }

    pub(super) async fn show_plugin(
        &self,
        request: Request<proto::ShowPluginRequest>,
    ) -> Result<Response<proto::ShowPluginResponse>, Status> {
        self.auth.operator(&request)?;
        let name = &request.get_ref().name;
        let versions: Vec<proto::PluginInfo> = self
            .registry
            .list()
            .map_err(Status::from)?
            .into_iter()
            .filter(|p| &p.package.manifest.name == name)
            .map(proto::PluginInfo::from)
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
            .map(proto::InstanceStatus::from)
            .collect();
        Ok(Response::new(proto::ShowPluginResponse {
            versions,
            instances,
        }))
    }

    pub(super) async fn trust_plugin(
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
        .map_err(Status::from)?;
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

    pub(super) async fn restart_plugin(
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

    pub(super) async fn rescan_plugins(
        &self,
        request: Request<proto::RescanPluginsRequest>,
    ) -> Result<Response<proto::RescanPluginsResponse>, Status> {
        self.auth.operator(&request)?;
        let refused = self.rescan_and_report()?;
        self.manager.retry_refused().await;
        let plugins = self
            .registry
            .list()
            .map_err(Status::from)?
            .into_iter()
            .map(proto::PluginInfo::from)
            .collect();
        Ok(Response::new(proto::RescanPluginsResponse {
            plugins,
            refused: refused
                .into_iter()
                .map(proto::PluginRefusal::from)
                .collect(),
        }))
    }

    fn rescan_and_report(&self) -> Result<Vec<Refusal>, Status> {
        let refused = self.registry.rescan().map_err(Status::from)?;
        for refusal in &refused {
            tracing::error!(plugin = %refusal.plugin, error = %refusal.reason, "plugin refused");
        }
        Ok(refused)
    }
}
