//! The admin API on the admin socket: who may call it (peer credentials), the gRPC
//! service, and the socket's set-up.

mod audit_calls;
mod backup_calls;
mod convert;
mod credential_calls;
mod health_calls;
pub(crate) mod integration_calls;
mod peer;
mod pipeline_calls;
mod plugin_calls;
mod quota;
mod redact;
mod relay;
mod service;
mod socket;
mod tenant_calls;

pub use peer::{Authenticator, Caller, Principal};
pub use relay::{RelayLayer, serve as serve_relayed};
pub use service::{AdminService, Components};
pub use socket::{AdminSocketError, bind};

/// Generated admin API (`betalogs.admin.v1`), shared with `integrationctl`.
pub mod proto {
    #![allow(clippy::all, clippy::pedantic, missing_debug_implementations)]
    tonic::include_proto!("betalogs.admin.v1");
}
