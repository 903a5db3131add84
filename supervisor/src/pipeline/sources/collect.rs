//! Pulls events from a plugin instance: `Collect(cursor)`. Each batch is committed with
//! its cursor, and the next batch is submitted only once the previous one is durable, so
//! a failed commit never lets a later cursor pass events that were not stored. Batches
//! already received when one is taken are committed with it (their last cursor covers
//! them all); the next batch is validated while the previous one is being flushed. The
//! gRPC stream's flow control is the backpressure. When a stream ends, the next starts
//! after the collect interval.

use std::sync::Arc;
use std::time::{Duration, Instant};

use plugin_kit::host::PluginRpcClient;
use plugin_protocol::v1;
use tokio::sync::oneshot;

use super::CollectReport;
use crate::health::InstanceLabels;
use crate::pipeline::{BatchOutcome, CommitError, Pipeline};

/// Events taken into one submission at most.
const COALESCE_EVENTS: usize = 1_000;

/// Runs until the instance stops (the task is aborted) or the plugin does not collect.
pub async fn run(
    mut client: PluginRpcClient,
    pipeline: Arc<Pipeline>,
    report: Arc<dyn CollectReport>,
    labels: InstanceLabels,
    interval: Duration,
) {
    loop {
        let cursor = match pipeline.cursor(&labels.key()) {
            Ok(cursor) => cursor,
            Err(err) => {
                tracing::error!(plugin = %labels.plugin, tenant = %labels.tenant, error = %err, "cannot read the collect cursor");
                report.failed(&format!("cannot read the collect cursor: {err}"));
                tokio::time::sleep(interval).await;
                continue;
            }
        };
        match client.collect(v1::CollectRequest { cursor }).await {
            Ok(response) => {
                drain(response.into_inner(), &pipeline, report.as_ref(), &labels).await;
            }
            Err(status) if status.code() == tonic::Code::Unimplemented => {
                tracing::info!(plugin = %labels.plugin, tenant = %labels.tenant, "plugin does not collect yet");
                return;
            }
            Err(status) => {
                tracing::warn!(plugin = %labels.plugin, tenant = %labels.tenant, error = %status.message(), "Collect failed");
                report.failed(&format!("Collect failed: {}", status.message()));
            }
        }
        tokio::time::sleep(interval).await;
    }
}

type Pending = (
    oneshot::Receiver<Result<BatchOutcome, CommitError>>,
    Instant,
);

/// Commits one stream's batches until it ends or breaks.
async fn drain(
    mut stream: tonic::Streaming<v1::EventBatch>,
    pipeline: &Arc<Pipeline>,
    report: &dyn CollectReport,
    labels: &InstanceLabels,
) {
    let mut pending: Option<Pending> = None;
    let mut ended = false;
    while !ended {
        let (mut events, mut cursor) = match stream.message().await {
            Ok(Some(batch)) => (batch.events_json, batch.cursor),
            Ok(None) => break,
            Err(status) => {
                tracing::warn!(plugin = %labels.plugin, tenant = %labels.tenant, error = %status.message(), "collect stream broke");
                report.failed(&format!("the collect stream broke: {}", status.message()));
                break;
            }
        };
        // Take what has already arrived (`message` is cancel-safe; a zero timeout
        // polls it once).
        while events.len() < COALESCE_EVENTS {
            match tokio::time::timeout(Duration::ZERO, stream.message()).await {
                Ok(Ok(Some(next))) => {
                    events.extend(next.events_json);
                    cursor = next.cursor;
                }
                Ok(Ok(None)) => {
                    ended = true;
                    break;
                }
                Ok(Err(status)) => {
                    tracing::warn!(plugin = %labels.plugin, tenant = %labels.tenant, error = %status.message(), "collect stream broke");
                    report.failed(&format!("the collect stream broke: {}", status.message()));
                    ended = true;
                    break;
                }
                Err(_) => break,
            }
        }
        let prepared = {
            let (pipeline, tenant, integration) = (
                pipeline.clone(),
                labels.tenant.clone(),
                labels.integration.clone(),
            );
            tokio::task::spawn_blocking(move || pipeline.prepare(&tenant, &integration, &events))
                .await
        };
        let Ok(mut submission) = prepared else {
            tracing::error!(plugin = %labels.plugin, "event validation task failed");
            break;
        };
        submission.cursor = Some(cursor);
        if let Some(previous) = pending.take()
            && !settle(previous, report, labels).await
        {
            return;
        }
        pending = Some((pipeline.submit(submission), Instant::now()));
    }
    if let Some(previous) = pending {
        settle(previous, report, labels).await;
    }
}

/// Waits for a submission to be durable; false when it was not.
async fn settle(
    (answer, started): Pending,
    report: &dyn CollectReport,
    labels: &InstanceLabels,
) -> bool {
    match answer.await.unwrap_or(Err(CommitError::Stopped)) {
        Ok(outcome) => {
            report.committed(&outcome, started.elapsed().as_secs_f64());
            if outcome.dead_lettered > 0 {
                tracing::warn!(
                    plugin = %labels.plugin, tenant = %labels.tenant, integration = %labels.integration,
                    dead_lettered = outcome.dead_lettered, "events failed validation; see the dead-letter queue"
                );
            }
            true
        }
        Err(err) => {
            tracing::error!(plugin = %labels.plugin, error = %err, "cannot commit a batch; collecting again from the last cursor");
            report.failed(&format!("cannot commit a batch: {err}"));
            false
        }
    }
}
