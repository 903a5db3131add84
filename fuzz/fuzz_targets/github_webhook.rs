//! A GitHub webhook delivery through the plugin's verification and mapping. The first
//! byte picks the event type and the content type; the rest is the body.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let (event, content_type) = integration_github::fuzzing::pick(pick);
    integration_github::fuzzing::delivery(event, content_type, body);
});
