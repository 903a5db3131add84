//! Sends queued notifications: one task per channel, each reading its own queue in
//! order, so a channel that is down delays only itself. A notification leaves the queue
//! once the receiver answered 2xx; until then it is retried with backoff and jitter
//! (and after a restart, from the queue), always with the same idempotency key. The
//! alert events take the same road into the pipeline (their ids are deterministic, so
//! a repeat is deduplicated there).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use plugin_kit::{Category, EventBuilder, MapContext};
use serde::Serialize;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use super::alert::{Notification, NotificationKind};
use super::alert_store::{AlertStore, EVENTS_QUEUE};
use super::channels::Channel;
use super::message::{self, alert_json};
use crate::pipeline::Pipeline;

/// The tenant and integration of the daemon's own alert events.
pub const SYSTEM_TENANT: &str = "system";
pub const ALERT_INTEGRATION: &str = "health";

/// How one channel is doing, for `alerts channels list` and the metrics.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ChannelStatus {
    pub delivered: u64,
    pub failures: u64,
    /// Since when deliveries have failed (ms), while they do.
    pub failing_since_ms: Option<u64>,
    pub last_error: Option<String>,
}

/// The outcome of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    Delivered(u16),
    Failed(String),
}

/// The delivery tasks.
#[derive(Debug)]
pub struct Deliveries {
    alerts: Arc<AlertStore>,
    pipeline: Arc<Pipeline>,
    http: reqwest::Client,
    retry_max: Duration,
    wake: Arc<Notify>,
    workers: Mutex<HashMap<String, JoinHandle<()>>>,
    status: Arc<Mutex<HashMap<String, ChannelStatus>>>,
    stop: watch::Receiver<bool>,
}

impl Deliveries {
    pub fn new(
        alerts: Arc<AlertStore>,
        pipeline: Arc<Pipeline>,
        retry_max: Duration,
        stop: watch::Receiver<bool>,
    ) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Self {
            alerts,
            pipeline,
            http,
            retry_max,
            wake: Arc::new(Notify::new()),
            workers: Mutex::default(),
            status: Arc::default(),
            stop,
        }
    }

    /// Wakes every task: notifications were queued.
    pub fn queued(&self) {
        self.wake.notify_waiters();
    }

    /// Each channel's delivery state, by queue.
    pub fn status(&self) -> HashMap<String, ChannelStatus> {
        self.status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Starts the events task and one task per channel; stops the tasks of channels no
    /// longer in `channels`.
    pub fn run_for(&self, channels: &[Channel]) {
        let mut workers = self
            .workers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let wanted: HashMap<String, &Channel> =
            channels.iter().map(|c| (c.key.queue(), c)).collect();
        workers.retain(|queue, task| {
            let keep = queue == EVENTS_QUEUE || wanted.contains_key(queue);
            if !keep {
                task.abort();
            }
            keep
        });
        if !workers.contains_key(EVENTS_QUEUE) {
            workers.insert(
                EVENTS_QUEUE.to_owned(),
                tokio::spawn(events_task(
                    self.alerts.clone(),
                    self.pipeline.clone(),
                    self.wake.clone(),
                    self.retry_max,
                    self.stop.clone(),
                )),
            );
        }
        for (queue, channel) in wanted {
            if workers.contains_key(&queue) {
                continue;
            }
            workers.insert(
                queue.clone(),
                tokio::spawn(channel_task(
                    self.alerts.clone(),
                    self.http.clone(),
                    channel.clone(),
                    self.wake.clone(),
                    self.status.clone(),
                    self.retry_max,
                    self.stop.clone(),
                )),
            );
        }
    }

    /// Sends one notification to `channel` now, outside its queue (`alerts test`).
    pub async fn send_now(&self, channel: &Channel, notification: &Notification) -> Sent {
        send(&self.http, channel, notification).await
    }
}

/// POSTs one notification.
async fn send(http: &reqwest::Client, channel: &Channel, notification: &Notification) -> Sent {
    let message = message::render(
        notification,
        channel.format,
        channel.secret.as_ref(),
        plugin_kit::clock::now_secs(),
    );
    let mut request = http.post(&channel.url).body(message.body);
    for (name, value) in message.headers {
        request = request.header(name, value);
    }
    match request.send().await {
        Ok(response) if response.status().is_success() => {
            Sent::Delivered(response.status().as_u16())
        }
        Ok(response) => Sent::Failed(format!("the receiver answered {}", response.status())),
        Err(err) => Sent::Failed(format!("cannot reach the receiver: {}", err.without_url())),
    }
}

/// The wait after `failures` failed attempts: doubling from 250 ms to `max`, the
/// upper half at random.
fn backoff(failures: u32, max: Duration) -> Duration {
    let bound = Duration::from_millis(250)
        .saturating_mul(2u32.saturating_pow(failures.min(16)))
        .min(max.max(Duration::from_millis(250)));
    bound / 2 + (bound / 2).mul_f64(rand::random::<f64>())
}

/// Waits for `duration`, a wake-up, or the stop; false on stop.
async fn pause(duration: Duration, wake: &Notify, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        () = tokio::time::sleep(duration) => true,
        () = wake.notified() => true,
        _ = stop.wait_for(|stop| *stop) => false,
    }
}

async fn channel_task(
    alerts: Arc<AlertStore>,
    http: reqwest::Client,
    channel: Channel,
    wake: Arc<Notify>,
    status: Arc<Mutex<HashMap<String, ChannelStatus>>>,
    retry_max: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let queue = channel.key.queue();
    let update = |change: &dyn Fn(&mut ChannelStatus)| {
        let mut all = status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        change(all.entry(queue.clone()).or_default());
    };
    let mut failures = 0u32;
    loop {
        let next = {
            let alerts = alerts.clone();
            let queue = queue.clone();
            tokio::task::spawn_blocking(move || alerts.next(&queue)).await
        };
        let (key, notification) = match next {
            Ok(Ok(Some(next))) => next,
            Ok(Ok(None)) => {
                if !pause(Duration::from_secs(5), &wake, &mut stop).await {
                    return;
                }
                continue;
            }
            Ok(Err(err)) => {
                tracing::error!(channel = %queue, error = %err, "cannot read the alert queue");
                if !pause(Duration::from_secs(5), &wake, &mut stop).await {
                    return;
                }
                continue;
            }
            Err(_) => return,
        };
        match send(&http, &channel, &notification).await {
            Sent::Delivered(_) => {
                failures = 0;
                if let Err(err) = alerts.delivered(&key) {
                    tracing::error!(channel = %queue, error = %err, "cannot remove a delivered notification from its queue");
                }
                update(&|s| {
                    s.delivered += 1;
                    s.failing_since_ms = None;
                });
            }
            Sent::Failed(why) => {
                failures = failures.saturating_add(1);
                let now = plugin_kit::clock::now_ms();
                update(&|s| {
                    s.failures += 1;
                    s.failing_since_ms.get_or_insert(now);
                    s.last_error = Some(why.clone());
                });
                if failures == 1 || failures.is_power_of_two() {
                    tracing::warn!(channel = %queue, failures, error = %why, "alert notification not delivered; retrying (it stays queued)");
                }
                let wait = backoff(failures, retry_max);
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    _ = stop.wait_for(|stop| *stop) => return,
                }
            }
        }
    }
}

/// The canonical event of a notification (`None` for repeats and tests).
pub fn alert_event(notification: &Notification) -> Option<Result<String, serde_json::Error>> {
    let suffix = match notification.kind {
        NotificationKind::Firing => "firing",
        NotificationKind::Resolved => "resolved",
        NotificationKind::Repeat | NotificationKind::Test => return None,
    };
    let alert = &notification.alert;
    let tenant = alert
        .tenant
        .clone()
        .unwrap_or_else(|| SYSTEM_TENANT.to_owned());
    let time = super::view::rfc3339(notification.created_ms);
    let mut builder = EventBuilder::new(
        format!("com.betalogs.system.integration.alert.{suffix}"),
        Category::System,
        "integrationd/health",
        notification.key.clone(),
        time,
    )
    .severity(alert.severity)
    .subject(format!("alert:{}", alert.id))
    .field("alert.id", alert.id.as_str())
    .field("alert.rule", alert.rule.as_str())
    .field("alert.state", alert.state.as_str())
    .field("alert.summary", alert.summary.as_str());
    if let Some(integration) = &alert.integration {
        builder = builder.field("alert.integration", integration.as_str());
    }
    // Canonical links are absolute URLs; the health API's own paths stay in
    // `original`.
    for link in alert
        .links
        .iter()
        .filter(|l| l.url.starts_with("http://") || l.url.starts_with("https://"))
    {
        builder = builder.link(link.rel.clone(), link.url.as_str());
    }
    Some(builder.original(alert_json(alert)).to_json(&MapContext {
        tenant,
        integration: ALERT_INTEGRATION.to_owned(),
    }))
}

async fn events_task(
    alerts: Arc<AlertStore>,
    pipeline: Arc<Pipeline>,
    wake: Arc<Notify>,
    retry_max: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut failures = 0u32;
    loop {
        let next = {
            let alerts = alerts.clone();
            tokio::task::spawn_blocking(move || alerts.next(EVENTS_QUEUE)).await
        };
        let (key, notification) = match next {
            Ok(Ok(Some(next))) => next,
            Ok(Ok(None)) => {
                if !pause(Duration::from_secs(5), &wake, &mut stop).await {
                    return;
                }
                continue;
            }
            Ok(Err(err)) => {
                tracing::error!(error = %err, "cannot read the alert events queue");
                if !pause(Duration::from_secs(5), &wake, &mut stop).await {
                    return;
                }
                continue;
            }
            Err(_) => return,
        };
        let committed = match alert_event(&notification) {
            None => Ok(()),
            Some(Err(err)) => {
                tracing::error!(error = %err, "cannot build an alert event; dropped");
                Ok(())
            }
            Some(Ok(json)) => {
                let tenant = notification
                    .alert
                    .tenant
                    .clone()
                    .unwrap_or_else(|| SYSTEM_TENANT.to_owned());
                let submission = pipeline.prepare(&tenant, ALERT_INTEGRATION, &[json]);
                if let Some(dead) = submission.dead.first() {
                    tracing::error!(reason = %dead.reason, "an alert event is invalid; it is in the dead-letter queue");
                }
                pipeline.commit(submission).await.map(|_| ())
            }
        };
        match committed {
            Ok(()) => {
                failures = 0;
                if let Err(err) = alerts.delivered(&key) {
                    tracing::error!(error = %err, "cannot remove a committed alert event from its queue");
                }
            }
            Err(err) => {
                failures = failures.saturating_add(1);
                tracing::warn!(error = %err, "cannot commit an alert event; retrying");
                tokio::select! {
                    () = tokio::time::sleep(backoff(failures, retry_max)) => {}
                    _ = stop.wait_for(|stop| *stop) => return,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use plugin_protocol::{Link, Severity};

    use super::*;
    use crate::monitoring::alert::{Alert, AlertState};

    #[test]
    fn alert_events_are_valid_canonical_events_with_deterministic_ids() {
        let notification = Notification {
            key: "abc-1:firing".into(),
            kind: NotificationKind::Firing,
            created_ms: 1_796_000_000_000,
            alert: Alert {
                id: "abc-1".into(),
                fingerprint: "abc".into(),
                rule: "integration_action_required".into(),
                tenant: Some("acme".into()),
                integration: Some("gh".into()),
                subject: None,
                severity: Severity::Error,
                summary: "refused".into(),
                description: String::new(),
                labels: BTreeMap::new(),
                links: vec![Link {
                    rel: "health".into(),
                    url: "/v1/health?tenant=acme&integration=gh".into(),
                    title: None,
                }],
                state: AlertState::Firing,
                pending_since_ms: 0,
                started_at_ms: Some(1),
                resolved_at_ms: None,
                notified_at_ms: Some(1),
                notifications: 1,
            },
        };
        let json = alert_event(&notification).expect("an event").expect("json");
        let value: serde_json::Value = serde_json::from_str(&json).expect("parse");
        let checked = crate::pipeline::EventValidator::new().check(
            &value,
            "acme",
            ALERT_INTEGRATION,
            || json.clone(),
            |_, _| Default::default(),
        );
        assert!(checked.is_ok(), "{checked:?}\n{json}");
        assert_eq!(
            value["type"],
            "com.betalogs.system.integration.alert.firing"
        );
        let again = alert_event(&notification).expect("an event").expect("json");
        let again: serde_json::Value = serde_json::from_str(&again).expect("parse");
        assert_eq!(again["id"], value["id"]);
    }
}
