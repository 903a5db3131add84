//! The credential manager. A master key wraps one age identity per tenant; each
//! credential is an age ciphertext to its tenant's recipient of an envelope naming its
//! tenant and name, checked on decrypt, so a ciphertext moved to another tenant or name
//! does not decrypt. Plaintext exists only in `secrecy` types; every read, change and
//! failed access is audited, and a read whose audit record cannot be written fails.

mod kinds;
mod master;
mod plugin_kinds;
mod renewal;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use age::secrecy::{ExposeSecret, SecretString};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};

use crate::store::{AuditDraft, Batch, Store, StoreError, Table};
pub use kinds::{Kind, MAX_SECRET_BYTES, SecretError, check_untrusted_secret, parse_time_ms};
pub use master::{
    MasterKeyError, MasterKeySource, MasterSecret, generate_file as generate_master_key_file,
    load as load_master_secret,
};
pub use plugin_kinds::{PluginKinds, SecretSchema};
use plugin_kit::clock::now_ms;
pub use renewal::renew_at;

/// Errors from the credential manager. None of them carries secret material.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error(transparent)]
    MasterKey(#[from] MasterKeyError),
    #[error(
        "the master key (public key {found}) is not the one this database was set up with ({expected}); refusing to start rather than touch any data"
    )]
    WrongMasterKey { expected: String, found: String },
    #[error("the master passphrase does not unlock this database's master key")]
    WrongPassphrase,
    #[error(
        "no master key is configured (credentials.master_key): credentials cannot be stored or read"
    )]
    NoMasterKey,
    #[error("`{kind}` is not a credential kind ({known})")]
    UnknownKind { kind: String, known: String },
    #[error("`{0}` is not a valid credential name: use 1-64 letters, digits, `-` or `_`")]
    BadName(String),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error("credential `{name}` of tenant `{tenant}` does not exist")]
    Unknown { tenant: String, name: String },
    #[error("credential `{name}` of tenant `{tenant}` cannot be decrypted: {why}")]
    Undecryptable {
        tenant: String,
        name: String,
        why: &'static str,
    },
    #[error("the key of tenant `{0}` cannot be unwrapped with the master key")]
    TenantKey(String),
    #[error("encryption failed: {0}")]
    Encrypt(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A credential's metadata: everything `credentials list` shows. Never the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialInfo {
    pub tenant: String,
    pub name: String,
    pub kind: String,
    pub created_ms: u64,
    pub updated_ms: u64,
    pub expires_ms: Option<u64>,
    pub last_used_ms: Option<u64>,
    pub key_version: u32,
}

/// The stored record: metadata and the ciphertext.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CredentialRecord {
    #[serde(flatten)]
    info: CredentialInfo,
    ciphertext: String,
}

/// What is encrypted: the secret bound to where it belongs.
#[derive(Serialize, Deserialize)]
struct Envelope {
    tenant: String,
    name: String,
    kind: String,
    secret: serde_json::Value,
}

/// A decrypted credential. Its `Debug` shows no secret.
pub struct SecretCredential {
    pub tenant: String,
    pub name: String,
    pub kind: String,
    /// The secret as JSON text (a string for raw kinds; `{"current","previous"}` for
    /// webhook secrets; the object as stored for the others).
    pub secret: SecretString,
}

impl std::fmt::Debug for SecretCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SecretCredential({}/{} {}, <redacted>)",
            self.tenant, self.name, self.kind
        )
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TenantKeyRecord {
    recipient: String,
    wrapped: String,
    version: u32,
    created_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct MasterRecord {
    recipient: String,
    /// The master identity wrapped with scrypt, when it comes from a passphrase.
    passphrase_wrapped: Option<String>,
}

/// An unwrapped tenant key, cached in memory.
struct TenantKey {
    version: u32,
    identity: age::x25519::Identity,
    recipient: age::x25519::Recipient,
}

const MASTER_KEY: &[u8] = b"\0master";

fn tenant_key_key(tenant: &str) -> Vec<u8> {
    format!("tenant\0{tenant}").into_bytes()
}

fn credential_key(tenant: &str, name: &str) -> Vec<u8> {
    format!("{tenant}\0{name}").into_bytes()
}

fn corrupt(key: &str, err: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        key: key.to_owned(),
        reason: err.to_string(),
    }
}

/// The credential manager.
pub struct Credentials {
    store: Store,
    master: RwLock<age::x25519::Identity>,
    tenant_keys: Mutex<HashMap<String, Arc<TenantKey>>>,
    /// The kinds the installed plugins declare, beside the built-in ones.
    plugin_kinds: Arc<PluginKinds>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").finish_non_exhaustive()
    }
}

impl Credentials {
    /// Loads the master key and checks it against the database; the first use records
    /// its public key (and, for a passphrase, the scrypt-wrapped master identity).
    pub fn open(
        store: Store,
        source: &MasterKeySource,
        generate_if_missing: bool,
    ) -> Result<Self, CredentialError> {
        Self::open_with_secret(store, master::load(source, generate_if_missing)?)
    }

    /// [`Credentials::open`] with a master secret already loaded: the daemon reads the key
    /// before it creates or opens the state database, so a missing key changes nothing.
    pub fn open_with_secret(store: Store, secret: MasterSecret) -> Result<Self, CredentialError> {
        let stored: Option<MasterRecord> = store
            .get(Table::TenantKeys, MASTER_KEY)?
            .map(|raw| serde_json::from_slice(&raw).map_err(|e| corrupt("master", e)))
            .transpose()?;
        let identity = match (secret, stored) {
            (MasterSecret::Identity(identity), Some(record)) => {
                let found = identity.to_public().to_string();
                if found != record.recipient {
                    return Err(CredentialError::WrongMasterKey {
                        expected: record.recipient,
                        found,
                    });
                }
                identity
            }
            (MasterSecret::Passphrase(passphrase), Some(record)) => {
                let wrapped = record
                    .passphrase_wrapped
                    .ok_or(CredentialError::WrongPassphrase)?;
                let wrapped = BASE64.decode(wrapped).map_err(|e| corrupt("master", e))?;
                let plain = age::decrypt(&age::scrypt::Identity::new(passphrase), &wrapped)
                    .map_err(|_| CredentialError::WrongPassphrase)?;
                parse_identity(&plain).ok_or(CredentialError::WrongPassphrase)?
            }
            (secret, None) => {
                let (identity, passphrase_wrapped) = match secret {
                    MasterSecret::Identity(identity) => (identity, None),
                    MasterSecret::Passphrase(passphrase) => {
                        let identity = age::x25519::Identity::generate();
                        let recipient = age::scrypt::Recipient::new(passphrase);
                        let wrapped = age::encrypt(
                            &recipient,
                            identity.to_string().expose_secret().as_bytes(),
                        )
                        .map_err(|e| CredentialError::Encrypt(e.to_string()))?;
                        (identity, Some(BASE64.encode(wrapped)))
                    }
                };
                let record = MasterRecord {
                    recipient: identity.to_public().to_string(),
                    passphrase_wrapped,
                };
                let value = serde_json::to_vec(&record).map_err(|e| corrupt("master", e))?;
                let audit = AuditDraft::ok(
                    None,
                    "daemon",
                    "credentials.master_init",
                    "master-key",
                    format!("public key {}", record.recipient),
                );
                let _turn = store.writer();
                store.commit(
                    &Batch::new().put(Table::TenantKeys, MASTER_KEY, value),
                    &audit,
                )?;
                identity
            }
        };
        Ok(Self {
            store,
            master: RwLock::new(identity),
            tenant_keys: Mutex::default(),
            plugin_kinds: Arc::default(),
        })
    }

    /// Checks secrets of plugin-declared kinds against `kinds`, the catalog the
    /// registry keeps current.
    pub fn with_plugin_kinds(mut self, kinds: Arc<PluginKinds>) -> Self {
        self.plugin_kinds = kinds;
        self
    }

    /// A secret of `kind` checked against its kind: a built-in one, or one a plugin
    /// declares. Returns the kind's built-in form, if it is one.
    fn parse_secret(
        &self,
        kind: &str,
        raw: &[u8],
    ) -> Result<(Option<Kind>, kinds::Parsed), CredentialError> {
        if let Some(built_in) = Kind::parse(kind) {
            return Ok((Some(built_in), kinds::parse(built_in, raw)?));
        }
        match self.plugin_kinds.parse(kind, raw) {
            Some(parsed) => Ok((None, parsed?)),
            None => {
                let known = Kind::ALL
                    .iter()
                    .map(|k| k.as_str().to_owned())
                    .chain(self.plugin_kinds.names())
                    .collect::<Vec<_>>()
                    .join(", ");
                Err(CredentialError::UnknownKind {
                    kind: kind.to_owned(),
                    known,
                })
            }
        }
    }

    fn master(&self) -> std::sync::RwLockReadGuard<'_, age::x25519::Identity> {
        self.master
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The master key's public key: what a tenant's key is wrapped for.
    pub fn master_recipient(&self) -> String {
        self.master().to_public().to_string()
    }

    /// Whether `tenant` has a key (it has had credentials).
    pub fn has_tenant_key(&self, tenant: &str) -> Result<bool, CredentialError> {
        Ok(self
            .store
            .contains(Table::TenantKeys, &tenant_key_key(tenant))?)
    }

    /// `tenant`'s key record wrapped for another node's master key (`recipient`), for
    /// a move: the credentials' ciphertexts, encrypted to the tenant's key, travel as
    /// they are. `None` when the tenant has no key (no credentials).
    pub fn tenant_key_for(
        &self,
        tenant: &str,
        recipient: &str,
    ) -> Result<Option<Vec<u8>>, CredentialError> {
        let Some(raw) = self.store.get(Table::TenantKeys, &tenant_key_key(tenant))? else {
            return Ok(None);
        };
        let record: TenantKeyRecord =
            serde_json::from_slice(&raw).map_err(|e| corrupt(tenant, e))?;
        let key = self.unwrap_tenant_key(tenant, &record)?;
        let recipient: age::x25519::Recipient = recipient.parse().map_err(|_| {
            CredentialError::Encrypt(format!("{recipient:?} is not an age public key"))
        })?;
        let wrapped = age::encrypt(
            &recipient,
            key.identity.to_string().expose_secret().as_bytes(),
        )
        .map_err(|e| CredentialError::Encrypt(e.to_string()))?;
        let moved = TenantKeyRecord {
            wrapped: BASE64.encode(wrapped),
            ..record
        };
        Ok(Some(
            serde_json::to_vec(&moved).map_err(|e| corrupt(tenant, e))?,
        ))
    }

    /// The write that keeps a tenant key another node wrapped for this one, checked
    /// to unwrap with this node's master key first.
    pub fn adopt_tenant_key(&self, tenant: &str, raw: &[u8]) -> Result<Batch, CredentialError> {
        let record: TenantKeyRecord =
            serde_json::from_slice(raw).map_err(|e| corrupt(tenant, e))?;
        let key = self.unwrap_tenant_key(tenant, &record)?;
        if key.recipient.to_string() != record.recipient {
            return Err(CredentialError::TenantKey(tenant.to_owned()));
        }
        self.forget_tenant(tenant);
        Ok(Batch::new().put(Table::TenantKeys, tenant_key_key(tenant), raw.to_vec()))
    }

    /// The tenant's key, from the cache or unwrapped from the database.
    fn tenant_key(&self, tenant: &str) -> Result<Option<Arc<TenantKey>>, CredentialError> {
        if let Some(key) = self
            .tenant_keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(tenant)
        {
            return Ok(Some(key.clone()));
        }
        let Some(raw) = self.store.get(Table::TenantKeys, &tenant_key_key(tenant))? else {
            return Ok(None);
        };
        let record: TenantKeyRecord =
            serde_json::from_slice(&raw).map_err(|e| corrupt(tenant, e))?;
        let key = Arc::new(self.unwrap_tenant_key(tenant, &record)?);
        self.tenant_keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(tenant.to_owned(), key.clone());
        Ok(Some(key))
    }

    fn unwrap_tenant_key(
        &self,
        tenant: &str,
        record: &TenantKeyRecord,
    ) -> Result<TenantKey, CredentialError> {
        let wrapped = BASE64
            .decode(&record.wrapped)
            .map_err(|_| CredentialError::TenantKey(tenant.to_owned()))?;
        let plain = age::decrypt(&*self.master(), &wrapped)
            .map_err(|_| CredentialError::TenantKey(tenant.to_owned()))?;
        let identity =
            parse_identity(&plain).ok_or_else(|| CredentialError::TenantKey(tenant.to_owned()))?;
        let recipient = identity.to_public();
        Ok(TenantKey {
            version: record.version,
            identity,
            recipient,
        })
    }

    /// A new tenant key wrapped for `master`, as a record.
    fn new_tenant_key(
        &self,
        version: u32,
    ) -> Result<(TenantKey, TenantKeyRecord), CredentialError> {
        let identity = age::x25519::Identity::generate();
        let recipient = identity.to_public();
        let wrapped = age::encrypt(
            &self.master().to_public(),
            identity.to_string().expose_secret().as_bytes(),
        )
        .map_err(|e| CredentialError::Encrypt(e.to_string()))?;
        let record = TenantKeyRecord {
            recipient: recipient.to_string(),
            wrapped: BASE64.encode(wrapped),
            version,
            created_ms: now_ms(),
        };
        Ok((
            TenantKey {
                version,
                identity,
                recipient,
            },
            record,
        ))
    }

    fn encrypt(&self, key: &TenantKey, envelope: &Envelope) -> Result<String, CredentialError> {
        let plain = SecretString::from(
            serde_json::to_string(envelope).map_err(|e| CredentialError::Encrypt(e.to_string()))?,
        );
        let ciphertext = age::encrypt(&key.recipient, plain.expose_secret().as_bytes())
            .map_err(|e| CredentialError::Encrypt(e.to_string()))?;
        Ok(BASE64.encode(ciphertext))
    }

    fn decrypt(
        &self,
        key: &TenantKey,
        record: &CredentialRecord,
    ) -> Result<Envelope, CredentialError> {
        let undecryptable = |why| CredentialError::Undecryptable {
            tenant: record.info.tenant.clone(),
            name: record.info.name.clone(),
            why,
        };
        let ciphertext = BASE64
            .decode(&record.ciphertext)
            .map_err(|_| undecryptable("the ciphertext is corrupt"))?;
        let plain = age::decrypt(&key.identity, &ciphertext).map_err(|_| {
            undecryptable("the ciphertext is corrupt or not encrypted to this tenant")
        })?;
        let plain = SecretString::from(
            String::from_utf8(plain).map_err(|_| undecryptable("the plaintext is corrupt"))?,
        );
        let envelope: Envelope = serde_json::from_str(plain.expose_secret())
            .map_err(|_| undecryptable("the plaintext is corrupt"))?;
        if envelope.tenant != record.info.tenant || envelope.name != record.info.name {
            return Err(undecryptable(
                "it belongs to another tenant or name (moved ciphertext)",
            ));
        }
        Ok(envelope)
    }

    fn record(
        &self,
        tenant: &str,
        name: &str,
    ) -> Result<Option<CredentialRecord>, CredentialError> {
        match self
            .store
            .get(Table::Credentials, &credential_key(tenant, name))?
        {
            None => Ok(None),
            Some(raw) => Ok(Some(
                serde_json::from_slice(&raw).map_err(|e| corrupt(name, e))?,
            )),
        }
    }

    /// The tenant's credentials, metadata only.
    pub fn list(&self, tenant: &str) -> Result<Vec<CredentialInfo>, CredentialError> {
        self.store
            .scan(Table::Credentials, format!("{tenant}\0").as_bytes())?
            .into_iter()
            .map(|(key, raw)| {
                serde_json::from_slice::<CredentialRecord>(&raw)
                    .map(|r| r.info)
                    .map_err(|e| corrupt(&String::from_utf8_lossy(&key), e).into())
            })
            .collect()
    }

    /// Every tenant's credentials, metadata only.
    pub fn list_all(&self) -> Result<Vec<CredentialInfo>, CredentialError> {
        self.store
            .scan(Table::Credentials, b"")?
            .into_iter()
            .map(|(key, raw)| {
                serde_json::from_slice::<CredentialRecord>(&raw)
                    .map(|r| r.info)
                    .map_err(|e| corrupt(&String::from_utf8_lossy(&key), e).into())
            })
            .collect()
    }

    /// Stores (creates or replaces) a credential from its raw secret. A rotation keeps a
    /// webhook secret's current value as `previous` and requires the credential to exist.
    pub fn set(
        &self,
        tenant: &str,
        name: &str,
        new: &NewSecret,
        actor: &str,
    ) -> Result<CredentialInfo, CredentialError> {
        if !crate::names::is_name(name) {
            return Err(CredentialError::BadName(name.to_owned()));
        }
        let rotate = new.rotate;
        let expires_ms = new.expires_ms;
        let (built_in, parsed) = self.parse_secret(&new.kind, new.raw.expose())?;
        let _turn = self.store.writer();
        let existing = self.record(tenant, name)?;
        if rotate && existing.is_none() {
            return Err(CredentialError::Unknown {
                tenant: tenant.to_owned(),
                name: name.to_owned(),
            });
        }
        let mut batch = Batch::new();
        let key = match self.tenant_key(tenant)? {
            Some(key) => key,
            None => {
                let (key, record) = self.new_tenant_key(1)?;
                let value = serde_json::to_vec(&record).map_err(|e| corrupt(tenant, e))?;
                batch = batch.put(Table::TenantKeys, tenant_key_key(tenant), value);
                Arc::new(key)
            }
        };
        let mut secret = parsed.value;
        if built_in == Some(Kind::WebhookSecret) {
            let previous = match (&existing, rotate) {
                (Some(record), true) => {
                    let old = self.decrypt(&key, record)?;
                    old.secret.get("current").cloned()
                }
                _ => None,
            };
            secret = serde_json::json!({ "current": secret, "previous": previous });
        }
        let now = now_ms();
        let info = CredentialInfo {
            tenant: tenant.to_owned(),
            name: name.to_owned(),
            kind: new.kind.clone(),
            created_ms: existing.as_ref().map_or(now, |r| r.info.created_ms),
            updated_ms: now,
            expires_ms: expires_ms.or(parsed.expires_ms),
            last_used_ms: existing.as_ref().and_then(|r| r.info.last_used_ms),
            key_version: key.version,
        };
        let envelope = Envelope {
            tenant: tenant.to_owned(),
            name: name.to_owned(),
            kind: new.kind.clone(),
            secret,
        };
        let record = CredentialRecord {
            info: info.clone(),
            ciphertext: self.encrypt(&key, &envelope)?,
        };
        let value = serde_json::to_vec(&record).map_err(|e| corrupt(name, e))?;
        batch = batch.put(Table::Credentials, credential_key(tenant, name), value);
        let action = match (rotate, existing.is_some()) {
            (true, _) => "credential.rotate",
            (false, true) => "credential.update",
            (false, false) => "credential.create",
        };
        let audit = AuditDraft::ok(
            Some(tenant),
            actor,
            action,
            &format!("credential:{name}"),
            format!("kind {}", new.kind),
        );
        self.store.commit(&batch, &audit)?;
        if !self
            .tenant_keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains_key(tenant)
        {
            self.tenant_keys
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(tenant.to_owned(), key);
        }
        Ok(info)
    }

    /// Deletes a credential.
    pub fn delete(
        &self,
        tenant: &str,
        name: &str,
        actor: &str,
    ) -> Result<CredentialInfo, CredentialError> {
        let _turn = self.store.writer();
        let record = self
            .record(tenant, name)?
            .ok_or_else(|| CredentialError::Unknown {
                tenant: tenant.to_owned(),
                name: name.to_owned(),
            })?;
        let audit = AuditDraft::ok(
            Some(tenant),
            actor,
            "credential.delete",
            &format!("credential:{name}"),
            "",
        );
        self.store.commit(
            &Batch::new().delete(Table::Credentials, credential_key(tenant, name)),
            &audit,
        )?;
        Ok(record.info)
    }

    /// Decrypts a credential for `reader` (a plugin instance or an admin principal),
    /// recording who and why first: no audit record, no secret.
    pub fn read(
        &self,
        tenant: &str,
        name: &str,
        reader: &str,
        why: &str,
    ) -> Result<SecretCredential, CredentialError> {
        let _turn = self.store.writer();
        let target = format!("credential:{name}");
        let Some(mut record) = self.record(tenant, name)? else {
            let audit = AuditDraft::ok(
                Some(tenant),
                reader,
                "credential.read",
                &target,
                format!("{why}: no such credential"),
            )
            .with_outcome("failed");
            self.store.commit(&Batch::new(), &audit)?;
            return Err(CredentialError::Unknown {
                tenant: tenant.to_owned(),
                name: name.to_owned(),
            });
        };
        let decrypted = self
            .tenant_key(tenant)?
            .ok_or_else(|| CredentialError::TenantKey(tenant.to_owned()))
            .and_then(|key| self.decrypt(&key, &record));
        let envelope = match decrypted {
            Ok(envelope) => envelope,
            Err(err) => {
                let audit = AuditDraft::ok(
                    Some(tenant),
                    reader,
                    "credential.read",
                    &target,
                    format!("{why}: {err}"),
                )
                .with_outcome("failed");
                self.store.commit(&Batch::new(), &audit)?;
                return Err(err);
            }
        };
        record.info.last_used_ms = Some(now_ms());
        let value = serde_json::to_vec(&record).map_err(|e| corrupt(name, e))?;
        let audit = AuditDraft::ok(Some(tenant), reader, "credential.read", &target, why);
        self.store.commit(
            &Batch::new().put(Table::Credentials, credential_key(tenant, name), value),
            &audit,
        )?;
        let secret = SecretString::from(envelope.secret.to_string());
        Ok(SecretCredential {
            tenant: envelope.tenant,
            name: envelope.name,
            kind: envelope.kind,
            secret,
        })
    }

    /// Decrypts without auditing or touching the record: for benchmarks of the crypto path.
    #[doc(hidden)]
    pub fn decrypt_for_bench(
        &self,
        tenant: &str,
        name: &str,
    ) -> Result<SecretCredential, CredentialError> {
        let record = self
            .record(tenant, name)?
            .ok_or_else(|| CredentialError::Unknown {
                tenant: tenant.to_owned(),
                name: name.to_owned(),
            })?;
        let key = self
            .tenant_key(tenant)?
            .ok_or_else(|| CredentialError::TenantKey(tenant.to_owned()))?;
        let envelope = self.decrypt(&key, &record)?;
        Ok(SecretCredential {
            tenant: envelope.tenant,
            name: envelope.name,
            kind: envelope.kind,
            secret: SecretString::from(envelope.secret.to_string()),
        })
    }

    /// Replaces the tenant's key and re-encrypts its credentials, in one transaction.
    pub fn rotate_tenant_key(&self, tenant: &str, actor: &str) -> Result<u32, CredentialError> {
        let _turn = self.store.writer();
        let Some(old) = self.tenant_key(tenant)? else {
            return Err(CredentialError::TenantKey(tenant.to_owned()));
        };
        let (new, key_record) = self.new_tenant_key(old.version + 1)?;
        let value = serde_json::to_vec(&key_record).map_err(|e| corrupt(tenant, e))?;
        let mut batch = Batch::new().put(Table::TenantKeys, tenant_key_key(tenant), value);
        let mut count = 0;
        for (key, raw) in self
            .store
            .scan(Table::Credentials, format!("{tenant}\0").as_bytes())?
        {
            let mut record: CredentialRecord = serde_json::from_slice(&raw)
                .map_err(|e| corrupt(&String::from_utf8_lossy(&key), e))?;
            let envelope = self.decrypt(&old, &record)?;
            record.ciphertext = self.encrypt(&new, &envelope)?;
            record.info.key_version = new.version;
            batch = batch.put(
                Table::Credentials,
                key,
                serde_json::to_vec(&record).map_err(|e| corrupt(tenant, e))?,
            );
            count += 1;
        }
        let audit = AuditDraft::ok(
            Some(tenant),
            actor,
            "credentials.tenant_key_rotate",
            &format!("tenant:{tenant}"),
            format!(
                "version {}; {count} credential(s) re-encrypted",
                new.version
            ),
        );
        self.store.commit(&batch, &audit)?;
        self.tenant_keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(tenant.to_owned(), Arc::new(new));
        Ok(count)
    }

    /// Re-wraps every tenant key for a new master identity, in one transaction; the old
    /// master stays in use until the commit succeeds.
    pub fn rotate_master(
        &self,
        new_source: &MasterKeySource,
        actor: &str,
    ) -> Result<String, CredentialError> {
        let MasterSecret::Identity(new_master) = master::load(new_source, false)? else {
            return Err(CredentialError::MasterKey(MasterKeyError::BadSource(
                "passphrase-file: rotate to a key file".to_owned(),
            )));
        };
        let _turn = self.store.writer();
        let new_recipient = new_master.to_public();
        let record = MasterRecord {
            recipient: new_recipient.to_string(),
            passphrase_wrapped: None,
        };
        let mut batch = Batch::new().put(
            Table::TenantKeys,
            MASTER_KEY,
            serde_json::to_vec(&record).map_err(|e| corrupt("master", e))?,
        );
        let mut count = 0;
        for (key, raw) in self.store.scan(Table::TenantKeys, b"tenant\0")? {
            let mut tenant_record: TenantKeyRecord = serde_json::from_slice(&raw)
                .map_err(|e| corrupt(&String::from_utf8_lossy(&key), e))?;
            let tenant = String::from_utf8_lossy(&key["tenant\0".len()..]).into_owned();
            let plain = BASE64
                .decode(&tenant_record.wrapped)
                .ok()
                .and_then(|w| age::decrypt(&*self.master(), &w).ok())
                .ok_or_else(|| CredentialError::TenantKey(tenant.clone()))?;
            let plain = SecretString::from(
                String::from_utf8(plain).map_err(|_| CredentialError::TenantKey(tenant.clone()))?,
            );
            let wrapped = age::encrypt(&new_recipient, plain.expose_secret().as_bytes())
                .map_err(|e| CredentialError::Encrypt(e.to_string()))?;
            tenant_record.wrapped = BASE64.encode(wrapped);
            batch = batch.put(
                Table::TenantKeys,
                key,
                serde_json::to_vec(&tenant_record).map_err(|e| corrupt(&tenant, e))?,
            );
            count += 1;
        }
        let audit = AuditDraft::ok(
            None,
            actor,
            "credentials.master_rotate",
            "master-key",
            format!("public key {new_recipient}; {count} tenant key(s) re-wrapped"),
        );
        self.store.commit(&batch, &audit)?;
        *self
            .master
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = new_master;
        Ok(new_recipient.to_string())
    }

    /// The writes that crypto-shred a tenant: its key and its ciphertexts.
    pub fn delete_tenant_batch(&self, tenant: &str) -> Result<Batch, CredentialError> {
        let mut batch = Batch::new().delete(Table::TenantKeys, tenant_key_key(tenant));
        for (key, _) in self
            .store
            .scan(Table::Credentials, format!("{tenant}\0").as_bytes())?
        {
            batch = batch.delete(Table::Credentials, key);
        }
        Ok(batch)
    }

    /// Forgets a deleted tenant's cached key.
    pub fn forget_tenant(&self, tenant: &str) {
        self.tenant_keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(tenant);
    }
}

fn parse_identity(plain: &[u8]) -> Option<age::x25519::Identity> {
    let text = SecretString::from(String::from_utf8(plain.to_vec()).ok()?);
    text.expose_secret().trim().parse().ok()
}

/// A secret to store.
#[derive(Debug)]
pub struct NewSecret {
    pub kind: String,
    pub raw: SecretBytes,
    /// Expiry given by the operator (an OAuth2 `expires_at` in the secret also counts).
    pub expires_ms: Option<u64>,
    /// A rotation: the credential must exist; a webhook secret keeps its previous value.
    pub rotate: bool,
}

/// Secret bytes from stdin or a request; zeroed on drop, never printed.
pub struct SecretBytes(age::secrecy::SecretBox<Vec<u8>>);

impl SecretBytes {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(age::secrecy::SecretBox::new(Box::new(bytes)))
    }

    pub fn expose(&self) -> &[u8] {
        self.0.expose_secret()
    }
}

impl std::fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBytes(<redacted>)")
    }
}

#[cfg(test)]
mod tests;
