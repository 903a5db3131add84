//! Alarm state changes pushed to the plugin: EventBridge events (the documented
//! "CloudWatch Alarm State Change" format) and SNS notifications as moto's SNS
//! delivers them over HTTP, with CloudWatch's alarm message inside.

mod support;

use std::sync::{Arc, Mutex};

use base64::Engine;
use plugin_kit::testing::PluginUnderTest;
use serde_json::{Value, json};
use support::*;

const SECRET: &str = "correct horse battery staple";

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("fixture")
}

fn secret_credential(current: &str, previous: Option<&str>) -> plugin_kit::v1::Credential {
    credential(
        "webhook_secret",
        "webhook-secret",
        &json!({"current": current, "previous": previous}).to_string(),
    )
}

async fn configured(sns_endpoint: Option<&str>) -> PluginUnderTest {
    let mut plugin = start().await;
    let mut config = json!({
        "accounts": [{"id": ACCOUNT, "credentials": "prod", "regions": ["us-east-1"]}],
        "credentials": {"webhook_secret": "hook"},
        "alarms": [{"name": "checkout-*", "severity": "critical", "service": "checkout"}],
    });
    if let Some(endpoint) = sns_endpoint {
        config["endpoint_url"] = json!({"sns": endpoint});
    }
    plugin
        .configure(
            "acme",
            "cw",
            config,
            vec![
                credential("prod", "aws", KEYS),
                secret_credential(SECRET, Some("the old one")),
            ],
        )
        .await
        .expect("configure");
    plugin
}

fn basic(password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("betalogs:{password}"))
    )
}

fn one_event(response: &plugin_kit::v1::WebhookResponse) -> Value {
    assert_eq!(response.status, 202, "{}", response.message);
    assert_eq!(response.events_json.len(), 1);
    let event = events(&[plugin_kit::v1::EventBatch {
        events_json: response.events_json.clone(),
        cursor: String::new(),
    }]);
    event.into_iter().next().expect("one")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eventbridge_state_change_becomes_an_alarm_event() {
    let mut plugin = configured(None).await;
    let body = fixture("eventbridge-alarm-state-change.json");
    let response = plugin
        .webhook(&[("x-betalogs-webhook-secret", SECRET)], body.clone())
        .await
        .expect("webhook");
    let event = one_event(&response);
    assert_eq!(event["type"], "com.betalogs.system.alarm.raised");
    assert_eq!(event["severity"], "critical");
    assert_eq!(event["time"], "2026-11-02T17:04:40.985Z");
    assert_eq!(
        event["correlationid"],
        "arn:aws:cloudwatch:us-east-1:123456789012:alarm:checkout-5xx"
    );
    let data = &event["data"];
    assert_eq!(data["alarm.previous_state"], "OK");
    assert_eq!(data["alarm.received_via"], "eventbridge");
    assert_eq!(data["aws.cloudwatch.namespace"], "AWS/ApplicationELB");
    assert_eq!(
        data["aws.cloudwatch.dimensions"],
        "LoadBalancer=app/checkout/50dc6c495c0c9188,TargetGroup=targetgroup/checkout/1f2e3d"
    );
    assert_eq!(data["service.name"], "checkout");
    assert_eq!(data["original"]["detail"]["alarmName"], "checkout-5xx");

    // The previous secret still works during a rotation; anything else is refused
    // and nothing is produced.
    let response = plugin
        .webhook(
            &[("x-betalogs-webhook-secret", "the old one")],
            body.clone(),
        )
        .await
        .expect("webhook");
    assert_eq!(response.status, 202);
    for headers in [
        vec![("x-betalogs-webhook-secret", "wrong")],
        vec![("x-betalogs-webhook-secret", "")],
        vec![],
        vec![("authorization", "Basic !!!not base64")],
    ] {
        let response = plugin
            .webhook(&headers, body.clone())
            .await
            .expect("webhook");
        assert_eq!(response.status, 401, "{headers:?}: {}", response.message);
        assert!(response.events_json.is_empty());
        assert!(!response.message.contains(SECRET));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_hostile_and_foreign_deliveries_are_refused_by_name() {
    let mut plugin = configured(None).await;
    let auth = [("x-betalogs-webhook-secret", SECRET)];
    let change: Value =
        serde_json::from_str(&fixture("eventbridge-alarm-state-change.json")).expect("JSON");
    let with = |path: &[&str], value: Value| {
        let mut body = change.clone();
        let mut slot = &mut body;
        for key in &path[..path.len() - 1] {
            slot = &mut slot[*key];
        }
        slot[path[path.len() - 1]] = value;
        body.to_string()
    };
    let cases: Vec<(String, u32, &str)> = vec![
        ("not json".into(), 400, "not JSON"),
        ("[1,2]".into(), 400, "neither an SNS message"),
        (
            format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)),
            400,
            "not JSON",
        ),
        (
            with(&["account"], json!("999999999999")),
            400,
            "are not the event's",
        ),
        (
            with(
                &["resources"],
                json!(["arn:aws:cloudwatch:eu-west-1:123456789012:alarm:x"]),
            ),
            400,
            "are not the event's",
        ),
        (
            with(&["detail", "state", "value"], json!("ON_FIRE")),
            400,
            "`ON_FIRE`",
        ),
        (
            with(&["detail", "state", "timestamp"], json!("soon")),
            400,
            "`soon`",
        ),
        (with(&["source"], json!("aws.ec2")), 400, "aws.cloudwatch"),
        (
            with(
                &["detail-type"],
                json!("EC2 Instance State-change Notification"),
            ),
            200,
            "ignored",
        ),
    ];
    for (body, status, expected) in cases {
        let response = plugin.webhook(&auth, body.clone()).await.expect("webhook");
        assert_eq!(
            response.status,
            status,
            "{}: {}",
            &body[..body.len().min(80)],
            response.message
        );
        assert!(response.message.contains(expected), "{}", response.message);
        assert!(response.events_json.is_empty());
    }
    // An alarm in an account and region the integration does not list: 403.
    let mut foreign = change.clone();
    foreign["account"] = json!("210987654321");
    foreign["resources"] = json!(["arn:aws:cloudwatch:us-east-1:210987654321:alarm:checkout-5xx"]);
    let response = plugin
        .webhook(&auth, foreign.to_string())
        .await
        .expect("webhook");
    assert_eq!(response.status, 403, "{}", response.message);
    assert!(response.message.contains("210987654321"));
}

/// An HTTP receiver that keeps every request's headers and body.
async fn receiver() -> (
    String,
    Arc<Mutex<Vec<(axum::http::HeaderMap, String, String)>>>,
) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let kept = seen.clone();
    let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
        let kept = kept.clone();
        async move {
            let uri = request.uri().to_string();
            let headers = request.headers().clone();
            let body = axum::body::to_bytes(request.into_body(), 1 << 20)
                .await
                .unwrap_or_default();
            kept.lock().expect("lock").push((
                headers,
                uri,
                String::from_utf8_lossy(&body).into_owned(),
            ));
            "ok"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

/// moto's SNS query API (in the default account).
async fn sns(moto: &str, params: &[(&str, &str)]) -> String {
    let mut form: Vec<(&str, &str)> = vec![("Version", "2010-03-31")];
    form.extend_from_slice(params);
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let response = reqwest::Client::new()
        .post(format!("{moto}/"))
        .header("content-type", "application/x-www-form-urlencoded")
        // moto routes by the signing scope (the signature itself is not checked).
        .header(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=AKIDTESTTESTTEST/20261130/us-east-1/sns/aws4_request, SignedHeaders=host, Signature=0",
        )
        .body(body)
        .send()
        .await
        .expect("moto answers");
    assert!(response.status().is_success(), "{:?}", response.status());
    response.text().await.expect("text")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sns_notification_delivered_by_moto_becomes_an_alarm_event() {
    let moto = moto::Moto::start();
    let (url, seen) = receiver().await;
    let topic = format!("arn:aws:sns:us-east-1:{ACCOUNT}:alarms");
    sns(&moto.url, &[("Action", "CreateTopic"), ("Name", "alarms")]).await;
    let endpoint = url.replacen(
        "http://",
        &format!("http://betalogs:{}@", SECRET.replace(' ', "%20")),
        1,
    );
    sns(
        &moto.url,
        &[
            ("Action", "Subscribe"),
            ("TopicArn", &topic),
            ("Protocol", "http"),
            ("Endpoint", &endpoint),
        ],
    )
    .await;
    let message = fixture("sns-alarm-message.json");
    sns(
        &moto.url,
        &[
            ("Action", "Publish"),
            ("TopicArn", &topic),
            ("Subject", "ALARM: checkout-latency-high"),
            ("Message", &message),
        ],
    )
    .await;
    let (headers, body) = {
        let seen = seen.lock().expect("lock");
        assert_eq!(seen.len(), 1, "moto delivers on Publish");
        let (headers, _, body) = &seen[0];
        (headers.clone(), body.clone())
    };
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .expect("moto sends the endpoint's basic credentials")
        .to_owned();
    assert_eq!(authorization, basic(SECRET));

    let mut plugin = configured(None).await;
    let response = plugin
        .webhook(
            &[
                ("authorization", &authorization),
                ("content-type", "text/plain; charset=UTF-8"),
            ],
            body.clone(),
        )
        .await
        .expect("webhook");
    let event = one_event(&response);
    assert_eq!(event["type"], "com.betalogs.system.alarm.raised");
    assert_eq!(event["severity"], "critical");
    assert_eq!(event["time"], "2026-11-02T17:10:51.735Z");
    assert_eq!(event["data"]["alarm.received_via"], "sns");
    assert_eq!(
        event["data"]["aws.cloudwatch.dimensions"],
        "Service=checkout"
    );
    assert_eq!(event["data"]["original"]["TopicArn"], topic);

    let wrong = plugin
        .webhook(&[("authorization", &basic("guess"))], body)
        .await
        .expect("webhook");
    assert_eq!(wrong.status, 401);
    assert!(wrong.events_json.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_is_confirmed_only_on_an_sns_host() {
    let (url, seen) = receiver().await;
    let mut plugin = configured(Some(&url)).await;
    let confirmation = |subscribe_url: &str| {
        json!({
            "Type": "SubscriptionConfirmation",
            "MessageId": "165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
            "Token": "2336412f37",
            "TopicArn": format!("arn:aws:sns:us-east-1:{ACCOUNT}:alarms"),
            "Message": "You have chosen to subscribe to the topic. To confirm the subscription, visit the SubscribeURL included in this message.",
            "SubscribeURL": subscribe_url,
            "Timestamp": "2026-11-02T17:00:00.000Z",
            "SignatureVersion": "1",
        })
        .to_string()
    };
    let auth = basic(SECRET);
    let response = plugin
        .webhook(
            &[("authorization", &auth)],
            confirmation(&format!(
                "{url}/?Action=ConfirmSubscription&Token=2336412f37"
            )),
        )
        .await
        .expect("webhook");
    assert_eq!(response.status, 200, "{}", response.message);
    assert_eq!(response.message, "subscription confirmed");
    {
        let seen = seen.lock().expect("lock");
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].1, "/?Action=ConfirmSubscription&Token=2336412f37");
    }
    for hostile in [
        "http://169.254.169.254/latest/meta-data/",
        "https://sns.us-east-1.amazonaws.com.evil.example/confirm",
        "file:///etc/passwd",
    ] {
        let response = plugin
            .webhook(&[("authorization", &auth)], confirmation(hostile))
            .await
            .expect("webhook");
        assert_eq!(response.status, 400, "{hostile}: {}", response.message);
        assert!(
            response.message.contains("SubscribeURL"),
            "{}",
            response.message
        );
    }
    assert_eq!(
        seen.lock().expect("lock").len(),
        1,
        "no request to a refused URL"
    );
    // A confirmation for a topic in an account the integration does not list.
    let foreign = confirmation(&format!("{url}/?Action=ConfirmSubscription"))
        .replace(ACCOUNT, "210987654321");
    let response = plugin
        .webhook(&[("authorization", &auth)], foreign)
        .await
        .expect("webhook");
    assert_eq!(response.status, 403);
    assert_eq!(seen.lock().expect("lock").len(), 1);
}
