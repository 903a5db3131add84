//! The ingress's body parsers run on bytes from anyone: what the fuzz targets and the
//! property tests feed them, and what must hold whatever the bytes are.

use super::body::{BodyKind, check_json};
use super::{cloudevents, otlp};
use plugin_protocol::Severity;

/// Every parser a body can reach, on `bytes`: no panic, refusals short enough to be
/// messages (never the body echoed back), and whatever is accepted is the caller's
/// tenant's.
pub fn check_body(bytes: &[u8]) {
    for kind in [BodyKind::Json, BodyKind::NdJson] {
        if let Err(refusal) = check_json(kind, bytes) {
            assert!(refusal.message.len() < 300, "{}", refusal.message);
        }
    }
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes)
        && let Ok(event) = cloudevents::canonical(&value, "acme", "2026-12-07T00:00:00Z")
    {
        assert_eq!(event["tenant"], "acme");
    }
    let mut headers = axum::http::HeaderMap::new();
    headers.insert(
        "ce-specversion",
        axum::http::HeaderValue::from_static("1.0"),
    );
    headers.insert(
        "ce-type",
        axum::http::HeaderValue::from_static("com.example.fuzz"),
    );
    headers.insert("ce-source", axum::http::HeaderValue::from_static("/fuzz"));
    headers.insert("ce-id", axum::http::HeaderValue::from_static("1"));
    headers.insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    if let Ok(event) = cloudevents::from_binary(&headers, bytes) {
        let _ = cloudevents::canonical(&event, "acme", "2026-12-07T00:00:00Z");
    }
    for encoding in [otlp::Encoding::Protobuf, otlp::Encoding::Json] {
        let request = match otlp::decode(encoding, bytes) {
            Ok(request) => request,
            Err(refusal) => {
                assert!(refusal.message.len() < 300, "{}", refusal.message);
                continue;
            }
        };
        let (events, _) = otlp::failures(&request, "acme", Severity::Debug, 0);
        for event in events {
            assert_eq!(event["tenant"], "acme");
        }
    }
}
