//! A backup file given to `integrationd restore`, as it is and with its checksum made to
//! match (so the bytes reach the frame reader).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| supervisor::fuzzing::backup_file(data));
