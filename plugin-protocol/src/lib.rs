//! The integrationd plugin protocol: generated gRPC code for each protocol major, the
//! handshake line a plugin prints on stdout, the version constants both sides agree on,
//! and the canonical event (schema and types). This crate performs no I/O; transport
//! lives in `plugin-kit`.

mod call_stats;
mod capability;
mod credential_kind;
mod error_class;
mod event;
mod handshake;
mod names;
mod version;

pub use call_stats::{
    CALL_LATENCY_BOUNDS_SECONDS, CallIncrements, CallOutcome, CallRecorder, LatencyIncrement,
    MAX_LATENCY_BUCKETS, increments as call_increments,
};
pub use capability::{Capabilities, Capability, UnknownCapability};
pub use credential_kind::{
    BUILT_IN_CREDENTIAL_KINDS, is_built_in_credential_kind, plugin_credential_kind,
};
pub use error_class::{ERROR_CLASS_METADATA_KEY, ErrorClass};
pub use event::{
    CANONICAL_EVENT_SCHEMA_V1, CanonicalEvent, Category, Enrichment, EnrichmentSource, EventData,
    Link, Severity, event_id, event_time_ms, is_field_name,
};
pub use handshake::{HandshakeError, HandshakeLine, check_untrusted_line};
pub use names::{MAX_NAME_LEN, NAME_RULE, is_name};
pub use version::{
    CORE_PROTOCOL_VERSION, ENV_HOST_PID, ENV_MAGIC_COOKIE, ENV_PROTOCOL_VERSIONS, ENV_SOCKET_PATH,
    ENV_TOKEN, MAGIC_COOKIE_VALUE, MAX_HANDSHAKE_LINE_BYTES, MAX_MESSAGE_BYTES,
    SUPPORTED_PROTOCOL_VERSIONS, TOKEN_METADATA_KEY, negotiate, parse_version_list,
};

/// Protocol major 1 (`betalogs.plugin.v1`).
///
/// A breaking change becomes a sibling module `v2` generated from
/// `proto/betalogs/plugin/v2/plugin.proto`; `v1` stays, so the supervisor keeps serving
/// plugins that negotiated 1.
pub mod v1 {
    #![allow(clippy::all, clippy::pedantic, missing_debug_implementations)]
    tonic::include_proto!("betalogs.plugin.v1");
}

impl v1::WebhookRequest {
    /// The first header called `name` (header names compare without regard to case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }
}

/// The most a plugin's handshake reply ([`v1::WebhookResponse::reply`]) may carry; the
/// host answers a longer one 502.
pub const MAX_WEBHOOK_REPLY_BYTES: usize = 4096;

impl v1::WebhookResponse {
    /// An answer without events: a refusal, an acknowledgement, "ignored".
    pub fn answer(status: u32, message: impl Into<String>) -> Self {
        Self {
            status,
            events_json: Vec::new(),
            message: message.into(),
            ..Self::default()
        }
    }

    /// 202 with the events the delivery made.
    pub fn accepted(events_json: Vec<String>) -> Self {
        Self {
            status: 202,
            events_json,
            ..Self::default()
        }
    }

    /// A 200 whose body is `body` itself, as `content_type` (`text/plain` or
    /// `application/json`): the answer to a sender's handshake.
    pub fn reply(body: impl Into<Vec<u8>>, content_type: &str) -> Self {
        Self {
            status: 200,
            reply_body: body.into(),
            reply_content_type: content_type.to_owned(),
            ..Self::default()
        }
    }
}

#[cfg(test)]
mod webhook_message_tests {
    use super::v1;

    #[test]
    fn headers_are_found_without_regard_to_case() {
        let request = v1::WebhookRequest {
            headers: vec![v1::Header {
                name: "X-GitHub-Event".into(),
                value: "push".into(),
            }],
            body: Vec::new(),
            host_verified: false,
        };
        assert_eq!(request.header("x-github-event"), Some("push"));
        assert_eq!(request.header("x-github-delivery"), None);
        let answer = v1::WebhookResponse::answer(401, "no");
        assert!(answer.events_json.is_empty());
    }
}
