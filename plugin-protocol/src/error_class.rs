//! What kind of failure a plugin met, so that the supervisor can tell "a person must act"
//! (a revoked token, a lost permission, a bad configuration) from "wait and retry" (a
//! rate limit, an outage, a timeout).
//!
//! Added to v1 without breaking it: the class travels as the gRPC status code (the
//! mapping below), and a plugin may name it explicitly in the status metadata
//! [`ERROR_CLASS_METADATA_KEY`], which wins over the code. Plugins that predate this
//! still send codes, which map to a class.

use std::fmt;

/// The status metadata key naming an error class explicitly (`auth`, `permission`, …).
pub const ERROR_CLASS_METADATA_KEY: &str = "betalogs-error-class";

/// The class of a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorClass {
    /// The credential was refused (HTTP 401, gRPC UNAUTHENTICATED).
    Auth,
    /// The credential works but may not do this (HTTP 403, PERMISSION_DENIED).
    Permission,
    /// A quota or rate limit (HTTP 429, RESOURCE_EXHAUSTED).
    RateLimited,
    /// The service is down or unreachable (HTTP 5xx, UNAVAILABLE).
    Unavailable,
    /// No answer in time (DEADLINE_EXCEEDED).
    Timeout,
    /// The service answered with something that cannot be used (DATA_LOSS).
    InvalidData,
    /// The integration's configuration is wrong (INVALID_ARGUMENT, FAILED_PRECONDITION,
    /// NOT_FOUND).
    Config,
    /// Anything else: a bug, an unexpected state.
    Internal,
}

impl ErrorClass {
    pub const ALL: [Self; 8] = [
        Self::Auth,
        Self::Permission,
        Self::RateLimited,
        Self::Unavailable,
        Self::Timeout,
        Self::InvalidData,
        Self::Config,
        Self::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auth => "auth",
            Self::Permission => "permission",
            Self::RateLimited => "rate_limited",
            Self::Unavailable => "unavailable",
            Self::Timeout => "timeout",
            Self::InvalidData => "invalid_data",
            Self::Config => "config",
            Self::Internal => "internal",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|class| class.as_str() == text)
    }

    /// Whether retrying cannot help: a person must change a credential, a permission or
    /// the configuration.
    pub fn needs_action(self) -> bool {
        matches!(self, Self::Auth | Self::Permission | Self::Config)
    }

    /// Of several failures, the class to report: the one that most needs a person (a
    /// refused credential before a lost permission before a bad configuration before
    /// anything transient).
    pub fn most_urgent(classes: impl IntoIterator<Item = Self>) -> Option<Self> {
        const URGENCY: [ErrorClass; 8] = [
            ErrorClass::Auth,
            ErrorClass::Permission,
            ErrorClass::Config,
            ErrorClass::RateLimited,
            ErrorClass::Unavailable,
            ErrorClass::Timeout,
            ErrorClass::InvalidData,
            ErrorClass::Internal,
        ];
        classes
            .into_iter()
            .min_by_key(|class| URGENCY.iter().position(|c| c == class))
    }

    /// The class a gRPC status code stands for.
    pub fn from_code(code: tonic::Code) -> Self {
        use tonic::Code;
        match code {
            Code::Unauthenticated => Self::Auth,
            Code::PermissionDenied => Self::Permission,
            Code::ResourceExhausted => Self::RateLimited,
            Code::Unavailable | Code::Aborted => Self::Unavailable,
            Code::DeadlineExceeded | Code::Cancelled => Self::Timeout,
            Code::DataLoss | Code::OutOfRange => Self::InvalidData,
            Code::InvalidArgument | Code::FailedPrecondition | Code::NotFound => Self::Config,
            Code::Ok
            | Code::Unknown
            | Code::AlreadyExists
            | Code::Unimplemented
            | Code::Internal => Self::Internal,
        }
    }

    /// The gRPC status code a plugin answers with for this class.
    pub fn code(self) -> tonic::Code {
        use tonic::Code;
        match self {
            Self::Auth => Code::Unauthenticated,
            Self::Permission => Code::PermissionDenied,
            Self::RateLimited => Code::ResourceExhausted,
            Self::Unavailable => Code::Unavailable,
            Self::Timeout => Code::DeadlineExceeded,
            Self::InvalidData => Code::DataLoss,
            Self::Config => Code::FailedPrecondition,
            Self::Internal => Code::Internal,
        }
    }

    /// The class of an HTTP answer's status, or `None` for a success. A 403 that is a
    /// rate limit (GitHub's secondary limits) is told apart by the caller, who sees the
    /// headers.
    pub fn from_http_status(status: u16) -> Option<Self> {
        Some(match status {
            200..=399 => return None,
            401 | 407 => Self::Auth,
            403 => Self::Permission,
            408 | 504 => Self::Timeout,
            429 => Self::RateLimited,
            400 | 404 | 405 | 409 | 410 | 422 => Self::Config,
            500..=599 => Self::Unavailable,
            _ => Self::Internal,
        })
    }

    /// The class a status carries: its explicit metadata, else its code.
    pub fn of_status(status: &tonic::Status) -> Self {
        status
            .metadata()
            .get(ERROR_CLASS_METADATA_KEY)
            .and_then(|value| value.to_str().ok())
            .and_then(Self::parse)
            .unwrap_or_else(|| Self::from_code(status.code()))
    }

    /// A status of this class with `message`, the class also named in its metadata.
    pub fn status(self, message: impl Into<String>) -> tonic::Status {
        let mut status = tonic::Status::new(self.code(), message);
        status.metadata_mut().insert(
            ERROR_CLASS_METADATA_KEY,
            tonic::metadata::MetadataValue::from_static(self.as_str()),
        );
        status
    }
}

impl serde::Serialize for ErrorClass {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for ErrorClass {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("`{text}` is not an error class")))
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for class in ErrorClass::ALL {
            assert_eq!(ErrorClass::parse(class.as_str()), Some(class));
            assert_eq!(ErrorClass::from_code(class.code()), class);
        }
        assert_eq!(ErrorClass::parse("Auth"), None);
    }

    #[test]
    fn explicit_metadata_wins_over_the_code() {
        let mut status = tonic::Status::unavailable("token revoked");
        assert_eq!(ErrorClass::of_status(&status), ErrorClass::Unavailable);
        status.metadata_mut().insert(
            ERROR_CLASS_METADATA_KEY,
            tonic::metadata::MetadataValue::from_static("auth"),
        );
        assert_eq!(ErrorClass::of_status(&status), ErrorClass::Auth);
        // An unknown name falls back to the code.
        let mut odd = tonic::Status::permission_denied("x");
        odd.metadata_mut().insert(
            ERROR_CLASS_METADATA_KEY,
            tonic::metadata::MetadataValue::from_static("bogus"),
        );
        assert_eq!(ErrorClass::of_status(&odd), ErrorClass::Permission);
        let built = ErrorClass::RateLimited.status("slow down");
        assert_eq!(built.code(), tonic::Code::ResourceExhausted);
        assert_eq!(ErrorClass::of_status(&built), ErrorClass::RateLimited);
    }

    #[test]
    fn http_statuses_classify() {
        assert_eq!(ErrorClass::from_http_status(204), None);
        assert_eq!(ErrorClass::from_http_status(401), Some(ErrorClass::Auth));
        assert_eq!(
            ErrorClass::from_http_status(403),
            Some(ErrorClass::Permission)
        );
        assert_eq!(
            ErrorClass::from_http_status(429),
            Some(ErrorClass::RateLimited)
        );
        assert_eq!(
            ErrorClass::from_http_status(502),
            Some(ErrorClass::Unavailable)
        );
        assert_eq!(ErrorClass::from_http_status(504), Some(ErrorClass::Timeout));
        assert_eq!(ErrorClass::from_http_status(404), Some(ErrorClass::Config));
        assert!(ErrorClass::Auth.needs_action() && !ErrorClass::Timeout.needs_action());
        assert_eq!(
            ErrorClass::most_urgent([
                ErrorClass::Timeout,
                ErrorClass::Config,
                ErrorClass::Permission
            ]),
            Some(ErrorClass::Permission)
        );
        assert_eq!(ErrorClass::most_urgent([]), None);
    }
}
