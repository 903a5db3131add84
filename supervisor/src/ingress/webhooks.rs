//! `POST /v1/webhooks/{tenant}/{integration}`: the plugin verifies and maps the delivery,
//! and the sender hears 202 once its events are durable. With the plugin down (or failing
//! on the call) the raw delivery goes to the tenant's inbox, durably, and is answered 202
//! too; the plugin gets it when it is back.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use plugin_protocol::v1;

use super::body::{self, BodyKind};
use super::{Ingress, Refusal, check_rate, json_ok, not_stored, outcome_json, printable};
use crate::pipeline::InboxError;
use crate::process::WebhookTarget;
use crate::store::AuditDraft;

pub async fn receive(
    State(ingress): State<Arc<Ingress>>,
    Path((tenant, integration)): Path<(String, String)>,
    headers: HeaderMap,
    request_body: Body,
) -> Response {
    match handle(&ingress, &tenant, &integration, &headers, request_body).await {
        Ok(response) => response,
        Err(refusal) => refusal.into_response(),
    }
}

async fn handle(
    ingress: &Ingress,
    tenant: &str,
    integration: &str,
    headers: &HeaderMap,
    request_body: Body,
) -> Result<Response, Refusal> {
    let target = ingress.manager.webhook_target(tenant, integration).await;
    match &target {
        WebhookTarget::Unknown => {
            return Err(Refusal::new(
                StatusCode::NOT_FOUND,
                "unknown_integration",
                format!(
                    "tenant `{}` has no integration `{}`",
                    printable(tenant, 64),
                    printable(integration, 64)
                ),
            ));
        }
        WebhookTarget::NoWebhooks { plugin } => {
            return Err(Refusal::new(
                StatusCode::NOT_FOUND,
                "no_webhooks",
                format!("integration `{integration}` (plugin `{plugin}`) does not take webhooks"),
            ));
        }
        WebhookTarget::Down | WebhookTarget::Up(_) => {}
    }
    check_rate(ingress, tenant)?;
    let kind = body::kind(headers, &[BodyKind::Json, BodyKind::Form, BodyKind::Text])?;
    let bytes = body::read(headers, request_body, ingress.config.max_body_bytes).await?;
    body::check_json(kind, &bytes)?;
    let delivery = v1::WebhookRequest {
        headers: headers
            .iter()
            .map(|(name, value)| v1::Header {
                name: name.as_str().to_owned(),
                value: String::from_utf8_lossy(value.as_bytes()).into_owned(),
            })
            .collect(),
        body: bytes,
    };
    if let WebhookTarget::Up(mut client) = target {
        let answer = tokio::time::timeout(
            ingress.config.webhook_timeout,
            client.handle_webhook(delivery.clone()),
        )
        .await;
        match answer {
            Ok(Ok(response)) => {
                return answer_with(ingress, tenant, integration, response.into_inner()).await;
            }
            Ok(Err(status)) => tracing::warn!(
                tenant, integration, error = %status.message(),
                "plugin failed on a webhook; the delivery goes to the inbox"
            ),
            Err(_) => tracing::warn!(
                tenant,
                integration,
                "plugin took too long over a webhook; the delivery goes to the inbox"
            ),
        }
    }
    queue(ingress, tenant, integration, delivery).await
}

/// Commits what the plugin made of the delivery, or passes its refusal on.
async fn answer_with(
    ingress: &Ingress,
    tenant: &str,
    integration: &str,
    response: v1::WebhookResponse,
) -> Result<Response, Refusal> {
    let status = u16::try_from(response.status)
        .ok()
        .and_then(|code| StatusCode::from_u16(code).ok());
    let Some(status) = status.filter(|s| s.is_success() || s.is_client_error()) else {
        return Err(Refusal::new(
            StatusCode::BAD_GATEWAY,
            "plugin_error",
            format!(
                "the plugin answered with status {}: {}",
                response.status,
                printable(&response.message, 200)
            ),
        ));
    };
    if status.is_client_error() {
        let code = match status {
            StatusCode::UNAUTHORIZED => "bad_signature",
            StatusCode::FORBIDDEN => "forbidden",
            StatusCode::BAD_REQUEST => "bad_request",
            _ => "refused",
        };
        tracing::info!(tenant, integration, status = status.as_u16(), reason = %printable(&response.message, 200), "plugin refused a webhook");
        if status == StatusCode::FORBIDDEN {
            audit_forbidden(ingress, tenant, integration, &response.message).await;
        }
        return Err(Refusal::new(
            status,
            code,
            format!(
                "the plugin refused the delivery: {}",
                printable(&response.message, 500)
            ),
        ));
    }
    let (pipeline, owned_tenant, owned_integration) = (
        ingress.pipeline.clone(),
        tenant.to_owned(),
        integration.to_owned(),
    );
    let events = response.events_json;
    let prepared = tokio::task::spawn_blocking(move || {
        pipeline.prepare(&owned_tenant, &owned_integration, &events)
    })
    .await;
    let Ok(submission) = prepared else {
        return Err(Refusal::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "event validation failed unexpectedly; nothing was stored",
        ));
    };
    match ingress.pipeline.commit(submission).await {
        Ok(outcome) => {
            if outcome.dead_lettered > 0 {
                tracing::warn!(
                    tenant,
                    integration,
                    dead_lettered = outcome.dead_lettered,
                    "webhook events failed validation; see the dead-letter queue"
                );
            }
            let label = if status == StatusCode::OK {
                "ok"
            } else {
                "accepted"
            };
            let mut body = outcome_json(label, &outcome);
            // What the plugin said (`ignored: event type ...`), for the sender's logs.
            if !response.message.is_empty() {
                body["message"] = serde_json::Value::String(printable(&response.message, 500));
            }
            Ok(json_ok(status, &body))
        }
        Err(err) => Err(not_stored(&err)),
    }
}

/// A delivery the plugin refused as outside the integration's scope (another
/// organization's repository, say) is a tenant-boundary event: it is audited.
async fn audit_forbidden(ingress: &Ingress, tenant: &str, integration: &str, reason: &str) {
    let draft = AuditDraft::ok(
        Some(tenant),
        "ingress:webhook",
        "webhook.forbidden",
        &format!("integration:{integration}"),
        printable(reason, 500),
    )
    .with_outcome("denied");
    let store = ingress.tenants.store().clone();
    let written = tokio::task::spawn_blocking(move || store.audit(&draft)).await;
    if !matches!(written, Ok(Ok(_))) {
        tracing::error!(
            tenant,
            integration,
            "cannot audit a refused webhook delivery"
        );
    }
}

/// Keeps the delivery for when the plugin is back.
async fn queue(
    ingress: &Ingress,
    tenant: &str,
    integration: &str,
    delivery: v1::WebhookRequest,
) -> Result<Response, Refusal> {
    let (pipeline, owned_tenant, owned_integration) = (
        ingress.pipeline.clone(),
        tenant.to_owned(),
        integration.to_owned(),
    );
    let stored = tokio::task::spawn_blocking(move || {
        pipeline
            .inbox()
            .put(&owned_tenant, &owned_integration, &delivery)
    })
    .await;
    match stored {
        Ok(Ok(())) => Ok(json_ok(
            StatusCode::ACCEPTED,
            &serde_json::json!({
                "status": "queued",
                "message": "the plugin is not running; the delivery is stored and will be processed when it is back"
            }),
        )),
        Ok(Err(err @ InboxError::Full { .. })) => Err(Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "inbox_full",
            format!("{err}; retry later"),
        )),
        Ok(Err(err)) => Err(Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_stored",
            format!("{err}; retry later"),
        )),
        Err(_) => Err(Refusal::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "storing the delivery failed unexpectedly",
        )),
    }
}
