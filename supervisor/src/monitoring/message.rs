//! What a channel is sent for one notification: the request body in the channel's
//! format and its headers.
//!
//! The `betalogs` format is a JSON document (README, "Alert notifications"), signed:
//! `X-Betalogs-Signature: sha256=HEX` is the HMAC-SHA256, keyed with the channel's
//! secret, of `TIMESTAMP.BODY`, where `TIMESTAMP` is the `X-Betalogs-Timestamp` header
//! (Unix seconds), so a receiver can refuse replays. Every format carries
//! `Idempotency-Key`: the same for every attempt to send one notification.

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use sha2::Sha256;

use super::alert::{Alert, Notification, NotificationKind};
use crate::config::ChannelFormat;

pub const SIGNATURE_HEADER: &str = "x-betalogs-signature";
pub const TIMESTAMP_HEADER: &str = "x-betalogs-timestamp";
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// A request ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub body: Vec<u8>,
    pub headers: Vec<(&'static str, String)>,
}

fn rfc3339(ms: Option<u64>) -> Value {
    ms.map_or(Value::Null, |ms| {
        Value::String(
            humantime::format_rfc3339_millis(
                std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms),
            )
            .to_string(),
        )
    })
}

/// The alert as the `betalogs` format and the alert events carry it.
pub fn alert_json(alert: &Alert) -> Value {
    json!({
        "id": alert.id,
        "rule": alert.rule,
        "state": alert.state.as_str(),
        "tenant": alert.tenant,
        "integration": alert.integration,
        "subject": alert.subject,
        "severity": alert.severity,
        "summary": alert.summary,
        "description": alert.description,
        "labels": alert.labels,
        "links": alert.links,
        "started_at": rfc3339(alert.started_at_ms),
        "resolved_at": rfc3339(alert.resolved_at_ms),
    })
}

/// Where the alert is, in a few words: `acme/gh`, `acme`, `integrationd`.
fn scope(alert: &Alert) -> String {
    match (&alert.tenant, &alert.integration) {
        (Some(tenant), Some(integration)) => format!("{tenant}/{integration}"),
        (Some(tenant), None) => tenant.clone(),
        _ => "integrationd".to_owned(),
    }
}

fn headline(notification: &Notification) -> String {
    let alert = &notification.alert;
    let what = match notification.kind {
        NotificationKind::Firing | NotificationKind::Repeat => "FIRING",
        NotificationKind::Resolved => "RESOLVED",
        NotificationKind::Test => "TEST",
    };
    format!("[{what}] {}: {}", scope(alert), alert.summary)
}

/// The request for `notification` in `format`, signed with `secret` when given.
pub fn render(
    notification: &Notification,
    format: ChannelFormat,
    secret: Option<&SecretString>,
    now_secs: u64,
) -> Message {
    let alert = &notification.alert;
    let body = match format {
        ChannelFormat::Betalogs => json!({
            "version": "1",
            "notification": notification.key,
            "kind": notification.kind.as_str(),
            "alert": alert_json(alert),
        }),
        ChannelFormat::Slack => {
            let links: Vec<String> = alert
                .links
                .iter()
                .map(|l| format!("<{}|{}>", l.url, l.rel))
                .collect();
            let mut text = format!("*{}*\n{}", headline(notification), alert.description);
            if !links.is_empty() {
                text.push('\n');
                text.push_str(&links.join(" · "));
            }
            json!({ "text": text })
        }
        ChannelFormat::Teams => json!({
            "@type": "MessageCard",
            "@context": "https://schema.org/extensions",
            "summary": headline(notification),
            "themeColor": if notification.kind == NotificationKind::Resolved { "2EB886" } else { "D63333" },
            "title": headline(notification),
            "text": alert.description,
            "potentialAction": alert.links.iter().map(|l| json!({
                "@type": "OpenUri",
                "name": l.rel,
                "targets": [{"os": "default", "uri": l.url}],
            })).collect::<Vec<_>>(),
        }),
    };
    let body = body.to_string().into_bytes();
    let mut headers = vec![
        ("content-type", "application/json".to_owned()),
        (IDEMPOTENCY_HEADER, notification.key.clone()),
    ];
    if let Some(secret) = secret {
        let timestamp = now_secs.to_string();
        headers.push((TIMESTAMP_HEADER, timestamp.clone()));
        headers.push((
            SIGNATURE_HEADER,
            format!("sha256={}", sign(secret, &timestamp, &body)),
        ));
    }
    Message { body, headers }
}

/// HMAC-SHA256 of `timestamp.body`, hex.
pub fn sign(secret: &SecretString, timestamp: &str, body: &[u8]) -> String {
    // HMAC takes a key of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose_secret().as_bytes())
        .expect("HMAC accepts any key length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use plugin_protocol::{Link, Severity};

    use super::*;
    use crate::monitoring::alert::AlertState;

    fn notification() -> Notification {
        Notification {
            key: "abc-1:firing".into(),
            kind: NotificationKind::Firing,
            created_ms: 0,
            alert: Alert {
                id: "abc-1".into(),
                fingerprint: "abc".into(),
                rule: "integration_action_required".into(),
                tenant: Some("acme".into()),
                integration: Some("gh".into()),
                subject: None,
                severity: Severity::Error,
                summary: "GitHub refused the credential".into(),
                description: "401 Bad credentials".into(),
                labels: BTreeMap::from([("class".to_owned(), "auth".to_owned())]),
                links: vec![Link {
                    rel: "health".into(),
                    title: None,
                    url: "http://127.0.0.1:8080/v1/health".into(),
                }],
                state: AlertState::Firing,
                pending_since_ms: 0,
                started_at_ms: Some(1_796_000_000_000),
                resolved_at_ms: None,
                notified_at_ms: None,
                notifications: 1,
            },
        }
    }

    #[test]
    fn the_betalogs_format_is_signed_over_timestamp_and_body() {
        let secret = SecretString::from("s3cret".to_owned());
        let message = render(
            &notification(),
            ChannelFormat::Betalogs,
            Some(&secret),
            1_700_000_000,
        );
        let header = |name: &str| {
            message
                .headers
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(header(IDEMPOTENCY_HEADER).as_deref(), Some("abc-1:firing"));
        assert_eq!(header(TIMESTAMP_HEADER).as_deref(), Some("1700000000"));
        // Independently: HMAC-SHA256("s3cret", "1700000000." + body).
        let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").expect("key");
        mac.update(b"1700000000.");
        mac.update(&message.body);
        let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(header(SIGNATURE_HEADER), Some(expected));
        let body: Value = serde_json::from_slice(&message.body).expect("json");
        assert_eq!(body["kind"], "firing");
        assert_eq!(body["alert"]["tenant"], "acme");
        assert_eq!(body["alert"]["labels"]["class"], "auth");
        assert_eq!(body["alert"]["started_at"], "2026-11-30T00:53:20.000Z");
    }

    #[test]
    fn slack_and_teams_get_their_webhook_shapes() {
        let slack = render(&notification(), ChannelFormat::Slack, None, 0);
        let body: Value = serde_json::from_slice(&slack.body).expect("json");
        let text = body["text"].as_str().expect("text");
        assert!(
            text.starts_with("*[FIRING] acme/gh: GitHub refused the credential*"),
            "{text}"
        );
        assert!(
            text.contains("<http://127.0.0.1:8080/v1/health|health>"),
            "{text}"
        );
        assert!(slack.headers.iter().all(|(n, _)| *n != SIGNATURE_HEADER));
        let teams = render(&notification(), ChannelFormat::Teams, None, 0);
        let body: Value = serde_json::from_slice(&teams.body).expect("json");
        assert_eq!(body["@type"], "MessageCard");
        assert_eq!(
            body["potentialAction"][0]["targets"][0]["uri"],
            "http://127.0.0.1:8080/v1/health"
        );
    }
}
