//! Admin requests as the admin socket decodes them, and the names, configurations and
//! secrets in them.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| supervisor::fuzzing::admin_request(data));
