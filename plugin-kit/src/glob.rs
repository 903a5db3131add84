//! Name patterns in integration configurations (`acme/web-*`, `prod-*-latency`): `*`
//! matches any run of characters, everything else matches itself. Callers decide about
//! case (lowercase both sides to ignore it).

/// Whether `text` matches `pattern`.
pub fn matches(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn stars_match_any_run_and_the_rest_literally() {
        for (pattern, text, expected) in [
            ("*", "", true),
            ("*", "anything", true),
            ("web-*", "web-shop", true),
            ("web-*", "web-", true),
            ("web-*", "api", false),
            ("*-latency", "p99-latency", true),
            ("prod-*-cpu", "prod-a-b-cpu", true),
            ("prod-*-cpu", "prod-cpu", false),
            ("a*b*c", "abc", true),
            ("a*b*c", "acb", false),
            ("exact", "exact", true),
            ("exact", "exactly", false),
            ("a?c", "abc", false),
        ] {
            assert_eq!(matches(pattern, text), expected, "{pattern} ~ {text}");
        }
    }
}
