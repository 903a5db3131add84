//! Pulls events from a plugin instance: `Collect(cursor)`. Each batch is committed with
//! its cursor, and the next batch is submitted only once the previous one is durable, so
//! a failed commit never lets a later cursor pass events that were not stored. Batches
//! already received when one is taken are committed with it (their last cursor covers
//! them all); the next batch is validated while the previous one is being flushed. The
//! gRPC stream's flow control is the backpressure. When a stream ends well, the next
//! starts after the collect interval; after a failure, after an exponential backoff
//! with jitter ([`Pacing::wait`]), so a revoked token or an outage is not hammered.
//! A stream that yields nothing for the stall timeout is reported as hung.

use std::sync::Arc;
use std::time::{Duration, Instant};

use plugin_kit::host::PluginRpcClient;
use plugin_protocol::{ErrorClass, v1};
use tokio::sync::oneshot;

use super::CollectReport;
use crate::health::InstanceLabels;
use crate::pipeline::{BatchOutcome, CommitError, Pipeline};

/// Events taken into one submission at most.
const COALESCE_EVENTS: usize = 1_000;

/// When the next collect starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pacing {
    /// After a stream that ended well.
    pub interval: Duration,
    /// The longest wait after failures.
    pub backoff_max: Duration,
    /// A stream silent this long is hung.
    pub stall_timeout: Duration,
}

impl Pacing {
    /// The wait after `failures` consecutive failed passes (0: the last one went well),
    /// `unit` uniform in [0, 1): the interval doubled per failure up to the cap, the
    /// upper half of it drawn at random ("equal jitter", so waits still grow and
    /// integrations that failed together drift apart).
    pub fn wait(&self, failures: u32, unit: f64) -> Duration {
        if failures == 0 {
            return self.interval;
        }
        let bound = self
            .interval
            .saturating_mul(2u32.saturating_pow(failures.min(20)))
            .min(self.backoff_max.max(self.interval));
        bound / 2 + (bound / 2).mul_f64(unit.clamp(0.0, 1.0))
    }
}

/// How one pass ended.
enum Pass {
    Ended,
    Failed,
}

/// Runs until the instance stops (the task is aborted) or the plugin does not collect.
pub async fn run(
    mut client: PluginRpcClient,
    pipeline: Arc<Pipeline>,
    report: Arc<dyn CollectReport>,
    labels: InstanceLabels,
    pacing: Pacing,
) {
    let mut failures = 0u32;
    loop {
        let pass = match pipeline.cursor(&labels.key()) {
            Ok(cursor) => match client.collect(v1::CollectRequest { cursor }).await {
                Ok(response) => {
                    drain(
                        response.into_inner(),
                        &pipeline,
                        report.as_ref(),
                        &labels,
                        pacing.stall_timeout,
                    )
                    .await
                }
                Err(status) if status.code() == tonic::Code::Unimplemented => {
                    tracing::info!(plugin = %labels.plugin, tenant = %labels.tenant, integration = %labels.integration, reason = %status.message(), "the plugin does not collect for this integration");
                    report.unsupported();
                    return;
                }
                Err(status) => {
                    tracing::warn!(plugin = %labels.plugin, tenant = %labels.tenant, error = %status.message(), "Collect failed");
                    report.failed(
                        ErrorClass::of_status(&status),
                        &format!("Collect failed: {}", status.message()),
                    );
                    Pass::Failed
                }
            },
            Err(err) => {
                tracing::error!(plugin = %labels.plugin, tenant = %labels.tenant, error = %err, "cannot read the collect cursor");
                report.failed(
                    ErrorClass::Internal,
                    &format!("cannot read the collect cursor: {err}"),
                );
                Pass::Failed
            }
        };
        failures = match pass {
            Pass::Ended => {
                report.passed();
                0
            }
            Pass::Failed => failures.saturating_add(1),
        };
        tokio::time::sleep(pacing.wait(failures, rand::random::<f64>())).await;
    }
}

type Pending = (
    oneshot::Receiver<Result<BatchOutcome, CommitError>>,
    Instant,
    Option<u64>,
);

/// Commits one stream's batches until it ends or breaks.
async fn drain(
    mut stream: tonic::Streaming<v1::EventBatch>,
    pipeline: &Arc<Pipeline>,
    report: &dyn CollectReport,
    labels: &InstanceLabels,
    stall_timeout: Duration,
) -> Pass {
    let mut pending: Option<Pending> = None;
    let mut ended = false;
    let mut pass = Pass::Ended;
    while !ended {
        let next = match tokio::time::timeout(stall_timeout, stream.message()).await {
            Ok(next) => next,
            Err(_) => {
                tracing::error!(plugin = %labels.plugin, tenant = %labels.tenant, integration = %labels.integration, waited = ?stall_timeout, "the collect stream yielded nothing for the stall timeout: the plugin is hung in Collect");
                report.stalled(stall_timeout);
                pass = Pass::Failed;
                break;
            }
        };
        let (mut events, mut cursor) = match next {
            Ok(Some(batch)) => (batch.events_json, batch.cursor),
            Ok(None) => break,
            Err(status) => {
                tracing::warn!(plugin = %labels.plugin, tenant = %labels.tenant, error = %status.message(), "collect stream broke");
                report.failed(
                    ErrorClass::of_status(&status),
                    &format!("the collect stream broke: {}", status.message()),
                );
                pass = Pass::Failed;
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
                    report.failed(
                        ErrorClass::of_status(&status),
                        &format!("the collect stream broke: {}", status.message()),
                    );
                    pass = Pass::Failed;
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
            report.failed(ErrorClass::Internal, "the event validation task failed");
            pass = Pass::Failed;
            break;
        };
        submission.cursor = Some(cursor);
        let newest = submission.accepted.iter().map(|event| event.time_ms).max();
        if let Some(previous) = pending.take()
            && !settle(previous, report, labels).await
        {
            return Pass::Failed;
        }
        pending = Some((pipeline.submit(submission), Instant::now(), newest));
    }
    if let Some(previous) = pending
        && !settle(previous, report, labels).await
    {
        return Pass::Failed;
    }
    pass
}

/// Waits for a submission to be durable; false when it was not.
async fn settle(
    (answer, started, newest): Pending,
    report: &dyn CollectReport,
    labels: &InstanceLabels,
) -> bool {
    match answer.await.unwrap_or(Err(CommitError::Stopped)) {
        Ok(outcome) => {
            report.committed(&outcome, started.elapsed().as_secs_f64(), newest);
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
            report.failed(
                ErrorClass::Internal,
                &format!("cannot commit a batch: {err}"),
            );
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_back_off_exponentially_with_jitter_up_to_the_cap() {
        let pacing = Pacing {
            interval: Duration::from_secs(2),
            backoff_max: Duration::from_secs(60),
            stall_timeout: Duration::from_secs(600),
        };
        assert_eq!(pacing.wait(0, 0.9), Duration::from_secs(2));
        assert_eq!(pacing.wait(1, 0.0), Duration::from_secs(2));
        assert_eq!(pacing.wait(1, 0.999_999).as_secs(), 3);
        assert_eq!(pacing.wait(3, 0.0), Duration::from_secs(8));
        assert_eq!(pacing.wait(30, 0.0), Duration::from_secs(30));
        assert!(pacing.wait(30, 0.999_999) <= Duration::from_secs(60));
        // 38 polls in 40 s at a 2 s interval was the complaint: now a handful.
        let mut elapsed = Duration::ZERO;
        let mut polls = 0;
        while elapsed < Duration::from_secs(40) {
            polls += 1;
            elapsed += pacing.wait(polls, 0.5);
        }
        assert!(polls <= 5, "{polls} polls in 40 s");
    }
}
