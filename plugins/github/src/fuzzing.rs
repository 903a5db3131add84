//! The webhook path on bytes from anyone, for the fuzz targets and the property tests:
//! a delivery signed with the integration's secret (so the bytes reach the mapping) and
//! the same bytes unsigned. Not an API.

use plugin_kit::{signature, testing};

use crate::settings::{SUPPORTED_EVENT_TYPES, Settings};

const SECRET: &str = "fuzz-secret";

/// Types the plugin does not map: one GitHub sends (ignored) and a name that is not one.
const UNMAPPED: [&str; 2] = ["star", "Not An Event"];

/// An event type and a content type for a fuzzer's byte.
pub fn pick(byte: u8) -> (&'static str, &'static str) {
    let content_type = if byte & 0x80 == 0 {
        "application/json"
    } else {
        "application/x-www-form-urlencoded"
    };
    let events: Vec<&'static str> = SUPPORTED_EVENT_TYPES
        .into_iter()
        .chain(["ping"])
        .chain(UNMAPPED)
        .collect();
    (
        events[usize::from(byte & 0x7f) % events.len()],
        content_type,
    )
}

fn settings() -> Settings {
    let request = testing::configure_request(
        "acme",
        "gh",
        &serde_json::json!({
            // The owners of @octokit/webhooks-examples' repositories (the corpus).
            "repositories": ["Codertocat/*", "octocat/*", "octo-org/*", "Octocoders/*", "github/*"],
            "credentials": {"webhook_secret": "hook"}
        }),
        &[(
            "webhook_secret",
            "webhook-secret",
            &serde_json::json!({ "current": SECRET }).to_string(),
        )],
    );
    Settings::from_configure(&request).expect("the fuzzing configuration is valid")
}

/// One delivery of `event` with `body`: the answer is a documented status, only a 202
/// carries events, each a canonical event of the tenant; an unsigned delivery is a 401.
/// Returns the signed delivery's status.
pub fn delivery(event: &str, content_type: &str, body: &[u8]) -> u32 {
    let settings = settings();
    let signed = signature::sign_sha256(SECRET.as_bytes(), body);
    let headers = [
        ("x-github-event", event),
        ("x-github-delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
        ("x-hub-signature-256", signed.as_str()),
        ("content-type", content_type),
    ];
    let answer = crate::webhook::handle(
        &settings,
        &testing::webhook_request(&headers, body.to_vec()),
    );
    testing::assert_webhook_answer(&answer, "acme", &[200, 202, 400, 403, 413, 422]);
    let unsigned = testing::webhook_request(&headers[..2], body.to_vec());
    let refused = crate::webhook::handle(&settings, &unsigned);
    assert_eq!(refused.status, 401, "{}", refused.message);
    assert!(refused.events_json.is_empty());
    answer.status
}
