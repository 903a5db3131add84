//! The audit trail: listed per tenant, verified against its head and an anchor.

use tonic::{Request, Response, Status};

use super::peer::{Authenticator, Principal};
use super::proto;
use crate::store::Store;
use crate::tenants::Tenants;

/// The audit calls, with the components they need.
#[derive(Debug, Clone)]
pub(super) struct AuditCalls {
    pub(super) auth: Authenticator,
    pub(super) tenants: Tenants,
    pub(super) store: Store,
}

impl AuditCalls {
    pub(super) async fn list_audit(
        &self,
        request: Request<proto::ListAuditRequest>,
    ) -> Result<Response<proto::ListAuditResponse>, Status> {
        let principal = self.auth.authenticate(&request)?;
        let body = request.into_inner();
        let tenant = match (&principal, body.tenant.as_str()) {
            (Principal::Tenant(token), "") => Some(token.tenant.clone()),
            (Principal::Tenant(token), asked) if asked != token.tenant => {
                return Err(Status::permission_denied(
                    "this token belongs to another tenant",
                ));
            }
            (_, "") => None,
            (_, asked) => Some(asked.to_owned()),
        };
        let limit = if body.limit == 0 {
            100
        } else {
            body.limit as usize
        };
        let until = if body.until_unix_ms == 0 {
            u64::MAX
        } else {
            body.until_unix_ms
        };
        // A tenant sees its own records of its own incarnation, numbered among
        // themselves: global sequence numbers (and the chain's hashes) would show how
        // much other tenants did in between. Operators see the whole trail.
        let own_view = matches!(principal, Principal::Tenant(_));
        let since = match (&tenant, own_view) {
            (Some(name), true) => {
                self.tenants
                    .incarnation(name)
                    .map_err(Status::from)?
                    .since_audit_seq
            }
            _ => 0,
        };
        let mut kept = Vec::new();
        let mut newer = 0u64;
        for record in self.store.audit_rev() {
            let record = record.map_err(|e| Status::internal(e.to_string()))?;
            if record.seq < since {
                break;
            }
            if tenant
                .as_ref()
                .is_some_and(|t| record.tenant.as_ref() != Some(t))
            {
                continue;
            }
            let wanted = record.action.starts_with(&body.action_prefix)
                && record.time_ms >= body.since_unix_ms
                && record.time_ms <= until;
            if wanted && kept.len() < limit {
                kept.push((newer, record));
            }
            newer += 1;
            if !own_view && kept.len() >= limit {
                break;
            }
        }
        let total = newer;
        let records = kept
            .into_iter()
            .map(|(newer_than_it, record)| {
                let mut shown = proto::AuditRecord::from(record);
                if own_view {
                    shown.seq = total - newer_than_it;
                    shown.prev_sha256.clear();
                }
                shown
            })
            .collect();
        Ok(Response::new(proto::ListAuditResponse { records }))
    }

    pub(super) async fn verify_audit(
        &self,
        request: Request<proto::VerifyAuditRequest>,
    ) -> Result<Response<proto::VerifyAuditResponse>, Status> {
        self.auth.operator(&request)?;
        let given = request.into_inner().anchor;
        let external = match given.trim() {
            "" => None,
            text => Some(crate::store::AuditAnchor::parse(text).ok_or_else(|| {
                Status::invalid_argument(
                    "--anchor must be SEQ:SHA256 (a record number and 64 hex digits)",
                )
            })?),
        };
        let store = self.store.clone();
        let (outcome, head) = tokio::task::spawn_blocking(move || {
            let outcome = store.audit_verify(external.as_ref())?;
            Ok::<_, crate::store::StoreError>((outcome, store.audit_head()?))
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| Status::internal(e.to_string()))?;
        let head = head.map(|h| h.to_string()).unwrap_or_default();
        Ok(Response::new(match outcome {
            Ok(records) => proto::VerifyAuditResponse {
                ok: true,
                records,
                error: String::new(),
                head,
            },
            Err(broken) => proto::VerifyAuditResponse {
                ok: false,
                records: 0,
                error: broken.to_string(),
                head,
            },
        }))
    }
}
