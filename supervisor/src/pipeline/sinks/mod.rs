//! Where committed events go, each sink one file behind [`Sink`]. Every sink reads the
//! event log from its own offset, which it advances only after delivering, so a crash
//! repeats at most what was in flight and the log keeps what the slowest sink lacks.
//!
//! Adding a sink is a new file here and one arm in [`configured`].

mod backoff;
mod health;
mod http;
mod jsonl;
mod nats;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::watch;

pub use backoff::Backoff;
pub use health::{SinkHealth, SinkStatus};
pub use http::{Attempt, HttpSink, HttpSinkError, classify};
pub use jsonl::{JsonlSink, SinkError};
pub use nats::{NatsSink, NatsSinkError};

use super::{DeadLetter, Pipeline, Submission};
use crate::config::SinksConfig;

/// A sink's delivery loop, boxed so that sinks of every kind run alike.
pub type SinkRun = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A destination of committed events.
pub trait Sink: Send + std::fmt::Debug {
    /// The sink's name: its offset's key, its metrics' and logs' label.
    fn name(&self) -> &str;

    /// Delivers until `stop` turns true.
    fn run(self: Box<Self>, stop: watch::Receiver<bool>) -> SinkRun;
}

/// Why the configured sinks could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SinkSetupError {
    #[error(transparent)]
    Http(#[from] HttpSinkError),
    #[error(transparent)]
    Nats(#[from] NatsSinkError),
}

/// Every sink the configuration names: the JSONL file (always, at `jsonl_path`), then
/// each `[[sinks.http]]` and each `[[sinks.nats]]`.
pub fn configured(
    config: &SinksConfig,
    jsonl_path: PathBuf,
    pipeline: &Arc<Pipeline>,
) -> Result<Vec<Box<dyn Sink>>, SinkSetupError> {
    let mut sinks: Vec<Box<dyn Sink>> = vec![Box::new(JsonlSink::new(
        jsonl_path,
        config.jsonl_max_bytes,
        pipeline.clone(),
    ))];
    for http in &config.http {
        sinks.push(Box::new(HttpSink::new(http.clone(), pipeline.clone())?));
    }
    for nats in &config.nats {
        sinks.push(Box::new(NatsSink::new(nats.clone(), pipeline.clone())?));
    }
    Ok(sinks)
}

/// Sends events a sink's destination refused for good to the dead-letter queue of
/// their tenants, so that one bad event cannot stop the sink.
async fn dead_letter_lines(pipeline: &Pipeline, sink: &str, lines: &[&[u8]], why: &str) {
    #[derive(serde::Deserialize)]
    struct Owner {
        tenant: String,
        integration: String,
    }
    let mut by_tenant: BTreeMap<String, Submission> = BTreeMap::new();
    for line in lines {
        let text = String::from_utf8_lossy(line).trim_end().to_owned();
        let Ok(owner) = serde_json::from_str::<Owner>(&text) else {
            continue;
        };
        let submission = by_tenant
            .entry(owner.tenant.clone())
            .or_insert_with(|| Submission {
                tenant: owner.tenant.clone(),
                integration: owner.integration.clone(),
                ..Submission::default()
            });
        submission.dead.push(DeadLetter::new(
            &owner.tenant,
            &owner.integration,
            "sink",
            format!("sink `{sink}` refused the event: {why}"),
            &text,
        ));
    }
    for submission in by_tenant.into_values() {
        if let Err(err) = pipeline.commit(submission).await {
            tracing::error!(sink, error = %err, "cannot dead-letter refused events");
        }
    }
}
