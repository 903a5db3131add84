//! `POST /v1/webhooks/{tenant}/{integration}`: the plugin verifies and maps the delivery,
//! and the sender hears 202 once its events are durable. Nothing a sender posts is stored
//! before it is authenticated: with the plugin down (or failing on the call) the daemon
//! verifies the delivery itself (`host_verify.rs`) and keeps it in the inbox, answered
//! 202 `queued`; one it cannot verify is answered 503 with `Retry-After`. Deliveries that
//! fail authentication are counted against the sender's address, never the tenant's rate.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use plugin_protocol::MAX_WEBHOOK_REPLY_BYTES as MAX_REPLY_BYTES;
use plugin_protocol::v1;

use super::body::{self, BodyKind};
use super::host_verify::HostVerdict;
use super::{
    ClientAddr, Ingress, Refusal, check_rate, json_ok, not_stored, outcome_json, printable,
};
use crate::pipeline::InboxError;
use crate::process::WebhookTarget;
use crate::store::AuditDraft;

/// A delivery's events up to this size (a typical delivery's one event) are validated
/// on the runtime's thread, sparing the two thread wake-ups of a trip to the blocking
/// pool and back (`webhook-bench`, 10 KB deliveries: with the byte search for line
/// breaks in validation, 17-24% more deliveries/s, old and new alternated in one run).
/// Larger ones go to the blocking pool, so that no delivery holds the runtime (and the
/// heartbeats it runs) for long.
const INLINE_VALIDATION_BYTES: usize = 16 * 1024;

pub async fn receive(
    State(ingress): State<Arc<Ingress>>,
    Path((tenant, integration)): Path<(String, String)>,
    client: Option<Extension<ClientAddr>>,
    headers: HeaderMap,
    request_body: Body,
) -> Response {
    let client = ingress.sender(client.map(|Extension(addr)| addr), &headers);
    let started = std::time::Instant::now();
    let response = match handle(
        &ingress,
        &tenant,
        &integration,
        client.as_ref(),
        &headers,
        request_body,
    )
    .await
    {
        Ok(response) => response,
        Err(refusal) => refusal.into_response(),
    };
    let status = response.status();
    let known = ingress.book.webhook(
        &crate::names::InstanceKey::new(&tenant, &integration),
        status.is_success(),
        0,
    );
    ingress.metrics.webhook(
        &tenant,
        &integration,
        known,
        status.as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// The one answer to a delivery that is not authenticated, whatever the reason: a
/// wrong or missing signature, or a tenant/integration pair that does not exist or takes
/// no webhooks. Senders cannot tell which pairs exist; operators find the reason in
/// the log.
fn unauthenticated() -> Refusal {
    Refusal::new(
        StatusCode::UNAUTHORIZED,
        "bad_signature",
        "the delivery could not be authenticated for this tenant and integration",
    )
}

async fn handle(
    ingress: &Ingress,
    tenant: &str,
    integration: &str,
    client: Option<&ClientAddr>,
    headers: &HeaderMap,
    request_body: Body,
) -> Result<Response, Refusal> {
    ingress.check_auth_failures(client)?;
    let kind = body::kind(headers, &[BodyKind::Json, BodyKind::Form, BodyKind::Text])?;
    let bytes = ingress.read_body(headers, request_body).await?;
    body::check_json(kind, &bytes)?;
    let target = ingress
        .manager
        .webhook_target(&crate::names::InstanceKey::new(tenant, integration))
        .await;
    let (mut client_rpc, scheme) = match target {
        WebhookTarget::Unknown | WebhookTarget::NoWebhooks { .. } => {
            tracing::debug!(
                tenant = %printable(tenant, 64),
                integration = %printable(integration, 64),
                "webhook for no integration that takes webhooks"
            );
            ingress.record_auth_failure(client);
            return Err(unauthenticated());
        }
        WebhookTarget::Down { scheme } => {
            return keep(
                ingress,
                tenant,
                integration,
                client,
                scheme,
                delivery_of(headers, bytes),
            )
            .await;
        }
        WebhookTarget::Up { client, scheme } => (client, scheme),
    };
    let delivery = delivery_of(headers, bytes);
    let answer = tokio::time::timeout(
        ingress.config.webhook_timeout,
        client_rpc.handle_webhook(delivery.clone()),
    )
    .await;
    match answer {
        Ok(Ok(response)) => {
            answer_with(ingress, tenant, integration, client, response.into_inner()).await
        }
        Ok(Err(status)) => {
            tracing::warn!(
                tenant, integration, error = %status.message(),
                "plugin failed on a webhook; the daemon verifies it to keep it"
            );
            keep(ingress, tenant, integration, client, scheme, delivery).await
        }
        Err(_) => {
            tracing::warn!(
                tenant,
                integration,
                "plugin took too long over a webhook; the daemon verifies it to keep it"
            );
            keep(ingress, tenant, integration, client, scheme, delivery).await
        }
    }
}

/// The delivery as the plugin receives it: every header, the body as sent.
fn delivery_of(headers: &HeaderMap, body: Vec<u8>) -> v1::WebhookRequest {
    v1::WebhookRequest {
        headers: headers
            .iter()
            .map(|(name, value)| v1::Header {
                name: name.as_str().to_owned(),
                value: String::from_utf8_lossy(value.as_bytes()).into_owned(),
            })
            .collect(),
        body,
        host_verified: false,
    }
}

/// A delivery no plugin can take now: kept in the inbox if the daemon itself verifies
/// it, else refused with nothing stored.
async fn keep(
    ingress: &Ingress,
    tenant: &str,
    integration: &str,
    client: Option<&ClientAddr>,
    scheme: Option<plugin_kit::signature::HostScheme>,
    delivery: v1::WebhookRequest,
) -> Result<Response, Refusal> {
    let verifier = ingress.verifier.clone();
    let (owned_tenant, owned_integration) = (tenant.to_owned(), integration.to_owned());
    let verdict = tokio::task::spawn_blocking(move || {
        verifier.verify(&owned_tenant, &owned_integration, scheme.as_ref(), delivery)
    })
    .await
    .map_err(|_| {
        Refusal::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "verifying the delivery failed unexpectedly; nothing was stored",
        )
    })?;
    match verdict {
        HostVerdict::Keep(delivery) => {
            check_rate(ingress, tenant)?;
            queue(ingress, tenant, integration, delivery).await
        }
        HostVerdict::Refused(reason) => {
            tracing::info!(tenant, integration, reason = %reason, "webhook delivery failed authentication in the daemon");
            ingress.record_auth_failure(client);
            Err(unauthenticated())
        }
        HostVerdict::Unverifiable(why) => {
            tracing::warn!(tenant, integration, reason = %why, "a webhook delivery arrived while its plugin cannot take it, and the daemon cannot verify it: refused, the sender retries");
            Err(plugin_unavailable())
        }
    }
}

/// Keeps a verified delivery for when the plugin is back.
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
                "message": "the plugin is not running; the delivery was verified and is stored, and will be processed when it is back"
            }),
        )),
        Ok(Err(err @ InboxError::Full { .. })) => Err(Refusal {
            retry_after: Some(5),
            ..Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "inbox_full",
                format!("{err}; retry later"),
            )
        }),
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

/// 503 for a delivery neither the plugin nor the daemon could verify now: nothing was
/// stored.
fn plugin_unavailable() -> Refusal {
    Refusal {
        retry_after: Some(5),
        ..Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "plugin_unavailable",
            "the integration's plugin cannot verify the delivery now; nothing was stored, retry later",
        )
    }
}

/// Commits what the plugin made of the delivery, or passes its refusal on.
async fn answer_with(
    ingress: &Ingress,
    tenant: &str,
    integration: &str,
    client: Option<&ClientAddr>,
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
    let reply = match handshake_reply(status, &response) {
        Ok(reply) => reply,
        Err(why) => {
            return Err(Refusal::new(
                StatusCode::BAD_GATEWAY,
                "plugin_error",
                format!("the plugin's reply cannot be sent: {why}"),
            ));
        }
    };
    if status == StatusCode::UNAUTHORIZED {
        tracing::info!(tenant, integration, reason = %printable(&response.message, 200), "webhook delivery failed authentication");
        ingress.record_auth_failure(client);
        return Err(unauthenticated());
    }
    // Only authenticated deliveries count against the tenant's rate.
    check_rate(ingress, tenant)?;
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
    let events = response.events_json;
    let prepared = if events.iter().map(String::len).sum::<usize>() <= INLINE_VALIDATION_BYTES {
        Ok(ingress.pipeline.prepare(tenant, integration, &events))
    } else {
        let (pipeline, owned_tenant, owned_integration) = (
            ingress.pipeline.clone(),
            tenant.to_owned(),
            integration.to_owned(),
        );
        tokio::task::spawn_blocking(move || {
            pipeline.prepare(&owned_tenant, &owned_integration, &events)
        })
        .await
    };
    let Ok(submission) = prepared else {
        return Err(Refusal::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "event validation failed unexpectedly; nothing was stored",
        ));
    };
    match ingress.pipeline.commit(submission).await {
        Ok(outcome) => {
            let key = crate::names::InstanceKey::new(tenant, integration);
            ingress
                .book
                .webhook_committed(&key, outcome.stored, outcome.dead_lettered);
            ingress.metrics.integration_events(
                tenant,
                integration,
                "webhook",
                [
                    ("stored", outcome.stored),
                    ("duplicate", outcome.duplicates),
                    ("dead_lettered", outcome.dead_lettered),
                    ("refused", 0),
                ],
            );
            if outcome.dead_lettered > 0 {
                tracing::warn!(
                    tenant,
                    integration,
                    dead_lettered = outcome.dead_lettered,
                    "webhook events failed validation; see the dead-letter queue"
                );
            }
            if let Some((content_type, body)) = reply {
                return Ok((status, [(header::CONTENT_TYPE, content_type)], body).into_response());
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

/// The body and media type a plugin asked to answer a handshake with (Slack's
/// `url_verification`), or why it cannot: only a 200 without events may carry one, and
/// only as short text or JSON, so that a plugin cannot make the daemon serve pages.
fn handshake_reply(
    status: StatusCode,
    response: &v1::WebhookResponse,
) -> Result<Option<(&'static str, Vec<u8>)>, String> {
    if response.reply_body.is_empty() {
        return Ok(None);
    }
    if status != StatusCode::OK || !response.events_json.is_empty() {
        return Err(format!(
            "a reply goes only with a 200 answer without events, not with status {} and {} event(s)",
            status.as_u16(),
            response.events_json.len()
        ));
    }
    if response.reply_body.len() > MAX_REPLY_BYTES {
        return Err(format!(
            "it has {} bytes, more than {MAX_REPLY_BYTES}",
            response.reply_body.len()
        ));
    }
    let content_type = match response.reply_content_type.as_str() {
        "" | "text/plain" => "text/plain; charset=utf-8",
        "application/json" => "application/json",
        other => {
            return Err(format!(
                "its media type `{}` is neither `text/plain` nor `application/json`",
                printable(other, 100)
            ));
        }
    };
    if std::str::from_utf8(&response.reply_body).is_err() {
        return Err("it is not UTF-8 text".to_owned());
    }
    Ok(Some((content_type, response.reply_body.clone())))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handshake_reply_is_short_text_or_json_on_a_200_without_events() {
        let challenge =
            v1::WebhookResponse::reply("3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P", "");
        assert_eq!(
            handshake_reply(StatusCode::OK, &challenge),
            Ok(Some((
                "text/plain; charset=utf-8",
                b"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P".to_vec()
            )))
        );
        let json = v1::WebhookResponse::reply(r#"{"challenge":"x"}"#, "application/json");
        assert_eq!(
            handshake_reply(StatusCode::OK, &json).map(|r| r.map(|(t, _)| t)),
            Ok(Some("application/json"))
        );
        assert_eq!(
            handshake_reply(StatusCode::ACCEPTED, &v1::WebhookResponse::accepted(vec![])),
            Ok(None),
            "no reply: the daemon's own answer"
        );
        let page = v1::WebhookResponse::reply("<script>", "text/html");
        let err = handshake_reply(StatusCode::OK, &page).expect_err("html");
        assert!(err.contains("`text/html` is neither"), "{err}");
        let big = v1::WebhookResponse::reply(vec![b'a'; MAX_REPLY_BYTES + 1], "");
        assert!(
            handshake_reply(StatusCode::OK, &big)
                .expect_err("big")
                .contains("4097 bytes")
        );
        let with_events = v1::WebhookResponse {
            events_json: vec!["{}".into()],
            ..v1::WebhookResponse::reply("x", "")
        };
        assert!(
            handshake_reply(StatusCode::OK, &with_events)
                .expect_err("events")
                .contains("1 event(s)")
        );
        let binary = v1::WebhookResponse::reply(vec![0xff, 0xfe], "");
        assert_eq!(
            handshake_reply(StatusCode::OK, &binary),
            Err("it is not UTF-8 text".to_owned())
        );
    }
}
