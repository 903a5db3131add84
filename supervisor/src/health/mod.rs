//! Health: the facts of every integration and the state they add up to
//! ([`model::assess`]), recorded by the data path into the [`HealthBook`], and the
//! Prometheus registry every component records into.

mod book;
mod check;
mod metrics;
pub mod model;
mod reported_histogram;

pub use book::HealthBook;
pub use check::{CheckOutcome, check_outcome};
pub use metrics::{InstanceLabels, IntegrationGauges, Metrics, TenantLabel};
pub use model::{Freshness, HealthState, ProcessPhase};

/// The most dependencies of one instance that health keeps and gives series: a plugin
/// names its own, and a hostile one cannot make the daemon keep unbounded state.
const MAX_DEPENDENCIES: usize = 32;
/// Longer dependency names are not kept.
const MAX_DEPENDENCY_NAME: usize = 200;

/// The dependencies of a plugin's status report that health takes.
fn kept_dependencies(
    reported: &[plugin_protocol::v1::DependencyStatus],
) -> impl Iterator<Item = &plugin_protocol::v1::DependencyStatus> {
    reported
        .iter()
        .filter(|d| !d.name.is_empty() && d.name.len() <= MAX_DEPENDENCY_NAME)
        .take(MAX_DEPENDENCIES)
}
