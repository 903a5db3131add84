//! Plugin logs: one JSON object per line on stderr, which the supervisor re-emits with
//! `plugin`, `tenant` and `integration` fields. Stdout belongs to the handshake.

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Installs the stderr JSON subscriber. The filter comes from `RUST_LOG` (the
/// supervisor passes its own through) in its `level` or `target=level,…` forms,
/// defaulting to `info`.
///
/// `Targets` rather than `EnvFilter`: it needs no regex engine, which keeps every
/// plugin executable smaller, and the supervisor hashes the whole executable before
/// each spawn.
pub(crate) fn init() {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|value| value.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO));
    let layer = tracing_subscriber::fmt::layer()
        .json()
        .with_current_span(false)
        .with_span_list(false)
        .with_writer(std::io::stderr);
    // A second init (tests calling serve twice) keeps the first subscriber.
    let _ = tracing_subscriber::registry()
        .with(layer)
        .with(filter)
        .try_init();
}
