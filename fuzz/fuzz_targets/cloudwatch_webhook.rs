//! A CloudWatch alarm delivery (SNS notification or EventBridge event) through the
//! plugin's authentication and mapping.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    integration_cloudwatch::fuzzing::delivery(data);
});
