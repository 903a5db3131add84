//! Pulls events from a plugin instance: `Collect(cursor)`, committing each batch (with
//! its cursor) before the next is read, so the gRPC stream's flow control is the
//! backpressure. When a stream ends, the next starts after the collect interval.

use std::sync::Arc;
use std::time::Duration;

use plugin_kit::host::PluginRpcClient;
use plugin_protocol::v1;

use crate::health::{InstanceLabels, Metrics};
use crate::pipeline::Pipeline;

/// Runs until the instance stops (the task is aborted) or the plugin does not collect.
pub async fn run(
    mut client: PluginRpcClient,
    pipeline: Arc<Pipeline>,
    metrics: Arc<Metrics>,
    labels: InstanceLabels,
    interval: Duration,
) {
    loop {
        let cursor = match pipeline.cursor(&labels.tenant, &labels.integration) {
            Ok(cursor) => cursor,
            Err(err) => {
                tracing::error!(plugin = %labels.plugin, tenant = %labels.tenant, error = %err, "cannot read the collect cursor");
                tokio::time::sleep(interval).await;
                continue;
            }
        };
        match client.collect(v1::CollectRequest { cursor }).await {
            Ok(response) => {
                let mut stream = response.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(batch)) => {
                            let (pipeline, labels2) = (pipeline.clone(), labels.clone());
                            let started = std::time::Instant::now();
                            let committed = tokio::task::spawn_blocking(move || {
                                pipeline.commit_batch(
                                    &labels2.tenant,
                                    &labels2.integration,
                                    &batch.events_json,
                                    &batch.cursor,
                                )
                            })
                            .await;
                            if let Ok(Ok(outcome)) = &committed {
                                metrics.batch_committed(
                                    started.elapsed().as_secs_f64(),
                                    outcome.stored,
                                    outcome.duplicates,
                                    outcome.dead_lettered,
                                );
                            }
                            match committed {
                                Ok(Ok(outcome)) if outcome.dead_lettered > 0 => tracing::warn!(
                                    plugin = %labels.plugin, tenant = %labels.tenant, integration = %labels.integration,
                                    dead_lettered = outcome.dead_lettered, "events failed validation; see the dead-letter queue"
                                ),
                                Ok(Ok(_)) => {}
                                Ok(Err(err)) => {
                                    tracing::error!(plugin = %labels.plugin, error = %err, "cannot commit a batch; collecting again from the last cursor");
                                    break;
                                }
                                Err(err) => {
                                    tracing::error!(plugin = %labels.plugin, error = %err, "commit task failed");
                                    break;
                                }
                            }
                        }
                        Ok(None) => break,
                        Err(status) => {
                            tracing::warn!(plugin = %labels.plugin, tenant = %labels.tenant, error = %status.message(), "collect stream broke");
                            break;
                        }
                    }
                }
            }
            Err(status) if status.code() == tonic::Code::Unimplemented => {
                tracing::info!(plugin = %labels.plugin, tenant = %labels.tenant, "plugin does not collect yet");
                return;
            }
            Err(status) => {
                tracing::warn!(plugin = %labels.plugin, tenant = %labels.tenant, error = %status.message(), "Collect failed")
            }
        }
        tokio::time::sleep(interval).await;
    }
}
