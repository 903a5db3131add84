//! The plugin's mapping against published payloads: GitLab's documented examples through
//! the `gitlab` preset, a service configured with TOML alone, and hostile deliveries.

use serde_json::{Value, json};

use super::*;
use plugin_kit::signature::Authentication;

const SECRET: &str = "gitlab-secret-token";
const RECEIVED: &str = "2026-12-01T10:00:00Z";

fn fixture(name: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/gitlab/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn secrets() -> WebhookSecrets {
    WebhookSecrets {
        current: SECRET.to_owned().into(),
        previous: None,
    }
}

fn instance(config: Value) -> Integration {
    let settings: Settings = serde_json::from_value(config).expect("settings");
    let context = MapContext {
        tenant: "acme".into(),
        integration: "gitlab".into(),
    };
    Integration::new(context, settings, secrets()).expect("compiles")
}

fn delivery(headers: &[(&str, &str)], body: &str) -> v1::WebhookRequest {
    plugin_kit::testing::webhook_request(headers, body)
}

fn gitlab(event: &str, body: &str) -> v1::WebhookResponse {
    let instance = instance(json!({"preset": "gitlab"}));
    answer(
        &instance,
        &delivery(
            &[
                ("X-Gitlab-Token", SECRET),
                ("X-Gitlab-Event", event),
                (
                    "X-Gitlab-Event-UUID",
                    "8d2a1c6e-0b5f-4c2a-9f3e-1a2b3c4d5e6f",
                ),
            ],
            body,
        ),
        RECEIVED,
    )
}

fn canonical() -> jsonschema::Validator {
    let schema: Value =
        serde_json::from_str(plugin_protocol::CANONICAL_EVENT_SCHEMA_V1).expect("schema");
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("compiles")
}

/// The events of an answer, each valid against the canonical schema.
fn events(answer: &v1::WebhookResponse) -> Vec<Value> {
    assert_eq!(answer.status, 202, "{}", answer.message);
    let schema = canonical();
    answer
        .events_json
        .iter()
        .map(|raw| {
            let event: Value = serde_json::from_str(raw).expect("JSON");
            let errors: Vec<String> = schema.iter_errors(&event).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "{errors:?} in {event:#}");
            event
        })
        .collect()
}

fn link<'a>(event: &'a Value, rel: &str) -> Option<&'a str> {
    event["data"]["links"]
        .as_array()?
        .iter()
        .find(|l| l["rel"] == rel)?["url"]
        .as_str()
}

#[test]
fn gitlabs_push_example_is_a_push_and_one_event_per_commit() {
    let events = events(&gitlab("Push Hook", &fixture("push")));
    assert_eq!(events.len(), 3, "the push and its two commits");
    let push = &events[0];
    assert_eq!(push["type"], "com.betalogs.delivery.push");
    assert_eq!(push["source"], "http://example.com/mike/diaspora");
    assert_eq!(push["time"], "2011-12-12T14:27:31+02:00");
    assert_eq!(push["subject"], "refs/heads/master");
    assert_eq!(push["data"]["service.name"], "Diaspora");
    assert_eq!(
        push["data"]["vcs.change.commits"], 4,
        "a number stays a number"
    );
    assert_eq!(
        link(push, "compare"),
        Some(
            "http://example.com/mike/diaspora/-/compare/95790bf891e76fee5e1747ab589903a6a1f80f22...da1560886d4f094c3e6c9ef40349f7d38b5d27d7"
        )
    );
    let commit = &events[2];
    assert_eq!(commit["type"], "com.betalogs.delivery.commit");
    assert_eq!(
        commit["data"]["vcs.ref.head.revision"],
        "da1560886d4f094c3e6c9ef40349f7d38b5d27d7"
    );
    assert_eq!(commit["data"]["vcs.commit.author"], "GitLab dev user");
    assert_eq!(
        link(commit, "commit"),
        Some("http://example.com/mike/diaspora/commit/da1560886d4f094c3e6c9ef40349f7d38b5d27d7")
    );
    assert_eq!(
        commit["data"]["original"]["id"],
        "da1560886d4f094c3e6c9ef40349f7d38b5d27d7"
    );
    assert_eq!(
        push["data"]["original"]["object_kind"], "push",
        "the whole delivery kept"
    );
}

#[test]
fn gitlabs_tag_deployment_and_release_examples_map_with_working_links() {
    let tag = events(&gitlab("Tag Push Hook", &fixture("tag_push")));
    assert_eq!(tag.len(), 1, "no commits: the tag alone");
    assert_eq!(tag[0]["type"], "com.betalogs.delivery.tag");
    assert_eq!(tag[0]["time"], RECEIVED, "no commit time: the receipt time");

    let deployment = events(&gitlab("Deployment Hook", &fixture("deployment")));
    assert_eq!(deployment.len(), 1);
    let deployment = &deployment[0];
    assert_eq!(
        deployment["type"],
        "com.betalogs.delivery.deployment.succeeded"
    );
    assert_eq!(
        deployment["time"], "2021-04-28T21:50:00+02:00",
        "GitLab's time, as RFC 3339"
    );
    assert_eq!(deployment["data"]["deployment.environment"], "staging");
    assert_eq!(deployment["data"]["deployment.id"], 15);
    assert_eq!(
        deployment["data"]["service.name"],
        "test-deployment-webhooks"
    );
    assert_eq!(
        link(deployment, "deployment"),
        Some("http://10.126.0.2:3000/root/test-deployment-webhooks/-/jobs/796")
    );

    let failed = fixture("deployment").replace("\"status\": \"success\"", "\"status\": \"failed\"");
    let failed = &events(&gitlab("Deployment Hook", &failed))[0];
    assert_eq!(failed["type"], "com.betalogs.delivery.deployment.failed");
    assert_eq!(failed["severity"], "error");
    assert_ne!(failed["id"], deployment["id"], "another fact, another id");

    let release = &events(&gitlab("Release Hook", &fixture("release")))[0];
    assert_eq!(release["type"], "com.betalogs.delivery.release");
    assert_eq!(release["time"], "2020-11-02T12:55:12Z");
    assert_eq!(release["data"]["release.tag"], "v1.1");
    assert_eq!(
        link(release, "release"),
        Some("https://example.com/gitlab-org/release-webhook-example/-/releases/v1.1")
    );
}

/// GitLab's merge request example with `action` (and, when merged, the merge commit).
fn merge_request(action: &str) -> String {
    let mut body: Value = serde_json::from_str(&fixture("merge_request")).expect("JSON");
    body["object_attributes"]["action"] = json!(action);
    if action == "merge" {
        body["object_attributes"]["merge_commit_sha"] =
            json!("f3a1c2b4d5e6f708192a3b4c5d6e7f8091a2b3c4");
    }
    body.to_string()
}

#[test]
fn gitlabs_merge_request_example_maps_each_action_like_a_github_pull_request() {
    let opened = &events(&gitlab("Merge Request Hook", &fixture("merge_request")))[0];
    assert_eq!(opened["type"], "com.betalogs.delivery.pull_request.opened");
    assert_eq!(opened["subject"], "!1");
    assert_eq!(opened["time"], "2013-12-03T17:23:34Z");
    assert_eq!(opened["data"]["vcs.change.id"], 1, "the iid, a number");
    assert_eq!(opened["data"]["vcs.change.title"], "MS-Viewport");
    assert_eq!(opened["data"]["vcs.ref.head.name"], "ms-viewport");
    assert_eq!(opened["data"]["vcs.ref.base.name"], "master");
    assert_eq!(
        opened["data"]["vcs.ref.head.revision"],
        "da1560886d4f094c3e6c9ef40349f7d38b5d27d7"
    );
    assert_eq!(opened["data"]["vcs.actor"], "root");
    assert_eq!(
        link(opened, "pull_request"),
        Some("http://example.com/diaspora/merge_requests/1")
    );
    assert_eq!(
        link(opened, "commit"),
        Some(
            "http://example.com/awesome_space/awesome_project/commits/da1560886d4f094c3e6c9ef40349f7d38b5d27d7"
        )
    );
    let mut ids = vec![opened["id"].clone()];
    for (action, state) in [
        ("reopen", "reopened"),
        ("update", "updated"),
        ("close", "closed"),
    ] {
        let event = &events(&gitlab("Merge Request Hook", &merge_request(action)))[0];
        assert_eq!(
            event["type"],
            format!("com.betalogs.delivery.pull_request.{state}")
        );
        assert_eq!(event["data"]["vcs.change.state"], state);
        ids.push(event["id"].clone());
    }
    let merged = &events(&gitlab("Merge Request Hook", &merge_request("merge")))[0];
    assert_eq!(merged["type"], "com.betalogs.delivery.pull_request.merged");
    assert_eq!(
        merged["data"]["vcs.change.merge_commit"], "f3a1c2b4d5e6f708192a3b4c5d6e7f8091a2b3c4",
        "what the correlation index keys merged pull requests by"
    );
    assert_eq!(
        link(merged, "commit"),
        Some(
            "http://example.com/gitlabhq/gitlab-test/-/commit/f3a1c2b4d5e6f708192a3b4c5d6e7f8091a2b3c4"
        )
    );
    ids.push(merged["id"].clone());
    let distinct: std::collections::BTreeSet<String> = ids.iter().map(Value::to_string).collect();
    assert_eq!(distinct.len(), 5, "each action is its own fact");

    let approved = gitlab("Merge Request Hook", &merge_request("approved"));
    assert_eq!(approved.status, 200, "{}", approved.message);
    assert!(approved.events_json.is_empty());
}

#[test]
fn gitlabs_pipeline_example_maps_once_it_ends_with_severity_from_its_status() {
    let pipeline = &events(&gitlab("Pipeline Hook", &fixture("pipeline")))[0];
    assert_eq!(pipeline["type"], "com.betalogs.delivery.pipeline");
    assert_eq!(pipeline["severity"], "info");
    assert_eq!(pipeline["time"], "2016-08-12T15:26:29Z");
    assert_eq!(pipeline["subject"], "Pipeline for branch: master");
    assert_eq!(pipeline["data"]["cicd.pipeline.run.id"], 31);
    assert_eq!(pipeline["data"]["cicd.pipeline.result"], "success");
    assert_eq!(pipeline["data"]["cicd.pipeline.duration_s"], 63);
    assert_eq!(
        pipeline["data"]["vcs.ref.head.revision"],
        "bcbb5ec396a2c0f828686f14fac9b80b780504f2"
    );
    assert_eq!(
        link(pipeline, "pipeline"),
        Some("http://example.com/gitlab-org/gitlab-test/-/pipelines/31")
    );
    assert_eq!(
        link(pipeline, "commit"),
        Some(
            "http://example.com/gitlab-org/gitlab-test/commit/bcbb5ec396a2c0f828686f14fac9b80b780504f2"
        )
    );
    assert_eq!(
        link(pipeline, "pull_request"),
        Some("http://192.168.64.1:3005/gitlab-org/gitlab-test/merge_requests/1")
    );
    let with_status = |status: &str| {
        let mut body: Value = serde_json::from_str(&fixture("pipeline")).expect("JSON");
        body["object_attributes"]["status"] = json!(status);
        gitlab("Pipeline Hook", &body.to_string())
    };
    assert_eq!(events(&with_status("failed"))[0]["severity"], "error");
    assert_eq!(events(&with_status("canceled"))[0]["severity"], "warning");
    let running = with_status("running");
    assert_eq!(running.status, 200, "{}", running.message);
    assert!(running.events_json.is_empty(), "not ended: ignored");
}

#[test]
fn the_same_delivery_twice_makes_the_same_events() {
    let first = gitlab("Push Hook", &fixture("push"));
    let again = gitlab("Push Hook", &fixture("push"));
    assert_eq!(first.events_json, again.events_json);
}

#[test]
fn an_unmapped_type_is_acknowledged_as_ignored_and_yields_nothing() {
    let answer = gitlab("Wiki Page Hook", r#"{"object_kind": "wiki_page"}"#);
    assert_eq!(answer.status, 200);
    assert!(answer.events_json.is_empty());
    assert!(
        answer
            .message
            .starts_with("ignored: event type \"Wiki Page Hook\" has no route"),
        "{}",
        answer.message
    );
}

#[test]
fn hostile_deliveries_get_their_4xx_and_nothing() {
    let instance = instance(json!({"preset": "gitlab"}));
    let headers = |event: &'static str| {
        vec![
            ("X-Gitlab-Token", SECRET),
            ("X-Gitlab-Event", event),
            ("X-Gitlab-Event-UUID", "u-1"),
        ]
    };
    let deep = format!("{}1{}", "[".repeat(100), "]".repeat(100));
    let no_project =
        r#"{"object_kind": "push", "before": "a", "after": "b", "ref": "r", "commits": []}"#;
    type Case<'a> = (Vec<(&'a str, &'a str)>, String, u32, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec![("X-Gitlab-Event", "Push Hook")],
            fixture("push"),
            401,
            "lacks the `X-Gitlab-Token` header",
        ),
        (
            vec![
                ("X-Gitlab-Token", "not the token"),
                ("X-Gitlab-Event", "Push Hook"),
            ],
            fixture("push"),
            401,
            "does not match",
        ),
        (
            headers("Push Hook"),
            "{not json".to_owned(),
            400,
            "not JSON (line 1, column 2)",
        ),
        (headers("Push Hook"), deep, 400, "nested deeper than 64"),
        (
            vec![("X-Gitlab-Token", SECRET)],
            fixture("push"),
            400,
            "no `X-Gitlab-Event` header",
        ),
        (
            headers("Push\u{7}Hook"),
            fixture("push"),
            400,
            "control characters",
        ),
        (
            headers("Push Hook"),
            no_project.to_owned(),
            422,
            "`/project/path_with_namespace` is not in the delivery",
        ),
        (
            headers("Push Hook"),
            "[1, 2]".to_owned(),
            422,
            "is not in the delivery",
        ),
    ];
    for (headers, body, status, expected) in cases {
        let answer = answer(&instance, &delivery(&headers, &body), RECEIVED);
        assert_eq!(answer.status, status, "{expected}: {}", answer.message);
        assert!(
            answer.message.contains(expected),
            "expected `{expected}` in: {}",
            answer.message
        );
        assert!(answer.events_json.is_empty(), "{expected}");
        assert!(!answer.message.contains(SECRET));
    }
}

/// A service nobody shipped a preset for, configured in TOML alone.
const OWN_SERVICE: &str = r#"
source = "https://status.example.com"
service = "checkout"

[authentication]
scheme = "hmac-sha256"
header = "X-Signature"
prefix = "v1="

[event_type]
pointer = "/event/kind"

[delivery_id]
pointer = "/event/id"

[[routes]]
when = "incident.opened"
type = "com.betalogs.system.incident.{/event/kind_short}"
time = "{/event/at}"
subject = "{/incident/title}"
[routes.severity]
from = "{/incident/urgency}"
values = { high = "critical", low = "warning" }
default = "error"
[routes.fields]
"deployment.environment" = "{/incident/env}"
"error.message" = "{/incident/title}"
[[routes.links]]
rel = "incident"
url = "{/incident/url}"
"#;

#[test]
fn a_service_configured_in_toml_alone_maps_signed_deliveries() {
    let settings: Settings = toml::from_str(OWN_SERVICE).expect("TOML");
    let context = MapContext {
        tenant: "acme".into(),
        integration: "status".into(),
    };
    let instance = Integration::new(context, settings, secrets()).expect("compiles");
    let body = json!({
        "event": {"kind": "incident.opened", "kind_short": "opened", "id": "ev-9", "at": "2026-12-01T09:58:00Z"},
        "incident": {"title": "checkout 5xx", "urgency": "high", "env": "production", "url": "https://status.example.com/i/9"}
    })
    .to_string();
    let signed = Authentication::HmacSha256 {
        header: "X-Signature".into(),
        prefix: "v1=".into(),
        encoding: plugin_kit::signature::DigestEncoding::Hex,
    }
    .sign(SECRET, body.as_bytes(), "", 0);
    let headers: Vec<(&str, &str)> = signed
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let events = events(&answer(&instance, &delivery(&headers, &body), RECEIVED));
    assert_eq!(events.len(), 1);
    let event = &events[0];
    assert_eq!(event["type"], "com.betalogs.system.incident.opened");
    assert_eq!(event["category"], "system");
    assert_eq!(event["severity"], "critical");
    assert_eq!(event["data"]["service.name"], "checkout");
    assert_eq!(event["data"]["deployment.environment"], "production");
    assert_eq!(
        link(event, "incident"),
        Some("https://status.example.com/i/9")
    );

    // A type value that is not canonical once substituted is refused, escaped.
    let hostile = body.replace("\"opened\"", "\"Opened\\u0000\"");
    let signed = Authentication::HmacSha256 {
        header: "X-Signature".into(),
        prefix: "v1=".into(),
        encoding: plugin_kit::signature::DigestEncoding::Hex,
    }
    .sign(SECRET, hostile.as_bytes(), "", 0);
    let headers: Vec<(&str, &str)> = signed
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let refused = answer(&instance, &delivery(&headers, &hostile), RECEIVED);
    assert_eq!(refused.status, 422, "{}", refused.message);
    assert!(refused.message.contains("Opened\\0"), "{}", refused.message);
    assert!(!refused.message.contains('\0'));
}

#[test]
fn configuration_mistakes_are_refused_naming_the_key() {
    let cases = [
        (
            json!({"preset": "gitlab", "routes": [{"when": "x", "type": "{/a", "id": "i"}]}),
            "routes[0].type",
            "not closed",
        ),
        (json!({"preset": "teams"}), "preset", "not a preset"),
        (json!({"preset": "standard-webhooks"}), "routes", "none"),
        (
            json!({"authentication": {"scheme": "token", "header": "x"}, "event_type": {"header": "t"},
                "routes": [{"when": "a", "type": "com.betalogs.system.a"}]}),
            "routes[0].id",
            "deduplicated",
        ),
        (
            json!({"preset": "gitlab", "routes": [{"when": "x", "type": "com.betalogs.system.a", "fields": {"Service": "{/a}"}}]}),
            "routes[0].fields.Service",
            "dotted standard name",
        ),
        (
            json!({"preset": "gitlab", "routes": [{"when": "x", "type": "com.betalogs.system.a", "links": [{"rel": "A B", "url": "{/u}"}]}]}),
            "routes[0].links[0].rel",
            "link relation",
        ),
        (
            json!({"event_type": {"header": "t"}, "delivery_id": {"header": "d"}, "routes": [{"when": "a", "type": "com.betalogs.system.a"}]}),
            "authentication",
            "missing",
        ),
    ];
    for (config, path, expected) in cases {
        let settings: Settings = serde_json::from_value(config.clone()).expect("settings");
        match compile(settings) {
            Err(ConfigError::Field { path: at, message }) => {
                assert_eq!(at, path, "{config}: {message}");
                assert!(message.contains(expected), "{config}: {message}");
            }
            other => panic!("{config}: {other:?}"),
        }
    }
}

#[test]
fn an_operators_route_replaces_the_presets_for_its_type_only() {
    let instance = instance(json!({
        "preset": "gitlab",
        "routes": [{"when": "Tag Push Hook", "type": "com.betalogs.delivery.tag.pushed", "id": "{/after}"}]
    }));
    let request = |event: &str, body: &str| {
        delivery(
            &[
                ("X-Gitlab-Token", SECRET),
                ("X-Gitlab-Event", event),
                ("X-Gitlab-Event-UUID", "u"),
            ],
            body,
        )
    };
    let tag = events(&answer(
        &instance,
        &request("Tag Push Hook", &fixture("tag_push")),
        RECEIVED,
    ));
    assert_eq!(tag.len(), 1);
    assert_eq!(tag[0]["type"], "com.betalogs.delivery.tag.pushed");
    let push = events(&answer(
        &instance,
        &request("Push Hook", &fixture("push")),
        RECEIVED,
    ));
    assert_eq!(push.len(), 3, "the preset's push routes remain");
}

#[test]
fn the_description_matches_the_manifest() {
    let manifest = plugin_kit::manifest::Manifest::parse(include_str!("../plugin.toml"))
        .expect("plugin.toml is a valid manifest");
    let described = Webhook::default().describe();
    assert_eq!(
        plugin_kit::manifest::check_description(&manifest, &described.to_response(1), 1),
        Ok(())
    );
    let schema = &described.config_schema;
    assert_eq!(
        schema["properties"]["credentials"]["required"],
        json!(["webhook_secret"])
    );
    let validator = jsonschema::validator_for(schema).expect("a JSON Schema");
    assert!(
        validator.is_valid(&json!({"preset": "gitlab", "credentials": {"webhook_secret": "x"}}))
    );
    let own: Value = toml::from_str::<toml::Value>(OWN_SERVICE)
        .map(|v| serde_json::to_value(v).expect("json"))
        .expect("TOML");
    let mut own = own;
    own["credentials"] = json!({"webhook_secret": "x"});
    assert!(
        validator.is_valid(&own),
        "{:?}",
        validator
            .iter_errors(&own)
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
    );
    assert!(!validator.is_valid(
        &json!({"preset": "gitlab", "colour": 1, "credentials": {"webhook_secret": "x"}})
    ));
}

fn pagerduty_event(event_type: &str, status: &str, priority: Option<&str>) -> String {
    let path = format!(
        "{}/tests/fixtures/pagerduty/incident.priority_updated.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut event: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("fixture")).expect("JSON");
    event["event"]["event_type"] = json!(event_type);
    event["event"]["id"] = json!(format!("{event_type}-1"));
    event["event"]["data"]["status"] = json!(status);
    if priority.is_none() {
        event["event"]["data"]["priority"] = Value::Null;
    }
    event.to_string()
}

#[test]
fn pagerduty_incidents_are_failures_and_their_resolutions_share_the_incident_id() {
    let settings: Settings = serde_json::from_value(
        json!({"preset": "pagerduty", "service": "checkout", "environment": "production"}),
    )
    .expect("settings");
    let context = MapContext {
        tenant: "acme".into(),
        integration: "pagerduty".into(),
    };
    let instance = Integration::new(context, settings, secrets()).expect("compiles");
    let scheme = Authentication::HmacSha256 {
        header: "X-PagerDuty-Signature".into(),
        prefix: "v1=".into(),
        encoding: plugin_kit::signature::DigestEncoding::Hex,
    };
    let send = |body: &str| {
        // PagerDuty signs with each of the subscription's secrets, comma-separated.
        let ours = scheme.sign(SECRET, body.as_bytes(), "", 0);
        let other = scheme.sign("an older secret", body.as_bytes(), "", 0);
        let header = format!("{},{}", other[0].1, ours[0].1);
        answer(
            &instance,
            &delivery(&[("X-PagerDuty-Signature", &header)], body),
            RECEIVED,
        )
    };
    let triggered = &events(&send(&pagerduty_event(
        "incident.triggered",
        "triggered",
        Some("P1"),
    )))[0];
    assert_eq!(triggered["type"], "com.betalogs.system.incident.triggered");
    assert_eq!(triggered["category"], "system");
    assert_eq!(triggered["severity"], "critical", "P1");
    assert_eq!(triggered["time"], "2020-10-02T18:45:22.169Z");
    assert_eq!(triggered["correlationid"], "PGR0VU2");
    assert_eq!(
        triggered["data"]["service.name"], "checkout",
        "the integration's own name wins"
    );
    assert_eq!(triggered["data"]["deployment.environment"], "production");
    assert_eq!(
        triggered["data"]["error.message"],
        "A little bump in the road"
    );
    assert_eq!(
        link(triggered, "incident"),
        Some("https://acme.pagerduty.com/incidents/PGR0VU2")
    );
    let by_urgency = &events(&send(&pagerduty_event(
        "incident.triggered",
        "triggered",
        None,
    )))[0];
    assert_eq!(by_urgency["severity"], "error", "no priority: high urgency");
    let resolved = &events(&send(&pagerduty_event(
        "incident.resolved",
        "resolved",
        Some("P1"),
    )))[0];
    assert_eq!(resolved["type"], "com.betalogs.system.incident.resolved");
    assert_eq!(resolved["severity"], "info");
    assert_eq!(resolved["correlationid"], triggered["correlationid"]);
    let ignored = send(&pagerduty_event(
        "incident.priority_updated",
        "triggered",
        Some("P1"),
    ));
    assert_eq!(ignored.status, 200, "{}", ignored.message);
    let forged = answer(
        &instance,
        &delivery(
            &[("X-PagerDuty-Signature", &format!("v1={}", "0".repeat(64)))],
            &pagerduty_event("incident.triggered", "triggered", Some("P1")),
        ),
        RECEIVED,
    );
    assert_eq!(forged.status, 401);
}

fn jira_issue(event: &str, status_category: &str, issue_type: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/jira/issue_created.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut body: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("fixture")).expect("JSON");
    body["webhookEvent"] = json!(event);
    let fields = &mut body["issue"]["fields"];
    fields["issuetype"]["name"] = json!(issue_type);
    fields["status"]["statusCategory"]["key"] = json!(status_category);
    if status_category == "done" {
        fields["status"]["name"] = json!("Done");
        fields["resolution"] = json!({"name": "Fixed"});
        fields["resolutiondate"] = json!("2024-12-02T13:32:00.000+0100");
        fields["updated"] = json!("2024-12-02T13:32:00.000+0100");
    }
    body.to_string()
}

#[test]
fn jira_bugs_and_incidents_are_failures_resolved_by_their_done_status() {
    let settings: Settings = serde_json::from_value(json!({"preset": "jira"})).expect("settings");
    let context = MapContext {
        tenant: "acme".into(),
        integration: "jira".into(),
    };
    let instance = Integration::new(context, settings, secrets()).expect("compiles");
    let scheme = Authentication::HmacSha256 {
        header: "X-Hub-Signature".into(),
        prefix: "sha256=".into(),
        encoding: plugin_kit::signature::DigestEncoding::Hex,
    };
    let send = |body: &str, secret: &str| {
        let signed = scheme.sign(secret, body.as_bytes(), "", 0);
        answer(
            &instance,
            &delivery(
                &[
                    ("X-Hub-Signature", signed[0].1.as_str()),
                    (
                        "X-Atlassian-Webhook-Identifier",
                        "6e3f3b0c-5f0a-4c7b-9a54-3b1d1e7f6a21",
                    ),
                ],
                body,
            ),
            RECEIVED,
        )
    };
    let created = &events(&send(
        &jira_issue("jira:issue_created", "new", "Bug"),
        SECRET,
    ))[0];
    assert_eq!(created["type"], "com.betalogs.system.issue.created");
    assert_eq!(created["category"], "system");
    assert_eq!(created["severity"], "error", "a High priority");
    assert_eq!(created["time"], "2024-12-02T13:00:00.000+01:00");
    assert_eq!(created["subject"], "OPS-42");
    assert_eq!(created["correlationid"], "OPS-42");
    assert_eq!(created["data"]["service.name"], "checkout", "its component");
    assert_eq!(
        created["data"]["error.message"],
        "Checkout returns 500 after the 14:00 deploy"
    );
    assert_eq!(
        link(created, "issue"),
        Some("https://acme.atlassian.net/rest/api/2/issue/10042")
    );
    let incident = &events(&send(
        &jira_issue("jira:issue_updated", "indeterminate", "Incident"),
        SECRET,
    ))[0];
    assert_eq!(incident["type"], "com.betalogs.system.issue.updated");
    assert_eq!(incident["data"]["issue.type"], "Incident");
    let resolved = &events(&send(
        &jira_issue("jira:issue_updated", "done", "Bug"),
        SECRET,
    ))[0];
    assert_eq!(resolved["type"], "com.betalogs.system.issue.resolved");
    assert_eq!(resolved["severity"], "info");
    assert_eq!(resolved["time"], "2024-12-02T13:32:00.000+01:00");
    assert_eq!(resolved["correlationid"], created["correlationid"]);
    assert_eq!(resolved["data"]["issue.resolution"], "Fixed");

    let story = send(&jira_issue("jira:issue_created", "new", "Story"), SECRET);
    assert_eq!(story.status, 200, "{}", story.message);
    assert!(story.events_json.is_empty(), "not a bug or an incident");
    let forged = send(
        &jira_issue("jira:issue_created", "new", "Bug"),
        "not the secret",
    );
    assert_eq!(forged.status, 401);
    assert!(forged.events_json.is_empty());
}

fn slack_fixture(name: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/slack/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn slack_url_verification_is_answered_with_its_challenge_and_events_are_mapped() {
    let settings: Settings = serde_json::from_value(json!({"preset": "slack"})).expect("settings");
    let context = MapContext {
        tenant: "acme".into(),
        integration: "slack".into(),
    };
    let instance = Integration::new(context, settings, secrets()).expect("compiles");
    let scheme = Authentication::Slack {
        tolerance_seconds: 300,
    };
    let now = plugin_kit::clock::now_ms() / 1000;
    let send = |body: &str, secret: &str, timestamp: u64| {
        let headers = scheme.sign(secret, body.as_bytes(), "", timestamp);
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        answer(&instance, &delivery(&headers, body), RECEIVED)
    };

    let challenge = send(&slack_fixture("url_verification"), SECRET, now);
    assert_eq!(challenge.status, 200, "{}", challenge.message);
    assert!(challenge.events_json.is_empty());
    assert_eq!(
        challenge.reply_body,
        b"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    );
    assert_eq!(challenge.reply_content_type, "text/plain");
    let unsigned = answer(
        &instance,
        &delivery(&[], &slack_fixture("url_verification")),
        RECEIVED,
    );
    assert_eq!(unsigned.status, 401, "the handshake is verified too");
    assert!(unsigned.reply_body.is_empty());

    let mention = &events(&send(&slack_fixture("app_mention"), SECRET, now))[0];
    assert_eq!(mention["type"], "com.betalogs.system.slack.app_mention");
    assert_eq!(mention["source"], "https://app.slack.com/client/T123ABC456");
    assert_eq!(mention["subject"], "C123ABC456");
    assert_eq!(mention["data"]["slack.user.id"], "U061F7AUR");
    assert_eq!(
        mention["data"]["message.text"],
        "<@U0LAN0Z89> is it everything a river should be?"
    );
    let retried = &events(&send(&slack_fixture("app_mention"), SECRET, now))[0];
    assert_eq!(retried["id"], mention["id"], "one event per event_id");

    let stale = send(&slack_fixture("app_mention"), SECRET, now - 301);
    assert_eq!(stale.status, 401, "outside the replay window");
    assert!(stale.events_json.is_empty());
    let forged = send(&slack_fixture("app_mention"), "not the secret", now);
    assert_eq!(forged.status, 401);
    let hostile_type =
        slack_fixture("app_mention").replace("\"app_mention\"", "\"app_\\u0007mention\"");
    let refused = send(&hostile_type, SECRET, now);
    assert_eq!(refused.status, 422, "{}", refused.message);
    assert!(refused.events_json.is_empty());
}

#[test]
fn a_reply_is_configured_like_a_route_and_its_mistakes_are_named() {
    let with_reply = |reply: Value| -> Result<Mapping, String> {
        let settings: Settings = serde_json::from_value(json!({
            "preset": "slack",
            "replies": [reply],
        }))
        .map_err(|e| e.to_string())?;
        compile(settings).map_err(|e| e.to_string())
    };
    let err = with_reply(
        json!({"when": "url_verification", "body": "{/challenge}", "content_type": "text/html"}),
    )
    .expect_err("replies are text");
    assert!(err.contains("content_type"), "{err}");
    let err = with_reply(json!({"when": "url_verification", "body": "{challenge}"}))
        .expect_err("not a pointer");
    assert!(err.contains("replies[0].body"), "{err}");
    let ours = with_reply(json!({"when": "url_verification", "body": "ok {/challenge}"}))
        .expect("an operator's reply replaces the preset's");
    let text = json!({"type": "url_verification", "challenge": "c1"}).to_string();
    let body = payload::Json::parse(&text).expect("JSON");
    let answer = ours.map(
        &delivery(&[], &text),
        &body,
        &text,
        &MapContext {
            tenant: "acme".into(),
            integration: "slack".into(),
        },
        RECEIVED,
    );
    assert_eq!(answer, Ok(mapping::Outcome::Reply("ok c1".to_owned())));
}

/// Any JSON value, a few levels deep, with the keys and texts the presets look for
/// among arbitrary ones.
fn any_json() -> impl proptest::strategy::Strategy<Value = Value> {
    use proptest::prelude::*;
    let text = prop_oneof![
        Just("Push Hook".to_owned()),
        Just("open".to_owned()),
        Just("/commits".to_owned()),
        Just("{/project/web_url}".to_owned()),
        "\\PC{0,12}",
        ".{0,8}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        text.clone().prop_map(Value::String),
    ];
    let key = prop_oneof![
        Just("commits".to_owned()),
        Just("project".to_owned()),
        Just("object_attributes".to_owned()),
        Just("ref".to_owned()),
        Just("id".to_owned()),
        "[a-z_]{1,8}",
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(key.clone(), inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config {
        cases: 256,
        failure_persistence: None,
        ..proptest::test_runner::Config::default()
    })]

    /// Whatever an authenticated sender posts, the answer is one of the documented ones,
    /// and only a 202 carries events, each a canonical event of this tenant.
    #[test]
    fn any_authenticated_body_gets_a_documented_answer(
        event in prop_oneof_event_types(),
        body in any_json(),
        raw in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
        use_raw in proptest::prelude::any::<bool>(),
    ) {
        let text = if use_raw { String::from_utf8_lossy(&raw).into_owned() } else { body.to_string() };
        let answer = gitlab(&event, &text);
        proptest::prop_assert!(
            [200, 202, 400, 422].contains(&answer.status),
            "{} {}", answer.status, answer.message
        );
        if answer.status == 202 {
            for raw_event in &answer.events_json {
                let event: Value = serde_json::from_str(raw_event).expect("events are JSON");
                proptest::prop_assert_eq!(&event["tenant"], "acme");
                proptest::prop_assert!(event["type"].as_str().is_some_and(|t| t.starts_with("com.betalogs.")));
            }
        } else {
            proptest::prop_assert!(answer.events_json.is_empty());
        }
        proptest::prop_assert!(answer.reply_body.is_empty(), "the gitlab preset replies to nothing");
    }

    /// A configuration of any shape is compiled or refused with a message naming a key;
    /// it never panics.
    #[test]
    fn any_configuration_compiles_or_is_refused_by_name(config in any_json()) {
        let Value::Object(mut map) = config else { return Ok(()); };
        map.insert("preset".into(), json!("gitlab"));
        if let Ok(settings) = serde_json::from_value::<Settings>(Value::Object(map))
            && let Err(err) = compile(settings)
        {
            // Every refusal names the key it is about.
            proptest::prop_assert!(
                matches!(&err, ConfigError::Field { path, .. } if !path.is_empty()),
                "{err:?}"
            );
        }
    }

    /// Any text compiles as a template or is refused; a compiled one renders against any
    /// payload without panicking, and a pointer-free one renders as itself.
    #[test]
    fn any_template_compiles_or_is_refused_and_renders_safely(text in "\\PC{0,40}", body in any_json()) {
        match template::Template::compile(&text, true) {
            Ok(compiled) => {
                let written = body.to_string();
                let body = payload::Json::parse(&written).expect("JSON");
                let scope = template::Scope { root: &body, element: Some(&body) };
                let _ = compiled.render_value(scope);
                if !text.contains('{') {
                    let rendered = compiled.render(scope).map(std::borrow::Cow::into_owned);
                    proptest::prop_assert_eq!(rendered, Ok(text.clone()));
                }
            }
            Err(why) => proptest::prop_assert!(why.contains('`')),
        }
    }
}

fn prop_oneof_event_types() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    prop_oneof![
        Just("Push Hook".to_owned()),
        Just("Merge Request Hook".to_owned()),
        Just("Pipeline Hook".to_owned()),
        Just("Deployment Hook".to_owned()),
        "\\PC{0,20}",
    ]
}
