//! Where events come from, each source one file: a plugin's `Collect` stream
//! ([`collect`]), webhook deliveries that waited in the inbox while their plugin was
//! down ([`inbox_drain`]), and events posted by platform clients ([`platform`]). A
//! webhook answered by a running plugin is committed by the HTTP ingress through
//! [`crate::pipeline::Pipeline::prepare`], as every source's events are.

pub mod collect;
pub mod inbox_drain;
mod platform;

use plugin_protocol::ErrorClass;

use super::BatchOutcome;

/// What a collecting source tells about its batches, for health and metrics.
pub trait CollectReport: Send + Sync + std::fmt::Debug {
    /// A batch was committed, `seconds` after it was submitted; `newest_event_ms` is
    /// the latest event time among its accepted events.
    fn committed(&self, outcome: &BatchOutcome, seconds: f64, newest_event_ms: Option<u64>);

    /// A stream ended well, every batch of it durable (perhaps none: nothing new).
    fn passed(&self);

    /// The collect call, its stream or the commit of a batch failed.
    fn failed(&self, class: ErrorClass, error: &str);

    /// A stream yielded nothing for the stall timeout while its plugin answered
    /// heartbeats: the plugin is hung in `Collect` and must be restarted.
    fn stalled(&self, waited: std::time::Duration);

    /// The plugin does not collect for this integration (a GitHub integration that takes
    /// webhooks only): its health must not wait for a collect.
    fn unsupported(&self);
}
