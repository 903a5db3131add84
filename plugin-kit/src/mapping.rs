//! Field mappings configured per integration (the `mappings` key of its configuration),
//! applied to canonical events without code changes: set a field from a JSON Pointer into
//! `data.original`, from a constant or from a template; rename; lowercase; drop. The
//! pipeline applies them before validation; plugin authors can run the same rules in
//! tests. Rules are checked when compiled, and each error names its rule (by position
//! and what it does) and, when applying, the event.
//!
//! ```toml
//! [[mappings]]
//! set = "service.name"
//! from = "/repository/name"          # JSON Pointer into data.original
//! [[mappings]]
//! set = "deployment.environment"
//! template = "{/deployment/environment}-eu"
//! [[mappings]]
//! rename = { from = "env", to = "deployment.environment" }
//! [[mappings]]
//! lowercase = "deployment.environment"
//! [[mappings]]
//! drop = "debug.payload"
//! ```
//!
//! Targets are keys of `data`, or the envelope's `subject`, `severity` and
//! `correlationid`. What identifies an event (id, source, type, time, tenant,
//! integration, category) and the evidence (`original`, `links`, `enrichments`) cannot be
//! mapped.

use serde::Deserialize;
use serde_json::{Map, Value};

/// Envelope members a rule may set.
const ENVELOPE_TARGETS: &[&str] = &["subject", "severity", "correlationid"];
/// Members of `data` a rule may not touch.
const PROTECTED_DATA: &[&str] = &["original", "links", "enrichments"];

/// Why rules did not compile or did not apply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    #[error("mappings must be an array of rules")]
    NotAnArray,
    #[error("mapping rule {index}: {reason}")]
    Rule { index: usize, reason: String },
    #[error("mapping rule {index} ({rule}) on event `{event}`: {reason}")]
    Apply {
        index: usize,
        rule: String,
        event: String,
        reason: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    set: Option<String>,
    from: Option<String>,
    value: Option<Value>,
    template: Option<String>,
    rename: Option<RawRename>,
    lowercase: Option<String>,
    drop: Option<String>,
    /// `set` from a pointer that is absent: leave the field alone (default) or fail.
    #[serde(default)]
    required: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRename {
    from: String,
    to: String,
}

/// One piece of a template: text, or a JSON Pointer into `original`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Pointer(String),
}

#[derive(Debug, Clone, PartialEq)]
enum Rule {
    SetFrom {
        target: String,
        pointer: String,
        required: bool,
    },
    SetValue {
        target: String,
        value: Value,
    },
    SetTemplate {
        target: String,
        pieces: Vec<Piece>,
    },
    Rename {
        from: String,
        to: String,
    },
    Lowercase(String),
    Drop(String),
}

impl Rule {
    fn describe(&self) -> String {
        match self {
            Rule::SetFrom {
                target, pointer, ..
            } => format!("set {target} from {pointer}"),
            Rule::SetValue { target, .. } => format!("set {target} to a constant"),
            Rule::SetTemplate { target, .. } => format!("set {target} from a template"),
            Rule::Rename { from, to } => format!("rename {from} to {to}"),
            Rule::Lowercase(field) => format!("lowercase {field}"),
            Rule::Drop(field) => format!("drop {field}"),
        }
    }
}

/// Compiled rules, applied in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldMappings {
    rules: Vec<Rule>,
}

fn check_target(index: usize, target: &str) -> Result<String, MappingError> {
    let bad = |reason: String| MappingError::Rule { index, reason };
    if target.is_empty() || target.len() > 128 {
        return Err(bad(format!("target `{target}` must be 1-128 characters")));
    }
    if PROTECTED_DATA.contains(&target) {
        return Err(bad(format!("`{target}` is evidence and cannot be mapped")));
    }
    if !target
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(bad(format!(
            "target `{target}`: use letters, digits, `.`, `_` or `-`"
        )));
    }
    Ok(target.to_owned())
}

fn check_pointer(index: usize, pointer: &str) -> Result<String, MappingError> {
    if !(pointer.is_empty() || pointer.starts_with('/')) {
        return Err(MappingError::Rule {
            index,
            reason: format!("`{pointer}` is not a JSON Pointer (it starts with `/`)"),
        });
    }
    Ok(pointer.to_owned())
}

fn parse_template(index: usize, template: &str) -> Result<Vec<Piece>, MappingError> {
    let mut pieces = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            pieces.push(Piece::Text(rest[..open].to_owned()));
        }
        let Some(close) = rest[open..].find('}') else {
            return Err(MappingError::Rule {
                index,
                reason: format!("template `{template}` has a `{{` without its `}}`"),
            });
        };
        let pointer = &rest[open + 1..open + close];
        pieces.push(Piece::Pointer(check_pointer(index, pointer)?));
        rest = &rest[open + close + 1..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest.to_owned()));
    }
    Ok(pieces)
}

impl FieldMappings {
    /// Compiles the `mappings` value of an integration's configuration (absent: none).
    pub fn compile(config: Option<&Value>) -> Result<Self, MappingError> {
        let Some(config) = config else {
            return Ok(Self::default());
        };
        let Value::Array(items) = config else {
            return Err(MappingError::NotAnArray);
        };
        let mut rules = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            let raw: RawRule =
                serde_json::from_value(item.clone()).map_err(|e| MappingError::Rule {
                    index,
                    reason: e.to_string(),
                })?;
            let bad = |reason: &str| MappingError::Rule {
                index,
                reason: reason.to_owned(),
            };
            let rule = match raw {
                RawRule {
                    set: Some(target),
                    from,
                    value,
                    template,
                    rename: None,
                    lowercase: None,
                    drop: None,
                    required,
                } => {
                    let target = check_target(index, &target)?;
                    match (from, value, template) {
                        (Some(pointer), None, None) => Rule::SetFrom {
                            target,
                            pointer: check_pointer(index, &pointer)?,
                            required,
                        },
                        (None, Some(value), None) => Rule::SetValue { target, value },
                        (None, None, Some(template)) => Rule::SetTemplate {
                            target,
                            pieces: parse_template(index, &template)?,
                        },
                        _ => {
                            return Err(bad(
                                "`set` takes exactly one of `from`, `value` or `template`",
                            ));
                        }
                    }
                }
                RawRule {
                    set: None,
                    from: None,
                    value: None,
                    template: None,
                    rename,
                    lowercase,
                    drop,
                    required: false,
                } => match (rename, lowercase, drop) {
                    (Some(rename), None, None) => Rule::Rename {
                        from: check_target(index, &rename.from)?,
                        to: check_target(index, &rename.to)?,
                    },
                    (None, Some(field), None) => Rule::Lowercase(check_target(index, &field)?),
                    (None, None, Some(field)) => Rule::Drop(check_target(index, &field)?),
                    _ => {
                        return Err(bad(
                            "a rule is one of `set`, `rename`, `lowercase` or `drop`",
                        ));
                    }
                },
                _ => {
                    return Err(bad(
                        "a rule is one of `set`, `rename`, `lowercase` or `drop`",
                    ));
                }
            };
            rules.push(rule);
        }
        Ok(Self { rules })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Applies every rule to a canonical event, in order.
    pub fn apply(&self, event: &mut Value) -> Result<(), MappingError> {
        let id = event
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_owned();
        let original = event
            .get("data")
            .and_then(|d| d.get("original"))
            .cloned()
            .unwrap_or(Value::Null);
        for (index, rule) in self.rules.iter().enumerate() {
            let fail = |reason: String| MappingError::Apply {
                index,
                rule: rule.describe(),
                event: id.clone(),
                reason,
            };
            match rule {
                Rule::SetFrom {
                    target,
                    pointer,
                    required,
                } => match original.pointer(pointer) {
                    Some(found) => set(event, target, found.clone()).map_err(fail)?,
                    None if *required => {
                        return Err(fail(format!("`{pointer}` is not in the original payload")));
                    }
                    None => {}
                },
                Rule::SetValue { target, value } => {
                    set(event, target, value.clone()).map_err(fail)?;
                }
                Rule::SetTemplate { target, pieces } => {
                    let mut text = String::new();
                    for piece in pieces {
                        match piece {
                            Piece::Text(part) => text.push_str(part),
                            Piece::Pointer(pointer) => match original.pointer(pointer) {
                                Some(Value::String(part)) => text.push_str(part),
                                Some(other @ (Value::Number(_) | Value::Bool(_))) => {
                                    text.push_str(&other.to_string());
                                }
                                Some(_) => {
                                    return Err(fail(format!(
                                        "`{pointer}` is not a string, number or boolean"
                                    )));
                                }
                                None => {
                                    return Err(fail(format!(
                                        "`{pointer}` is not in the original payload"
                                    )));
                                }
                            },
                        }
                    }
                    set(event, target, Value::String(text)).map_err(fail)?;
                }
                Rule::Rename { from, to } => {
                    if let Some(value) = take(event, from) {
                        set(event, to, value).map_err(fail)?;
                    }
                }
                Rule::Lowercase(field) => {
                    if let Some(slot) = slot(event, field) {
                        match slot {
                            Value::String(text) => *text = text.to_lowercase(),
                            _ => return Err(fail(format!("`{field}` is not a string"))),
                        }
                    }
                }
                Rule::Drop(field) => {
                    take(event, field);
                }
            }
        }
        Ok(())
    }
}

fn data(event: &mut Value) -> Option<&mut Map<String, Value>> {
    event.get_mut("data").and_then(Value::as_object_mut)
}

fn set(event: &mut Value, target: &str, value: Value) -> Result<(), String> {
    if ENVELOPE_TARGETS.contains(&target) {
        let object = event
            .as_object_mut()
            .ok_or_else(|| "the event is not an object".to_owned())?;
        object.insert(target.to_owned(), value);
        return Ok(());
    }
    let data = data(event).ok_or_else(|| "the event has no `data` object".to_owned())?;
    data.insert(target.to_owned(), value);
    Ok(())
}

fn take(event: &mut Value, field: &str) -> Option<Value> {
    if ENVELOPE_TARGETS.contains(&field) {
        return event.as_object_mut()?.remove(field);
    }
    data(event)?.remove(field)
}

fn slot<'e>(event: &'e mut Value, field: &str) -> Option<&'e mut Value> {
    if ENVELOPE_TARGETS.contains(&field) {
        return event.get_mut(field);
    }
    data(event)?.get_mut(field)
}

/// Field-mapping rules and an event from anyone (a tenant's configuration, a plugin's
/// output): compiled or refused, and compiled rules applied or refused, never a panic;
/// what they produce is still a JSON object. What the fuzz target and the property test
/// run.
#[doc(hidden)]
pub fn check_untrusted_rules(rules: &[u8], event: &[u8]) {
    let Ok(config) = serde_json::from_slice::<Value>(rules) else {
        return;
    };
    let Ok(mappings) = FieldMappings::compile(Some(&config)) else {
        return;
    };
    let Ok(mut event) = serde_json::from_slice::<Value>(event) else {
        return;
    };
    let was_object = event.is_object();
    if mappings.apply(&mut event).is_ok() && was_object {
        assert!(event.is_object(), "{event}");
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn event() -> Value {
        json!({
            "id": "ev_1",
            "subject": "old",
            "data": {
                "env": "Production",
                "debug.payload": "x",
                "original": {"repository": {"name": "checkout", "owner": {"login": "acme"}}, "n": 7}
            }
        })
    }

    fn rules(value: Value) -> Result<FieldMappings, MappingError> {
        FieldMappings::compile(Some(&value))
    }

    #[test]
    fn every_kind_of_rule_applies_in_order() {
        let mappings = rules(json!([
            {"set": "service.name", "from": "/repository/name"},
            {"set": "subject", "template": "{/repository/owner/login}/{/repository/name}#{/n}"},
            {"set": "team", "value": "payments"},
            {"set": "missing", "from": "/nothing/here"},
            {"rename": {"from": "env", "to": "deployment.environment"}},
            {"lowercase": "deployment.environment"},
            {"drop": "debug.payload"}
        ]))
        .expect("compiles");
        let mut event = event();
        mappings.apply(&mut event).expect("applies");
        assert_eq!(event["data"]["service.name"], "checkout");
        assert_eq!(event["subject"], "acme/checkout#7");
        assert_eq!(event["data"]["team"], "payments");
        assert_eq!(event["data"]["deployment.environment"], "production");
        assert!(event["data"].get("env").is_none());
        assert!(event["data"].get("debug.payload").is_none());
        assert!(
            event["data"].get("missing").is_none(),
            "absent and not required: left alone"
        );
        assert_eq!(
            event["data"]["original"]["n"], 7,
            "the original is untouched"
        );
    }

    #[test]
    fn bad_rules_are_refused_naming_the_rule() {
        let cases = [
            (json!({"set": "x"}), "must be an array"),
            (
                json!([{"set": "a", "from": "/x"}, {"set": "b"}]),
                "mapping rule 1",
            ),
            (json!([{"set": "a", "from": "x"}]), "JSON Pointer"),
            (json!([{"set": "original", "value": 1}]), "evidence"),
            (json!([{"drop": "links"}]), "evidence"),
            (json!([{"set": "a b", "value": 1}]), "letters"),
            (json!([{"set": "a", "template": "{/x"}]), "without its"),
            (json!([{"set": "a", "value": 1, "drop": "b"}]), "one of"),
            (json!([{"frobnicate": "a"}]), "unknown field"),
            (json!([{"lowercase": "a", "required": true}]), "one of"),
        ];
        for (config, expected) in cases {
            let err = FieldMappings::compile(Some(&config)).expect_err(expected);
            assert!(err.to_string().contains(expected), "{config}: {err}");
        }
        assert!(FieldMappings::compile(None).expect("none").is_empty());
    }

    #[test]
    fn apply_errors_name_the_rule_and_the_event() {
        let mappings = rules(json!([
            {"set": "service.name", "from": "/repository/name"},
            {"set": "x", "from": "/absent", "required": true}
        ]))
        .expect("compiles");
        let err = mappings.apply(&mut event()).expect_err("required");
        assert_eq!(
            err.to_string(),
            "mapping rule 1 (set x from /absent) on event `ev_1`: `/absent` is not in the original payload"
        );
        let lower =
            rules(json!([{"set": "n", "from": "/n"}, {"lowercase": "n"}])).expect("compiles");
        assert!(
            lower
                .apply(&mut event())
                .expect_err("number")
                .to_string()
                .contains("not a string")
        );
        let template = rules(json!([{"set": "s", "template": "{/repository}"}])).expect("compiles");
        assert!(
            template.apply(&mut event()).is_err(),
            "an object in a template"
        );
    }
}
