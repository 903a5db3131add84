//! Health and alerts on the admin socket: `health`, `integrations check`, `alerts list`,
//! and tenants' alert channels (`alerts channels add|list|remove`, `alerts test`).

use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};

use super::peer::{Authenticator, Principal};
use super::proto;
use crate::config::ChannelFormat;
use crate::credentials::{Credentials, NewSecret, SecretBytes};
use crate::health::{CheckOutcome, HealthBook, check_outcome};
use crate::integrations::{CredentialRef, Integrations, credential_refs};
use crate::monitoring::Monitoring;
use crate::monitoring::alert::{Alert, AlertState, Notification, NotificationKind};
use crate::monitoring::channels::{Channel, Owner, TenantChannel, secret_credential_name};
use crate::monitoring::delivery::Sent;
use crate::names::InstanceKey;
use crate::tenants::Tenants;

/// How long an on-demand `Check` may take.
const CHECK_DEADLINE: Duration = Duration::from_secs(60);

/// The health calls, with the components they need.
#[derive(Debug, Clone)]
pub(super) struct HealthCalls {
    pub(super) auth: Authenticator,
    pub(super) tenants: Tenants,
    pub(super) monitoring: Arc<Monitoring>,
    pub(super) book: Arc<HealthBook>,
    pub(super) credentials: Option<Arc<Credentials>>,
    pub(super) integrations: Integrations,
    pub(super) allowed_endpoints: crate::endpoints::AllowedEndpoints,
}

fn json_document(value: &serde_json::Value) -> proto::JsonDocument {
    proto::JsonDocument {
        json: value.to_string(),
    }
}

impl HealthCalls {
    /// The tenant a call reads: its own for a tenant token, the asked one (or all, when
    /// empty) for an operator.
    fn scope<T>(&self, request: &Request<T>, tenant: &str) -> Result<Option<String>, Status> {
        if tenant.is_empty() {
            return match self.auth.authenticate(request)? {
                Principal::Operator(_) => Ok(None),
                Principal::Tenant(token) => Ok(Some(token.tenant)),
            };
        }
        let principal = self.auth.for_tenant(request, tenant)?;
        if matches!(principal, Principal::Operator(_)) {
            self.tenants.require(tenant).map_err(Status::from)?;
        }
        Ok(Some(tenant.to_owned()))
    }

    pub(super) async fn health(
        &self,
        request: Request<proto::HealthRequest>,
    ) -> Result<Response<proto::JsonDocument>, Status> {
        let tenant = self.scope(&request, &request.get_ref().tenant)?;
        let document = self
            .monitoring
            .health_document(tenant.as_deref(), None)
            .await;
        let json = serde_json::to_string(&document).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(proto::JsonDocument { json }))
    }

    pub(super) async fn check_integration(
        &self,
        request: Request<proto::IntegrationRef>,
    ) -> Result<Response<proto::CheckIntegrationResponse>, Status> {
        let body = request.get_ref().clone();
        self.scope(&request, &body.tenant)?;
        let key = InstanceKey::new(&body.tenant, &body.name);
        let known = self
            .monitoring
            .health(Some(&body.tenant))
            .await
            .into_iter()
            .find(|h| h.integration == body.name);
        let Some(known) = known else {
            return Err(Status::not_found(format!(
                "tenant `{}` has no integration `{}`",
                body.tenant, body.name
            )));
        };
        let Some(mut client) = self.monitoring.client(&key).await else {
            return Err(Status::failed_precondition(format!(
                "integration `{}` is not running ({}: {}); its check runs when it runs",
                body.name,
                known.state.as_str(),
                if known.reason.is_empty() {
                    "no reason given"
                } else {
                    &known.reason
                }
            )));
        };
        let answer = tokio::time::timeout(
            CHECK_DEADLINE,
            client.check(plugin_protocol::v1::CheckRequest {}),
        )
        .await
        .map_err(|_| {
            Status::deadline_exceeded(format!(
                "the plugin did not answer Check within {}s",
                CHECK_DEADLINE.as_secs()
            ))
        })?;
        let mut results: Vec<proto::CheckResult> = match &answer {
            Ok(response) => response
                .get_ref()
                .results
                .iter()
                .map(|r| proto::CheckResult {
                    resource: r.resource.clone(),
                    permission: r.permission.clone(),
                    ok: r.ok,
                    message: r.message.clone(),
                    error_class: r.error_class.clone(),
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        let mut outcome = check_outcome(answer);
        // The plugin holds the secrets it was configured with; whether they are still
        // stored is the daemon's to say. A deleted one fails the check (the next restart
        // could not configure the integration), whatever the plugin answered.
        let missing = self.missing_credentials(&body.tenant, &body.name).await?;
        for (reference, message) in &missing {
            results.push(proto::CheckResult {
                resource: format!("credential `{}`", reference.name),
                permission: format!("stored ({})", reference.path),
                ok: false,
                message: message.clone(),
                error_class: plugin_kit::ErrorClass::Config.as_str().to_owned(),
            });
        }
        if let Some((_, message)) = missing.first() {
            outcome = CheckOutcome::Failed {
                class: plugin_kit::ErrorClass::Config,
                message: message.clone(),
            };
        }
        self.book.checked(&key, outcome.failure());
        let state = self
            .monitoring
            .health(Some(&body.tenant))
            .await
            .into_iter()
            .find(|h| h.integration == body.name)
            .map(|h| h.state.as_str().to_owned())
            .unwrap_or_default();
        let (ok, error_class, message) = match outcome {
            CheckOutcome::Passed => (true, String::new(), "the check passed".to_owned()),
            CheckOutcome::NotSupported => (
                true,
                String::new(),
                "the plugin does not implement Check".to_owned(),
            ),
            CheckOutcome::Failed { class, message } => (false, class.as_str().to_owned(), message),
        };
        Ok(Response::new(proto::CheckIntegrationResponse {
            ok,
            results,
            error_class,
            message,
            state,
        }))
    }

    /// The credentials `integration`'s configuration names that are no longer stored,
    /// each with what to do about it.
    async fn missing_credentials(
        &self,
        tenant: &str,
        integration: &str,
    ) -> Result<Vec<(CredentialRef, String)>, Status> {
        let Some(credentials) = self.credentials.clone() else {
            return Ok(Vec::new());
        };
        let integrations = self.integrations.clone();
        let (tenant, integration) = (tenant.to_owned(), integration.to_owned());
        tokio::task::spawn_blocking(move || {
            let Some(stored) = integrations
                .get(&tenant, &integration)
                .map_err(|e| Status::internal(e.to_string()))?
            else {
                return Ok(Vec::new());
            };
            let references = credential_refs(&stored.current().config)
                .map_err(|e| Status::internal(e.to_string()))?;
            if references.is_empty() {
                return Ok(Vec::new());
            }
            let names: Vec<String> = credentials
                .list(&tenant)
                .map_err(Status::from)?
                .into_iter()
                .map(|info| info.name)
                .collect();
            Ok(references
                .into_iter()
                .filter(|reference| !names.contains(&reference.name))
                .map(|reference| {
                    let message = format!(
                        "credential `{}` ({}) is no longer stored: the integration runs on the copy it was configured with and cannot start again; set it again (`integrationctl credentials set {tenant} {} ...`) or change the integration",
                        reference.name, reference.path, reference.name
                    );
                    (reference, message)
                })
                .collect())
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
    }

    pub(super) async fn list_alerts(
        &self,
        request: Request<proto::ListAlertsRequest>,
    ) -> Result<Response<proto::JsonDocument>, Status> {
        let tenant = self.scope(&request, &request.get_ref().tenant)?;
        let state = match request.get_ref().state.as_str() {
            "" => None,
            text => Some(AlertState::parse(text).ok_or_else(|| {
                Status::invalid_argument(format!(
                    "`--state {text}` is not pending, firing or resolved"
                ))
            })?),
        };
        let document = self
            .monitoring
            .alerts_document(tenant.as_deref(), state)
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(json_document(&document)))
    }

    fn info(&self, channel: &Channel) -> proto::AlertChannelInfo {
        let queue = channel.key.queue();
        let status = self
            .monitoring
            .deliveries()
            .status()
            .remove(&queue)
            .unwrap_or_default();
        proto::AlertChannelInfo {
            tenant: match &channel.key.owner {
                Owner::Operator => String::new(),
                Owner::Tenant(tenant) => tenant.clone(),
            },
            name: channel.key.name.clone(),
            endpoint: crate::endpoints::shown(&channel.url),
            format: channel.format.as_str().to_owned(),
            min_severity: channel.min_severity.as_str().to_owned(),
            signed: channel.secret.is_some(),
            queued: self.monitoring.alert_store().waiting(&queue).unwrap_or(0) as u64,
            delivered: status.delivered,
            failures: status.failures,
            last_error: status.last_error.unwrap_or_default(),
        }
    }

    pub(super) async fn add_alert_channel(
        &self,
        request: Request<proto::AddAlertChannelRequest>,
    ) -> Result<Response<proto::AlertChannelInfo>, Status> {
        let principal = self.auth.for_tenant(&request, &request.get_ref().tenant)?;
        let body = request.into_inner();
        self.tenants.require(&body.tenant).map_err(Status::from)?;
        if !crate::names::is_name(&body.name) {
            return Err(Status::invalid_argument(format!(
                "`{}` is not a valid channel name: {}",
                body.name,
                plugin_protocol::NAME_RULE
            )));
        }
        let format = match body.format.as_str() {
            "" => ChannelFormat::Betalogs,
            text => ChannelFormat::parse(text).ok_or_else(|| {
                Status::invalid_argument(format!(
                    "`--format {text}` is not betalogs, slack or teams"
                ))
            })?,
        };
        let min_severity = match body.min_severity.as_str() {
            "" => plugin_protocol::Severity::Warning,
            text => serde_json::from_value(serde_json::Value::String(text.to_owned())).map_err(
                |_| {
                    Status::invalid_argument(format!(
                        "`--min-severity {text}` is not debug, info, warning, error or critical"
                    ))
                },
            )?,
        };
        if reqwest::Url::parse(&body.url)
            .map(|u| u.scheme() != "http" && u.scheme() != "https")
            .unwrap_or(true)
        {
            return Err(Status::invalid_argument(
                "`--url` must be an absolute http(s) URL",
            ));
        }
        self.allowed_endpoints
            .check(&serde_json::json!({ "url": body.url }), &[])
            .map_err(Status::invalid_argument)?;
        if format == ChannelFormat::Betalogs && body.secret.is_empty() {
            return Err(Status::invalid_argument(
                "the betalogs format signs its body: give the HMAC secret on stdin",
            ));
        }
        let secret_credential = if body.secret.is_empty() {
            None
        } else {
            let credentials = self.credentials.as_ref().ok_or_else(|| {
                Status::failed_precondition(
                    "this daemon has no credentials.master_key: a channel secret cannot be stored",
                )
            })?;
            let name = secret_credential_name(&body.name);
            // Held as a secret from here: never in a log or an error.
            let given = SecretBytes::new(body.secret);
            let text = std::str::from_utf8(given.expose())
                .map_err(|_| Status::invalid_argument("the secret is not UTF-8 text"))?;
            // An `api-key` takes the secret as it is (stored as a JSON string).
            let raw = SecretBytes::new(text.trim().as_bytes().to_vec());
            let exists = credentials
                .list(&body.tenant)
                .map_err(Status::from)?
                .iter()
                .any(|c| c.name == name);
            credentials
                .set(
                    &body.tenant,
                    &name,
                    &NewSecret {
                        kind: "api-key".to_owned(),
                        raw,
                        expires_ms: None,
                        rotate: exists,
                    },
                    &principal.label(),
                )
                .map_err(Status::from)?;
            Some(name)
        };
        let stored = TenantChannel {
            tenant: body.tenant.clone(),
            name: body.name.clone(),
            url: body.url,
            format: format.as_str().to_owned(),
            min_severity,
            secret_credential,
            created_by: principal.label(),
            created_ms: plugin_kit::clock::now_ms(),
        };
        self.monitoring
            .tenant_channels()
            .put(&stored)
            .map_err(|e| Status::internal(e.to_string()))?;
        self.monitoring.channels_changed();
        let channel = self
            .find(Some(&body.tenant), &body.name)
            .ok_or_else(|| Status::internal("the stored channel cannot be used"))?;
        Ok(Response::new(self.info(&channel)))
    }

    /// A channel by name: the tenant's own, or (for operators) one from the config.
    fn find(&self, tenant: Option<&str>, name: &str) -> Option<Channel> {
        self.monitoring.channels().into_iter().find(|c| {
            c.key.name == name
                && match (&c.key.owner, tenant) {
                    (Owner::Tenant(owner), Some(tenant)) => owner == tenant,
                    (Owner::Operator, None) => true,
                    _ => false,
                }
        })
    }

    pub(super) async fn list_alert_channels(
        &self,
        request: Request<proto::ListAlertChannelsRequest>,
    ) -> Result<Response<proto::ListAlertChannelsResponse>, Status> {
        let tenant = self.scope(&request, &request.get_ref().tenant)?;
        let channels = self
            .monitoring
            .channels()
            .iter()
            .filter(|c| match (&c.key.owner, tenant.as_deref()) {
                (_, None) => true,
                (Owner::Tenant(owner), Some(tenant)) => owner == tenant,
                (Owner::Operator, Some(_)) => false,
            })
            .map(|c| self.info(c))
            .collect();
        Ok(Response::new(proto::ListAlertChannelsResponse { channels }))
    }

    fn channel_ref<T>(
        &self,
        request: &Request<T>,
        reference: &proto::AlertChannelRef,
    ) -> Result<Channel, Status> {
        let tenant = if reference.tenant.is_empty() {
            self.auth.operator(request)?;
            None
        } else {
            self.auth.for_tenant(request, &reference.tenant)?;
            Some(reference.tenant.as_str())
        };
        self.find(tenant, &reference.name).ok_or_else(|| {
            Status::not_found(match tenant {
                Some(tenant) => format!(
                    "tenant `{tenant}` has no alert channel `{}`",
                    reference.name
                ),
                None => format!(
                    "no operator alert channel `{}` in [[alerts.channels]]",
                    reference.name
                ),
            })
        })
    }

    pub(super) async fn remove_alert_channel(
        &self,
        request: Request<proto::AlertChannelRef>,
    ) -> Result<Response<proto::AlertChannelInfo>, Status> {
        let reference = request.get_ref().clone();
        if reference.tenant.is_empty() {
            self.auth.operator(&request)?;
            return Err(Status::failed_precondition(
                "an operator channel comes from [[alerts.channels]] in the configuration; remove it there and restart",
            ));
        }
        let principal = self.auth.for_tenant(&request, &reference.tenant)?;
        let channel = self.channel_ref(&request, &reference)?;
        let info = self.info(&channel);
        let removed = self
            .monitoring
            .tenant_channels()
            .remove(&reference.tenant, &reference.name)
            .map_err(|e| Status::internal(e.to_string()))?;
        if let (Some(removed), Some(credentials)) = (removed, &self.credentials)
            && let Some(secret) = removed.secret_credential
            && let Err(err) = credentials.delete(&reference.tenant, &secret, &principal.label())
        {
            tracing::warn!(error = %err, "cannot delete a removed alert channel's secret");
        }
        if let Err(err) = self
            .monitoring
            .alert_store()
            .drop_queue(&channel.key.queue())
        {
            tracing::warn!(error = %err, "cannot drop a removed alert channel's queue");
        }
        self.monitoring.channels_changed();
        Ok(Response::new(info))
    }

    pub(super) async fn test_alert_channel(
        &self,
        request: Request<proto::AlertChannelRef>,
    ) -> Result<Response<proto::TestAlertChannelResponse>, Status> {
        let reference = request.get_ref().clone();
        let channel = self.channel_ref(&request, &reference)?;
        let now = plugin_kit::clock::now_ms();
        let alert = Alert {
            id: format!("test-{now:x}"),
            fingerprint: "test".to_owned(),
            rule: "test".to_owned(),
            tenant: match &channel.key.owner {
                Owner::Tenant(tenant) => Some(tenant.clone()),
                Owner::Operator => None,
            },
            integration: None,
            subject: None,
            severity: plugin_protocol::Severity::Info,
            summary: "a test notification from integrationd".to_owned(),
            description: "Sent by `integrationctl alerts test`: this channel receives alerts."
                .to_owned(),
            labels: std::collections::BTreeMap::new(),
            links: Vec::new(),
            state: AlertState::Firing,
            pending_since_ms: now,
            started_at_ms: Some(now),
            resolved_at_ms: None,
            notified_at_ms: Some(now),
            notifications: 1,
        };
        let notification = Notification {
            key: format!("{}:test", alert.id),
            kind: NotificationKind::Test,
            alert,
            created_ms: now,
        };
        let sent = self
            .monitoring
            .deliveries()
            .send_now(&channel, &notification)
            .await;
        Ok(Response::new(match sent {
            Sent::Delivered(status) => proto::TestAlertChannelResponse {
                delivered: true,
                message: format!(
                    "delivered to {}: the receiver answered {status}",
                    crate::endpoints::shown(&channel.url)
                ),
            },
            Sent::Failed(why) => proto::TestAlertChannelResponse {
                delivered: false,
                message: format!(
                    "not delivered to {}: {why}",
                    crate::endpoints::shown(&channel.url)
                ),
            },
        }))
    }
}
