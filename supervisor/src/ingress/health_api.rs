//! `GET /v1/health` and `GET /v1/alerts`: integration health and alerts as JSON, for a
//! bearer token that may read them. A tenant's `admin` or `monitor` token reads its own
//! tenant; an operator's `monitor` token for all tenants reads every tenant (and may
//! narrow with `?tenant=`). Asking for another tenant is refused exactly as asking for
//! one that does not exist. The document's fields are listed in the README ("Health
//! API").

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{Ingress, Refusal, json_read};
use crate::health::IntegrationGauges;
use crate::monitoring::alert::AlertState;

/// The one refusal for a tenant the token may not read, whether or not it exists.
pub(super) fn forbidden() -> Refusal {
    Refusal::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        "this token may not read that tenant's health",
    )
}

/// Which tenant the caller reads (`?tenant=` narrows an all-tenant token): `None` for
/// all.
pub(super) fn scope(
    ingress: &Ingress,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Result<Option<String>, Refusal> {
    let token = super::bearer::token(ingress, headers, "a monitor or tenant admin token")?;
    let asked = query.get("tenant").filter(|t| !t.is_empty());
    match (token.health_scope(), asked) {
        (_, Some(tenant)) if !token.reads_health_of(tenant) => Err(forbidden()),
        (None, asked) if token.scope == crate::tenants::TokenScope::Monitor => Ok(asked.cloned()),
        (Some(own), _) if token.reads_health_of(own) => Ok(Some(own.to_owned())),
        _ => Err(forbidden()),
    }
}

pub async fn health(
    State(ingress): State<Arc<Ingress>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let tenant = match scope(&ingress, &headers, &query) {
        Ok(tenant) => tenant,
        Err(refusal) => return refusal.into_response(),
    };
    let integration = query.get("integration").filter(|n| !n.is_empty());
    let document = ingress
        .monitoring
        .health_document(tenant.as_deref(), integration.map(String::as_str))
        .await;
    json_read(&headers, &document)
}

pub async fn alerts(
    State(ingress): State<Arc<Ingress>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let tenant = match scope(&ingress, &headers, &query) {
        Ok(tenant) => tenant,
        Err(refusal) => return refusal.into_response(),
    };
    let state = match query.get("state").filter(|s| !s.is_empty()) {
        None => None,
        Some(text) => match AlertState::parse(text) {
            Some(state) => Some(state),
            None => {
                return Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!(
                        "`state={}` is not pending, firing or resolved",
                        super::printable(text, 40)
                    ),
                )
                .into_response();
            }
        },
    };
    match ingress.monitoring.alerts_document(tenant.as_deref(), state) {
        Ok(document) => json_read(&headers, &document),
        Err(err) => {
            tracing::error!(error = %err, "cannot read alerts");
            Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "alerts cannot be read now; retry later",
            )
            .into_response()
        }
    }
}

/// Sets the health-derived gauges from the health of everything, before a scrape.
pub async fn refresh_gauges(ingress: &Ingress) {
    let monitoring = &ingress.monitoring;
    let integrations = monitoring.health(None).await;
    let firing = monitoring.firing(None);
    let mut tenants: Vec<&str> = integrations.iter().map(|i| i.tenant.as_str()).collect();
    tenants.sort_unstable();
    tenants.dedup();
    let inbox = ingress.pipeline.inbox();
    let depths: Vec<(&str, usize)> = tenants.iter().map(|t| (*t, inbox.waiting(t))).collect();
    let mut credentials: Vec<(&str, &str, u64)> = integrations
        .iter()
        .flat_map(|i| {
            i.credentials.iter().filter_map(move |c| {
                Some((i.tenant.as_str(), c.name.as_str(), c.expires_ms? / 1000))
            })
        })
        .collect();
    credentials.sort_unstable();
    credentials.dedup();
    ingress.metrics.health_view(
        integrations.iter().map(|i| IntegrationGauges {
            tenant: &i.tenant,
            integration: &i.integration,
            plugin: &i.plugin,
            state: i.state.as_str(),
            last_success_secs: i
                .last_success
                .as_ref()
                .map(|m| plugin_kit::clock::now_secs().saturating_sub(m.age_seconds)),
            lag_seconds: i.lag_seconds,
            dead_letters_24h: i.dead_letters_24h,
        }),
        depths.into_iter(),
        credentials.into_iter(),
        firing
            .iter()
            .map(|a| (a.rule.as_str(), a.severity.as_str())),
    );
    let sinks = ingress.pipeline.sink_health().all();
    let queued: Vec<(String, usize)> = monitoring
        .channels()
        .iter()
        .map(|c| {
            let queue = c.key.queue();
            let waiting = monitoring.alert_store().waiting(&queue).unwrap_or(0);
            (queue, waiting)
        })
        .collect();
    ingress.metrics.deliveries(
        sinks.iter().map(|s| {
            (
                s.name.as_str(),
                s.delivered_events,
                s.failures,
                s.failing_since_ms.is_some(),
            )
        }),
        queued.into_iter(),
        ingress.pipeline.log_bytes(),
    );
}
