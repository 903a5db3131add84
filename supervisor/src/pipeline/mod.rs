//! The event pipeline: validation against the canonical schema now; field mappings,
//! dead letters, durable delivery and webhook ingress are built on it.

mod commit;
mod dead_letter_bound;
mod dead_letters;
mod dedup;
mod http_sink;
mod inbox;
mod incarnation;
mod jsonl;
mod log;
mod tail;
mod tenant_data;
mod validate;

pub use commit::{
    BatchOutcome, CommitError, DeadLetter, OpenError, PLATFORM_INTEGRATION, Pipeline,
    PipelineSettings, ReadError, Submission,
};
pub use dead_letter_bound::DEFAULT_DEAD_LETTERS_PER_TENANT;
pub use dead_letters::{DeadLetterError, ReplayOutcome};
pub use dedup::id_digest;
pub use http_sink::{Attempt, HttpSink, HttpSinkError, classify};
pub use inbox::{Inbox, InboxError, Pending};
pub use jsonl::JsonlSink;
pub use log::LogError;
pub use validate::{EventValidator, MAX_EVENT_BYTES, Rejection, Validated};
