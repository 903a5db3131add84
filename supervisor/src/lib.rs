//! integrationd: supervises integration plugins as child processes, keeps their
//! state, and serves the admin socket and the HTTP listener.

pub mod admin;
pub mod audit_anchoring;
pub mod bench;
pub mod config;
pub mod correlation;
pub mod credentials;
pub mod daemon;
pub mod desired;
pub mod endpoints;
pub mod health;
pub mod ingress;
pub mod integrations;
pub mod names;
pub mod pipeline;
pub mod process;
pub mod registry;
pub mod renewal;
pub mod state_dir;
pub mod store;
pub mod tenants;
