//! Tenant calls for a tenant another node serves (`[cluster]`): a tenant's token is
//! known only where the tenant lives, so a node that does not hold a token but finds it
//! in placement relays the call, as it came, to the owner over NATS request/reply. The
//! owner runs it through its own admin service, which authenticates the token itself;
//! a relayed call carries no socket credentials, so it can never be an operator's.
//!
//! Only unary calls of at most [`RELAYABLE_BYTES`] are relayed; the streaming ones
//! (`backup`, `events tail`, `enrich`) are refused naming the node to run them on.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Limited, StreamBody};
use hyper::body::Frame;
use serde::{Deserialize, Serialize};
use tonic::body::Body;
use tower::{Layer, Service, ServiceExt};

use crate::cluster::{Channel, Cluster, Owner};
use crate::tenants::Tenants;

/// The largest request body relayed (NATS's default message limit is 1 MiB).
pub const RELAYABLE_BYTES: usize = 512 * 1024;

/// How long the owner may take over a relayed call.
const RELAY_TIMEOUT: Duration = Duration::from_secs(30);

/// Calls that stream and are not relayed.
const STREAMING: [&str; 3] = ["/Backup", "/TailEvents", "/Enrich"];

/// A call relayed to the owner.
#[derive(Debug, Serialize, Deserialize)]
struct RelayedCall {
    path: String,
    authorization: String,
    /// Base64 of the gRPC-framed request body.
    body: String,
}

/// The owner's answer: the response's headers, body (base64) and trailers.
#[derive(Debug, Serialize, Deserialize)]
struct RelayedAnswer {
    headers: Vec<(String, String)>,
    body: String,
    trailers: Vec<(String, String)>,
}

/// Puts [`Relay`] in front of the admin service.
#[derive(Debug, Clone)]
pub struct RelayLayer {
    pub cluster: Option<Arc<Cluster>>,
    pub tenants: Tenants,
}

impl<S> Layer<S> for RelayLayer {
    type Service = Relay<S>;

    fn layer(&self, inner: S) -> Relay<S> {
        Relay {
            inner,
            cluster: self.cluster.clone(),
            tenants: self.tenants.clone(),
        }
    }
}

/// Relays calls authenticated by tokens of tenants placed on other nodes.
#[derive(Debug, Clone)]
pub struct Relay<S> {
    inner: S,
    cluster: Option<Arc<Cluster>>,
    tenants: Tenants,
}

type Answer<E> = Pin<Box<dyn Future<Output = Result<http::Response<Body>, E>> + Send>>;

impl<S> Service<http::Request<Body>> for Relay<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Answer<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        match self.owner_elsewhere(&request) {
            None => Box::pin(self.inner.call(request)),
            Some((cluster, node)) => {
                Box::pin(async move { Ok(relay(&cluster, &node, request).await) })
            }
        }
    }
}

impl<S> Relay<S> {
    /// The node to relay to: the call's token is not held here, and placement says
    /// its tenant is served by that node.
    fn owner_elsewhere(&self, request: &http::Request<Body>) -> Option<(Arc<Cluster>, String)> {
        let cluster = self.cluster.as_ref()?;
        let id = token_id(request.headers())?;
        if matches!(self.tenants.token(id), Ok(Some(_))) {
            return None;
        }
        let tenant = cluster.tenant_of_token(id)?;
        match cluster.owner(&tenant) {
            Owner::Elsewhere { node, .. } => Some((cluster.clone(), node)),
            Owner::Here | Owner::Nowhere => None,
        }
    }
}

/// The id of a `Bearer blt_<id>_<secret>` token.
fn token_id(headers: &http::HeaderMap) -> Option<&str> {
    crate::tenants::bearer_token_id(headers.get(http::header::AUTHORIZATION)?.to_str().ok()?)
}

fn refused(status: tonic::Status) -> http::Response<Body> {
    status.into_http()
}

/// Relays one call to `node` and answers with what it answered.
async fn relay(
    cluster: &Cluster,
    node: &str,
    request: http::Request<Body>,
) -> http::Response<Body> {
    let path = request.uri().path().to_owned();
    if STREAMING.iter().any(|name| path.ends_with(name)) {
        return refused(tonic::Status::failed_precondition(format!(
            "this tenant is served by node `{node}`; run this command on that node"
        )));
    }
    let authorization = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = match Limited::new(request.into_body(), RELAYABLE_BYTES)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return refused(tonic::Status::resource_exhausted(format!(
                "this tenant is served by node `{node}`, and a call over {RELAYABLE_BYTES} bytes is not relayed; run it on that node"
            )));
        }
    };
    let call = RelayedCall {
        path,
        authorization,
        body: BASE64.encode(&body),
    };
    let unavailable = |why: String| {
        refused(tonic::Status::unavailable(format!(
            "this tenant is served by node `{node}`, which could not be reached: {why}"
        )))
    };
    let payload = match serde_json::to_vec(&call) {
        Ok(payload) => payload,
        Err(err) => return unavailable(err.to_string()),
    };
    let asked = async_nats::Request::new()
        .payload(payload.into())
        .timeout(Some(RELAY_TIMEOUT));
    let answer = match cluster
        .client()
        .send_request(cluster.subject(Channel::Admin, node), asked)
        .await
    {
        Ok(answer) => answer,
        Err(err) => return unavailable(err.to_string()),
    };
    match serde_json::from_slice::<RelayedAnswer>(&answer.payload) {
        Ok(answer) => {
            rebuild(answer).unwrap_or_else(|| unavailable("its answer was malformed".into()))
        }
        Err(err) => unavailable(format!("its answer was malformed: {err}")),
    }
}

/// The owner's answer as an HTTP/2 response with its trailers.
fn rebuild(answer: RelayedAnswer) -> Option<http::Response<Body>> {
    let mut response = http::Response::builder().status(200);
    for (name, value) in &answer.headers {
        response = response.header(name.as_str(), value.as_str());
    }
    let mut trailers = http::HeaderMap::new();
    for (name, value) in &answer.trailers {
        trailers.append(
            http::HeaderName::from_bytes(name.as_bytes()).ok()?,
            http::HeaderValue::from_str(value).ok()?,
        );
    }
    let body = Bytes::from(BASE64.decode(&answer.body).ok()?);
    let frames: Vec<Result<Frame<Bytes>, Infallible>> =
        vec![Ok(Frame::data(body)), Ok(Frame::trailers(trailers))];
    response
        .body(Body::new(StreamBody::new(futures_util::stream::iter(
            frames,
        ))))
        .ok()
}

fn pairs(headers: &http::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter_map(|(name, value)| {
            Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
        })
        .collect()
}

/// Runs calls other nodes relay here, from `calls` (this node's admin subject), through
/// `admin` until `stop`.
pub async fn serve<S>(
    cluster: Arc<Cluster>,
    admin: S,
    mut calls: async_nats::Subscriber,
    mut stop: tokio::sync::watch::Receiver<bool>,
) where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    loop {
        let message = tokio::select! {
            stopped = stop.changed() => if stopped.is_err() || *stop.borrow() { return } else { continue },
            message = calls.next() => message,
        };
        let Some(message) = message else {
            tracing::error!("the NATS client closed: this node takes no more relayed admin calls");
            return;
        };
        let (cluster, admin) = (cluster.clone(), admin.clone());
        tokio::spawn(async move {
            let Some(inbox) = message.reply else { return };
            let answer = run_relayed(admin, &message.payload).await;
            let answer = serde_json::to_vec(&answer).unwrap_or_default();
            if let Err(err) = cluster.client().publish(inbox, answer.into()).await {
                tracing::warn!(error = %err, "cannot answer a relayed admin call");
            }
        });
    }
}

/// One relayed call through the admin service: only a tenant token's, never as an
/// operator.
async fn run_relayed<S>(admin: S, payload: &[u8]) -> RelayedAnswer
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
{
    let failed = |status: tonic::Status| RelayedAnswer {
        headers: vec![("content-type".into(), "application/grpc".into())],
        body: String::new(),
        trailers: vec![
            ("grpc-status".into(), (status.code() as i32).to_string()),
            ("grpc-message".into(), status.message().to_owned()),
        ],
    };
    let call: RelayedCall = match serde_json::from_slice(payload) {
        Ok(call) => call,
        Err(err) => {
            return failed(tonic::Status::invalid_argument(format!(
                "not a relayed call: {err}"
            )));
        }
    };
    if !call.authorization.starts_with("Bearer blt_")
        || !call.path.starts_with("/betalogs.admin.v1.Admin/")
    {
        return failed(tonic::Status::unauthenticated(
            "a relayed call carries a tenant token",
        ));
    }
    let Ok(body) = BASE64.decode(&call.body) else {
        return failed(tonic::Status::invalid_argument(
            "the relayed body is not base64",
        ));
    };
    let request = http::Request::builder()
        .method(http::Method::POST)
        .uri(call.path.as_str())
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header("te", "trailers")
        .header(http::header::AUTHORIZATION, call.authorization.as_str())
        .body(Body::new(http_body_util::Full::new(Bytes::from(body))));
    let Ok(request) = request else {
        return failed(tonic::Status::invalid_argument(
            "the relayed call is malformed",
        ));
    };
    let response = match admin.oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    let headers = pairs(response.headers());
    match response.into_body().collect().await {
        Ok(collected) => RelayedAnswer {
            headers,
            trailers: collected.trailers().map(pairs).unwrap_or_default(),
            body: BASE64.encode(collected.to_bytes()),
        },
        Err(err) => failed(tonic::Status::internal(format!("the call failed: {err}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An admin service that must not be reached.
    fn untouchable() -> impl Service<
        http::Request<Body>,
        Response = http::Response<Body>,
        Error = Infallible,
        Future = std::future::Ready<Result<http::Response<Body>, Infallible>>,
    > + Clone {
        tower::service_fn(|_: http::Request<Body>| -> std::future::Ready<_> {
            panic!("a refused relayed call reached the admin service")
        })
    }

    fn status_of(answer: &RelayedAnswer) -> (String, String) {
        let find = |name: &str| {
            answer
                .trailers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        (find("grpc-status"), find("grpc-message"))
    }

    #[tokio::test]
    async fn relayed_calls_without_a_tenant_token_or_well_formed_never_reach_the_service() {
        let secret = "f".repeat(64);
        let cases = [
            ("not json".to_owned(), "3", "not a relayed call"),
            (
                serde_json::json!({"path": "/betalogs.admin.v1.Admin/ListTenants", "authorization": "", "body": ""}).to_string(),
                "16",
                "a relayed call carries a tenant token",
            ),
            (
                serde_json::json!({"path": "/grpc.health.v1.Health/Check", "authorization": format!("Bearer blt_0123456789ab_{secret}"), "body": ""}).to_string(),
                "16",
                "a relayed call carries a tenant token",
            ),
            (
                serde_json::json!({"path": "/betalogs.admin.v1.Admin/Status", "authorization": format!("Bearer blt_0123456789ab_{secret}"), "body": "!!"}).to_string(),
                "3",
                "the relayed body is not base64",
            ),
        ];
        for (payload, code, message) in cases {
            let answer = run_relayed(untouchable(), payload.as_bytes()).await;
            let (status, said) = status_of(&answer);
            assert_eq!(status, code, "{payload}");
            assert!(said.starts_with(message), "{said}");
        }
    }

    #[test]
    fn an_answer_is_rebuilt_with_its_trailers_and_a_malformed_one_is_refused() {
        let answer = RelayedAnswer {
            headers: vec![("content-type".into(), "application/grpc".into())],
            body: BASE64.encode(b"\0\0\0\0\0"),
            trailers: vec![("grpc-status".into(), "0".into())],
        };
        let response = rebuild(answer).expect("rebuilt");
        assert_eq!(response.headers()["content-type"], "application/grpc");
        let bad = RelayedAnswer {
            headers: Vec::new(),
            body: "not base64!".into(),
            trailers: Vec::new(),
        };
        assert!(rebuild(bad).is_none());
        let bad_trailer = RelayedAnswer {
            headers: Vec::new(),
            body: String::new(),
            trailers: vec![("bad name".into(), "x".into())],
        };
        assert!(rebuild(bad_trailer).is_none());
    }

    #[test]
    fn only_well_formed_bearer_tokens_name_an_id() {
        let with = |value: String| {
            let mut headers = http::HeaderMap::new();
            headers.insert(http::header::AUTHORIZATION, value.parse().expect("value"));
            token_id(&headers).map(str::to_owned)
        };
        let secret = "f".repeat(64);
        assert_eq!(
            with(format!("Bearer blt_0123456789ab_{secret}")).as_deref(),
            Some("0123456789ab")
        );
        assert_eq!(with(format!("Bearer blt_0123456789a_{secret}")), None);
        assert_eq!(with(format!("Bearer blt_0123456789abc_{secret}")), None);
        assert_eq!(with("Bearer blt_0123456789ab_short".to_owned()), None);
        assert_eq!(with(format!("Basic blt_0123456789ab_{secret}")), None);
        assert_eq!(token_id(&http::HeaderMap::new()), None);
    }
}
