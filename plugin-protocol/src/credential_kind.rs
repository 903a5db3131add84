//! Credential kind names: the six the host knows, and the `PLUGIN/KIND` names of kinds
//! a plugin declares in its manifest (`[credential_kinds.KIND]`, with a JSON Schema).
//! Namespaced by plugin, so two plugins never claim one name and none shadows a
//! built-in kind.

/// The kinds whose secrets the host itself checks and understands.
pub const BUILT_IN_CREDENTIAL_KINDS: [&str; 6] = [
    "api-key",
    "oauth2",
    "github-app",
    "aws",
    "webhook-secret",
    "basic",
];

/// The full name of kind `kind` declared by plugin `plugin`.
pub fn plugin_credential_kind(plugin: &str, kind: &str) -> String {
    format!("{plugin}/{kind}")
}

/// Whether `kind` is one of the built-in kinds.
pub fn is_built_in_credential_kind(kind: &str) -> bool {
    BUILT_IN_CREDENTIAL_KINDS.contains(&kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_kinds_are_namespaced_and_never_built_in() {
        let kind = plugin_credential_kind("reports", "api-token");
        assert_eq!(kind, "reports/api-token");
        assert!(!is_built_in_credential_kind(&kind));
        assert!(is_built_in_credential_kind("webhook-secret"));
    }
}
