//! `integration-webhook`: see the library.

/// Mapping a delivery allocates a tree of its payload and the text of each event; with
/// mimalloc that is markedly cheaper than with glibc's malloc (`webhook-plugin-bench`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    plugin_kit::serve(integration_webhook::Webhook::default())
}
