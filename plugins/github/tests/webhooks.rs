//! Webhook deliveries through the real plugin process: every public example payload of
//! `@octokit/webhooks-examples`, GitHub's signature test vector, rotation, scope.

mod support;

use serde_json::{Value, json};
use support::*;

/// The mapped types: the plugin's own list.
const MAPPED: [&str; 6] = integration_github::settings::SUPPORTED_EVENT_TYPES;

/// Configured to cover every repository an example names.
async fn configured(previous: Option<&str>) -> plugin_kit::testing::PluginUnderTest {
    let mut owners: Vec<String> = webhook_examples()
        .iter()
        .filter_map(|(_, p)| {
            p.pointer("/repository/full_name")?
                .as_str()
                .map(str::to_owned)
        })
        .filter_map(|full| Some(format!("{}/*", full.split('/').next()?)))
        .collect();
    owners.sort();
    owners.dedup();
    let mut plugin = start().await;
    plugin
        .configure(
            "acme",
            "gh",
            json!({
                "repositories": owners,
                "credentials": {"webhook_secret": "hook"},
                "service_map": {"Codertocat/Hello-World": "hello"}
            }),
            vec![webhook_secret(SECRET, previous)],
        )
        .await
        .expect("configure");
    plugin
}

#[tokio::test]
async fn every_public_example_maps_to_valid_events_or_is_ignored() {
    let examples = webhook_examples();
    assert!(examples.len() > 300, "{} examples", examples.len());
    let schema = schema();
    let mut plugin = configured(None).await;
    let (mut mapped, mut ignored, mut events) = (0, 0, 0);
    for (index, (event, payload)) in examples.iter().enumerate() {
        let body = serde_json::to_vec(payload).expect("json");
        let signature = sign(SECRET, &body);
        let delivery = format!("delivery-{index}");
        let answer = plugin
            .webhook(&headers(event, &delivery, &signature), body)
            .await
            .expect("the plugin answers every example");
        let action = payload.get("action").and_then(Value::as_str).unwrap_or("");
        match answer.status {
            202 => {
                assert!(MAPPED.contains(&event.as_str()), "{event}/{action} mapped");
                assert!(!answer.events_json.is_empty(), "{event}/{action}");
                mapped += 1;
                for json in &answer.events_json {
                    let value: Value = serde_json::from_str(json).expect("event JSON");
                    let errors: Vec<String> =
                        schema.iter_errors(&value).map(|e| e.to_string()).collect();
                    assert!(errors.is_empty(), "{event}/{action}: {errors:?}\n{value}");
                    assert_eq!(value["tenant"], "acme");
                    let links = value["data"]["links"].as_array().expect("links");
                    assert!(links.len() >= 2, "{event}: evidence links {links:?}");
                    let repo_url = payload["repository"]["html_url"]
                        .as_str()
                        .expect("repo url");
                    let delivered = payload.to_string();
                    for link in links {
                        let url = link["url"].as_str().expect("url");
                        // Evidence is a page of the repository, or a URL the delivery
                        // itself gave (a commit's, a run's, a deployment's log).
                        assert!(url.starts_with("https://"), "{event}: {url}");
                        assert!(
                            url.starts_with(repo_url) || delivered.contains(url),
                            "{event}: {url} is neither the repository's nor from the payload"
                        );
                    }
                    let service = value["data"]["service.name"].as_str().expect("service");
                    if payload["repository"]["full_name"] == "Codertocat/Hello-World" {
                        assert_eq!(service, "hello", "service_map applies");
                    }
                    events += 1;
                }
            }
            200 => {
                assert!(answer.events_json.is_empty());
                assert!(
                    answer.message.starts_with("ignored") || event == "ping",
                    "{event}/{action}: {}",
                    answer.message
                );
                ignored += 1;
            }
            other => panic!("{event}/{action}: status {other}: {}", answer.message),
        }
    }
    // The mapped types' examples with a mapped action (see the README's table).
    assert!(mapped >= 30, "mapped {mapped}");
    assert!(ignored > 250, "ignored {ignored}");
    eprintln!("{mapped} mapped into {events} events, {ignored} ignored");
}

#[tokio::test]
async fn a_push_maps_to_the_push_and_one_event_per_commit() {
    let (_, push) = webhook_examples()
        .into_iter()
        .find(|(e, p)| e == "push" && p["commits"].as_array().is_some_and(|c| !c.is_empty()))
        .expect("a push with commits");
    let mut plugin = configured(None).await;
    let body = serde_json::to_vec(&push).expect("json");
    let answer = plugin
        .webhook(&headers("push", "d-1", &sign(SECRET, &body)), body.clone())
        .await
        .expect("answer");
    assert_eq!(answer.status, 202, "{}", answer.message);
    let commits = push["commits"].as_array().expect("commits");
    assert_eq!(answer.events_json.len(), 1 + commits.len());
    let first: Value = serde_json::from_str(&answer.events_json[1]).expect("json");
    assert_eq!(first["type"], "com.betalogs.delivery.commit");
    assert_eq!(first["data"]["vcs.ref.head.revision"], commits[0]["id"]);
    assert_eq!(
        first["data"]["original"], commits[0],
        "the commit is its original"
    );
    // A redelivery (same body, same X-GitHub-Delivery) yields the same event ids, which
    // the pipeline drops as duplicates.
    let again = plugin
        .webhook(&headers("push", "d-1", &sign(SECRET, &body)), body)
        .await
        .expect("answer");
    let ids = |events: &[String]| -> Vec<String> {
        events
            .iter()
            .map(|e| {
                serde_json::from_str::<Value>(e).expect("json")["id"]
                    .as_str()
                    .expect("id")
                    .to_owned()
            })
            .collect()
    };
    assert_eq!(ids(&answer.events_json), ids(&again.events_json));
}

#[tokio::test]
async fn deployment_failures_are_failure_events() {
    let examples = webhook_examples();
    let (_, status) = examples
        .iter()
        .find(|(e, _)| e == "deployment_status")
        .expect("a deployment_status example");
    let mut plugin = configured(None).await;
    for (state, severity) in [
        ("failure", "error"),
        ("error", "critical"),
        ("success", "info"),
    ] {
        let mut payload = status.clone();
        payload["deployment_status"]["state"] = json!(state);
        let body = serde_json::to_vec(&payload).expect("json");
        let answer = plugin
            .webhook(
                &headers("deployment_status", state, &sign(SECRET, &body)),
                body,
            )
            .await
            .expect("answer");
        let event: Value = serde_json::from_str(&answer.events_json[0]).expect("json");
        assert_eq!(event["severity"], severity, "{state}");
        assert_eq!(
            event["data"]["deployment.environment"],
            payload["deployment"]["environment"]
        );
        let kind = if state == "success" {
            "succeeded"
        } else {
            "failed"
        };
        assert_eq!(
            event["type"],
            format!("com.betalogs.delivery.deployment.{kind}")
        );
    }
}

#[tokio::test]
async fn githubs_signature_test_vector_and_its_flipped_bytes() {
    // docs.github.com, "Validating webhook deliveries": this secret and body give this
    // signature.
    const VECTOR: &str = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    let body = b"Hello, World!".to_vec();
    assert_eq!(sign(SECRET, &body), VECTOR);
    let mut plugin = configured(None).await;
    let answer = plugin
        .webhook(&headers("ping", "v", VECTOR), body.clone())
        .await
        .expect("answer");
    // Verified; then the body is refused for not being JSON, not for its signature.
    assert_eq!(answer.status, 400, "{}", answer.message);
    assert!(answer.message.contains("not JSON"), "{}", answer.message);

    let mut flipped_body = body.clone();
    flipped_body[0] ^= 1;
    let mut flipped_signature = VECTOR.to_owned().into_bytes();
    let last = flipped_signature.len() - 1;
    flipped_signature[last] = if flipped_signature[last] == b'7' {
        b'8'
    } else {
        b'7'
    };
    let flipped_signature = String::from_utf8(flipped_signature).expect("ascii");
    for (label, signature, body) in [
        ("body", VECTOR.to_owned(), flipped_body),
        ("signature", flipped_signature, body.clone()),
        (
            "secret",
            sign("It's a Secret to Everybodz", &body),
            body.clone(),
        ),
        ("missing", String::new(), body.clone()),
        (
            "no prefix",
            VECTOR.trim_start_matches("sha256=").to_owned(),
            body.clone(),
        ),
        ("sha1", "sha1=0123".to_owned(), body.clone()),
        (
            "huge",
            format!("sha256={}", "a".repeat(10_000)),
            body.clone(),
        ),
    ] {
        let mut headers = headers("ping", "v", &signature);
        if signature.is_empty() {
            headers.retain(|(name, _)| *name != "x-hub-signature-256");
        }
        let answer = plugin.webhook(&headers, body).await.expect("answer");
        assert_eq!(answer.status, 401, "{label}: {}", answer.message);
        assert!(answer.events_json.is_empty());
        assert!(
            !answer.message.contains("Secret"),
            "{label}: no secret in {}",
            answer.message
        );
    }
}

#[tokio::test]
async fn the_previous_secret_verifies_during_rotation() {
    let mut plugin = configured(Some("the old one")).await;
    let body = br#"{"zen":"Keep it logically awesome.","hook_id":1}"#.to_vec();
    for secret in [SECRET, "the old one"] {
        let answer = plugin
            .webhook(&headers("ping", "r", &sign(secret, &body)), body.clone())
            .await
            .expect("answer");
        assert_eq!(answer.status, 200, "{secret}: {}", answer.message);
    }
    let answer = plugin
        .webhook(&headers("ping", "r", &sign("older still", &body)), body)
        .await
        .expect("answer");
    assert_eq!(answer.status, 401);
}

#[tokio::test]
async fn repositories_outside_the_scope_are_refused() {
    let (_, push) = webhook_examples()
        .into_iter()
        .find(|(e, _)| e == "push")
        .expect("a push");
    let mut plugin = start().await;
    plugin
        .configure(
            "acme",
            "gh",
            json!({"repositories": ["acme/api", "acme/web-*"], "credentials": {"webhook_secret": "hook"}}),
            vec![webhook_secret(SECRET, None)],
        )
        .await
        .expect("configure");
    let body = serde_json::to_vec(&push).expect("json");
    let answer = plugin
        .webhook(&headers("push", "x", &sign(SECRET, &body)), body)
        .await
        .expect("answer");
    assert_eq!(answer.status, 403, "{}", answer.message);
    assert!(answer.events_json.is_empty());
    assert!(answer.message.contains("not covered"), "{}", answer.message);

    let mut inside = push.clone();
    inside["repository"]["full_name"] = json!("acme/web-shop");
    let body = serde_json::to_vec(&inside).expect("json");
    let answer = plugin
        .webhook(&headers("push", "y", &sign(SECRET, &body)), body)
        .await
        .expect("answer");
    assert_eq!(answer.status, 202, "{}", answer.message);
}

/// (label, body, header overrides (empty: removed), status, message part)
type HostileCase = (
    &'static str,
    Vec<u8>,
    Vec<(&'static str, String)>,
    u32,
    &'static str,
);

#[tokio::test]
async fn hostile_deliveries_are_refused_with_the_reason() {
    let mut plugin = configured(None).await;
    let cases: Vec<HostileCase> = vec![
        ("not json", b"{\"a\":".to_vec(), vec![], 400, "not JSON"),
        ("array", b"[1,2]".to_vec(), vec![], 400, "not a JSON object"),
        ("no event header", b"{}".to_vec(), vec![("x-github-event", String::new())], 400, "X-GitHub-Event"),
        ("odd event", b"{}".to_vec(), vec![("x-github-event", "push\u{7}; rm".to_owned())], 400, "not an event name"),
        ("no delivery", b"{}".to_vec(), vec![("x-github-delivery", String::new())], 400, "X-GitHub-Delivery"),
        ("push without ref", br#"{"repository":{"full_name":"Codertocat/Hello-World","html_url":"https://github.com/Codertocat/Hello-World"}}"#.to_vec(), vec![], 400, "`ref`"),
        ("deep nesting", format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes(), vec![], 400, "not a JSON object"),
        // Nesting is skipped without recursion (serde_json), wherever it is.
        (
            "deep nesting in a field",
            format!(
                r#"{{"ref":{}{},"repository":{{"full_name":"Codertocat/Hello-World","html_url":"https://github.com/Codertocat/Hello-World"}}}}"#,
                "[".repeat(100_000),
                "]".repeat(100_000)
            )
            .into_bytes(),
            vec![],
            400,
            "expected a string",
        ),
    ];
    for (label, body, overrides, status, needle) in cases {
        let signature = sign(SECRET, &body);
        let mut headers: Vec<(&str, String)> = headers("push", "h", &signature)
            .into_iter()
            .map(|(n, v)| (n, v.to_owned()))
            .collect();
        for (name, value) in overrides {
            headers.retain(|(n, _)| *n != name);
            if !value.is_empty() {
                headers.push((name, value));
            }
        }
        let borrowed: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let answer = plugin.webhook(&borrowed, body).await.expect("answer");
        assert_eq!(answer.status, status, "{label}: {}", answer.message);
        assert!(
            answer.message.contains(needle),
            "{label}: {}",
            answer.message
        );
        assert!(!answer.message.contains('\u{7}'), "{label}: printable");
    }
    assert!(plugin.health().await.expect("health"), "still serving");
}

#[tokio::test]
async fn form_encoded_deliveries_and_disabled_types() {
    let mut plugin = start().await;
    plugin
        .configure(
            "acme",
            "gh",
            json!({"repositories": ["Codertocat/*"], "credentials": {"webhook_secret": "hook"}, "enabled_event_types": ["deployment"]}),
            vec![webhook_secret(SECRET, None)],
        )
        .await
        .expect("configure");
    let examples = webhook_examples();
    let (_, deployment) = examples
        .iter()
        .find(|(e, _)| e == "deployment")
        .expect("deployment");
    let form = format!(
        "payload={}",
        form_encode(&serde_json::to_string(deployment).expect("json"))
    );
    let mut headers = headers("deployment", "f", "");
    let signature = sign(SECRET, form.as_bytes());
    headers[2].1 = &signature;
    headers[3].1 = "application/x-www-form-urlencoded";
    let answer = plugin
        .webhook(&headers, form.into_bytes())
        .await
        .expect("answer");
    assert_eq!(answer.status, 202, "{}", answer.message);

    let (_, push) = examples.iter().find(|(e, _)| e == "push").expect("push");
    let body = serde_json::to_vec(push).expect("json");
    let answer = plugin
        .webhook(&support::headers("push", "p", &sign(SECRET, &body)), body)
        .await
        .expect("answer");
    assert_eq!(answer.status, 200);
    assert!(answer.message.contains("not enabled"), "{}", answer.message);
}

fn form_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
