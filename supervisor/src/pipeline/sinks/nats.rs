//! The NATS JetStream sink: every committed event published to a subject of a stream
//! (`betalogs.events.{tenant}.{category}` by default), with `Nats-Msg-Id` = its id
//! (`id#rN` for revision N), many publishes in flight.
//!
//! At-least-once out, exactly once in the stream: the sink's offset advances only past
//! commits whose every message JetStream acknowledged, so a crash, a lost connection or
//! an acknowledgement that timed out replays only the unacknowledged tail, and the
//! stream's duplicate window drops the messages it already holds.
//!
//! Publishing speaks JetStream's protocol directly, as the NATS clients' asynchronous
//! publishers do: each message is a core publish whose reply subject is
//! `<inbox>.<token>`, and one subscription to `<inbox>.*` receives every
//! acknowledgement, matched to its message by the token. Nothing per message but the
//! message itself: no reply subscription, channel or timer each. The backlog waits in
//! the event log meanwhile (its quota and alert apply); the client reconnects with
//! backoff by itself, and the sink retries with its own.
//!
//! Order: nothing is published while the client is not connected, so the backlog of an
//! outage goes out in log order from the acknowledged offset. Only messages the client
//! had queued when the connection broke (fewer than `max_in_flight`) may land after
//! messages republished before them; none is lost or stored twice.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures_util::{FutureExt, StreamExt};
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

/// A message published and not yet acknowledged: its reply token (none when its event
/// was dead-lettered, or its commit held no event) and, for the last of a commit, the
/// commit's sequence.
struct Pending {
    token: Option<u64>,
    commit: Option<u64>,
    sent: Instant,
    /// The event, should the stream refuse it for good (a refcount, not a copy).
    line: Option<bytes::Bytes>,
}

/// A connection ready to publish: the client and the subscription that receives the
/// acknowledgements.
struct Connected {
    client: async_nats::Client,
    /// The server's `max_payload`, read once: the client's copy of the server's info is
    /// cloned whole on each read.
    max_payload: usize,
    inbox: String,
    acks: async_nats::Subscriber,
    /// The next reply token; tokens only grow on a connection, so an acknowledgement of
    /// an earlier round is told apart.
    next_token: u64,
}

/// What JetStream answered to one publish.
#[derive(serde::Deserialize)]
struct Answer {
    #[serde(default)]
    error: Option<AnswerError>,
}

#[derive(serde::Deserialize)]
struct AnswerError {
    #[serde(default)]
    err_code: u64,
    #[serde(default)]
    description: String,
}

/// JetStream's code for a message over the stream's `max_msg_size`.
const MESSAGE_TOO_LARGE: u64 = 10054;

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

    /// Publishes until `stop` turns true: connects, checks the stream, then streams the
    /// log from the offset; after any failure, backs off and streams again from the
    /// acknowledged offset.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut backoff = super::Backoff::new(self.config.retry_min, self.config.retry_max);
        let mut connected = None;
        loop {
            let outcome = match &mut connected {
                None => match self.connect().await {
                    Ok(ready) => {
                        connected = Some(ready);
                        continue;
                    }
                    Err(why) => Interrupted::Failed(why),
                },
                Some(connected) => self.stream(connected, &mut stop, &mut backoff).await,
            };
            let Interrupted::Failed(why) = outcome else {
                return;
            };
            let go_on = backoff
                .wait(
                    self.pipeline.sink_health(),
                    &self.config.name,
                    "JetStream sink failed; retrying (the backlog waits in the event log)",
                    &why,
                    None,
                    &mut stop,
                )
                .await;
            if !go_on {
                return;
            }
        }
    }

    /// Connects, subscribes to the acknowledgements and makes sure the stream is there
    /// (creating it if configured to).
    async fn connect(&self) -> Result<Connected, String> {
        let client = self
            .config
            .connection()
            .connect()
            .await
            .map_err(|err| err.to_string())?;
        let context = jetstream::ContextBuilder::new()
            .timeout(self.config.ack_timeout)
            .build(client.clone());
        self.ensure_stream(&context).await?;
        let inbox = client.new_inbox();
        let acks = client
            .subscribe(format!("{inbox}.*"))
            .await
            .map_err(|err| format!("cannot subscribe to the acknowledgements: {err}"))?;
        Ok(Connected {
            max_payload: client.server_info().max_payload,
            client,
            inbox,
            acks,
            next_token: 0,
        })
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
        connected: &mut Connected,
        stop: &mut watch::Receiver<bool>,
        backoff: &mut super::Backoff,
    ) -> Interrupted {
        let acknowledged = match self.pipeline.sink_offset(&self.config.name) {
            Ok(offset) => offset,
            Err(err) => return Interrupted::Failed(format!("cannot read the offset: {err}")),
        };
        let mut round = Round {
            sink: self,
            connected,
            in_flight: VecDeque::new(),
            early: BTreeMap::new(),
            acknowledged,
            written: acknowledged,
            last_write: Instant::now(),
            delivered: 0,
            backoff,
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
    connected: &'s mut Connected,
    in_flight: VecDeque<Pending>,
    /// Acknowledgements that came before the oldest one's (by token): none normally,
    /// as one stream answers in order.
    early: BTreeMap<u64, Result<(), PublishFailure>>,
    /// The last commit whose every message was acknowledged.
    acknowledged: u64,
    /// The offset last written.
    written: u64,
    last_write: Instant,
    /// Acknowledged since health last heard of it.
    delivered: usize,
    backoff: &'s mut super::Backoff,
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
                if let Err(why) = self.publish_commit(seq, bytes::Bytes::from(record)).await {
                    return Interrupted::Failed(why);
                }
                read_to = seq;
            }
        }
    }

    /// Publishes one commit's events; its last entry in flight carries `seq`.
    async fn publish_commit(&mut self, seq: u64, record: bytes::Bytes) -> Result<(), String> {
        let mut lines = Vec::new();
        let mut start = 0;
        for (at, byte) in record.iter().enumerate() {
            if *byte == b'\n' {
                if at > start {
                    lines.push(record.slice(start..at));
                }
                start = at + 1;
            }
        }
        if start < record.len() {
            lines.push(record.slice(start..));
        }
        for (index, line) in lines.iter().enumerate() {
            while self.in_flight.len() >= self.sink.config.max_in_flight {
                self.settle_oldest().await?;
            }
            let commit = (index + 1 == lines.len()).then_some(seq);
            match self.publish_line(line.clone()).await {
                Ok(token) => self.in_flight.push_back(Pending {
                    token: Some(token),
                    commit,
                    sent: Instant::now(),
                    line: Some(line.clone()),
                }),
                Err(Refused(why)) => {
                    self.dead_letter(line, &why).await;
                    self.in_flight.push_back(Pending {
                        token: None,
                        commit,
                        sent: Instant::now(),
                        line: None,
                    });
                }
                Err(Retry(why)) => return Err(why),
            }
        }
        if lines.is_empty() {
            self.in_flight.push_back(Pending {
                token: None,
                commit: Some(seq),
                sent: Instant::now(),
                line: None,
            });
        }
        Ok(())
    }

    async fn dead_letter(&self, line: &[u8], why: &str) {
        tracing::error!(sink = %self.sink.config.name, error = %why, "JetStream refused an event; it goes to the dead-letter queue");
        super::dead_letter_lines(&self.sink.pipeline, &self.sink.config.name, &[line], why).await;
    }

    /// Sends one event with its reply token; its acknowledgement is matched later.
    async fn publish_line(&mut self, line: bytes::Bytes) -> Result<u64, PublishFailure> {
        let connected = &mut *self.connected;
        // Queued while disconnected, a message would go out after reconnecting, ahead
        // of the earlier ones the next round republishes.
        if connected.client.connection_state() != async_nats::connection::State::Connected {
            return Err(Retry("not connected to NATS".into()));
        }
        let routing: Routing = serde_json::from_slice(&line)
            .map_err(|err| Refused(format!("the event in the log is not readable: {err}")))?;
        let subject = self.sink.subject.render(|field| match field {
            "tenant" => routing.tenant.as_deref(),
            "integration" => routing.integration.as_deref(),
            "category" => routing.category.as_deref(),
            "severity" => routing.severity.as_deref(),
            _ => None,
        });
        if line.len() > connected.max_payload.saturating_sub(256) {
            return Err(Refused(format!(
                "the event ({} bytes) is over the server's max_payload ({} bytes)",
                line.len(),
                connected.max_payload
            )));
        }
        let mut headers = async_nats::HeaderMap::new();
        // The payload is the structured-mode CloudEvent (JSON), as the NATS binding
        // has it; the message id is the only header, each byte of which the server
        // parses and stores for every event.
        headers.insert("Nats-Msg-Id", routing.message_id().as_str());
        let token = connected.next_token;
        connected.next_token += 1;
        connected
            .client
            .publish_with_reply_and_headers(
                subject,
                format!("{}.{token}", connected.inbox),
                headers,
                line,
            )
            .await
            .map_err(|err| Retry(format!("cannot publish: {err}")))?;
        Ok(token)
    }

    /// Waits for the oldest message's acknowledgement; when it completes a commit, the
    /// offset may move.
    async fn settle_oldest(&mut self) -> Result<(), String> {
        let Some(oldest) = self.in_flight.front() else {
            return Ok(());
        };
        if let Some(token) = oldest.token {
            let deadline = oldest.sent + self.sink.config.ack_timeout;
            match self.answer_for(token, deadline).await? {
                Ok(()) => {
                    if let Some(failures) = self.backoff.recovered() {
                        tracing::info!(sink = %self.sink.config.name, failures, "JetStream is back; delivering the backlog");
                    }
                    self.delivered += 1;
                }
                Err(Refused(why)) => {
                    if let Some(line) = self.in_flight.front().and_then(|p| p.line.clone()) {
                        self.dead_letter(&line, &why).await;
                    }
                }
                Err(Retry(why)) => return Err(why),
            }
        }
        let commit = self
            .in_flight
            .pop_front()
            .and_then(|pending| pending.commit);
        if let Some(seq) = commit {
            self.acknowledged = seq;
            self.write_offset(false)?;
        }
        Ok(())
    }

    /// JetStream's answer to the message with reply `token`, received by `deadline`.
    async fn answer_for(
        &mut self,
        token: u64,
        deadline: Instant,
    ) -> Result<Result<(), PublishFailure>, String> {
        loop {
            if let Some(answer) = self.early.remove(&token) {
                return Ok(answer);
            }
            // An answer already received is taken without arming a timer for it: under
            // load most have arrived by the time their message is the oldest.
            let next = match self.connected.acks.next().now_or_never() {
                Some(next) => next,
                None => tokio::time::timeout_at(deadline.into(), self.connected.acks.next())
                    .await
                    .map_err(|_| {
                        format!(
                            "no acknowledgement within {:?} (ack_timeout)",
                            self.sink.config.ack_timeout
                        )
                    })?,
            }
            .ok_or_else(|| "the acknowledgement subscription ended".to_owned())?;
            let Some(answered) = next
                .subject
                .rsplit('.')
                .next()
                .and_then(|t| t.parse::<u64>().ok())
            else {
                continue;
            };
            // Below `token`: an earlier round's, on this connection, already given up.
            if answered == token {
                return Ok(read_answer(&next));
            }
            if answered > token {
                self.early.insert(answered, read_answer(&next));
            }
        }
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
        self.sink
            .pipeline
            .sink_health()
            .delivered(&self.sink.config.name, std::mem::take(&mut self.delivered));
        Ok(())
    }
}

/// What an acknowledgement says: stored (or a duplicate the stream dropped), or why not.
fn read_answer(message: &async_nats::Message) -> Result<(), PublishFailure> {
    if message.status == Some(async_nats::StatusCode::NO_RESPONDERS) {
        return Err(Retry(
            "no stream takes the subject (no responders): check the stream's subjects".into(),
        ));
    }
    let answer: Answer = serde_json::from_slice(&message.payload)
        .map_err(|err| Retry(format!("unreadable acknowledgement: {err}")))?;
    match answer.error {
        None => Ok(()),
        Some(error) if error.err_code == MESSAGE_TOO_LARGE => Err(Refused(format!(
            "the stream refused the event: {}",
            error.description
        ))),
        Some(error) => Err(Retry(format!(
            "the stream refused the message: {} (code {})",
            error.description, error.err_code
        ))),
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
