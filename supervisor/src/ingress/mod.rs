//! The HTTP listener: liveness, metrics, webhooks (`POST /v1/webhooks/{tenant}/{integration}`)
//! and platform events (`POST /v1/events/{tenant}`). Errors are JSON:
//! `{"error": "<code>", "message": "<what and why>"}` with the matching status.

mod bearer;
mod body;
mod cloudevents;
mod dashboard;
mod events;
mod forward;
mod health_api;
mod host_verify;
mod integration_api;
mod jetstream;
mod listener;
mod otlp;
mod rate;
pub(crate) mod untrusted_bodies;
mod webhooks;

use std::sync::Arc;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::config::IngressConfig;
use crate::correlation::Correlator;
use crate::health::{HealthBook, Metrics};
use crate::integrations::Integrations;
use crate::monitoring::Monitoring;
use crate::pipeline::Pipeline;
use crate::process::Manager;
use crate::tenants::Tenants;

pub use host_verify::HostVerifier;
pub use jetstream::JetStreamSource;
pub use listener::ClientAddr;
use rate::AuthFailures;
pub use rate::TenantRates;

/// What the routes need.
#[derive(Debug)]
pub struct Ingress {
    pub metrics: Arc<Metrics>,
    pub pipeline: Arc<Pipeline>,
    pub manager: Arc<Manager>,
    pub tenants: Tenants,
    pub rates: TenantRates,
    /// Deliveries that failed authentication, per client address.
    auth_failures: AuthFailures,
    /// KiB of request bodies being read, all requests together.
    body_budget: Arc<tokio::sync::Semaphore>,
    /// Verifies deliveries the daemon keeps for a plugin that is down.
    verifier: HostVerifier,
    /// Webhook outcomes are recorded here.
    pub book: Arc<HealthBook>,
    /// `/v1/health`, `/v1/alerts`, and the health gauges of `/metrics`.
    pub monitoring: Arc<Monitoring>,
    /// Configuration histories, for an integration's page.
    pub integrations: Integrations,
    /// Deployments and the failures that followed them.
    pub correlator: Arc<Correlator>,
    pub config: IngressConfig,
    /// Relays requests for tenants other nodes serve (`[cluster]`).
    forwarder: Option<forward::Forwarder>,
}

/// The components the routes use.
#[derive(Debug)]
pub struct IngressParts {
    pub metrics: Arc<Metrics>,
    pub pipeline: Arc<Pipeline>,
    pub manager: Arc<Manager>,
    pub tenants: Tenants,
    pub verifier: HostVerifier,
    pub book: Arc<HealthBook>,
    pub monitoring: Arc<Monitoring>,
    pub integrations: Integrations,
    pub correlator: Arc<Correlator>,
    /// This node's cluster, when it is one of several.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
}

impl Ingress {
    pub fn new(parts: IngressParts, config: IngressConfig) -> Result<Self, reqwest::Error> {
        let IngressParts {
            metrics,
            pipeline,
            manager,
            tenants,
            verifier,
            book,
            monitoring,
            integrations,
            correlator,
            cluster,
        } = parts;
        let forwarder = cluster.map(forward::Forwarder::new).transpose()?;
        Ok(Self {
            verifier,
            book,
            monitoring,
            integrations,
            correlator,
            rates: TenantRates::new(config.rate_per_second, config.burst),
            auth_failures: AuthFailures::new(config.auth_failures_per_minute),
            body_budget: Arc::new(tokio::sync::Semaphore::new(
                config.max_body_memory_bytes.div_ceil(1024),
            )),
            metrics,
            pipeline,
            manager,
            tenants,
            config,
            forwarder,
        })
    }
}

/// Serves the routes on `listener` under the configured connection limits until `stop`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    ingress: Arc<Ingress>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let limits = listener::ListenerLimits {
        header_timeout: ingress.config.header_timeout,
        idle_timeout: ingress.config.idle_timeout,
        max_connections: ingress.config.max_connections,
        max_connections_per_client: ingress.config.max_connections_per_client,
    };
    listener::serve(listener, router(ingress), limits, stop).await;
}

impl Ingress {
    /// Reads a request body under the size limit, the body deadline and the shared
    /// memory budget.
    async fn read_body(
        &self,
        headers: &axum::http::HeaderMap,
        request_body: axum::body::Body,
    ) -> Result<Vec<u8>, Refusal> {
        body::read(
            headers,
            request_body,
            &body::Limits {
                max_bytes: self.config.max_body_bytes,
                timeout: self.config.body_timeout,
                budget: &self.body_budget,
            },
        )
        .await
    }

    /// 429 while `client` is over its budget of failed authentications.
    fn check_auth_failures(&self, client: Option<&ClientAddr>) -> Result<(), Refusal> {
        let Some(ClientAddr(addr)) = client else {
            return Ok(());
        };
        self.auth_failures.check(addr.ip()).map_err(|wait| {
            let seconds = wait.as_secs().max(1);
            Refusal {
                retry_after: Some(seconds),
                ..Refusal::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_failures",
                    format!(
                        "too many deliveries from this address failed authentication; retry in {seconds} s"
                    ),
                )
            }
        })
    }

    /// The address failed authentications count against: the client's, unless a node
    /// of the cluster relayed the request (it counted them against the sender).
    fn sender(
        &self,
        client: Option<ClientAddr>,
        headers: &axum::http::HeaderMap,
    ) -> Option<ClientAddr> {
        match &self.forwarder {
            Some(forwarder) if forwarder.relayed_by_peer(client.as_ref(), headers) => None,
            _ => client,
        }
    }

    /// Counts a delivery that failed authentication against its sender's address.
    fn record_auth_failure(&self, client: Option<&ClientAddr>) {
        if let Some(ClientAddr(addr)) = client {
            self.auth_failures.record(addr.ip());
        }
    }
}

/// The routes of one tenant's traffic, relayed to the node serving it when that is
/// another.
fn tenant_routes(ingress: Arc<Ingress>) -> Router<Arc<Ingress>> {
    Router::new()
        .route(
            "/v1/webhooks/{tenant}/{integration}",
            post(webhooks::receive),
        )
        .route("/v1/events/{tenant}", post(events::receive))
        .route_layer(axum::middleware::from_fn_with_state(
            ingress,
            forward::to_owner,
        ))
}

/// The routes, ready to serve.
pub fn router(ingress: Arc<Ingress>) -> Router {
    Router::new()
        .route("/", get(dashboard::page))
        .route("/ui", get(dashboard::page))
        .route("/ui/", get(dashboard::page))
        .route("/ui/assets/{name}", get(dashboard::asset))
        .route("/ui/{*view}", get(dashboard::page))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .merge(tenant_routes(ingress.clone()))
        .route(
            "/v1/logs",
            post(otlp::receive).route_layer(axum::middleware::from_fn_with_state(
                ingress.clone(),
                forward::logs_to_owner,
            )),
        )
        .route("/v1/health", get(health_api::health))
        .route("/v1/alerts", get(health_api::alerts))
        .route(
            "/v1/integrations/{tenant}/{integration}",
            get(integration_api::integration),
        )
        .route("/v1/deployments", get(integration_api::deployments))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(ingress)
}

async fn healthz() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"status":"ok"}"#,
    )
        .into_response()
}

async fn metrics(axum::extract::State(ingress): axum::extract::State<Arc<Ingress>>) -> Response {
    health_api::refresh_gauges(&ingress).await;
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        ingress.metrics.encode(),
    )
        .into_response()
}

async fn not_found(uri: axum::http::Uri) -> Response {
    json_error(
        StatusCode::NOT_FOUND,
        "not_found",
        &format!("no route for {}", printable(uri.path(), 200)),
    )
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    json_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        &format!("{method} is not allowed on {}", printable(uri.path(), 200)),
    )
}

/// A JSON error body with the matching status.
pub fn json_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({ "error": code, "message": message }).to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Untrusted text for a message: control characters escaped, at most `max` characters.
pub fn printable(text: &str, max: usize) -> String {
    let mut shown: String = text
        .chars()
        .take(max)
        .flat_map(char::escape_debug)
        .collect();
    if text.chars().count() > max {
        shown.push('…');
    }
    shown
}

/// A refused request: the status, a stable code and a message naming what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds for `Retry-After`.
    pub retry_after: Option<u64>,
}

impl Refusal {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut response = json_error(self.status, self.code, &self.message);
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
        }
        response
    }
}

/// `body` as JSON text, or `None` (logged) when it cannot be. Serialized straight to
/// text: a document of 1,000 integrations is not first rebuilt as a `serde_json::Value`.
fn serialized(body: &impl serde::Serialize) -> Option<Vec<u8>> {
    serde_json::to_vec(body)
        .map_err(|err| tracing::error!(error = %err, "cannot serialize an answer"))
        .ok()
}

/// A JSON body with a status.
fn json_ok(status: StatusCode, body: &impl serde::Serialize) -> Response {
    match serialized(body) {
        Some(text) => (status, [(header::CONTENT_TYPE, "application/json")], text).into_response(),
        None => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Answers shorter than this go uncompressed: gzip would not pay for itself.
const COMPRESS_FROM_BYTES: usize = 2048;

/// A JSON answer to a read, gzip-compressed when the client accepts it and the body is
/// large (the health document of every integration, read every few seconds by each open
/// dashboard).
fn json_read(headers: &axum::http::HeaderMap, body: &impl serde::Serialize) -> Response {
    let Some(text) = serialized(body) else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let gzip = accepts_gzip(headers);
    let vary = (header::VARY, "accept-encoding");
    if gzip && text.len() >= COMPRESS_FROM_BYTES {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(
            Vec::with_capacity(text.len() / 8),
            flate2::Compression::fast(),
        );
        if encoder.write_all(&text).is_ok()
            && let Ok(compressed) = encoder.finish()
        {
            return (
                StatusCode::OK,
                [
                    (header::CONTENT_TYPE, "application/json"),
                    (header::CONTENT_ENCODING, "gzip"),
                    vary,
                ],
                compressed,
            )
                .into_response();
        }
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json"), vary],
        text,
    )
        .into_response()
}

/// Whether `Accept-Encoding` takes gzip: named (or `*`) with a weight above zero.
fn accepts_gzip(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or_default();
            let weight = parts
                .find_map(|p| p.strip_prefix("q="))
                .map_or(Some(1.0), |q| q.parse::<f32>().ok());
            (name.eq_ignore_ascii_case("gzip") || name == "*") && weight.is_some_and(|q| q > 0.0)
        })
}

/// 429 with `Retry-After` when the tenant is over its rate.
fn check_rate(ingress: &Ingress, tenant: &str) -> Result<(), Refusal> {
    ingress.rates.check(tenant).map_err(|wait| {
        let seconds = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
        Refusal {
            retry_after: Some(seconds),
            ..Refusal::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "tenant `{tenant}` is over its rate of {} requests/s; retry in {seconds} s",
                    ingress.config.rate_per_second
                ),
            )
        }
    })
}

/// The answer to a commit that failed: the sender should retry later.
fn not_stored(err: &crate::pipeline::CommitError) -> Refusal {
    let code = match err {
        crate::pipeline::CommitError::BacklogFull { .. } => "backlog_full",
        _ => "not_stored",
    };
    Refusal::new(
        StatusCode::SERVICE_UNAVAILABLE,
        code,
        format!("{err}; retry later"),
    )
}

/// The counts of a commit, as the 2xx body says them.
fn outcome_json(status: &str, outcome: &crate::pipeline::BatchOutcome) -> serde_json::Value {
    serde_json::json!({
        "status": status,
        "events": outcome.stored,
        "duplicates": outcome.duplicates,
        "dead_lettered": outcome.dead_lettered,
    })
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, HeaderValue, header};

    #[test]
    fn gzip_is_taken_when_named_with_a_weight_above_zero() {
        let accepts = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(
                header::ACCEPT_ENCODING,
                HeaderValue::from_str(value).expect("value"),
            );
            super::accepts_gzip(&headers)
        };
        assert!(accepts("gzip, deflate, br, zstd"));
        assert!(accepts("br;q=1.0, GZIP;q=0.5"));
        assert!(accepts("*"));
        assert!(!accepts("gzip;q=0"));
        assert!(!accepts("gzip;q=0.000"));
        assert!(!accepts("deflate, br"));
        assert!(!accepts("gzip;q=nonsense"));
        assert!(!super::accepts_gzip(&HeaderMap::new()));
    }
}
