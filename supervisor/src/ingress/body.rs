//! Reading a request body under the ingress's rules: a content type it accepts, a size
//! limit checked before and while reading, and JSON bodies that parse. Each refusal is
//! the documented status with a JSON error naming what was wrong.

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};

use super::Refusal;

/// What kind of body arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    Json,
    /// `application/x-ndjson`: one JSON value per line.
    NdJson,
    /// `application/x-www-form-urlencoded` (GitHub's form-encoded webhooks).
    Form,
    /// `text/plain` (Amazon SNS posts JSON as text/plain).
    Text,
}

/// The body kind of a content type, or a 415 naming it.
pub fn kind(headers: &HeaderMap, allowed: &[BodyKind]) -> Result<BodyKind, Refusal> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Err(Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the request has no Content-Type",
        ));
    };
    let text = value.to_str().unwrap_or_default();
    let essence = text
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let kind = match essence.as_str() {
        "application/json" => Some(BodyKind::Json),
        "application/x-ndjson" => Some(BodyKind::NdJson),
        "application/x-www-form-urlencoded" => Some(BodyKind::Form),
        "text/plain" => Some(BodyKind::Text),
        other if other.starts_with("application/") && other.ends_with("+json") => {
            Some(BodyKind::Json)
        }
        _ => None,
    };
    match kind {
        Some(kind) if allowed.contains(&kind) => Ok(kind),
        _ => Err(Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "Content-Type `{}` is not accepted here",
                super::printable(text, 100)
            ),
        )),
    }
}

/// Reads at most `limit` bytes (413 beyond; 400 when the body breaks off).
pub async fn read(headers: &HeaderMap, body: Body, limit: usize) -> Result<Vec<u8>, Refusal> {
    let too_large = || {
        Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body is larger than the {limit}-byte limit"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large());
    }
    match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => Ok(bytes.to_vec()),
        Err(err) => {
            let over = std::error::Error::source(&err)
                .is_some_and(|source| source.is::<http_body_util::LengthLimitError>());
            if over {
                Err(too_large())
            } else {
                Err(Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "incomplete_body",
                    format!("the body could not be read completely: {err}"),
                ))
            }
        }
    }
}

/// A 400 unless `bytes` is JSON (every line, for NDJSON).
pub fn check_json(kind: BodyKind, bytes: &[u8]) -> Result<(), Refusal> {
    let bad = |line: Option<usize>, err: serde_json::Error| {
        let place = match line {
            Some(line) => format!("line {line}"),
            None => format!("line {} column {}", err.line(), err.column()),
        };
        Refusal::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!("the body is not JSON ({place}): {}", class(&err)),
        )
    };
    match kind {
        BodyKind::Json => serde_json::from_slice::<serde::de::IgnoredAny>(bytes)
            .map(|_| ())
            .map_err(|err| bad(None, err)),
        BodyKind::NdJson => {
            for (index, line) in bytes.split(|b| *b == b'\n').enumerate() {
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                serde_json::from_slice::<serde::de::IgnoredAny>(line)
                    .map_err(|err| bad(Some(index + 1), err))?;
            }
            Ok(())
        }
        BodyKind::Form | BodyKind::Text => Ok(()),
    }
}

/// What kind of JSON error it was, for messages that do not echo the input.
fn class(err: &serde_json::Error) -> &'static str {
    match err.classify() {
        serde_json::error::Category::Io => "unreadable",
        serde_json::error::Category::Syntax => "a syntax error",
        serde_json::error::Category::Data => "unexpected data",
        serde_json::error::Category::Eof => "it ends too early",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(content_type: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, content_type.parse().expect("header"));
        headers
    }

    #[test]
    fn content_types_are_recognised_with_parameters_and_refused_otherwise() {
        let all = [BodyKind::Json, BodyKind::Form, BodyKind::Text];
        assert_eq!(
            kind(&headers("application/json; charset=utf-8"), &all).expect("json"),
            BodyKind::Json
        );
        assert_eq!(
            kind(&headers("application/cloudevents+json"), &all).expect("+json"),
            BodyKind::Json
        );
        assert_eq!(
            kind(&headers("text/plain; charset=UTF-8"), &all).expect("sns"),
            BodyKind::Text
        );
        for bad in [
            "application/xml",
            "multipart/form-data; boundary=x",
            "application/x-ndjson",
        ] {
            let refused = kind(&headers(bad), &all).expect_err(bad);
            assert_eq!(refused.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{bad}");
        }
        assert_eq!(
            kind(&HeaderMap::new(), &all).expect_err("none").status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
    }

    #[test]
    fn json_is_checked_whole_and_per_line() {
        assert!(check_json(BodyKind::Json, br#"{"a":1}"#).is_ok());
        for bad in [&b"{\"a\":"[..], b"not json", b"", b"{\"a\":1}{"] {
            assert_eq!(
                check_json(BodyKind::Json, bad).expect_err("bad").status,
                StatusCode::BAD_REQUEST
            );
        }
        assert!(check_json(BodyKind::NdJson, b"{\"a\":1}\n\n{\"b\":2}\n").is_ok());
        assert!(check_json(BodyKind::NdJson, b"{\"a\":1}\n{oops\n").is_err());
        assert!(check_json(BodyKind::Form, b"payload=%7B").is_ok());
    }

    #[tokio::test]
    async fn bodies_over_the_limit_are_refused_declared_or_not() {
        let declared = {
            let mut headers = headers("application/json");
            headers.insert(header::CONTENT_LENGTH, "2048".parse().expect("len"));
            headers
        };
        let refused = read(&declared, Body::from(vec![b'x'; 10]), 1024)
            .await
            .expect_err("declared too large");
        assert_eq!(refused.status, StatusCode::PAYLOAD_TOO_LARGE);
        let refused = read(
            &headers("application/json"),
            Body::from(vec![b'x'; 2048]),
            1024,
        )
        .await
        .expect_err("streamed too large");
        assert_eq!(refused.status, StatusCode::PAYLOAD_TOO_LARGE);
        let read_back = read(
            &headers("application/json"),
            Body::from(vec![b'x'; 1024]),
            1024,
        )
        .await
        .expect("at the limit");
        assert_eq!(read_back.len(), 1024);
    }
}
