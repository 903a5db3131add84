//! The ways services authenticate their deliveries, chosen per integration by
//! configuration rather than fixed in a manifest: an HMAC-SHA256 of the body in a header
//! of the service's choosing (GitHub, Jira Cloud, PagerDuty v3, Sentry), Slack's `v0`
//! signature over `v0:timestamp:body`, the Standard Webhooks scheme (`webhook-id`,
//! `webhook-timestamp`, `webhook-signature`), a shared token in a header (GitLab), and
//! HTTP Basic. Every comparison is constant time; the current secret and, during a
//! rotation, the previous one are tried; a timestamped scheme refuses deliveries outside
//! its replay window. Refusals say which header was missing or malformed, never anything
//! of a secret.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::{
    SignatureError, Verified, WebhookSecrets, basic_credentials, hmac, hmac_matches, try_secrets,
    verify_shared_secret,
};
use plugin_protocol::v1::WebhookRequest;

/// The replay window of the timestamped schemes when the configuration names none: the
/// five minutes both Slack and Standard Webhooks recommend.
pub const DEFAULT_TOLERANCE_SECONDS: u64 = 300;

/// The longest signature header looked at: a few signatures (a rotation sends two).
const MAX_SIGNATURE_HEADER: usize = 1024;

/// How a digest is written in its header.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum DigestEncoding {
    #[default]
    Hex,
    Base64,
}

fn default_tolerance() -> u64 {
    DEFAULT_TOLERANCE_SECONDS
}

/// How an integration's deliveries are authenticated (`[authentication]` in its
/// configuration, `scheme = "…"`). Serialized the same way when a plugin reports it to
/// the host at `Configure`, so that the host can keep deliveries while the plugin is down.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "scheme", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Authentication {
    /// An HMAC-SHA256 of the raw body in `header`, after `prefix` (GitHub and Jira
    /// `sha256=`, PagerDuty `v1=`, Sentry none), in hex or base64. Several signatures
    /// separated by commas are accepted if any matches (PagerDuty signs with each of
    /// its secrets during a rotation).
    HmacSha256 {
        header: String,
        #[serde(default)]
        prefix: String,
        #[serde(default)]
        encoding: DigestEncoding,
    },
    /// Slack: `X-Slack-Signature: v0=hex(HMAC(secret, "v0:" + timestamp + ":" + body))`
    /// with `X-Slack-Request-Timestamp` within the replay window.
    Slack {
        #[serde(default = "default_tolerance")]
        tolerance_seconds: u64,
    },
    /// Standard Webhooks: `webhook-signature: v1,<base64>` (space-separated, any may
    /// match) of `id.timestamp.body`, keyed with the base64 secret after `whsec_`, with
    /// `webhook-timestamp` within the replay window.
    StandardWebhooks {
        #[serde(default = "default_tolerance")]
        tolerance_seconds: u64,
    },
    /// The secret itself in `header` (GitLab's `X-Gitlab-Token`).
    Token { header: String },
    /// HTTP Basic authentication: `username:password` must equal the secret.
    Basic,
}

impl Authentication {
    /// Verifies `request` as of now.
    pub fn verify(
        &self,
        secrets: &WebhookSecrets,
        request: &WebhookRequest,
    ) -> Result<Verified, SignatureError> {
        self.verify_at(secrets, request, crate::clock::now_ms() / 1000)
    }

    /// Verifies `request` as of `now` (Unix seconds): the current secret, then the
    /// previous one.
    pub fn verify_at(
        &self,
        secrets: &WebhookSecrets,
        request: &WebhookRequest,
        now: u64,
    ) -> Result<Verified, SignatureError> {
        match self {
            Authentication::HmacSha256 {
                header,
                prefix,
                encoding,
            } => {
                let presented = signatures(request, header)?
                    .split(',')
                    .map(|one| decode_digest(one.trim(), prefix, *encoding))
                    .collect::<Result<Vec<_>, _>>()?;
                try_secrets(secrets, |secret| {
                    let key = secret.expose_secret().as_bytes();
                    presented
                        .iter()
                        .any(|digest| hmac_matches(key, &[&request.body], digest))
                })
            }
            Authentication::Slack { tolerance_seconds } => {
                let timestamp = required(request, SLACK_TIMESTAMP)?;
                check_window(SLACK_TIMESTAMP, timestamp, now, *tolerance_seconds)?;
                let digest = decode_digest(
                    signatures(request, SLACK_SIGNATURE)?,
                    "v0=",
                    DigestEncoding::Hex,
                )?;
                try_secrets(secrets, |secret| {
                    hmac_matches(
                        secret.expose_secret().as_bytes(),
                        &[b"v0:", timestamp.as_bytes(), b":", &request.body],
                        &digest,
                    )
                })
            }
            Authentication::StandardWebhooks { tolerance_seconds } => {
                let id = required(request, STANDARD_ID)?;
                let timestamp = required(request, STANDARD_TIMESTAMP)?;
                check_window(STANDARD_TIMESTAMP, timestamp, now, *tolerance_seconds)?;
                // Versions other than `v1` (such as the asymmetric `v1a`) are skipped:
                // a sender may list several kinds.
                let presented: Vec<Vec<u8>> = signatures(request, STANDARD_SIGNATURE)?
                    .split_ascii_whitespace()
                    .filter_map(|one| one.strip_prefix("v1,"))
                    .map(|digest| decode_digest(digest, "", DigestEncoding::Base64))
                    .collect::<Result<_, _>>()?;
                if presented.is_empty() {
                    return Err(SignatureError::Malformed("it holds no `v1,` signature"));
                }
                try_secrets(secrets, |secret| {
                    let Some(key) = standard_webhooks_key(secret) else {
                        return false;
                    };
                    let parts: [&[u8]; 5] = [
                        id.as_bytes(),
                        b".",
                        timestamp.as_bytes(),
                        b".",
                        &request.body,
                    ];
                    presented
                        .iter()
                        .any(|digest| hmac_matches(&key, &parts, digest))
                })
            }
            Authentication::Token { header } => {
                verify_shared_secret(secrets, Some(required(request, header)?))
            }
            Authentication::Basic => {
                required(request, "authorization")?;
                verify_shared_secret(secrets, basic_credentials(request).as_deref())
            }
        }
    }

    /// Whether `secrets` can serve this scheme at all: a Standard Webhooks secret must
    /// be base64 (after `whsec_`). Checked at `Configure`, so that a secret of the wrong
    /// shape is a configuration error, not every delivery refused.
    pub fn check_secrets(&self, secrets: &WebhookSecrets) -> Result<(), &'static str> {
        if let Authentication::StandardWebhooks { .. } = self {
            let all = std::iter::once(&secrets.current).chain(secrets.previous.as_ref());
            for secret in all {
                if standard_webhooks_key(secret).is_none() {
                    return Err("a Standard Webhooks secret is base64, optionally after `whsec_`");
                }
            }
        }
        Ok(())
    }

    /// The headers a sender puts on `body` under this scheme, signed with `secret`, as
    /// of `timestamp` (Unix seconds) with delivery id `id` where the scheme has them: for
    /// tests, demos and tools that send deliveries.
    pub fn sign(
        &self,
        secret: &str,
        body: &[u8],
        id: &str,
        timestamp: u64,
    ) -> Vec<(String, String)> {
        let timestamp = timestamp.to_string();
        match self {
            Authentication::HmacSha256 {
                header,
                prefix,
                encoding,
            } => {
                let digest = hmac(secret.as_bytes(), &[body]);
                let written = match encoding {
                    DigestEncoding::Hex => hex::encode(digest),
                    DigestEncoding::Base64 => BASE64.encode(digest),
                };
                vec![(header.clone(), format!("{prefix}{written}"))]
            }
            Authentication::Slack { .. } => {
                let digest = hmac(
                    secret.as_bytes(),
                    &[b"v0:", timestamp.as_bytes(), b":", body],
                );
                vec![
                    (SLACK_TIMESTAMP.to_owned(), timestamp),
                    (
                        SLACK_SIGNATURE.to_owned(),
                        format!("v0={}", hex::encode(digest)),
                    ),
                ]
            }
            Authentication::StandardWebhooks { .. } => {
                let key = standard_webhooks_key(&SecretString::from(secret.to_owned()))
                    .unwrap_or_default();
                let digest = hmac(
                    &key,
                    &[id.as_bytes(), b".", timestamp.as_bytes(), b".", body],
                );
                vec![
                    (STANDARD_ID.to_owned(), id.to_owned()),
                    (STANDARD_TIMESTAMP.to_owned(), timestamp),
                    (
                        STANDARD_SIGNATURE.to_owned(),
                        format!("v1,{}", BASE64.encode(digest)),
                    ),
                ]
            }
            Authentication::Token { header } => vec![(header.clone(), secret.to_owned())],
            Authentication::Basic => vec![(
                "authorization".to_owned(),
                format!("Basic {}", BASE64.encode(secret)),
            )],
        }
    }

    /// The headers that carry a secret itself, which nothing may store or log.
    pub fn secret_headers(&self) -> Vec<&str> {
        match self {
            Authentication::Token { header } => vec![header.as_str()],
            Authentication::Basic => vec!["authorization"],
            _ => Vec::new(),
        }
    }
}

const SLACK_SIGNATURE: &str = "x-slack-signature";
const SLACK_TIMESTAMP: &str = "x-slack-request-timestamp";
const STANDARD_ID: &str = "webhook-id";
const STANDARD_TIMESTAMP: &str = "webhook-timestamp";
const STANDARD_SIGNATURE: &str = "webhook-signature";

/// The signature header's value, bounded.
fn signatures<'a>(request: &'a WebhookRequest, header: &str) -> Result<&'a str, SignatureError> {
    let value = required(request, header)?;
    if value.len() > MAX_SIGNATURE_HEADER {
        return Err(SignatureError::Malformed(
            "longer than any signature header",
        ));
    }
    Ok(value)
}

fn required<'a>(request: &'a WebhookRequest, header: &str) -> Result<&'a str, SignatureError> {
    request
        .header(header)
        .ok_or_else(|| SignatureError::MissingHeader(header.to_owned()))
}

/// A timestamp header within `tolerance` seconds of `now`, either way.
fn check_window(
    header: &str,
    timestamp: &str,
    now: u64,
    tolerance: u64,
) -> Result<(), SignatureError> {
    let sent: u64 = timestamp
        .trim()
        .parse()
        .map_err(|_| SignatureError::Malformed("the timestamp is not Unix seconds"))?;
    let skew = sent.abs_diff(now);
    if skew > tolerance {
        return Err(SignatureError::Stale {
            header: header.to_owned(),
            skew_seconds: skew,
            tolerance_seconds: tolerance,
        });
    }
    Ok(())
}

fn decode_digest(
    written: &str,
    prefix: &str,
    encoding: DigestEncoding,
) -> Result<Vec<u8>, SignatureError> {
    let digest = written
        .strip_prefix(prefix)
        .ok_or(SignatureError::Malformed(
            "a signature does not start with the configured prefix",
        ))?;
    let decoded = match encoding {
        DigestEncoding::Hex => hex::decode(digest).ok(),
        DigestEncoding::Base64 => BASE64.decode(digest).ok(),
    };
    match decoded {
        Some(bytes) if bytes.len() == 32 => Ok(bytes),
        _ => Err(SignatureError::Malformed(match encoding {
            DigestEncoding::Hex => "a signature is not 64 hex digits",
            DigestEncoding::Base64 => "a signature is not a base64 SHA-256 digest",
        })),
    }
}

/// The key of a Standard Webhooks secret: the base64 after `whsec_`.
fn standard_webhooks_key(secret: &SecretString) -> Option<Vec<u8>> {
    let text = secret.expose_secret().trim();
    let encoded = text.strip_prefix("whsec_").unwrap_or(text);
    let key = BASE64
        .decode(encoded)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(encoded))
        .ok()?;
    (!key.is_empty()).then_some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testing::webhook_request as request;

    fn secrets(current: &str) -> WebhookSecrets {
        WebhookSecrets {
            current: SecretString::from(current.to_owned()),
            previous: None,
        }
    }

    fn standard() -> Authentication {
        Authentication::StandardWebhooks {
            tolerance_seconds: DEFAULT_TOLERANCE_SECONDS,
        }
    }

    /// The Standard Webhooks libraries' published vector (standard-webhooks/
    /// standard-webhooks, `libraries/python/tests/test_webhooks.py`, `test_sign_function`),
    /// and the tampered signature those tests refuse.
    const SW_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SW_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SW_TIMESTAMP: u64 = 1_614_265_330;
    const SW_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SW_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
    const SW_TAMPERED: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA=";

    fn sw_request(signature: &str, body: &[u8]) -> WebhookRequest {
        request(
            &[
                ("webhook-id", SW_ID),
                ("webhook-timestamp", &SW_TIMESTAMP.to_string()),
                ("webhook-signature", signature),
            ],
            body,
        )
    }

    #[test]
    fn the_standard_webhooks_vector_verifies_and_its_tampered_variants_do_not() {
        let secrets = secrets(SW_SECRET);
        let at = SW_TIMESTAMP + 10;
        assert_eq!(
            standard().verify_at(&secrets, &sw_request(SW_SIGNATURE, SW_BODY), at),
            Ok(Verified::Current)
        );
        // Without the prefix, and among other signatures (a rotation, an asymmetric one).
        let unprefixed = super::WebhookSecrets {
            current: SecretString::from("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned()),
            previous: None,
        };
        let listed = format!(
            "v1a,c2lnbmF0dXJl v1,{} {SW_SIGNATURE}",
            BASE64.encode([7u8; 32])
        );
        assert!(
            standard()
                .verify_at(&unprefixed, &sw_request(&listed, SW_BODY), at)
                .is_ok()
        );
        assert_eq!(
            standard().sign(SW_SECRET, SW_BODY, SW_ID, SW_TIMESTAMP)[2].1,
            SW_SIGNATURE
        );
        for (what, request) in [
            ("tampered signature", sw_request(SW_TAMPERED, SW_BODY)),
            (
                "changed body",
                sw_request(SW_SIGNATURE, br#"{"test": 2432232315}"#),
            ),
        ] {
            assert_eq!(
                standard().verify_at(&secrets, &request, at),
                Err(SignatureError::Mismatch),
                "{what}"
            );
        }
        let mut other_id = sw_request(SW_SIGNATURE, SW_BODY);
        other_id.headers[0].value = "msg_another".into();
        assert_eq!(
            standard().verify_at(&secrets, &other_id, at),
            Err(SignatureError::Mismatch)
        );
        // A replay outside the window, either way, fails before any HMAC.
        for now in [SW_TIMESTAMP + 301, SW_TIMESTAMP - 301] {
            assert!(matches!(
                standard().verify_at(&secrets, &sw_request(SW_SIGNATURE, SW_BODY), now),
                Err(SignatureError::Stale {
                    skew_seconds: 301,
                    ..
                })
            ));
        }
    }

    /// Slack's documented example (api.slack.com, "Verifying requests from Slack").
    const SLACK_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const SLACK_TS: u64 = 1_531_420_618;
    const SLACK_BODY: &[u8] = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const SLACK_SIGNATURE_VALUE: &str =
        "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

    #[test]
    fn slacks_documented_example_verifies_within_its_window_only() {
        let slack = Authentication::Slack {
            tolerance_seconds: DEFAULT_TOLERANCE_SECONDS,
        };
        let delivery = request(
            &[
                ("X-Slack-Request-Timestamp", &SLACK_TS.to_string()),
                ("X-Slack-Signature", SLACK_SIGNATURE_VALUE),
            ],
            SLACK_BODY,
        );
        let secrets = secrets(SLACK_SECRET);
        assert_eq!(
            slack.verify_at(&secrets, &delivery, SLACK_TS + 60),
            Ok(Verified::Current)
        );
        assert_eq!(
            slack.sign(SLACK_SECRET, SLACK_BODY, "", SLACK_TS)[1].1,
            SLACK_SIGNATURE_VALUE
        );
        assert!(matches!(
            slack.verify_at(&secrets, &delivery, SLACK_TS + 301),
            Err(SignatureError::Stale { .. })
        ));
        let missing = request(&[("X-Slack-Signature", SLACK_SIGNATURE_VALUE)], SLACK_BODY);
        assert_eq!(
            slack
                .verify_at(&secrets, &missing, SLACK_TS)
                .expect_err("no timestamp")
                .to_string(),
            "the delivery lacks the `x-slack-request-timestamp` header"
        );
    }

    /// Every scheme, signed with its own `sign`: verifies, and a flipped byte in the body,
    /// the signature or the secret fails; the previous secret still verifies.
    #[test]
    fn a_flipped_byte_anywhere_fails_for_every_scheme() {
        let schemes = [
            Authentication::HmacSha256 {
                header: "x-hub-signature-256".into(),
                prefix: "sha256=".into(),
                encoding: DigestEncoding::Hex,
            },
            Authentication::HmacSha256 {
                header: "x-pagerduty-signature".into(),
                prefix: "v1=".into(),
                encoding: DigestEncoding::Hex,
            },
            Authentication::HmacSha256 {
                header: "x-signature".into(),
                prefix: String::new(),
                encoding: DigestEncoding::Base64,
            },
            Authentication::Slack {
                tolerance_seconds: 300,
            },
            standard(),
            Authentication::Token {
                header: "x-gitlab-token".into(),
            },
            Authentication::Basic,
        ];
        let secret = "whsec_c2VjcmV0LWtleS1vZi10aGUtdGVzdHM=";
        let other = "whsec_c2VjcmV0LWtleS1vZi10aGUtdGVzdHQ=";
        let body = br#"{"object_kind":"push","ref":"refs/heads/main"}"#;
        let now = 1_767_225_600;
        for scheme in &schemes {
            let signed = scheme.sign(secret, body, "msg_1", now);
            let to_request = |headers: &[(String, String)], body: &[u8]| {
                let pairs: Vec<(&str, &str)> = headers
                    .iter()
                    .map(|(n, v)| (n.as_str(), v.as_str()))
                    .collect();
                request(&pairs, body)
            };
            let good = to_request(&signed, body);
            assert_eq!(
                scheme.verify_at(&secrets(secret), &good, now),
                Ok(Verified::Current),
                "{scheme:?}"
            );
            let rotated = WebhookSecrets {
                current: SecretString::from(other.to_owned()),
                previous: Some(SecretString::from(secret.to_owned())),
            };
            assert_eq!(
                scheme.verify_at(&rotated, &good, now),
                Ok(Verified::Previous),
                "{scheme:?}"
            );
            assert!(
                scheme.verify_at(&secrets(other), &good, now).is_err(),
                "another secret: {scheme:?}"
            );
            let mut flipped_body = body.to_vec();
            flipped_body[3] ^= 1;
            let body_check =
                scheme.verify_at(&secrets(secret), &to_request(&signed, &flipped_body), now);
            let carries_the_secret = !scheme.secret_headers().is_empty();
            assert_eq!(
                body_check.is_ok(),
                carries_the_secret,
                "a body flip fails every signing scheme (a presented secret signs nothing): {scheme:?}"
            );
            // Flip one character of the value that authenticates (the last header).
            let mut tampered = signed.clone();
            let value = &mut tampered.last_mut().expect("header").1;
            // A digit, so that hex (case-insensitive) and base64 both read another value.
            let flipped = if value.ends_with('0') { '1' } else { '0' };
            value.pop();
            value.push(flipped);
            assert!(
                scheme
                    .verify_at(&secrets(secret), &to_request(&tampered, body), now)
                    .is_err(),
                "a signature flip: {scheme:?}"
            );
            // With nothing at all.
            assert!(
                scheme
                    .verify_at(&secrets(secret), &request(&[], body), now)
                    .is_err()
            );
        }
    }

    #[test]
    fn hostile_headers_are_refused_by_name_and_never_echo_a_secret() {
        let hmac = Authentication::HmacSha256 {
            header: "x-hub-signature-256".into(),
            prefix: "sha256=".into(),
            encoding: DigestEncoding::Hex,
        };
        type Case<'a> = (&'a Authentication, Vec<(&'a str, String)>, &'a str);
        let cases: [Case; 5] = [
            (
                &hmac,
                vec![("x-hub-signature-256", "sha1=abc".into())],
                "prefix",
            ),
            (
                &hmac,
                vec![("x-hub-signature-256", format!("sha256={}", "z".repeat(64)))],
                "64 hex digits",
            ),
            (
                &hmac,
                vec![("x-hub-signature-256", "sha256=".repeat(200))],
                "longer than any",
            ),
            (
                &Authentication::Slack {
                    tolerance_seconds: 300,
                },
                vec![
                    ("x-slack-request-timestamp", "soon\u{7}".into()),
                    ("x-slack-signature", "v0=00".into()),
                ],
                "not Unix seconds",
            ),
            (
                &Authentication::StandardWebhooks {
                    tolerance_seconds: 300,
                },
                vec![
                    ("webhook-id", "m".into()),
                    ("webhook-timestamp", "100".into()),
                    ("webhook-signature", "v2,abc".into()),
                ],
                "no `v1,` signature",
            ),
        ];
        for (scheme, headers, expected) in cases {
            let pairs: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            let err = scheme
                .verify_at(&secrets("hunter2-secret"), &request(&pairs, b"{}"), 100)
                .expect_err(expected)
                .to_string();
            assert!(err.contains(expected), "{err}");
            assert!(!err.contains("hunter2"), "{err}");
        }
        assert!(standard().check_secrets(&secrets("not base64!")).is_err());
        assert!(standard().check_secrets(&secrets(SW_SECRET)).is_ok());
    }

    #[test]
    fn configurations_name_their_scheme() {
        let parsed: Authentication = serde_json::from_value(serde_json::json!({
            "scheme": "hmac-sha256", "header": "X-PagerDuty-Signature", "prefix": "v1="
        }))
        .expect("hmac");
        assert!(matches!(
            parsed,
            Authentication::HmacSha256 {
                encoding: DigestEncoding::Hex,
                ..
            }
        ));
        let slack: Authentication =
            serde_json::from_value(serde_json::json!({"scheme": "slack"})).expect("slack");
        assert_eq!(
            slack,
            Authentication::Slack {
                tolerance_seconds: 300
            }
        );
        let unknown = serde_json::from_value::<Authentication>(
            serde_json::json!({"scheme": "token", "header": "x", "colour": 1}),
        );
        assert!(unknown.is_err());
    }
}
