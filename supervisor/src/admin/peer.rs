//! Who is calling: the peer's uid, gid and groups from `SO_PEERCRED`. Operator
//! commands are for root and the configured operator uids and groups.

use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Status};

use crate::config::AdminConfig;

/// The authenticated caller of an admin request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
}

impl Caller {
    /// For audit and `pinned_by`.
    pub fn label(&self) -> String {
        format!("uid:{}", self.uid)
    }
}

/// Checks that the request comes from an operator. Tenant tokens are not accepted
/// for operator commands.
pub fn require_operator<T>(request: &Request<T>, admin: &AdminConfig) -> Result<Caller, Status> {
    if request.metadata().get("authorization").is_some() {
        return Err(Status::permission_denied(
            "this command is for operators; a tenant token cannot run it",
        ));
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
    if is_operator(
        &caller,
        admin,
        caller
            .pid
            .and_then(supplementary_groups)
            .unwrap_or_default()
            .as_slice(),
    ) {
        Ok(caller)
    } else {
        Err(Status::permission_denied(format!(
            "uid {} is not an operator (root, admin.operator_uids or admin.operator_gids)",
            caller.uid
        )))
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
