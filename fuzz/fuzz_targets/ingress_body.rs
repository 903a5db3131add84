//! Request bodies of the HTTP ingress: JSON and NDJSON checks, CloudEvents (structured
//! and binary), OTLP logs (protobuf and JSON).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| supervisor::fuzzing::ingress_body(data));
