//! Keeps expiring credentials valid. Each credential is renewed, when due (see
//! [`renew_at`]), by the plugin of an integration that uses it, through a probe process;
//! one renewal at a time, so never two for one credential. When a plugin cannot renew a
//! credential (a personal token), an operator is warned ahead of expiry; when renewal
//! fails, or the credential expires, the integrations using it are disabled with the
//! reason, an alert is logged and audited, and they come back when a working credential
//! is stored.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use age::secrecy::ExposeSecret;
use plugin_protocol::v1;

use crate::credentials::{CredentialInfo, Credentials, NewSecret, SecretBytes, renew_at};
use crate::desired::Desired;
use crate::integrations::{Integration, Integrations};
use crate::store::{AuditDraft, Store};
use plugin_kit::clock::now_ms;

const ACTOR: &str = "daemon:renewal";

/// The renewal loop's state.
#[derive(Debug)]
pub struct Renewer {
    credentials: Arc<Credentials>,
    integrations: Integrations,
    desired: Arc<Desired>,
    store: Store,
    /// (tenant, credential, expiry) already warned about.
    warned: Mutex<HashSet<(String, String, u64)>>,
}

enum Outcome {
    Renewed,
    Unsupported,
    Failed(String),
}

impl Renewer {
    pub fn new(
        credentials: Arc<Credentials>,
        integrations: Integrations,
        desired: Arc<Desired>,
        store: Store,
    ) -> Self {
        Self {
            credentials,
            integrations,
            desired,
            store,
            warned: Mutex::default(),
        }
    }

    /// Looks every `interval` until `stop` turns true.
    pub async fn run(
        self: Arc<Self>,
        interval: Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(interval) => self.tick().await,
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        return;
                    }
                }
            }
        }
    }

    /// One pass over all expiring credentials.
    pub async fn tick(&self) {
        let credentials = match self.credentials.list_all() {
            Ok(list) => list,
            Err(err) => {
                tracing::error!(error = %err, "cannot list credentials for renewal");
                return;
            }
        };
        let now = now_ms();
        for info in credentials {
            let Some(expires) = info.expires_ms else {
                continue;
            };
            if now < renew_at(info.updated_ms, expires) {
                continue;
            }
            let users = self
                .integrations
                .using_credential(&info.tenant, &info.name)
                .unwrap_or_default();
            let outcome = match users.iter().find(|i| i.enabled) {
                Some(owner) => self.renew(owner, &info).await,
                None => Outcome::Unsupported,
            };
            match outcome {
                Outcome::Renewed => {
                    tracing::info!(tenant = %info.tenant, credential = %info.name, "credential renewed");
                    for integration in &users {
                        self.desired
                            .manager()
                            .restart_instance(&crate::names::InstanceKey::new(
                                &info.tenant,
                                &integration.name,
                            ))
                            .await;
                    }
                }
                Outcome::Unsupported if now < expires => self.warn_once(&info, expires),
                Outcome::Unsupported => {
                    self.fail(
                        &info,
                        &format!(
                            "credential `{}` expired and could not be renewed",
                            info.name
                        ),
                    )
                    .await
                }
                Outcome::Failed(why) => {
                    self.fail(
                        &info,
                        &format!("credential `{}` renewal failed: {why}", info.name),
                    )
                    .await
                }
            }
        }
    }

    async fn renew(&self, owner: &Integration, info: &CredentialInfo) -> Outcome {
        let mut probe = match self.desired.manager().probe(&owner.plugin).await {
            Ok(probe) => probe,
            Err(why) => {
                return Outcome::Failed(format!("cannot start plugin `{}`: {why}", owner.plugin));
            }
        };
        let outcome = async {
            let current =
                match self
                    .credentials
                    .read(&info.tenant, &info.name, ACTOR, "renew before expiry")
                {
                    Ok(current) => current,
                    Err(err) => return Outcome::Failed(err.to_string()),
                };
            let request = v1::RenewCredentialRequest {
                tenant: info.tenant.clone(),
                integration: owner.name.clone(),
                config_json: owner.current().config.to_string(),
                credential: Some(v1::Credential {
                    name: info.name.clone(),
                    kind: current.kind.clone(),
                    secret: current.secret.expose_secret().as_bytes().to_vec(),
                }),
            };
            let response = match probe.renew(request).await {
                Ok(response) => response,
                Err(status) if status.code() == tonic::Code::Unimplemented => {
                    return Outcome::Unsupported;
                }
                Err(status) => return Outcome::Failed(status.message().to_owned()),
            };
            let new = NewSecret {
                kind: info.kind.clone(),
                raw: SecretBytes::new(response.secret),
                expires_ms: (response.expires_unix_ms > 0).then_some(response.expires_unix_ms),
                rotate: false,
            };
            match self.credentials.set(&info.tenant, &info.name, &new, ACTOR) {
                Ok(_) => Outcome::Renewed,
                Err(err) => Outcome::Failed(format!("the renewed secret was refused: {err}")),
            }
        }
        .await;
        probe.stop().await;
        outcome
    }

    fn warn_once(&self, info: &CredentialInfo, expires: u64) {
        let key = (info.tenant.clone(), info.name.clone(), expires);
        if !self
            .warned
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key)
        {
            return;
        }
        let detail = format!(
            "expires at {expires} (Unix ms) and no plugin can renew it: store a new one before then"
        );
        tracing::warn!(alert = true, tenant = %info.tenant, credential = %info.name, "{detail}");
        let audit = AuditDraft::ok(
            Some(&info.tenant),
            ACTOR,
            "credential.expiring",
            &format!("credential:{}", info.name),
            detail,
        );
        if let Err(err) = self.store.audit(&audit) {
            tracing::error!(error = %err, "cannot audit a credential expiry warning");
        }
    }

    async fn fail(&self, info: &CredentialInfo, reason: &str) {
        match self.integrations.disable_for_credential(
            &info.tenant,
            &info.name,
            None,
            reason,
            ACTOR,
        ) {
            Ok(disabled) if disabled.is_empty() => {}
            Ok(disabled) => {
                tracing::error!(alert = true, tenant = %info.tenant, credential = %info.name, integrations = ?disabled, "{reason}; integrations disabled");
                let audit = AuditDraft::ok(
                    Some(&info.tenant),
                    ACTOR,
                    "alert.credential",
                    &format!("credential:{}", info.name),
                    format!("{reason}; disabled: {}", disabled.join(", ")),
                );
                if let Err(err) = self.store.audit(&audit) {
                    tracing::error!(error = %err, "cannot audit a credential alert");
                }
                self.desired.apply().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot disable integrations after a credential failure")
            }
        }
    }
}
