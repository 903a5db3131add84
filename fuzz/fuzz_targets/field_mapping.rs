//! Field-mapping rules and an event to apply them to, separated by the first NUL byte.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|b| *b == 0).unwrap_or(data.len());
    let (rules, event) = data.split_at(split);
    plugin_kit::check_untrusted_rules(rules, event.get(1..).unwrap_or_default());
});
