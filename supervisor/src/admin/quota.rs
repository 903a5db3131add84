//! Per-tenant quotas on what a tenant may hold (integrations, credentials, tokens).

use tonic::Status;

/// Refuses one more of `what` when `tenant` holds `held` and `max` are allowed.
pub(super) fn check(
    tenant: &str,
    held: usize,
    max: usize,
    what: &str,
    setting: &str,
) -> Result<(), Status> {
    if held >= max {
        return Err(Status::resource_exhausted(format!(
            "tenant `{tenant}` has {held} {what}, the most it may have ({setting} = {max}); remove one or ask the operator to raise the limit"
        )));
    }
    Ok(())
}
