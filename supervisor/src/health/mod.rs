//! Health: the facts of every integration and the state they add up to
//! ([`model::assess`]), recorded by the data path into the [`HealthBook`], and the
//! Prometheus registry every component records into.

mod book;
mod check;
mod metrics;
pub mod model;

pub use book::HealthBook;
pub use check::{CheckOutcome, check_outcome};
pub use metrics::{InstanceLabels, IntegrationGauges, Metrics, TenantLabel};
pub use model::{Freshness, HealthState, ProcessPhase};
