//! `integration-github`: serves the GitHub plugin (see the library's documentation).

fn main() -> std::process::ExitCode {
    plugin_kit::serve(integration_github::GitHub::default())
}
