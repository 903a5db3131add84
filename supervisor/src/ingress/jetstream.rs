//! Platform events in from NATS JetStream (`[[sources.nats]]`): a durable pull consumer
//! on `betalogs.platform.{tenant}`. Each message is what `POST /v1/events/{tenant}`
//! takes — a CloudEvent in structured mode (`specversion` in the body) or binary mode
//! (`ce-*` headers), or a canonical event — validated, enriched and committed like one,
//! the tenant taken from the subject (an event naming another tenant is
//! dead-lettered). A message is acknowledged only once its commit is durable, and an
//! invalid one once it is in the dead-letter queue; so a daemon killed mid-batch has
//! only the unacknowledged messages redelivered, and the event ids' deduplication
//! stores each once. A message for a tenant this daemon does not have is terminated
//! (not redelivered) and logged with its subject.
//!
//! A node of a cluster consumes with its own durable consumer (`{durable}_{node}`):
//! every node sees every message, commits those of its own tenants and acknowledges
//! the others, which their owners take from their own consumers. (Consumers filtering
//! by a set of subjects need nats-server 2.10.)

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::pull};
use futures_util::StreamExt;
use serde_json::Value;
use tokio::sync::watch;

use super::{Ingress, cloudevents};
use crate::cluster::Owner;
use crate::config::NatsSourceConfig;
use crate::nats::SubjectTemplate;
use crate::pipeline::sinks::Backoff;
use crate::pipeline::{DeadLetter, PLATFORM_INTEGRATION};

/// How long one pull waits for messages before asking again.
const PULL_EXPIRES: Duration = Duration::from_secs(1);

/// The metrics' name of this path.
const PATH: &str = "jetstream";

/// One JetStream source.
#[derive(Debug)]
pub struct JetStreamSource {
    config: NatsSourceConfig,
    subject: SubjectTemplate,
    ingress: Arc<Ingress>,
}

impl JetStreamSource {
    /// Refused when the subject is not a source's template (the configuration checks it
    /// first, naming the key).
    pub fn new(
        config: NatsSourceConfig,
        ingress: Arc<Ingress>,
    ) -> Result<Self, crate::nats::TemplateError> {
        let subject = SubjectTemplate::parse_tenant_subject(&config.subject)?;
        Ok(Self {
            config,
            subject,
            ingress,
        })
    }

    /// Consumes until `stop` turns true; after any failure, backs off and starts again
    /// (the stream keeps what was not acknowledged).
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
        loop {
            let why = match self.consumer().await {
                Ok((client, consumer)) => {
                    match self
                        .consume(&client, &consumer, &mut stop, &mut backoff)
                        .await
                    {
                        Ok(()) => return,
                        Err(why) => why,
                    }
                }
                Err(why) => why,
            };
            let go_on = backoff
                .wait(
                    self.ingress.pipeline.source_health(),
                    &self.config.name,
                    "JetStream source failed; retrying (unacknowledged messages wait in the stream)",
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

    /// Connects, finds the stream and makes (or finds) the durable consumer.
    async fn consumer(
        &self,
    ) -> Result<
        (
            async_nats::Client,
            jetstream::consumer::Consumer<pull::Config>,
        ),
        String,
    > {
        let client = self
            .config
            .connection()
            .connect()
            .await
            .map_err(|err| err.to_string())?;
        let context = jetstream::new(client.clone());
        let stream = context.get_stream(&self.config.stream).await.map_err(|err| {
            format!(
                "source `{}`: stream `{}` is not usable ({err}); the platform creates it for subjects {:?}",
                self.config.name,
                self.config.stream,
                self.subject.filter()
            )
        })?;
        let durable = self.durable();
        let consumer = stream
            .get_or_create_consumer(
                &durable,
                pull::Config {
                    durable_name: Some(durable.clone()),
                    filter_subject: self.subject.filter(),
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    ack_wait: self.config.ack_wait,
                    max_ack_pending: (self.config.batch * 4) as i64,
                    ..Default::default()
                },
            )
            .await
            .map_err(|err| {
                format!(
                    "source `{}`: cannot make durable consumer `{durable}` on stream `{}`: {err}",
                    self.config.name, self.config.stream
                )
            })?;
        Ok((client, consumer))
    }

    async fn consume(
        &self,
        client: &async_nats::Client,
        consumer: &jetstream::consumer::Consumer<pull::Config>,
        stop: &mut watch::Receiver<bool>,
        backoff: &mut Backoff,
    ) -> Result<(), String> {
        let health = &self.config.name;
        loop {
            if *stop.borrow() {
                return Ok(());
            }
            let mut batch = consumer
                .batch()
                .max_messages(self.config.batch)
                .expires(PULL_EXPIRES)
                .messages()
                .await
                .map_err(|err| format!("cannot pull: {err}"))?;
            let mut messages = Vec::new();
            loop {
                tokio::select! {
                    next = batch.next() => match next {
                        Some(Ok(message)) => messages.push(message),
                        Some(Err(err)) => return Err(format!("cannot pull: {err}")),
                        None => break,
                    },
                    changed = stop.changed() => if changed.is_err() || *stop.borrow() {
                        // Nothing of this batch is acknowledged: it is redelivered.
                        return Ok(());
                    },
                }
            }
            if messages.is_empty() {
                continue;
            }
            let count = messages.len();
            self.handle(messages).await?;
            client
                .flush()
                .await
                .map_err(|err| format!("cannot send the acknowledgements: {err}"))?;
            if let Some(failures) = backoff.recovered() {
                tracing::info!(source = %self.config.name, failures, "JetStream source is back");
            }
            self.ingress
                .pipeline
                .source_health()
                .delivered(health, count);
        }
    }

    /// Commits a batch tenant by tenant, then acknowledges each tenant's messages.
    async fn handle(&self, messages: Vec<jetstream::Message>) -> Result<(), String> {
        #[derive(Default)]
        struct Group<'m> {
            events: Vec<Value>,
            dead: Vec<DeadLetter>,
            messages: Vec<&'m jetstream::Message>,
        }
        let mut groups: BTreeMap<&str, Group> = BTreeMap::new();
        let mut strays = Vec::new();
        let mut elsewhere = Vec::new();
        let received = plugin_kit::clock::rfc3339_ms(plugin_kit::clock::now_ms());
        for message in &messages {
            let Some(tenant) = self.subject.tenant_of(message.subject.as_str()) else {
                strays.push((message, "its subject does not match the source's subject"));
                continue;
            };
            match self.placement(tenant) {
                Some(Owner::Elsewhere { .. }) => {
                    elsewhere.push(message);
                    continue;
                }
                Some(Owner::Nowhere) => {
                    strays.push((message, "no such tenant in the cluster"));
                    continue;
                }
                Some(Owner::Here) | None => {}
            }
            if !groups.contains_key(tenant) && !self.tenant_exists(tenant) {
                strays.push((message, "no such tenant on this daemon"));
                continue;
            }
            let group = groups.entry(tenant).or_default();
            group.messages.push(message);
            match event_of(message, tenant, &received) {
                Ok(event) => group.events.push(event),
                Err(why) => group.dead.push(DeadLetter::new(
                    tenant,
                    PLATFORM_INTEGRATION,
                    "parse",
                    format!("JetStream message on {}: {why}", message.subject),
                    &String::from_utf8_lossy(&message.payload),
                )),
            }
        }
        for (tenant, group) in groups {
            let (pipeline, owned, events) = (
                self.ingress.pipeline.clone(),
                tenant.to_owned(),
                group.events,
            );
            let mut submission =
                tokio::task::spawn_blocking(move || pipeline.prepare_platform(&owned, &events))
                    .await
                    .map_err(|_| "event validation failed unexpectedly".to_owned())?;
            submission.dead.extend(group.dead);
            let outcome = self
                .ingress
                .pipeline
                .commit(submission)
                .await
                .map_err(|err| format!("cannot commit tenant `{tenant}`'s events: {err}"))?;
            self.ingress.metrics.integration_events(
                tenant,
                PLATFORM_INTEGRATION,
                PATH,
                [
                    ("stored", outcome.stored),
                    ("duplicate", outcome.duplicates),
                    ("dead_lettered", outcome.dead_lettered),
                    ("refused", 0),
                ],
            );
            for message in group.messages {
                message
                    .ack()
                    .await
                    .map_err(|err| format!("cannot acknowledge: {err}"))?;
            }
        }
        for message in elsewhere {
            message
                .ack()
                .await
                .map_err(|err| format!("cannot acknowledge: {err}"))?;
        }
        for (message, why) in strays {
            tracing::warn!(source = %self.config.name, subject = %message.subject, reason = why, "JetStream message refused and terminated");
            message
                .ack_with(AckKind::Term)
                .await
                .map_err(|err| format!("cannot terminate a message: {err}"))?;
        }
        Ok(())
    }

    /// The durable consumer's name: a node of a cluster has its own.
    fn durable(&self) -> String {
        match &self.ingress.forwarder {
            Some(forwarder) => format!("{}_{}", self.config.durable, forwarder.cluster.node()),
            None => self.config.durable.clone(),
        }
    }

    /// Where `tenant` is served, on a node of a cluster.
    fn placement(&self, tenant: &str) -> Option<Owner> {
        self.ingress
            .forwarder
            .as_ref()
            .map(|forwarder| forwarder.cluster.owner(tenant))
    }

    fn tenant_exists(&self, tenant: &str) -> bool {
        matches!(self.ingress.tenants.get(tenant), Ok(Some(_)))
    }
}

/// The event a message holds, for `tenant`: a CloudEvent (binary or structured mode)
/// made canonical, or a canonical event as it is.
fn event_of(message: &jetstream::Message, tenant: &str, received: &str) -> Result<Value, String> {
    if let Some(headers) = message
        .headers
        .as_ref()
        .filter(|h| h.get("ce-specversion").is_some())
    {
        let mut http = axum::http::HeaderMap::new();
        for (name, values) in headers.iter() {
            let (Ok(name), Some(value)) = (
                axum::http::HeaderName::from_bytes(
                    name.to_string().to_ascii_lowercase().as_bytes(),
                ),
                values.first(),
            ) else {
                continue;
            };
            if let Ok(value) = axum::http::HeaderValue::from_str(value.as_str()) {
                http.insert(name, value);
            }
        }
        let event = cloudevents::from_binary(&http, &message.payload)
            .map_err(|err| format!("the CloudEvent is refused: {err}"))?;
        return cloudevents::canonical(&event, tenant, received)
            .map_err(|err| format!("the CloudEvent is refused: {err}"));
    }
    let value: Value = serde_json::from_slice(&message.payload).map_err(|err| {
        format!(
            "not JSON (line {}, column {}): {err}",
            err.line(),
            err.column()
        )
    })?;
    if value.get("specversion").is_some() {
        return cloudevents::canonical(&value, tenant, received)
            .map_err(|err| format!("the CloudEvent is refused: {err}"));
    }
    Ok(value)
}
