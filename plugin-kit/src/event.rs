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
    fields: Vec<(Cow<'static, str>, FieldValue<'a>)>,
    /// `(rel, url)`.
    links: Vec<(Cow<'static, str>, Cow<'a, str>)>,
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
            fields: Vec::new(),
            links: Vec::new(),
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
        name: impl Into<Cow<'static, str>>,
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
    pub fn link(mut self, rel: impl Into<Cow<'static, str>>, url: impl Into<Cow<'a, str>>) -> Self {
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
        /// `data`: the fields, then `links`, `enrichments` and `original`.
        struct Data<'b, 'a>(&'b EventBuilder<'a>);
        /// `{"rel", "url"}`.
        struct Links<'b, 'a>(&'b [(Cow<'static, str>, Cow<'a, str>)]);
        impl Serialize for Links<'_, '_> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                use serde::ser::{SerializeSeq, SerializeStruct};
                struct One<'c>(&'c str, &'c str);
                impl Serialize for One<'_> {
                    fn serialize<S: serde::Serializer>(
                        &self,
                        serializer: S,
                    ) -> Result<S::Ok, S::Error> {
                        let mut link = serializer.serialize_struct("Link", 2)?;
                        link.serialize_field("rel", self.0)?;
                        link.serialize_field("url", self.1)?;
                        link.end()
                    }
                }
                let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
                for (rel, url) in self.0 {
                    seq.serialize_element(&One(rel, url))?;
                }
                seq.end()
            }
        }
        impl Serialize for Data<'_, '_> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeMap;
                let builder = self.0;
                let mut map = serializer.serialize_map(Some(builder.fields.len() + 3))?;
                for (name, value) in &builder.fields {
                    map.serialize_entry(name.as_ref(), value)?;
                }
                map.serialize_entry("links", &Links(&builder.links))?;
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
            data: Data<'a, 'a>,
        }
        // Sized up front: a raw original can be tens of kilobytes, and growing the
        // buffer by doubling would copy it several times.
        let original_len = match &self.original {
            Original::Raw(raw) => raw.get().len(),
            Original::Text(text) => text.len(),
            Original::Value(_) => 0,
        };
        let mut buffer = Vec::with_capacity(original_len + 1024);
        serde_json::to_writer(
            &mut buffer,
            &Event {
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
            },
        )?;
        if let Original::Text(text) = &self.original {
            // `original` is the last member of `data`, itself the last member of the
            // event: the document ends `null}}`, and the text takes the `null`'s place.
            const TAIL: &[u8] = b"null}}";
            debug_assert!(buffer.ends_with(TAIL));
            buffer.truncate(buffer.len() - TAIL.len());
            buffer.extend_from_slice(text.as_bytes());
            buffer.extend_from_slice(b"}}");
        }
        // serde_json writes only UTF-8, and the spliced text is a `str`.
        Ok(String::from_utf8(buffer).expect("serde_json writes UTF-8"))
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

impl Serialize for Original<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Value(value) => value.serialize(serializer),
            Self::Raw(raw) => raw.serialize(serializer),
            // Spliced in by `to_json` (serde has no public way to write unchecked text).
            Self::Text(_) => serializer.serialize_unit(),
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
