//! Collect cursors as JSON text. The supervisor stores a plugin's cursor as an opaque
//! string and hands it back with the next `Collect`; a plugin keeps its own structure
//! in it.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Reads a cursor. Empty text is a first poll; unreadable text (a cursor from an older
/// plugin version, say) starts over from the default, logged: nothing is lost, since the
/// pipeline drops the events it already has.
pub fn decode<T: DeserializeOwned + Default>(text: &str) -> T {
    if text.is_empty() {
        return T::default();
    }
    serde_json::from_str(text).unwrap_or_else(|err| {
        tracing::warn!(error = %err, "the collect cursor is unreadable; starting from the beginning");
        T::default()
    })
}

/// Writes a cursor.
pub fn encode<T: Serialize>(cursor: &T) -> String {
    // Serializing plain maps and numbers cannot fail; an empty cursor would only
    // make the next poll start over.
    serde_json::to_string(cursor).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    #[test]
    fn cursors_round_trip_and_bad_ones_start_over() {
        let cursor: BTreeMap<String, u64> = [("a/b".to_owned(), 7)].into();
        let text = super::encode(&cursor);
        assert_eq!(super::decode::<BTreeMap<String, u64>>(&text), cursor);
        assert!(super::decode::<BTreeMap<String, u64>>("").is_empty());
        assert!(super::decode::<BTreeMap<String, u64>>("{not json").is_empty());
    }
}
