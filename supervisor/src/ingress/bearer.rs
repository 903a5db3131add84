//! Bearer tokens on the HTTP listener: `Authorization: Bearer <token>`, checked against
//! the tenants' token table (a hash compared in constant time).

use axum::http::{HeaderMap, StatusCode, header};
use secrecy::SecretString;

use super::{Ingress, Refusal};
use crate::tenants::TokenInfo;

/// The valid token the request carries; 401 naming what is missing or wrong. `needed`
/// names the kind of token the route takes, for the message.
pub fn token(ingress: &Ingress, headers: &HeaderMap, needed: &str) -> Result<TokenInfo, Refusal> {
    let unauthorized = |why: String| Refusal::new(StatusCode::UNAUTHORIZED, "unauthorized", why);
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(unauthorized(format!(
            "{needed} is required: Authorization: Bearer <token>"
        )));
    };
    let Some(token) = value.to_str().ok().and_then(|v| {
        v.strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
    }) else {
        return Err(unauthorized(
            "the Authorization header is not `Bearer <token>`".to_owned(),
        ));
    };
    let token = SecretString::from(token.trim().to_owned());
    match ingress.tenants.authenticate(&token) {
        Ok(Some(info)) => Ok(info),
        Ok(None) => Err(unauthorized(
            "the token is not valid (unknown or revoked)".to_owned(),
        )),
        Err(err) => {
            tracing::error!(error = %err, "cannot check a bearer token");
            Err(Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "tokens cannot be checked now; retry later",
            ))
        }
    }
}
