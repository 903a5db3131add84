//! The CloudWatch plugin as a library (the `integration-cloudwatch` binary serves
//! [`CloudWatch`]; the benchmark drives its parts directly): metrics, logs and alarm
//! state changes from many AWS accounts and regions, polled with the AWS SDK or pushed
//! by SNS and EventBridge, as canonical `system` and `security` events.
//!
//! Module map: `settings` (Configure → typed settings and secrets), `targets` (one
//! set of SDK clients, retries, budget and breaker per account and region), `metrics`,
//! `logs`, `alarms` (each: read one target, map to events), `webhook` (SNS and
//! EventBridge pushes), `collect` (one poll over every target, with the cursor),
//! `enrich` (metric values around a failure), `check`, `console` (evidence links and
//! shared fields).

pub mod alarms;
pub mod check;
pub mod collect;
pub mod console;
pub mod description;
pub mod enrich;
#[doc(hidden)]
pub mod fuzzing;
pub mod logs;
pub mod metrics;
pub mod settings;
pub mod targets;
pub mod webhook;

use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use plugin_kit::{EventStream, Status, v1};

use settings::Settings;
use targets::{Target, Tuning};

/// Unix milliseconds now (signed: CloudWatch's timestamps are).
pub fn now_ms() -> i64 {
    i64::try_from(plugin_kit::clock::now_ms()).unwrap_or(i64::MAX)
}

/// One configured integration.
#[derive(Debug)]
struct Instance {
    settings: Settings,
    targets: Vec<Target>,
    /// When the last poll started: polls closer together than `poll_interval` are
    /// answered with an empty stream.
    last_poll: Mutex<Option<Instant>>,
}

/// The plugin; `Configure` replaces the instance.
#[derive(Debug, Default)]
pub struct CloudWatch {
    instance: RwLock<Option<Arc<Instance>>>,
    http: std::sync::OnceLock<reqwest::Client>,
}

impl CloudWatch {
    fn instance(&self) -> Option<Arc<Instance>> {
        self.instance
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn http(&self) -> Result<&reqwest::Client, String> {
        if let Some(client) = self.http.get() {
            return Ok(client);
        }
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| e.to_string())?;
        Ok(self.http.get_or_init(|| client))
    }
}

impl plugin_kit::Plugin for CloudWatch {
    fn describe(&self) -> plugin_kit::Description {
        description::describe()
    }

    async fn configure(&self, request: v1::ConfigureRequest) -> Result<(), Status> {
        let settings = Settings::from_configure(&request)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let instance = match settings {
            None => {
                // The daemon's own config-file instance: idle until an integration
                // names accounts.
                tracing::info!(tenant = %request.tenant, "no accounts configured: idle");
                None
            }
            Some(settings) => {
                let targets =
                    targets::build(&settings.accounts, &settings.endpoints, Tuning::from_env())
                        .await;
                tracing::info!(
                    tenant = %settings.tenant,
                    integration = %settings.integration,
                    accounts = settings.accounts.len(),
                    targets = targets.len(),
                    webhooks = settings.webhook_secrets.is_some(),
                    "configured"
                );
                Some(Arc::new(Instance {
                    settings,
                    targets,
                    last_poll: Mutex::new(None),
                }))
            }
        };
        *self
            .instance
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = instance;
        Ok(())
    }

    async fn check(&self) -> Result<v1::CheckResponse, Status> {
        let instance = self
            .instance()
            .ok_or_else(|| Status::failed_precondition("no accounts are configured"))?;
        Ok(check::check(&instance.targets, &instance.settings).await)
    }

    async fn collect(&self, cursor: String) -> Result<EventStream, Status> {
        let instance = self.instance().ok_or_else(|| {
            Status::unimplemented("no accounts are configured: nothing to collect")
        })?;
        let (sender, receiver) = tokio::sync::mpsc::channel(4);
        let due = {
            let mut last = instance
                .last_poll
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let due = last.is_none_or(|at| at.elapsed() >= instance.settings.poll_interval);
            if due {
                *last = Some(Instant::now());
            }
            due
        };
        if due {
            tokio::spawn(async move {
                collect::poll(
                    &instance.targets,
                    &instance.settings,
                    collect::Cursor::parse(&cursor),
                    sender,
                )
                .await;
            });
        }
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(
            receiver,
        )))
    }

    async fn enrich(&self, request: v1::EnrichRequest) -> Result<v1::EnrichResponse, Status> {
        let instance = self
            .instance()
            .ok_or_else(|| Status::failed_precondition("no accounts are configured"))?;
        enrich::enrich(&instance, &request).await
    }

    async fn handle_webhook(
        &self,
        request: v1::WebhookRequest,
    ) -> Result<v1::WebhookResponse, Status> {
        let Some(instance) = self.instance() else {
            return Ok(v1::WebhookResponse::answer(
                401,
                "this instance has no integration configuration: no webhook secret to verify with",
            ));
        };
        let http = self.http();
        Ok(
            webhook::handle(&instance.settings, &request, |url| async move {
                let http = http?;
                let response = http.get(&url).send().await.map_err(|e| e.to_string())?;
                if response.status().is_success() {
                    Ok(())
                } else {
                    Err(format!("SNS answered {}", response.status()))
                }
            })
            .await,
        )
    }

    fn dependencies(&self) -> Vec<v1::DependencyStatus> {
        self.instance()
            .map(|i| i.targets.iter().map(|t| t.resilience().status()).collect())
            .unwrap_or_default()
    }
}

/// Canonical-event schema checks for this crate's unit tests.
#[cfg(test)]
mod schema_check {
    use std::sync::OnceLock;

    pub fn assert_valid(json: &str) {
        static VALIDATOR: OnceLock<jsonschema::Validator> = OnceLock::new();
        let validator = VALIDATOR.get_or_init(|| {
            let schema: serde_json::Value =
                serde_json::from_str(plugin_protocol::CANONICAL_EVENT_SCHEMA_V1).expect("schema");
            jsonschema::options()
                .should_validate_formats(true)
                .build(&schema)
                .expect("compiles")
        });
        let event: serde_json::Value = serde_json::from_str(json).expect("JSON");
        let errors: Vec<String> = validator
            .iter_errors(&event)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{errors:?}\n{json}");
    }
}
