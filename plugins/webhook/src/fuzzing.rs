//! Deliveries from anyone through each preset's mapping, for the fuzz targets and the
//! property tests. The delivery is marked as verified by the host (each scheme's
//! verification has tests of its own), so the bytes reach the mapping. Not an API.

use plugin_kit::MapContext;
use plugin_kit::signature::WebhookSecrets;

use crate::Integration;

const SECRET: &str = "fuzz-secret";

/// The presets that map events by themselves (`standard-webhooks` is a verification
/// scheme that wants the operator's routes).
const MAPPING_PRESETS: [&str; 4] = ["gitlab", "jira", "pagerduty", "slack"];

/// GitLab names its event types in a header; the other presets read the body. The
/// delivery-id headers are those of GitLab and Jira (the others read it from the body).
const GITLAB_EVENTS: [&str; 5] = [
    "Push Hook",
    "Merge Request Hook",
    "Deployment Hook",
    "Release Hook",
    "Pipeline Hook",
];

/// The preset and GitLab event type for a fuzzer's byte.
pub fn pick(byte: u8) -> (&'static str, &'static str) {
    let preset = MAPPING_PRESETS[usize::from(byte) % MAPPING_PRESETS.len()];
    let event = GITLAB_EVENTS[usize::from(byte / 8) % GITLAB_EVENTS.len()];
    (preset, event)
}

/// One delivery of `body` to an integration of `preset`: a documented status, events
/// only with a 202, each a canonical event of the tenant. Returns the status.
pub fn delivery(preset: &str, gitlab_event: &str, body: &[u8]) -> u32 {
    let settings: crate::config::Settings =
        serde_json::from_value(serde_json::json!({ "preset": preset }))
            .expect("a shipped preset is a configuration");
    let context = MapContext {
        tenant: "acme".into(),
        integration: "hooks".into(),
    };
    let secrets = WebhookSecrets {
        current: SECRET.to_owned().into(),
        previous: None,
    };
    let integration =
        Integration::new(context, settings, secrets).expect("a shipped preset compiles");
    let mut request = plugin_kit::testing::webhook_request(
        &[
            ("X-Gitlab-Event", gitlab_event),
            (
                "X-Gitlab-Event-UUID",
                "8d2a1c6e-0b5f-4c2a-9f3e-1a2b3c4d5e6f",
            ),
            ("X-Atlassian-Webhook-Identifier", "1281"),
            ("content-type", "application/json"),
        ],
        body.to_vec(),
    );
    request.host_verified = true;
    let answer = integration.answer(&request, "2026-12-07T10:00:00Z");
    plugin_kit::testing::assert_webhook_answer(&answer, "acme", &[200, 202, 400, 403, 413, 422]);
    answer.status
}
