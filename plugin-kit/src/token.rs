//! The one-time token: the host injects it into every call, the plugin refuses calls
//! without it. Compared in constant time.

use plugin_protocol::TOKEN_METADATA_KEY;
use subtle::ConstantTimeEq;
use tonic::metadata::AsciiMetadataValue;
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// Plugin side: refuses any call whose token differs from the one it was started with.
#[derive(Clone)]
pub(crate) struct RequireToken {
    expected: std::sync::Arc<[u8]>,
}

impl std::fmt::Debug for RequireToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RequireToken(<redacted>)")
    }
}

impl RequireToken {
    pub(crate) fn new(token: &str) -> Self {
        Self {
            expected: token.as_bytes().into(),
        }
    }
}

impl Interceptor for RequireToken {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let presented = request
            .metadata()
            .get(TOKEN_METADATA_KEY)
            .map(|value| value.as_bytes())
            .unwrap_or_default();
        if bool::from(presented.ct_eq(&self.expected)) && !self.expected.is_empty() {
            Ok(request)
        } else {
            Err(Status::unauthenticated("missing or wrong plugin token"))
        }
    }
}

/// Host side: adds the token to every call.
#[derive(Clone)]
pub struct AttachToken {
    value: AsciiMetadataValue,
}

impl std::fmt::Debug for AttachToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AttachToken(<redacted>)")
    }
}

impl AttachToken {
    /// `token` is hex, so it is always valid ASCII metadata.
    pub(crate) fn new(token: &str) -> Result<Self, tonic::metadata::errors::InvalidMetadataValue> {
        Ok(Self {
            value: token.parse()?,
        })
    }
}

impl Interceptor for AttachToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert(TOKEN_METADATA_KEY, self.value.clone());
        Ok(request)
    }
}

/// A fresh random one-time token (256 bits, hex).
pub(crate) fn generate() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call_with(token: Option<&str>) -> Result<Request<()>, Status> {
        let mut request = Request::new(());
        if let Some(token) = token {
            request
                .metadata_mut()
                .insert(TOKEN_METADATA_KEY, token.parse().expect("ascii"));
        }
        RequireToken::new("s3cret").call(request)
    }

    #[test]
    fn accepts_only_the_exact_token() {
        assert!(call_with(Some("s3cret")).is_ok());
        assert!(call_with(Some("s3cre")).is_err());
        assert!(call_with(Some("s3cret2")).is_err());
        assert!(call_with(Some("")).is_err());
        let err = call_with(None).expect_err("no token");
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
    }

    #[test]
    fn an_empty_expected_token_accepts_nothing() {
        let mut request = Request::new(());
        request
            .metadata_mut()
            .insert(TOKEN_METADATA_KEY, "".parse().expect("ascii"));
        assert!(RequireToken::new("").call(request).is_err());
    }

    #[test]
    fn tokens_are_random_and_never_debug_printed() {
        assert_ne!(generate(), generate());
        assert_eq!(generate().len(), 64);
        let shown = format!("{:?}", AttachToken::new("abc").expect("ascii"));
        assert!(!shown.contains("abc"));
    }
}
