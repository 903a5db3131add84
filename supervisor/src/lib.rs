//! integrationd: supervises integration plugins as child processes, keeps their state,
//! and serves the admin socket and the HTTP listener.
//!
//! The modules below are listed in dependency order: each uses only those above it
//! (checked by `modcycles.py`; see ARCHITECTURE.md). Public are what the binaries
//! (`integrationd`, `integrationctl`), the end-to-end tests and the benchmarks use; the
//! rest is the crate's own.

// Leaves: what everything uses.
/// This daemon as a node of several: tenant placement in a JetStream key-value bucket.
pub(crate) mod cluster;
/// The daemon's configuration, every section typed and checked once.
pub mod config;
/// Where tenants' configurations may point their plugins (URL allow list).
pub(crate) mod endpoints;
/// Prometheus metrics.
pub(crate) mod health;
/// Names of tenants, integrations and plugins; the key of one instance.
pub(crate) mod names;
/// Connecting to NATS (the JetStream sink and source), and their subject templates.
pub(crate) mod nats;
/// The state directory's permissions.
pub mod state_dir;

// State.
/// Encrypted credentials and the master key.
pub mod credentials;
/// The only module that touches sled: tables, transactions, the audit chain.
pub mod store;
/// Tenants, their tokens and feature flags.
pub(crate) mod tenants;

// The data path.
/// Backups of the whole state and restores from them.
pub mod backup;
/// The correlation index and enrichment (the pipeline's `Enricher`).
pub mod correlation;
/// Validation, deduplication, the event log, dead letters; its sources and sinks.
pub mod pipeline;

// Plugins.
/// Which instances should run.
pub(crate) mod desired;
/// Moving a tenant with its whole state to another node of the cluster.
pub(crate) mod handover;
/// Integrations: versioned configurations of a tenant's plugin instances.
pub(crate) mod integrations;
/// Integration health as one document, alert rules, the alert lifecycle and delivery.
pub(crate) mod monitoring;
/// The process manager: one supervising task per instance, observed by the daemon.
pub(crate) mod process;
/// Plugin packages: manifests, pins, checksums, sealed copies.
pub(crate) mod registry;
/// Renewing expiring credentials through their plugins.
pub(crate) mod renewal;
/// Removing all a tenant's state from this node (deleted, or moved away).
pub(crate) mod tenant_removal;

// Edges.
/// The admin gRPC service (the admin socket) and its proto, shared with integrationctl.
pub mod admin;
/// The task that anchors the audit chain in the event stream.
pub(crate) mod audit_anchoring;
/// `integrationd bench heartbeat`.
pub mod bench;
/// Wiring, signals and the main loop.
pub mod daemon;
/// Entry points for the fuzz targets and their property tests (not an API).
#[doc(hidden)]
pub mod fuzzing;
/// The HTTP listener: webhooks, platform events, health and metrics.
pub(crate) mod ingress;
