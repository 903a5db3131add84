//! A delivery through one of the webhook plugin's presets (GitLab, Jira, PagerDuty,
//! Slack, Standard Webhooks). The first byte picks the preset and GitLab's event type;
//! the rest is the body.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let (preset, event) = integration_webhook::fuzzing::pick(pick);
    integration_webhook::fuzzing::delivery(preset, event, body);
});
