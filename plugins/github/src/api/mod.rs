//! The GitHub REST API through plugin-kit's [`ResilientHttp`]: one client per
//! integration, so one token's rate-limit budget and one circuit breaker cover all of
//! its repositories. Primary limits (`x-ratelimit-remaining: 0` with
//! `x-ratelimit-reset`) and secondary limits (403/429 with `retry-after`) are waited
//! out by the retry policy; 401 and 404 are permanent and named.
//!
//! Responses are untrusted: bodies are read up to [`MAX_BODY`], pagination follows
//! only `Link` URLs on the API's own origin (a link elsewhere would carry the token
//! there), and error messages quote at most a short printable excerpt.

pub mod auth;

use std::time::Duration;

use plugin_kit::ErrorClass;
use plugin_kit::resilience::{
    BreakerSettings, CallError, Resilience, ResilientHttp, RetryPolicy, rate_budget, reqwest_class,
};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde_json::Value;
use serde_json::value::RawValue;

use auth::TokenSource;

/// The largest response body read.
pub const MAX_BODY: usize = 32 * 1024 * 1024;
/// Items per page (GitHub's maximum).
pub const PER_PAGE: u32 = 100;
/// GitHub allows 5,000 requests an hour per token; requests are spread so that a
/// backfill does not spend it in a minute (the retry policy still honours the
/// rate-limit headers).
const REQUESTS_PER_SECOND: u32 = 10;

/// Why an API call failed; names the path and GitHub's own message.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("GET/POST {path}: GitHub refused the credential (401 {message})")]
    Unauthorized { path: String, message: String },
    #[error("{path}: not found, or not accessible with this credential (404)")]
    NotFound { path: String },
    #[error("{path}: forbidden ({status} {message})")]
    Forbidden {
        path: String,
        status: u16,
        message: String,
    },
    #[error("{path}: GitHub answered {status}: {message}")]
    Status {
        path: String,
        status: u16,
        message: String,
    },
    #[error("{path}: {why}")]
    Response { path: String, why: String },
    #[error("credential: {0}")]
    Credential(String),
    #[error("{message}")]
    Call { message: String, class: ErrorClass },
}

impl ApiError {
    /// What kind of failure this is, for the supervisor's health of the integration.
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::Unauthorized { .. } => ErrorClass::Auth,
            // GitHub answers 404 for a repository the token may not see.
            Self::NotFound { .. } => ErrorClass::Permission,
            Self::Forbidden { status: 429, .. } => ErrorClass::RateLimited,
            Self::Forbidden { message, .. }
                if message.to_ascii_lowercase().contains("rate limit") =>
            {
                ErrorClass::RateLimited
            }
            Self::Forbidden { .. } => ErrorClass::Permission,
            Self::Status { status, .. } => {
                ErrorClass::from_http_status(*status).unwrap_or(ErrorClass::Internal)
            }
            Self::Response { .. } => ErrorClass::InvalidData,
            Self::Credential(_) => ErrorClass::Config,
            Self::Call { class, .. } => *class,
        }
    }

    /// This error as the status of a plugin call, its class included.
    pub fn to_status(&self) -> plugin_kit::Status {
        self.class().status(self.to_string())
    }
}

/// One page of a list: its items and the next page's URL.
#[derive(Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

/// The API client of one integration.
#[derive(Debug)]
pub struct GitHubApi {
    http: ResilientHttp,
    base: String,
    origin: String,
    tokens: TokenSource,
}

/// Printable, short excerpt of untrusted text.
fn excerpt(text: &str) -> String {
    text.chars()
        .take(200)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// A server's message as an error may quote it: an excerpt, unless it repeats any part
/// of the credential that was sent (a server that echoes requests would otherwise hand
/// the token back through the CLI).
fn remote_message(text: &str, authorization: &SecretString) -> String {
    const WINDOW: usize = 8;
    let sent = authorization.expose_secret();
    let secret = sent
        .split_once(' ')
        .map_or(sent, |(_, credential)| credential)
        .as_bytes();
    let repeats = secret.len() >= WINDOW
        && secret
            .windows(WINDOW)
            .any(|part| text.as_bytes().windows(WINDOW).any(|seen| seen == part));
    if repeats {
        return "(the server's message is withheld: it repeats the credential)".to_owned();
    }
    excerpt(text)
}

/// `scheme://host[:port]` of a URL.
fn origin_of(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    match url[after_scheme..].find('/') {
        Some(slash) => &url[..after_scheme + slash],
        None => url,
    }
}

/// The `rel="next"` URL of a `Link` header.
pub fn next_link(link: &str) -> Option<&str> {
    link.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        let is_next = params
            .split(';')
            .any(|p| p.trim().replace(' ', "") == "rel=\"next\"");
        is_next.then(|| url.trim().trim_start_matches('<').trim_end_matches('>'))
    })
}

impl GitHubApi {
    pub fn new(base: &str, tokens: TokenSource) -> Result<Self, ApiError> {
        let resilience = Resilience::new(
            origin_of(base)
                .trim_start_matches("https://")
                .trim_start_matches("http://"),
            RetryPolicy {
                max_attempts: 4,
                base: Duration::from_millis(250),
                cap: Duration::from_secs(10),
                max_wait: Duration::from_secs(90),
            },
            BreakerSettings::default(),
        )
        .with_budget(rate_budget(REQUESTS_PER_SECOND, REQUESTS_PER_SECOND));
        let http = ResilientHttp::new(resilience, Duration::from_secs(30)).map_err(|e| {
            ApiError::Call {
                message: format!("cannot build the HTTP client: {e}"),
                class: ErrorClass::Internal,
            }
        })?;
        Ok(Self {
            http,
            base: base.to_owned(),
            origin: origin_of(base).to_owned(),
            tokens,
        })
    }

    pub fn resilience(&self) -> &Resilience {
        self.http.resilience()
    }

    pub fn tokens(&self) -> &TokenSource {
        &self.tokens
    }

    fn url(&self, path_or_url: &str) -> Result<String, ApiError> {
        if path_or_url.starts_with('/') {
            return Ok(format!("{}{path_or_url}", self.base));
        }
        if origin_of(path_or_url) == self.origin && path_or_url.len() > self.origin.len() {
            return Ok(path_or_url.to_owned());
        }
        Err(ApiError::Response {
            path: excerpt(path_or_url),
            why: format!(
                "a link outside the API's origin {} is not followed",
                self.origin
            ),
        })
    }

    /// Sends one request with `authorization`; the body of a success, or the error.
    async fn send(
        &self,
        method: reqwest::Method,
        path_or_url: &str,
        authorization: &SecretString,
    ) -> Result<(reqwest::header::HeaderMap, Vec<u8>), ApiError> {
        let url = self.url(path_or_url)?;
        let path = path_or_url
            .strip_prefix(&self.origin)
            .unwrap_or(path_or_url)
            .to_owned();
        let response = self
            .http
            .send(|client| {
                client
                    .request(method.clone(), &url)
                    .header("accept", "application/vnd.github+json")
                    .header("x-github-api-version", "2022-11-28")
                    .header("user-agent", "betalogs-integration-github")
                    .header("authorization", authorization.expose_secret())
            })
            .await
            .map_err(|err| match err {
                CallError::Failed {
                    cause: source,
                    attempts,
                    ..
                } => ApiError::Call {
                    class: reqwest_class(&source),
                    message: format!(
                        "{path}: the request failed after {attempts} attempt(s): {}",
                        source.without_url()
                    ),
                },
                other => ApiError::Call {
                    class: ErrorClass::Unavailable,
                    message: format!("{path}: {other}"),
                },
            })?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = read_limited(response, &path).await?;
        if (200..300).contains(&status) {
            return Ok((headers, body));
        }
        let message = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| {
                v.get("message")
                    .and_then(Value::as_str)
                    .map(|m| remote_message(m, authorization))
            })
            .unwrap_or_default();
        Err(match status {
            401 => ApiError::Unauthorized { path, message },
            404 => ApiError::NotFound { path },
            403 | 429 => ApiError::Forbidden {
                path,
                status,
                message,
            },
            _ => ApiError::Status {
                path,
                status,
                message,
            },
        })
    }

    /// A JSON request with an explicit `Authorization` (the App's JWT).
    pub async fn request_json<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        authorization: &SecretString,
    ) -> Result<T, ApiError> {
        let (_, body) = self.send(method, path, authorization).await?;
        serde_json::from_slice(&body).map_err(|e| not_expected(path, &e))
    }

    /// `GET` with the integration's credential: the headers and the body.
    async fn get_bytes(
        &self,
        path_or_url: &str,
    ) -> Result<(reqwest::header::HeaderMap, Vec<u8>), ApiError> {
        let authorization = self.tokens.authorization(self).await?;
        self.send(reqwest::Method::GET, path_or_url, &authorization)
            .await
    }

    /// `GET` with the integration's credential, as JSON.
    pub async fn get(
        &self,
        path_or_url: &str,
    ) -> Result<(reqwest::header::HeaderMap, Value), ApiError> {
        let (headers, body) = self.get_bytes(path_or_url).await?;
        let value = serde_json::from_slice(&body).map_err(|e| not_expected(path_or_url, &e))?;
        Ok((headers, value))
    }

    /// One page of a list endpoint (a JSON array, or an object holding one under
    /// `array_key`, as `/installation/repositories` does).
    pub async fn page(
        &self,
        path_or_url: &str,
        array_key: Option<&str>,
    ) -> Result<Page<Value>, ApiError> {
        let (headers, value) = self.get(path_or_url).await?;
        let items = match (value, array_key) {
            (Value::Array(items), None) => items,
            (Value::Object(mut object), Some(key)) => match object.remove(key) {
                Some(Value::Array(items)) => items,
                _ => {
                    return Err(ApiError::Response {
                        path: excerpt(path_or_url),
                        why: format!("the response has no `{key}` list"),
                    });
                }
            },
            _ => {
                return Err(ApiError::Response {
                    path: excerpt(path_or_url),
                    why: "the response is not a list".to_owned(),
                });
            }
        };
        Ok(Page {
            items,
            next: next_of(&headers),
        })
    }

    /// One page of a JSON array endpoint, each item kept as its JSON text (the events
    /// copy it into `original` as it is).
    pub async fn page_raw(&self, path_or_url: &str) -> Result<Page<Box<RawValue>>, ApiError> {
        let (headers, body) = self.get_bytes(path_or_url).await?;
        let items: Vec<Box<RawValue>> =
            serde_json::from_slice(&body).map_err(|e| not_expected(path_or_url, &e))?;
        Ok(Page {
            items,
            next: next_of(&headers),
        })
    }
}

fn not_expected(path_or_url: &str, err: &serde_json::Error) -> ApiError {
    ApiError::Response {
        path: excerpt(path_or_url),
        why: format!("the response is not the expected JSON ({err})"),
    }
}

/// The next page's URL, from the `Link` header.
fn next_of(headers: &reqwest::header::HeaderMap) -> Option<String> {
    headers
        .get("link")
        .and_then(|v| v.to_str().ok())
        .and_then(next_link)
        .map(str::to_owned)
}

async fn read_limited(mut response: reqwest::Response, path: &str) -> Result<Vec<u8>, ApiError> {
    if response
        .content_length()
        .is_some_and(|n| n > MAX_BODY as u64)
    {
        return Err(ApiError::Response {
            path: path.to_owned(),
            why: format!("the response is larger than {MAX_BODY} bytes"),
        });
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| {
        let class = reqwest_class(&e);
        ApiError::Call {
            message: format!("{path}: reading the response failed: {}", e.without_url()),
            class,
        }
    })? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(ApiError::Response {
                path: path.to_owned(),
                why: format!("the response is larger than {MAX_BODY} bytes"),
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_that_repeats_the_credential_is_withheld() {
        let sent = SecretString::from("Bearer ghp_abcdefghijklmnopqrstuvwxyz012345".to_owned());
        let echoed = "you sent Authorization: Bearer ghp_abcdefghijklmnopqrstuvwxyz012345";
        let part = "partial: mnopqrstuvwx";
        for text in [echoed, part] {
            let shown = remote_message(text, &sent);
            assert!(!shown.contains("mnopqrst"), "{shown}");
            assert!(shown.contains("withheld"), "{shown}");
        }
        assert_eq!(remote_message("Bad credentials", &sent), "Bad credentials");
    }

    #[test]
    fn next_links_are_read_from_github_link_headers() {
        let link = r#"<https://api.github.com/repositories/1000/issues?per_page=3&page=1>; rel="prev", <https://api.github.com/repositories/1000/issues?per_page=3&page=3>; rel="next", <https://api.github.com/repositories/1000/issues?per_page=3&page=5>; rel="last""#;
        assert_eq!(
            next_link(link),
            Some("https://api.github.com/repositories/1000/issues?per_page=3&page=3")
        );
        assert_eq!(next_link(r#"<https://x/1>; rel="last""#), None);
        assert_eq!(next_link("garbage"), None);
        assert_eq!(next_link(""), None);
    }

    #[test]
    fn links_off_the_api_origin_are_not_followed() {
        let api = GitHubApi::new(
            "https://ghe.example.com/api/v3",
            TokenSource::Token(SecretString::from("t".to_owned())),
        )
        .expect("client");
        assert_eq!(
            api.url("/repos/a/b").expect("path"),
            "https://ghe.example.com/api/v3/repos/a/b"
        );
        assert!(
            api.url("https://ghe.example.com/api/v3/repositories/1?page=2")
                .is_ok()
        );
        for hostile in [
            "https://evil.example.com/api/v3/repos",
            "https://ghe.example.com.evil.net/x",
            "http://ghe.example.com/api/v3/repos",
            "https://ghe.example.com",
        ] {
            assert!(api.url(hostile).is_err(), "{hostile}");
        }
    }
}
