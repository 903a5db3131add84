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

/// A plugin's mapping from one kind of source object to canonical events.
pub trait Mapper {
    type Input;
    fn map(
        &self,
        input: &Self::Input,
        context: &MapContext,
    ) -> Result<Vec<CanonicalEvent>, MapError>;
}

/// Builds one event.
#[derive(Debug, Clone)]
pub struct EventBuilder {
    event_type: String,
    category: Category,
    severity: Severity,
    source: String,
    source_id: String,
    time: String,
    subject: Option<String>,
    correlationid: Option<String>,
    /// Standardized fields in the order set; setting one again replaces it. Names are
    /// `Cow` so the usual literal names cost no allocation per event.
    fields: Vec<(Cow<'static, str>, serde_json::Value)>,
    links: Vec<Link>,
    original: Original,
}

/// The source payload: parsed, or its JSON text as the source sent it (copied into the
/// event as it is: no tree is built and nothing is escaped again).
#[derive(Debug, Clone)]
enum Original {
    Value(serde_json::Value),
    Raw(Box<RawValue>),
}

impl EventBuilder {
    /// `event_type` like `com.betalogs.delivery.deployment`; `source_id` is the source's own
    /// identity for this fact (it determines the event id); `time` is RFC 3339.
    pub fn new(
        event_type: impl Into<String>,
        category: Category,
        source: impl Into<String>,
        source_id: impl Into<String>,
        time: impl Into<String>,
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
            fields: Vec::new(),
            links: Vec::new(),
            original: Original::Value(serde_json::Value::Null),
        }
    }

    pub fn severity(mut self, severity: Severity) -> Self {
        self.severity = severity;
        self
    }

    pub fn subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    pub fn correlation(mut self, id: impl Into<String>) -> Self {
        self.correlationid = Some(id.into());
        self
    }

    /// A standardized field, e.g. `("service.name", "checkout")`.
    pub fn field(
        mut self,
        name: impl Into<Cow<'static, str>>,
        value: impl Into<serde_json::Value>,
    ) -> Self {
        let (name, value) = (name.into(), value.into());
        match self.fields.iter_mut().find(|(known, _)| *known == name) {
            Some(slot) => slot.1 = value,
            None => self.fields.push((name, value)),
        }
        self
    }

    /// Evidence, e.g. `("commit", "https://github.com/org/repo/commit/abc")`.
    pub fn link(mut self, rel: &str, url: impl Into<String>) -> Self {
        self.links.push(Link {
            rel: rel.to_owned(),
            url: url.into(),
            title: None,
        });
        self
    }

    /// The source payload, kept untouched.
    pub fn original(mut self, original: serde_json::Value) -> Self {
        self.original = Original::Value(original);
        self
    }

    /// The source payload as the JSON text it arrived in: the fast path for plugins
    /// that read their payloads with borrowed `&RawValue`s.
    pub fn original_raw(mut self, original: &RawValue) -> Self {
        self.original = Original::Raw(original.to_owned());
        self
    }

    /// The event as one line of JSON, the form `Collect` and `HandleWebhook` carry:
    /// the same document [`EventBuilder::build`] would serialize to, written without
    /// building it first (a raw original is copied as it is).
    pub fn to_json(&self, context: &MapContext) -> Result<String, serde_json::Error> {
        /// `data`: the fields, then `links`, `enrichments` and `original`.
        struct Data<'a>(&'a EventBuilder);
        impl Serialize for Data<'_> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeMap;
                let builder = self.0;
                let mut map = serializer.serialize_map(Some(builder.fields.len() + 3))?;
                for (name, value) in &builder.fields {
                    map.serialize_entry(name.as_ref(), value)?;
                }
                map.serialize_entry("links", &builder.links)?;
                map.serialize_entry("enrichments", &[(); 0])?;
                map.serialize_entry("original", &builder.original)?;
                map.end()
            }
        }
        #[derive(Serialize)]
        struct Event<'a> {
            specversion: &'static str,
            id: String,
            source: &'a str,
            #[serde(rename = "type")]
            event_type: &'a str,
            time: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            subject: Option<&'a str>,
            tenant: &'a str,
            integration: &'a str,
            category: Category,
            severity: Severity,
            #[serde(skip_serializing_if = "Option::is_none")]
            correlationid: Option<&'a str>,
            data: Data<'a>,
        }
        serde_json::to_string(&Event {
            specversion: "1.0",
            id: self.id(context),
            source: &self.source,
            event_type: &self.event_type,
            time: &self.time,
            subject: self.subject.as_deref(),
            tenant: &context.tenant,
            integration: &context.integration,
            category: self.category,
            severity: self.severity,
            correlationid: self.correlationid.as_deref(),
            data: Data(self),
        })
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
            source: self.source,
            event_type: self.event_type,
            time: self.time,
            subject: self.subject,
            dataschema: None,
            tenant: context.tenant.clone(),
            integration: context.integration.clone(),
            category: self.category,
            severity: self.severity,
            correlationid: self.correlationid,
            revision: None,
            data: EventData {
                fields: self
                    .fields
                    .into_iter()
                    .map(|(name, value)| (name.into_owned(), value))
                    .collect(),
                links: self.links,
                enrichments: Vec::new(),
                original: match self.original {
                    Original::Value(value) => value,
                    Original::Raw(raw) => serde_json::from_str(raw.get())
                        .expect("a RawValue holds valid JSON by construction"),
                },
            },
        }
    }
}

impl Serialize for Original {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Value(value) => value.serialize(serializer),
            Self::Raw(raw) => raw.serialize(serializer),
        }
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
}
