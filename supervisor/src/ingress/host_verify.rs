//! Verifying a webhook delivery in the daemon, for one it must keep while the plugin is
//! down (or failing on the call). Nothing a sender posts is stored unauthenticated: the
//! daemon checks the delivery with the authentication the plugin reported for the
//! integration at its last `Configure`, else the scheme the plugin's manifest declares
//! (`[webhook]`; both through `plugin_kit::signature`, the code the plugins use) and the
//! integration's `webhook-secret` credential (read like any other: audited). A delivery
//! it cannot verify (no declared scheme, no secret, an operator's instance without an
//! integration record) is refused with 503 and `Retry-After`, and the sender delivers
//! again. What is kept carries no secret: the headers that hold one are dropped, and the
//! plugin receives it marked `host_verified`.

use std::sync::Arc;

use plugin_kit::signature::{HostScheme, WebhookSecrets};
use plugin_protocol::v1;

use crate::credentials::Credentials;
use crate::integrations::Integrations;

/// What the daemon made of a delivery it must keep.
#[derive(Debug)]
pub enum HostVerdict {
    /// Authentic: the delivery as it may be stored.
    Keep(v1::WebhookRequest),
    /// Not authentic (a wrong or missing signature).
    Refused(String),
    /// The daemon cannot tell: it is not stored.
    Unverifiable(String),
}

/// Headers never stored, whatever the scheme: they carry credentials.
const CREDENTIAL_HEADERS: &[&str] = &["authorization", "proxy-authorization", "cookie"];

/// Where the daemon finds an integration's webhook secret.
#[derive(Debug, Clone)]
pub struct HostVerifier {
    pub integrations: Integrations,
    pub credentials: Option<Arc<Credentials>>,
}

impl HostVerifier {
    /// Verifies `delivery` for `tenant`'s `integration` with `scheme` (blocking: it reads
    /// and decrypts the secret).
    pub fn verify(
        &self,
        tenant: &str,
        integration: &str,
        scheme: Option<&HostScheme>,
        mut delivery: v1::WebhookRequest,
    ) -> HostVerdict {
        let Some(scheme) = scheme else {
            return HostVerdict::Unverifiable(
                "the plugin declares no webhook authentication the daemon can check".into(),
            );
        };
        let secrets = match self.secrets(tenant, integration) {
            Ok(secrets) => secrets,
            Err(why) => return HostVerdict::Unverifiable(why),
        };
        if let Err(err) = scheme.verify(&secrets, &delivery) {
            return HostVerdict::Refused(err.to_string());
        }
        let secret_headers = scheme.secret_headers();
        delivery.headers.retain(|header| {
            let name = header.name.as_str();
            !CREDENTIAL_HEADERS
                .iter()
                .chain(secret_headers.iter())
                .any(|secret| secret.eq_ignore_ascii_case(name))
        });
        delivery.host_verified = true;
        HostVerdict::Keep(delivery)
    }

    /// The integration's webhook secret: the `webhook-secret` credential its
    /// configuration names.
    fn secrets(&self, tenant: &str, integration: &str) -> Result<WebhookSecrets, String> {
        let credentials = self
            .credentials
            .as_ref()
            .ok_or("no master key is configured, so no webhook secret is stored")?;
        let record = self
            .integrations
            .get(tenant, integration)
            .map_err(|e| e.to_string())?
            .ok_or("the instance has no integration record to name a webhook secret")?;
        let refs = crate::integrations::credential_refs(&record.current().config)
            .map_err(|e| e.to_string())?;
        let kinds = credentials.list(tenant).map_err(|e| e.to_string())?;
        let name = refs
            .iter()
            .find(|r| {
                kinds
                    .iter()
                    .any(|info| info.name == r.name && info.kind == "webhook-secret")
            })
            .map(|r| r.name.clone())
            .ok_or("the integration names no webhook-secret credential")?;
        let secret = credentials
            .read(
                tenant,
                &name,
                &format!("daemon:webhook/{integration}"),
                "verify a webhook delivery kept while the plugin is down",
            )
            .map_err(|e| e.to_string())?;
        use secrecy::ExposeSecret;
        WebhookSecrets::from_credential(&v1::Credential {
            name,
            kind: secret.kind.clone(),
            secret: secret.secret.expose_secret().as_bytes().to_vec(),
        })
        .map_err(|e| e.to_string())
    }
}
