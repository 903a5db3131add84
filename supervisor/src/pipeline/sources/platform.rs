//! Platform events: what clients post to `POST /v1/events/{tenant}`, validated as the
//! tenant's `platform` integration's, whatever they name.

use crate::pipeline::facade::accept;
use crate::pipeline::{DeadLetter, PLATFORM_INTEGRATION, Pipeline, Submission};

impl Pipeline {
    /// Validates events a client submitted for `tenant` (`POST /v1/events`): each may
    /// name any integration of its tenant, none another tenant.
    pub fn prepare_platform(&self, tenant: &str, events: &[serde_json::Value]) -> Submission {
        let mut submission = Submission {
            tenant: tenant.to_owned(),
            integration: PLATFORM_INTEGRATION.to_owned(),
            accepted: Vec::with_capacity(events.len()),
            ..Submission::default()
        };
        // A platform event is the tenant's platform integration's, whatever it names: an
        // ingest token cannot speak for a plugin's integration.
        let integration = PLATFORM_INTEGRATION;
        for value in events {
            match self.validator.check(
                value,
                tenant,
                integration,
                || value.to_string(),
                |value, time_ms| self.enricher.correlate(tenant, value, time_ms),
            ) {
                Ok(event) => accept(&mut submission, event),
                Err(rejection) => submission.dead.push(DeadLetter::new(
                    tenant,
                    integration,
                    rejection.stage,
                    rejection.reasons.join("; "),
                    &value.to_string(),
                )),
            }
        }
        submission
    }
}
