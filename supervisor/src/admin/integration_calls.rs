//! The admin calls on integrations and flags. Admitting a configuration: the plugin must
//! be enabled for the tenant, the credentials it names must exist, the configuration must
//! pass the plugin's JSON Schema (from `Describe`), and the plugin's `Check`, run in a
//! probe process, must pass. Only then is a new version stored and the tenant's instance
//! (and nothing else) started or restarted.

use std::sync::Arc;

use serde_json::Value;
use tonic::{Request, Response, Status};

use super::peer::Authenticator;
use super::proto;
use super::quota;
use crate::config::AdminConfig;
use crate::desired::Desired;
use crate::endpoints::AllowedEndpoints;
use crate::integrations::Integrations;
use crate::integrations::{Integration, IntegrationError, against_schema};
use crate::names::InstanceKey;
use crate::process::InstanceStatus;
use crate::process::Manager;
use crate::registry::Registry;
use crate::tenants::{Flags, Tenants};

pub(crate) fn parse_config(text: &str) -> Result<Value, Status> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        Status::invalid_argument(format!(
            "the configuration is not JSON: line {} column {}",
            e.line(),
            e.column()
        ))
    })?;
    if !value.is_object() {
        return Err(Status::invalid_argument(
            "the configuration is not a JSON object",
        ));
    }
    Ok(value)
}

fn info(
    integration: &Integration,
    instance: Option<&InstanceStatus>,
    check: Vec<proto::CheckResult>,
) -> proto::IntegrationInfo {
    let current = integration.current();
    proto::IntegrationInfo {
        tenant: integration.tenant.clone(),
        name: integration.name.clone(),
        plugin: integration.plugin.clone(),
        enabled: integration.enabled,
        disabled_reason: integration.disabled_reason.clone().unwrap_or_default(),
        version: current.version,
        config_json: current.config.to_string(),
        author: current.author.clone(),
        updated_unix_ms: current.time_ms,
        state: instance.map_or_else(|| "not-running".to_owned(), |i| i.state.as_str().to_owned()),
        check,
        diff: current.diff.clone(),
    }
}

/// The integration and flag calls, with the components they need.
#[derive(Debug, Clone)]
pub(super) struct IntegrationCalls {
    pub(super) auth: Authenticator,
    pub(super) tenants: Tenants,
    pub(super) integrations: Integrations,
    pub(super) flags: Flags,
    pub(super) manager: Arc<Manager>,
    pub(super) desired: Arc<Desired>,
    pub(super) registry: Arc<Registry>,
    pub(super) allowed_endpoints: AllowedEndpoints,
    pub(super) admin: AdminConfig,
}

impl IntegrationCalls {
    async fn instance_of(&self, tenant: &str, name: &str) -> Option<InstanceStatus> {
        self.manager
            .status()
            .await
            .into_iter()
            .find(|i| i.tenant == tenant && i.integration == name)
    }

    async fn describe(
        &self,
        integration: Integration,
        check: Vec<proto::CheckResult>,
    ) -> proto::IntegrationInfo {
        let instance = self
            .instance_of(&integration.tenant, &integration.name)
            .await;
        info(&integration, instance.as_ref(), check)
    }

    /// Runs the admission checks on a candidate configuration; returns the Check results
    /// and its field mappings, compiled (once: the instance is configured with them).
    async fn admit(
        &self,
        tenant: &str,
        name: &str,
        plugin: &str,
        config: &Value,
        reader: &str,
    ) -> Result<(Vec<proto::CheckResult>, Arc<plugin_kit::FieldMappings>), Status> {
        let mappings = plugin_kit::FieldMappings::compile(config.get("mappings"))
            .map(Arc::new)
            .map_err(|err| {
                Status::invalid_argument(format!(
                    "the configuration's field mappings are invalid: {err}"
                ))
            })?;
        if !self.flags.plugin_enabled(tenant, plugin) {
            return Err(Status::failed_precondition(format!(
                "plugin `{plugin}` is disabled for tenant `{tenant}` (flag plugin.{plugin})"
            )));
        }
        self.integrations
            .check_credential_refs(tenant, config)
            .map_err(Status::from)?;
        let labels = self
            .registry
            .selected(plugin)
            .map(|package| package.manifest.label_urls.clone())
            .unwrap_or_default();
        self.allowed_endpoints
            .check(config, &labels)
            .map_err(|why| {
                Status::invalid_argument(format!("the configuration is refused: {why}"))
            })?;
        let mut probe = self.manager.probe(plugin).await.map_err(|why| {
            Status::failed_precondition(format!(
                "cannot start plugin `{plugin}` to check the configuration: {why}"
            ))
        })?;
        let verdict = async {
            // `mappings` is the pipeline's, not the plugin's: its schema need not know it.
            let mut for_plugin = config.clone();
            if let Some(object) = for_plugin.as_object_mut() {
                object.remove("mappings");
            }
            if let Err(errors) =
                against_schema(&probe.description().config_schema_json, &for_plugin)
            {
                return Err(Status::invalid_argument(format!(
                    "the configuration does not match plugin `{plugin}`'s schema:\n{}",
                    errors.join("\n")
                )));
            }
            let request = self
                .integrations
                .build_configure(tenant, name, config, &format!("{reader} (admission check)"))
                .map_err(Status::from)?;
            match probe.configure_and_check(request).await {
                Err(status) => Err(Status::failed_precondition(format!(
                    "plugin `{plugin}` refused the configuration: {}",
                    status.message()
                ))),
                Ok(None) => Ok(Vec::new()),
                Ok(Some(check)) => {
                    let results: Vec<proto::CheckResult> = check
                        .results
                        .into_iter()
                        .map(|r| proto::CheckResult {
                            resource: r.resource,
                            permission: r.permission,
                            ok: r.ok,
                            message: r.message,
                            error_class: r.error_class,
                        })
                        .collect();
                    if check.ok {
                        Ok(results)
                    } else {
                        let failures: Vec<String> = results
                            .iter()
                            .filter(|r| !r.ok)
                            .map(|r| {
                                format!(
                                    "{}: missing permission {} ({})",
                                    r.resource, r.permission, r.message
                                )
                            })
                            .collect();
                        Err(Status::failed_precondition(format!(
                            "plugin `{plugin}`'s check failed:\n{}",
                            failures.join("\n")
                        )))
                    }
                }
            }
        }
        .await;
        probe.stop().await;
        verdict.map(|results| (results, mappings))
    }

    /// After a credential changed: every integration using it is checked again with the
    /// new secret. Those that pass are restarted (or re-enabled, if this credential's
    /// failure had disabled them) and so receive it; those that fail are disabled with
    /// the reason, and an alert is logged.
    pub(super) async fn revalidate_users(&self, tenant: &str, credential: &str, author: &str) {
        let users = match self.integrations.using_credential(tenant, credential) {
            Ok(users) => users,
            Err(err) => {
                tracing::error!(error = %err, "cannot find the integrations using a changed credential");
                return;
            }
        };
        let mut changed = false;
        for integration in users {
            let revivable = integration.disabled_by_credential.as_deref() == Some(credential)
                || integration.disabled_by_health;
            if !integration.enabled && !revivable {
                continue;
            }
            let config = integration.current().config.clone();
            match self
                .admit(
                    tenant,
                    &integration.name,
                    &integration.plugin,
                    &config,
                    author,
                )
                .await
            {
                Ok(_) if revivable => {
                    if let Err(err) =
                        self.integrations
                            .set_enabled(tenant, &integration.name, true, None, author)
                    {
                        tracing::error!(error = %err, "cannot re-enable an integration");
                    }
                    tracing::info!(tenant, integration = %integration.name, credential, "integration re-enabled by a working credential");
                    changed = true;
                }
                Ok(_) => {
                    self.manager
                        .restart_instance(&InstanceKey::new(tenant, &integration.name))
                        .await;
                }
                Err(status) => {
                    let reason = format!(
                        "credential `{credential}` failed validation: {}",
                        status.message()
                    );
                    tracing::error!(alert = true, tenant, integration = %integration.name, "{reason}; integration disabled");
                    if let Err(err) = self.integrations.disable_for_credential(
                        tenant,
                        credential,
                        Some(&integration.name),
                        &reason,
                        author,
                    ) {
                        tracing::error!(error = %err, "cannot disable an integration");
                    }
                    changed = true;
                }
            }
        }
        if changed {
            self.desired.apply().await;
            self.manager.retry_refused().await;
        }
    }

    pub(super) async fn add_integration(
        &self,
        request: Request<proto::AddIntegrationRequest>,
    ) -> Result<Response<proto::IntegrationInfo>, Status> {
        let principal = self.auth.for_tenant(&request, &request.get_ref().tenant)?;
        let body = request.into_inner();
        self.tenants
            .require(&body.tenant)
            .map_err(|e| Status::not_found(e.to_string()))?;
        if self
            .integrations
            .get(&body.tenant, &body.name)
            .map_err(Status::from)?
            .is_some()
        {
            return Err(Status::from(IntegrationError::Exists {
                tenant: body.tenant,
                name: body.name,
            }));
        }
        let held = self
            .integrations
            .list(Some(&body.tenant))
            .map_err(Status::from)?
            .len();
        quota::check(
            &body.tenant,
            held,
            self.admin.max_integrations_per_tenant,
            "integrations",
            "admin.max_integrations_per_tenant",
        )?;
        let config = parse_config(&body.config_json)?;
        let (check, mappings) = self
            .admit(
                &body.tenant,
                &body.name,
                &body.plugin,
                &config,
                &principal.label(),
            )
            .await?;
        let integration = self
            .integrations
            .record_version(
                &body.tenant,
                &body.name,
                Some(&body.plugin),
                (config, mappings),
                "add",
                &principal.label(),
            )
            .map_err(Status::from)?;
        self.desired.apply().await;
        Ok(Response::new(self.describe(integration, check).await))
    }

    /// Admits `config` as the next version of an existing integration and restarts only
    /// that integration's instance.
    async fn new_version(
        &self,
        tenant: &str,
        name: &str,
        config: Value,
        change: &str,
        author: &str,
    ) -> Result<proto::IntegrationInfo, Status> {
        let existing = self
            .integrations
            .require(tenant, name)
            .map_err(Status::from)?;
        let (check, mappings) = self
            .admit(tenant, name, &existing.plugin, &config, author)
            .await?;
        let mut integration = self
            .integrations
            .record_version(tenant, name, None, (config, mappings), change, author)
            .map_err(Status::from)?;
        if integration.disabled_by_health {
            // The daemon disabled it for refusals; a configuration that passes its
            // check brings it back.
            integration = self
                .integrations
                .set_enabled(tenant, name, true, None, author)
                .map_err(Status::from)?;
            tracing::info!(
                tenant,
                integration = name,
                "integration re-enabled by a configuration that passes its check"
            );
        }
        if !self
            .manager
            .restart_instance(&InstanceKey::new(tenant, name))
            .await
        {
            self.desired.apply().await;
        }
        Ok(self.describe(integration, check).await)
    }

    pub(super) async fn update_integration(
        &self,
        request: Request<proto::UpdateIntegrationRequest>,
    ) -> Result<Response<proto::IntegrationInfo>, Status> {
        let principal = self.auth.for_tenant(&request, &request.get_ref().tenant)?;
        let body = request.into_inner();
        let config = parse_config(&body.config_json)?;
        Ok(Response::new(
            self.new_version(
                &body.tenant,
                &body.name,
                config,
                "update",
                &principal.label(),
            )
            .await?,
        ))
    }

    pub(super) async fn rollback_integration(
        &self,
        request: Request<proto::RollbackIntegrationRequest>,
    ) -> Result<Response<proto::IntegrationInfo>, Status> {
        let principal = self.auth.for_tenant(&request, &request.get_ref().tenant)?;
        let body = request.into_inner();
        let existing = self
            .integrations
            .require(&body.tenant, &body.name)
            .map_err(Status::from)?;
        let target = existing
            .versions
            .iter()
            .find(|v| v.version == body.to)
            .ok_or_else(|| {
                Status::from(IntegrationError::UnknownVersion {
                    name: body.name.clone(),
                    version: body.to,
                })
            })?;
        let config = target.config.clone();
        let change = format!("rollback to {}", body.to);
        Ok(Response::new(
            self.new_version(
                &body.tenant,
                &body.name,
                config,
                &change,
                &principal.label(),
            )
            .await?,
        ))
    }

    pub(super) async fn set_integration_enabled(
        &self,
        request: Request<proto::SetIntegrationEnabledRequest>,
    ) -> Result<Response<proto::IntegrationInfo>, Status> {
        let principal = self.auth.for_tenant(&request, &request.get_ref().tenant)?;
        let body = request.into_inner();
        let reason = format!("disabled by {}", principal.label());
        let integration = self
            .integrations
            .set_enabled(
                &body.tenant,
                &body.name,
                body.enabled,
                (!body.enabled).then_some(reason.as_str()),
                &principal.label(),
            )
            .map_err(Status::from)?;
        self.desired.apply().await;
        Ok(Response::new(self.describe(integration, Vec::new()).await))
    }

    pub(super) async fn remove_integration(
        &self,
        request: Request<proto::IntegrationRef>,
    ) -> Result<Response<proto::IntegrationInfo>, Status> {
        let principal = self.auth.for_tenant(&request, &request.get_ref().tenant)?;
        let body = request.into_inner();
        let integration = self
            .integrations
            .remove(&body.tenant, &body.name, &principal.label())
            .map_err(Status::from)?;
        self.desired.apply().await;
        Ok(Response::new(info(&integration, None, Vec::new())))
    }

    pub(super) async fn list_integrations(
        &self,
        request: Request<proto::ListIntegrationsRequest>,
    ) -> Result<Response<proto::ListIntegrationsResponse>, Status> {
        self.auth.for_tenant(&request, &request.get_ref().tenant)?;
        let tenant = &request.get_ref().tenant;
        self.tenants
            .require(tenant)
            .map_err(|e| Status::not_found(e.to_string()))?;
        let instances = self.manager.status().await;
        let integrations = self
            .integrations
            .list(Some(tenant))
            .map_err(Status::from)?
            .iter()
            .map(|i| {
                info(
                    i,
                    instances
                        .iter()
                        .find(|s| s.tenant == i.tenant && s.integration == i.name),
                    Vec::new(),
                )
            })
            .collect();
        Ok(Response::new(proto::ListIntegrationsResponse {
            integrations,
        }))
    }

    pub(super) async fn show_integration(
        &self,
        request: Request<proto::IntegrationRef>,
    ) -> Result<Response<proto::IntegrationInfo>, Status> {
        self.auth.for_tenant(&request, &request.get_ref().tenant)?;
        let body = request.into_inner();
        let integration = self
            .integrations
            .require(&body.tenant, &body.name)
            .map_err(Status::from)?;
        Ok(Response::new(self.describe(integration, Vec::new()).await))
    }

    pub(super) async fn integration_history(
        &self,
        request: Request<proto::IntegrationRef>,
    ) -> Result<Response<proto::IntegrationHistoryResponse>, Status> {
        self.auth.for_tenant(&request, &request.get_ref().tenant)?;
        let body = request.into_inner();
        let integration = self
            .integrations
            .require(&body.tenant, &body.name)
            .map_err(Status::from)?;
        let versions = integration
            .versions
            .into_iter()
            .map(|v| proto::IntegrationVersion {
                version: v.version,
                config_json: v.config.to_string(),
                author: v.author,
                time_unix_ms: v.time_ms,
                change: v.change,
                diff: v.diff,
            })
            .collect();
        Ok(Response::new(proto::IntegrationHistoryResponse {
            versions,
        }))
    }

    pub(super) async fn list_flags(
        &self,
        request: Request<proto::ListFlagsRequest>,
    ) -> Result<Response<proto::ListFlagsResponse>, Status> {
        let tenant = request.get_ref().tenant.clone();
        let tenant = if tenant.is_empty() {
            self.auth.operator(&request)?;
            None
        } else {
            self.auth.for_tenant(&request, &tenant)?;
            Some(tenant)
        };
        let plugins: Vec<String> = self
            .registry
            .list()
            .map(|l| l.into_iter().map(|p| p.package.manifest.name).collect())
            .unwrap_or_default();
        let flags = self
            .flags
            .list(tenant.as_deref(), &plugins)
            .map_err(Status::from)?
            .into_iter()
            .map(|f| proto::FlagInfo {
                key: f.key,
                value: f.value,
                source: f.source.to_owned(),
            })
            .collect();
        Ok(Response::new(proto::ListFlagsResponse { flags }))
    }

    pub(super) async fn set_flag(
        &self,
        request: Request<proto::SetFlagRequest>,
    ) -> Result<Response<proto::FlagInfo>, Status> {
        let tenant = request.get_ref().tenant.clone();
        let principal = if tenant.is_empty() {
            self.auth.operator(&request)?
        } else {
            let principal = self.auth.for_tenant(&request, &tenant)?;
            self.tenants
                .require(&tenant)
                .map_err(|e| Status::not_found(e.to_string()))?;
            principal
        };
        let tenant = (!tenant.is_empty()).then_some(tenant);
        let flag = self
            .flags
            .set(
                tenant.as_deref(),
                &request.get_ref().assignment,
                &principal.label(),
            )
            .map_err(Status::from)?;
        // Only instances whose flag changed start or stop.
        self.desired.apply().await;
        Ok(Response::new(proto::FlagInfo {
            key: flag.key,
            value: flag.value,
            source: flag.source.to_owned(),
        }))
    }
}
