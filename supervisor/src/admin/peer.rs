//! Who is calling and what they may do. Operators are recognised by `SO_PEERCRED` (root
//! and the configured uids and groups); tenants by a bearer token, which acts on its own
//! tenant only and never runs operator commands.

use secrecy::SecretString;
use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Status};

use crate::config::AdminConfig;
use crate::store::AuditDraft;
use crate::tenants::{Tenants, TokenInfo, TokenScope};

/// A process on the admin socket, from its peer credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Operator(Caller),
    Tenant(TokenInfo),
}

impl Principal {
    /// For audit records and `pinned_by`.
    pub fn label(&self) -> String {
        match self {
            Principal::Operator(caller) => format!("uid:{}", caller.uid),
            Principal::Tenant(token) => format!("token:{}", token.id),
        }
    }

    /// The tenant a token is bound to; `None` for operators.
    pub fn tenant(&self) -> Option<&str> {
        match self {
            Principal::Operator(_) => None,
            Principal::Tenant(token) => Some(&token.tenant),
        }
    }
}

/// Checks callers against the config and the token table.
#[derive(Debug, Clone)]
pub struct Authenticator {
    admin: AdminConfig,
    tenants: Tenants,
}

impl Authenticator {
    pub fn new(admin: AdminConfig, tenants: Tenants) -> Self {
        Self { admin, tenants }
    }

    /// Identifies the caller: a bearer token if one is sent, else the peer's uid.
    pub fn authenticate<T>(&self, request: &Request<T>) -> Result<Principal, Status> {
        if let Some(value) = request.metadata().get("authorization") {
            let token = value
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .ok_or_else(|| {
                    Status::unauthenticated("the authorization header is not `Bearer <token>`")
                })?;
            let info = self
                .tenants
                .authenticate(&SecretString::from(token.to_owned()))
                .map_err(|err| Status::internal(err.to_string()))?
                .ok_or_else(|| Status::unauthenticated("invalid or revoked token"))?;
            if info.scope != TokenScope::Admin {
                return Err(Status::permission_denied(
                    "an ingest token only posts events to /v1/events/{tenant}; use an admin token here",
                ));
            }
            return Ok(Principal::Tenant(info));
        }
        let cred = request
            .extensions()
            .get::<UdsConnectInfo>()
            .and_then(|info| info.peer_cred)
            .ok_or_else(|| {
                Status::unauthenticated("cannot read the caller's credentials from the socket")
            })?;
        let caller = Caller {
            uid: cred.uid(),
            gid: cred.gid(),
            pid: cred.pid(),
        };
        let groups = caller
            .pid
            .and_then(supplementary_groups)
            .unwrap_or_default();
        if is_operator(&caller, &self.admin, &groups) {
            Ok(Principal::Operator(caller))
        } else {
            Err(Status::permission_denied(format!(
                "uid {} is not an operator (root, admin.operator_uids or admin.operator_gids); tenants pass --token",
                caller.uid
            )))
        }
    }

    /// Operator commands only.
    pub fn operator<T>(&self, request: &Request<T>) -> Result<Principal, Status> {
        match self.authenticate(request)? {
            principal @ Principal::Operator(_) => Ok(principal),
            Principal::Tenant(token) => {
                self.record_denial(&token, "an operator command");
                Err(Status::permission_denied(
                    "this command is for operators; a tenant token cannot run it",
                ))
            }
        }
    }

    /// Audits a refused attempt in the token's own tenant (never the other tenant's log).
    fn record_denial(&self, token: &TokenInfo, what: &str) {
        let audit = AuditDraft::ok(
            Some(&token.tenant),
            &format!("token:{}", token.id),
            "access.denied",
            what,
            "",
        )
        .with_outcome("denied");
        if let Err(err) = self.tenants.store().audit(&audit) {
            tracing::error!(error = %err, "cannot audit a refused access");
        }
    }

    /// A command on `tenant`'s resources: operators, or that tenant's own token. The
    /// refusal is the same whether or not the other tenant exists, so it reveals nothing.
    pub fn for_tenant<T>(&self, request: &Request<T>, tenant: &str) -> Result<Principal, Status> {
        let principal = self.authenticate(request)?;
        match &principal {
            Principal::Tenant(token) if token.tenant != tenant => {
                self.record_denial(token, "another tenant's resources");
                Err(Status::permission_denied(
                    "this token belongs to another tenant",
                ))
            }
            _ => Ok(principal),
        }
    }
}

fn is_operator(caller: &Caller, admin: &AdminConfig, groups: &[u32]) -> bool {
    caller.uid == 0
        || admin.operator_uids.contains(&caller.uid)
        || admin.operator_gids.contains(&caller.gid)
        || groups.iter().any(|g| admin.operator_gids.contains(g))
}

/// The supplementary groups of `pid`, from `/proc/<pid>/status`.
fn supplementary_groups(pid: i32) -> Option<Vec<u32>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix("Groups:"))?;
    Some(
        line.split_whitespace()
            .filter_map(|g| g.parse().ok())
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_configured_uids_and_groups_are_operators() {
        let admin = AdminConfig {
            operator_uids: vec![1000],
            operator_gids: vec![50],
            ..AdminConfig::default()
        };
        let caller = |uid, gid| Caller {
            uid,
            gid,
            pid: None,
        };
        assert!(is_operator(&caller(0, 0), &admin, &[]));
        assert!(is_operator(&caller(1000, 1000), &admin, &[]));
        assert!(is_operator(&caller(1001, 50), &admin, &[]));
        assert!(is_operator(&caller(1002, 1002), &admin, &[7, 50]));
        assert!(!is_operator(&caller(1003, 1003), &admin, &[7]));
    }

    #[test]
    fn reads_own_supplementary_groups() {
        let pid = i32::try_from(std::process::id()).expect("pid fits");
        assert!(supplementary_groups(pid).is_some());
        assert!(supplementary_groups(-5).is_none());
    }
}
