//! Which repositories an integration covers: exact names (`org/repo`) and globs
//! (`org/*`, `org/api-*`). GitHub compares owner and repository names without regard
//! to case, so this does too. Anything outside the scope is refused, never mapped.

/// The repositories an integration may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepositoryScope {
    patterns: Vec<Pattern>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    owner: String,
    /// Lowercased; `*` matches any run of characters (never a `/`).
    repository: String,
}

/// A configured pattern that is not `owner/repository`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("repository pattern `{pattern}` is not `owner/name` (globs only in the name): {why}")]
pub struct ScopeError {
    pub pattern: String,
    pub why: &'static str,
}

impl RepositoryScope {
    pub fn new<'a>(patterns: impl IntoIterator<Item = &'a str>) -> Result<Self, ScopeError> {
        let mut compiled = Vec::new();
        for pattern in patterns {
            let bad = |why| ScopeError {
                pattern: pattern.to_owned(),
                why,
            };
            let (owner, repository) = pattern.split_once('/').ok_or(bad("no `/`"))?;
            if owner.is_empty() || repository.is_empty() || repository.contains('/') {
                return Err(bad("one owner and one name are needed"));
            }
            if owner.contains('*') {
                return Err(bad("the owner cannot be a glob"));
            }
            compiled.push(Pattern {
                owner: owner.to_ascii_lowercase(),
                repository: repository.to_ascii_lowercase(),
            });
        }
        if compiled.is_empty() {
            return Err(ScopeError {
                pattern: String::new(),
                why: "no repositories are listed",
            });
        }
        Ok(Self { patterns: compiled })
    }

    /// Whether `full_name` (`owner/repo`) is covered. Only GitHub's name characters
    /// count as a name: a glob never covers `acme/x/../../orgs` (the name reaches API
    /// paths).
    pub fn covers(&self, full_name: &str) -> bool {
        let Some((owner, repository)) = full_name.split_once('/') else {
            return false;
        };
        let name_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
        if !owner.chars().all(name_char)
            || !repository.chars().all(name_char)
            || repository.chars().all(|c| c == '.')
        {
            return false;
        }
        let repository = repository.to_ascii_lowercase();
        self.patterns.iter().any(|p| {
            p.owner.eq_ignore_ascii_case(owner)
                && plugin_kit::glob::matches(&p.repository, &repository)
        })
    }

    /// Repositories named exactly, as configured (lowercased).
    pub fn exact(&self) -> impl Iterator<Item = String> + '_ {
        self.patterns
            .iter()
            .filter(|p| !p.repository.contains('*'))
            .map(|p| format!("{}/{}", p.owner, p.repository))
    }

    /// Owners with a glob, whose repositories are listed from the API.
    pub fn glob_owners(&self) -> Vec<&str> {
        let mut owners: Vec<&str> = self
            .patterns
            .iter()
            .filter(|p| p.repository.contains('*'))
            .map(|p| p.owner.as_str())
            .collect();
        owners.sort_unstable();
        owners.dedup();
        owners
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_names_and_globs_without_regard_to_case() {
        let scope = RepositoryScope::new(["Acme/api", "acme-labs/*", "acme/web-*-app"])
            .expect("valid patterns");
        assert!(scope.covers("acme/API"));
        assert!(!scope.covers("acme/api2"));
        assert!(!scope.covers("other/api"));
        assert!(scope.covers("acme-labs/anything"));
        assert!(!scope.covers("acme-labs"), "no repository part");
        assert!(scope.covers("acme/web-shop-app"));
        assert!(scope.covers("acme/web--app"));
        assert!(
            !scope.covers("acme/web-app"),
            "both fixed parts must be there"
        );
        assert!(!scope.covers("acme/web-shop-app-old"));
        assert!(!scope.covers("acme/api/extra"));
        assert!(
            !scope.covers("acme-labs/x/../../orgs/other"),
            "no path in a name"
        );
        assert!(!scope.covers("acme-labs/.."));
        assert!(!scope.covers("acme-labs/a?b"));
        assert_eq!(scope.exact().collect::<Vec<_>>(), ["acme/api"]);
        assert_eq!(scope.glob_owners(), ["acme", "acme-labs"]);
    }

    #[test]
    fn malformed_patterns_are_named() {
        for (pattern, why) in [
            ("acme", "no `/`"),
            ("/api", "one owner"),
            ("acme/", "one owner"),
            ("a/b/c", "one owner"),
            ("*/api", "the owner cannot be a glob"),
        ] {
            let err = RepositoryScope::new([pattern]).expect_err(pattern);
            assert!(err.to_string().contains(why), "{pattern}: {err}");
            assert!(err.to_string().contains(pattern), "{err}");
        }
        assert!(RepositoryScope::new([]).is_err());
    }
}
