//! The event pipeline: validation against the canonical schema now; field mappings,
//! dead letters, durable delivery and webhook ingress are built on it.

mod commit;
mod jsonl;
mod validate;

pub use commit::{BatchOutcome, DeadLetter, Pipeline};
pub use jsonl::JsonlSink;
pub use validate::{EventValidator, MAX_EVENT_BYTES, Rejection};
