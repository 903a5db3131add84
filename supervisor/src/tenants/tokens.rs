//! Tenant tokens: `blt_<id>_<secret>`. The id finds the record; the secret is compared
//! as a SHA-256 hash in constant time.

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{TenantError, Tenants, corrupt};
use crate::store::{AuditDraft, Batch, Table};
use plugin_kit::clock::now_ms;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenScope {
    /// Manage the tenant's own integrations, credentials, flags; read its audit.
    Admin,
    /// Only post platform events to `/v1/events/{tenant}`.
    Ingest,
    /// Only read health and alerts (`GET /v1/health`, `/v1/alerts`, the dashboard): of
    /// its tenant, or of every tenant for a token issued to [`ALL_TENANTS`].
    Monitor,
}

/// The tenant of an operator's monitoring token, which reads every tenant's health. No
/// tenant can have this name (`*` is not a name character).
pub const ALL_TENANTS: &str = "*";

impl TokenScope {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "admin" => Some(Self::Admin),
            "ingest" => Some(Self::Ingest),
            "monitor" => Some(Self::Monitor),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Ingest => "ingest",
            Self::Monitor => "monitor",
        }
    }
}

impl TokenInfo {
    /// Whether this token may read `tenant`'s health and alerts.
    pub fn reads_health_of(&self, tenant: &str) -> bool {
        match self.scope {
            TokenScope::Monitor => self.tenant == ALL_TENANTS || self.tenant == tenant,
            TokenScope::Admin => self.tenant == tenant,
            TokenScope::Ingest => false,
        }
    }

    /// The tenant whose health it reads, `None` for every tenant.
    pub fn health_scope(&self) -> Option<&str> {
        (self.tenant != ALL_TENANTS).then_some(self.tenant.as_str())
    }
}

/// A stored token: never the token itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    pub id: String,
    pub tenant: String,
    pub scope: TokenScope,
    pub created_ms: u64,
    /// Hex SHA-256 of the secret part.
    secret_sha256: String,
}

/// A token just created: the only time its secret exists outside the caller.
#[derive(Debug)]
pub struct IssuedToken {
    pub info: TokenInfo,
    pub token: SecretString,
}

const PREFIX: &str = "blt_";

fn parse(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    (id.len() == 12 && id.bytes().all(|b| b.is_ascii_hexdigit()) && secret.len() == 64)
        .then_some((id, secret))
}

/// The id of an `Authorization: Bearer blt_<id>_<secret>` value, if it is one (the
/// secret unchecked): which token a request claims, to route it.
pub fn bearer_token_id(authorization: &str) -> Option<&str> {
    parse(authorization.strip_prefix("Bearer ")?).map(|(id, _)| id)
}

impl Tenants {
    /// Issues a token for `tenant`; audited as `actor`.
    pub fn create_token(
        &self,
        tenant: &str,
        scope: TokenScope,
        actor: &str,
    ) -> Result<IssuedToken, TenantError> {
        let _turn = self.store.writer();
        if tenant == ALL_TENANTS {
            if scope != TokenScope::Monitor {
                return Err(TenantError::AllTenantsScope);
            }
        } else {
            self.require(tenant)?;
        }
        let id = hex::encode(rand::random::<[u8; 6]>());
        let secret = hex::encode(rand::random::<[u8; 32]>());
        let info = TokenInfo {
            id: id.clone(),
            tenant: tenant.to_owned(),
            scope,
            created_ms: now_ms(),
            secret_sha256: hex::encode(Sha256::digest(secret.as_bytes())),
        };
        let value = serde_json::to_vec(&info).map_err(|e| corrupt(&id, e))?;
        let audit = AuditDraft::ok(
            (tenant != ALL_TENANTS).then_some(tenant),
            actor,
            "token.create",
            &format!("token:{id}"),
            format!("scope {}", scope.as_str()),
        );
        self.store.commit(
            &Batch::new().put(Table::Tokens, id.as_bytes(), value),
            &audit,
        )?;
        Ok(IssuedToken {
            info,
            token: SecretString::from(format!("{PREFIX}{id}_{secret}")),
        })
    }

    /// The tenant's tokens (without secrets).
    pub fn tokens(&self, tenant: &str) -> Result<Vec<TokenInfo>, TenantError> {
        let mut out = Vec::new();
        for (key, raw) in self.store.scan(Table::Tokens, b"")? {
            let info: TokenInfo = serde_json::from_slice(&raw)
                .map_err(|e| corrupt(&String::from_utf8_lossy(&key), e))?;
            if info.tenant == tenant {
                out.push(info);
            }
        }
        Ok(out)
    }

    /// The token record for an id.
    pub fn token(&self, id: &str) -> Result<Option<TokenInfo>, TenantError> {
        match self.store.get(Table::Tokens, id.as_bytes())? {
            None => Ok(None),
            Some(raw) => Ok(Some(
                serde_json::from_slice(&raw).map_err(|e| corrupt(id, e))?,
            )),
        }
    }

    /// Revokes a token; audited as `actor`.
    pub fn revoke_token(&self, id: &str, actor: &str) -> Result<TokenInfo, TenantError> {
        let _turn = self.store.writer();
        let info = self
            .token(id)?
            .ok_or_else(|| TenantError::UnknownToken(id.to_owned()))?;
        let audit = AuditDraft::ok(
            Some(&info.tenant),
            actor,
            "token.revoke",
            &format!("token:{id}"),
            "",
        );
        self.store
            .commit(&Batch::new().delete(Table::Tokens, id.as_bytes()), &audit)?;
        Ok(info)
    }

    /// The token's record if `token` is a valid, unrevoked token.
    pub fn authenticate(&self, token: &SecretString) -> Result<Option<TokenInfo>, TenantError> {
        let Some((id, secret)) = parse(token.expose_secret()) else {
            return Ok(None);
        };
        let Some(info) = self.token(id)? else {
            return Ok(None);
        };
        let presented = hex::encode(Sha256::digest(secret.as_bytes()));
        let matches: bool = presented
            .as_bytes()
            .ct_eq(info.secret_sha256.as_bytes())
            .into();
        Ok(matches.then_some(info))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn tenants() -> (tempfile::TempDir, Tenants) {
        let dir = tempfile::tempdir().expect("tempdir");
        let tenants = Tenants::new(Store::open(dir.path()).expect("store"));
        tenants.create("acme", "uid:0").expect("acme");
        tenants.create("globex", "uid:0").expect("globex");
        (dir, tenants)
    }

    #[test]
    fn a_token_authenticates_only_itself_and_only_until_revoked() {
        let (_dir, tenants) = tenants();
        let issued = tenants
            .create_token("acme", TokenScope::Admin, "uid:0")
            .expect("token");
        let found = tenants
            .authenticate(&issued.token)
            .expect("auth")
            .expect("valid");
        assert_eq!(found.tenant, "acme");
        assert_eq!(found.scope, TokenScope::Admin);
        let text = issued.token.expose_secret().to_owned();
        let mut tampered = text.clone();
        tampered.pop();
        tampered.push(if text.ends_with('0') { '1' } else { '0' });
        for bad in [
            tampered.as_str(),
            "blt_",
            "",
            "garbage",
            &text[..text.len() - 1],
        ] {
            assert!(
                tenants
                    .authenticate(&SecretString::from(bad.to_owned()))
                    .expect("auth")
                    .is_none(),
                "{bad}"
            );
        }
        tenants
            .revoke_token(&issued.info.id, "uid:0")
            .expect("revoke");
        assert!(tenants.authenticate(&issued.token).expect("auth").is_none());
    }

    #[test]
    fn only_a_hash_is_stored() {
        let (dir, tenants) = tenants();
        let issued = tenants
            .create_token("acme", TokenScope::Ingest, "uid:0")
            .expect("token");
        let secret = issued
            .token
            .expose_secret()
            .rsplit('_')
            .next()
            .expect("secret")
            .to_owned();
        drop(tenants);
        for entry in walk(dir.path()) {
            let bytes = std::fs::read(&entry).expect("read");
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{}",
                entry.display()
            );
        }
    }

    fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).expect("dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(walk(&path))
            } else {
                out.push(path)
            }
        }
        out
    }

    #[test]
    fn deleting_a_tenant_takes_its_tokens_and_leaves_others() {
        let (_dir, tenants) = tenants();
        let acme = tenants
            .create_token("acme", TokenScope::Admin, "uid:0")
            .expect("token");
        let globex = tenants
            .create_token("globex", TokenScope::Admin, "uid:0")
            .expect("token");
        let batch = tenants.delete_batch("acme").expect("batch");
        tenants
            .store
            .commit(
                &batch,
                &AuditDraft::ok(Some("acme"), "uid:0", "tenant.delete", "tenant:acme", ""),
            )
            .expect("delete");
        assert!(tenants.get("acme").expect("get").is_none());
        assert!(tenants.authenticate(&acme.token).expect("auth").is_none());
        assert!(tenants.authenticate(&globex.token).expect("auth").is_some());
        assert!(
            tenants.create("acme", "uid:0").is_ok(),
            "the name is free again"
        );
    }

    #[test]
    fn names_are_checked_and_unique() {
        let (_dir, tenants) = tenants();
        assert!(matches!(
            tenants.create("acme", "uid:0"),
            Err(TenantError::Exists(_))
        ));
        assert!(matches!(
            tenants.create("../etc", "uid:0"),
            Err(TenantError::BadName(_))
        ));
        assert!(matches!(
            tenants.create_token("nobody", TokenScope::Admin, "uid:0"),
            Err(TenantError::Unknown(_))
        ));
    }
}
