//! One webhook delivery: verify, check the scope, map. The answer's status is what the
//! sender hears (202 with events, 200 for a ping or an ignored type, 400/401/403).
//!
//! Redeliveries keep their `X-GitHub-Delivery` and their body, and event ids come from
//! GitHub's ids and SHAs (see `events`), so a repeated delivery yields the same ids and
//! the pipeline drops them as duplicates. Remembering delivery ids here instead would
//! lose a delivery whose first attempt was answered but never stored.

use plugin_kit::signature::{self, Verified};
use plugin_kit::{MapContext, v1};
use serde_json::Value;

use crate::events::{self, Repository};
use crate::settings::Settings;

/// The longest header value quoted back in an error.
const QUOTE: usize = 64;

fn header<'r>(request: &'r v1::WebhookRequest, name: &str) -> Option<&'r str> {
    request
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value.as_str())
}

fn answer(status: u32, message: impl Into<String>) -> v1::WebhookResponse {
    v1::WebhookResponse {
        status,
        events_json: Vec::new(),
        message: message.into(),
    }
}

/// Printable and short, for quoting untrusted input in messages.
fn quote(text: &str) -> String {
    text.chars()
        .take(QUOTE)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Handles one delivery.
pub fn handle(settings: &Settings, request: &v1::WebhookRequest) -> v1::WebhookResponse {
    let Some(secrets) = &settings.webhook_secrets else {
        return answer(
            401,
            "no webhook secret is configured for this integration (credentials.webhook_secret): deliveries cannot be verified",
        );
    };
    let verified = match signature::verify_sha256(
        secrets,
        header(request, "x-hub-signature-256"),
        &request.body,
    ) {
        Ok(verified) => verified,
        Err(err) => return answer(401, format!("X-Hub-Signature-256: {err}")),
    };
    let Some(kind) = header(request, "x-github-event") else {
        return answer(400, "the X-GitHub-Event header is missing");
    };
    if kind.is_empty()
        || kind.len() > 64
        || !kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return answer(
            400,
            format!("X-GitHub-Event `{}` is not an event name", quote(kind)),
        );
    }
    let Some(delivery) = header(request, "x-github-delivery").filter(|d| !d.trim().is_empty())
    else {
        return answer(400, "the X-GitHub-Delivery header is missing");
    };
    let payload = match parse_body(request) {
        Ok(payload) => payload,
        Err(why) => return answer(400, format!("{kind} delivery {}: {why}", quote(delivery))),
    };
    if verified == Verified::Previous {
        tracing::info!(delivery = %quote(delivery), "delivery signed with the previous webhook secret; the sender has not switched yet");
    }
    let repository = payload
        .pointer("/repository/full_name")
        .and_then(Value::as_str);
    if let Some(full_name) = repository
        && !settings.scope.covers(full_name)
    {
        return answer(
            403,
            format!(
                "repository `{}` is not covered by this integration's `repositories`",
                quote(full_name)
            ),
        );
    }
    if kind == "ping" {
        return answer(200, "pong");
    }
    if !settings.event_types.contains(kind) {
        tracing::info!(event = kind, delivery = %quote(delivery), "delivery ignored: event type not enabled");
        return answer(
            200,
            format!("ignored: event type `{kind}` is not enabled for this integration"),
        );
    }
    match map(settings, kind, payload) {
        Ok(Mapped::Events(events_json)) => v1::WebhookResponse {
            status: 202,
            events_json,
            message: String::new(),
        },
        Ok(Mapped::Ignored(why)) => {
            tracing::info!(event = kind, delivery = %quote(delivery), "delivery ignored: {why}");
            answer(200, format!("ignored: {why}"))
        }
        Err(why) => answer(400, format!("{kind} delivery {}: {why}", quote(delivery))),
    }
}

/// JSON, or GitHub's form encoding (`payload=<json>`).
fn parse_body(request: &v1::WebhookRequest) -> Result<Value, String> {
    let form = header(request, "content-type")
        .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
    let parsed = if form {
        let payload = form_urlencoded::parse(&request.body)
            .find(|(key, _)| key == "payload")
            .map(|(_, value)| value.into_owned())
            .ok_or("the form body has no `payload` field")?;
        serde_json::from_str::<Value>(&payload)
    } else {
        serde_json::from_slice::<Value>(&request.body)
    };
    match parsed {
        Ok(value @ Value::Object(_)) => Ok(value),
        Ok(_) => Err("the body is not a JSON object".to_owned()),
        Err(err) => Err(format!(
            "the body is not JSON (line {} column {})",
            err.line(),
            err.column()
        )),
    }
}

enum Mapped {
    Events(Vec<String>),
    Ignored(String),
}

fn map(settings: &Settings, kind: &str, mut payload: Value) -> Result<Mapped, String> {
    let full_name = events::text(&payload, "/repository/full_name", kind)
        .map_err(|e| e.to_string())?
        .to_owned();
    let html_url = events::text(&payload, "/repository/html_url", kind)
        .map_err(|e| e.to_string())?
        .to_owned();
    let default_branch = payload
        .pointer("/repository/default_branch")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let repo = Repository {
        full_name: &full_name,
        html_url: &html_url,
        default_branch: default_branch.as_deref(),
        service: settings.service_for(&full_name),
    };
    let context = MapContext {
        tenant: settings.tenant.clone(),
        integration: settings.integration.clone(),
    };
    let action = payload
        .get("action")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let mut take = |key: &str| -> Result<Value, String> {
        match payload.as_object_mut().and_then(|o| o.remove(key)) {
            Some(value @ Value::Object(_)) => Ok(value),
            _ => Err(format!(
                "cannot map {kind}: `/{key}` is missing or not an object"
            )),
        }
    };
    let mut out = Vec::new();
    let mapped = match kind {
        "push" => events::push(&repo, payload, &context, &mut out),
        "pull_request" => {
            let pull = take("pull_request")?;
            let merged = pull.get("merged").and_then(Value::as_bool).unwrap_or(false);
            let Some(action) = events::pull_request_action(&action, merged) else {
                return Ok(Mapped::Ignored(format!(
                    "pull_request action `{}`",
                    quote(&action)
                )));
            };
            events::pull_request(&repo, action, pull, &context, &mut out)
        }
        "deployment" => events::deployment(&repo, take("deployment")?, &context, &mut out),
        "deployment_status" => {
            let status = take("deployment_status")?;
            let deployment = take("deployment")?;
            events::deployment_status(&repo, &deployment, status, &context, &mut out)
        }
        "release" => {
            if !events::release_action(&action) {
                return Ok(Mapped::Ignored(format!(
                    "release action `{}`",
                    quote(&action)
                )));
            }
            events::release(&repo, &action, take("release")?, &context, &mut out)
        }
        "workflow_run" => {
            if action != "completed" {
                return Ok(Mapped::Ignored(format!(
                    "workflow_run action `{}`",
                    quote(&action)
                )));
            }
            events::workflow_run(&repo, take("workflow_run")?, &context, &mut out)
        }
        other => return Ok(Mapped::Ignored(format!("event type `{other}`"))),
    };
    mapped.map_err(|e| e.to_string())?;
    Ok(Mapped::Events(out))
}
