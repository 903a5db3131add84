//! `integration-github`: the GitHub plugin (webhooks, API, deployments).
//!
//! This first form handshakes, describes itself and serves health; the webhook,
//! collection and enrichment calls arrive with the GitHub integration itself.

mod description;

fn main() -> std::process::ExitCode {
    plugin_kit::serve(GitHub::default())
}

/// The plugin: holds the configuration the supervisor gave it.
#[derive(Default)]
struct GitHub {
    config: std::sync::Mutex<Option<serde_json::Value>>,
}

impl plugin_kit::Plugin for GitHub {
    fn describe(&self) -> plugin_kit::Description {
        description::describe()
    }

    /// Keeps the integration's configuration (already validated against the schema by
    /// the supervisor); credentials arrive with it and are not logged.
    async fn configure(
        &self,
        request: plugin_kit::v1::ConfigureRequest,
    ) -> Result<(), plugin_kit::Status> {
        let config: serde_json::Value =
            serde_json::from_str(&request.config_json).map_err(|e| {
                plugin_kit::Status::invalid_argument(format!("the configuration is not JSON: {e}"))
            })?;
        *self
            .config
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(config);
        Ok(())
    }
}
