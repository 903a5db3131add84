//! One file per command group; each takes the session and its arguments.

pub mod audit;
pub mod backup;
pub mod cluster;
pub mod credentials;
pub mod demo;
pub mod enrichment;
pub mod events;
pub mod flags;
pub mod health;
pub mod integrations;
pub mod plugin_author;
pub mod plugins;
pub mod status;
pub mod tenants;
pub mod tokens;
