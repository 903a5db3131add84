//! One webhook delivery: verify, check the scope, map. The answer's status is what the
//! sender hears (202 with events, 200 for a ping or an ignored type, 400/401/403).
//!
//! Redeliveries keep their `X-GitHub-Delivery` and their body, and event ids come from
//! GitHub's ids and SHAs (see `events`), so a repeated delivery yields the same ids and
//! the pipeline drops them as duplicates. Remembering delivery ids here instead would
//! lose a delivery whose first attempt was answered but never stored.

use std::borrow::Cow;

use plugin_kit::signature::{self, Verified};
use plugin_kit::{MapContext, v1};
use serde_json::value::RawValue;

use crate::events::{self, Delivery, Repository};
use crate::settings::Settings;

/// The longest header value quoted back in an error.
const QUOTE: usize = 64;

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
        return v1::WebhookResponse::answer(
            401,
            "no webhook secret is configured for this integration (credentials.webhook_secret): deliveries cannot be verified",
        );
    };
    // A delivery the host verified itself (kept while the plugin was down).
    let checked = if request.host_verified {
        Ok(signature::Verified::Current)
    } else {
        signature::verify_sha256(
            secrets,
            request.header("x-hub-signature-256"),
            &request.body,
        )
    };
    let verified = match checked {
        Ok(verified) => verified,
        Err(err) => return v1::WebhookResponse::answer(401, format!("X-Hub-Signature-256: {err}")),
    };
    let Some(kind) = request.header("x-github-event") else {
        return v1::WebhookResponse::answer(400, "the X-GitHub-Event header is missing");
    };
    if kind.is_empty()
        || kind.len() > 64
        || !kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return v1::WebhookResponse::answer(
            400,
            format!("X-GitHub-Event `{}` is not an event name", quote(kind)),
        );
    }
    let Some(delivery) = request
        .header("x-github-delivery")
        .filter(|d| !d.trim().is_empty())
    else {
        return v1::WebhookResponse::answer(400, "the X-GitHub-Delivery header is missing");
    };
    let text = match body_text(request) {
        Ok(text) => text,
        Err(why) => {
            return v1::WebhookResponse::answer(
                400,
                format!("{kind} delivery {}: {why}", quote(delivery)),
            );
        }
    };
    let top = match read_delivery(&text) {
        Ok(read) => read,
        Err(why) => {
            return v1::WebhookResponse::answer(
                400,
                format!("{kind} delivery {}: {why}", quote(delivery)),
            );
        }
    };
    if verified == Verified::Previous {
        tracing::info!(delivery = %quote(delivery), "delivery signed with the previous webhook secret; the sender has not switched yet");
    }
    let full_name = top.repository.as_ref().and_then(|r| r.full_name.as_deref());
    if let Some(full_name) = full_name
        && !settings.scope.covers(full_name)
    {
        return v1::WebhookResponse::answer(
            403,
            format!(
                "repository `{}` is not covered by this integration's `repositories`",
                quote(full_name)
            ),
        );
    }
    if kind == "ping" {
        return v1::WebhookResponse::answer(200, "pong");
    }
    if !settings.event_types.contains(kind) {
        tracing::info!(event = kind, delivery = %quote(delivery), "delivery ignored: event type not enabled");
        return v1::WebhookResponse::answer(
            200,
            format!("ignored: event type `{kind}` is not enabled for this integration"),
        );
    }
    match map(settings, kind, &text, &top) {
        Ok(Mapped::Events(events_json)) => v1::WebhookResponse::accepted(events_json),
        Ok(Mapped::Ignored(why)) => {
            tracing::info!(event = kind, delivery = %quote(delivery), "delivery ignored: {why}");
            v1::WebhookResponse::answer(200, format!("ignored: {why}"))
        }
        Err(why) => {
            v1::WebhookResponse::answer(400, format!("{kind} delivery {}: {why}", quote(delivery)))
        }
    }
}

/// The JSON text of the delivery: the body, or the `payload` field of GitHub's form
/// encoding.
fn body_text(request: &v1::WebhookRequest) -> Result<Cow<'_, str>, String> {
    let form = request
        .header("content-type")
        .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
    if form {
        return form_urlencoded::parse(&request.body)
            .find(|(key, _)| key == "payload")
            .map(|(_, value)| Cow::Owned(value.into_owned()))
            .ok_or_else(|| "the form body has no `payload` field".to_owned());
    }
    std::str::from_utf8(&request.body)
        .map(Cow::Borrowed)
        .map_err(|e| format!("the body is not UTF-8 (byte {})", e.valid_up_to()))
}

/// The delivery's top level, read in full (so `text` is known to be one JSON object:
/// a push's original is that text as it is).
fn read_delivery(text: &str) -> Result<Delivery<'_>, String> {
    if !text.trim_start().starts_with('{') {
        return match serde_json::from_str::<serde::de::IgnoredAny>(text) {
            Ok(_) => Err("the body is not a JSON object".to_owned()),
            Err(err) => Err(not_json(&err)),
        };
    }
    serde_json::from_str(text).map_err(|err| {
        if err.is_data() {
            format!(
                "the payload does not have GitHub's shape: {}",
                quote(&err.to_string())
            )
        } else {
            not_json(&err)
        }
    })
}

fn not_json(err: &serde_json::Error) -> String {
    format!(
        "the body is not JSON (line {} column {})",
        err.line(),
        err.column()
    )
}

enum Mapped {
    Events(Vec<String>),
    Ignored(String),
}

/// A member that must be an object.
fn object<'r>(raw: Option<&'r RawValue>, kind: &str, key: &str) -> Result<&'r RawValue, String> {
    raw.filter(|r| r.get().starts_with('{'))
        .ok_or_else(|| format!("cannot map {kind}: `/{key}` is missing or not an object"))
}

fn map(
    settings: &Settings,
    kind: &str,
    whole: &str,
    delivery: &Delivery<'_>,
) -> Result<Mapped, String> {
    let missing = |what: &str| format!("cannot map {kind}: `{what}` is missing");
    let repository = delivery
        .repository
        .as_ref()
        .ok_or_else(|| missing("/repository"))?;
    let full_name = repository
        .full_name
        .as_deref()
        .ok_or_else(|| missing("/repository/full_name"))?;
    let html_url = repository
        .html_url
        .as_deref()
        .ok_or_else(|| missing("/repository/html_url"))?;
    let repo = Repository {
        full_name,
        html_url,
        default_branch: repository.default_branch.as_deref(),
        service: settings.service_for(full_name),
    };
    let context = MapContext {
        tenant: settings.tenant.clone(),
        integration: settings.integration.clone(),
    };
    let action = delivery.action.as_deref().unwrap_or_default();
    let member = |raw, key| object(raw, kind, key);
    let mut out = Vec::new();
    let mapped = match kind {
        "push" => events::push(&repo, delivery, whole, &context, &mut out),
        "pull_request" => {
            let raw = member(delivery.pull_request, "pull_request")?;
            let pull: events::Pull<'_> =
                events::parse(raw.get(), "pull_request").map_err(|e| e.to_string())?;
            let Some(action) = events::pull_request_action(action, pull.merged.unwrap_or(false))
            else {
                return Ok(Mapped::Ignored(format!(
                    "pull_request action `{}`",
                    quote(action)
                )));
            };
            events::pull_request(&repo, action, &pull, raw, &context, &mut out)
        }
        "deployment" => {
            let raw = member(delivery.deployment, "deployment")?;
            let deployment = events::parse(raw.get(), "deployment").map_err(|e| e.to_string())?;
            events::deployment(&repo, &deployment, raw, &context, &mut out)
        }
        "deployment_status" => {
            let raw = member(delivery.deployment_status, "deployment_status")?;
            let status =
                events::parse(raw.get(), "deployment_status").map_err(|e| e.to_string())?;
            let deployment_raw = member(delivery.deployment, "deployment")?;
            let deployment =
                events::parse(deployment_raw.get(), "deployment").map_err(|e| e.to_string())?;
            events::deployment_status(&repo, &deployment, &status, raw, &context, &mut out)
        }
        "release" => {
            if !events::release_action(action) {
                return Ok(Mapped::Ignored(format!(
                    "release action `{}`",
                    quote(action)
                )));
            }
            events::release(
                &repo,
                action,
                member(delivery.release, "release")?,
                &context,
                &mut out,
            )
        }
        "workflow_run" => {
            if action != "completed" {
                return Ok(Mapped::Ignored(format!(
                    "workflow_run action `{}`",
                    quote(action)
                )));
            }
            events::workflow_run(
                &repo,
                member(delivery.workflow_run, "workflow_run")?,
                &context,
                &mut out,
            )
        }
        other => return Ok(Mapped::Ignored(format!("event type `{other}`"))),
    };
    mapped.map_err(|e| e.to_string())?;
    Ok(Mapped::Events(out))
}
