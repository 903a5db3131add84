//! Building canonical events: a plugin's mapping code says what the source object is and
//! which standardized fields and links it has; the builder fills in the envelope, the
//! deterministic id and the `original` payload.

use std::borrow::Cow;

use plugin_protocol::{CanonicalEvent, Category, EventData, Link, Severity, event_id};
use serde::Serialize;
use serde_json::value::RawValue;

/// Where a plugin instance's events belong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapContext {
    pub tenant: String,
    pub integration: String,
}

/// Why a source object could not be mapped; names the object and the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot map {what}: {why}")]
pub struct MapError {
    pub what: String,
    pub why: String,
}

/// Builds one event. Text can be borrowed from the payload being mapped (`'a`): a
/// plugin mapping thousands of objects a second allocates little more than the
/// event's own JSON.
#[derive(Debug, Clone)]
pub struct EventBuilder<'a> {
    event_type: Cow<'a, str>,
    category: Category,
    severity: Severity,
    source: Cow<'a, str>,
    source_id: Cow<'a, str>,
    time: Cow<'a, str>,
    subject: Option<Cow<'a, str>>,
    correlationid: Option<Cow<'a, str>>,
    /// Standardized fields in the order set; setting one again replaces it.
    fields: Vec<(Cow<'a, str>, FieldValue<'a>)>,
    /// `(rel, url)`.
    links: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    original: Original<'a>,
}

/// The value of a standardized field: text (borrowed where it can be) or any JSON.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue<'a> {
    Text(Cow<'a, str>),
    Json(serde_json::Value),
}

impl<'a> From<&'a str> for FieldValue<'a> {
    fn from(text: &'a str) -> Self {
        Self::Text(Cow::Borrowed(text))
    }
}

impl From<String> for FieldValue<'_> {
    fn from(text: String) -> Self {
        Self::Text(Cow::Owned(text))
    }
}

impl<'a> From<Cow<'a, str>> for FieldValue<'a> {
    fn from(text: Cow<'a, str>) -> Self {
        Self::Text(text)
    }
}

impl From<serde_json::Value> for FieldValue<'_> {
    fn from(value: serde_json::Value) -> Self {
        Self::Json(value)
    }
}

macro_rules! json_field_values {
    ($($t:ty),*) => {$(
        impl From<$t> for FieldValue<'_> {
            fn from(value: $t) -> Self {
                Self::Json(value.into())
            }
        }
    )*};
}
json_field_values!(bool, u32, u64, usize, i32, i64, f64);

impl FieldValue<'_> {
    fn into_json(self) -> serde_json::Value {
        match self {
            Self::Text(text) => serde_json::Value::String(text.into_owned()),
            Self::Json(value) => value,
        }
    }
}

impl Serialize for FieldValue<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Text(text) => serializer.serialize_str(text),
            Self::Json(value) => value.serialize(serializer),
        }
    }
}

/// The source payload: parsed, or its JSON text as the source sent it (copied into the
/// event as it is: no tree is built and nothing is escaped again).
#[derive(Debug, Clone)]
enum Original<'a> {
    Value(serde_json::Value),
    Raw(&'a RawValue),
    /// JSON text the plugin has already parsed; written as it is.
    Text(&'a str),
}

impl<'a> EventBuilder<'a> {
    /// `event_type` like `com.betalogs.delivery.deployment`; `source_id` is the source's own
    /// identity for this fact (it determines the event id); `time` is RFC 3339.
    pub fn new(
        event_type: impl Into<Cow<'a, str>>,
        category: Category,
        source: impl Into<Cow<'a, str>>,
        source_id: impl Into<Cow<'a, str>>,
        time: impl Into<Cow<'a, str>>,
    ) -> Self {
        Self {
            event_type: event_type.into(),
            category,
            severity: Severity::Info,
            source: source.into(),
            source_id: source_id.into(),
            time: time.into(),
            subject: None,
            correlationid: None,
            // Room for a typical event's fields and links, grown once at most.
            fields: Vec::with_capacity(12),
            links: Vec::with_capacity(3),
            original: Original::Value(serde_json::Value::Null),
        }
    }

    pub fn severity(mut self, severity: Severity) -> Self {
        self.severity = severity;
        self
    }

    pub fn subject(mut self, subject: impl Into<Cow<'a, str>>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    pub fn correlation(mut self, id: impl Into<Cow<'a, str>>) -> Self {
        self.correlationid = Some(id.into());
        self
    }

    /// A standardized field, e.g. `("service.name", "checkout")`.
    pub fn field(
        mut self,
        name: impl Into<Cow<'a, str>>,
        value: impl Into<FieldValue<'a>>,
    ) -> Self {
        let (name, value) = (name.into(), value.into());
        match self.fields.iter_mut().find(|(known, _)| *known == name) {
            Some(slot) => slot.1 = value,
            None => self.fields.push((name, value)),
        }
        self
    }

    /// Evidence, e.g. `("commit", "https://github.com/org/repo/commit/abc")`.
    pub fn link(mut self, rel: impl Into<Cow<'a, str>>, url: impl Into<Cow<'a, str>>) -> Self {
        self.links.push((rel.into(), url.into()));
        self
    }

    /// The source payload, kept untouched.
    pub fn original(mut self, original: serde_json::Value) -> Self {
        self.original = Original::Value(original);
        self
    }

    /// The source payload as the JSON text it arrived in: the fast path for plugins
    /// that read their payloads with borrowed `&RawValue`s.
    pub fn original_raw(mut self, original: &'a RawValue) -> Self {
        self.original = Original::Raw(original);
        self
    }

    /// The source payload as JSON text the plugin has just parsed in full (so it is one
    /// JSON value), written as it is without checking it again: saves a pass over a large
    /// payload. Text that is not JSON makes the event unreadable, and the pipeline, which
    /// validates every event, dead-letters it; prefer [`EventBuilder::original_raw`]
    /// where a `&RawValue` is at hand.
    pub fn original_json_text(mut self, original: &'a str) -> Self {
        self.original = Original::Text(original);
        self
    }

    /// The event as one line of JSON, the form `Collect` and `HandleWebhook` carry:
    /// the same document [`EventBuilder::build`] would serialize to, written without
    /// building it first (a raw original is copied as it is).
    pub fn to_json(&self, context: &MapContext) -> Result<String, serde_json::Error> {
        use std::fmt::Write as _;
        // Sized up front: a raw original can be tens of kilobytes, and growing the
        // buffer by doubling would copy it several times.
        let original_len = match &self.original {
            Original::Raw(raw) => raw.get().len(),
            Original::Text(text) => text.len(),
            Original::Value(_) => 0,
        };
        let mut out = String::with_capacity(original_len + 1024);
        out.push_str(r#"{"specversion":"1.0","id":"#);
        push_json_str(&mut out, &self.id(context));
        for (name, value) in [
            ("source", Some(&self.source)),
            ("type", Some(&self.event_type)),
            ("time", Some(&self.time)),
            ("subject", self.subject.as_ref()),
            ("tenant", Some(&Cow::Borrowed(context.tenant.as_str()))),
            (
                "integration",
                Some(&Cow::Borrowed(context.integration.as_str())),
            ),
        ] {
            if let Some(value) = value {
                out.push_str(",\"");
                out.push_str(name);
                out.push_str("\":");
                push_json_str(&mut out, value);
            }
        }
        out.push_str(r#","category":""#);
        out.push_str(category_name(self.category));
        out.push_str(r#"","severity":""#);
        out.push_str(severity_name(self.severity));
        out.push('"');
        if let Some(id) = &self.correlationid {
            out.push_str(r#","correlationid":"#);
            push_json_str(&mut out, id);
        }
        out.push_str(r#","data":{"#);
        for (name, value) in &self.fields {
            push_json_str(&mut out, name);
            out.push(':');
            match value {
                FieldValue::Text(text) => push_json_str(&mut out, text),
                FieldValue::Json(serde_json::Value::Bool(flag)) => {
                    out.push_str(if *flag { "true" } else { "false" });
                }
                FieldValue::Json(json) => {
                    let _ = write!(out, "{json}");
                }
            }
            out.push(',');
        }
        out.push_str(r#""links":["#);
        for (index, (rel, url)) in self.links.iter().enumerate() {
            if index > 0 {
                out.push(',');
            }
            out.push_str(r#"{"rel":"#);
            push_json_str(&mut out, rel);
            out.push_str(r#","url":"#);
            push_json_str(&mut out, url);
            out.push('}');
        }
        out.push_str(r#"],"enrichments":[],"original":"#);
        match &self.original {
            Original::Value(value) => {
                let _ = write!(out, "{value}");
            }
            Original::Raw(raw) => out.push_str(raw.get()),
            Original::Text(text) => out.push_str(text),
        }
        out.push_str("}}");
        Ok(out)
    }

    fn id(&self, context: &MapContext) -> String {
        event_id(
            &context.tenant,
            &context.integration,
            &self.event_type,
            &self.source_id,
        )
    }

    pub fn build(self, context: &MapContext) -> CanonicalEvent {
        CanonicalEvent {
            specversion: "1.0".to_owned(),
            id: self.id(context),
            source: self.source.into_owned(),
            event_type: self.event_type.into_owned(),
            time: self.time.into_owned(),
            subject: self.subject.map(Cow::into_owned),
            dataschema: None,
            tenant: context.tenant.clone(),
            integration: context.integration.clone(),
            category: self.category,
            severity: self.severity,
            correlationid: self.correlationid.map(Cow::into_owned),
            revision: None,
            data: EventData {
                fields: self
                    .fields
                    .into_iter()
                    .map(|(name, value)| (name.into_owned(), value.into_json()))
                    .collect(),
                links: self
                    .links
                    .into_iter()
                    .map(|(rel, url)| Link {
                        rel: rel.into_owned(),
                        url: url.into_owned(),
                        title: None,
                    })
                    .collect(),
                enrichments: Vec::new(),
                original: match self.original {
                    Original::Value(value) => value,
                    Original::Raw(raw) => serde_json::from_str(raw.get())
                        .expect("a RawValue holds valid JSON by construction"),
                    // The caller's promise (see `original_json_text`); broken, it is null.
                    Original::Text(text) => {
                        serde_json::from_str(text).unwrap_or(serde_json::Value::Null)
                    }
                },
            },
        }
    }
}

/// A JSON string: quotes around the text, escaped only when it has to be (most text in
/// events, URLs and SHAs, has nothing to escape; checking that is one vectorized pass).
fn push_json_str(out: &mut String, text: &str) {
    let needs_escape = text.bytes().fold(false, |found, b| {
        found | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if needs_escape {
        out.push_str(&serde_json::to_string(text).expect("a string always serializes"));
    } else {
        out.push('"');
        out.push_str(text);
        out.push('"');
    }
}

/// The schema's names, as `Category`'s serde form writes them.
fn category_name(category: Category) -> &'static str {
    match category {
        Category::System => "system",
        Category::Security => "security",
        Category::Delivery => "delivery",
    }
}

/// The schema's names, as `Severity`'s serde form writes them.
fn severity_name(severity: Severity) -> &'static str {
    match severity {
        Severity::Debug => "debug",
        Severity::Info => "info",
        Severity::Warning => "warning",
        Severity::Error => "error",
        Severity::Critical => "critical",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_an_event_with_a_deterministic_id() {
        let context = MapContext {
            tenant: "acme".into(),
            integration: "gh".into(),
        };
        let build = || {
            EventBuilder::new(
                "com.betalogs.delivery.deployment",
                Category::Delivery,
                "https://github.com/org/app",
                "deploy-42",
                "2026-11-25T10:00:00Z",
            )
            .severity(Severity::Info)
            .subject("deploy-42")
            .field("service.name", "checkout")
            .field("deployment.environment", "production")
            .link("deployment", "https://github.com/org/app/deployments/42")
            .original(serde_json::json!({"id": 42}))
            .build(&context)
        };
        let event = build();
        assert_eq!(event.id, build().id);
        let json = serde_json::to_value(&event).expect("json");
        assert_eq!(json["type"], "com.betalogs.delivery.deployment");
        assert_eq!(json["data"]["service.name"], "checkout");
        assert_eq!(json["data"]["links"][0]["rel"], "deployment");
        assert_eq!(json["data"]["original"]["id"], 42);
        assert_eq!(json["category"], "delivery");
    }

    #[test]
    fn to_json_writes_what_build_serializes_with_the_raw_original_as_sent() {
        let context = MapContext {
            tenant: "acme".into(),
            integration: "gh".into(),
        };
        let raw: Box<RawValue> =
            serde_json::from_str(r#"{"id": 42, "note": "tab\there"}"#).expect("raw");
        let builder = EventBuilder::new(
            "com.betalogs.delivery.commit",
            Category::Delivery,
            "https://github.com/org/app",
            "abc",
            "2026-11-25T10:00:00Z",
        )
        .subject("abc")
        .field("service.name", "app")
        .link("commit", "https://github.com/org/app/commit/abc")
        .original_raw(&raw);
        let written = builder.to_json(&context).expect("json");
        assert!(
            written.contains(r#""original":{"id": 42, "note": "tab\there"}"#),
            "copied as sent: {written}"
        );
        let built = serde_json::to_value(builder.build(&context)).expect("json");
        let reread: serde_json::Value = serde_json::from_str(&written).expect("json");
        assert_eq!(reread, built);
    }

    #[test]
    fn to_json_escapes_what_needs_it_for_every_category_and_severity() {
        let context = MapContext {
            tenant: "acme \"quoted\"".into(),
            integration: "gh".into(),
        };
        let tricky = "line\nbreak, tab\t, quote \", backslash \\, bell \u{7}, ü, 🦀";
        for category in [Category::System, Category::Security, Category::Delivery] {
            for severity in [
                Severity::Debug,
                Severity::Info,
                Severity::Warning,
                Severity::Error,
                Severity::Critical,
            ] {
                let builder = EventBuilder::new(
                    "com.betalogs.system.test",
                    category,
                    "https://example.com/a?b=\"c\"",
                    tricky,
                    "2026-11-25T10:00:00Z",
                )
                .severity(severity)
                .subject(tricky)
                .correlation(tricky)
                .field("text", tricky)
                .field("number", 42u64)
                .field("flag", true)
                .field("object", serde_json::json!({"nested": [1, "two"]}))
                .field("text", "replaced")
                .link("evidence", "https://example.com/\\path")
                .original(serde_json::json!({"k": tricky}));
                let written = builder.to_json(&context).expect("json");
                let reread: serde_json::Value = serde_json::from_str(&written).expect("valid JSON");
                let built = serde_json::to_value(builder.build(&context)).expect("json");
                assert_eq!(reread, built, "{category:?} {severity:?}");
                assert_eq!(reread["data"]["text"], "replaced", "set again, replaced");
                assert!(!written.contains('\n'), "one line");
            }
        }
    }

    #[test]
    fn already_parsed_text_is_spliced_in_as_the_original() {
        let context = MapContext {
            tenant: "acme".into(),
            integration: "gh".into(),
        };
        let text = r#"{"after": "abc", "commits": [ {"id": "1"} ]}"#;
        let builder = EventBuilder::new(
            "com.betalogs.delivery.push",
            Category::Delivery,
            "https://github.com/org/app",
            "abc",
            "2026-11-25T10:00:00Z",
        )
        .field("service.name", "app")
        .original_json_text(text);
        let written = builder.to_json(&context).expect("json");
        assert!(
            written.ends_with(&format!(r#""original":{text}}}}}"#)),
            "{written}"
        );
        let reread: serde_json::Value = serde_json::from_str(&written).expect("one JSON document");
        assert_eq!(
            reread,
            serde_json::to_value(builder.build(&context)).expect("json")
        );
    }
}
