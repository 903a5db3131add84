//! `integration-webhook`: see the library.

fn main() -> std::process::ExitCode {
    plugin_kit::serve(integration_webhook::Webhook::default())
}
