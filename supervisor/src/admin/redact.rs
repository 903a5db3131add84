//! `Debug` for the admin messages that carry secrets: everything but the secret.

use super::proto::{CreateTokenResponse, SetCredentialRequest};

impl std::fmt::Debug for SetCredentialRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SetCredentialRequest")
            .field("tenant", &self.tenant)
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("secret", &"<redacted>")
            .field("expires_unix_ms", &self.expires_unix_ms)
            .field("rotate", &self.rotate)
            .finish()
    }
}

impl std::fmt::Debug for CreateTokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateTokenResponse")
            .field("tenant", &self.tenant)
            .field("token", &"<redacted>")
            .field("id", &self.id)
            .field("scope", &self.scope)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_not_in_debug_output() {
        let request = SetCredentialRequest {
            secret: b"hunter2".to_vec(),
            ..Default::default()
        };
        assert!(!format!("{request:?}").contains("hunter2"));
        assert!(
            !format!("{request:?}").contains("104, 117"),
            "not even as bytes"
        );
        let token = CreateTokenResponse {
            token: "blt_x_secret".into(),
            ..Default::default()
        };
        assert!(!format!("{token:?}").contains("secret"));
    }
}
