//! The one rule for names of plugins, tenants and integrations: safe in a path, a
//! metric label, a store key (no NUL, no `/`) and a log line. Plugins, their manifests
//! and the host all check names by it.

/// The longest name accepted.
pub const MAX_NAME_LEN: usize = 64;

/// What a valid name looks like, for error messages.
pub const NAME_RULE: &str = "use 1-64 letters, digits, `-` or `_`";

/// Whether `value` is a valid name: 1-64 ASCII letters, digits, `-` or `_`.
pub fn is_name(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= MAX_NAME_LEN
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}
