//! The handshake line: the one line a plugin prints on stdout once its socket is bound.
//!
//! Format: `CORE|APP|unix|PATH|grpc`, e.g. `1|1|unix|/run/integrationd/p/github.sock|grpc`.
//! `CORE` is the handshake format version, `APP` the negotiated plugin protocol major.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::version::{CORE_PROTOCOL_VERSION, MAX_HANDSHAKE_LINE_BYTES};

/// A parsed, well-formed handshake line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeLine {
    /// Handshake format version; always [`CORE_PROTOCOL_VERSION`] once parsed.
    pub core: u32,
    /// Negotiated plugin protocol major.
    pub app: u32,
    /// Absolute path of the plugin's Unix socket.
    pub socket: PathBuf,
}

/// Why a handshake line was refused. Each message quotes the line (shortened).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    #[error("handshake line is empty")]
    Empty,
    #[error("handshake line is {len} bytes, longer than the {max}-byte limit")]
    TooLong { len: usize, max: usize },
    #[error("handshake line `{line}` has {found} fields, expected 5 (CORE|APP|unix|PATH|grpc)")]
    FieldCount { line: String, found: usize },
    #[error("handshake line `{line}`: core version `{found}` is not a number")]
    CoreNotNumber { line: String, found: String },
    #[error("handshake line `{line}` uses handshake format {found}, this host speaks {expected}")]
    UnsupportedCore {
        line: String,
        found: u32,
        expected: u32,
    },
    #[error("handshake line `{line}`: protocol version `{found}` is not a number")]
    AppNotNumber { line: String, found: String },
    #[error("handshake line `{line}` offers protocol {found}, this host speaks {speaks:?}")]
    UnsupportedApp {
        line: String,
        found: u32,
        speaks: Vec<u32>,
    },
    #[error("handshake line `{line}`: network `{found}` is not supported, only `unix`")]
    UnsupportedNetwork { line: String, found: String },
    #[error("handshake line `{line}`: socket path `{found}` is not absolute")]
    RelativePath { line: String, found: String },
    #[error(
        "handshake line `{line}`: socket path `{found}` is not the one the host assigned ({expected})"
    )]
    UnexpectedPath {
        line: String,
        found: String,
        expected: String,
    },
    #[error("handshake line `{line}`: transport `{found}` is not supported, only `grpc`")]
    UnsupportedTransport { line: String, found: String },
}

impl HandshakeLine {
    /// Builds the line a plugin prints.
    pub fn new(app: u32, socket: impl Into<PathBuf>) -> Self {
        Self {
            core: CORE_PROTOCOL_VERSION,
            app,
            socket: socket.into(),
        }
    }

    /// Parses one line (a trailing `\n` or `\r\n` is allowed). Anything but exactly
    /// `CORE|APP|unix|PATH|grpc` with a known core version is an error naming the field.
    pub fn parse(line: &str) -> Result<Self, HandshakeError> {
        if line.len() > MAX_HANDSHAKE_LINE_BYTES {
            return Err(HandshakeError::TooLong {
                len: line.len(),
                max: MAX_HANDSHAKE_LINE_BYTES,
            });
        }
        let trimmed = line.strip_suffix('\n').unwrap_or(line);
        let trimmed = trimmed.strip_suffix('\r').unwrap_or(trimmed);
        if trimmed.trim().is_empty() {
            return Err(HandshakeError::Empty);
        }
        let shown = shorten(trimmed);
        let fields: Vec<&str> = trimmed.split('|').collect();
        let [core, app, network, path, transport] = fields[..] else {
            return Err(HandshakeError::FieldCount {
                line: shown,
                found: fields.len(),
            });
        };
        let core: u32 = core.parse().map_err(|_| HandshakeError::CoreNotNumber {
            line: shown.clone(),
            found: shorten(core),
        })?;
        if core != CORE_PROTOCOL_VERSION {
            return Err(HandshakeError::UnsupportedCore {
                line: shown,
                found: core,
                expected: CORE_PROTOCOL_VERSION,
            });
        }
        let app: u32 = app.parse().map_err(|_| HandshakeError::AppNotNumber {
            line: shown.clone(),
            found: shorten(app),
        })?;
        if network != "unix" {
            return Err(HandshakeError::UnsupportedNetwork {
                line: shown,
                found: shorten(network),
            });
        }
        if !Path::new(path).is_absolute() {
            return Err(HandshakeError::RelativePath {
                line: shown,
                found: shorten(path),
            });
        }
        if transport != "grpc" {
            return Err(HandshakeError::UnsupportedTransport {
                line: shown,
                found: shorten(transport),
            });
        }
        Ok(Self {
            core,
            app,
            socket: PathBuf::from(path),
        })
    }

    /// Parses and checks the line against what the host offered: the protocol versions
    /// it speaks and the socket path it assigned.
    pub fn parse_expected(
        line: &str,
        speaks: &[u32],
        assigned_socket: &Path,
    ) -> Result<Self, HandshakeError> {
        let parsed = Self::parse(line)?;
        let shown = shorten(line.trim_end());
        if !speaks.contains(&parsed.app) {
            return Err(HandshakeError::UnsupportedApp {
                line: shown,
                found: parsed.app,
                speaks: speaks.to_vec(),
            });
        }
        if parsed.socket != assigned_socket {
            return Err(HandshakeError::UnexpectedPath {
                line: shown,
                found: shorten(&parsed.socket.display().to_string()),
                expected: assigned_socket.display().to_string(),
            });
        }
        Ok(parsed)
    }
}

impl fmt::Display for HandshakeLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}|{}|unix|{}|grpc",
            self.core,
            self.app,
            self.socket.display()
        )
    }
}

/// Quotes at most 120 characters of a line in an error, with control characters escaped,
/// so a hostile plugin cannot flood or corrupt the supervisor's log.
fn shorten(line: &str) -> String {
    // Escaped, so a hostile plugin cannot write control characters into the host's log;
    // bounded after escaping, since one character can escape to ten.
    const MAX: usize = 120;
    let mut out = String::new();
    for c in line.chars() {
        let escaped: String = c.escape_debug().collect();
        if out.len() + escaped.len() > MAX {
            out.push('…');
            break;
        }
        out.push_str(&escaped);
    }
    out
}

/// A handshake line from a plugin's stdout, which may be anything: parsed, or refused
/// with a message that stays short whatever the line; what parses prints back as
/// itself. What the fuzz target and the property test run.
#[doc(hidden)]
pub fn check_untrusted_line(line: &str) {
    match HandshakeLine::parse(line) {
        Ok(parsed) => {
            let again = HandshakeLine::parse(&parsed.to_string()).expect("a printed line parses");
            assert_eq!(again, parsed);
        }
        Err(err) => {
            let message = err.to_string();
            assert!(
                message.len() < 600,
                "{} bytes: {message:.200}",
                message.len()
            );
            assert!(!message.contains(|c: char| c.is_control()), "{message:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the fuzz corpus's property test: a field quoted whole and control
    /// characters escaped after the cut made a refusal of a hostile line 1 KiB long.
    #[test]
    fn a_hostile_line_is_quoted_short_and_escaped() {
        let hostile = format!("1|1|unix|/p|{}\u{1b}[31m", "\u{10}".repeat(300));
        let message = HandshakeLine::parse(&hostile)
            .expect_err("refused")
            .to_string();
        assert!(message.len() < 400, "{}", message.len());
        assert!(
            !message.contains('\u{1b}') && !message.contains('\u{10}'),
            "{message:?}"
        );
        assert!(message.contains("transport `"), "{message}");
    }

    #[test]
    fn round_trips_a_valid_line() {
        let line = HandshakeLine::new(1, "/run/p/github.sock");
        let text = line.to_string();
        assert_eq!(text, "1|1|unix|/run/p/github.sock|grpc");
        assert_eq!(HandshakeLine::parse(&format!("{text}\n")), Ok(line.clone()));
        assert_eq!(HandshakeLine::parse(&format!("{text}\r\n")), Ok(line));
    }

    #[test]
    fn rejects_each_malformed_field_precisely() {
        let cases: &[(&str, &str)] = &[
            ("", "empty"),
            ("hello world", "has 1 fields"),
            ("1|1|unix|/s|grpc|extra", "has 6 fields"),
            ("x|1|unix|/s|grpc", "core version `x`"),
            ("2|1|unix|/s|grpc", "handshake format 2"),
            ("1|one|unix|/s|grpc", "protocol version `one`"),
            ("1|1|tcp|/s|grpc", "network `tcp`"),
            ("1|1|unix|rel/s|grpc", "not absolute"),
            ("1|1|unix|/s|netrpc", "transport `netrpc`"),
            ("1|-1|unix|/s|grpc", "protocol version `-1`"),
        ];
        for (line, expected) in cases {
            let err = HandshakeLine::parse(line).expect_err(line).to_string();
            assert!(err.contains(expected), "{line:?}: {err}");
        }
    }

    #[test]
    fn rejects_oversized_and_escapes_hostile_lines() {
        let long = "1|1|unix|/".to_owned() + &"a".repeat(5000) + "|grpc";
        assert!(matches!(
            HandshakeLine::parse(&long),
            Err(HandshakeError::TooLong { .. })
        ));
        let hostile = "\u{1b}[31mred\u{7}|x";
        let err = HandshakeLine::parse(hostile)
            .expect_err("hostile")
            .to_string();
        assert!(!err.contains('\u{1b}'), "{err}");
        assert!(err.contains("\\u{1b}"), "{err}");
    }

    #[test]
    fn checks_version_and_path_against_the_offer() {
        let path = Path::new("/run/p/a.sock");
        let err = HandshakeLine::parse_expected("1|9|unix|/run/p/a.sock|grpc", &[1], path)
            .expect_err("v9")
            .to_string();
        assert_eq!(
            err,
            "handshake line `1|9|unix|/run/p/a.sock|grpc` offers protocol 9, this host speaks [1]"
        );
        let err = HandshakeLine::parse_expected("1|1|unix|/tmp/evil.sock|grpc", &[1], path)
            .expect_err("path");
        assert!(matches!(err, HandshakeError::UnexpectedPath { .. }));
        assert!(HandshakeLine::parse_expected("1|1|unix|/run/p/a.sock|grpc", &[1], path).is_ok());
    }
}
