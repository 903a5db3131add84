//! `integration-cloudwatch`: serves the CloudWatch plugin (see the library's
//! documentation).

fn main() -> std::process::ExitCode {
    plugin_kit::serve(integration_cloudwatch::CloudWatch::default())
}
