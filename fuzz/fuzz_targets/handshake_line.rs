//! The handshake line a plugin prints on stdout.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(line) = std::str::from_utf8(data) {
        plugin_protocol::check_untrusted_line(line);
    }
});
