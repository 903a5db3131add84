//! Everything a plugin author needs: implement [`Plugin`], call [`serve`] from `main`,
//! and test the binary with [`testing::PluginUnderTest`] without a running supervisor.
//!
//! The host side of the transport ([`host`]) lives here too, so the supervisor and the
//! test harness launch and talk to plugins through the same code.

mod event;
mod logging;
mod mapping;
mod plugin;
mod serve;
mod spawner;
mod token;

pub mod clock;
pub mod config;
pub mod cursor;
pub mod glob;
pub mod host;
pub mod manifest;
pub mod resilience;
pub mod signature;
pub mod testing;

pub use event::{EventBuilder, FieldValue, MapContext, MapError};
pub use mapping::{FieldMappings, MappingError, check_untrusted_rules};
pub use plugin::{Description, EventStream, NoConfiguration, Plugin};
pub use plugin_protocol::{
    CanonicalEvent, Capabilities, Capability, Category, ErrorClass, MAX_WEBHOOK_REPLY_BYTES,
    Severity, event_id, event_time_ms, is_field_name, plugin_credential_kind, v1,
};
/// The secret types plugin-kit hands out ([`config::Credential::field`]), re-exported so a
/// plugin shares the version.
pub use secrecy;
pub use serve::{PluginService, serve};
pub use tonic::Status;
