//! The plugin executable: `integrationd` starts it; run by hand it refuses and says so.

fn main() -> std::process::ExitCode {
    plugin_kit::serve(integration_example::Example::default())
}
