//! What a plugin's `Check` answer means for health: passed, or failed with the class
//! that most needs a person and a message naming each failed resource and permission.

use plugin_protocol::{ErrorClass, v1};

/// The verdict of one `Check` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckOutcome {
    Passed,
    /// The plugin does not check (UNIMPLEMENTED): nothing is learnt.
    NotSupported,
    Failed {
        class: ErrorClass,
        message: String,
    },
}

impl CheckOutcome {
    /// The failure to record, if any.
    pub fn failure(&self) -> Option<(ErrorClass, &str)> {
        match self {
            Self::Failed { class, message } => Some((*class, message.as_str())),
            Self::Passed | Self::NotSupported => None,
        }
    }
}

/// Reads a `Check` answer.
pub fn check_outcome(
    answer: Result<tonic::Response<v1::CheckResponse>, tonic::Status>,
) -> CheckOutcome {
    match answer {
        Ok(response) => outcome_of(&response.into_inner()),
        Err(status) if status.code() == tonic::Code::Unimplemented => CheckOutcome::NotSupported,
        Err(status) => CheckOutcome::Failed {
            class: ErrorClass::of_status(&status),
            message: format!("Check failed: {}", status.message()),
        },
    }
}

/// Reads a `Check` response.
pub fn outcome_of(response: &v1::CheckResponse) -> CheckOutcome {
    let failed: Vec<&v1::CheckResult> = response.results.iter().filter(|r| !r.ok).collect();
    if response.ok && failed.is_empty() {
        return CheckOutcome::Passed;
    }
    // A result from a plugin that predates classes counts as a lost permission.
    let class_of =
        |r: &v1::CheckResult| ErrorClass::parse(&r.error_class).unwrap_or(ErrorClass::Permission);
    let class = ErrorClass::most_urgent(failed.iter().map(|r| class_of(r)))
        .unwrap_or(ErrorClass::Permission);
    let message = if failed.is_empty() {
        "Check failed without naming a resource".to_owned()
    } else {
        failed
            .iter()
            .map(|r| format!("{} ({}): {}", r.resource, r.permission, r.message))
            .collect::<Vec<_>>()
            .join("; ")
    };
    CheckOutcome::Failed { class, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(resource: &str, ok: bool, class: &str) -> v1::CheckResult {
        v1::CheckResult {
            resource: resource.into(),
            permission: "logs:FilterLogEvents".into(),
            ok,
            message: if ok {
                "ok".into()
            } else {
                "AccessDenied: no".into()
            },
            error_class: class.into(),
        }
    }

    #[test]
    fn failures_name_each_resource_and_take_the_most_urgent_class() {
        assert_eq!(
            outcome_of(&v1::CheckResponse {
                ok: true,
                results: vec![result("a", true, "")]
            }),
            CheckOutcome::Passed
        );
        let failed = outcome_of(&v1::CheckResponse {
            ok: false,
            results: vec![
                result("123/eu-west-1 log group /app", false, "permission"),
                result("b", true, ""),
                result("123/eu-west-1 account", false, "auth"),
            ],
        });
        let CheckOutcome::Failed { class, message } = failed else {
            panic!("failed");
        };
        assert_eq!(class, ErrorClass::Auth);
        assert_eq!(
            message,
            "123/eu-west-1 log group /app (logs:FilterLogEvents): AccessDenied: no; 123/eu-west-1 account (logs:FilterLogEvents): AccessDenied: no"
        );
        let old = outcome_of(&v1::CheckResponse {
            ok: false,
            results: vec![result("r", false, "")],
        });
        assert_eq!(old.failure().map(|(c, _)| c), Some(ErrorClass::Permission));
        assert_eq!(
            check_outcome(Err(tonic::Status::unimplemented("no"))),
            CheckOutcome::NotSupported
        );
    }
}
