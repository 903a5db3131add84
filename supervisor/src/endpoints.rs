//! Which endpoints a tenant's integration may send its credentials to. A tenant writes
//! URLs into its configuration (`api_url`, `endpoint_url`); without a check it could aim
//! the plugin, and the token stored for it, at any server, including the host's own
//! loopback services. The operator decides: `integrations.allowed_endpoints` lists
//! `scheme://host[:port]` patterns (`*.` matches any subdomains; a missing port is the
//! scheme's default, `:*` any port). The default is the shipped plugins' public service
//! endpoints only; loopback and private addresses pass only when listed.

use serde_json::Value;

/// The public endpoints of the shipped plugins' services.
pub const DEFAULT_ALLOWED: &[&str] = &[
    "https://api.github.com",
    "https://*.amazonaws.com",
    "https://*.amazonaws.com.cn",
    "https://*.api.aws",
];

/// A compiled allow list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedEndpoints {
    patterns: Vec<Pattern>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    text: String,
    scheme: String,
    /// `api.github.com`, or `.amazonaws.com` for `*.amazonaws.com`.
    host: String,
    any_subdomain: bool,
    /// `None`: any port.
    port: Option<u16>,
}

fn default_port(scheme: &str) -> u16 {
    if scheme == "https" { 443 } else { 80 }
}

impl AllowedEndpoints {
    /// Compiles `patterns`; the error names the one that is not a pattern.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Self, String> {
        let patterns = patterns
            .iter()
            .map(|text| compile(text.as_ref()))
            .collect::<Result<_, _>>()?;
        Ok(Self { patterns })
    }

    fn allows(&self, url: &reqwest::Url) -> bool {
        let scheme = url.scheme();
        let Some(host) = url.host_str().map(|h| h.to_ascii_lowercase()) else {
            return false;
        };
        let port = url.port_or_known_default().unwrap_or(default_port(scheme));
        self.patterns.iter().any(|p| {
            p.scheme == scheme
                && p.port.is_none_or(|allowed| allowed == port)
                && if p.any_subdomain {
                    host.ends_with(&p.host) && host.len() > p.host.len()
                } else {
                    host == p.host
                }
        })
    }

    /// Refuses the first URL in `config` (any string that is an absolute http(s) URL, at
    /// any depth) that no pattern allows, naming where it is. URLs at `labels` (paths
    /// like `routes[*].links[*].url`, which the plugin's manifest says it never
    /// requests) are not endpoints and pass.
    pub fn check(&self, config: &Value, labels: &[String]) -> Result<(), String> {
        let mut refused = None;
        walk(config, "", &mut |path, text| {
            if refused.is_some() || labels.iter().any(|label| path_matches(label, path)) {
                return;
            }
            let lower = text.trim().to_ascii_lowercase();
            if !(lower.starts_with("http://") || lower.starts_with("https://")) {
                return;
            }
            let allowed = reqwest::Url::parse(text.trim()).is_ok_and(|url| self.allows(&url));
            if !allowed {
                refused = Some(format!(
                    "`{path}` points to {}, which is not an endpoint this daemon allows (integrations.allowed_endpoints: {}); ask the operator to allow it",
                    shown(text),
                    self.patterns
                        .iter()
                        .map(|p| p.text.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        });
        refused.map_or(Ok(()), Err)
    }
}

/// The URL as a message may show it: scheme, host and port, never a path or user info
/// (which could hold a secret).
pub(crate) fn shown(text: &str) -> String {
    match reqwest::Url::parse(text.trim()) {
        Ok(url) => format!(
            "{}://{}{}",
            url.scheme(),
            url.host_str().unwrap_or("?"),
            url.port().map(|p| format!(":{p}")).unwrap_or_default()
        ),
        Err(_) => "a URL that does not parse".to_owned(),
    }
}

fn compile(text: &str) -> Result<Pattern, String> {
    let bad = |why: &str| {
        format!(
            "allowed endpoint `{text}` {why}: use `https://host`, `https://*.domain` or `http://host:port`"
        )
    };
    let (scheme, rest) = text.split_once("://").ok_or_else(|| bad("has no scheme"))?;
    if scheme != "http" && scheme != "https" {
        return Err(bad("is not http or https"));
    }
    let rest = rest.trim_end_matches('/');
    if rest.contains('/') || rest.is_empty() {
        return Err(bad("has a path"));
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, "*")) => (host, None),
        Some((host, port)) => (
            host,
            Some(
                port.parse::<u16>()
                    .map_err(|_| bad("has a port that is not a number"))?,
            ),
        ),
        None => (rest, Some(default_port(scheme))),
    };
    let host = host.to_ascii_lowercase();
    let (host, any_subdomain) = match host.strip_prefix("*.") {
        Some(domain) if !domain.is_empty() => (format!(".{domain}"), true),
        _ => (host, false),
    };
    if host.is_empty() || host.contains('*') {
        return Err(bad("has a misplaced `*`"));
    }
    Ok(Pattern {
        text: text.to_owned(),
        scheme: scheme.to_owned(),
        host,
        any_subdomain,
        port,
    })
}

/// Whether `path` (`routes[2].links[0].url`) is the one `pattern` names, where `[*]` in
/// the pattern stands for any index.
fn path_matches(pattern: &str, path: &str) -> bool {
    let (mut pattern, mut path) = (pattern.as_bytes(), path.as_bytes());
    loop {
        match (pattern.strip_prefix(b"[*]"), path.first()) {
            (Some(rest), Some(b'[')) => {
                let Some(close) = path.iter().position(|&b| b == b']') else {
                    return false;
                };
                if !path[1..close].iter().all(u8::is_ascii_digit) || close == 1 {
                    return false;
                }
                pattern = rest;
                path = &path[close + 1..];
            }
            _ => match (pattern.split_first(), path.split_first()) {
                (None, None) => return true,
                (Some((a, pattern_rest)), Some((b, path_rest))) if a == b => {
                    pattern = pattern_rest;
                    path = path_rest;
                }
                _ => return false,
            },
        }
    }
}

/// Calls `visit` with each string in `value` and its JSON path (`accounts[1].endpoint_url`).
fn walk(value: &Value, path: &str, visit: &mut dyn FnMut(&str, &str)) {
    match value {
        Value::String(text) => visit(path, text),
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                walk(item, &format!("{path}[{index}]"), visit);
            }
        }
        Value::Object(map) => {
            for (key, item) in map {
                let inner = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                walk(item, &inner, visit);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_default_allows_the_public_endpoints_only() {
        let allowed = AllowedEndpoints::new(DEFAULT_ALLOWED).expect("patterns");
        for good in [
            json!({"api_url": "https://api.github.com"}),
            json!({"accounts": [{"endpoint_url": "https://monitoring.eu-west-1.amazonaws.com"}]}),
            json!({"name": "not a url", "n": 3}),
        ] {
            allowed.check(&good, &[]).expect("allowed");
        }
        for (bad, path) in [
            (json!({"api_url": "http://127.0.0.1:9000/echo"}), "api_url"),
            (
                json!({"api_url": "https://api.github.com.evil.example"}),
                "api_url",
            ),
            (json!({"api_url": "http://api.github.com"}), "api_url"),
            (json!({"api_url": "https://api.github.com:8443"}), "api_url"),
            (
                json!({"accounts": [{}, {"endpoint_url": "http://169.254.169.254"}]}),
                "accounts[1].endpoint_url",
            ),
            (json!({"api_url": "https://amazonaws.com"}), "api_url"),
            (
                json!({"api_url": "https://user:token@10.0.0.1/x?secret=1"}),
                "api_url",
            ),
        ] {
            let err = allowed.check(&bad, &[]).expect_err(&bad.to_string());
            assert!(err.contains(&format!("`{path}`")), "{err}");
            assert!(!err.contains("token") && !err.contains("secret=1"), "{err}");
        }
    }

    #[test]
    fn operators_allow_their_own_hosts_and_ports() {
        let allowed =
            AllowedEndpoints::new(&["https://ghe.example.com", "http://127.0.0.1:*"]).expect("ok");
        allowed
            .check(&json!({"api_url": "https://GHE.example.com/api/v3"}), &[])
            .expect("listed host");
        allowed
            .check(&json!({"api_url": "http://127.0.0.1:4567"}), &[])
            .expect("any loopback port");
        assert!(
            allowed
                .check(&json!({"api_url": "http://127.0.0.2:1"}), &[])
                .is_err()
        );
        for pattern in ["ftp://x", "https://x/path", "https://*", "https://a:port"] {
            assert!(AllowedEndpoints::new(&[pattern]).is_err(), "{pattern}");
        }
    }

    #[test]
    fn urls_a_plugin_only_writes_into_events_are_not_endpoints() {
        let allowed = AllowedEndpoints::new(DEFAULT_ALLOWED).expect("patterns");
        let labels = vec!["source".to_owned(), "routes[*].links[*].url".to_owned()];
        let config = json!({
            "source": "https://status.example.com",
            "routes": [{"links": [{"rel": "a", "url": "https://x.example/{/id}"}, {"url": "http://10.0.0.1/"}]}],
        });
        allowed.check(&config, &labels).expect("labels only");
        let err = allowed
            .check(
                &json!({"routes": [{"api_url": "https://status.example.com"}]}),
                &labels,
            )
            .expect_err("not a label");
        assert!(err.contains("`routes[0].api_url`"), "{err}");
        assert!(path_matches(
            "routes[*].links[*].url",
            "routes[12].links[0].url"
        ));
        assert!(!path_matches("routes[*].url", "routes[].url"));
        assert!(!path_matches("routes[*].url", "routes[x].url"));
        assert!(!path_matches("source", "source2"));
        assert!(!path_matches("source", "sourc"));
    }
}
