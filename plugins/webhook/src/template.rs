//! Templates over a delivery: text with `{/json/pointer}` into the whole payload and,
//! in a route that maps each element of an array, `{./pointer}` into the element.
//! Compiled once at `Configure`, so a malformed template is a configuration error naming
//! it, never a refused delivery. A template that is exactly one reference keeps the
//! value's JSON type (a number stays a number).

use std::borrow::Cow;

use plugin_kit::FieldValue;

use crate::payload::Json;

/// One compiled template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    /// A JSON Pointer into the whole delivery.
    Root(Pointer),
    /// A JSON Pointer into the current element of `each`.
    Element(Pointer),
}

/// A JSON Pointer split into its unescaped tokens once, so that rendering walks the
/// tree without splitting and unescaping the text again for every delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pointer {
    text: String,
    tokens: Vec<String>,
}

impl Pointer {
    /// `text` must start with `/` (or be empty: the whole value).
    pub fn new(text: &str) -> Self {
        let tokens = text
            .split('/')
            .skip(1)
            .map(|token| token.replace("~1", "/").replace("~0", "~"))
            .collect();
        Self {
            text: text.to_owned(),
            tokens,
        }
    }

    /// The pointer as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The value at this pointer in `value`, as `serde_json::Value::pointer` would find
    /// it.
    pub fn find<'t>(&self, value: &'t Json<'t>) -> Option<&'t Json<'t>> {
        self.tokens
            .iter()
            .try_fold(value, |current, token| match current {
                Json::Object(_) => current.get(token),
                Json::Array(items) => {
                    if token.starts_with('+') || (token.len() > 1 && token.starts_with('0')) {
                        return None;
                    }
                    token
                        .parse::<usize>()
                        .ok()
                        .and_then(|index| items.get(index))
                }
                _ => None,
            })
    }
}

/// What a template refers to, to render it.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'t> {
    pub root: &'t Json<'t>,
    pub element: Option<&'t Json<'t>>,
}

/// Why a template could not be rendered: a reference to nothing, or to something that
/// is not text. Names the pointer, never the payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("`{0}` is not in the delivery")]
    Missing(String),
    #[error("`{0}` is an object or an array, not text")]
    NotText(String),
}

impl Template {
    /// Compiles `text`; `in_each` says whether `{./…}` references are allowed.
    pub fn compile(text: &str, in_each: bool) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_owned()));
            }
            let after = &rest[open + 1..];
            let close = after
                .find('}')
                .ok_or_else(|| format!("`{text}`: a `{{` is not closed"))?;
            let reference = &after[..close];
            let (pointer, in_element) = match reference.strip_prefix('.') {
                Some(pointer) => (pointer, true),
                None => (reference, false),
            };
            if in_element && !in_each {
                return Err(format!(
                    "`{text}`: `{{{reference}}}` refers to an element, but the route has no `each`"
                ));
            }
            if !pointer.starts_with('/') {
                return Err(format!(
                    "`{text}`: `{{{reference}}}` is not a JSON Pointer (`{{/a/b}}`, or `{{./a}}` in an element)"
                ));
            }
            let pointer = Pointer::new(pointer);
            parts.push(if in_element {
                Part::Element(pointer)
            } else {
                Part::Root(pointer)
            });
            rest = &after[close + 1..];
        }
        if rest.contains('}') {
            return Err(format!("`{text}`: a `}}` has no `{{`"));
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Self { parts })
    }

    /// Renders the template as text, borrowed from the delivery when it is one string
    /// of it.
    pub fn render<'t>(&'t self, scope: Scope<'t>) -> Result<Cow<'t, str>, RenderError> {
        match self.parts.as_slice() {
            [Part::Text(text)] => return Ok(Cow::Borrowed(text)),
            [reference] => return text_of(lookup(reference, scope)?, reference),
            _ => {}
        }
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                reference => out.push_str(&text_of(lookup(reference, scope)?, reference)?),
            }
        }
        Ok(Cow::Owned(out))
    }

    /// Renders the template as a field value: one reference alone keeps its JSON type.
    pub fn render_value<'t>(&'t self, scope: Scope<'t>) -> Result<FieldValue<'t>, RenderError> {
        if let [reference @ (Part::Root(_) | Part::Element(_))] = self.parts.as_slice() {
            return match lookup(reference, scope)? {
                Json::String(text) => Ok(FieldValue::Text(Cow::Borrowed(text.as_ref()))),
                value @ (Json::Number(_) | Json::Bool(_)) => value
                    .to_scalar()
                    .map(FieldValue::Json)
                    .ok_or_else(|| RenderError::NotText(pointer_text(reference))),
                _ => Err(RenderError::NotText(pointer_text(reference))),
            };
        }
        self.render(scope).map(FieldValue::Text)
    }
}

fn pointer_text(part: &Part) -> String {
    match part {
        Part::Root(p) => p.text.clone(),
        Part::Element(p) => format!(".{}", p.text),
        Part::Text(t) => t.clone(),
    }
}

fn lookup<'t>(part: &Part, scope: Scope<'t>) -> Result<&'t Json<'t>, RenderError> {
    let found = match part {
        Part::Root(pointer) => pointer.find(scope.root),
        Part::Element(pointer) => scope.element.and_then(|e| pointer.find(e)),
        Part::Text(_) => None,
    };
    match found {
        None | Some(Json::Null) => Err(RenderError::Missing(pointer_text(part))),
        Some(value) => Ok(value),
    }
}

fn text_of<'t>(value: &'t Json<'t>, part: &Part) -> Result<Cow<'t, str>, RenderError> {
    value
        .as_text()
        .ok_or_else(|| RenderError::NotText(pointer_text(part)))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn references_render_from_the_delivery_and_the_element() {
        let root = json!({"project": {"web_url": "https://gitlab.example.com/acme/api", "id": 15}})
            .to_string();
        let root = Json::parse(&root).expect("JSON");
        let element = Json::parse(r#"{"id": "b6568db"}"#).expect("JSON");
        let scope = Scope {
            root: &root,
            element: Some(&element),
        };
        let link = Template::compile("{/project/web_url}/-/commit/{./id}", true).expect("compiles");
        assert_eq!(
            link.render(scope).as_deref(),
            Ok("https://gitlab.example.com/acme/api/-/commit/b6568db")
        );
        let number = Template::compile("{/project/id}", false).expect("compiles");
        assert_eq!(number.render_value(scope), Ok(FieldValue::Json(json!(15))));
        let text = Template::compile("{./id}", true).expect("compiles");
        assert!(
            matches!(
                text.render_value(scope),
                Ok(FieldValue::Text(Cow::Borrowed("b6568db")))
            ),
            "a string of the delivery is not copied"
        );
        assert_eq!(
            Template::compile("plain", false)
                .expect("text")
                .render(scope)
                .as_deref(),
            Ok("plain")
        );
    }

    #[test]
    fn bad_templates_are_named_at_compile_time_and_missing_values_at_render_time() {
        for (text, in_each, expected) in [
            ("{/a", false, "is not closed"),
            ("a}", false, "has no `{`"),
            ("{a/b}", false, "is not a JSON Pointer"),
            ("{./id}", false, "the route has no `each`"),
        ] {
            let err = Template::compile(text, in_each).expect_err(text);
            assert!(err.contains(expected), "{err}");
        }
        let root = Json::parse(r#"{"a": {"b": [1]}, "n": null}"#).expect("JSON");
        let scope = Scope {
            root: &root,
            element: None,
        };
        let render = |text: &str| {
            Template::compile(text, false)
                .expect("compiles")
                .render(scope)
                .map(Cow::into_owned)
        };
        assert_eq!(
            render("{/missing}"),
            Err(RenderError::Missing("/missing".into()))
        );
        assert_eq!(render("{/n}"), Err(RenderError::Missing("/n".into())));
        assert_eq!(render("{/a}"), Err(RenderError::NotText("/a".into())));
    }

    #[test]
    fn compiled_pointers_find_what_serde_json_finds() {
        let text = json!({"a/b": {"m~n": [10, 20]}, "": 1, "list": [{"x": true}]}).to_string();
        let value: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        let tree = Json::parse(&text).expect("JSON");
        for pointer in [
            "/a~1b/m~0n/1",
            "/",
            "/list/0/x",
            "/list/00",
            "/list/+0",
            "/missing",
            "/list/9",
        ] {
            let found = Pointer::new(pointer).find(&tree).map(|json| {
                let mut written = String::new();
                json.write_to(&mut written);
                serde_json::from_str::<serde_json::Value>(&written).expect("JSON")
            });
            assert_eq!(found.as_ref(), value.pointer(pointer), "{pointer}");
        }
    }
}
