//! The end-to-end tests, one binary (each links the whole daemon, the AWS SDK and the
//! GitHub stack once, not once per area): one module per area, each driving the real
//! binaries, real processes and sockets, and the real peers (moto, the npm fixtures).

mod admin;
mod cloudwatch;
mod credentials;
mod dependencies;
mod enrichment;
mod github;
mod health;
mod http_sink;
mod integrations;
mod pipeline;
mod platform_events;
mod plugin_harness;
mod quickstart;
mod refusals;
mod renewal;
mod scale;
mod startup;
mod supervision;
mod tenants;
mod webhooks;
