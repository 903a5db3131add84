//! Enriching failures from the index: the deployments before a failure, their suspect
//! commits and pull requests, the alarms firing; and revising failures that a late
//! deployment precedes.

use serde_json::{Value, json};

use super::memo::RECENT_TTL_MS;
use super::records::{self, DeliveryRecord, IndexEntry, key_time, prefix, time_key, time_range};
use super::*;
use crate::pipeline::{Correlated, IndexWrite, Revision};
use crate::store::Table;

impl Correlator {
    /// Index writes, enrichment and revisions for one valid event of `tenant`.
    pub fn correlate(&self, tenant: &str, event: &Value, time_ms: u64) -> Correlated {
        let mut out = Correlated::default();
        if !self.settings.enabled {
            return out;
        }
        let entries = records::index_entries(event, time_ms);
        for entry in &entries {
            out.writes.push(entry.write(tenant));
            match entry {
                IndexEntry::Delivery(d) => {
                    self.recent.forget(|(t, service, environment)| {
                        t == tenant && *service == d.service && *environment == d.environment
                    });
                    // A deployment before another changes what that one shipped.
                    self.recent_suspects.forget(|(t, _)| t == tenant);
                }
                IndexEntry::Commit { .. } | IndexEntry::Pull { .. } => {
                    self.recent_suspects.forget(|(t, _)| t == tenant);
                }
                IndexEntry::Alarm { service, .. } => {
                    self.recent_alarms
                        .forget(|(t, s)| t == tenant && s == service);
                }
                // Read only by the change-failure view: nothing cached to forget.
                IndexEntry::Resolution { .. } => {}
            }
        }
        let failure = records::is_failure(event, self.settings.min_severity);
        if failure && !self.realtime_for(tenant) {
            // Kept as it came, for `enrich` and the change-failure view.
            out.writes
                .extend(failure_write(tenant, event, time_ms, &event.to_string()));
        } else if failure {
            match self.enriched(tenant, event, time_ms, &[]) {
                Ok((enriched, asks)) => {
                    let json = enriched.to_string();
                    out.writes
                        .extend(failure_write(tenant, &enriched, time_ms, &json));
                    let revision = event.get("revision").and_then(Value::as_u64).unwrap_or(1);
                    self.ask(tenant, &enriched, time_ms, revision, asks);
                    out.enriched = Some(json);
                }
                Err(err) => {
                    tracing::error!(tenant, error = %err, "cannot enrich an event; it goes on unenriched");
                    let mut partial = event.clone();
                    mark(
                        &mut partial,
                        Vec::new(),
                        Some(Note::Partial(format!(
                            "the correlation index could not be read: {err}"
                        ))),
                    );
                    out.enriched = Some(partial.to_string());
                }
            }
        }
        let deployments: Vec<&DeliveryRecord> = entries
            .iter()
            .filter_map(|e| match e {
                IndexEntry::Delivery(d) if d.kind == "deployment" => Some(d),
                _ => None,
            })
            .collect();
        for deployment in deployments {
            match self.revise_after(tenant, deployment) {
                Ok(revisions) => out.revisions.extend(revisions),
                Err(err) => {
                    tracing::error!(tenant, error = %err, "cannot revise failures after a late deployment");
                }
            }
        }
        out
    }

    /// `event` with its enrichments (replacing any it had), and what to ask plugins
    /// for once it is stored (see [`Correlator::ask`]).
    pub fn enriched(
        &self,
        tenant: &str,
        event: &Value,
        time_ms: u64,
        pending: &[&DeliveryRecord],
    ) -> Result<(Value, Vec<Ask>), CorrelationError> {
        self.enrich(tenant, event, time_ms, pending, true)
    }

    /// `event` enriched from the index and the plugins' answers at hand (or why they
    /// did not answer), asking nothing more.
    pub fn completed(
        &self,
        tenant: &str,
        event: &Value,
        time_ms: u64,
    ) -> Result<Value, CorrelationError> {
        self.enrich(tenant, event, time_ms, &[], false)
            .map(|(event, _)| event)
    }

    pub(super) fn enrich(
        &self,
        tenant: &str,
        event: &Value,
        time_ms: u64,
        pending: &[&DeliveryRecord],
        asking: bool,
    ) -> Result<(Value, Vec<Ask>), CorrelationError> {
        let mut asks = Vec::new();
        // Why plugins asked earlier did not answer.
        let mut problems = Vec::new();
        let service = records::field(event, "service.name").unwrap_or_default();
        let stated = records::field(event, "deployment.environment");
        let environment = stated.unwrap_or("production");
        let mut enrichments = Vec::new();
        if !service.is_empty() {
            let window = self.window(tenant, service);
            let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
            let deployments =
                self.deployments_before(tenant, service, environment, time_ms, window_ms, pending)?;
            for (rank, deployment) in deployments.iter().enumerate() {
                let age = time_ms.saturating_sub(deployment.time_ms);
                let closeness = 1.0 - 0.5 * (age as f64 / window_ms.max(1) as f64);
                let score = if stated.is_some() {
                    closeness
                } else {
                    closeness * 0.6
                };
                let reason = if stated.is_some() {
                    format!(
                        "deployed {} before, same service and environment",
                        minutes(age)
                    )
                } else {
                    format!(
                        "deployed {} before to {environment}, same service (the event names no environment)",
                        minutes(age)
                    )
                };
                let mut links = Vec::new();
                if let Some(url) = web(deployment.url.as_deref()) {
                    links.push(json!({"rel": "deployment", "url": url}));
                }
                if let Some(url) = web(deployment.commit_url.as_deref()) {
                    links.push(json!({"rel": "commit", "url": url}));
                }
                enrichments.push(json!({
                    "source": self.source(tenant, &deployment.integration),
                    "kind": "deployment",
                    "reason": reason,
                    "score": score.clamp(0.0, 1.0),
                    "links": links,
                    "data": {
                        "event_id": deployment.id,
                        "deployment": deployment.deployment,
                        "environment": deployment.environment,
                        "revision": deployment.revision,
                        "minutes_before": age as f64 / 60_000.0,
                        "newest": rank == 0,
                    }
                }));
                // The suspects of the newest deployment only: older ones' commits were
                // running before without this failure.
                if rank == 0 {
                    let suspects = self.suspects_of(tenant, deployment, pending, time_ms)?;
                    if suspects.is_empty() {
                        self.suspects_elsewhere(
                            tenant,
                            deployment,
                            pending,
                            asking,
                            (&mut enrichments, &mut asks, &mut problems),
                        )?;
                    }
                    for (commit, pull) in suspects.iter() {
                        let mut links = Vec::new();
                        if let Some(url) = web(commit.url.as_deref()) {
                            links.push(json!({"rel": "commit", "url": url}));
                        }
                        if let Some(url) = pull.as_ref().and_then(|p| web(p.url.as_deref())) {
                            links.push(json!({"rel": "pull_request", "url": url}));
                        }
                        let short: String = commit.sha.chars().take(12).collect();
                        enrichments.push(json!({
                            "source": self.source(tenant, &commit.integration),
                            "kind": "suspect_commit",
                            "reason": format!("commit {short} was shipped by the deployment {} before, since the previous one", minutes(age)),
                            "score": if pull.is_some() { 0.6 } else { 0.5 },
                            "links": links,
                            "data": {
                                "sha": commit.sha,
                                "message": commit.message,
                                "author": commit.author,
                                "pull_request": pull.as_ref().and_then(|p| p.number),
                            }
                        }));
                    }
                }
            }
            for alarm in self.firing(tenant, service, time_ms)? {
                let links: Vec<Value> = web(alarm.url.as_deref())
                    .map(|url| json!({"rel": "alarm", "url": url}))
                    .into_iter()
                    .collect();
                enrichments.push(json!({
                    "source": self.source(tenant, &alarm.integration),
                    "kind": "alarm",
                    "reason": format!("alarm {} was in ALARM for {} when this happened (same service)", alarm.name, minutes(time_ms.saturating_sub(alarm.time_ms))),
                    "score": 0.8,
                    "links": links,
                    "data": {"arn": alarm.arn, "event_id": alarm.id, "since_ms": alarm.time_ms}
                }));
            }
        }
        if self.settings.metric_values && !service.is_empty() {
            self.metric_values(
                tenant,
                (service, environment),
                time_ms,
                asking,
                (&mut enrichments, &mut asks, &mut problems),
            );
        }
        let mut enriched = event.clone();
        let note = if service.is_empty() {
            Some(Note::Complete(
                "the event names no service.name: nothing to correlate with".to_owned(),
            ))
        } else {
            let mut reasons: Vec<String> = self.missing_sources(tenant).into_iter().collect();
            reasons.extend(problems);
            if !asks.is_empty() {
                let asked: Vec<String> = asks.iter().map(Ask::describe).collect();
                reasons.push(format!(
                    "asked for {}: a revision follows",
                    asked.join(", ")
                ));
            }
            (!reasons.is_empty()).then(|| Note::Partial(reasons.join("; ")))
        };
        mark(&mut enriched, enrichments, note);
        Ok((enriched, asks))
    }

    /// The suspect commits of `deployment` when the index has none: a plugin's answer
    /// at hand, or an ask of the integration that reported the deployment.
    pub(super) fn suspects_elsewhere(
        &self,
        tenant: &str,
        deployment: &DeliveryRecord,
        pending: &[&DeliveryRecord],
        asking: bool,
        (enrichments, asks, problems): (&mut Vec<Value>, &mut Vec<Ask>, &mut Vec<String>),
    ) -> Result<(), CorrelationError> {
        let (Some(repository), Some(head)) = (&deployment.repository, &deployment.revision) else {
            return Ok(());
        };
        // Nothing to ask (no completer, a plugin that cannot enrich or is down) and
        // nothing answered for this tenant: no lookup of the base either.
        let may_ask = asking && self.can_ask(tenant, &deployment.integration);
        if !may_ask && !self.has_answers(tenant) {
            return Ok(());
        }
        let base = self
            .previous(tenant, deployment, pending)?
            .and_then(|p| p.revision)
            .filter(|base| base != head);
        let key = format!(
            "suspect_commits\0{}\0{repository}\0{}\0{head}",
            deployment.integration,
            base.as_deref().unwrap_or_default()
        );
        match self.answer(tenant, &key) {
            Some(Ok(entries)) => enrichments.extend(entries),
            Some(Err(problem)) => problems.push(problem),
            None if may_ask => {
                let mut data = json!({
                    "enrichment.want": "suspect_commits",
                    "vcs.repository.name": repository,
                    "vcs.ref.head.revision": head,
                    "service.name": deployment.service,
                    "deployment.environment": deployment.environment,
                });
                if let Some(base) = &base {
                    data["vcs.ref.base.revision"] = json!(base);
                }
                asks.push(Ask {
                    integration: deployment.integration.clone(),
                    plugin: self.plugin_of(tenant, &deployment.integration),
                    key,
                    query: query(tenant, deployment.time_ms, data),
                    what: format!(
                        "the suspect commits of deployment {}",
                        deployment.deployment.as_deref().unwrap_or(&deployment.id)
                    ),
                });
            }
            None => {}
        }
        Ok(())
    }

    /// The metric values around `time_ms` for `service`: the answers at hand, and asks
    /// of the tenant's enriching integrations that have not answered.
    pub(super) fn metric_values(
        &self,
        tenant: &str,
        (service, environment): (&str, &str),
        time_ms: u64,
        asking: bool,
        (enrichments, asks, problems): (&mut Vec<Value>, &mut Vec<Ask>, &mut Vec<String>),
    ) {
        for integration in self.enrichers(tenant) {
            let key = format!(
                "metric_values\0{integration}\0{service}\0{environment}\0{}",
                time_ms / 60_000
            );
            match self.answer(tenant, &key) {
                Some(Ok(entries)) => enrichments.extend(entries),
                Some(Err(problem)) => problems.push(problem),
                None if asking => {
                    asks.push(Ask {
                        plugin: self.plugin_of(tenant, &integration),
                        integration,
                        key,
                        query: query(
                            tenant,
                            time_ms,
                            json!({
                                "enrichment.want": "metric_values",
                                "service.name": service,
                                "deployment.environment": environment,
                            }),
                        ),
                        what: "the metric values around the failure".to_owned(),
                    });
                }
                None => {}
            }
        }
    }

    /// Failures after `deployment` within its window, enriched again with it: those
    /// whose enrichments change get a new revision.
    pub(super) fn revise_after(
        &self,
        tenant: &str,
        deployment: &DeliveryRecord,
    ) -> Result<Vec<Revision>, CorrelationError> {
        let window_ms =
            u64::try_from(self.window(tenant, &deployment.service).as_millis()).unwrap_or(u64::MAX);
        let key_prefix = prefix(&[tenant, &deployment.service, &deployment.environment]);
        let (from, to) = time_range(
            &key_prefix,
            deployment.time_ms,
            deployment.time_ms.saturating_add(window_ms),
        );
        let mut out = Vec::new();
        for (key, raw) in self.store.range(Table::Failures, &from, &to, MAX_REVISED)? {
            let Some(time_ms) = key_time(&key, key_prefix.len()) else {
                continue;
            };
            let stored: Value = decode(&raw)?;
            let (enriched, asks) = self.enriched(tenant, &stored, time_ms, &[deployment])?;
            if enriched["data"]["enrichments"] == stored["data"]["enrichments"] {
                continue;
            }
            let revision = stored.get("revision").and_then(Value::as_u64).unwrap_or(1) + 1;
            let mut revised = enriched;
            revised["revision"] = json!(revision);
            self.ask(tenant, &revised, time_ms, revision, asks);
            out.push(Revision {
                id: revised["id"].as_str().unwrap_or_default().to_owned(),
                revision,
                time_ms,
                json: revised.to_string(),
                key,
            });
        }
        Ok(out)
    }
}

/// Whether an event at `time_ms` is realtime (within [`RECENT_TTL_MS`] of now): its
/// lookups may reuse a burst's reads.
pub(super) fn is_realtime(time_ms: u64) -> bool {
    time_ms.saturating_add(RECENT_TTL_MS) >= plugin_kit::clock::now_ms()
}

/// A note on an enrichment: why it is partial, or a remark on a complete one.
enum Note {
    Complete(String),
    Partial(String),
}

/// Sets `data.enrichments` and the status.
fn mark(event: &mut Value, enrichments: Vec<Value>, note: Option<Note>) {
    let Some(data) = event.get_mut("data").and_then(Value::as_object_mut) else {
        return;
    };
    data.insert("enrichments".to_owned(), Value::Array(enrichments));
    let (status, note) = match note {
        None => ("complete", None),
        Some(Note::Complete(note)) => ("complete", Some(note)),
        Some(Note::Partial(note)) => ("partial", Some(note)),
    };
    data.insert("enrichment_status".to_owned(), json!(status));
    match note {
        Some(note) => {
            data.insert("enrichment_note".to_owned(), Value::String(note));
        }
        None => {
            data.remove("enrichment_note");
        }
    }
}

/// The failure's key in [`Table::Failures`]; `None` when a key part would hold the
/// separator.
pub(super) fn failure_key(tenant: &str, event: &Value, time_ms: u64) -> Option<Vec<u8>> {
    let service = records::field(event, "service.name").unwrap_or_default();
    let environment = records::field(event, "deployment.environment").unwrap_or("production");
    if service.contains('\0') || environment.contains('\0') {
        return None;
    }
    let id = event["id"].as_str().unwrap_or_default();
    Some(time_key(&[tenant, service, environment], time_ms, id))
}

/// The failure's entry in [`Table::Failures`].
pub(super) fn failure_write(
    tenant: &str,
    event: &Value,
    time_ms: u64,
    json: &str,
) -> Option<IndexWrite> {
    failure_key(tenant, event, time_ms).map(|key| (Table::Failures, key, json.as_bytes().to_vec()))
}

/// The event an ask sends to a plugin's `Enrich`: the tenant, a time, what is wanted.
pub(super) fn query(tenant: &str, time_ms: u64, data: Value) -> Value {
    let time = plugin_kit::clock::rfc3339_ms(time_ms);
    json!({"tenant": tenant, "time": time, "data": data})
}
