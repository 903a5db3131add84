//! `POST /v1/logs`: OpenTelemetry logs over OTLP/HTTP (protobuf or JSON), so that an
//! OpenTelemetry SDK or Collector sends an application's error logs straight to the
//! daemon. The tenant is the bearer ingest token's. Each log record at or above
//! `ingress.otlp_min_severity` becomes a platform failure event — `service.name` and
//! `deployment.environment` from its resource, its trace id as the correlation id, the
//! record (with its resource and scope) as `original` — enriched like any other; the
//! records below it are counted, not stored.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use plugin_protocol::Severity;
use prost::Message;
use serde_json::{Map, Value, json};

use super::{Ingress, Refusal, check_rate, printable};
use crate::pipeline::PLATFORM_INTEGRATION;
use crate::tenants::TokenScope;

/// The canonical type of a failure read from a log record.
pub const LOG_FAILURE_TYPE: &str = "com.betalogs.system.log.record";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Encoding {
    Protobuf,
    Json,
}

pub async fn receive(
    State(ingress): State<Arc<Ingress>>,
    headers: HeaderMap,
    request_body: Body,
) -> Response {
    match handle(&ingress, &headers, request_body).await {
        Ok(response) => response,
        Err(refusal) => refusal.into_response(),
    }
}

async fn handle(
    ingress: &Ingress,
    headers: &HeaderMap,
    request_body: Body,
) -> Result<Response, Refusal> {
    let token = super::bearer::token(ingress, headers, "an ingest token")?;
    if token.scope != TokenScope::Ingest {
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "only ingest tokens post logs: integrationctl tokens create --tenant T --scope ingest",
        ));
    }
    let tenant = token.tenant;
    check_rate(ingress, &tenant)?;
    let encoding = encoding(headers)?;
    let bytes = ingress.read_body(headers, request_body).await?;
    let request = decode(encoding, &bytes)?;
    let (events, below) = failures(
        &request,
        &tenant,
        ingress.config.otlp_min_severity,
        plugin_kit::clock::now_ms(),
    );
    let mut stored = (0, 0, 0);
    if !events.is_empty() {
        let outcome = super::events::commit_platform(ingress, &tenant, events)
            .await?
            .outcome;
        stored = (outcome.stored, outcome.duplicates, outcome.dead_lettered);
    }
    ingress.metrics.integration_events(
        &tenant,
        PLATFORM_INTEGRATION,
        "otlp",
        [
            ("stored", stored.0),
            ("duplicate", stored.1),
            ("dead_lettered", stored.2),
            ("below_threshold", below),
        ],
    );
    let answer = ExportLogsServiceResponse::default();
    Ok(match encoding {
        Encoding::Protobuf => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/x-protobuf")],
            answer.encode_to_vec(),
        )
            .into_response(),
        Encoding::Json => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::to_vec(&answer).unwrap_or_else(|_| b"{}".to_vec()),
        )
            .into_response(),
    })
}

/// OTLP/HTTP's two encodings, or 415 naming what came.
fn encoding(headers: &HeaderMap) -> Result<Encoding, Refusal> {
    let given = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    match given.split(';').next().unwrap_or_default().trim() {
        "application/x-protobuf" => Ok(Encoding::Protobuf),
        "application/json" => Ok(Encoding::Json),
        _ => Err(Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "Content-Type `{}` is not OTLP/HTTP: use application/x-protobuf or application/json",
                printable(given, 100)
            ),
        )),
    }
}

pub(super) fn decode(
    encoding: Encoding,
    bytes: &[u8],
) -> Result<ExportLogsServiceRequest, Refusal> {
    let bad = |message: String| Refusal::new(StatusCode::BAD_REQUEST, "bad_request", message);
    match encoding {
        Encoding::Protobuf => ExportLogsServiceRequest::decode(bytes).map_err(|err| {
            bad(format!(
                "the body is not an OTLP ExportLogsServiceRequest: {}",
                decode_reason(&err)
            ))
        }),
        Encoding::Json => serde_json::from_slice(bytes).map_err(|err| {
            bad(format!(
                "the body is not an OTLP/JSON ExportLogsServiceRequest (line {}, column {}): {}",
                err.line(),
                err.column(),
                match err.classify() {
                    serde_json::error::Category::Data => "a field has the wrong type",
                    serde_json::error::Category::Eof => "it ends early",
                    _ => "a syntax error",
                }
            ))
        }),
    }
}

/// prost's reason names every message on the way down to the bad field, as deep as a
/// hostile body nests them (found by the `ingress_body` fuzz target: a message of
/// kilobytes). Kept: the field where it went wrong, the outermost field, and why.
fn decode_reason(err: &prost::DecodeError) -> String {
    let text = err.to_string();
    let text = text
        .strip_prefix("failed to decode Protobuf message: ")
        .unwrap_or(&text);
    // The path comes first, `Message.field` each, then the description.
    let parts: Vec<&str> = text.split(": ").collect();
    let depth = parts
        .iter()
        .take_while(|part| part.contains('.') && !part.contains(' '))
        .count();
    let why = parts[depth..].join(": ");
    match &parts[..depth] {
        [inner, .., outer] if depth > 2 => format!("{inner} (in {outer}): {why}"),
        _ => text.to_owned(),
    }
}

/// The failure events of `request`'s records at or above `min`, and how many were
/// below it.
pub fn failures(
    request: &ExportLogsServiceRequest,
    tenant: &str,
    min: Severity,
    now_ms: u64,
) -> (Vec<Value>, usize) {
    let mut events = Vec::new();
    let mut below = 0;
    for resource_logs in &request.resource_logs {
        let resource = resource_logs
            .resource
            .as_ref()
            .map(|r| r.attributes.as_slice())
            .unwrap_or_default();
        let service = text_attribute(resource, &["service.name"]);
        let environment = text_attribute(
            resource,
            &["deployment.environment.name", "deployment.environment"],
        );
        // Written once per resource and scope, not once per record.
        let resource_json = serde_json::to_value(&resource_logs.resource).unwrap_or_default();
        for scope_logs in &resource_logs.scope_logs {
            let scope_json = serde_json::to_value(&scope_logs.scope).unwrap_or_default();
            for record in &scope_logs.log_records {
                let severity = severity_of(record);
                if severity < min {
                    below += 1;
                    continue;
                }
                events.push(failure(
                    record,
                    severity,
                    (service.as_deref(), environment.as_deref()),
                    tenant,
                    now_ms,
                    json!({
                        "resource": resource_json.clone(),
                        "scope": scope_json.clone(),
                        "record": record,
                    }),
                ));
            }
        }
    }
    (events, below)
}

fn failure(
    record: &LogRecord,
    severity: Severity,
    (service, environment): (Option<&str>, Option<&str>),
    tenant: &str,
    now_ms: u64,
    original: Value,
) -> Value {
    let message = record.body.as_ref().map(any_text).unwrap_or_default();
    let nanos = if record.time_unix_nano > 0 {
        record.time_unix_nano
    } else {
        record.observed_time_unix_nano
    };
    let time_ms = if nanos > 0 { nanos / 1_000_000 } else { now_ms };
    let trace = hex_id(&record.trace_id);
    let span = hex_id(&record.span_id);
    let mut data = Map::new();
    for attribute in &record.attributes {
        if plugin_protocol::is_field_name(&attribute.key)
            && let Some(value) = attribute.value.as_ref().and_then(scalar)
        {
            data.insert(attribute.key.clone(), value);
        }
    }
    if let Some(service) = service {
        data.insert("service.name".into(), json!(service));
    }
    if let Some(environment) = environment {
        data.insert("deployment.environment".into(), json!(environment));
    }
    if !message.is_empty() {
        data.insert("error.message".into(), json!(cut(&message, 4096)));
    }
    if let Some(trace) = &trace {
        data.insert("trace.id".into(), json!(trace));
    }
    if let Some(span) = &span {
        data.insert("span.id".into(), json!(span));
    }
    if !record.severity_text.is_empty() {
        data.insert("log.severity".into(), json!(cut(&record.severity_text, 64)));
    }
    data.insert("links".into(), json!([]));
    data.insert("enrichments".into(), json!([]));
    data.insert("original".into(), original);
    let identity = format!(
        "{nanos}:{}:{}:{}:{message}",
        service.unwrap_or_default(),
        trace.as_deref().unwrap_or_default(),
        span.as_deref().unwrap_or_default()
    );
    let mut event = json!({
        "specversion": "1.0",
        "id": plugin_protocol::event_id(tenant, PLATFORM_INTEGRATION, LOG_FAILURE_TYPE, &identity),
        "source": format!("otlp:{}", service.unwrap_or("unknown_service")),
        "type": LOG_FAILURE_TYPE,
        "time": plugin_kit::clock::rfc3339_ms(time_ms),
        "tenant": tenant,
        "integration": PLATFORM_INTEGRATION,
        "category": "system",
        "severity": severity.as_str(),
        "data": data,
    });
    if !message.is_empty() {
        event["subject"] = json!(cut(&message, 200));
    }
    if let Some(trace) = trace {
        event["correlationid"] = json!(trace);
    }
    event
}

/// OTLP's severity numbers (1-4 trace … 21-24 fatal) as levels; an unspecified number
/// falls back to the text.
fn severity_of(record: &LogRecord) -> Severity {
    match record.severity_number {
        1..=8 => Severity::Debug,
        9..=12 => Severity::Info,
        13..=16 => Severity::Warning,
        17..=20 => Severity::Error,
        21..=24 => Severity::Critical,
        _ => match record.severity_text.to_ascii_lowercase().as_str() {
            "trace" | "debug" => Severity::Debug,
            "warn" | "warning" => Severity::Warning,
            "error" => Severity::Error,
            "fatal" | "critical" => Severity::Critical,
            _ => Severity::Info,
        },
    }
}

fn text_attribute(attributes: &[KeyValue], keys: &[&str]) -> Option<String> {
    keys.iter().find_map(|key| {
        attributes
            .iter()
            .find(|a| a.key == *key)
            .and_then(|a| a.value.as_ref())
            .map(any_text)
            .filter(|text| !text.is_empty())
    })
}

fn any_text(value: &AnyValue) -> String {
    match &value.value {
        Some(any_value::Value::StringValue(text)) => text.clone(),
        Some(any_value::Value::BoolValue(flag)) => flag.to_string(),
        Some(any_value::Value::IntValue(number)) => number.to_string(),
        Some(any_value::Value::DoubleValue(number)) => number.to_string(),
        Some(_) => serde_json::to_string(value).unwrap_or_default(),
        None => String::new(),
    }
}

fn scalar(value: &AnyValue) -> Option<Value> {
    match &value.value {
        Some(any_value::Value::StringValue(text)) => Some(json!(cut(text, 4096))),
        Some(any_value::Value::BoolValue(flag)) => Some(json!(flag)),
        Some(any_value::Value::IntValue(number)) => Some(json!(number)),
        Some(any_value::Value::DoubleValue(number)) => {
            serde_json::Number::from_f64(*number).map(Value::Number)
        }
        _ => None,
    }
}

/// A trace or span id as lowercase hex; `None` when absent or all zero.
fn hex_id(bytes: &[u8]) -> Option<String> {
    (!bytes.is_empty() && bytes.iter().any(|b| *b != 0))
        .then(|| bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn cut(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The OTLP/JSON logs example of opentelemetry-proto (`examples/logs.json` at
    /// ac2c4b5d1f3a6079de62f9afec860158ecc8af09), as published.
    const EXAMPLE: &str = include_str!("fixtures/otlp-logs.json");

    fn example() -> ExportLogsServiceRequest {
        decode(Encoding::Json, EXAMPLE.as_bytes()).expect("the published example decodes")
    }

    /// Found by the `ingress_body` fuzz target (the input is kept in its corpus): a body
    /// nesting messages deeply made a refusal as long as the nesting.
    #[test]
    fn a_deeply_nested_bad_body_is_refused_in_a_short_message() {
        let body = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fuzz/corpus/ingress_body/regression-deep-otlp-error.bin"
        ))
        .expect("the fuzzer's input");
        let refusal = decode(Encoding::Protobuf, &body).expect_err("not OTLP");
        assert!(refusal.message.len() < 300, "{}", refusal.message);
        assert!(
            refusal
                .message
                .starts_with("the body is not an OTLP ExportLogsServiceRequest: "),
            "{}",
            refusal.message
        );
        assert!(
            refusal
                .message
                .contains("(in ExportLogsServiceRequest.resource_logs)"),
            "{}",
            refusal.message
        );
    }

    #[test]
    fn the_published_otlp_json_example_decodes_and_its_info_record_is_below_the_threshold() {
        let request = example();
        let (events, below) = failures(&request, "acme", Severity::Error, 0);
        assert!(events.is_empty());
        assert_eq!(below, 1, "its one record is severity 10, Information");
        let (events, below) = failures(&request, "acme", Severity::Info, 0);
        assert_eq!((events.len(), below), (1, 0));
        let event = &events[0];
        assert_eq!(event["type"], LOG_FAILURE_TYPE);
        assert_eq!(event["severity"], "info");
        assert_eq!(event["data"]["service.name"], "my.service");
        assert_eq!(event["data"]["error.message"], "Example log record");
        assert_eq!(event["correlationid"], "5b8efff798038103d269b633813fc60c");
        assert_eq!(event["data"]["span.id"], "eee19b7ec3c1b174");
        assert_eq!(event["data"]["string.attribute"], "some string");
        assert_eq!(event["data"]["int.attribute"], 10);
        assert_eq!(event["time"], "2018-12-13T14:51:00.300Z");
        assert_eq!(
            event["data"]["original"]["record"]["body"]["stringValue"], "Example log record",
            "the record kept as OTLP/JSON writes it"
        );
        let schema: Value =
            serde_json::from_str(plugin_protocol::CANONICAL_EVENT_SCHEMA_V1).expect("schema");
        let validator = jsonschema::validator_for(&schema).expect("schema");
        let errors: Vec<String> = validator
            .iter_errors(event)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{errors:?}");
        let (again, _) = failures(&request, "acme", Severity::Info, 99);
        assert_eq!(again[0]["id"], event["id"], "the same record, the same id");
    }

    #[test]
    fn protobuf_round_trips_and_severities_map_from_numbers_then_text() {
        let mut request = example();
        let record = &mut request.resource_logs[0].scope_logs[0].log_records[0];
        record.severity_number = 21;
        let bytes = request.encode_to_vec();
        let decoded = decode(Encoding::Protobuf, &bytes).expect("protobuf");
        let (events, _) = failures(&decoded, "acme", Severity::Error, 0);
        assert_eq!(events[0]["severity"], "critical");
        let mut by_text = LogRecord {
            severity_text: "ERROR".into(),
            ..LogRecord::default()
        };
        assert_eq!(severity_of(&by_text), Severity::Error);
        by_text.severity_number = 13;
        assert_eq!(severity_of(&by_text), Severity::Warning, "the number wins");
    }

    #[test]
    fn malformed_bodies_are_refused_naming_the_encoding() {
        let refused = decode(Encoding::Protobuf, b"\xff\xff\xff").expect_err("not protobuf");
        assert!(
            refused
                .message
                .contains("not an OTLP ExportLogsServiceRequest")
        );
        let refused = decode(Encoding::Json, br#"{"resourceLogs": 3}"#).expect_err("wrong type");
        assert!(
            refused.message.contains("OTLP/JSON") && refused.message.contains("wrong type"),
            "{}",
            refused.message
        );
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, "text/plain".parse().expect("header"));
        assert_eq!(
            encoding(&headers).expect_err("text").status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
    }
}
