//! `POST /v1/events/{tenant}`: events a platform client submits with a tenant ingest
//! token (bearer), canonical (JSON, NDJSON) or as CloudEvents 1.0 in any of their HTTP
//! modes ([`cloudevents`]). Each event is validated like a plugin's; invalid canonical
//! ones go to the dead-letter queue and are reported, an invalid CloudEvent refuses
//! the request naming its attribute, valid ones are stored and delivered.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use serde_json::Value;

use super::body::{self, BodyKind};
use super::cloudevents::{self, Mode};
use super::{Ingress, Refusal, check_rate, json_ok, not_stored, outcome_json};
use crate::tenants::TokenScope;

/// Events in one request at most.
pub const MAX_EVENTS_PER_REQUEST: usize = 10_000;

pub async fn receive(
    State(ingress): State<Arc<Ingress>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    request_body: Body,
) -> Response {
    match handle(&ingress, &tenant, &headers, request_body).await {
        Ok(response) => response,
        Err(refusal) => refusal.into_response(),
    }
}

async fn handle(
    ingress: &Ingress,
    tenant: &str,
    headers: &HeaderMap,
    request_body: Body,
) -> Result<Response, Refusal> {
    authorize(ingress, tenant, headers)?;
    check_rate(ingress, tenant)?;
    let events = match cloudevents::mode(headers) {
        Some(Mode::Binary) => {
            let bytes = ingress.read_body(headers, request_body).await?;
            let event = cloudevents::from_binary(headers, &bytes).map_err(refused)?;
            vec![cloudevents::canonical(&event, tenant, &received_now()).map_err(refused)?]
        }
        Some(mode) => {
            let bytes = ingress.read_body(headers, request_body).await?;
            body::check_json(BodyKind::Json, &bytes)?;
            from_cloudevents(mode, &bytes, tenant)?
        }
        None => {
            let kind = body::kind(headers, &[BodyKind::Json, BodyKind::NdJson])?;
            let bytes = ingress.read_body(headers, request_body).await?;
            body::check_json(kind, &bytes)?;
            parse_events(kind, &bytes)?
        }
    };
    let Committed {
        outcome,
        rejected: reasons,
        all_invalid,
    } = commit_platform(ingress, tenant, events).await?;
    ingress.metrics.integration_events(
        tenant,
        crate::pipeline::PLATFORM_INTEGRATION,
        "platform",
        [
            ("stored", outcome.stored),
            ("duplicate", outcome.duplicates),
            ("dead_lettered", outcome.dead_lettered),
            ("refused", 0),
        ],
    );
    if all_invalid {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "invalid_event",
            format!(
                "no event was valid (kept in the dead-letter queue): {}",
                reasons.join(" | ")
            ),
        ));
    }
    let mut body = outcome_json("accepted", &outcome);
    body["rejected"] = serde_json::json!(reasons);
    Ok(json_ok(StatusCode::ACCEPTED, &body))
}

/// What became of a request's platform events.
pub(super) struct Committed {
    pub outcome: crate::pipeline::BatchOutcome,
    /// Why the first 20 invalid ones were dead-lettered.
    pub rejected: Vec<String>,
    /// No event was valid (and some were sent).
    pub all_invalid: bool,
}

/// Validates `events` as `tenant`'s platform events (off the runtime: schema checks and
/// realtime enrichment) and commits them durably; the invalid ones go to the dead-letter
/// queue. Shared by `/v1/events` and `/v1/logs`.
pub(super) async fn commit_platform(
    ingress: &Ingress,
    tenant: &str,
    events: Vec<Value>,
) -> Result<Committed, Refusal> {
    let (pipeline, owned_tenant) = (ingress.pipeline.clone(), tenant.to_owned());
    let submission =
        tokio::task::spawn_blocking(move || pipeline.prepare_platform(&owned_tenant, &events))
            .await
            .map_err(|_| {
                Refusal::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "event validation failed unexpectedly; nothing was stored",
                )
            })?;
    let rejected = submission
        .dead
        .iter()
        .take(20)
        .map(|letter| format!("{}: {}", letter.stage, letter.reason))
        .collect();
    let all_invalid = submission.accepted.is_empty() && !submission.dead.is_empty();
    let outcome = ingress
        .pipeline
        .commit(submission)
        .await
        .map_err(|err| not_stored(&err))?;
    Ok(Committed {
        outcome,
        rejected,
        all_invalid,
    })
}

/// 401 without a valid bearer token; 403 for another tenant's token or an admin token.
fn authorize(ingress: &Ingress, tenant: &str, headers: &HeaderMap) -> Result<(), Refusal> {
    let info = super::bearer::token(ingress, headers, "an ingest token")?;
    if info.tenant != tenant {
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the token is not for this tenant",
        ));
    }
    if info.scope != TokenScope::Ingest {
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "only ingest tokens post events: integrationctl tokens create --tenant T --scope ingest",
        ));
    }
    Ok(())
}

/// A CloudEvent refused: 400 naming the attribute; nothing of the request is stored.
fn refused(err: cloudevents::CloudEventError) -> Refusal {
    Refusal::new(
        StatusCode::BAD_REQUEST,
        "invalid_cloudevent",
        format!("the CloudEvent is refused: {err}"),
    )
}

/// Now, as RFC 3339: the time of a CloudEvent that gives none.
fn received_now() -> String {
    plugin_kit::clock::rfc3339_ms(plugin_kit::clock::now_ms())
}

/// The canonical events of a structured CloudEvent or a batch of them; one invalid
/// event of a batch refuses the batch, naming it.
fn from_cloudevents(mode: Mode, bytes: &[u8], tenant: &str) -> Result<Vec<Value>, Refusal> {
    let parsed: Value = serde_json::from_slice(bytes).map_err(|e| body::malformed(None, &e))?;
    let received = received_now();
    match (mode, parsed) {
        (Mode::Batch, Value::Array(events)) => {
            if events.is_empty() {
                return Err(Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "the batch holds no CloudEvent",
                ));
            }
            if events.len() > MAX_EVENTS_PER_REQUEST {
                return Err(too_many(events.len()));
            }
            events
                .iter()
                .enumerate()
                .map(|(index, event)| {
                    cloudevents::canonical(event, tenant, &received).map_err(|err| {
                        Refusal::new(
                            StatusCode::BAD_REQUEST,
                            "invalid_cloudevent",
                            format!("CloudEvent [{index}] of the batch is refused: {err}"),
                        )
                    })
                })
                .collect()
        }
        (Mode::Batch, _) => Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "a CloudEvents batch (application/cloudevents-batch+json) is a JSON array of events",
        )),
        (_, event) => Ok(vec![
            cloudevents::canonical(&event, tenant, &received).map_err(refused)?,
        ]),
    }
}

fn too_many(count: usize) -> Refusal {
    Refusal::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_many_events",
        format!("{count} events in one request; at most {MAX_EVENTS_PER_REQUEST}"),
    )
}

/// One event (an object), several (an array), or one per line (NDJSON).
fn parse_events(kind: BodyKind, bytes: &[u8]) -> Result<Vec<serde_json::Value>, Refusal> {
    let bad = |message: String| Refusal::new(StatusCode::BAD_REQUEST, "bad_request", &message);
    let events = match kind {
        BodyKind::NdJson => bytes
            .split(|b| *b == b'\n')
            .enumerate()
            .filter(|(_, line)| !line.iter().all(u8::is_ascii_whitespace))
            .map(|(index, line)| {
                serde_json::from_slice(line).map_err(|e| body::malformed(Some(index + 1), &e))
            })
            .collect::<Result<Vec<serde_json::Value>, _>>()?,
        _ => match serde_json::from_slice(bytes) {
            Ok(serde_json::Value::Array(events)) => events,
            Ok(event @ serde_json::Value::Object(_)) => vec![event],
            Ok(_) => {
                return Err(bad(
                    "the body must be an event (a JSON object) or an array of events".into(),
                ));
            }
            Err(e) => return Err(body::malformed(None, &e)),
        },
    };
    if events.is_empty() {
        return Err(bad("the body holds no event".into()));
    }
    if events.len() > MAX_EVENTS_PER_REQUEST {
        return Err(too_many(events.len()));
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_nesting_and_numbers_out_of_range_are_malformed_json_as_documented() {
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let cases = [
            (
                BodyKind::Json,
                deep.clone(),
                "nested deeper than 128 levels",
            ),
            (
                BodyKind::Json,
                r#"{"n": 1e400}"#.to_owned(),
                "a number is out of range",
            ),
            (BodyKind::NdJson, format!("{{}}\n{deep}\n"), "line 2"),
        ];
        for (kind, body, says) in cases {
            let refused = parse_events(kind, body.as_bytes()).expect_err(says);
            assert_eq!(
                (refused.status, refused.code),
                (StatusCode::BAD_REQUEST, "malformed_json"),
                "{says}"
            );
            assert!(refused.message.contains(says), "{}", refused.message);
        }
    }
}
