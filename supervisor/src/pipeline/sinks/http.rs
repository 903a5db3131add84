//! The HTTP sink: batches of events POSTed as NDJSON to an ingest endpoint with a bearer
//! token. At-least-once: the sink's offset moves only after the endpoint accepted a
//! batch, and events carry their ids for deduplication. Transient failures (connection
//! errors, timeouts, 408, 429, 5xx) are retried with exponential backoff and full jitter,
//! honouring `Retry-After`; a permanent refusal (any other 4xx) sends the batch's events
//! to the dead-letter queue, so one bad batch cannot stop the sink. Each sink runs on its
//! own task with its own offset: a slow or failing endpoint holds back nothing else, and
//! its backlog stays in the event log (bounded by the log's disk quota).

use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use crate::config::HttpSinkConfig;
use crate::pipeline::Pipeline;

/// Why the sink could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpSinkError {
    #[error("sink `{sink}`: cannot read its token file {path}: {cause}")]
    TokenFile {
        sink: String,
        path: String,
        cause: std::io::Error,
    },
    #[error("sink `{sink}`: cannot build its HTTP client: {reason}")]
    Client { sink: String, reason: String },
}

/// What became of one POST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    Delivered,
    /// Try again, after the endpoint's `Retry-After` if it gave one.
    Retry {
        after: Option<Duration>,
        why: String,
    },
    /// Refused for good: the batch goes to the dead-letter queue.
    Rejected {
        why: String,
    },
}

/// How a response status is treated.
pub fn classify(status: u16, retry_after: Option<&str>, body: &str) -> Attempt {
    let after = retry_after
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|seconds| Duration::from_secs(seconds.min(3600)));
    let why = format!(
        "HTTP {status}: {}",
        body.chars().take(200).collect::<String>()
    );
    match status {
        200..=299 => Attempt::Delivered,
        408 | 425 | 429 | 500..=599 => Attempt::Retry { after, why },
        _ => Attempt::Rejected { why },
    }
}

/// One HTTP sink.
#[derive(Debug)]
pub struct HttpSink {
    config: HttpSinkConfig,
    token: Option<SecretString>,
    client: reqwest::Client,
    pipeline: Arc<Pipeline>,
}

/// Commits per read of the log.
const READ_COMMITS: usize = 64;

impl HttpSink {
    pub fn new(config: HttpSinkConfig, pipeline: Arc<Pipeline>) -> Result<Self, HttpSinkError> {
        let token = match &config.token_file {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| HttpSinkError::TokenFile {
                        sink: config.name.clone(),
                        path: path.display().to_string(),
                        cause: source,
                    })?;
                Some(SecretString::from(text.trim().to_owned()))
            }
            None => None,
        };
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .user_agent(concat!("integrationd/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| HttpSinkError::Client {
                sink: config.name.clone(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            config,
            token,
            client,
            pipeline,
        })
    }

    async fn post(&self, body: Vec<u8>) -> Attempt {
        let mut request = self
            .client
            .post(&self.config.url)
            .header(reqwest::header::CONTENT_TYPE, "application/x-ndjson")
            .body(body);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token.expose_secret());
        }
        match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let body = response.text().await.unwrap_or_default();
                classify(status, retry_after.as_deref(), &body)
            }
            // Connection refused, reset, timed out: the endpoint may come back.
            Err(err) => Attempt::Retry {
                after: None,
                why: err.without_url().to_string(),
            },
        }
    }

    /// Delivers until `stop` turns true.
    pub async fn run(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let name = self.config.name.clone();
        let pipeline = self.pipeline.clone();
        let mut offset = match pipeline.sink_offset(&name) {
            Ok(offset) => offset,
            Err(err) => {
                tracing::error!(sink = %name, error = %err, "cannot read the sink's offset; the sink is not running");
                return;
            }
        };
        let committed = pipeline.committed();
        loop {
            let notified = committed.notified();
            let read = {
                let pipeline = pipeline.clone();
                tokio::task::spawn_blocking(move || pipeline.outbox_after(offset, READ_COMMITS))
                    .await
            };
            let records = match read {
                Ok(Ok(records)) => records,
                Ok(Err(err)) => {
                    tracing::error!(sink = %name, error = %err, "cannot read the event log");
                    Vec::new()
                }
                Err(_) => return,
            };
            if records.is_empty() {
                tokio::select! {
                    () = notified => {}
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    changed = stop.changed() => if changed.is_err() || *stop.borrow() { return },
                }
                continue;
            }
            for (seq, record) in records {
                let lines: Vec<&[u8]> = record
                    .split_inclusive(|b| *b == b'\n')
                    .filter(|line| line.len() > 1)
                    .collect();
                for chunk in lines.chunks(self.config.batch_events) {
                    if !self.deliver(chunk, &mut stop).await {
                        return;
                    }
                }
                if let Err(err) = pipeline.advance_sink(&name, seq) {
                    tracing::error!(sink = %name, error = %err, "cannot record the sink's offset");
                }
                offset = seq;
            }
        }
    }

    /// Delivers one batch, retrying until it is delivered or refused for good; false
    /// when told to stop first.
    async fn deliver(
        &self,
        lines: &[&[u8]],
        stop: &mut tokio::sync::watch::Receiver<bool>,
    ) -> bool {
        let body: Vec<u8> = lines.concat();
        let mut backoff = super::Backoff::new(self.config.retry_min, self.config.retry_max);
        loop {
            match self.post(body.clone()).await {
                Attempt::Delivered => {
                    self.pipeline
                        .sink_health()
                        .delivered(&self.config.name, lines.len());
                    if let Some(failures) = backoff.recovered() {
                        tracing::info!(sink = %self.config.name, failures, "sink endpoint is back; delivering the backlog");
                    }
                    return true;
                }
                Attempt::Retry { after, why } => {
                    let go_on = backoff
                        .wait(
                            self.pipeline.sink_health(),
                            &self.config.name,
                            "sink endpoint failed; retrying (the backlog waits in the event log)",
                            &why,
                            after,
                            stop,
                        )
                        .await;
                    if !go_on {
                        return false;
                    }
                }
                Attempt::Rejected { why } => {
                    tracing::error!(sink = %self.config.name, events = lines.len(), error = %why, "sink endpoint refused a batch; its events go to the dead-letter queue");
                    super::dead_letter_lines(&self.pipeline, &self.config.name, lines, &why).await;
                    return true;
                }
            }
        }
    }
}

impl super::Sink for HttpSink {
    fn name(&self) -> &str {
        &self.config.name
    }

    fn run(self: Box<Self>, stop: tokio::sync::watch::Receiver<bool>) -> super::SinkRun {
        Box::pin(HttpSink::run(*self, stop))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified_transient_or_permanent() {
        assert_eq!(classify(200, None, ""), Attempt::Delivered);
        assert_eq!(classify(204, None, ""), Attempt::Delivered);
        assert!(matches!(
            classify(429, Some("7"), "slow down"),
            Attempt::Retry { after: Some(d), .. } if d == Duration::from_secs(7)
        ));
        assert!(matches!(
            classify(503, None, ""),
            Attempt::Retry { after: None, .. }
        ));
        assert!(matches!(
            classify(408, Some("soon"), ""),
            Attempt::Retry { after: None, .. }
        ));
        assert!(
            matches!(classify(400, None, "bad event"), Attempt::Rejected { why } if why.contains("bad event"))
        );
        assert!(matches!(classify(401, None, ""), Attempt::Rejected { .. }));
        assert!(
            matches!(
                classify(429, Some("999999"), ""),
                Attempt::Retry { after: Some(d), .. } if d == Duration::from_secs(3600)
            ),
            "an absurd Retry-After is capped"
        );
    }
}
