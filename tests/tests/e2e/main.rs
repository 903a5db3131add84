//! The end-to-end tests, one binary (each links the whole daemon, the AWS SDK and the
//! GitHub stack once, not once per area): one module per area, each driving the real
//! binaries, real processes and sockets, and the real peers (moto, the npm fixtures).

mod admin;
mod backup;
mod cloudwatch;
mod cluster;
mod conformance;
mod credentials;
mod dashboard;
mod dependencies;
mod enrichment;
mod fuzz_corpus;
mod github;
// The GitHub plugin's fixture API: GitHub's REST shapes built from the public
// `@octokit/webhooks-examples` and `@octokit/fixtures`; shared by the areas that run the
// GitHub plugin against it.
#[path = "../../../plugins/github/tests/support/server.rs"]
#[allow(dead_code)]
mod github_api;
use e2e_tests::{npm_fixture, webhook_examples};
mod health;
mod http_sink;
mod integrations;
mod jetstream;
mod pipeline;
mod platform_events;
mod plugin_authors;
mod plugin_harness;
mod quickstart;
mod refusals;
mod renewal;
mod scale;
mod startup;
mod supervision;
mod systemd;
mod tenants;
mod webhook_plugin;
mod webhooks;
