//! CloudEvents 1.0 as the ecosystem's SDKs send them, made canonical: structured mode
//! (`application/cloudevents+json`), batched mode (`application/cloudevents-batch+json`)
//! and binary mode (`ce-*` headers, the data as the body). A client says what happened
//! in its own words; the server fills what it owns — the tenant (from the URL; a
//! different one in the event is refused), the `platform` integration, links,
//! enrichments — derives a canonical type and id, lifts the standard fields it
//! recognises from the data (the table in [`ALIASES`]), and keeps everything the client
//! sent as the event's `original`.

use serde_json::{Map, Value, json};

/// How a request carries CloudEvents, if it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Structured,
    Batch,
    Binary,
}

/// The mode of a request: binary when it has a `ce-specversion` header, else by its
/// content type; `None` for today's canonical JSON and NDJSON.
pub fn mode(headers: &axum::http::HeaderMap) -> Option<Mode> {
    if headers.contains_key("ce-specversion") {
        return Some(Mode::Binary);
    }
    let essence = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())?;
    match essence.as_str() {
        "application/cloudevents+json" => Some(Mode::Structured),
        "application/cloudevents-batch+json" => Some(Mode::Batch),
        _ => None,
    }
}

/// Why a CloudEvent was refused; names the attribute (and, in a batch, the event).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CloudEventError {
    #[error("`{0}` is missing: a CloudEvent needs specversion, id, source and type")]
    Missing(&'static str),
    #[error("`{field}` {why}")]
    Invalid { field: String, why: String },
    #[error("`tenant` is {given:?}, but the event is posted for tenant {url:?}")]
    OtherTenant { given: String, url: String },
}

/// Data keys (and extension attributes) lifted into standard fields, beside keys that
/// already are dotted standard names.
pub const ALIASES: &[(&str, &str)] = &[
    ("service", "service.name"),
    ("service_name", "service.name"),
    ("serviceName", "service.name"),
    ("environment", "deployment.environment"),
    ("env", "deployment.environment"),
    ("deployment_environment", "deployment.environment"),
    ("message", "error.message"),
    ("error", "error.message"),
    ("error_message", "error.message"),
    ("errorMessage", "error.message"),
    ("version", "service.version"),
    ("service_version", "service.version"),
    ("region", "cloud.region"),
    ("host", "host.name"),
    ("hostname", "host.name"),
];

/// Words of a type that make its default severity `error` (a `severity` extension says
/// otherwise); any other type defaults to `info`.
const FAILURE_WORDS: &[&str] = &[
    "fail",
    "error",
    "exception",
    "crash",
    "outage",
    "incident",
    "panic",
    "down",
];

/// The attributes of a CloudEvent that are the envelope's, not extensions.
const CONTEXT_ATTRIBUTES: &[&str] = &[
    "specversion",
    "id",
    "source",
    "type",
    "datacontenttype",
    "dataschema",
    "subject",
    "time",
    "data",
    "data_base64",
];

/// The canonical event of one structured CloudEvent posted for `tenant` at `received`
/// (RFC 3339).
pub fn canonical(event: &Value, tenant: &str, received: &str) -> Result<Value, CloudEventError> {
    let Value::Object(attributes) = event else {
        return Err(CloudEventError::Invalid {
            field: "event".into(),
            why: "is not a JSON object".into(),
        });
    };
    let text = |name: &'static str| -> Result<&str, CloudEventError> {
        match attributes.get(name) {
            None | Some(Value::Null) => Err(CloudEventError::Missing(name)),
            Some(Value::String(text)) if !text.is_empty() => Ok(text),
            Some(_) => Err(CloudEventError::Invalid {
                field: name.into(),
                why: "is not a non-empty string".into(),
            }),
        }
    };
    let specversion = text("specversion")?;
    if specversion != "1.0" {
        return Err(CloudEventError::Invalid {
            field: "specversion".into(),
            why: format!("is {specversion:?}; this endpoint takes CloudEvents 1.0"),
        });
    }
    let (id, source, given_type) = (text("id")?, text("source")?, text("type")?);
    if let Some(given) = attributes.get("tenant") {
        let given = given.as_str().unwrap_or_default();
        if given != tenant {
            return Err(CloudEventError::OtherTenant {
                given: given.to_owned(),
                url: tenant.to_owned(),
            });
        }
    }
    let (category, event_type) = canonical_type(given_type, attributes.get("category"))?;
    let severity = match attributes.get("severity") {
        None | Some(Value::Null) => default_severity(given_type),
        Some(value) => severity_of(value).ok_or_else(|| CloudEventError::Invalid {
            field: "severity".into(),
            why: "is not one of debug, info, warning, error, critical".into(),
        })?,
    };
    let time = match attributes.get("time") {
        None | Some(Value::Null) => received.to_owned(),
        Some(Value::String(time)) => time.clone(),
        Some(_) => {
            return Err(CloudEventError::Invalid {
                field: "time".into(),
                why: "is not an RFC 3339 string".into(),
            });
        }
    };
    let mut data = Map::new();
    // Extensions first, so that the data's own keys win.
    for (name, value) in attributes {
        if !CONTEXT_ATTRIBUTES.contains(&name.as_str()) {
            lift(name, value, &mut data);
        }
    }
    if let Some(Value::Object(posted)) = attributes.get("data") {
        for (name, value) in posted {
            lift(name, value, &mut data);
        }
    }
    data.insert("links".into(), json!([]));
    data.insert("enrichments".into(), json!([]));
    data.insert("original".into(), event.clone());
    let mut canonical = json!({
        "specversion": "1.0",
        "id": plugin_protocol::event_id(
            tenant,
            crate::pipeline::PLATFORM_INTEGRATION,
            &event_type,
            &format!("{source}#{id}"),
        ),
        "source": source,
        "type": event_type,
        "time": time,
        "tenant": tenant,
        "integration": crate::pipeline::PLATFORM_INTEGRATION,
        "category": category,
        "severity": severity,
        "data": data,
    });
    for name in ["subject", "correlationid", "dataschema"] {
        if let Some(Value::String(value)) = attributes.get(name) {
            canonical[name] = Value::String(value.clone());
        }
    }
    Ok(canonical)
}

/// The structured event of a binary-mode request: its `ce-*` headers as attributes,
/// its body as the data (JSON when its content type says so, else text).
pub fn from_binary(headers: &axum::http::HeaderMap, body: &[u8]) -> Result<Value, CloudEventError> {
    let mut event = Map::new();
    for (name, value) in headers {
        let Some(attribute) = name.as_str().strip_prefix("ce-") else {
            continue;
        };
        let value = value.to_str().map_err(|_| CloudEventError::Invalid {
            field: attribute.to_owned(),
            why: "is not visible ASCII (percent-encode it, as the HTTP binding says)".into(),
        })?;
        event.insert(attribute.to_owned(), Value::String(percent_decoded(value)));
    }
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let is_json = essence.is_empty() || essence == "application/json" || essence.ends_with("+json");
    if !body.is_empty() {
        let data = if is_json {
            serde_json::from_slice(body).map_err(|err| CloudEventError::Invalid {
                field: "data".into(),
                why: format!(
                    "is not JSON (line {}, column {}) though its content type is {}",
                    err.line(),
                    err.column(),
                    if essence.is_empty() {
                        "not given"
                    } else {
                        "JSON"
                    }
                ),
            })?
        } else {
            Value::String(String::from_utf8(body.to_vec()).map_err(|_| {
                CloudEventError::Invalid {
                    field: "data".into(),
                    why: "is neither JSON nor UTF-8 text".into(),
                }
            })?)
        };
        event.insert("data".into(), data);
    }
    if !content_type.is_empty() {
        event.insert("datacontenttype".into(), Value::String(content_type));
    }
    Ok(Value::Object(event))
}

/// `%XX` sequences decoded; anything else as it is.
fn percent_decoded(text: &str) -> String {
    if !text.contains('%') {
        return text.to_owned();
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%'
            && let Some(hex) = bytes.get(index + 1..index + 3)
            && let Ok(hex) = std::str::from_utf8(hex)
            && let Ok(byte) = u8::from_str_radix(hex, 16)
        {
            out.push(byte);
            index += 3;
            continue;
        }
        out.push(bytes[index]);
        index += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The canonical type and its category: a canonical type as it is; another under
/// `com.betalogs.<category>.` (the `category` extension, `system` by default), written
/// in the canonical alphabet.
fn canonical_type(
    given: &str,
    category: Option<&Value>,
) -> Result<(&'static str, String), CloudEventError> {
    for known in ["system", "security", "delivery"] {
        let prefix = format!("com.betalogs.{known}.");
        if let Some(name) = given.strip_prefix(&prefix)
            && is_canonical_name(name)
        {
            return Ok((known, given.to_owned()));
        }
    }
    let category = match category {
        None | Some(Value::Null) => "system",
        Some(Value::String(text)) if text == "system" => "system",
        Some(Value::String(text)) if text == "security" => "security",
        Some(Value::String(text)) if text == "delivery" => "delivery",
        Some(_) => {
            return Err(CloudEventError::Invalid {
                field: "category".into(),
                why: "is not one of system, security, delivery".into(),
            });
        }
    };
    let mut name: String = given
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '.' | '_') => c,
            _ => '_',
        })
        .collect();
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        name.insert(0, 'x');
    }
    name.truncate(64);
    Ok((category, format!("com.betalogs.{category}.{name}")))
}

fn is_canonical_name(name: &str) -> bool {
    name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.')
}

fn severity_of(value: &Value) -> Option<&'static str> {
    Some(match value.as_str()?.to_ascii_lowercase().as_str() {
        "debug" | "trace" => "debug",
        "info" | "notice" => "info",
        "warning" | "warn" => "warning",
        "error" | "err" => "error",
        "critical" | "crit" | "fatal" | "alert" | "emergency" => "critical",
        _ => return None,
    })
}

fn default_severity(given_type: &str) -> &'static str {
    let lower = given_type.to_ascii_lowercase();
    if FAILURE_WORDS.iter().any(|word| lower.contains(word)) {
        "error"
    } else {
        "info"
    }
}

/// Lifts `name` into a standard field when it is one (a dotted standard name) or has
/// one ([`ALIASES`]), and its value is a string, number or boolean; the first value for
/// a field stays.
fn lift(name: &str, value: &Value, data: &mut Map<String, Value>) {
    if !matches!(value, Value::String(_) | Value::Number(_) | Value::Bool(_)) {
        return;
    }
    let field = match ALIASES.iter().find(|(alias, _)| *alias == name) {
        Some((_, field)) => (*field).to_owned(),
        None if plugin_protocol::is_field_name(name) => name.to_owned(),
        None => return,
    };
    data.insert(field, value.clone());
}

#[cfg(test)]
mod tests {
    use super::*;

    const RECEIVED: &str = "2026-12-07T10:00:00Z";

    fn sdk_event() -> Value {
        json!({
            "specversion": "1.0",
            "id": "12242a28-221c-4dcf-946a-5b2ba992c7ad",
            "source": "https://checkout.example.com",
            "type": "com.example.checkout.payment_failed",
            "time": "2026-12-07T09:58:00.101320+00:00",
            "severity": "critical",
            "data": {"message": "card declined", "service": "checkout", "environment": "production",
                     "cloud.region": "eu-west-1", "attempt": 3, "nested": {"a": 1}},
        })
    }

    #[test]
    fn a_cloudevent_as_an_sdk_writes_it_becomes_canonical_and_keeps_everything() {
        let event = canonical(&sdk_event(), "acme", RECEIVED).expect("canonical");
        assert_eq!(
            event["type"],
            "com.betalogs.system.com.example.checkout.payment_failed"
        );
        assert_eq!(event["category"], "system");
        assert_eq!(event["severity"], "critical");
        assert_eq!(event["tenant"], "acme");
        assert_eq!(event["integration"], "platform");
        assert_eq!(event["time"], "2026-12-07T09:58:00.101320+00:00");
        assert_eq!(event["data"]["service.name"], "checkout");
        assert_eq!(event["data"]["deployment.environment"], "production");
        assert_eq!(event["data"]["error.message"], "card declined");
        assert_eq!(event["data"]["cloud.region"], "eu-west-1");
        assert!(
            event["data"].get("attempt").is_none(),
            "not a standard name"
        );
        assert_eq!(
            event["data"]["original"],
            sdk_event(),
            "nothing the client sent is lost"
        );
        let again = canonical(&sdk_event(), "acme", "2026-12-07T11:00:00Z").expect("again");
        assert_eq!(event["id"], again["id"], "the same CloudEvent, the same id");
        let schema: Value =
            serde_json::from_str(plugin_protocol::CANONICAL_EVENT_SCHEMA_V1).expect("schema");
        let validator = jsonschema::validator_for(&schema).expect("schema");
        let errors: Vec<String> = validator
            .iter_errors(&event)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn canonical_types_stay_and_the_default_severity_follows_the_type() {
        let mut event = sdk_event();
        event["type"] = json!("com.betalogs.delivery.deployment");
        event.as_object_mut().expect("object").remove("severity");
        let canonical_one = canonical(&event, "acme", RECEIVED).expect("canonical");
        assert_eq!(canonical_one["type"], "com.betalogs.delivery.deployment");
        assert_eq!(canonical_one["category"], "delivery");
        assert_eq!(canonical_one["severity"], "info");
        event["type"] = json!("OrderFailed");
        event["category"] = json!("security");
        let foreign = canonical(&event, "acme", RECEIVED).expect("canonical");
        assert_eq!(foreign["type"], "com.betalogs.security.orderfailed");
        assert_eq!(foreign["severity"], "error", "a failure word");
        event["type"] = json!("9lives");
        assert_eq!(
            canonical(&event, "acme", RECEIVED).expect("canonical")["type"],
            "com.betalogs.security.x9lives"
        );
    }

    #[test]
    fn invalid_cloudevents_are_refused_naming_the_attribute() {
        for (field, expected) in [
            ("specversion", "`specversion` is missing"),
            ("id", "`id` is missing"),
            ("source", "`source` is missing"),
            ("type", "`type` is missing"),
        ] {
            let mut event = sdk_event();
            event.as_object_mut().expect("object").remove(field);
            let err = canonical(&event, "acme", RECEIVED)
                .expect_err(field)
                .to_string();
            assert!(err.starts_with(expected), "{err}");
        }
        let mut event = sdk_event();
        event["specversion"] = json!("0.3");
        let err = canonical(&event, "acme", RECEIVED)
            .expect_err("0.3")
            .to_string();
        assert!(err.contains("`specversion` is \"0.3\""), "{err}");
        let mut event = sdk_event();
        event["tenant"] = json!("globex");
        let err = canonical(&event, "acme", RECEIVED)
            .expect_err("tenant")
            .to_string();
        assert_eq!(
            err,
            "`tenant` is \"globex\", but the event is posted for tenant \"acme\""
        );
        let mut event = sdk_event();
        event["severity"] = json!("loud");
        assert!(
            canonical(&event, "acme", RECEIVED)
                .expect_err("severity")
                .to_string()
                .starts_with("`severity`")
        );
        assert!(canonical(&json!([1]), "acme", RECEIVED).is_err());
    }

    #[test]
    fn binary_mode_headers_and_body_make_the_structured_event() {
        let mut headers = axum::http::HeaderMap::new();
        for (name, value) in [
            ("ce-specversion", "1.0"),
            ("ce-id", "b-1"),
            ("ce-source", "/checkout"),
            ("ce-type", "payment.failed"),
            ("ce-severity", "error"),
            ("ce-subject", "order%2042"),
            ("content-type", "application/json"),
        ] {
            headers.insert(name, value.parse().expect("header"));
        }
        assert_eq!(mode(&headers), Some(Mode::Binary));
        let event = from_binary(&headers, br#"{"service": "checkout"}"#).expect("event");
        assert_eq!(event["subject"], "order 42", "percent-decoded");
        assert_eq!(event["data"]["service"], "checkout");
        let made = canonical(&event, "acme", RECEIVED).expect("canonical");
        assert_eq!(made["data"]["service.name"], "checkout");
        assert_eq!(made["subject"], "order 42");
        let err = from_binary(&headers, b"{not json")
            .expect_err("bad data")
            .to_string();
        assert!(err.starts_with("`data` is not JSON"), "{err}");
        headers.insert("content-type", "text/plain".parse().expect("header"));
        let text = from_binary(&headers, b"card declined").expect("text");
        assert_eq!(text["data"], "card declined");
    }
}
