//! `integration-cloudwatch`: the AWS CloudWatch plugin (metrics, logs, alarms).
//!
//! This first form handshakes, describes itself and serves health; collection,
//! alarm webhooks and enrichment arrive with the CloudWatch integration itself.

mod description;

fn main() -> std::process::ExitCode {
    plugin_kit::serve(CloudWatch)
}

/// The plugin.
struct CloudWatch;

impl plugin_kit::Plugin for CloudWatch {
    fn describe(&self) -> plugin_kit::Description {
        description::describe()
    }
}
