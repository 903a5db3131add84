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

/// The rules a body is read under.
#[derive(Debug)]
pub struct Limits<'a> {
    pub max_bytes: usize,
    /// The whole body must arrive within this (408 past it).
    pub timeout: std::time::Duration,
    /// KiB of bodies in flight, shared by every request (503 when spent).
    pub budget: &'a tokio::sync::Semaphore,
}

/// Reads at most `limits.max_bytes` bytes (413 beyond; 400 when the body breaks off;
/// 408 when it does not arrive in time; 503 when the bodies in flight already take the
/// memory budget). The memory is reserved as the bytes arrive and given back once read.
pub async fn read(
    headers: &HeaderMap,
    body: Body,
    limits: &Limits<'_>,
) -> Result<Vec<u8>, Refusal> {
    let limit = limits.max_bytes;
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
    let reading = async {
        use http_body_util::BodyExt;
        let mut body = body;
        let mut bytes = Vec::new();
        let mut reserved = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|err| {
                Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "incomplete_body",
                    format!("the body could not be read completely: {err}"),
                )
            })?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if bytes.len() + data.len() > limit {
                return Err(too_large());
            }
            let kib = u32::try_from(data.len().div_ceil(1024)).unwrap_or(u32::MAX);
            match limits.budget.try_acquire_many(kib) {
                Ok(permit) => reserved.push(permit),
                Err(_) => {
                    return Err(Refusal {
                        retry_after: Some(1),
                        ..Refusal::new(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "busy",
                            "the server is reading too many request bodies at once; retry later",
                        )
                    });
                }
            }
            bytes.extend_from_slice(&data);
        }
        Ok(bytes)
    };
    match tokio::time::timeout(limits.timeout, reading).await {
        Ok(read) => read,
        Err(_) => Err(Refusal::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            format!(
                "the body did not arrive within {} s",
                limits.timeout.as_secs_f64()
            ),
        )),
    }
}

/// The 400 for a body (or its NDJSON `line`) that did not parse: where, and what kind
/// of error, without echoing the input.
pub fn malformed(line: Option<usize>, err: &serde_json::Error) -> Refusal {
    let place = match line {
        Some(line) => format!("line {line}"),
        None => format!("line {} column {}", err.line(), err.column()),
    };
    Refusal::new(
        StatusCode::BAD_REQUEST,
        "malformed_json",
        format!("the body is not usable JSON ({place}): {}", class(err)),
    )
}

/// A 400 unless `bytes` is JSON (every line, for NDJSON).
pub fn check_json(kind: BodyKind, bytes: &[u8]) -> Result<(), Refusal> {
    let bad = |line: Option<usize>, err: serde_json::Error| malformed(line, &err);
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
    // The two limits a well-formed body can still break, named as what they are.
    let text = err.to_string();
    if text.starts_with("recursion limit exceeded") {
        return "it is nested deeper than 128 levels";
    }
    if text.starts_with("number out of range") {
        return "a number is out of range";
    }
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

    fn limits(budget: &tokio::sync::Semaphore) -> Limits<'_> {
        Limits {
            max_bytes: 1024,
            timeout: std::time::Duration::from_secs(5),
            budget,
        }
    }

    #[tokio::test]
    async fn bodies_over_the_limit_are_refused_declared_or_not() {
        let budget = tokio::sync::Semaphore::new(64);
        let declared = {
            let mut headers = headers("application/json");
            headers.insert(header::CONTENT_LENGTH, "2048".parse().expect("len"));
            headers
        };
        let refused = read(&declared, Body::from(vec![b'x'; 10]), &limits(&budget))
            .await
            .expect_err("declared too large");
        assert_eq!(refused.status, StatusCode::PAYLOAD_TOO_LARGE);
        let refused = read(
            &headers("application/json"),
            Body::from(vec![b'x'; 2048]),
            &limits(&budget),
        )
        .await
        .expect_err("streamed too large");
        assert_eq!(refused.status, StatusCode::PAYLOAD_TOO_LARGE);
        let read_back = read(
            &headers("application/json"),
            Body::from(vec![b'x'; 1024]),
            &limits(&budget),
        )
        .await
        .expect("at the limit");
        assert_eq!(read_back.len(), 1024);
        assert_eq!(budget.available_permits(), 64, "the memory is given back");
    }

    #[tokio::test]
    async fn a_stalled_body_times_out_and_bodies_beyond_the_memory_budget_wait_their_turn() {
        let budget = tokio::sync::Semaphore::new(64);
        let (sender, receiver) =
            tokio::sync::mpsc::channel::<Result<axum::body::Bytes, std::io::Error>>(1);
        sender
            .send(Ok(axum::body::Bytes::from(vec![b'x'; 100])))
            .await
            .expect("first bytes");
        let stalled = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(receiver));
        let mut tight = limits(&budget);
        tight.timeout = std::time::Duration::from_millis(200);
        let refused = read(&headers("application/json"), stalled, &tight)
            .await
            .expect_err("stalled");
        assert_eq!(
            (refused.status, refused.code),
            (StatusCode::REQUEST_TIMEOUT, "body_timeout")
        );
        drop(sender);

        // The budget is spent by bodies in flight: the next one is told to retry.
        let held = budget.try_acquire_many(64).expect("all of it");
        let refused = read(
            &headers("application/json"),
            Body::from(vec![b'x'; 10]),
            &limits(&budget),
        )
        .await
        .expect_err("over the budget");
        assert_eq!(
            (refused.status, refused.code),
            (StatusCode::SERVICE_UNAVAILABLE, "busy")
        );
        assert_eq!(refused.retry_after, Some(1));
        drop(held);
    }
}
