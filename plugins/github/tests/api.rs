//! The plugin's API paths through the real process against a local GitHub API that
//! serves recorded responses (see `support::server`): collection with pagination,
//! check, rate limits, failures, App installation tokens.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::server::{Fault, FixtureServer, REPO};
use support::*;

fn token(value: &str) -> plugin_kit::v1::Credential {
    credential("token", "api-key", &json!(value).to_string())
}

async fn configured(
    server: &FixtureServer,
    credentials: Vec<plugin_kit::v1::Credential>,
) -> plugin_kit::testing::PluginUnderTest {
    let roles: serde_json::Map<String, Value> = credentials
        .iter()
        .map(|c| (c.name.clone(), json!(c.name)))
        .collect();
    let mut plugin = start().await;
    plugin
        .configure(
            "acme",
            "gh",
            json!({
                "repositories": [REPO],
                "credentials": roles,
                "api_url": server.url,
                "backfill_since": "2000-01-01T00:00:00Z"
            }),
            credentials,
        )
        .await
        .expect("configure");
    plugin
}

fn events_of(batches: &[plugin_kit::v1::EventBatch]) -> Vec<Value> {
    batches
        .iter()
        .flat_map(|b| &b.events_json)
        .map(|e| serde_json::from_str(e).expect("json"))
        .collect()
}

#[tokio::test]
async fn collect_pages_through_commits_and_reads_pulls_and_deployments() {
    let server = FixtureServer::start(250).await;
    let mut plugin = configured(&server, vec![token("good-token")]).await;
    let batches = plugin.collect("").await.expect("collect");
    let events = events_of(&batches);
    let count = |kind: &str| events.iter().filter(|e| e["type"] == kind).count();
    assert_eq!(
        count("com.betalogs.delivery.commit"),
        250,
        "three pages of 100"
    );
    assert_eq!(count("com.betalogs.delivery.pull_request.merged"), 1);
    assert_eq!(
        count("com.betalogs.delivery.deployment"),
        2,
        "both deployments"
    );
    let statuses: Vec<&Value> = events
        .iter()
        .filter(|e| e["data"]["deployment.status"].is_string())
        .collect();
    assert_eq!(statuses.len(), 2, "one status read for each deployment");
    for status in statuses {
        assert!(
            events
                .iter()
                .any(|d| d["type"] == "com.betalogs.delivery.deployment"
                    && d["data"]["deployment.id"] == status["data"]["deployment.id"]),
            "{status}"
        );
    }
    let commit_pages = server
        .world()
        .requests
        .iter()
        .filter(|(path, _, _)| path.ends_with("/commits"))
        .count();
    assert_eq!(commit_pages, 3, "followed the Link headers to the end");
    let schema = schema();
    for event in &events {
        assert!(schema.is_valid(event), "{event}");
        assert_eq!(event["data"]["service.name"], "hello-world");
        assert!(
            event["data"]["links"]
                .as_array()
                .is_some_and(|l| !l.is_empty())
        );
    }
    // The last batch carries the repository's cursor; collecting again from it reads
    // only the overlap, and ids are the same (the pipeline keeps one of each).
    let cursor = batches.last().expect("batches").cursor.clone();
    let parsed: Value = serde_json::from_str(&cursor).expect("cursor JSON");
    assert!(parsed["repositories"][REPO].is_u64(), "{cursor}");
    let again = plugin.collect(&cursor).await.expect("collect again");
    let first_ids: std::collections::HashSet<_> = events.iter().map(|e| e["id"].clone()).collect();
    assert!(
        events_of(&again)
            .iter()
            .all(|e| first_ids.contains(&e["id"]))
    );
}

#[tokio::test]
async fn a_bad_token_fails_with_githubs_message_and_check_names_it() {
    let server = FixtureServer::start(3).await;
    let mut plugin = configured(&server, vec![token("wrong"), webhook_secret("s", None)]).await;
    let check = plugin.check().await.expect("check answers");
    assert!(!check.ok);
    let failed: Vec<_> = check.results.iter().filter(|r| !r.ok).collect();
    assert!(
        failed
            .iter()
            .any(|r| r.resource == REPO && r.message.contains("Bad credentials")),
        "{failed:?}"
    );
    let err = plugin.collect("").await.expect_err("collect fails");
    assert!(err.to_string().contains("401"), "{err}");
}

#[tokio::test]
async fn check_names_an_inaccessible_repository_and_the_permission() {
    let server = FixtureServer::start(3).await;
    let mut plugin = start().await;
    plugin
        .configure(
            "acme",
            "gh",
            json!({
                "repositories": [REPO, "octokit-fixture-org/secret-repo"],
                "credentials": {"token": "token", "webhook_secret": "webhook_secret"},
                "api_url": server.url
            }),
            vec![token("good-token"), webhook_secret("s", None)],
        )
        .await
        .expect("configure");
    let check = plugin.check().await.expect("check");
    assert!(!check.ok);
    let failed: Vec<_> = check.results.iter().filter(|r| !r.ok).collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].resource, "octokit-fixture-org/secret-repo");
    assert_eq!(failed[0].permission, "metadata");
    assert!(
        failed[0].message.contains("not found or not readable"),
        "{failed:?}"
    );
    for permission in ["metadata", "contents", "pull_requests", "deployments"] {
        assert!(
            check
                .results
                .iter()
                .any(|r| r.ok && r.resource == REPO && r.permission == permission),
            "{permission}"
        );
    }
}

#[tokio::test]
async fn rate_limits_and_outages_are_waited_out() {
    for (fault, count, at_least) in [
        (Fault::PrimaryLimit, 1, Duration::from_millis(500)),
        (Fault::SecondaryLimit, 2, Duration::from_secs(2)),
        (Fault::Unavailable, 2, Duration::ZERO),
    ] {
        let server = FixtureServer::start(5).await;
        let mut plugin = configured(&server, vec![token("good-token")]).await;
        server.fail_next(fault, count);
        let started = std::time::Instant::now();
        let batches = plugin
            .collect("")
            .await
            .expect("collect succeeds after the wait");
        assert_eq!(
            events_of(&batches)
                .iter()
                .filter(|e| e["type"] == "com.betalogs.delivery.commit")
                .count(),
            5,
            "{fault:?}"
        );
        assert!(
            started.elapsed() >= at_least,
            "{fault:?} waited {:?}",
            started.elapsed()
        );
        assert_eq!(
            server.world().fault_count,
            0,
            "{fault:?}: every fault was met"
        );
        let status = plugin.status().await.expect("status");
        assert_eq!(status[0].breaker, "closed", "{fault:?}");
    }
}

#[tokio::test]
async fn app_installation_tokens_are_renewed_before_they_expire() {
    let server = FixtureServer::start(3).await;
    server.world().token_lifetime_ms = 3_000;
    let key = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/test-app-key.pem"),
    )
    .expect("key");
    let app = credential(
        "app",
        "github-app",
        &json!({"app_id": 7, "installation_id": 42, "private_key": key}).to_string(),
    );
    let mut plugin = configured(&server, vec![app.clone(), webhook_secret("s", None)]).await;
    let check = plugin.check().await.expect("check");
    assert!(check.ok, "{:?}", check.results);
    // Calls for about three token lifetimes: every one carries a valid token.
    let until = std::time::Instant::now() + Duration::from_secs(8);
    while std::time::Instant::now() < until {
        plugin.collect("").await.expect("collect");
    }
    let (refused, minted) = {
        let world = server.world();
        (world.refused_tokens, world.minted)
    };
    assert_eq!(refused, 0, "no call carried an expired token");
    assert!(minted >= 3, "renewed {minted} times");

    // The credential manager's path: RenewCredential returns the credential with a
    // fresh installation token and its expiry.
    let renewed = plugin
        .renew(plugin_kit::v1::RenewCredentialRequest {
            tenant: "acme".into(),
            integration: "gh".into(),
            config_json: json!({"repositories": [REPO], "api_url": server.url}).to_string(),
            credential: Some(app),
        })
        .await
        .expect("renew");
    let secret: Value = serde_json::from_slice(&renewed.secret).expect("json");
    assert!(
        secret["installation_token"]
            .as_str()
            .is_some_and(|t| t.starts_with("ghs_"))
    );
    assert_eq!(secret["app_id"], 7, "the same shape, with the token added");
    assert!(renewed.expires_unix_ms > support::server::now_ms());
    assert_eq!(
        secret["expires_at"].as_u64(),
        Some(renewed.expires_unix_ms / 1000)
    );
}

#[tokio::test]
async fn enrich_finds_the_commit_its_pull_request_and_deployments() {
    let server = FixtureServer::start(10).await;
    let mut plugin = configured(&server, vec![token("good-token")]).await;
    let sha = server.world().commits[0]["sha"]
        .as_str()
        .expect("sha")
        .to_owned();
    let answer = plugin
        .enrich(&json!({
            "tenant": "acme",
            "time": "2026-11-25T10:00:00Z",
            "data": {"vcs.repository.name": REPO, "vcs.ref.head.revision": sha}
        }))
        .await
        .expect("enrich");
    let enrichments: Vec<Value> = answer
        .enrichments_json
        .iter()
        .map(|e| serde_json::from_str(e).expect("json"))
        .collect();
    let kinds: Vec<&str> = enrichments
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert_eq!(
        kinds,
        ["commit", "pull_request", "deployment"],
        "{enrichments:?}"
    );
    assert_eq!(
        enrichments[0]["links"][0]["url"],
        format!("https://github.com/{REPO}/commit/{sha}")
    );
    assert!(
        enrichments[1]["links"][0]["url"]
            .as_str()
            .is_some_and(|u| u.contains("/pull/"))
    );
    for enrichment in &enrichments {
        assert_eq!(enrichment["source"]["tenant"], "acme");
        assert_eq!(enrichment["source"]["plugin"], "github");
        assert!(enrichment["reason"].as_str().is_some_and(|r| !r.is_empty()));
    }
}

#[tokio::test]
async fn enrich_names_the_deployment_before_a_failure_and_its_suspect_commits() {
    let server = FixtureServer::start(10).await;
    let mut plugin = configured(&server, vec![token("good-token")]).await;
    let environment = support::server::deployment_list(&server.world())[0]["environment"]
        .as_str()
        .expect("environment")
        .to_owned();
    let base = std::time::UNIX_EPOCH + Duration::from_secs(server.world().base_secs);
    let now = humantime::format_rfc3339_seconds(base).to_string();
    let answer = plugin
        .enrich(&json!({
            "tenant": "acme",
            "time": now,
            "data": {"service.name": "hello-world", "deployment.environment": environment}
        }))
        .await
        .expect("enrich");
    let enrichments: Vec<Value> = answer
        .enrichments_json
        .iter()
        .map(|e| serde_json::from_str(e).expect("json"))
        .collect();
    assert_eq!(enrichments.len(), 2, "{enrichments:?}");
    let deployment = &enrichments[0];
    assert_eq!(deployment["kind"], "deployment");
    assert!(
        deployment["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("deployed 10 min before")),
        "{deployment}"
    );
    let suspects = &enrichments[1];
    assert_eq!(suspects["kind"], "suspect_commits");
    // The latest deployment shipped commit 0, the one before commit 3: commits 0-2 are
    // new, listed newest first.
    let world = server.world();
    let expected: Vec<String> = (0..3)
        .map(|i| {
            format!(
                "https://github.com/{REPO}/commit/{}",
                world.commits[i]["sha"].as_str().expect("sha")
            )
        })
        .collect();
    let links: Vec<&str> = suspects["links"]
        .as_array()
        .expect("links")
        .iter()
        .filter_map(|l| l["url"].as_str())
        .collect();
    assert_eq!(links, expected);
}

#[tokio::test]
async fn enrich_answers_the_supervisors_ask_for_suspect_commits() {
    let server = FixtureServer::start(10).await;
    let mut plugin = configured(&server, vec![token("good-token")]).await;
    let (sha, environment) = {
        let world = server.world();
        let sha = |i: usize| world.commits[i]["sha"].as_str().expect("sha").to_owned();
        let environment = support::server::deployment_list(&world)[0]["environment"]
            .as_str()
            .expect("environment")
            .to_owned();
        ((0..10).map(sha).collect::<Vec<String>>(), environment)
    };
    let ask = |data: Value| {
        let mut data = data;
        data["enrichment.want"] = json!("suspect_commits");
        data["vcs.repository.name"] = json!(REPO);
        json!({"tenant": "acme", "time": "2026-11-25T10:00:00Z", "data": data})
    };
    let suspects = |answer: plugin_kit::v1::EnrichResponse| -> Vec<Value> {
        answer
            .enrichments_json
            .iter()
            .map(|e| serde_json::from_str(e).expect("json"))
            .collect()
    };
    // Base and head given: the commits between them, newest first, one entry each.
    let given = suspects(
        plugin
            .enrich(&ask(
                json!({"vcs.ref.head.revision": sha[1], "vcs.ref.base.revision": sha[5]}),
            ))
            .await
            .expect("enrich"),
    );
    let shas: Vec<&str> = given
        .iter()
        .filter_map(|e| e["data"]["sha"].as_str())
        .collect();
    assert_eq!(shas, [&sha[1], &sha[2], &sha[3], &sha[4]], "{given:?}");
    for entry in &given {
        assert_eq!(entry["kind"], "suspect_commit");
        assert_eq!(entry["source"]["tenant"], "acme");
        assert_eq!(
            entry["links"][0]["url"],
            format!(
                "https://github.com/{REPO}/commit/{}",
                entry["data"]["sha"].as_str().expect("sha")
            )
        );
        assert!(
            entry["reason"]
                .as_str()
                .is_some_and(|r| r.contains("shipped by the deployment"))
        );
    }
    // No base: the deployment before the head's, from the deployments (commit 3).
    let found = suspects(
        plugin
            .enrich(&ask(
                json!({"vcs.ref.head.revision": sha[0], "deployment.environment": environment}),
            ))
            .await
            .expect("enrich"),
    );
    let shas: Vec<&str> = found
        .iter()
        .filter_map(|e| e["data"]["sha"].as_str())
        .collect();
    assert_eq!(shas, [&sha[0], &sha[1], &sha[2]], "{found:?}");
    // No deployment before: the head alone.
    let alone = suspects(
        plugin
            .enrich(&ask(json!({"vcs.ref.head.revision": sha[7]})))
            .await
            .expect("enrich"),
    );
    assert_eq!(alone.len(), 1);
    assert_eq!(alone[0]["data"]["sha"], json!(sha[7]));
    // Something else wanted: nothing, and nothing asked of GitHub.
    let before = server.world().requests.len();
    let other = plugin
        .enrich(&json!({"tenant": "acme", "data": {"enrichment.want": "metric_values", "service.name": "hello-world"}}))
        .await
        .expect("enrich");
    assert!(other.enrichments_json.is_empty());
    assert_eq!(server.world().requests.len(), before);
    // A hostile base is refused before any request.
    match plugin
        .enrich(&ask(
            json!({"vcs.ref.head.revision": sha[0], "vcs.ref.base.revision": "main/../../x"}),
        ))
        .await
    {
        Err(plugin_kit::testing::HarnessError::Call(status)) => {
            assert_eq!(
                status.code() as i32,
                tonic_code::INVALID_ARGUMENT,
                "{status:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(server.world().requests.len(), before);
}

#[tokio::test]
async fn enrich_refuses_other_tenants_other_repositories_and_odd_shas() {
    let server = FixtureServer::start(3).await;
    let mut plugin = configured(&server, vec![token("good-token")]).await;
    let sha = "c0ffee0000000000000000000000000000000000";
    for (event, code) in [
        (
            json!({"tenant": "globex", "data": {"vcs.repository.name": REPO, "vcs.ref.head.revision": sha}}),
            tonic_code::PERMISSION_DENIED,
        ),
        (
            json!({"tenant": "acme", "data": {"vcs.repository.name": "octokit-fixture-org/other", "vcs.ref.head.revision": sha}}),
            tonic_code::PERMISSION_DENIED,
        ),
        (
            json!({"tenant": "acme", "data": {"vcs.repository.name": REPO, "vcs.ref.head.revision": "../../orgs/x"}}),
            tonic_code::INVALID_ARGUMENT,
        ),
        (
            json!({"tenant": "acme", "data": {}}),
            tonic_code::INVALID_ARGUMENT,
        ),
    ] {
        match plugin.enrich(&event).await {
            Err(plugin_kit::testing::HarnessError::Call(status)) => {
                assert_eq!(status.code() as i32, code, "{event}: {status:?}")
            }
            other => panic!("{event}: {other:?}"),
        }
    }
    let paths: Vec<String> = server
        .world()
        .requests
        .iter()
        .map(|(p, _, _)| p.clone())
        .collect();
    assert!(paths.is_empty(), "nothing was asked of GitHub: {paths:?}");
}

/// gRPC status codes (as numbers: the tests do not depend on tonic).
mod tonic_code {
    pub const INVALID_ARGUMENT: i32 = 3;
    pub const PERMISSION_DENIED: i32 = 7;
}

#[tokio::test]
async fn a_glob_reads_only_the_repositories_it_covers() {
    let server = FixtureServer::start(3).await;
    let mut plugin = start().await;
    plugin
        .configure(
            "acme",
            "gh",
            json!({
                "repositories": ["octokit-fixture-org/hello-*"],
                "credentials": {"token": "token"},
                "api_url": server.url,
                "backfill_since": "2000-01-01T00:00:00Z"
            }),
            vec![token("good-token")],
        )
        .await
        .expect("configure");
    let events = events_of(&plugin.collect("").await.expect("collect"));
    assert!(!events.is_empty());
    for event in &events {
        assert_eq!(event["data"]["vcs.repository.name"], REPO, "{event}");
    }
    let paths: Vec<String> = server
        .world()
        .requests
        .iter()
        .map(|(p, _, _)| p.clone())
        .collect();
    assert!(
        paths.iter().any(|p| p == "/orgs/octokit-fixture-org/repos"),
        "{paths:?}"
    );
    assert!(
        !paths.iter().any(|p| p.contains("secret-repo")),
        "the listed repository outside the scope is never read: {paths:?}"
    );
}

#[tokio::test]
async fn check_names_a_permission_the_app_installation_lacks() {
    let server = FixtureServer::start(3).await;
    server.world().permissions =
        json!({"metadata": "read", "contents": "read", "pull_requests": "none"});
    let key = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/test-app-key.pem"),
    )
    .expect("key");
    let app = credential(
        "app",
        "github-app",
        &json!({"app_id": 7, "installation_id": 42, "private_key": key}).to_string(),
    );
    let mut plugin = configured(&server, vec![app, webhook_secret("s", None)]).await;
    let check = plugin.check().await.expect("check");
    assert!(!check.ok);
    let failed: Vec<(&str, &str)> = check
        .results
        .iter()
        .filter(|r| !r.ok)
        .map(|r| (r.permission.as_str(), r.message.as_str()))
        .collect();
    assert_eq!(
        failed,
        [
            (
                "pull_requests",
                "the installation has `pull_requests: none`; `read` is needed"
            ),
            ("deployments", "the installation lacks `deployments: read`"),
        ]
    );
}
