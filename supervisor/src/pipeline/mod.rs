//! The event pipeline: validation against the canonical schema now; field mappings,
//! dead letters, durable delivery and webhook ingress are built on it.

pub(crate) mod commit;
mod dead_letter;
mod dead_letter_bound;
mod dead_letters;
mod dedup;
mod enricher;
mod facade;
mod inbox;
mod incarnation;
mod keys;
mod log;
mod migration;
mod offsets;
pub mod sinks;
pub mod sources;
mod tail;
mod tenant_data;
mod validate;

#[cfg(test)]
pub(crate) use commit::tests_support;
pub use commit::{BatchOutcome, CommitError, Submission};
pub use dead_letter::DeadLetter;
pub use dead_letter_bound::DEFAULT_DEAD_LETTERS_PER_TENANT;
pub use dead_letters::{DeadLetterError, DeadLetterSummary, ReplayOutcome};
pub use dedup::id_digest;
pub use enricher::{Correlated, Enricher, IndexWrite, NoEnrichment, Revision, Superseded};
pub use facade::{OpenError, PLATFORM_INTEGRATION, Pipeline, PipelineSettings};
pub use inbox::{Inbox, InboxError, Pending};
pub use keys::ReadError;
pub use log::{LogError, SegmentCopy, is_segment_name};
pub use sinks::{Attempt, HttpSink, HttpSinkError, JsonlSink, Sink, classify};
pub use sources::CollectReport;
pub use tenant_data::TENANT_TABLES;
pub use validate::{EventValidator, MAX_EVENT_BYTES, Rejection, Validated};
