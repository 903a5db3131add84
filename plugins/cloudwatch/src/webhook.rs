//! Alarm state changes pushed to `POST /v1/webhooks/{tenant}/{integration}`: SNS
//! notifications (CloudWatch's alarm message in `Message`) and EventBridge
//! "CloudWatch Alarm State Change" events sent through an API destination.
//!
//! Both are authenticated by the integration's `webhook_secret`: EventBridge's
//! connection sends it as an API-key header ([`SECRET_HEADER`]); SNS sends it as the
//! password of HTTP basic authentication in the subscription's endpoint URL
//! (`https://betalogs:<secret>@host/v1/webhooks/...`). An SNS subscription confirmation
//! is confirmed by fetching its `SubscribeURL`, only on an SNS host. Changes for an
//! account or region the integration does not list are refused (403).

use std::collections::BTreeMap;

use plugin_kit::signature::SignatureError;
use plugin_kit::{MapContext, v1};
use serde::Deserialize;

use crate::alarms::{self, AlarmChange};
use crate::settings::Settings;

/// The header an EventBridge connection's API-key authorization sends the secret in.
pub const SECRET_HEADER: &str = "x-betalogs-webhook-secret";

/// How deliveries are authenticated: the API-key header, else basic authentication's
/// password (the same scheme the manifest declares for the host).
fn scheme() -> plugin_kit::signature::Scheme {
    plugin_kit::signature::Scheme::SharedSecret {
        header: SECRET_HEADER.to_owned(),
        basic_auth: true,
    }
}

/// Verifies, reads and maps one delivery. `confirm` fetches an SNS `SubscribeURL`.
pub async fn handle<C, Fut>(
    settings: &Settings,
    request: &v1::WebhookRequest,
    confirm: C,
) -> v1::WebhookResponse
where
    C: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let Some(secrets) = &settings.webhook_secrets else {
        return v1::WebhookResponse::answer(
            401,
            "this integration has no webhook secret (credentials.webhook_secret): deliveries cannot be authenticated",
        );
    };
    // A delivery the host verified itself (kept while the plugin was down) arrives
    // without its secret.
    let verified = if request.host_verified {
        Ok(plugin_kit::signature::Verified::Current)
    } else {
        scheme().verify(secrets, request)
    };
    match verified {
        Ok(_) => {}
        Err(SignatureError::Missing) => {
            return v1::WebhookResponse::answer(
                401,
                format!(
                    "no secret presented: send it in `{SECRET_HEADER}` or as the basic-auth password"
                ),
            );
        }
        Err(err) => {
            return v1::WebhookResponse::answer(
                401,
                format!("the presented secret is refused: {err}"),
            );
        }
    }
    let body: serde_json::Value = match serde_json::from_slice(&request.body) {
        Ok(body) => body,
        Err(err) => {
            return v1::WebhookResponse::answer(400, format!("the body is not JSON: {err}"));
        }
    };
    let context = MapContext {
        tenant: settings.tenant.clone(),
        integration: settings.integration.clone(),
    };
    if let Some(kind) = body.get("Type").and_then(serde_json::Value::as_str) {
        return sns(settings, &context, kind, &body, confirm).await;
    }
    if let Some(detail_type) = body.get("detail-type").and_then(serde_json::Value::as_str) {
        if detail_type != "CloudWatch Alarm State Change" {
            return v1::WebhookResponse::answer(
                200,
                format!("ignored: EventBridge `{detail_type}` events are not mapped"),
            );
        }
        return match eventbridge(&body) {
            Ok(change) => map_change(settings, &context, change, body.clone()),
            Err(why) => v1::WebhookResponse::answer(
                400,
                format!("not a CloudWatch alarm state change: {why}"),
            ),
        };
    }
    v1::WebhookResponse::answer(
        400,
        "neither an SNS message (`Type`) nor an EventBridge event (`detail-type`)",
    )
}

async fn sns<C, Fut>(
    settings: &Settings,
    context: &MapContext,
    kind: &str,
    body: &serde_json::Value,
    confirm: C,
) -> v1::WebhookResponse
where
    C: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let text = |key: &str| body.get(key).and_then(serde_json::Value::as_str);
    match kind {
        "SubscriptionConfirmation" => {
            let Some(url) = text("SubscribeURL") else {
                return v1::WebhookResponse::answer(
                    400,
                    "the subscription confirmation has no `SubscribeURL`",
                );
            };
            if let Err(why) = sns_url_allowed(url, settings.endpoints.sns.as_deref()) {
                return v1::WebhookResponse::answer(400, format!("`SubscribeURL` refused: {why}"));
            }
            if let Some(topic) = text("TopicArn")
                && !topic_in_scope(settings, topic)
            {
                return v1::WebhookResponse::answer(
                    403,
                    format!(
                        "topic `{topic}` is not in an account and region this integration lists"
                    ),
                );
            }
            match confirm(url.to_owned()).await {
                Ok(()) => v1::WebhookResponse::answer(200, "subscription confirmed"),
                Err(why) => v1::WebhookResponse::answer(
                    502,
                    format!("the subscription could not be confirmed: {why}"),
                ),
            }
        }
        "UnsubscribeConfirmation" => v1::WebhookResponse::answer(200, "ignored: unsubscribed"),
        "Notification" => {
            let Some(message) = text("Message") else {
                return v1::WebhookResponse::answer(400, "the SNS notification has no `Message`");
            };
            let alarm: SnsAlarm = match serde_json::from_str(message) {
                Ok(alarm) => alarm,
                Err(err) => {
                    return v1::WebhookResponse::answer(
                        200,
                        format!("ignored: the SNS message is not a CloudWatch alarm ({err})"),
                    );
                }
            };
            match sns_change(&alarm) {
                Ok(change) => map_change(settings, context, change, body.clone()),
                Err(why) => v1::WebhookResponse::answer(
                    400,
                    format!("the CloudWatch alarm message is incomplete: {why}"),
                ),
            }
        }
        other => v1::WebhookResponse::answer(400, format!("unknown SNS message type `{other}`")),
    }
}

/// SNS hosts are `sns.<region>.amazonaws.com` (and `.amazonaws.com.cn`), over https;
/// or the configured `endpoint_url.sns`.
fn sns_url_allowed(url: &str, configured: Option<&str>) -> Result<(), String> {
    if let Some(prefix) = configured
        && url.starts_with(prefix.trim_end_matches('/'))
        && url[prefix.trim_end_matches('/').len()..].starts_with(['/', '?'])
    {
        return Ok(());
    }
    let rest = url.strip_prefix("https://").ok_or("it is not https")?;
    let host = rest.split(['/', '?']).next().unwrap_or("");
    let region_part = host
        .strip_prefix("sns.")
        .and_then(|h| {
            h.strip_suffix(".amazonaws.com")
                .or_else(|| h.strip_suffix(".amazonaws.com.cn"))
        })
        .ok_or_else(|| format!("`{host}` is not an SNS host"))?;
    if region_part.is_empty()
        || !region_part
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(format!("`{host}` is not an SNS host"));
    }
    Ok(())
}

/// `arn:aws:sns:<region>:<account>:<topic>` of a listed account and region.
fn topic_in_scope(settings: &Settings, topic: &str) -> bool {
    let parts: Vec<&str> = topic.split(':').collect();
    parts.len() >= 6 && in_scope(settings, parts[4], parts[3])
}

fn in_scope(settings: &Settings, account: &str, region: &str) -> bool {
    settings
        .accounts
        .iter()
        .any(|a| a.id == account && a.regions.iter().any(|r| r == region))
}

fn map_change(
    settings: &Settings,
    context: &MapContext,
    change: AlarmChange<'_>,
    original: serde_json::Value,
) -> v1::WebhookResponse {
    if !in_scope(settings, change.account, change.region) {
        return v1::WebhookResponse::answer(
            403,
            format!(
                "alarm `{}` is in account {} region {}, which this integration does not list",
                change.name, change.account, change.region
            ),
        );
    }
    if !settings.wants("alarm") {
        return v1::WebhookResponse::answer(
            200,
            "ignored: alarm events are not enabled for this integration",
        );
    }
    match alarms::event(
        &change,
        &settings.alarm_rules,
        &settings.service_map,
        context,
        original,
    ) {
        Ok(json) => v1::WebhookResponse::accepted(vec![json]),
        Err(err) => {
            v1::WebhookResponse::answer(500, format!("cannot encode the alarm event: {err}"))
        }
    }
}

/// CloudWatch's alarm notification, as SNS carries it in `Message`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SnsAlarm {
    alarm_name: String,
    #[serde(rename = "AWSAccountId")]
    aws_account_id: Option<String>,
    new_state_value: String,
    new_state_reason: Option<String>,
    state_change_time: String,
    alarm_arn: String,
    old_state_value: Option<String>,
    trigger: Option<SnsTrigger>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SnsTrigger {
    metric_name: Option<String>,
    namespace: Option<String>,
    #[serde(default)]
    dimensions: Vec<SnsDimension>,
}

#[derive(Debug, Deserialize)]
struct SnsDimension {
    name: String,
    value: String,
}

/// `arn:aws:cloudwatch:<region>:<account>:alarm:<name>` → (region, account).
fn arn_region_account(arn: &str) -> Result<(&str, &str), String> {
    let parts: Vec<&str> = arn.splitn(7, ':').collect();
    if parts.len() < 7 || parts[0] != "arn" || parts[2] != "cloudwatch" || parts[5] != "alarm" {
        return Err(format!("`{arn}` is not a CloudWatch alarm ARN"));
    }
    Ok((parts[3], parts[4]))
}

fn valid_state(state: &str) -> Result<(), String> {
    if matches!(state, "ALARM" | "OK" | "INSUFFICIENT_DATA") {
        Ok(())
    } else {
        Err(format!("`{state}` is not an alarm state"))
    }
}

/// CloudWatch writes `2021-08-19T14:50:51.735+0000`; RFC 3339 wants `+00:00`.
fn aws_time_ms(text: &str) -> Result<i64, String> {
    let normalized = match text.len().checked_sub(5).map(|at| text.split_at(at)) {
        Some((head, zone))
            if (zone.starts_with('+') || zone.starts_with('-'))
                && zone[1..].bytes().all(|b| b.is_ascii_digit()) =>
        {
            format!("{head}{}:{}", &zone[..3], &zone[3..])
        }
        _ => text.to_owned(),
    };
    plugin_kit::event_time_ms(&normalized)
        .and_then(|ms| i64::try_from(ms).ok())
        .ok_or_else(|| format!("`{text}` is not a time"))
}

fn sns_change(alarm: &SnsAlarm) -> Result<AlarmChange<'_>, String> {
    let (region, account) = arn_region_account(&alarm.alarm_arn)?;
    if let Some(claimed) = &alarm.aws_account_id
        && claimed != account
    {
        return Err(format!(
            "`AWSAccountId` {claimed} is not the alarm ARN's account {account}"
        ));
    }
    valid_state(&alarm.new_state_value)?;
    let trigger = alarm.trigger.as_ref();
    Ok(AlarmChange {
        account,
        region,
        name: &alarm.alarm_name,
        arn: &alarm.alarm_arn,
        state: &alarm.new_state_value,
        previous_state: alarm.old_state_value.as_deref(),
        reason: alarm.new_state_reason.as_deref(),
        time_ms: aws_time_ms(&alarm.state_change_time)?,
        namespace: trigger.and_then(|t| t.namespace.as_deref()),
        metric: trigger.and_then(|t| t.metric_name.as_deref()),
        dimensions: trigger
            .map(|t| {
                t.dimensions
                    .iter()
                    .map(|d| (d.name.clone(), d.value.clone()))
                    .collect()
            })
            .unwrap_or_default(),
        tags: None,
        via: "sns",
    })
}

fn eventbridge(body: &serde_json::Value) -> Result<AlarmChange<'_>, String> {
    fn text<'v>(value: &'v serde_json::Value, key: &str) -> Result<&'v str, String> {
        value
            .get(key)
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| format!("`{key}` is missing"))
    }
    if text(body, "source")? != "aws.cloudwatch" {
        return Err("`source` is not aws.cloudwatch".to_owned());
    }
    let account = text(body, "account")?;
    let region = text(body, "region")?;
    let detail = body.get("detail").ok_or("`detail` is missing")?;
    let state = detail.get("state").ok_or("`detail.state` is missing")?;
    let value = text(state, "value")?;
    valid_state(value)?;
    let arn = body
        .get("resources")
        .and_then(|r| r.get(0))
        .and_then(serde_json::Value::as_str)
        .ok_or("`resources[0]` (the alarm ARN) is missing")?;
    let (arn_region, arn_account) = arn_region_account(arn)?;
    if arn_region != region || arn_account != account {
        return Err(format!(
            "the alarm ARN's account and region ({arn_account}, {arn_region}) are not the event's ({account}, {region})"
        ));
    }
    let metric = detail
        .get("configuration")
        .and_then(|c| c.get("metrics"))
        .and_then(|m| m.get(0))
        .and_then(|m| m.get("metricStat"))
        .and_then(|s| s.get("metric"));
    let dimensions: Vec<(String, String)> = metric
        .and_then(|m| m.get("dimensions"))
        .and_then(serde_json::Value::as_object)
        .map(|d| {
            d.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect::<BTreeMap<_, _>>()
                .into_iter()
                .collect()
        })
        .unwrap_or_default();
    Ok(AlarmChange {
        account,
        region,
        name: text(detail, "alarmName")?,
        arn,
        state: value,
        previous_state: detail
            .get("previousState")
            .and_then(|p| p.get("value"))
            .and_then(serde_json::Value::as_str),
        reason: state.get("reason").and_then(serde_json::Value::as_str),
        time_ms: aws_time_ms(text(state, "timestamp")?)?,
        namespace: metric
            .and_then(|m| m.get("namespace"))
            .and_then(serde_json::Value::as_str),
        metric: metric
            .and_then(|m| m.get("name"))
            .and_then(serde_json::Value::as_str),
        dimensions,
        tags: None,
        via: "eventbridge",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_times_with_compact_zones_parse() {
        assert_eq!(
            aws_time_ms("2021-08-19T14:50:51.735+0000"),
            Ok(1_629_384_651_735)
        );
        assert_eq!(aws_time_ms("2019-10-02T17:04:40Z"), Ok(1_570_035_880_000));
        assert!(aws_time_ms("yesterday").is_err());
        assert!(aws_time_ms("").is_err());
    }

    #[test]
    fn only_sns_hosts_or_the_configured_endpoint_confirm() {
        assert!(
            sns_url_allowed(
                "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription",
                None
            )
            .is_ok()
        );
        for bad in [
            "http://sns.us-east-1.amazonaws.com/",
            "https://sns.us-east-1.amazonaws.com.evil.example/",
            "https://evil.example/?sns.us-east-1.amazonaws.com",
            "https://sns..amazonaws.com/",
            "https://user@sns.us-east-1.amazonaws.com/",
            "file:///etc/passwd",
        ] {
            assert!(sns_url_allowed(bad, None).is_err(), "{bad}");
        }
        assert!(
            sns_url_allowed(
                "http://127.0.0.1:5000/?Action=x",
                Some("http://127.0.0.1:5000")
            )
            .is_ok()
        );
        assert!(sns_url_allowed("http://127.0.0.1:50001/", Some("http://127.0.0.1:5000")).is_err());
    }
}
