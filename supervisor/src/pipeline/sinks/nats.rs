//! The NATS JetStream sink: every committed event published to a subject of a stream
//! (`betalogs.events.{tenant}.{category}` by default), with `Nats-Msg-Id` = its id
//! (`id#rN` for revision N), many publishes in flight.
//!
//! At-least-once out, exactly once in the stream: the sink's offset advances only past
//! commits whose every message JetStream acknowledged, so a crash, a lost connection or
//! an acknowledgement that timed out replays only the unacknowledged tail, and the
//! stream's duplicate window drops the messages it already holds. The backlog waits in
//! the event log meanwhile (its quota and alert apply); the client reconnects with
//! backoff by itself, and the sink retries with its own.
//!
//! Order: nothing is published while the client is not connected, so the backlog of an
//! outage goes out in log order from the acknowledged offset. Only messages the client
//! had queued when the connection broke (fewer than `max_in_flight`) may land after
//! messages republished before them; none is lost or stored twice.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, context::PublishAckFuture};
use plugin_kit::resilience::RetryPolicy;
use tokio::sync::watch;

use crate::config::{NatsSinkConfig, StreamStorage};
use crate::nats::SubjectTemplate;
use crate::pipeline::Pipeline;

/// Commits per read of the log.
const READ_COMMITS: usize = 64;
/// How often, at most, the offset is written while acknowledgements stream in (and
/// always when the sink catches up, stops or fails): a crash repeats at most this much
/// more than what was in flight.
const OFFSET_EVERY: Duration = Duration::from_millis(200);

/// Why the sink could not start.
#[derive(Debug, thiserror::Error)]
pub enum NatsSinkError {
    #[error("sink `{sink}`: subject = {subject:?} {cause}")]
    Subject {
        sink: String,
        subject: String,
        cause: crate::nats::TemplateError,
    },
}

/// One JetStream sink.
#[derive(Debug)]
pub struct NatsSink {
    config: NatsSinkConfig,
    subject: SubjectTemplate,
    pipeline: Arc<Pipeline>,
}

/// What an event's line says about where it goes.
#[derive(serde::Deserialize)]
struct Routing<'a> {
    #[serde(borrow)]
    id: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    tenant: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    integration: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    category: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    severity: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    revision: Option<u64>,
}

impl Routing<'_> {
    /// The message id: the event's id, `#rN` added for a revision after the first.
    fn message_id(&self) -> String {
        match self.revision {
            Some(revision) if revision > 1 => format!("{}#r{revision}", self.id),
            _ => self.id.clone().into_owned(),
        }
    }
}

/// Why publishing stopped before the log's end.
enum Interrupted {
    Stopped,
    Failed(String),
}

/// Messages published and not yet acknowledged, oldest first; the last entry of a
/// commit carries the commit's sequence (with no acknowledgement to await when its
/// event was dead-lettered, or when the commit held no event).
type InFlight = VecDeque<(Option<u64>, Option<PublishAckFuture>)>;

impl NatsSink {
    pub fn new(config: NatsSinkConfig, pipeline: Arc<Pipeline>) -> Result<Self, NatsSinkError> {
        let subject =
            SubjectTemplate::parse(&config.subject).map_err(|cause| NatsSinkError::Subject {
                sink: config.name.clone(),
                subject: config.subject.clone(),
                cause,
            })?;
        Ok(Self {
            config,
            subject,
            pipeline,
        })
    }

    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: u32::MAX,
            base: self.config.retry_min,
            cap: self.config.retry_max,
            max_wait: Duration::from_secs(3600),
        }
    }

    /// Publishes until `stop` turns true: connects, checks the stream, then streams the
    /// log from the offset; after any failure, backs off and streams again from the
    /// acknowledged offset.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let policy = self.retry_policy();
        let mut failures = 0u32;
        let mut context = None;
        loop {
            let outcome = match &context {
                None => match self.connect().await {
                    Ok(ready) => {
                        context = Some(ready);
                        continue;
                    }
                    Err(why) => Interrupted::Failed(why),
                },
                Some((client, context)) => {
                    self.stream(client, context, &mut stop, &mut failures).await
                }
            };
            let why = match outcome {
                Interrupted::Stopped => return,
                Interrupted::Failed(why) => why,
            };
            let delay = policy
                .delay(failures, None, rand::random::<f64>())
                .max(Duration::from_millis(10));
            failures += 1;
            self.pipeline.sink_health().failed(&self.config.name, &why);
            if failures == 1 || failures.is_power_of_two() {
                tracing::warn!(sink = %self.config.name, failures, retry_in = ?delay, error = %why, "JetStream sink failed; retrying (the backlog waits in the event log)");
            }
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                changed = stop.changed() => if changed.is_err() || *stop.borrow() { return },
            }
        }
    }

    /// Connects and makes sure the stream is there (creating it if configured to).
    async fn connect(&self) -> Result<(async_nats::Client, jetstream::Context), String> {
        let client = self
            .config
            .connection()
            .connect()
            .await
            .map_err(|err| err.to_string())?;
        let context = jetstream::ContextBuilder::new()
            .timeout(self.config.ack_timeout)
            .ack_timeout(self.config.ack_timeout)
            // Room for the futures of a failed round that the client still holds.
            .max_ack_inflight(self.config.max_in_flight * 2)
            .backpressure_on_inflight(true)
            .build(client.clone());
        self.ensure_stream(&context).await?;
        Ok((client, context))
    }

    async fn ensure_stream(&self, context: &jetstream::Context) -> Result<(), String> {
        use async_nats::jetstream::context::GetStreamErrorKind;
        let name = &self.config.stream;
        match context.get_stream(name).await {
            Ok(mut stream) => {
                let info = stream
                    .info()
                    .await
                    .map_err(|err| format!("stream `{name}`: cannot read its settings: {err}"))?;
                let window = info.config.duplicate_window;
                if window < self.config.retry_max * 2 {
                    tracing::warn!(sink = %self.config.name, stream = %name, duplicate_window = ?window, retry_max = ?self.config.retry_max, "the stream's duplicate window is shorter than twice the sink's retry_max: an event repeated after a long outage may be stored twice (README, JetStream sink)");
                }
                Ok(())
            }
            Err(err)
                if matches!(err.kind(), GetStreamErrorKind::JetStream(ref e)
                    if e.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND) =>
            {
                if !self.config.create_stream {
                    return Err(format!(
                        "stream `{name}` does not exist on {}: create it for subjects {:?}, or set create_stream = true",
                        self.config.servers.join(", "),
                        self.config.stream_subjects()
                    ));
                }
                let config = jetstream::stream::Config {
                    name: name.clone(),
                    subjects: self.config.stream_subjects(),
                    num_replicas: self.config.replicas,
                    storage: match self.config.storage {
                        StreamStorage::File => jetstream::stream::StorageType::File,
                        StreamStorage::Memory => jetstream::stream::StorageType::Memory,
                    },
                    duplicate_window: self.config.duplicate_window,
                    max_age: self.config.max_age.unwrap_or_default(),
                    ..Default::default()
                };
                context
                    .create_stream(config)
                    .await
                    .map_err(|err| format!("cannot create stream `{name}`: {err}"))?;
                tracing::info!(sink = %self.config.name, stream = %name, "created the JetStream stream");
                Ok(())
            }
            Err(err) => Err(format!("stream `{name}`: {err}")),
        }
    }

    /// Streams the log from the acknowledged offset until stopped or a publish fails.
    async fn stream(
        &self,
        client: &async_nats::Client,
        context: &jetstream::Context,
        stop: &mut watch::Receiver<bool>,
        failures: &mut u32,
    ) -> Interrupted {
        let acknowledged = match self.pipeline.sink_offset(&self.config.name) {
            Ok(offset) => offset,
            Err(err) => return Interrupted::Failed(format!("cannot read the offset: {err}")),
        };
        let mut round = Round {
            sink: self,
            client,
            context,
            in_flight: InFlight::new(),
            acknowledged,
            written: acknowledged,
            last_write: Instant::now(),
            failures,
        };
        let outcome = round.run(stop).await;
        // What was acknowledged stays acknowledged, whatever ended the round.
        if let Err(why) = round.write_offset(true) {
            return Interrupted::Failed(why);
        }
        outcome
    }

    /// Up to [`READ_COMMITS`] commits after `after`, off the runtime.
    async fn read(&self, after: u64) -> Result<Vec<(u64, Vec<u8>)>, String> {
        let pipeline = self.pipeline.clone();
        tokio::task::spawn_blocking(move || pipeline.outbox_after(after, READ_COMMITS))
            .await
            .map_err(|_| "the log read was cancelled".to_owned())?
            .map_err(|err| format!("cannot read the event log: {err}"))
    }
}

/// One pass over the log on one connection: what is in flight and how far the
/// acknowledgements reached.
struct Round<'s> {
    sink: &'s NatsSink,
    client: &'s async_nats::Client,
    context: &'s jetstream::Context,
    in_flight: InFlight,
    /// The last commit whose every message was acknowledged.
    acknowledged: u64,
    /// The offset last written.
    written: u64,
    last_write: Instant,
    failures: &'s mut u32,
}

impl Round<'_> {
    async fn run(&mut self, stop: &mut watch::Receiver<bool>) -> Interrupted {
        let committed = self.sink.pipeline.committed();
        let mut read_to = self.acknowledged;
        loop {
            if *stop.borrow() {
                return Interrupted::Stopped;
            }
            let notified = committed.notified();
            let records = match self.sink.read(read_to).await {
                Ok(records) => records,
                Err(why) => return Interrupted::Failed(why),
            };
            if records.is_empty() {
                // Caught up once every acknowledgement is in.
                while !self.in_flight.is_empty() {
                    if let Err(why) = self.settle_oldest().await {
                        return Interrupted::Failed(why);
                    }
                }
                if let Err(why) = self.write_offset(true) {
                    return Interrupted::Failed(why);
                }
                tokio::select! {
                    () = notified => {}
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    changed = stop.changed() => if changed.is_err() || *stop.borrow() { return Interrupted::Stopped },
                }
                continue;
            }
            for (seq, record) in records {
                if let Err(why) = self.publish_commit(seq, &record).await {
                    return Interrupted::Failed(why);
                }
                read_to = seq;
            }
        }
    }

    /// Publishes one commit's events; its last entry in flight carries `seq`.
    async fn publish_commit(&mut self, seq: u64, record: &[u8]) -> Result<(), String> {
        let lines: Vec<&[u8]> = record
            .split(|b| *b == b'\n')
            .filter(|line| !line.is_empty())
            .collect();
        let mut refused = Vec::new();
        for (index, line) in lines.iter().enumerate() {
            while self.in_flight.len() >= self.sink.config.max_in_flight {
                self.settle_oldest().await?;
            }
            let last = (index + 1 == lines.len()).then_some(seq);
            match self.publish_line(line).await {
                Ok(ack) => self.in_flight.push_back((last, Some(ack))),
                Err(Refused(why)) => {
                    refused.push(*line);
                    self.in_flight.push_back((last, None));
                    tracing::error!(sink = %self.sink.config.name, error = %why, "JetStream refused an event; it goes to the dead-letter queue");
                    super::dead_letter_lines(
                        &self.sink.pipeline,
                        &self.sink.config.name,
                        &refused,
                        &why,
                    )
                    .await;
                    refused.clear();
                }
                Err(Retry(why)) => return Err(why),
            }
        }
        if lines.is_empty() {
            self.in_flight.push_back((Some(seq), None));
        }
        Ok(())
    }

    /// Sends one event; its acknowledgement is awaited later.
    async fn publish_line(&self, line: &[u8]) -> Result<PublishAckFuture, PublishFailure> {
        use async_nats::jetstream::context::PublishErrorKind;
        // Queued while disconnected, a message would go out after reconnecting, ahead
        // of the earlier ones the next round republishes.
        if self.client.connection_state() != async_nats::connection::State::Connected {
            return Err(Retry("not connected to NATS".into()));
        }
        let routing: Routing = serde_json::from_slice(line)
            .map_err(|err| Refused(format!("the event in the log is not readable: {err}")))?;
        let subject = self.sink.subject.render(|field| match field {
            "tenant" => routing.tenant.as_deref(),
            "integration" => routing.integration.as_deref(),
            "category" => routing.category.as_deref(),
            "severity" => routing.severity.as_deref(),
            _ => None,
        });
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", routing.message_id().as_str());
        headers.insert(
            "Content-Type",
            "application/cloudevents+json; charset=utf-8",
        );
        self.context
            .publish_with_headers(subject, headers, line.to_vec().into())
            .await
            .map_err(|err| match err.kind() {
                PublishErrorKind::MaxPayloadExceeded => Refused(format!(
                    "the event ({} bytes) is over the server's max_payload: {err}",
                    line.len()
                )),
                _ => Retry(format!("cannot publish: {err}")),
            })
    }

    /// Awaits the oldest acknowledgement; when it completes a commit, the offset may move.
    async fn settle_oldest(&mut self) -> Result<(), String> {
        let Some((commit, ack)) = self.in_flight.pop_front() else {
            return Ok(());
        };
        if let Some(ack) = ack {
            ack.await
                .map_err(|err| format!("publish not acknowledged: {err}"))?;
            if *self.failures > 0 {
                tracing::info!(sink = %self.sink.config.name, failures = *self.failures, "JetStream is back; delivering the backlog");
                *self.failures = 0;
            }
            self.sink
                .pipeline
                .sink_health()
                .delivered(&self.sink.config.name, 1);
        }
        if let Some(seq) = commit {
            self.acknowledged = seq;
            self.write_offset(false)?;
        }
        Ok(())
    }

    /// Records the acknowledged offset: now when `force`, else at most every
    /// [`OFFSET_EVERY`].
    fn write_offset(&mut self, force: bool) -> Result<(), String> {
        if self.acknowledged == self.written || (!force && self.last_write.elapsed() < OFFSET_EVERY)
        {
            return Ok(());
        }
        self.sink
            .pipeline
            .advance_sink(&self.sink.config.name, self.acknowledged)
            .map_err(|err| format!("cannot record the offset: {err}"))?;
        self.written = self.acknowledged;
        self.last_write = Instant::now();
        Ok(())
    }
}

/// Why an event was not published.
enum PublishFailure {
    /// For good: the event goes to the dead-letter queue.
    Refused(String),
    /// The connection or the server: the round ends and starts again.
    Retry(String),
}
use PublishFailure::{Refused, Retry};

impl super::Sink for NatsSink {
    fn name(&self) -> &str {
        &self.config.name
    }

    fn run(self: Box<Self>, stop: watch::Receiver<bool>) -> super::SinkRun {
        Box::pin(NatsSink::run(*self, stop))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revision_after_the_first_has_its_own_message_id() {
        let line = br#"{"id":"e1","tenant":"acme","category":"failure","revision":3}"#;
        let routing: Routing = serde_json::from_slice(line).expect("routing");
        assert_eq!(routing.message_id(), "e1#r3");
        let first: Routing =
            serde_json::from_slice(br#"{"id":"e1","revision":1}"#).expect("routing");
        assert_eq!(first.message_id(), "e1");
        let plain: Routing = serde_json::from_slice(br#"{"id":"e\"2"}"#).expect("routing");
        assert_eq!(plain.message_id(), "e\"2");
    }
}
