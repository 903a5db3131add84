//! The event pipeline: validation against the canonical schema now; field mappings,
//! dead letters, durable delivery and webhook ingress are built on it.

mod validate;

pub use validate::{EventValidator, MAX_EVENT_BYTES, Rejection};
