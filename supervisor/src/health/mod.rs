//! Health and metrics: the Prometheus registry every component records into.

mod metrics;

pub use metrics::{InstanceLabels, Metrics, TenantLabel};
