//! Hands the deliveries that waited in the inbox to the plugin once it is back, oldest
//! first. Each delivery's events are committed together with its removal from the
//! inbox; a delivery the plugin refuses (a bad signature, say) becomes a dead letter
//! instead, so nothing stays in the inbox for ever and nothing accepted is lost.

use std::sync::Arc;
use std::time::Duration;

use plugin_kit::host::PluginRpcClient;
use plugin_protocol::v1;

use crate::health::InstanceLabels;
use crate::pipeline::Inbox;
use crate::pipeline::{DeadLetter, Pipeline};

/// Runs while the instance runs (the task is aborted when it stops).
pub async fn run(
    mut client: PluginRpcClient,
    pipeline: Arc<Pipeline>,
    labels: InstanceLabels,
    timeout: Duration,
) {
    loop {
        let arrived = pipeline.inbox().arrived();
        let pending = match pipeline
            .inbox()
            .pending(&labels.tenant, &labels.integration, 32)
        {
            Ok(pending) => pending,
            Err(err) => {
                tracing::error!(tenant = %labels.tenant, integration = %labels.integration, error = %err, "cannot read the webhook inbox");
                Vec::new()
            }
        };
        if pending.is_empty() {
            // New arrivals wake us; the timer covers one stored just before we waited.
            let _ = tokio::time::timeout(Duration::from_secs(1), arrived).await;
            continue;
        }
        for delivery in pending {
            let answer =
                tokio::time::timeout(timeout, client.handle_webhook(delivery.request.clone()))
                    .await;
            let response = match answer {
                Ok(Ok(response)) => response.into_inner(),
                Ok(Err(status)) if is_transient(status.code()) => {
                    tracing::warn!(plugin = %labels.plugin, tenant = %labels.tenant, error = %status.message(), "plugin could not take a delivery from the inbox; retrying later");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    break;
                }
                // The plugin fails on this delivery itself: keep it, out of the way.
                Ok(Err(status)) => v1::WebhookResponse::answer(
                    0,
                    format!(
                        "the call failed ({:?}): {}",
                        status.code(),
                        status.message()
                    ),
                ),
                Err(_) => {
                    tracing::warn!(plugin = %labels.plugin, tenant = %labels.tenant, "plugin timed out on a delivery from the inbox; retrying later");
                    break;
                }
            };
            let mut submission = if (200..300).contains(&response.status) {
                let (pipeline, tenant, integration, events) = (
                    pipeline.clone(),
                    labels.tenant.clone(),
                    labels.integration.clone(),
                    response.events_json,
                );
                match tokio::task::spawn_blocking(move || {
                    pipeline.prepare(&tenant, &integration, &events)
                })
                .await
                {
                    Ok(submission) => submission,
                    Err(_) => break,
                }
            } else {
                let mut submission = crate::pipeline::Submission {
                    tenant: labels.tenant.clone(),
                    integration: labels.integration.clone(),
                    ..Default::default()
                };
                submission.dead.push(DeadLetter::new(
                    &labels.tenant,
                    &labels.integration,
                    "webhook",
                    format!(
                        "the plugin refused a delivery from the inbox (status {}): {}",
                        response.status, response.message
                    ),
                    &String::from_utf8_lossy(&delivery.request.body),
                ));
                submission
            };
            submission.extra = Inbox::removal(&delivery.key);
            match pipeline.commit(submission).await {
                Ok(_) => pipeline.inbox().release(&labels.tenant, 1),
                Err(err) => {
                    tracing::error!(tenant = %labels.tenant, integration = %labels.integration, error = %err, "cannot commit a delivery from the inbox; retrying later");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    break;
                }
            }
        }
    }
}

/// Failures worth retrying the same delivery for (the plugin restarting, overloaded).
fn is_transient(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Unavailable
            | tonic::Code::Cancelled
            | tonic::Code::DeadlineExceeded
            | tonic::Code::ResourceExhausted
            | tonic::Code::Unknown
    )
}
