//! `integration-webhook`: any service that delivers signed webhooks, added by
//! configuration instead of code. An integration says how its deliveries are
//! authenticated ([`plugin_kit::signature::Authentication`]), where each delivery names
//! its event type and id, and routes that map each type to canonical events with
//! templates over the payload ([`config`], [`template`]); a `preset` ships all of that
//! for a known service ([`presets`]). Everything is compiled at `Configure`
//! ([`mapping`]), so a mistake in a route is a refused configuration naming the key,
//! never a delivery dropped at 3 a.m.
//!
//! Answers: 202 with the events; 200 `ignored: …` for a type no route maps (the sender
//! must not retry it); 200 with the rendered body for a handshake a `replies` entry
//! answers (Slack's `url_verification`); 400 for a body that is not JSON or lacks its type or id; 401 for
//! a delivery that fails authentication; 422 for one the routes cannot map (a pointer
//! they need is absent, a mapped type is not canonical). Only 202 stores anything.

pub mod config;
#[doc(hidden)]
pub mod fuzzing;
pub mod mapping;
pub mod payload;
pub mod presets;
pub mod template;

use std::sync::{Arc, RwLock};

use plugin_kit::config::{ConfigError, Configured, schema_with_roles};
use plugin_kit::signature::WebhookSecrets;
use plugin_kit::{Capability, Description, MapContext, Plugin, Status, v1};
use serde::Deserialize;

use crate::config::Settings;
use crate::mapping::{Mapping, Outcome};
use crate::payload::Json;

/// The plugin's name: in `Describe`, the manifest and the package directory.
pub const NAME: &str = "webhook";
/// The credential role of the secret deliveries are authenticated with.
pub const SECRET_ROLE: &str = "webhook_secret";
/// Deliveries nested deeper than this are refused before mapping (serde_json's own
/// limit is 128; a payload that deep is no service's).
const MAX_DEPTH: usize = 64;

/// The credential roles a configuration may name.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // a schema only: the secret arrives by role with Configure
struct Roles {
    /// The secret the deliveries are authenticated with (`webhook-secret`).
    webhook_secret: String,
}

/// One configured integration: its mapping and its secret.
#[derive(Debug)]
pub struct Integration {
    context: MapContext,
    mapping: Mapping,
    secrets: WebhookSecrets,
}

impl Integration {
    /// `settings` (over their preset) compiled for `context`, verifying with `secrets`.
    pub fn new(
        context: MapContext,
        settings: Settings,
        secrets: WebhookSecrets,
    ) -> Result<Self, ConfigError> {
        let mapping = compile(settings)?;
        mapping
            .authentication
            .check_secrets(&secrets)
            .map_err(|why| ConfigError::Field {
                path: format!("credentials.{SECRET_ROLE}"),
                message: why.to_owned(),
            })?;
        Ok(Self {
            context,
            mapping,
            secrets,
        })
    }

    /// The answer to one delivery, received at `received` (RFC 3339).
    pub fn answer(&self, request: &v1::WebhookRequest, received: &str) -> v1::WebhookResponse {
        answer(self, request, received)
    }
}

/// The plugin: idle until configured.
#[derive(Debug, Default)]
pub struct Webhook {
    instance: RwLock<Option<Arc<Integration>>>,
}

impl Webhook {
    fn instance(&self) -> Option<Arc<Integration>> {
        self.instance
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// The configuration's settings over its preset, compiled.
pub fn compile(settings: Settings) -> Result<Mapping, ConfigError> {
    let settings = match settings.preset.clone() {
        Some(name) => settings.over(presets::preset(&name)?),
        None => settings,
    };
    Mapping::compile(settings)
}

impl Plugin for Webhook {
    fn describe(&self) -> Description {
        Description {
            name: NAME.to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            description: "Any signed webhook, mapped to canonical events by configuration"
                .to_owned(),
            capabilities: [Capability::Check, Capability::Webhook].into(),
            config_schema: schema_with_roles::<Settings, Roles>(),
            credential_kinds: vec!["webhook-secret".to_owned()],
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
        let context = MapContext {
            tenant: configured.tenant,
            integration: configured.integration,
        };
        let integration = Integration::new(context, configured.config, secrets)?;
        *self
            .instance
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::new(integration));
        Ok(())
    }

    fn webhook_authentication(&self) -> Option<plugin_kit::signature::Authentication> {
        self.instance()
            .map(|instance| instance.mapping.authentication.clone())
    }

    async fn check(&self) -> Result<v1::CheckResponse, Status> {
        // Configure compiled every route and read the secret: a configured instance
        // has both, an idle one has neither.
        let result = match self.instance() {
            Some(instance) => v1::CheckResult {
                resource: format!("{} route(s)", instance.mapping.route_count()),
                permission: "map".to_owned(),
                ok: true,
                error_class: String::new(),
                message: "every route compiled; the webhook secret is present".to_owned(),
            },
            None => v1::CheckResult {
                resource: "configuration".to_owned(),
                permission: "map".to_owned(),
                ok: false,
                error_class: plugin_kit::ErrorClass::Config.as_str().to_owned(),
                message: "not configured".to_owned(),
            },
        };
        Ok(v1::CheckResponse {
            ok: result.ok,
            results: vec![result],
        })
    }

    async fn handle_webhook(
        &self,
        request: v1::WebhookRequest,
    ) -> Result<v1::WebhookResponse, Status> {
        let Some(instance) = self.instance() else {
            return Ok(v1::WebhookResponse::answer(
                401,
                "not configured for webhooks",
            ));
        };
        Ok(answer(&instance, &request, &received_now()))
    }
}

/// The answer to one delivery, received at `received` (RFC 3339).
fn answer(
    instance: &Integration,
    request: &v1::WebhookRequest,
    received: &str,
) -> v1::WebhookResponse {
    if !request.host_verified
        && let Err(why) = instance
            .mapping
            .authentication
            .verify(&instance.secrets, request)
    {
        return v1::WebhookResponse::answer(401, why.to_string());
    }
    let Ok(text) = std::str::from_utf8(&request.body) else {
        return v1::WebhookResponse::answer(400, "the body is not UTF-8 JSON");
    };
    let body = match Json::parse(text) {
        Ok(body) => body,
        Err(err) => {
            return v1::WebhookResponse::answer(
                400,
                format!(
                    "the body is not JSON (line {}, column {})",
                    err.line(),
                    err.column()
                ),
            );
        }
    };
    if body.depth() > MAX_DEPTH {
        return v1::WebhookResponse::answer(
            400,
            format!("the body is nested deeper than {MAX_DEPTH} levels"),
        );
    }
    match instance
        .mapping
        .map(request, &body, text, &instance.context, received)
    {
        Ok(Outcome::Events(events)) => v1::WebhookResponse::accepted(events),
        Ok(Outcome::Ignored(why)) => {
            tracing::info!(integration = %instance.context.integration, "delivery ignored: {why}");
            v1::WebhookResponse::answer(200, format!("ignored: {why}"))
        }
        Ok(Outcome::Reply(text)) => v1::WebhookResponse::reply(text, "text/plain"),
        Err(refused) => v1::WebhookResponse::answer(refused.status, refused.message),
    }
}

/// Now, as RFC 3339 (UTC).
fn received_now() -> String {
    plugin_kit::clock::rfc3339_ms(plugin_kit::clock::now_ms())
}

#[cfg(test)]
mod tests;
