//! Where events come from, each source one file: a plugin's `Collect` stream
//! ([`collect`]), webhook deliveries that waited in the inbox while their plugin was
//! down ([`inbox_drain`]), and events posted by platform clients ([`platform`]). A
//! webhook answered by a running plugin is committed by the HTTP ingress through
//! [`crate::pipeline::Pipeline::prepare`], as every source's events are.

pub mod collect;
pub mod inbox_drain;
mod platform;

use super::BatchOutcome;

/// What a collecting source tells about its batches, for health and metrics.
pub trait CollectReport: Send + Sync + std::fmt::Debug {
    /// A batch was committed, `seconds` after it was submitted.
    fn committed(&self, outcome: &BatchOutcome, seconds: f64);

    /// The collect call, its stream or the commit of a batch failed.
    fn failed(&self, error: &str);
}
