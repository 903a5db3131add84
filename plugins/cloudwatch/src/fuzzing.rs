//! The webhook path on bytes from anyone, for the fuzz targets and the property tests:
//! a delivery with the integration's secret (so the bytes reach the mapping: SNS
//! notifications and EventBridge events) and the same bytes without it. An SNS
//! subscription confirmation is answered without fetching anything. Not an API.

use plugin_kit::testing;

use crate::settings::Settings;
use crate::webhook::SECRET_HEADER;

const SECRET: &str = "fuzz-secret";

fn settings() -> Settings {
    let request = testing::configure_request(
        "acme",
        "cw",
        &serde_json::json!({
            // The account and region of the corpus's documented examples.
            "accounts": [{"id": "123456789012", "credentials": "prod", "regions": ["us-east-1"]}],
            "credentials": {"webhook_secret": "hook"},
            "alarms": [{"name": "*", "severity": "critical"}],
        }),
        &[
            (
                "prod",
                "aws",
                r#"{"access_key_id":"AKIDFUZZFUZZFUZZ","secret_access_key":"fuzz"}"#,
            ),
            (
                "webhook_secret",
                "webhook-secret",
                &serde_json::json!({ "current": SECRET }).to_string(),
            ),
        ],
    );
    Settings::from_configure_with(&request, None)
        .expect("the fuzzing configuration is valid")
        .expect("it has an account")
}

/// One delivery with `body`, answered by the plugin's handler: a documented status,
/// events only with a 202, each a canonical alarm event of the tenant; without the
/// secret, a 401. Returns the status of the delivery with the secret.
pub fn delivery(body: &[u8]) -> u32 {
    let settings = settings();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let answer = |headers: &[(&str, &str)]| {
        let request = testing::webhook_request(headers, body.to_vec());
        runtime.block_on(crate::webhook::handle(&settings, &request, |_url| async {
            Ok::<(), String>(())
        }))
    };
    let with_secret = answer(&[
        (SECRET_HEADER, SECRET),
        ("content-type", "application/json"),
    ]);
    testing::assert_webhook_answer(&with_secret, "acme", &[200, 202, 400, 403, 422]);
    let without = answer(&[("content-type", "application/json")]);
    assert_eq!(without.status, 401, "{}", without.message);
    with_secret.status
}
