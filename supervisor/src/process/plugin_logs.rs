//! Re-emits a plugin's stderr through `tracing`, tagged with `plugin`, `tenant` and
//! `integration`. Plugin-kit plugins write JSON lines; anything else is passed on as
//! text. Lines are capped in length and in rate (see [`LogBudget`]).

use std::time::Instant;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};

use super::log_budget::{LineVerdict, LogBudget};
use crate::health::InstanceLabels;

/// Longer lines are cut (the rest is read and discarded as following lines).
const MAX_LINE_BYTES: u64 = 16 * 1024;
/// Lines per second per plugin instance.
const LINES_PER_SECOND: u32 = 500;

/// Reads `stream` to its end, re-emitting each line.
pub async fn relay(stream: impl AsyncRead + Unpin, labels: InstanceLabels, source: &'static str) {
    let mut reader = BufReader::with_capacity(64 * 1024, stream);
    let mut budget = LogBudget::new(LINES_PER_SECOND, Instant::now());
    let mut line = Vec::with_capacity(1024);
    loop {
        line.clear();
        match (&mut reader)
            .take(MAX_LINE_BYTES)
            .read_until(b'\n', &mut line)
            .await
        {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        match budget.on_line(Instant::now()) {
            LineVerdict::Drop => continue,
            LineVerdict::Emit { dropped_before } if dropped_before > 0 => {
                tracing::warn!(
                    plugin = %labels.plugin, tenant = %labels.tenant, integration = %labels.integration,
                    dropped = dropped_before, "plugin log lines dropped: more than {LINES_PER_SECOND} per second"
                );
            }
            LineVerdict::Emit { .. } => {}
        }
        emit(&line, &labels, source);
    }
}

fn emit(raw: &[u8], labels: &InstanceLabels, source: &'static str) {
    let text = String::from_utf8_lossy(raw);
    let text = text.trim_end();
    if text.is_empty() {
        return;
    }
    let parsed: Option<serde_json::Value> = serde_json::from_str(text)
        .ok()
        .filter(serde_json::Value::is_object);
    let (level, message, fields) = match &parsed {
        Some(value) => {
            let level = value
                .get("level")
                .and_then(|l| l.as_str())
                .unwrap_or("INFO")
                .to_ascii_uppercase();
            let mut fields = value.get("fields").cloned().unwrap_or_default();
            let message = fields
                .as_object_mut()
                .and_then(|f| f.remove("message"))
                .and_then(|m| m.as_str().map(str::to_owned))
                .unwrap_or_default();
            let fields = match fields.as_object() {
                Some(map) if !map.is_empty() => fields.to_string(),
                _ => String::new(),
            };
            (level, message, fields)
        }
        None => ("INFO".to_owned(), text.to_owned(), String::new()),
    };
    macro_rules! at {
        ($level:expr) => {
            tracing::event!(
                target: "plugin", $level,
                plugin = %labels.plugin, tenant = %labels.tenant, integration = %labels.integration,
                stream = source, fields = %fields, "{message}"
            )
        };
    }
    match level.as_str() {
        "ERROR" => at!(tracing::Level::ERROR),
        "WARN" | "WARNING" => at!(tracing::Level::WARN),
        "DEBUG" => at!(tracing::Level::DEBUG),
        "TRACE" => at!(tracing::Level::TRACE),
        _ => at!(tracing::Level::INFO),
    }
}
