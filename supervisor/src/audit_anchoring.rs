//! Carries the audit chain's head off the host: every `admin.audit_anchor_interval`, if
//! the chain grew, an `com.betalogs.system.audit.anchor` event (tenant `system`,
//! integration `audit`) goes through the pipeline to every sink. The latest one a sink
//! delivered is what `integrationctl audit verify --anchor SEQ:SHA256` checks a restored
//! or suspect state directory against (see `store/anchor.rs`).

use std::sync::Arc;
use std::time::Duration;

use plugin_kit::{Category, EventBuilder, MapContext};

use crate::pipeline::Pipeline;
use crate::store::AuditAnchor;

/// The tenant and integration the anchor events belong to.
pub const TENANT: &str = "system";
pub const INTEGRATION: &str = "audit";

/// The anchor event for `head`.
pub fn event(head: &AuditAnchor) -> Result<String, serde_json::Error> {
    let time = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    let seq = head.seq.to_string();
    EventBuilder::new(
        "com.betalogs.system.audit.anchor",
        Category::System,
        "integrationd",
        format!("audit-anchor-{}", head.seq),
        time,
    )
    .subject(format!("audit:{}", head.seq))
    .field("audit.sequence", seq.as_str())
    .field("audit.sha256", head.sha256.as_str())
    .original(serde_json::json!({ "anchor": head.to_string() }))
    .to_json(&MapContext {
        tenant: TENANT.into(),
        integration: INTEGRATION.into(),
    })
}

/// Sends an anchor event whenever the chain has grown since the last one, until `stop`.
pub async fn run(
    pipeline: Arc<Pipeline>,
    interval: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut sent: Option<u64> = None;
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        let store = pipeline.store().clone();
        let head = match tokio::task::spawn_blocking(move || store.audit_head()).await {
            Ok(Ok(Some(head))) => head,
            Ok(Ok(None)) => continue,
            Ok(Err(err)) => {
                tracing::error!(error = %err, "cannot read the audit head to anchor it");
                continue;
            }
            Err(_) => continue,
        };
        if sent == Some(head.seq) {
            continue;
        }
        let json = match event(&head) {
            Ok(json) => json,
            Err(err) => {
                tracing::error!(error = %err, "cannot build the audit anchor event");
                continue;
            }
        };
        let submission = pipeline.prepare(TENANT, INTEGRATION, &[json]);
        if let Some(dead) = submission.dead.first() {
            tracing::error!(reason = %dead.reason, "the audit anchor event is invalid");
        }
        match pipeline.commit(submission).await {
            Ok(_) => sent = Some(head.seq),
            Err(err) => {
                tracing::error!(error = %err, "cannot send the audit anchor event; retried at the next interval")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_anchor_event_is_a_valid_canonical_event_carrying_the_head() {
        let head = AuditAnchor {
            seq: 7,
            sha256: "ab".repeat(32),
        };
        let json = event(&head).expect("json");
        let value: serde_json::Value = serde_json::from_str(&json).expect("parse");
        let validator = crate::pipeline::EventValidator::new();
        assert!(
            validator
                .check(
                    &value,
                    TENANT,
                    INTEGRATION,
                    || json.clone(),
                    |_, _| Default::default()
                )
                .is_ok(),
            "{json}"
        );
        assert_eq!(value["data"]["audit.sha256"], "ab".repeat(32));
        assert_eq!(value["data"]["original"]["anchor"], head.to_string());
    }
}
