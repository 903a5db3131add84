//! A delivery's JSON, parsed once into a tree that borrows its text from the body:
//! a string without escapes (nearly all of them) is a slice of the body, not a copy, and
//! an object keeps its keys in the order sent. Mapping reads values out of it without
//! allocating, and writes an element back as JSON (the `original` of an event per
//! commit) by copying those slices, with no second parse of the body.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// One JSON value of a delivery.
#[derive(Debug, Clone, PartialEq)]
pub enum Json<'a> {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    /// Borrowed when the body wrote it without escapes, so it needs none when written
    /// again (JSON text cannot hold a raw `"`, `\` or control character).
    String(Cow<'a, str>),
    Array(Vec<Json<'a>>),
    /// In the order sent; a repeated key is kept, and the last one is found.
    Object(Vec<(Cow<'a, str>, Json<'a>)>),
}

impl<'a> Json<'a> {
    /// Parses `text`, borrowing from it (serde_json's nesting limit applies).
    pub fn parse(text: &'a str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The member `key` of an object (the last one, as serde_json keeps it).
    pub fn get(&self, key: &str) -> Option<&Json<'a>> {
        match self {
            Json::Object(members) => members
                .iter()
                .rev()
                .find(|(name, _)| name == key)
                .map(|(_, value)| value),
            _ => None,
        }
    }

    /// A string, number or boolean as text; `None` for anything else.
    pub fn as_text(&self) -> Option<Cow<'_, str>> {
        match self {
            Json::String(text) => Some(Cow::Borrowed(text.as_ref())),
            Json::Number(number) => Some(Cow::Owned(number.to_string())),
            Json::Bool(flag) => Some(Cow::Borrowed(if *flag { "true" } else { "false" })),
            _ => None,
        }
    }

    /// How deeply this value nests (a scalar is 0).
    pub fn depth(&self) -> usize {
        match self {
            Json::Array(items) => 1 + items.iter().map(Json::depth).max().unwrap_or(0),
            Json::Object(members) => {
                1 + members
                    .iter()
                    .map(|(_, value)| value.depth())
                    .max()
                    .unwrap_or(0)
            }
            _ => 0,
        }
    }

    /// This value as compact JSON, appended to `out`.
    pub fn write_to(&self, out: &mut String) {
        match self {
            Json::Null => out.push_str("null"),
            Json::Bool(flag) => out.push_str(if *flag { "true" } else { "false" }),
            Json::Number(number) => {
                use fmt::Write as _;
                let _ = write!(out, "{number}");
            }
            Json::String(text) => write_str(text, out),
            Json::Array(items) => {
                out.push('[');
                for (index, item) in items.iter().enumerate() {
                    if index > 0 {
                        out.push(',');
                    }
                    item.write_to(out);
                }
                out.push(']');
            }
            Json::Object(members) => {
                out.push('{');
                for (index, (key, value)) in members.iter().enumerate() {
                    if index > 0 {
                        out.push(',');
                    }
                    write_str(key, out);
                    out.push(':');
                    value.write_to(out);
                }
                out.push('}');
            }
        }
    }

    /// A scalar as a `serde_json::Value` (a field that keeps its JSON type).
    pub fn to_scalar(&self) -> Option<serde_json::Value> {
        match self {
            Json::String(text) => Some(serde_json::Value::String(text.clone().into_owned())),
            Json::Number(number) => Some(serde_json::Value::Number(number.clone())),
            Json::Bool(flag) => Some(serde_json::Value::Bool(*flag)),
            _ => None,
        }
    }
}

/// A string as JSON: a borrowed one as it was sent (it has nothing to escape), an
/// unescaped one escaped again.
#[expect(
    clippy::ptr_arg,
    reason = "whether it is borrowed is what decides the escaping"
)]
fn write_str(text: &Cow<'_, str>, out: &mut String) {
    match text {
        Cow::Borrowed(text) => {
            out.push('"');
            out.push_str(text);
            out.push('"');
        }
        Cow::Owned(text) => match serde_json::to_string(text) {
            Ok(escaped) => out.push_str(&escaped),
            // Serializing a `str` cannot fail; an empty string keeps the JSON whole.
            Err(_) => out.push_str("\"\""),
        },
    }
}

impl<'de> Deserialize<'de> for Json<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Json::Null)
    }

    fn visit_bool<E>(self, flag: bool) -> Result<Self::Value, E> {
        Ok(Json::Bool(flag))
    }

    fn visit_i64<E>(self, number: i64) -> Result<Self::Value, E> {
        Ok(Json::Number(number.into()))
    }

    fn visit_u64<E>(self, number: u64) -> Result<Self::Value, E> {
        Ok(Json::Number(number.into()))
    }

    fn visit_f64<E: de::Error>(self, number: f64) -> Result<Self::Value, E> {
        serde_json::Number::from_f64(number)
            .map(Json::Number)
            .ok_or_else(|| E::custom("a number that is not finite"))
    }

    fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Self::Value, E> {
        Ok(Json::String(Cow::Borrowed(text)))
    }

    fn visit_str<E>(self, text: &str) -> Result<Self::Value, E> {
        Ok(Json::String(Cow::Owned(text.to_owned())))
    }

    fn visit_string<E>(self, text: String) -> Result<Self::Value, E> {
        Ok(Json::String(Cow::Owned(text)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = Vec::with_capacity(map.size_hint().unwrap_or(0).min(64));
        while let Some(Key(key)) = map.next_key()? {
            members.push((key, map.next_value()?));
        }
        Ok(Json::Object(members))
    }
}

/// An object key, borrowed when it can be (serde's own `Cow<str>` always copies).
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(text)))
            }
            fn visit_str<E>(self, text: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(text.to_owned())))
            }
            fn visit_string<E>(self, text: String) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(text)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_without_escapes_borrow_from_the_body_and_the_rest_are_unescaped() {
        let text = r#"{"plain": "abc", "esc\"aped": "a\nb\u00e9", "n": 1.5, "list": [true, null]}"#;
        let json = Json::parse(text).expect("JSON");
        assert!(matches!(
            json.get("plain"),
            Some(Json::String(Cow::Borrowed("abc")))
        ));
        assert_eq!(
            json.get("esc\"aped"),
            Some(&Json::String(Cow::Owned("a\nbé".to_owned())))
        );
        assert_eq!(
            json.get("n").and_then(Json::as_text).as_deref(),
            Some("1.5")
        );
        assert_eq!(json.depth(), 2);
    }

    #[test]
    fn written_back_it_is_the_same_json_as_serde_json_reads() {
        for text in [
            r#"{"a": [1, -2, 3.25, 1e300], "b": {"c": "quote \" backslash \\ tab \t"}, "d": null}"#,
            r#"["\u2028", "", {"": {}}, [], false, "\u0001"]"#,
            r#"{"same": 1, "same": 2}"#,
            r#""a string alone""#,
        ] {
            let json = Json::parse(text).expect("JSON");
            let mut written = String::new();
            json.write_to(&mut written);
            let expected: serde_json::Value = serde_json::from_str(text).expect("JSON");
            let again: serde_json::Value = serde_json::from_str(&written).expect("written JSON");
            assert_eq!(again, expected, "{text} -> {written}");
        }
        let json = Json::parse(r#"{"same": 1, "same": 2}"#).expect("JSON");
        assert_eq!(
            json.get("same"),
            Some(&Json::Number(2.into())),
            "the last, as serde_json"
        );
    }

    #[test]
    fn what_is_not_json_is_refused_where_it_breaks() {
        let err = Json::parse("{\"a\": [1,}").expect_err("not JSON");
        assert_eq!((err.line(), err.column()), (1, 10));
        assert!(Json::parse("\"raw \u{1} control\"").is_err());
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert!(Json::parse(&deep).is_err(), "serde_json's nesting limit");
    }
}
