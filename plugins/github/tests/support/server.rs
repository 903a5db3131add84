//! A local GitHub API for the plugin's tests. Repository reads answer with the response
//! `@octokit/fixtures` recorded from api.github.com (`get-repository`); commit, pull
//! request and deployment lists are built from GitHub's own webhook example objects
//! (`@octokit/webhooks-examples`: the same shapes the REST API returns), paginated
//! with `Link` headers as GitHub writes them. Faults are switched on per test.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::{npm_fixture, webhook_examples};

pub const REPO: &str = "octokit-fixture-org/hello-world";

/// A fault answered to the next `count` API requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    /// 403 with `x-ratelimit-remaining: 0` and a reset one second ahead.
    PrimaryLimit,
    /// 429 with `retry-after: 1`.
    SecondaryLimit,
    /// 502.
    Unavailable,
}

#[derive(Debug)]
pub struct World {
    pub fault: Fault,
    pub fault_count: usize,
    /// Commits on the default branch, newest first.
    pub commits: Vec<Value>,
    /// Tokens the server accepts: personal ones never expire.
    pub tokens: Vec<(String, u64)>,
    pub token_lifetime_ms: u64,
    pub minted: usize,
    /// Requests carrying an unknown or expired token.
    pub refused_tokens: usize,
    pub requests: Vec<(String, Option<String>, u64)>,
    pub public_key: Vec<u8>,
    /// Unix seconds the deployments' times count back from (fixed at start).
    pub base_secs: u64,
    /// What minted installation tokens may do.
    pub permissions: Value,
}

pub use plugin_kit::clock::now_ms;

pub struct FixtureServer {
    pub url: String,
    pub world: Arc<Mutex<World>>,
}

impl FixtureServer {
    pub async fn start(commit_count: usize) -> Self {
        let world = Arc::new(Mutex::new(World {
            fault: Fault::None,
            fault_count: 0,
            commits: commits(commit_count),
            tokens: vec![("good-token".to_owned(), u64::MAX)],
            token_lifetime_ms: 60 * 60 * 1000,
            minted: 0,
            refused_tokens: 0,
            requests: Vec::new(),
            base_secs: now_ms() / 1000,
            permissions: json!({"metadata": "read", "contents": "read", "pull_requests": "read", "deployments": "read"}),
            // Beside this file, wherever the crate that includes it lives.
            public_key: include_bytes!("../fixtures/test-app-key.pub.pem").to_vec(),
        }));
        let app = axum::Router::new()
            .route("/app/installations/{id}/access_tokens", post(mint))
            .route("/repos/{owner}/{repo}", get(repository))
            .route("/orgs/{org}/repos", get(organization_repositories))
            .route("/installation/repositories", get(installation_repositories))
            .route("/repos/{owner}/{repo}/commits", get(list_commits))
            .route("/repos/{owner}/{repo}/commits/{sha}", get(one_commit))
            .route(
                "/repos/{owner}/{repo}/commits/{sha}/pulls",
                get(commit_pulls),
            )
            .route("/repos/{owner}/{repo}/compare/{range}", get(compare))
            .route("/repos/{owner}/{repo}/pulls", get(pulls))
            .route("/repos/{owner}/{repo}/deployments", get(deployments))
            .route(
                "/repos/{owner}/{repo}/deployments/{id}/statuses",
                get(statuses),
            )
            .with_state(world.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address: SocketAddr = listener.local_addr().expect("address");
        tokio::spawn(async move {
            axum::serve(listener, app).await.expect("serve");
        });
        Self {
            url: format!("http://{address}"),
            world,
        }
    }

    pub fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.world.lock().expect("world")
    }

    pub fn fail_next(&self, fault: Fault, count: usize) {
        let mut world = self.world();
        world.fault = fault;
        world.fault_count = count;
    }
}

/// `count` commits in the REST API's shape, from the example pushes' commits.
fn commits(count: usize) -> Vec<Value> {
    let template = webhook_examples()
        .into_iter()
        .find_map(|(e, p)| {
            (e == "push")
                .then(|| p["commits"].as_array()?.first().cloned())
                .flatten()
        })
        .expect("an example commit");
    (0..count)
        .map(|i| {
            let sha = format!("{:040x}", 0xc0ffee_u64 + i as u64);
            json!({
                "sha": sha,
                "html_url": format!("https://github.com/{REPO}/commit/{sha}"),
                "commit": {
                    "message": format!("{} #{i}", template["message"].as_str().unwrap_or("change")),
                    "author": {"name": template["author"]["name"], "email": template["author"]["email"], "date": template["timestamp"]},
                    "committer": {"name": template["author"]["name"], "date": template["timestamp"]}
                },
                "author": {"login": template["author"]["username"]}
            })
        })
        .collect()
}

fn example(event: &str, action: Option<&str>, key: &str) -> Value {
    webhook_examples()
        .into_iter()
        .find(|(e, p)| e == event && action.is_none_or(|a| p["action"] == a))
        .map(|(_, p)| p[key].clone())
        .expect("an example")
}

/// Checks the token and takes a fault off the queue; `Some` answer ends the request.
fn gate(world: &Arc<Mutex<World>>, headers: &HeaderMap, path: &str) -> Option<Response> {
    let mut world = world.lock().expect("world");
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("token "))
        .map(str::to_owned);
    let now = now_ms();
    world.requests.push((path.to_owned(), token.clone(), now));
    let valid = token.as_deref().is_some_and(|t| {
        world
            .tokens
            .iter()
            .any(|(known, expires)| known == t && now < *expires)
    });
    if !valid {
        world.refused_tokens += 1;
        return Some(
            (
                StatusCode::UNAUTHORIZED,
                axum::Json(json!({"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest", "status": "401"})),
            )
                .into_response(),
        );
    }
    if world.fault_count == 0 {
        return None;
    }
    world.fault_count -= 1;
    let reset = (now / 1000 + 1).to_string();
    Some(match world.fault {
        Fault::None => return None,
        Fault::PrimaryLimit => (
            StatusCode::FORBIDDEN,
            [
                ("x-ratelimit-remaining", "0".to_owned()),
                ("x-ratelimit-reset", reset),
            ],
            axum::Json(json!({"message": "API rate limit exceeded for user ID 1."})),
        )
            .into_response(),
        Fault::SecondaryLimit => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "1".to_owned())],
            axum::Json(json!({"message": "You have exceeded a secondary rate limit."})),
        )
            .into_response(),
        Fault::Unavailable => (StatusCode::BAD_GATEWAY, "bad gateway").into_response(),
    })
}

fn is_repo(owner: &str, repo: &str) -> bool {
    format!("{owner}/{repo}").eq_ignore_ascii_case(REPO)
}

fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(
            json!({"message": "Not Found", "documentation_url": "https://docs.github.com/rest"}),
        ),
    )
        .into_response()
}

/// The recorded repository, and a copy of it named `secret-repo`: an organization
/// with one repository the integration covers and one it does not.
fn organization() -> Vec<Value> {
    let recorded = recorded_repository();
    let mut secret = recorded.clone();
    secret["name"] = json!("secret-repo");
    secret["full_name"] = json!("octokit-fixture-org/secret-repo");
    secret["html_url"] = json!("https://github.com/octokit-fixture-org/secret-repo");
    vec![recorded, secret]
}

async fn organization_repositories(
    State(world): State<Arc<Mutex<World>>>,
    Path(org): Path<String>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let base = format!("/orgs/{org}/repos");
    if let Some(answer) = gate(&world, &headers, &base) {
        return answer;
    }
    paged(&organization(), &query, &base, &headers)
}

async fn installation_repositories(
    State(world): State<Arc<Mutex<World>>>,
    headers: HeaderMap,
) -> Response {
    if let Some(answer) = gate(&world, &headers, "/installation/repositories") {
        return answer;
    }
    let list = organization();
    axum::Json(json!({"total_count": list.len(), "repositories": list})).into_response()
}

fn recorded_repository() -> Value {
    let text = std::fs::read_to_string(npm_fixture(
        "@octokit/fixtures/scenarios/api.github.com/get-repository/normalized-fixture.json",
    ))
    .expect("fixture");
    let recorded: Value = serde_json::from_str(&text).expect("json");
    let recorded = recorded
        .as_array()
        .map_or(recorded.clone(), |a| a[0].clone());
    recorded["response"].clone()
}

/// The recorded `GET /repos/octokit-fixture-org/hello-world` of `@octokit/fixtures`.
async fn repository(
    State(world): State<Arc<Mutex<World>>>,
    Path((owner, repo)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Some(answer) = gate(&world, &headers, &format!("/repos/{owner}/{repo}")) {
        return answer;
    }
    if !is_repo(&owner, &repo) {
        return not_found();
    }
    axum::Json(recorded_repository()).into_response()
}

/// A page of `items` with GitHub's `Link` header.
fn paged(
    items: &[Value],
    query: &std::collections::HashMap<String, String>,
    base: &str,
    headers: &HeaderMap,
) -> Response {
    let per_page: usize = query
        .get("per_page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(30)
        .clamp(1, 100);
    let page: usize = query
        .get("page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(1)
        .max(1);
    let last = items.len().div_ceil(per_page).max(1);
    let slice: Vec<Value> = items
        .iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .cloned()
        .collect();
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let mut rest: Vec<String> = query
        .iter()
        .filter(|(k, _)| *k != "page")
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    rest.sort();
    let link = |n: usize, rel: &str| {
        format!(
            "<http://{host}{base}?{}&page={n}>; rel=\"{rel}\"",
            rest.join("&")
        )
    };
    let mut links = Vec::new();
    if page > 1 {
        links.push(link(page - 1, "prev"));
    }
    if page < last {
        links.push(link(page + 1, "next"));
        links.push(link(last, "last"));
    }
    let mut response = axum::Json(slice).into_response();
    if !links.is_empty() {
        response.headers_mut().insert(
            "link",
            HeaderValue::from_str(&links.join(", ")).expect("header"),
        );
    }
    response
}

async fn list_commits(
    State(world): State<Arc<Mutex<World>>>,
    Path((owner, repo)): Path<(String, String)>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let base = format!("/repos/{owner}/{repo}/commits");
    if let Some(answer) = gate(&world, &headers, &base) {
        return answer;
    }
    if !is_repo(&owner, &repo) {
        return not_found();
    }
    let commits = world.lock().expect("world").commits.clone();
    paged(&commits, &query, &base, &headers)
}

/// The closed example, merged (the examples' closed ones were closed unmerged), and
/// recently updated, so a poll's window covers it.
pub fn merged_pull() -> Value {
    let mut pull = example("pull_request", Some("closed"), "pull_request");
    pull["merged"] = json!(true);
    pull["merged_at"] = pull["closed_at"].clone();
    pull["updated_at"] = json!(humantime::format_rfc3339_seconds(SystemTime::now()).to_string());
    pull
}

async fn pulls(
    State(world): State<Arc<Mutex<World>>>,
    Path((owner, repo)): Path<(String, String)>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let base = format!("/repos/{owner}/{repo}/pulls");
    if let Some(answer) = gate(&world, &headers, &base) {
        return answer;
    }
    paged(&[merged_pull()], &query, &base, &headers)
}

/// Two deployments of the example's environment, newest first: the latest (10 minutes
/// before `base_secs`) ships commit 0, the one before (3 hours before) shipped commit 3.
pub fn deployment_list(world: &World) -> Vec<Value> {
    let example = example("deployment", None, "deployment");
    let ago = |minutes: u64| {
        let at = UNIX_EPOCH + std::time::Duration::from_secs(world.base_secs - minutes * 60);
        humantime::format_rfc3339_seconds(at).to_string()
    };
    let sha = |i: usize| {
        world
            .commits
            .get(i)
            .map_or(json!("0000000"), |c| c["sha"].clone())
    };
    let mut latest = example.clone();
    latest["created_at"] = json!(ago(10));
    latest["sha"] = sha(0);
    let mut previous = example;
    previous["id"] = json!(previous["id"].as_u64().unwrap_or(1) - 1);
    previous["created_at"] = json!(ago(180));
    previous["sha"] = sha(3);
    vec![latest, previous]
}

async fn deployments(
    State(world): State<Arc<Mutex<World>>>,
    Path((owner, repo)): Path<(String, String)>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let base = format!("/repos/{owner}/{repo}/deployments");
    if let Some(answer) = gate(&world, &headers, &base) {
        return answer;
    }
    let list: Vec<Value> = deployment_list(&world.lock().expect("world"))
        .into_iter()
        .filter(|d| query.get("sha").is_none_or(|s| d["sha"] == json!(s)))
        .filter(|d| {
            query
                .get("environment")
                .is_none_or(|e| d["environment"] == json!(e))
        })
        .collect();
    paged(&list, &query, &base, &headers)
}

async fn one_commit(
    State(world): State<Arc<Mutex<World>>>,
    Path((owner, repo, sha)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Some(answer) = gate(
        &world,
        &headers,
        &format!("/repos/{owner}/{repo}/commits/{sha}"),
    ) {
        return answer;
    }
    let world = world.lock().expect("world");
    match world.commits.iter().find(|c| c["sha"] == json!(sha)) {
        Some(commit) => axum::Json(commit.clone()).into_response(),
        None => not_found(),
    }
}

async fn commit_pulls(
    State(world): State<Arc<Mutex<World>>>,
    Path((owner, repo, sha)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Some(answer) = gate(
        &world,
        &headers,
        &format!("/repos/{owner}/{repo}/commits/{sha}/pulls"),
    ) {
        return answer;
    }
    axum::Json(vec![merged_pull()]).into_response()
}

/// `base...head`: the commits after `base` up to `head`, oldest first, as GitHub lists them.
async fn compare(
    State(world): State<Arc<Mutex<World>>>,
    Path((owner, repo, range)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Some(answer) = gate(
        &world,
        &headers,
        &format!("/repos/{owner}/{repo}/compare/{range}"),
    ) {
        return answer;
    }
    let Some((base, head)) = range.split_once("...") else {
        return not_found();
    };
    let world = world.lock().expect("world");
    let at = |sha: &str| world.commits.iter().position(|c| c["sha"] == json!(sha));
    let (Some(head), Some(base)) = (at(head), at(base)) else {
        return not_found();
    };
    let mut commits: Vec<Value> = world.commits[head..base].to_vec();
    commits.reverse();
    axum::Json(json!({"status": "ahead", "ahead_by": commits.len(), "commits": commits}))
        .into_response()
}

async fn statuses(
    State(world): State<Arc<Mutex<World>>>,
    Path((owner, repo, id)): Path<(String, String, u64)>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let base = format!("/repos/{owner}/{repo}/deployments/{id}/statuses");
    if let Some(answer) = gate(&world, &headers, &base) {
        return answer;
    }
    let status = example("deployment_status", None, "deployment_status");
    paged(&[status], &query, &base, &headers)
}

/// Mints an installation token for a JWT signed by the test App's key.
async fn mint(
    State(world): State<Arc<Mutex<World>>>,
    Path(id): Path<u64>,
    headers: HeaderMap,
) -> Response {
    let mut world = world.lock().expect("world");
    let jwt = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_owned();
    let key = octocrab::jsonwebtoken::DecodingKey::from_rsa_pem(&world.public_key).expect("key");
    let mut validation =
        octocrab::jsonwebtoken::Validation::new(octocrab::jsonwebtoken::Algorithm::RS256);
    // `iss` is the App id, a number, checked below.
    validation.set_required_spec_claims(&["exp", "iat"]);
    validation.validate_aud = false;
    let claims = octocrab::jsonwebtoken::decode::<Value>(&jwt, &key, &validation);
    let claims = match claims {
        Ok(claims) => claims,
        Err(err) => {
            return (
                StatusCode::UNAUTHORIZED,
                axum::Json(
                    json!({"message": format!("A JSON web token could not be decoded: {err}")}),
                ),
            )
                .into_response();
        }
    };
    assert_eq!(claims.claims["iss"], json!(7), "the App id is the issuer");
    assert_eq!(id, 42, "the configured installation");
    world.minted += 1;
    let token = format!("ghs_{}", world.minted);
    let expires = now_ms() + world.token_lifetime_ms;
    world.tokens.push((token.clone(), expires));
    let expires_at =
        humantime::format_rfc3339_millis(UNIX_EPOCH + std::time::Duration::from_millis(expires))
            .to_string();
    (
        StatusCode::CREATED,
        axum::Json(json!({
            "token": token,
            "expires_at": expires_at,
            "permissions": world.permissions,
            "repository_selection": "selected"
        })),
    )
        .into_response()
}
