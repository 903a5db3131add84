//! `GET /v1/integrations/{tenant}/{integration}` and `GET /v1/deployments`: what the
//! dashboard's integration and deployment pages show, for the same tokens as
//! `/v1/health` (a tenant's `admin` or `monitor` token, or an operator's monitoring
//! token for all tenants). A tenant the token may not read is refused exactly as one
//! that does not exist; an integration of a readable tenant that does not exist is 404.
//!
//! Dead letters are listed without their payloads, and a configuration's history
//! without its values: what changed, who changed it and when, as `integrations history`
//! says it.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::health_api::{forbidden, scope};
use super::{Ingress, Refusal, json_read, printable};
use crate::correlation::{ChangeFailureRate, DeploymentView, change_failure_rates};
use crate::monitoring::view::{ErrorView, IntegrationHealth, rfc3339};

/// Dead letters an integration's page lists at most.
const DEAD_LETTERS_LISTED: usize = 50;
/// Alerts an integration's page lists at most.
const ALERTS_LISTED: usize = 20;
/// Characters of a dead letter's reason shown.
const REASON_SHOWN: usize = 300;

/// A dead letter as the page lists it: never its payload.
#[derive(Debug, Serialize)]
struct DeadLetterEntry {
    id: String,
    stage: String,
    reason: String,
    at: String,
}

/// One version of an integration's configuration: who, when, what changed.
#[derive(Debug, Serialize)]
struct VersionEntry {
    version: u32,
    author: String,
    at: String,
    change: String,
    diff: String,
}

#[derive(Debug, Serialize)]
struct IntegrationPage {
    generated_at: String,
    health: IntegrationHealth,
    /// Newest first.
    recent_errors: Vec<ErrorView>,
    /// Pending, firing and resolved, newest first.
    alerts: Vec<serde_json::Value>,
    dead_letters: Vec<DeadLetterEntry>,
    dead_letters_total: usize,
    /// Newest first; empty for an instance configured in the daemon's file.
    history: Vec<VersionEntry>,
}

fn unavailable(what: &str, err: &dyn std::fmt::Display) -> Refusal {
    tracing::error!(error = %err, "cannot read {what}");
    Refusal::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        format!("{what} cannot be read now; retry later"),
    )
}

pub async fn integration(
    State(ingress): State<Arc<Ingress>>,
    Path((tenant, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    match page(&ingress, &headers, tenant, name).await {
        Ok(page) => json_read(&headers, &page),
        Err(refusal) => refusal.into_response(),
    }
}

async fn page(
    ingress: &Arc<Ingress>,
    headers: &HeaderMap,
    tenant: String,
    name: String,
) -> Result<IntegrationPage, Refusal> {
    let token = super::bearer::token(ingress, headers, "a monitor or tenant admin token")?;
    if !token.reads_health_of(&tenant) {
        return Err(forbidden());
    }
    let monitoring = &ingress.monitoring;
    let health = monitoring
        .health(Some(&tenant))
        .await
        .into_iter()
        .find(|h| h.integration == name)
        .ok_or_else(|| {
            Refusal::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!(
                    "tenant `{}` has no integration `{}`",
                    printable(&tenant, 64),
                    printable(&name, 64)
                ),
            )
        })?;
    let key = crate::names::InstanceKey::new(&tenant, &name);
    let recent_errors = ingress
        .book
        .get(&key)
        .map(|facts| {
            facts
                .recent_errors
                .iter()
                .rev()
                .map(ErrorView::of)
                .collect()
        })
        .unwrap_or_default();
    let alerts = monitoring
        .alerts(Some(&tenant), None)
        .map_err(|e| unavailable("alerts", &e))?
        .iter()
        .filter(|a| a.integration.as_deref() == Some(name.as_str()))
        .take(ALERTS_LISTED)
        .map(crate::monitoring::message::alert_json)
        .collect();
    let (pipeline, integrations) = (ingress.pipeline.clone(), ingress.integrations.clone());
    let (for_tenant, for_name) = (tenant.clone(), name.clone());
    let stored = tokio::task::spawn_blocking(move || {
        let letters = pipeline
            .dead_letter_summaries(&for_tenant, &for_name, DEAD_LETTERS_LISTED)
            .map_err(|e| unavailable("dead letters", &e))?;
        let stored = integrations
            .get(&for_tenant, &for_name)
            .map_err(|e| unavailable("the configuration history", &e))?;
        Ok::<_, Refusal>((letters, stored))
    })
    .await
    .map_err(|e| unavailable("the integration", &e))??;
    let ((dead_letters_total, letters), stored) = stored;
    let dead_letters = letters
        .into_iter()
        .map(|letter| DeadLetterEntry {
            id: letter.id,
            stage: letter.stage,
            reason: printable(&letter.reason, REASON_SHOWN),
            at: rfc3339(letter.time_ms),
        })
        .collect();
    let history = stored
        .map(|integration| {
            integration
                .versions
                .into_iter()
                .rev()
                .map(|v| VersionEntry {
                    version: v.version,
                    author: v.author,
                    at: rfc3339(v.time_ms),
                    change: v.change,
                    diff: v.diff,
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(IntegrationPage {
        generated_at: rfc3339(plugin_kit::clock::now_ms()),
        health,
        recent_errors,
        alerts,
        dead_letters,
        dead_letters_total,
        history,
    })
}

/// A deployment as the page shows it: its time as RFC 3339.
#[derive(Debug, Serialize)]
struct DeploymentEntry {
    tenant: String,
    at: String,
    #[serde(flatten)]
    view: DeploymentView,
}

#[derive(Debug, Serialize)]
struct DeploymentsPage {
    generated_at: String,
    /// Per tenant and service, newest deployment first.
    deployments: Vec<DeploymentEntry>,
    /// Per tenant and service.
    services: Vec<TenantRate>,
}

#[derive(Debug, Serialize)]
struct TenantRate {
    tenant: String,
    #[serde(flatten)]
    rate: ChangeFailureRate,
}

/// Deployments the page lists per tenant at most (the rates count them all).
const DEPLOYMENTS_LISTED: usize = 200;

pub async fn deployments(
    State(ingress): State<Arc<Ingress>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let tenant = match scope(&ingress, &headers, &query) {
        Ok(tenant) => tenant,
        Err(refusal) => return refusal.into_response(),
    };
    let tenants: Vec<String> = match tenant {
        Some(tenant) => vec![tenant],
        None => ingress.monitoring.tenants(),
    };
    let service = query.get("service").filter(|s| !s.is_empty()).cloned();
    let correlator = ingress.correlator.clone();
    let read =
        tokio::task::spawn_blocking(move || {
            let mut page = DeploymentsPage {
                generated_at: rfc3339(plugin_kit::clock::now_ms()),
                deployments: Vec::new(),
                services: Vec::new(),
            };
            for tenant in tenants {
                let views = correlator.deployments(&tenant, service.as_deref())?;
                let rates = change_failure_rates(views.iter().map(|d| {
                    (
                        d.service.as_str(),
                        !d.failures.is_empty(),
                        d.time_to_restore_ms,
                    )
                }));
                page.services
                    .extend(rates.into_iter().map(|rate| TenantRate {
                        tenant: tenant.clone(),
                        rate,
                    }));
                page.deployments
                    .extend(views.into_iter().take(DEPLOYMENTS_LISTED).map(|view| {
                        DeploymentEntry {
                            tenant: tenant.clone(),
                            at: rfc3339(view.time_ms),
                            view,
                        }
                    }));
            }
            Ok::<_, crate::correlation::CorrelationError>(page)
        })
        .await;
    match read {
        Ok(Ok(page)) => json_read(&headers, &page),
        Ok(Err(err)) => unavailable("deployments", &err).into_response(),
        Err(err) => unavailable("deployments", &err).into_response(),
    }
}
