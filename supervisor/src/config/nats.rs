//! `[[sinks.nats]]` and `[[sources.nats]]`: NATS JetStream out and in. Both name their
//! servers and credentials the same way (the keys of [`crate::nats::Connection`]);
//! secrets come from files, so this file can be shared and logged.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::duration;
use crate::nats::{Connection, SubjectTemplate};

/// Where a JetStream stream keeps its messages, when the daemon creates it.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StreamStorage {
    #[default]
    File,
    Memory,
}

/// A JetStream sink: every committed event published to a subject of a stream.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NatsSinkConfig {
    /// Names the sink's offset, metrics and logs; unique among sinks.
    pub name: String,
    /// `nats://host:port` or `tls://host:port`, one or more servers of one cluster.
    pub servers: Vec<String>,
    /// A `.creds` file (user JWT and NKey seed).
    #[serde(default)]
    pub creds_file: Option<PathBuf>,
    /// A file holding an NKey user seed.
    #[serde(default)]
    pub nkey_file: Option<PathBuf>,
    /// A file holding the server's token.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    #[serde(default)]
    pub user: Option<String>,
    /// A file holding `user`'s password.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// The CA (PEM) of the servers' certificates; TLS is then required.
    #[serde(default)]
    pub tls_ca: Option<PathBuf>,
    /// Each event's subject; placeholders `{tenant}`, `{integration}`, `{category}`,
    /// `{severity}`.
    #[serde(default = "default_sink_subject")]
    pub subject: String,
    /// The stream the subjects belong to: checked at start (it must exist unless
    /// `create_stream`).
    #[serde(default = "default_sink_stream")]
    pub stream: String,
    /// Create the stream when it does not exist, with the settings below.
    #[serde(default)]
    pub create_stream: bool,
    /// The created stream's subjects; by default the subject template with each
    /// placeholder a `*`.
    #[serde(default)]
    pub stream_subjects: Vec<String>,
    /// The created stream's replicas (1, or 3 or 5 in a cluster).
    #[serde(default = "default_replicas")]
    pub replicas: usize,
    #[serde(default)]
    pub storage: StreamStorage,
    /// The created stream's duplicate window: a message id seen within it is dropped.
    /// It must be longer than the longest time an event can wait between its first
    /// publish and a repeat (`retry_max` plus a daemon restart); see the README.
    #[serde(default = "default_duplicate_window", deserialize_with = "duration")]
    pub duplicate_window: Duration,
    /// The created stream's retention by age (none by default).
    #[serde(default, deserialize_with = "optional_duration")]
    pub max_age: Option<Duration>,
    /// Publishes awaiting their acknowledgement at most.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// How long an acknowledgement may take before the unacknowledged tail is
    /// published again.
    #[serde(default = "default_ack_timeout", deserialize_with = "duration")]
    pub ack_timeout: Duration,
    /// First and longest wait between retries (exponential, with jitter).
    #[serde(default = "default_retry_min", deserialize_with = "duration")]
    pub retry_min: Duration,
    #[serde(default = "default_retry_max", deserialize_with = "duration")]
    pub retry_max: Duration,
}

/// A JetStream source: platform events pulled from a durable consumer.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NatsSourceConfig {
    /// Names the source in logs and metrics; unique among sources.
    pub name: String,
    pub servers: Vec<String>,
    #[serde(default)]
    pub creds_file: Option<PathBuf>,
    #[serde(default)]
    pub nkey_file: Option<PathBuf>,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub tls_ca: Option<PathBuf>,
    /// The subjects consumed; `{tenant}` (once, a whole token) says whose events a
    /// message holds.
    #[serde(default = "default_source_subject")]
    pub subject: String,
    /// The stream the subjects belong to (it must exist; the platform owns it).
    #[serde(default = "default_source_stream")]
    pub stream: String,
    /// The durable consumer's name: the stream remembers what it acknowledged.
    #[serde(default = "default_durable")]
    pub durable: String,
    /// Messages fetched per pull at most.
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// How long the server waits for an acknowledgement before redelivering.
    #[serde(default = "default_ack_wait", deserialize_with = "duration")]
    pub ack_wait: Duration,
}

macro_rules! connection_of {
    ($config:expr) => {
        Connection {
            name: &$config.name,
            servers: &$config.servers,
            creds_file: $config.creds_file.as_deref(),
            nkey_file: $config.nkey_file.as_deref(),
            token_file: $config.token_file.as_deref(),
            user: $config.user.as_deref(),
            password_file: $config.password_file.as_deref(),
            tls_ca: $config.tls_ca.as_deref(),
        }
    };
}

impl NatsSinkConfig {
    pub fn connection(&self) -> Connection<'_> {
        connection_of!(self)
    }

    /// The subjects the stream is created with.
    pub fn stream_subjects(&self) -> Vec<String> {
        if !self.stream_subjects.is_empty() {
            return self.stream_subjects.clone();
        }
        SubjectTemplate::parse(&self.subject)
            .map(|template| vec![template.filter()])
            .unwrap_or_default()
    }

    /// What is wrong with the sink's settings, key first.
    pub(super) fn check(&self) -> Result<(), String> {
        crate::nats::check_servers(&self.servers)?;
        SubjectTemplate::parse(&self.subject)
            .map_err(|err| format!("subject = {:?} {err}", self.subject))?;
        check_stream_name(&self.stream)?;
        if !matches!(self.replicas, 1..=5) {
            return Err(format!("replicas = {}: from 1 to 5", self.replicas));
        }
        if self.max_in_flight == 0
            || self.ack_timeout.is_zero()
            || self.retry_min.is_zero()
            || self.retry_max < self.retry_min
            || self.duplicate_window.is_zero()
        {
            return Err("max_in_flight, ack_timeout and duplicate_window above zero, retry_min above zero and at most retry_max".into());
        }
        Ok(())
    }
}

impl NatsSourceConfig {
    pub fn connection(&self) -> Connection<'_> {
        connection_of!(self)
    }

    pub(super) fn check(&self) -> Result<(), String> {
        crate::nats::check_servers(&self.servers)?;
        SubjectTemplate::parse_tenant_subject(&self.subject)
            .map_err(|err| format!("subject = {:?} {err}", self.subject))?;
        check_stream_name(&self.stream)?;
        if !crate::names::is_name(&self.durable) {
            return Err(format!(
                "durable = {:?}: use 1-64 letters, digits, `-` or `_`",
                self.durable
            ));
        }
        if self.batch == 0 || self.batch > 10_000 || self.ack_wait < Duration::from_secs(1) {
            return Err("batch from 1 to 10000, ack_wait at least 1s".into());
        }
        Ok(())
    }
}

/// A stream name: what JetStream accepts (no `.`, `*`, `>`, space or path separator).
fn check_stream_name(name: &str) -> Result<(), String> {
    let bad = name.is_empty()
        || name.len() > 255
        || name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || ".*>/\\".contains(c));
    if bad {
        return Err(format!(
            "stream = {name:?}: a JetStream stream name (no `.`, `*`, `>`, `/`, `\\` or spaces)"
        ));
    }
    Ok(())
}

fn optional_duration<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    duration(deserializer).map(Some)
}

fn default_sink_subject() -> String {
    "betalogs.events.{tenant}.{category}".into()
}
fn default_sink_stream() -> String {
    "BETALOGS".into()
}
fn default_source_subject() -> String {
    "betalogs.platform.{tenant}".into()
}
fn default_source_stream() -> String {
    "PLATFORM".into()
}
fn default_durable() -> String {
    "integrationd".into()
}
fn default_replicas() -> usize {
    1
}
fn default_duplicate_window() -> Duration {
    Duration::from_secs(10 * 60)
}
fn default_max_in_flight() -> usize {
    4096
}
fn default_ack_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_retry_min() -> Duration {
    Duration::from_millis(200)
}
fn default_retry_max() -> Duration {
    Duration::from_secs(30)
}
fn default_batch() -> usize {
    500
}
fn default_ack_wait() -> Duration {
    Duration::from_secs(30)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::Config;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, Path::new("/etc/integrationd.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn a_sink_and_a_source_need_only_a_name_and_servers() {
        let config = parse(
            "[[sinks.nats]]\nname = \"bus\"\nservers = [\"nats://127.0.0.1:4222\"]\n\
             [[sources.nats]]\nname = \"platform\"\nservers = [\"127.0.0.1\"]\n",
        )
        .expect("valid");
        let sink = &config.sinks.nats[0];
        assert_eq!(sink.subject, "betalogs.events.{tenant}.{category}");
        assert_eq!(sink.stream, "BETALOGS");
        assert!(!sink.create_stream);
        assert_eq!(sink.stream_subjects(), ["betalogs.events.*.*"]);
        let source = &config.sources.nats[0];
        assert_eq!(source.subject, "betalogs.platform.{tenant}");
        assert_eq!(
            (source.stream.as_str(), source.durable.as_str()),
            ("PLATFORM", "integrationd")
        );
    }

    #[test]
    fn bad_settings_are_refused_naming_the_sink_and_the_key() {
        let sink = |extra: &str| {
            parse(&format!(
                "[[sinks.nats]]\nname = \"bus\"\nservers = [\"nats://127.0.0.1:4222\"]\n{extra}"
            ))
            .expect_err("refused")
        };
        let err = sink("subject = \"events.{tenat}\"\n");
        assert!(
            err.contains("sinks.nats[0] (`bus`): subject = \"events.{tenat}\""),
            "{err}"
        );
        assert!(sink("stream = \"a.b\"\n").contains("stream = \"a.b\""));
        assert!(sink("replicas = 7\n").contains("replicas = 7"));
        assert!(sink("retry_min = \"1m\"\nretry_max = \"1s\"\n").contains("retry_min"));
        assert!(sink("password = \"hunter2\"\n").contains("unknown field `password`"));
        let err = parse("[[sinks.nats]]\nname = \"bus\"\nservers = [\"http://x\"]\n")
            .expect_err("refused");
        assert!(err.contains("\"http://x\" is not a NATS address"), "{err}");
        let err = parse(
            "[[sinks.http]]\nname = \"bus\"\nurl = \"http://x\"\n[[sinks.nats]]\nname = \"bus\"\nservers = [\"x\"]\n",
        )
        .expect_err("refused");
        assert!(err.contains("sinks.nats[0].name = `bus`"), "{err}");
        let err = parse(
            "[[sources.nats]]\nname = \"p\"\nservers = [\"x\"]\nsubject = \"platform.events\"\n",
        )
        .expect_err("refused");
        assert!(err.contains("needs `{tenant}` exactly once"), "{err}");
    }
}
