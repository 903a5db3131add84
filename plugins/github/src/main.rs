//! `integration-github`: the GitHub plugin (webhooks, API, deployments).
//!
//! This first form handshakes, describes itself and serves health; the webhook,
//! collection and enrichment calls arrive with the GitHub integration itself.

mod description;

fn main() -> std::process::ExitCode {
    plugin_kit::serve(GitHub)
}

/// The plugin.
struct GitHub;

impl plugin_kit::Plugin for GitHub {
    fn describe(&self) -> plugin_kit::Description {
        description::describe()
    }
}
