//! Requests for a tenant another node serves (`[cluster]`), relayed to that node: a
//! webhook or a platform event may reach any node (GitHub and most senders follow no
//! redirects), and only the owner holds the tenant's secrets and state. The owner
//! authenticates the request as if it had come straight to it, so relaying needs no
//! trust between nodes beyond the placement bucket.
//!
//! A relayed request carries `x-betalogs-forwarded-by`, and a request carrying it is
//! never relayed again: placements that disagree for a moment (a tenant being moved)
//! end at the second node, which answers as the owner would or with 503, never in a
//! loop.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{RawPathParams, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ClientAddr, Ingress, Refusal};
use crate::cluster::{Cluster, Owner};

/// Names the node that relayed a request.
pub const FORWARDED_BY: HeaderName = HeaderName::from_static("x-betalogs-forwarded-by");

/// Relays requests to the nodes that own their tenants.
#[derive(Debug)]
pub struct Forwarder {
    pub(super) cluster: Arc<Cluster>,
    client: reqwest::Client,
}

/// Headers that belong to one connection, not to the request (RFC 9110 §7.6.1), and
/// those the relay sets itself.
const NOT_RELAYED: [HeaderName; 9] = [
    header::CONNECTION,
    header::HOST,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    HeaderName::from_static("keep-alive"),
];

impl Forwarder {
    pub fn new(cluster: Arc<Cluster>) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(64)
            .timeout(cluster.forward_timeout())
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self { cluster, client })
    }

    /// Whether a request from `client` was relayed by a node of the cluster: its
    /// authentication failures were counted there, against the sender.
    pub fn relayed_by_peer(&self, client: Option<&ClientAddr>, headers: &HeaderMap) -> bool {
        let Some(ClientAddr(addr)) = client else {
            return false;
        };
        headers.contains_key(&FORWARDED_BY) && self.cluster.is_peer(addr.ip())
    }

    async fn relay(
        &self,
        ingress: &Ingress,
        node: &str,
        address: &str,
        request: Request,
    ) -> Result<Response, Refusal> {
        let (parts, body) = request.into_parts();
        let client = parts.extensions.get::<ClientAddr>().copied();
        ingress.check_auth_failures(client.as_ref())?;
        let bytes = ingress.read_body(&parts.headers, body).await?;
        let path = parts
            .uri
            .path_and_query()
            .map_or(parts.uri.path(), |p| p.as_str());
        let url = format!("{}{path}", address.trim_end_matches('/'));
        let mut headers = HeaderMap::with_capacity(parts.headers.len() + 2);
        for (name, value) in &parts.headers {
            if !NOT_RELAYED.contains(name) && name != FORWARDED_BY {
                headers.append(name.clone(), value.clone());
            }
        }
        if let Ok(me) = HeaderValue::from_str(self.cluster.node()) {
            headers.insert(FORWARDED_BY, me);
        }
        if let Some(ClientAddr(addr)) = client
            && let Ok(value) = HeaderValue::from_str(&addr.ip().to_string())
        {
            headers.insert(HeaderName::from_static("x-forwarded-for"), value);
        }
        let unreachable = |why: String| {
            tracing::warn!(node, address, error = %why, "cannot relay a request to its tenant's node");
            Refusal {
                retry_after: Some(5),
                ..Refusal::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "owner_unreachable",
                    format!(
                        "this tenant is served by node `{node}`, which cannot be reached now; nothing was stored, retry later"
                    ),
                )
            }
        };
        let answer = self
            .client
            .request(parts.method.clone(), &url)
            .headers(headers)
            .body(bytes)
            .send()
            .await
            .map_err(|err| unreachable(without_url(&err)))?;
        let status = answer.status();
        let mut relayed = Response::builder().status(status);
        for name in [header::CONTENT_TYPE, header::RETRY_AFTER] {
            if let Some(value) = answer.headers().get(&name) {
                relayed = relayed.header(name, value.clone());
            }
        }
        let body = answer
            .bytes()
            .await
            .map_err(|err| unreachable(without_url(&err)))?;
        if status == StatusCode::UNAUTHORIZED {
            ingress.record_auth_failure(client.as_ref());
        }
        relayed
            .body(Body::from(body))
            .map_err(|err| unreachable(err.to_string()))
    }
}

/// A client error without the URL (which reqwest appends, and the log has already).
fn without_url(err: &reqwest::Error) -> String {
    let mut text = err.to_string();
    if let Some(url) = err.url()
        && let Some(at) = text.find(&format!(" ({url})"))
    {
        text.truncate(at);
    }
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The route layer of the tenant routes: a request for a tenant placed on another
/// node is relayed there; every other request goes on to its route. A request for a
/// tenant arriving here waits until its handover ends; one for a tenant served here
/// holds its gate, so that a move away waits for it.
pub async fn to_owner(
    State(ingress): State<Arc<Ingress>>,
    params: RawPathParams,
    request: Request,
    next: Next,
) -> Response {
    let Some(forwarder) = &ingress.forwarder else {
        return next.run(request).await;
    };
    let Some(tenant) = params
        .iter()
        .find_map(|(name, value)| (name == "tenant").then_some(value))
    else {
        return next.run(request).await;
    };
    route(&ingress, forwarder, tenant, request, next).await
}

/// The route layer of `/v1/logs`, whose tenant is the bearer token's: a token this
/// node does not hold but placement knows is relayed to its tenant's node.
pub async fn logs_to_owner(
    State(ingress): State<Arc<Ingress>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(forwarder) = &ingress.forwarder else {
        return next.run(request).await;
    };
    let Some(id) = token_id(request.headers()) else {
        return next.run(request).await;
    };
    let tenant = match ingress.tenants.token(id) {
        Ok(Some(token)) => Some(token.tenant),
        _ => forwarder.cluster.tenant_of_token(id),
    };
    match tenant {
        Some(tenant) => route(&ingress, forwarder, &tenant, request, next).await,
        None => next.run(request).await,
    }
}

/// The id of a `Bearer blt_<id>_<secret>` token.
fn token_id(headers: &HeaderMap) -> Option<&str> {
    crate::tenants::bearer_token_id(headers.get(header::AUTHORIZATION)?.to_str().ok()?)
}

/// Runs a request for `tenant` here, or relays it to the node serving it.
async fn route(
    ingress: &Ingress,
    forwarder: &Forwarder,
    tenant: &str,
    request: Request,
    next: Next,
) -> Response {
    let cluster = &forwarder.cluster;
    if let Some(mut arrival) = cluster.arrival(tenant) {
        let arrived =
            tokio::time::timeout(cluster.forward_timeout(), arrival.wait_for(|done| *done)).await;
        if arrived.is_err() {
            return moving(&format!(
                "tenant `{}` is being moved to this node; nothing was stored, retry later",
                super::printable(tenant, 64)
            ));
        }
    }
    let relayed = request.headers().contains_key(&FORWARDED_BY);
    let (node, address) = match cluster.owner(tenant) {
        Owner::Nowhere => return next.run(request).await,
        Owner::Here => {
            let gate = cluster.gate(tenant);
            let held = gate.read_owned().await;
            match cluster.owner(tenant) {
                Owner::Elsewhere { node, address } if !relayed => {
                    drop(held);
                    (node, address)
                }
                _ => {
                    let response = next.run(request).await;
                    drop(held);
                    return response;
                }
            }
        }
        Owner::Elsewhere { .. } if relayed => {
            // The relaying node thinks this one serves the tenant, this one thinks
            // not: placement is changing. Relaying on could loop.
            return moving("this tenant's placement is changing; nothing was stored, retry later");
        }
        Owner::Elsewhere { node, address } => (node, address),
    };
    let Some(address) = address else {
        return Refusal {
            retry_after: Some(5),
            ..Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "owner_unreachable",
                format!("this tenant is served by node `{node}`, which has not said where it is; nothing was stored, retry later"),
            )
        }
        .into_response();
    };
    match forwarder.relay(ingress, &node, &address, request).await {
        Ok(response) => response,
        Err(refusal) => refusal.into_response(),
    }
}

/// 503 with `Retry-After: 1` while a tenant moves.
fn moving(message: &str) -> Response {
    Refusal {
        retry_after: Some(1),
        ..Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "tenant_moving", message)
    }
    .into_response()
}
