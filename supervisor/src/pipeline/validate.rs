//! Validating events against the canonical event schema, and against the instance that
//! produced them: a plugin of tenant A cannot emit an event for tenant B.

use plugin_protocol::CANONICAL_EVENT_SCHEMA_V1;

use super::enricher::Correlated;

/// Events larger than this are rejected unparsed.
pub const MAX_EVENT_BYTES: usize = 1024 * 1024;

/// Why an event was rejected: the stage and every reason, each naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event rejected at {stage}: {}", reasons.join("; "))]
pub struct Rejection {
    /// `size`, `parse`, `schema` or `binding`.
    pub stage: &'static str,
    pub reasons: Vec<String>,
}

impl Rejection {
    fn one(stage: &'static str, reason: String) -> Self {
        Self {
            stage,
            reasons: vec![reason],
        }
    }
}

/// The compiled canonical schema.
#[derive(Debug)]
pub struct EventValidator {
    schema: jsonschema::Validator,
}

impl Default for EventValidator {
    fn default() -> Self {
        Self::new()
    }
}

impl EventValidator {
    pub fn new() -> Self {
        let schema: serde_json::Value = serde_json::from_str(CANONICAL_EVENT_SCHEMA_V1)
            .expect("the embedded canonical schema is JSON (tested)");
        let schema = jsonschema::options()
            .should_validate_formats(true)
            .build(&schema)
            .expect("the embedded canonical schema compiles (tested)");
        Self { schema }
    }

    /// Parses and validates one event produced for `tenant`/`integration`. The event is
    /// stored as it came (it is valid JSON), so nothing is serialized twice.
    pub fn validate(
        &self,
        raw: &str,
        tenant: &str,
        integration: &str,
        correlate: impl FnOnce(&serde_json::Value, u64) -> Correlated,
    ) -> Result<Validated, Rejection> {
        let value = parse(raw)?;
        // The log and the JSONL sink hold one event per line: text with line breaks
        // (whitespace between tokens, as in a pretty-printed payload a plugin copied in)
        // is written compactly instead.
        self.check(
            &value,
            tenant,
            integration,
            || {
                // A byte search: `str::contains` with a set of chars decodes every
                // char, which took a visible share of the daemon on 10 KB events.
                if memchr::memchr2(b'\n', b'\r', raw.as_bytes()).is_some() {
                    value.to_string()
                } else {
                    raw.to_owned()
                }
            },
            correlate,
        )
    }

    /// Validates an event already parsed (and perhaps changed by field mappings);
    /// `json` gives its text when it is accepted, unless `correlate` (the correlation
    /// index's look at the valid event) enriched it.
    pub fn check(
        &self,
        value: &serde_json::Value,
        tenant: &str,
        integration: &str,
        json: impl FnOnce() -> String,
        correlate: impl FnOnce(&serde_json::Value, u64) -> Correlated,
    ) -> Result<Validated, Rejection> {
        if !self.schema.is_valid(value) {
            let reasons: Vec<String> = self
                .schema
                .iter_errors(value)
                .map(|error| {
                    let path = error.instance_path().as_str().to_owned();
                    format!("{}: {error}", if path.is_empty() { "/" } else { &path })
                })
                .collect();
            return Err(Rejection {
                stage: "schema",
                reasons,
            });
        }
        // The schema guarantees these members are strings.
        let member = |name: &str| value.get(name).and_then(|v| v.as_str()).unwrap_or_default();
        let (event_tenant, event_integration) = (member("tenant"), member("integration"));
        if event_tenant != tenant || event_integration != integration {
            return Err(Rejection::one(
                "binding",
                format!(
                    "the event says tenant `{event_tenant}` integration `{event_integration}`, but it came from tenant `{tenant}` integration `{integration}`"
                ),
            ));
        }
        let time_ms = plugin_protocol::event_time_ms(member("time")).ok_or_else(|| {
            Rejection::one(
                "schema",
                format!("/time: `{}` is before 1970 or not RFC 3339", member("time")),
            )
        })?;
        let correlated = correlate(value, time_ms);
        Ok(Validated {
            id: member("id").to_owned(),
            time_ms,
            json: correlated.enriched.unwrap_or_else(json),
            revision: None,
            writes: correlated.writes,
            revisions: correlated.revisions,
        })
    }
}

/// Parses one event's text, refusing oversized input before reading it.
pub fn parse(raw: &str) -> Result<serde_json::Value, Rejection> {
    if raw.len() > MAX_EVENT_BYTES {
        return Err(Rejection::one(
            "size",
            format!(
                "{} bytes, more than the {MAX_EVENT_BYTES}-byte limit",
                raw.len()
            ),
        ));
    }
    serde_json::from_str(raw).map_err(|e| {
        Rejection::one(
            "parse",
            format!("not JSON (line {} column {})", e.line(), e.column()),
        )
    })
}

/// An accepted event: its identity, its time, and its JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validated {
    pub id: String,
    pub time_ms: u64,
    pub json: String,
    /// A revision after the first: stored and delivered although its id was seen.
    pub revision: Option<u64>,
    /// Correlation index writes, committed with the event if it is stored.
    pub writes: Vec<super::enricher::IndexWrite>,
    /// Earlier events this one revises (a late deployment re-enriching failures).
    pub revisions: Vec<super::enricher::Revision>,
}

impl Validated {
    /// The id the deduplication window knows this event by: its id, or for a later
    /// revision its id and revision.
    pub fn dedup_id(&self) -> std::borrow::Cow<'_, str> {
        match self.revision {
            Some(revision) if revision > 1 => {
                std::borrow::Cow::Owned(format!("{}#r{revision}", self.id))
            }
            _ => std::borrow::Cow::Borrowed(&self.id),
        }
    }

    /// For a later revision of a failure: the failure's key in the correlation index,
    /// which the revision rewrites.
    pub fn revised_failure(&self) -> Option<&[u8]> {
        self.revision.filter(|revision| *revision > 1)?;
        self.writes
            .iter()
            .find(|(table, _, _)| *table == crate::store::Table::Failures)
            .map(|(_, key, _)| key.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use plugin_kit::{Category, EventBuilder, MapContext, Severity};
    use serde_json::{Value, json};

    use super::*;

    fn uncorrelated(_: &Value, _: u64) -> Correlated {
        Correlated::default()
    }

    fn valid() -> Value {
        let context = MapContext {
            tenant: "acme".into(),
            integration: "gh".into(),
        };
        let event = EventBuilder::new(
            "com.betalogs.delivery.deployment",
            Category::Delivery,
            "https://github.com/org/app",
            "d-1",
            "2026-11-25T10:00:00Z",
        )
        .severity(Severity::Warning)
        .field("service.name", "checkout")
        .link("deployment", "https://github.com/org/app/deployments/1")
        .original(json!({"id": 1}))
        .build(&context);
        serde_json::to_value(event).expect("json")
    }

    fn check(value: &Value) -> Result<Validated, Rejection> {
        EventValidator::new().validate(&value.to_string(), "acme", "gh", uncorrelated)
    }

    #[test]
    fn a_built_event_is_valid() {
        let event = check(&valid()).expect("valid");
        assert!(event.id.starts_with("ev_"));
        assert_eq!(
            Some(event.time_ms),
            plugin_protocol::event_time_ms("2026-11-25T10:00:00Z")
        );
        let parsed: plugin_protocol::CanonicalEvent =
            serde_json::from_str(&event.json).expect("the stored text is the event");
        assert_eq!(parsed.category, Category::Delivery);
    }

    #[test]
    fn an_event_with_line_breaks_is_stored_on_one_line() {
        let pretty = serde_json::to_string_pretty(&valid()).expect("json");
        assert!(pretty.contains('\n'));
        let event = EventValidator::new()
            .validate(&pretty.replace('\n', "\r\n"), "acme", "gh", uncorrelated)
            .expect("valid");
        assert!(!event.json.contains(['\n', '\r']), "{}", event.json);
        assert_eq!(
            serde_json::from_str::<Value>(&event.json).expect("json"),
            valid()
        );
        let compact = check(&valid()).expect("valid");
        assert_eq!(
            compact.json,
            valid().to_string(),
            "compact text is kept as sent"
        );
    }

    /// Breaks one thing in a valid event.
    type Mutation = Box<dyn Fn(&mut Value)>;

    #[test]
    fn each_violation_names_its_field() {
        let cases: Vec<(&str, Mutation, &str)> = vec![
            (
                "category",
                Box::new(|v| v["category"] = json!("finance")),
                "/category",
            ),
            (
                "time",
                Box::new(|v| v["time"] = json!("yesterday")),
                "/time",
            ),
            (
                "type",
                Box::new(|v| v["type"] = json!("deployment")),
                "/type",
            ),
            (
                "original",
                Box::new(|v| {
                    v["data"].as_object_mut().expect("data").remove("original");
                }),
                "original",
            ),
            (
                "link",
                Box::new(|v| v["data"]["links"][0]["url"] = json!("javascript:alert(1)")),
                "/data/links/0/url",
            ),
            ("extra", Box::new(|v| v["surprise"] = json!(1)), "surprise"),
            (
                "field",
                Box::new(|v| v["data"]["service.name"] = json!({"nested": true})),
                "/data/service.name",
            ),
            (
                "specversion",
                Box::new(|v| v["specversion"] = json!("0.3")),
                "/specversion",
            ),
        ];
        for (name, mutate, expected) in cases {
            let mut event = valid();
            mutate(&mut event);
            let rejection = check(&event).expect_err(name);
            assert_eq!(rejection.stage, "schema", "{name}");
            assert!(
                rejection.to_string().contains(expected),
                "{name}: {rejection}"
            );
        }
    }

    #[test]
    fn an_event_for_another_tenant_is_refused() {
        let mut event = valid();
        event["tenant"] = json!("globex");
        let rejection = check(&event).expect_err("binding");
        assert_eq!(rejection.stage, "binding");
        assert!(rejection.to_string().contains("came from tenant `acme`"));
    }

    #[test]
    fn hostile_input_is_rejected_cheaply() {
        let validator = EventValidator::new();
        assert_eq!(
            validator
                .validate("{not json", "acme", "gh", uncorrelated)
                .expect_err("parse")
                .stage,
            "parse"
        );
        assert_eq!(
            validator
                .validate("[]", "acme", "gh", uncorrelated)
                .expect_err("array")
                .stage,
            "schema"
        );
        let huge = format!("{{\"x\":\"{}\"}}", "a".repeat(MAX_EVENT_BYTES));
        assert_eq!(
            validator
                .validate(&huge, "acme", "gh", uncorrelated)
                .expect_err("size")
                .stage,
            "size"
        );
        let deep = "[".repeat(10_000) + &"]".repeat(10_000);
        assert!(
            validator
                .validate(&deep, "acme", "gh", uncorrelated)
                .is_err()
        );
    }
}
