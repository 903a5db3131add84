//! A readable diff between two configurations: one line per changed JSON path.

use serde_json::Value;

/// `+ /path: value`, `- /path: value`, `~ /path: old -> new`, sorted by path; empty
/// when equal.
pub fn diff(old: &Value, new: &Value) -> String {
    let mut lines = Vec::new();
    // A first version is every field added.
    let empty = Value::Object(serde_json::Map::new());
    let old = if old.is_null() && new.is_object() {
        &empty
    } else {
        old
    };
    walk("", old, new, &mut lines);
    lines.join("\n")
}

fn walk(path: &str, old: &Value, new: &Value, out: &mut Vec<String>) {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                let child = format!("{path}/{}", key.replace('~', "~0").replace('/', "~1"));
                match (a.get(key), b.get(key)) {
                    (Some(x), Some(y)) => walk(&child, x, y, out),
                    (Some(x), None) => out.push(format!("- {child}: {x}")),
                    (None, Some(y)) => out.push(format!("+ {child}: {y}")),
                    (None, None) => {}
                }
            }
        }
        _ if old == new => {}
        (Value::Null, _) if path.is_empty() => out.push(format!("+ /: {new}")),
        _ => out.push(format!(
            "~ {}: {old} -> {new}",
            if path.is_empty() { "/" } else { path }
        )),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn names_every_changed_path() {
        let old =
            json!({"repositories": ["a/b"], "poll_interval": "30s", "gone": 1, "nested": {"x": 1}});
        let new = json!({"repositories": ["a/b", "a/c"], "poll_interval": "60s", "nested": {"x": 1, "y/z": 2}});
        assert_eq!(
            diff(&old, &new),
            "- /gone: 1\n+ /nested/y~1z: 2\n~ /poll_interval: \"30s\" -> \"60s\"\n~ /repositories: [\"a/b\"] -> [\"a/b\",\"a/c\"]"
        );
        assert_eq!(diff(&new, &new), "");
        assert_eq!(
            diff(&Value::Null, &json!({"a": 1, "b": [2]})),
            "+ /a: 1\n+ /b: [2]"
        );
    }
}
