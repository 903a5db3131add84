//! The same error classes for every plugin: HTTP answers, transport failures and AWS
//! error codes map to one [`ErrorClass`], which the plugin reports to the supervisor
//! through the status of its call (see [`ErrorClass::status`]).

use plugin_protocol::ErrorClass;

use super::CallError;

/// AWS error codes for a refused credential.
const AWS_AUTH: [&str; 8] = [
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "ExpiredToken",
    "ExpiredTokenException",
    "SignatureDoesNotMatch",
    "InvalidSignatureException",
    "IncompleteSignature",
    "MissingAuthenticationToken",
];
/// AWS error codes for a credential that may not do this.
const AWS_PERMISSION: [&str; 4] = [
    "AccessDenied",
    "AccessDeniedException",
    "UnauthorizedOperation",
    "AuthorizationError",
];
/// AWS error codes for throttling and quotas.
const AWS_RATE_LIMITED: [&str; 7] = [
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "LimitExceededException",
];
/// AWS error codes for a momentary outage.
const AWS_UNAVAILABLE: [&str; 3] = ["ServiceUnavailable", "InternalFailure", "InternalError"];

/// The class of an AWS error from its code and, when it answered, its HTTP status.
pub fn aws_class(code: Option<&str>, http_status: Option<u16>) -> ErrorClass {
    if let Some(code) = code {
        if AWS_AUTH.contains(&code) {
            return ErrorClass::Auth;
        }
        if AWS_PERMISSION.contains(&code) {
            return ErrorClass::Permission;
        }
        if AWS_RATE_LIMITED.contains(&code) {
            return ErrorClass::RateLimited;
        }
        if AWS_UNAVAILABLE.contains(&code) {
            return ErrorClass::Unavailable;
        }
        if code.ends_with("NotFoundException")
            || code.starts_with("Invalid")
            || code.starts_with("Validation")
            || code == "ResourceNotFound"
        {
            return ErrorClass::Config;
        }
    }
    http_status
        .and_then(ErrorClass::from_http_status)
        .unwrap_or(ErrorClass::Internal)
}

/// The class of a transport failure (no HTTP answer).
pub fn reqwest_class(err: &reqwest::Error) -> ErrorClass {
    if err.is_timeout() {
        ErrorClass::Timeout
    } else if err.is_connect() || err.is_request() {
        ErrorClass::Unavailable
    } else if err.is_decode() || err.is_body() {
        ErrorClass::InvalidData
    } else {
        err.status()
            .and_then(|s| ErrorClass::from_http_status(s.as_u16()))
            .unwrap_or(ErrorClass::Internal)
    }
}

impl<E: std::error::Error + 'static> CallError<E> {
    /// The class of this failure, given how to classify the call's own error.
    pub fn class_with(&self, classify: impl Fn(&E) -> ErrorClass) -> ErrorClass {
        match self {
            Self::BreakerOpen { .. } => ErrorClass::Unavailable,
            Self::Failed { cause, .. } => classify(cause),
        }
    }
}

/// The failures of one pass over several resources (repositories, accounts): each
/// resource's failure is kept, and the pass fails with the class that most needs a
/// person (a refused credential before a lost permission before a bad configuration
/// before anything transient).
#[derive(Debug, Default)]
pub struct Failures {
    failures: Vec<(ErrorClass, String)>,
}

impl Failures {
    pub fn push(&mut self, class: ErrorClass, message: impl Into<String>) {
        self.failures.push((class, message.into()));
    }

    pub fn is_empty(&self) -> bool {
        self.failures.is_empty()
    }

    pub fn len(&self) -> usize {
        self.failures.len()
    }

    /// The class the pass reports.
    pub fn class(&self) -> Option<ErrorClass> {
        ErrorClass::most_urgent(self.failures.iter().map(|(class, _)| *class))
    }

    /// The status the pass ends with, `what` naming what was read ("repository
    /// read(s)"), or `None` when nothing failed.
    pub fn into_status(self, what: &str) -> Option<tonic::Status> {
        let class = self.class()?;
        let messages: Vec<String> = self.failures.into_iter().map(|(_, m)| m).collect();
        Some(class.status(format!(
            "{} {what} failed: {}",
            messages.len(),
            messages.join("; ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_codes_classify() {
        assert_eq!(
            aws_class(Some("InvalidClientTokenId"), Some(403)),
            ErrorClass::Auth
        );
        assert_eq!(
            aws_class(Some("AccessDenied"), Some(403)),
            ErrorClass::Permission
        );
        assert_eq!(
            aws_class(Some("ThrottlingException"), Some(400)),
            ErrorClass::RateLimited
        );
        assert_eq!(
            aws_class(Some("ResourceNotFoundException"), Some(400)),
            ErrorClass::Config
        );
        assert_eq!(aws_class(None, Some(503)), ErrorClass::Unavailable);
        assert_eq!(aws_class(Some("Odd"), None), ErrorClass::Internal);
    }

    #[test]
    fn a_mixed_pass_reports_what_needs_a_person() {
        let mut failures = Failures::default();
        assert!(Failures::default().into_status("read(s)").is_none());
        failures.push(ErrorClass::Unavailable, "a: 502");
        failures.push(ErrorClass::Auth, "b: 401");
        assert_eq!(failures.class(), Some(ErrorClass::Auth));
        let status = failures.into_status("read(s)").expect("failed");
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        assert_eq!(status.message(), "2 read(s) failed: a: 502; b: 401");
        assert_eq!(ErrorClass::of_status(&status), ErrorClass::Auth);
    }
}
