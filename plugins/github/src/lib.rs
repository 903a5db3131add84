//! The GitHub plugin as a library (the `integration-github` binary serves
//! [`GitHub`]; benchmarks drive its parts directly): GitHub commits, pull requests, deployments, releases and
//! workflow runs, from signed webhooks and from the REST API, as canonical events;
//! enrichment of failures with the commits and deployments around them.
//!
//! Module map: `settings` (Configure → typed settings and secrets), `scope` (which
//! repositories the integration covers), `webhook` (verify, scope, map one delivery),
//! `events` (GitHub objects → canonical events, shared by webhooks and the API), `api`
//! (REST client on plugin-kit's resilient HTTP; `api::auth` for tokens and App
//! installation tokens), `repositories`, `collect`, `check`, `enrich`, `renewal`.

pub mod api;
pub mod check;
pub mod collect;
pub mod description;
pub mod enrich;
pub mod events;
#[doc(hidden)]
pub mod fuzzing;
pub mod renewal;
pub mod repositories;
pub mod scope;
pub mod settings;
pub mod webhook;

use std::sync::{Arc, RwLock};

use plugin_kit::{EventStream, Status, v1};

use api::GitHubApi;
use api::auth::TokenSource;
use settings::Settings;

/// One configured integration.
#[derive(Debug)]
struct Instance {
    settings: Settings,
    api: Option<GitHubApi>,
}

/// The plugin; `Configure` replaces the instance.
#[derive(Debug, Default)]
pub struct GitHub {
    instance: RwLock<Option<Arc<Instance>>>,
}

impl GitHub {
    fn instance(&self) -> Result<Arc<Instance>, Status> {
        self.instance
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .ok_or_else(|| Status::failed_precondition("the plugin is not configured yet"))
    }

    fn api(instance: &Instance) -> Result<&GitHubApi, Status> {
        instance.api.as_ref().ok_or_else(|| {
            Status::failed_precondition(
                "no API credential is configured (credentials.token or credentials.app)",
            )
        })
    }
}

impl plugin_kit::Plugin for GitHub {
    fn describe(&self) -> plugin_kit::Description {
        description::describe()
    }

    async fn configure(&self, request: v1::ConfigureRequest) -> Result<(), Status> {
        // An instance from the daemon's own config file gets `{}`: it stays idle
        // (healthy, collecting nothing, refusing webhooks) until an integration names
        // repositories.
        if request.config_json.trim() == "{}" {
            tracing::info!(tenant = %request.tenant, "no integration configuration: idle");
            *self
                .instance
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
            return Ok(());
        }
        let mut settings = Settings::from_configure(&request)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let api = match settings.api.take() {
            None => None,
            Some(credential) => Some(
                GitHubApi::new(&settings.api_url, TokenSource::new(credential))
                    .map_err(|e| Status::internal(e.to_string()))?,
            ),
        };
        tracing::info!(
            tenant = %settings.tenant,
            integration = %settings.integration,
            api = api.is_some(),
            webhooks = settings.webhook_secrets.is_some(),
            "configured"
        );
        *self
            .instance
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some(Arc::new(Instance { settings, api }));
        Ok(())
    }

    async fn check(&self) -> Result<v1::CheckResponse, Status> {
        let instance = self.instance()?;
        Ok(check::check(&instance.settings, instance.api.as_ref()).await)
    }

    async fn collect(&self, cursor: String) -> Result<EventStream, Status> {
        let instance = self.instance().map_err(|_| {
            Status::unimplemented("no integration configuration: nothing to collect")
        })?;
        if instance.api.is_none() {
            return Err(Status::unimplemented(
                "no API credential is configured: this integration takes webhooks only",
            ));
        }
        let (sender, receiver) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            if let Some(api) = &instance.api {
                collect::poll(
                    api,
                    &instance.settings,
                    collect::Cursor::parse(&cursor),
                    sender,
                )
                .await;
            }
        });
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(
            receiver,
        )))
    }

    async fn handle_webhook(
        &self,
        request: v1::WebhookRequest,
    ) -> Result<v1::WebhookResponse, Status> {
        let Ok(instance) = self.instance() else {
            return Ok(v1::WebhookResponse::answer(
                401,
                "this instance has no integration configuration: no webhook secret to verify with",
            ));
        };
        Ok(webhook::handle(&instance.settings, &request))
    }

    async fn enrich(&self, request: v1::EnrichRequest) -> Result<v1::EnrichResponse, Status> {
        let instance = self.instance()?;
        enrich::enrich(&instance.settings, Self::api(&instance)?, &request).await
    }

    async fn renew_credential(
        &self,
        request: v1::RenewCredentialRequest,
    ) -> Result<v1::RenewCredentialResponse, Status> {
        renewal::renew(&request).await
    }

    fn dependencies(&self) -> Vec<v1::DependencyStatus> {
        self.instance
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .and_then(|i| i.api.as_ref().map(|api| api.resilience().status()))
            .into_iter()
            .collect()
    }
}
