//! moto, the AWS emulator from PyPI, in server mode, and the adapter the CloudWatch SDK
//! needs in front of it: the Rust `aws-sdk-cloudwatch` speaks rpc-v2-cbor, moto speaks
//! CloudWatch's JSON protocol. The adapter turns each CBOR request into the JSON one
//! (`X-Amz-Target: GraniteServiceVersion20100801.<Operation>`, timestamps as epoch
//! seconds) and the JSON answer back into CBOR (timestamps as tag 1). CloudWatch Logs
//! and STS reach moto directly, or through the adapter unchanged when a test wants to
//! see what was sent.
//!
//! Shared by the plugin's tests and the end-to-end tests (included by path).

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use ciborium::value::Value as Cbor;
use serde_json::Value as Json;

/// A moto server on a free loopback port; stopped when dropped.
#[derive(Debug)]
pub struct Moto {
    child: Child,
    pub url: String,
}

impl Moto {
    /// Starts `python3 -m moto.server` and waits for it to say it is listening. Fails
    /// (never skips) when moto is missing: `scripts/test` installs it.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts moto enforcing IAM as AWS does (signatures checked, policies applied)
    /// after its first `free_actions` actions, which bootstrap an administrator.
    pub fn start_enforcing_iam(free_actions: u32) -> Self {
        Self::start_with(&[("INITIAL_NO_AUTH_ACTION_COUNT", &free_actions.to_string())])
    }

    fn start_with(env: &[(&str, &str)]) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut child = Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let stderr = child.stderr.take().expect("piped");
        let mut lines = BufReader::new(stderr).lines();
        let mut seen = Vec::new();
        loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if line.contains("Running on") {
                        break;
                    }
                    seen.push(line);
                }
                _ => {
                    let _ = child.kill();
                    panic!(
                        "moto did not start (install it with `pip install 'moto[server]'`; scripts/test does): {}",
                        seen.join("\n")
                    );
                }
            }
        }
        // Keep draining its log so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the adapter should do to requests, for fault tests.
#[derive(Debug, Default)]
pub struct Faults {
    /// Answer this many requests with a `ThrottlingException` before passing any on.
    pub throttle: AtomicUsize,
    /// Requests seen, in all.
    pub requests: AtomicUsize,
    /// Requests answered with throttling.
    pub throttled: AtomicUsize,
    /// Bodies of the requests passed through as they were (anything that is not
    /// rpc-v2-cbor: STS's query API, CloudWatch Logs' JSON).
    pub passed: std::sync::Mutex<Vec<String>>,
}

/// The CBOR ↔ JSON adapter on a free loopback port, forwarding to `moto`.
#[derive(Debug)]
pub struct CborAdapter {
    pub url: String,
    pub faults: Arc<Faults>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl CborAdapter {
    /// Runs on its own thread and runtime, so it works from sync and async tests alike.
    pub fn start(moto_url: &str) -> Self {
        let faults = Arc::new(Faults::default());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let state = (moto_url.to_owned(), faults.clone(), reqwest::Client::new());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let app = axum::Router::new()
                    .fallback(adapt)
                    .with_state(Arc::new(state));
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        Self {
            url,
            faults,
            stop: Some(stop),
        }
    }
}

impl Drop for CborAdapter {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

type State = Arc<(String, Arc<Faults>, reqwest::Client)>;

async fn adapt(
    axum::extract::State(state): axum::extract::State<State>,
    request: axum::extract::Request,
) -> axum::response::Response {
    let (moto, faults, client) = (&state.0, &state.1, &state.2);
    faults.requests.fetch_add(1, Ordering::SeqCst);
    let path = request.uri().path().to_owned();
    let operation = path.rsplit('/').next().unwrap_or_default().to_owned();
    let headers = request.headers().clone();
    let body = axum::body::to_bytes(request.into_body(), 16 << 20)
        .await
        .unwrap_or_default();
    if !path.starts_with("/service/") {
        return pass_through(moto, client, faults, &headers, body).await;
    }
    if faults
        .throttle
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        faults.throttled.fetch_add(1, Ordering::SeqCst);
        let error =
            serde_json::json!({"__type": "ThrottlingException", "message": "Rate exceeded"});
        return cbor_response(400, &error);
    }
    let json = if body.is_empty() {
        Json::Object(Default::default())
    } else {
        match ciborium::de::from_reader::<Cbor, _>(&body[..]) {
            Ok(value) => cbor_to_json(value),
            Err(err) => {
                return axum::response::Response::builder()
                    .status(400)
                    .body(axum::body::Body::from(format!("not CBOR: {err}")))
                    .expect("response");
            }
        }
    };
    let mut forward = client
        .post(format!("{moto}/"))
        .header(
            "X-Amz-Target",
            format!("GraniteServiceVersion20100801.{operation}"),
        )
        .header("Content-Type", "application/x-amz-json-1.0")
        .header("x-amzn-query-mode", "true")
        .body(json.to_string());
    // moto tells accounts apart by the signing key (an assumed role's keys are its
    // account's).
    for name in ["authorization", "x-amz-date", "x-amz-security-token"] {
        if let Some(value) = headers.get(name) {
            forward = forward.header(name, value.as_bytes());
        }
    }
    let answer = match forward.send().await {
        Ok(answer) => answer,
        Err(err) => {
            return axum::response::Response::builder()
                .status(502)
                .body(axum::body::Body::from(err.to_string()))
                .expect("response");
        }
    };
    let status = answer.status().as_u16();
    let text = answer.text().await.unwrap_or_default();
    let value: Json = serde_json::from_str(&text).unwrap_or(Json::Object(Default::default()));
    cbor_response(status, &value)
}

/// Forwards a request that is not rpc-v2-cbor to moto as it is, keeping its body.
async fn pass_through(
    moto: &str,
    client: &reqwest::Client,
    faults: &Faults,
    headers: &axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::response::Response {
    faults
        .passed
        .lock()
        .expect("lock")
        .push(String::from_utf8_lossy(&body).into_owned());
    let mut forward = client.post(format!("{moto}/")).body(body);
    for (name, value) in headers {
        if name != "host" && name != "content-length" {
            forward = forward.header(name.as_str(), value.as_bytes());
        }
    }
    match forward.send().await {
        Ok(answer) => {
            let status = answer.status().as_u16();
            let content_type = answer
                .headers()
                .get("content-type")
                .map(|v| v.as_bytes().to_vec())
                .unwrap_or_default();
            let bytes = answer.bytes().await.unwrap_or_default();
            axum::response::Response::builder()
                .status(status)
                .header("content-type", content_type)
                .body(axum::body::Body::from(bytes))
                .expect("response")
        }
        Err(err) => axum::response::Response::builder()
            .status(502)
            .body(axum::body::Body::from(err.to_string()))
            .expect("response"),
    }
}

fn cbor_response(status: u16, value: &Json) -> axum::response::Response {
    let mut bytes = Vec::new();
    ciborium::ser::into_writer(&json_to_cbor(value, false), &mut bytes).expect("encode");
    axum::response::Response::builder()
        .status(status)
        .header("content-type", "application/cbor")
        .header("smithy-protocol", "rpc-v2-cbor")
        .body(axum::body::Body::from(bytes))
        .expect("response")
}

fn cbor_to_json(value: Cbor) -> Json {
    match value {
        Cbor::Integer(i) => {
            let i: i128 = i.into();
            i64::try_from(i).map_or(Json::Null, Json::from)
        }
        Cbor::Float(f) => serde_json::Number::from_f64(f).map_or(Json::Null, Json::Number),
        Cbor::Text(t) => Json::String(t),
        Cbor::Bool(b) => Json::Bool(b),
        Cbor::Null => Json::Null,
        Cbor::Tag(_, inner) => cbor_to_json(*inner),
        Cbor::Array(items) => Json::Array(items.into_iter().map(cbor_to_json).collect()),
        Cbor::Map(entries) => Json::Object(
            entries
                .into_iter()
                .filter_map(|(k, v)| match k {
                    Cbor::Text(k) => Some((k, cbor_to_json(v))),
                    _ => None,
                })
                .collect(),
        ),
        Cbor::Bytes(b) => Json::Array(b.into_iter().map(Json::from).collect()),
        _ => Json::Null,
    }
}

/// Members whose values are timestamps (CBOR tag 1 on the way back).
fn is_timestamp_key(key: &str) -> bool {
    key.contains("Timestamp") || key == "StartTime" || key == "EndTime"
}

fn json_to_cbor(value: &Json, timestamp: bool) -> Cbor {
    match value {
        Json::Number(n) if timestamp => {
            Cbor::Tag(1, Box::new(Cbor::Float(n.as_f64().unwrap_or(0.0))))
        }
        Json::String(s) if timestamp => {
            // moto writes some timestamps as ISO text.
            let seconds = plugin_protocol::event_time_ms(s).map_or(0.0, |ms| ms as f64 / 1000.0);
            Cbor::Tag(1, Box::new(Cbor::Float(seconds)))
        }
        Json::Number(n) => match n.as_i64() {
            Some(i) => Cbor::Integer(i.into()),
            None => Cbor::Float(n.as_f64().unwrap_or(0.0)),
        },
        Json::String(s) => Cbor::Text(s.clone()),
        Json::Bool(b) => Cbor::Bool(*b),
        Json::Null => Cbor::Null,
        Json::Array(items) => {
            Cbor::Array(items.iter().map(|i| json_to_cbor(i, timestamp)).collect())
        }
        Json::Object(map) => Cbor::Map(
            map.iter()
                .map(|(k, v)| (Cbor::Text(k.clone()), json_to_cbor(v, is_timestamp_key(k))))
                .collect(),
        ),
    }
}
