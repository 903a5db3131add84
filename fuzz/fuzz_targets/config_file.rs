//! The daemon's TOML configuration file.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| supervisor::fuzzing::config_file(data));
