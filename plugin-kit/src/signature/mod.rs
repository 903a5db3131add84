//! Verifying signed webhook deliveries: an HMAC-SHA256 of the raw body, sent as
//! `sha256=<hex>` (GitHub's `X-Hub-Signature-256`, and the same scheme elsewhere), or a
//! shared secret presented as it is (a header, or the basic-auth password). Compared in
//! constant time. During a secret rotation both the current and the previous secret are
//! accepted, so no delivery is dropped while the sender switches.
//!
//! [`Authentication`] is the configurable form (HMAC in any header, Slack, Standard
//! Webhooks, tokens, HTTP Basic), chosen per integration by a plugin such as the generic
//! webhook plugin.
//!
//! [`Scheme`] is one core for both sides: a plugin verifies its deliveries with it, and
//! the host, reading the scheme from the plugin's manifest, verifies a delivery it must
//! keep while the plugin is down, so that nothing unauthenticated is ever stored.

mod schemes;

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

pub use schemes::{Authentication, DEFAULT_TOLERANCE_SECONDS, DigestEncoding};

/// The longest signature header looked at (`sha256=` and 64 hex digits, with room).
const MAX_HEADER: usize = 128;

/// Why a delivery's signature was refused. Messages say what was wrong with the
/// header, never anything of the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the delivery is not signed (no signature header)")]
    Missing,
    #[error("the signature header is malformed: {0}")]
    Malformed(&'static str),
    #[error("the signature does not match the body with the configured secret")]
    Mismatch,
    #[error("the delivery lacks the `{0}` header")]
    MissingHeader(String),
    #[error(
        "the delivery's `{header}` is {skew_seconds} s from now, outside the {tolerance_seconds} s replay window"
    )]
    Stale {
        header: String,
        skew_seconds: u64,
        tolerance_seconds: u64,
    },
}

/// Which secret verified the delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verified {
    Current,
    /// The previous secret: the sender has not switched yet.
    Previous,
}

/// A webhook secret and, during a rotation, the one before it.
#[derive(Debug)]
pub struct WebhookSecrets {
    pub current: SecretString,
    pub previous: Option<SecretString>,
}

/// Checks `sha256=<hex>` in `header` against `body` with the current, then the previous
/// secret.
pub fn verify_sha256(
    secrets: &WebhookSecrets,
    header: Option<&str>,
    body: &[u8],
) -> Result<Verified, SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    if header.len() > MAX_HEADER {
        return Err(SignatureError::Malformed(
            "longer than any sha256 signature",
        ));
    }
    let hex_digest = header
        .trim()
        .strip_prefix("sha256=")
        .ok_or(SignatureError::Malformed(
            "it does not start with `sha256=`",
        ))?;
    if hex_digest.len() != 64 {
        return Err(SignatureError::Malformed("the digest is not 64 hex digits"));
    }
    let expected =
        hex::decode(hex_digest).map_err(|_| SignatureError::Malformed("the digest is not hex"))?;
    try_secrets(secrets, |secret| {
        hmac_matches(secret.expose_secret().as_bytes(), &[body], &expected)
    })
}

/// `sha256=<hex>` of `body` keyed with `secret`: what a sender puts in the signature
/// header, for a plugin's tests and for services' own tools.
pub fn sign_sha256(secret: &[u8], body: &[u8]) -> String {
    format!("sha256={}", hex::encode(hmac(secret, &[body])))
}

/// The HMAC-SHA256 of `parts`, in order, under `key`.
fn hmac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    // HMAC takes keys of any length: `new_from_slice` cannot fail.
    Hmac::<Sha256>::new_from_slice(key)
        .map(|mut mac| {
            for part in parts {
                mac.update(part);
            }
            mac.finalize().into_bytes().to_vec()
        })
        .unwrap_or_default()
}

/// Whether the HMAC-SHA256 of `parts` under `key` is `digest`, compared in constant time.
fn hmac_matches(key: &[u8], parts: &[&[u8]], digest: &[u8]) -> bool {
    Hmac::<Sha256>::new_from_slice(key)
        .map(|mut mac| {
            for part in parts {
                mac.update(part);
            }
            mac.verify_slice(digest).is_ok()
        })
        .unwrap_or(false)
}

/// The current secret, then the previous one: which one `matches`, if any.
fn try_secrets(
    secrets: &WebhookSecrets,
    matches: impl Fn(&SecretString) -> bool,
) -> Result<Verified, SignatureError> {
    if matches(&secrets.current) {
        return Ok(Verified::Current);
    }
    if secrets.previous.as_ref().is_some_and(matches) {
        return Ok(Verified::Previous);
    }
    Err(SignatureError::Mismatch)
}

/// `username:password` of HTTP Basic authentication, decoded.
fn basic_credentials(request: &plugin_protocol::v1::WebhookRequest) -> Option<String> {
    use base64::Engine;
    let value = request.header("authorization")?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") || encoded.len() > 8192 {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    String::from_utf8(decoded).ok()
}

/// Checks a secret presented as it is (an EventBridge API destination's API-key header,
/// the password of HTTP basic authentication) against the current, then the previous
/// secret. Both sides are hashed first and the digests compared in constant time, so
/// neither the secret's bytes nor its length show in the timing.
pub fn verify_shared_secret(
    secrets: &WebhookSecrets,
    presented: Option<&str>,
) -> Result<Verified, SignatureError> {
    use sha2::Digest;
    use subtle::ConstantTimeEq;
    let presented = presented.ok_or(SignatureError::Missing)?;
    if presented.len() > MAX_SHARED_SECRET {
        return Err(SignatureError::Malformed(
            "longer than any configured secret",
        ));
    }
    let digest = Sha256::digest(presented.as_bytes());
    try_secrets(secrets, |secret| {
        bool::from(
            Sha256::digest(secret.expose_secret().as_bytes())
                .as_slice()
                .ct_eq(digest.as_slice()),
        )
    })
}

/// How the host verifies a delivery it keeps while the plugin cannot take it: with the
/// scheme the plugin's manifest declares for all its integrations (`[webhook]`), or with
/// the authentication the plugin reported for one integration at `Configure`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostScheme {
    Manifest(Scheme),
    Reported(Authentication),
}

impl HostScheme {
    /// Verifies `request` with `secrets` (current, then previous), as of now.
    pub fn verify(
        &self,
        secrets: &WebhookSecrets,
        request: &plugin_protocol::v1::WebhookRequest,
    ) -> Result<Verified, SignatureError> {
        match self {
            HostScheme::Manifest(scheme) => scheme.verify(secrets, request),
            HostScheme::Reported(authentication) => authentication.verify(secrets, request),
        }
    }

    /// The headers that carry the secret itself.
    pub fn secret_headers(&self) -> Vec<&str> {
        match self {
            HostScheme::Manifest(scheme) => scheme.secret_headers(),
            HostScheme::Reported(authentication) => authentication.secret_headers(),
        }
    }
}

/// The longest shared secret looked at.
const MAX_SHARED_SECRET: usize = 4096;

/// How a service authenticates its deliveries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scheme {
    /// `sha256=<hex>` of the body in `header`.
    HmacSha256 { header: String },
    /// The secret itself in `header`, or (with `basic_auth`) as the password of HTTP
    /// basic authentication.
    SharedSecret { header: String, basic_auth: bool },
}

impl Scheme {
    /// Verifies `request` with `secrets` (current, then previous).
    pub fn verify(
        &self,
        secrets: &WebhookSecrets,
        request: &plugin_protocol::v1::WebhookRequest,
    ) -> Result<Verified, SignatureError> {
        match self {
            Scheme::HmacSha256 { header } => {
                verify_sha256(secrets, request.header(header), &request.body)
            }
            Scheme::SharedSecret { header, basic_auth } => verify_shared_secret(
                secrets,
                presented_secret(request, header, *basic_auth).as_deref(),
            ),
        }
    }

    /// The headers that carry the secret itself, which nothing may store.
    pub fn secret_headers(&self) -> Vec<&str> {
        match self {
            Scheme::HmacSha256 { .. } => Vec::new(),
            Scheme::SharedSecret { header, basic_auth } => {
                let mut headers = vec![header.as_str()];
                if *basic_auth {
                    headers.push("authorization");
                }
                headers
            }
        }
    }
}

/// The secret a sender presented: `header`, else (with `basic_auth`) the password of
/// HTTP basic authentication.
pub fn presented_secret(
    request: &plugin_protocol::v1::WebhookRequest,
    header: &str,
    basic_auth: bool,
) -> Option<String> {
    if let Some(value) = request.header(header) {
        return Some(value.to_owned());
    }
    if !basic_auth {
        return None;
    }
    basic_credentials(request)?
        .split_once(':')
        .map(|(_, password)| password.to_owned())
}

/// Why a `webhook-secret` credential could not be read. Never quotes the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretFormatError {
    #[error("a webhook secret must be a `webhook-secret` credential, not `{0}`")]
    Kind(String),
    #[error("the webhook secret is not JSON")]
    NotJson,
    #[error("the webhook secret has no current value")]
    NoCurrent,
}

impl WebhookSecrets {
    /// Reads a `webhook-secret` credential as the credential manager sends it:
    /// `{"current", "previous"?}`, or a plain JSON string taken as the current secret.
    pub fn from_credential(
        credential: &plugin_protocol::v1::Credential,
    ) -> Result<Self, SecretFormatError> {
        if credential.kind != "webhook-secret" {
            return Err(SecretFormatError::Kind(credential.kind.clone()));
        }
        let value: serde_json::Value =
            serde_json::from_slice(&credential.secret).map_err(|_| SecretFormatError::NotJson)?;
        let text = |v: Option<&serde_json::Value>| {
            v.and_then(serde_json::Value::as_str)
                .filter(|s| !s.is_empty())
                .map(|s| SecretString::from(s.to_owned()))
        };
        let (current, previous) = match &value {
            serde_json::Value::String(_) => (text(Some(&value)), None),
            _ => (text(value.get("current")), text(value.get("previous"))),
        };
        Ok(Self {
            current: current.ok_or(SecretFormatError::NoCurrent)?,
            previous,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testing::webhook_request as request;

    #[test]
    fn schemes_verify_as_declared_and_name_the_headers_that_hold_secrets() {
        let secrets = WebhookSecrets {
            current: SecretString::from(SECRET.to_owned()),
            previous: None,
        };
        let hmac = Scheme::HmacSha256 {
            header: "x-hub-signature-256".into(),
        };
        assert!(
            hmac.verify(
                &secrets,
                &request(&[("X-Hub-Signature-256", SIGNATURE)], BODY)
            )
            .is_ok()
        );
        assert!(
            hmac.verify(
                &secrets,
                &request(&[("X-Hub-Signature-256", SIGNATURE)], b"Hello")
            )
            .is_err()
        );
        assert!(
            hmac.secret_headers().is_empty(),
            "a signature is not the secret"
        );

        let shared = Scheme::SharedSecret {
            header: "x-api-key".into(),
            basic_auth: true,
        };
        use base64::Engine;
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("sns:{SECRET}"))
        );
        assert!(
            shared
                .verify(&secrets, &request(&[("x-api-key", SECRET)], b""))
                .is_ok()
        );
        assert!(
            shared
                .verify(&secrets, &request(&[("authorization", &basic)], b""))
                .is_ok()
        );
        assert_eq!(
            shared.verify(&secrets, &request(&[], b"")),
            Err(SignatureError::Missing)
        );
        assert!(
            shared
                .verify(&secrets, &request(&[("x-api-key", "nope")], b""))
                .is_err()
        );
        assert_eq!(shared.secret_headers(), ["x-api-key", "authorization"]);
        let header_only = Scheme::SharedSecret {
            header: "x-api-key".into(),
            basic_auth: false,
        };
        assert_eq!(
            header_only.verify(&secrets, &request(&[("authorization", &basic)], b"")),
            Err(SignatureError::Missing)
        );
    }

    /// GitHub's published example ("Validating webhook deliveries").
    const SECRET: &str = "It's a Secret to Everybody";
    const BODY: &[u8] = b"Hello, World!";
    const SIGNATURE: &str =
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    fn secrets(current: &str, previous: Option<&str>) -> WebhookSecrets {
        WebhookSecrets {
            current: SecretString::from(current.to_owned()),
            previous: previous.map(|p| SecretString::from(p.to_owned())),
        }
    }

    #[test]
    fn githubs_test_vector_verifies_and_any_flipped_byte_does_not() {
        let good = secrets(SECRET, None);
        assert_eq!(
            verify_sha256(&good, Some(SIGNATURE), BODY),
            Ok(Verified::Current)
        );
        let mut body = BODY.to_vec();
        body[0] ^= 1;
        assert_eq!(
            verify_sha256(&good, Some(SIGNATURE), &body),
            Err(SignatureError::Mismatch)
        );
        let mut signature = SIGNATURE.to_owned();
        signature.replace_range(10..11, "0");
        assert_ne!(signature, SIGNATURE);
        assert_eq!(
            verify_sha256(&good, Some(&signature), BODY),
            Err(SignatureError::Mismatch)
        );
        let other = secrets("It's a Secret to Everybodz", None);
        assert_eq!(
            verify_sha256(&other, Some(SIGNATURE), BODY),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn the_previous_secret_verifies_during_a_rotation() {
        let rotating = secrets("the new secret", Some(SECRET));
        assert_eq!(
            verify_sha256(&rotating, Some(SIGNATURE), BODY),
            Ok(Verified::Previous)
        );
        let rotated = secrets("the new secret", None);
        assert_eq!(
            verify_sha256(&rotated, Some(SIGNATURE), BODY),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn shared_secrets_verify_current_then_previous_and_nothing_else() {
        let rotating = secrets("the new secret", Some("the old secret"));
        assert_eq!(
            verify_shared_secret(&rotating, Some("the new secret")),
            Ok(Verified::Current)
        );
        assert_eq!(
            verify_shared_secret(&rotating, Some("the old secret")),
            Ok(Verified::Previous)
        );
        for wrong in ["", "the new secreT", "the new secret ", "the"] {
            assert_eq!(
                verify_shared_secret(&rotating, Some(wrong)),
                Err(SignatureError::Mismatch),
                "{wrong:?}"
            );
        }
        assert_eq!(
            verify_shared_secret(&rotating, None),
            Err(SignatureError::Missing)
        );
        assert!(matches!(
            verify_shared_secret(&rotating, Some(&"x".repeat(100_000))),
            Err(SignatureError::Malformed(_))
        ));
    }

    #[test]
    fn webhook_secret_credentials_are_read_in_both_shapes() {
        let credential = |kind: &str, secret: &str| plugin_protocol::v1::Credential {
            name: "webhook_secret".into(),
            kind: kind.into(),
            secret: secret.as_bytes().to_vec(),
        };
        let both = WebhookSecrets::from_credential(&credential(
            "webhook-secret",
            r#"{"current":"new","previous":"old"}"#,
        ))
        .expect("object");
        assert_eq!(both.current.expose_secret(), "new");
        assert!(both.previous.is_some());
        let plain = WebhookSecrets::from_credential(&credential("webhook-secret", r#""only""#))
            .expect("string");
        assert!(plain.previous.is_none());
        assert_eq!(
            WebhookSecrets::from_credential(&credential("api-key", r#""hunter2""#))
                .expect_err("kind")
                .to_string(),
            "a webhook secret must be a `webhook-secret` credential, not `api-key`"
        );
        for bad in [
            "hunter2",
            r#"{"current":""}"#,
            r#"{"previous":"hunter2"}"#,
            "[]",
        ] {
            let err =
                WebhookSecrets::from_credential(&credential("webhook-secret", bad)).expect_err(bad);
            assert!(!err.to_string().contains("hunter2"));
        }
    }

    #[test]
    fn missing_malformed_and_hostile_headers_are_refused() {
        let good = secrets(SECRET, None);
        assert_eq!(
            verify_sha256(&good, None, BODY),
            Err(SignatureError::Missing)
        );
        for bad in [
            "",
            "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
            "sha1=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
            "sha256=757107",
            "sha256=zz7107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        ] {
            assert!(
                matches!(
                    verify_sha256(&good, Some(bad), BODY),
                    Err(SignatureError::Malformed(_))
                ),
                "{bad}"
            );
        }
        let huge = format!("sha256={}", "a".repeat(10_000));
        assert!(matches!(
            verify_sha256(&good, Some(&huge), BODY),
            Err(SignatureError::Malformed(_))
        ));
        let err = verify_sha256(&good, Some("sha256=nope"), BODY).expect_err("malformed");
        assert!(!err.to_string().contains(SECRET), "no secret in messages");
    }
}
