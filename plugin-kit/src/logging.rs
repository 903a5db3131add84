//! Plugin logs: one JSON object per line on stderr, which the supervisor re-emits with
//! `plugin`, `tenant` and `integration` fields. Stdout belongs to the handshake.

use tracing_subscriber::EnvFilter;

/// Installs the stderr JSON subscriber. The filter comes from `RUST_LOG` (the
/// supervisor passes its own through), defaulting to `info`.
pub(crate) fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // A second init (tests calling serve twice) keeps the first subscriber.
    let _ = tracing_subscriber::fmt()
        .json()
        .with_current_span(false)
        .with_span_list(false)
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .try_init();
}
