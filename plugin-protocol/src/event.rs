//! The canonical event, version 1: Rust types matching
//! `schema/canonical-event.v1.json` (the schema is the contract; these types are how
//! Rust code builds and reads events).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The JSON Schema every event is validated against.
pub const CANONICAL_EVENT_SCHEMA_V1: &str = include_str!("../schema/canonical-event.v1.json");

/// Which part of the platform an event concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    System,
    Security,
    Delivery,
}

/// How bad it is, in rising order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Debug,
    Info,
    Warning,
    Error,
    Critical,
}

impl Severity {
    /// The name as events write it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Error => "error",
            Self::Critical => "critical",
        }
    }
}

/// A piece of evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    pub rel: String,
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}

/// Where an enrichment came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrichmentSource {
    pub plugin: String,
    pub integration: String,
    pub tenant: String,
}

/// Context added to an event by another integration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Enrichment {
    pub source: EnrichmentSource,
    pub kind: String,
    /// A reason a person can read, e.g. "deployed 12 min before, same service and environment".
    pub reason: String,
    /// 0 to 1.
    pub score: f64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<Link>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

/// The `data` member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventData {
    /// Standardized fields with OpenTelemetry-style names (`service.name`, ...).
    #[serde(flatten)]
    pub fields: BTreeMap<String, serde_json::Value>,
    pub links: Vec<Link>,
    pub enrichments: Vec<Enrichment>,
    /// The source payload, untouched.
    pub original: serde_json::Value,
}

/// A canonical event (CloudEvents 1.0 with Betalogs extensions).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CanonicalEvent {
    pub specversion: String,
    pub id: String,
    pub source: String,
    #[serde(rename = "type")]
    pub event_type: String,
    /// RFC 3339.
    pub time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataschema: Option<String>,
    pub tenant: String,
    pub integration: String,
    pub category: Category,
    pub severity: Severity,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlationid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u64>,
    pub data: EventData,
}

/// The deterministic id of the event for `source_id` (the source's own identity, e.g. a
/// GitHub delivery id plus a commit SHA) within a tenant's integration: the same source
/// object always gets the same id, so re-reading it is deduplicated, not duplicated.
pub fn event_id(tenant: &str, integration: &str, event_type: &str, source_id: &str) -> String {
    let mut hasher = Sha256::new();
    for part in [tenant, integration, event_type, source_id] {
        hasher.update(part.as_bytes());
        hasher.update([0u8]);
    }
    let digest = hasher.finalize();
    // Written into one buffer: plugins call this for every event they emit.
    let mut text = [0u8; 32];
    hex::encode_to_slice(&digest[..16], &mut text).expect("32 hex digits for 16 bytes");
    let mut id = String::with_capacity(35);
    id.push_str("ev_");
    id.push_str(std::str::from_utf8(&text).expect("hex digits are ASCII"));
    id
}

/// Whether `name` is a standardized field of an event's `data`: a dotted name of
/// lowercase words (`service.name`, `vcs.ref.head.revision`), as the canonical schema's
/// pattern `^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$` says.
pub fn is_field_name(name: &str) -> bool {
    let word = |part: &str| {
        !part.is_empty()
            && part
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    };
    name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.contains('.')
        && name.split('.').all(word)
}

/// Milliseconds since the Unix epoch of an RFC 3339 time as the schema allows it
/// (`Z` or a `±hh:mm` offset, optional fraction); `None` for anything else or for times
/// before 1970. The pipeline orders and indexes events by it.
pub fn event_time_ms(time: &str) -> Option<u64> {
    let (local, offset_minutes) = match time.strip_suffix('Z').or_else(|| time.strip_suffix('z')) {
        Some(local) => (local, 0i64),
        None => {
            let split = time.len().checked_sub(6)?;
            let (local, offset) = (time.get(..split)?, time.get(split..)?);
            let sign = match offset.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (hours, minutes) = offset.get(1..)?.split_once(':')?;
            let hours: i64 = hours.parse().ok()?;
            let minutes: i64 = minutes.parse().ok()?;
            if hours > 23 || minutes > 59 {
                return None;
            }
            (local, sign * (hours * 60 + minutes))
        }
    };
    // humantime reads the local part as UTC; the offset is then taken out.
    let utc = humantime::parse_rfc3339_weak(local).ok()?;
    let millis = i64::try_from(utc.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis()).ok()?;
    u64::try_from(millis - offset_minutes * 60_000).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_with_offsets_and_fractions_are_read() {
        assert_eq!(event_time_ms("1970-01-01T00:00:01Z"), Some(1000));
        assert_eq!(event_time_ms("1970-01-01T00:00:01.250Z"), Some(1250));
        assert_eq!(
            event_time_ms("2026-11-25T12:00:00+02:00"),
            event_time_ms("2026-11-25T10:00:00Z")
        );
        assert_eq!(
            event_time_ms("2026-11-25T12:00:00-01:30"),
            event_time_ms("2026-11-25T13:30:00Z")
        );
        for bad in [
            "",
            "yesterday",
            "2026-11-25",
            "2026-11-25T10:00:00+25:00",
            "2026-13-01T00:00:00Z",
            "1969-12-31T23:59:59Z",
        ] {
            assert_eq!(event_time_ms(bad), None, "{bad}");
        }
    }

    #[test]
    fn field_names_follow_the_schemas_pattern() {
        for good in [
            "service.name",
            "vcs.ref.head.revision",
            "a1.b_2",
            "cloud.region",
        ] {
            assert!(is_field_name(good), "{good}");
        }
        for bad in [
            "service",
            "Service.name",
            "a..b",
            ".a",
            "a.",
            "1a.b",
            "a.B",
            "a-b.c",
            "",
        ] {
            assert!(!is_field_name(bad), "{bad}");
        }
    }

    #[test]
    fn ids_are_deterministic_and_distinct() {
        let a = event_id("acme", "gh", "com.betalogs.delivery.push", "delivery-1");
        assert_eq!(
            a,
            event_id("acme", "gh", "com.betalogs.delivery.push", "delivery-1")
        );
        assert_ne!(
            a,
            event_id("globex", "gh", "com.betalogs.delivery.push", "delivery-1")
        );
        assert_ne!(
            a,
            event_id("acme", "gh", "com.betalogs.delivery.push", "delivery-2")
        );
        // Separators keep `ab`+`c` and `a`+`bc` apart.
        assert_ne!(event_id("ab", "c", "t", "x"), event_id("a", "bc", "t", "x"));
        assert_eq!(a.len(), 35);
    }

    #[test]
    fn the_schema_is_json_and_names_the_required_members() {
        let schema: serde_json::Value =
            serde_json::from_str(CANONICAL_EVENT_SCHEMA_V1).expect("schema is JSON");
        let required: Vec<&str> = schema["required"]
            .as_array()
            .expect("required")
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        for member in [
            "specversion",
            "id",
            "source",
            "type",
            "time",
            "tenant",
            "integration",
            "category",
            "severity",
            "data",
        ] {
            assert!(required.contains(&member), "{member}");
        }
    }

    #[test]
    fn severities_order_by_badness() {
        assert!(Severity::Critical > Severity::Error && Severity::Warning > Severity::Info);
    }
}
