//! `integration-example`: a complete, small integration to start from. It takes signed
//! webhook deliveries from a service that reports the status of its jobs, and can also
//! poll the same reports from a URL; both become canonical events through one mapping
//! ([`map_report`]).
//!
//! A delivery is JSON `{"id", "time", "status", "message"?, "job"?}` signed as
//! `sha256=<hex>` (HMAC-SHA256 of the body with the integration's `webhook_secret`
//! credential) in [`SIGNATURE_HEADER`]. `status` `failed` becomes a
//! `com.betalogs.system.error` event, anything else a `com.betalogs.system.log` one.
//!
//! `Collect` may send a bearer token to `reports_url`: a credential of the plugin's own
//! kind `example/reports-token` (declared with its JSON Schema in `plugin.toml`, so the
//! daemon checks the secret when a tenant stores it) in the role [`TOKEN_ROLE`].
//!
//! Replace `example` (crate, binary, manifest, [`NAME`]) with your plugin's name, the
//! [`Settings`] with your configuration and [`map_report`] with your service's payloads.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use plugin_kit::config::{Configured, schema_of};
use plugin_kit::resilience::{BreakerSettings, Resilience, ResilientHttp, RetryPolicy, reqwest};
use plugin_kit::secrecy::{ExposeSecret, SecretString};
use plugin_kit::signature::{Scheme, WebhookSecrets};
use plugin_kit::{
    Category, Description, EventBuilder, EventStream, MapContext, MapError, Plugin, Severity,
    Status, v1,
};
use serde::Deserialize;

/// The plugin's name: in `Describe`, the manifest and the package directory.
pub const NAME: &str = "example";
/// The credential role of the webhook secret (a `webhook-secret` credential).
pub const SECRET_ROLE: &str = "webhook_secret";
/// The credential role of the optional bearer token for `reports_url`, of the kind
/// [`TOKEN_KIND`] that this plugin declares.
pub const TOKEN_ROLE: &str = "reports_token";
/// The kind's name in the manifest (`[credential_kinds.reports-token]`); the daemon knows
/// it as `NAME/reports-token`.
pub const TOKEN_KIND: &str = "reports-token";
/// The header carrying `sha256=<hex>` of the body. The manifest's `[webhook]` table names
/// it too, so that the daemon verifies a delivery it keeps while the plugin is down.
pub const SIGNATURE_HEADER: &str = "x-signature-256";

/// An integration's configuration, as its author writes it (TOML or JSON).
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The service the reports are about: the events' `service.name`.
    pub service: String,
    /// Where `Collect` reads the reports (a JSON array), if anywhere.
    pub reports_url: Option<String>,
}

/// One report, as the service sends it.
#[derive(Debug, Deserialize)]
pub struct Report {
    pub id: String,
    /// RFC 3339.
    pub time: String,
    pub status: String,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub job: Option<String>,
}

/// The canonical event of one report.
pub fn map_report(
    report: &Report,
    original: &serde_json::Value,
    service: &str,
    context: &MapContext,
) -> Result<String, MapError> {
    let failed = report.status == "failed";
    let (event_type, severity) = if failed {
        ("com.betalogs.system.error", Severity::Error)
    } else {
        ("com.betalogs.system.log", Severity::Info)
    };
    let message = report
        .message
        .clone()
        .unwrap_or_else(|| format!("job {}", report.status));
    let mut event = EventBuilder::new(
        event_type,
        Category::System,
        "https://example.invalid/reports",
        report.id.as_str(),
        report.time.as_str(),
    )
    .severity(severity)
    .field("service.name", service)
    .field("log.message", message)
    .original(original.clone());
    if let Some(job) = &report.job {
        event = event.subject(job.as_str());
    }
    event.to_json(context).map_err(|e| MapError {
        what: format!("report {}", report.id),
        why: e.to_string(),
    })
}

/// What one configured integration uses.
#[derive(Debug)]
struct Instance {
    context: MapContext,
    settings: Settings,
    secrets: WebhookSecrets,
    /// The bearer token for `reports_url`, when configured.
    token: Option<SecretString>,
    http: ResilientHttp,
}

impl Instance {
    /// `GET url`, with the bearer token if there is one.
    fn get<'a>(
        &'a self,
        url: &'a str,
    ) -> impl Fn(&reqwest::Client) -> reqwest::RequestBuilder + 'a {
        move |client| {
            let request = client.get(url);
            match &self.token {
                Some(token) => request.bearer_auth(token.expose_secret()),
                None => request,
            }
        }
    }
}

/// The plugin: idle until configured.
#[derive(Debug, Default)]
pub struct Example {
    instance: RwLock<Option<Arc<Instance>>>,
}

impl Example {
    fn instance(&self) -> Result<Arc<Instance>, Status> {
        self.instance
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .ok_or_else(|| Status::failed_precondition("not configured"))
    }
}

impl Plugin for Example {
    fn describe(&self) -> Description {
        Description {
            name: NAME.to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            description: "Job status reports, by signed webhook or by polling".to_owned(),
            capabilities: [
                plugin_kit::Capability::Check,
                plugin_kit::Capability::Collect,
                plugin_kit::Capability::Webhook,
            ]
            .into(),
            config_schema: schema_of::<Settings>(),
            credential_kinds: vec![
                "webhook-secret".to_owned(),
                plugin_kit::plugin_credential_kind(NAME, TOKEN_KIND),
            ],
        }
    }

    async fn configure(&self, request: v1::ConfigureRequest) -> Result<(), Status> {
        // An instance of the daemon's own file gets `{}`: idle until an integration
        // configures it.
        if request.config_json.trim() == "{}" {
            *self
                .instance
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
            return Ok(());
        }
        let configured = Configured::<Settings>::parse(&request)?;
        let secrets = configured
            .credentials
            .require(SECRET_ROLE)?
            .webhook_secrets()?;
        let token = configured
            .credentials
            .get(TOKEN_ROLE)
            .map(|token| token.field("token"))
            .transpose()?;
        let http = ResilientHttp::new(
            Resilience::new(
                "reports",
                RetryPolicy::default(),
                BreakerSettings::default(),
            ),
            Duration::from_secs(10),
        )
        .map_err(|e| Status::internal(e.to_string()))?;
        *self
            .instance
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::new(Instance {
            context: MapContext {
                tenant: configured.tenant,
                integration: configured.integration,
            },
            settings: configured.config,
            secrets,
            token,
            http,
        }));
        Ok(())
    }

    async fn check(&self) -> Result<v1::CheckResponse, Status> {
        let instance = self.instance()?;
        let mut results = Vec::new();
        if let Some(url) = &instance.settings.reports_url {
            let answer = instance.http.send(instance.get(url)).await;
            let failure = match answer {
                Ok(response) if response.status().is_success() => None,
                Ok(response) => Some((
                    plugin_kit::ErrorClass::from_http_status(response.status().as_u16())
                        .unwrap_or(plugin_kit::ErrorClass::Unavailable),
                    format!("HTTP {}", response.status()),
                )),
                Err(err) => Some((
                    err.class_with(plugin_kit::resilience::reqwest_class),
                    err.to_string(),
                )),
            };
            results.push(v1::CheckResult {
                resource: url.clone(),
                permission: "read".to_owned(),
                ok: failure.is_none(),
                error_class: failure
                    .as_ref()
                    .map(|(class, _)| class.as_str().to_owned())
                    .unwrap_or_default(),
                message: failure.map(|(_, message)| message).unwrap_or_default(),
            });
        }
        Ok(v1::CheckResponse {
            ok: results.iter().all(|r| r.ok),
            results,
        })
    }

    async fn collect(&self, cursor: String) -> Result<EventStream, Status> {
        let instance = self.instance()?;
        let Some(url) = &instance.settings.reports_url else {
            // Webhooks only: nothing to poll, which is not a failure.
            return Ok(Box::pin(tokio_stream::empty()));
        };
        let response = instance.http.send(instance.get(url)).await.map_err(|e| {
            e.class_with(plugin_kit::resilience::reqwest_class)
                .status(e.to_string())
        })?;
        if !response.status().is_success() {
            let class = plugin_kit::ErrorClass::from_http_status(response.status().as_u16())
                .unwrap_or(plugin_kit::ErrorClass::Unavailable);
            return Err(class.status(format!("{url} answered HTTP {}", response.status())));
        }
        let reports: Vec<serde_json::Value> = response
            .json()
            .await
            .map_err(|e| Status::invalid_argument(format!("{url}: not a JSON array: {e}")))?;
        // The cursor is the time of the newest report sent; reports at or before it are
        // not sent again.
        let mut newest = cursor.clone();
        let mut events = Vec::new();
        for original in &reports {
            let report: Report = serde_json::from_value(original.clone())
                .map_err(|e| Status::invalid_argument(format!("a report: {e}")))?;
            if !cursor.is_empty() && report.time <= cursor {
                continue;
            }
            events.push(
                map_report(
                    &report,
                    original,
                    &instance.settings.service,
                    &instance.context,
                )
                .map_err(|e| Status::invalid_argument(e.to_string()))?,
            );
            if report.time > newest {
                newest.clone_from(&report.time);
            }
        }
        let batch = v1::EventBatch {
            events_json: events,
            cursor: newest,
        };
        Ok(Box::pin(tokio_stream::iter([Ok(batch)])))
    }

    async fn handle_webhook(
        &self,
        request: v1::WebhookRequest,
    ) -> Result<v1::WebhookResponse, Status> {
        let Ok(instance) = self.instance() else {
            return Ok(v1::WebhookResponse::answer(
                401,
                "not configured for webhooks",
            ));
        };
        let scheme = Scheme::HmacSha256 {
            header: SIGNATURE_HEADER.to_owned(),
        };
        // The host has verified a delivery it kept while the plugin was down.
        if !request.host_verified
            && let Err(why) = scheme.verify(&instance.secrets, &request)
        {
            return Ok(v1::WebhookResponse::answer(401, why.to_string()));
        }
        let original: serde_json::Value = match serde_json::from_slice(&request.body) {
            Ok(value) => value,
            Err(e) => return Ok(v1::WebhookResponse::answer(400, format!("not JSON: {e}"))),
        };
        let report: Report = match serde_json::from_value(original.clone()) {
            Ok(report) => report,
            Err(e) => {
                return Ok(v1::WebhookResponse::answer(
                    400,
                    format!("not a report: {e}"),
                ));
            }
        };
        match map_report(
            &report,
            &original,
            &instance.settings.service,
            &instance.context,
        ) {
            Ok(event) => Ok(v1::WebhookResponse::accepted(vec![event])),
            Err(e) => Ok(v1::WebhookResponse::answer(400, e.to_string())),
        }
    }

    fn dependencies(&self) -> Vec<v1::DependencyStatus> {
        self.instance()
            .map(|i| vec![i.http.resilience().status()])
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> MapContext {
        MapContext {
            tenant: "acme".into(),
            integration: "jobs".into(),
        }
    }

    #[test]
    fn a_failed_report_is_an_error_event_valid_against_the_canonical_schema() {
        let original = serde_json::json!({
            "id": "r-1", "time": "2026-12-01T10:00:00Z", "status": "failed",
            "message": "nightly export failed", "job": "export"
        });
        let report: Report = serde_json::from_value(original.clone()).expect("report");
        let event: serde_json::Value = serde_json::from_str(
            &map_report(&report, &original, "billing", &context()).expect("map"),
        )
        .expect("json");
        assert_eq!(event["type"], "com.betalogs.system.error");
        assert_eq!(event["severity"], "error");
        assert_eq!(event["subject"], "export");
        assert_eq!(event["data"]["service.name"], "billing");
        let typed: plugin_kit::CanonicalEvent =
            serde_json::from_value(event).expect("the canonical event's shape");
        assert_eq!(typed.tenant, "acme");
        assert_eq!(
            typed.id,
            plugin_kit::event_id("acme", "jobs", "com.betalogs.system.error", "r-1"),
            "the id is deterministic: the same report is deduplicated"
        );
    }

    #[test]
    fn the_schema_names_the_settings() {
        let schema = schema_of::<Settings>();
        assert_eq!(schema["required"], serde_json::json!(["service"]));
        assert_eq!(
            schema["properties"]["reports_url"]["type"],
            serde_json::json!(["string", "null"])
        );
    }
}
