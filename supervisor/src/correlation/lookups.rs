//! Reading the index: deployments before a time, a deployment's suspect commits, the
//! alarms firing, and the change-failure view.

use std::collections::BTreeMap;

use super::enrich::is_realtime;
use super::records::{newest_first_range, prefix, time_range};
use super::*;
use crate::store::Table;

impl Correlator {
    /// Deployments (one per deployment id, at their earliest event) to `service` in
    /// `environment` within `window_ms` before `time_ms`, newest first.
    pub fn deployments_before(
        &self,
        tenant: &str,
        service: &str,
        environment: &str,
        time_ms: u64,
        window_ms: u64,
        pending: &[&DeliveryRecord],
    ) -> Result<Vec<DeliveryRecord>, CorrelationError> {
        let from_ms = time_ms.saturating_sub(window_ms);
        let cache_key = (
            tenant.to_owned(),
            service.to_owned(),
            environment.to_owned(),
        );
        let cached = self.recent.get(&cache_key).filter(|_| pending.is_empty());
        let mut found = match cached {
            // The newest deployments of all are no newer than the event: those in its
            // window are the answer (the usual case: failures follow deployments).
            Some(latest) if latest.iter().all(|d| d.time_ms <= time_ms) => latest
                .iter()
                .filter(|d| d.time_ms >= from_ms)
                .cloned()
                .collect(),
            // An old event (batch enrichment, late data): its window only.
            _ if !is_realtime(time_ms) => {
                let key_prefix = prefix(&[tenant, service, environment]);
                self.read_deployments(&key_prefix, from_ms, time_ms)?
            }
            _ => {
                let key_prefix = prefix(&[tenant, service, environment]);
                let latest = self.read_deployments(&key_prefix, 0, u64::MAX)?;
                let answer = if latest.iter().all(|d| d.time_ms <= time_ms) {
                    latest
                        .iter()
                        .filter(|d| d.time_ms >= from_ms)
                        .cloned()
                        .collect()
                } else {
                    self.read_deployments(&key_prefix, from_ms, time_ms)?
                };
                // Not while a deployment is being indexed: the store does not have
                // it yet.
                if pending.is_empty() {
                    self.recent.put(cache_key, Arc::new(latest));
                }
                answer
            }
        };
        found.extend(
            pending
                .iter()
                .filter(|d| {
                    d.kind == "deployment"
                        && d.service == service
                        && d.environment == environment
                        && d.time_ms <= time_ms
                        && d.time_ms + window_ms >= time_ms
                })
                .map(|d| (*d).clone()),
        );
        Ok(newest_per_deployment(found, MAX_DEPLOYMENTS))
    }

    /// The newest [`MAX_DEPLOYMENTS`] deployments under `key_prefix` with a time in
    /// `from_ms..=to_ms`, each at its events as read, newest first. Reads only until
    /// enough are found (a deployment's created and succeeded events count once).
    pub(super) fn read_deployments(
        &self,
        key_prefix: &[u8],
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<DeliveryRecord>, CorrelationError> {
        let (from, to) = newest_first_range(key_prefix, from_ms, to_ms);
        let mut found: Vec<DeliveryRecord> = Vec::new();
        let mut distinct = std::collections::HashSet::new();
        for entry in self.store.range_iter(Table::Deliveries, &from, &to) {
            let (_, raw) = entry?;
            let record: DeliveryRecord = decode(&raw)?;
            if record.kind != "deployment" {
                continue;
            }
            let key = record
                .deployment
                .clone()
                .unwrap_or_else(|| record.id.clone());
            if distinct.len() == MAX_DEPLOYMENTS && !distinct.contains(&key) {
                break;
            }
            distinct.insert(key);
            found.push(record);
        }
        Ok(found)
    }

    /// The commits `deployment` shipped since the deployment before it, with the pull
    /// requests that merged them.
    pub(super) fn suspects(
        &self,
        tenant: &str,
        deployment: &DeliveryRecord,
        pending: &[&DeliveryRecord],
    ) -> Result<Vec<(CommitRecord, Option<PullRecord>)>, CorrelationError> {
        let Some(repository) = &deployment.repository else {
            return Ok(Vec::new());
        };
        let previous = self.previous(tenant, deployment, pending)?;
        let since = previous.map_or(
            deployment.time_ms.saturating_sub(24 * 60 * 60 * 1000),
            |p| p.time_ms + 1,
        );
        let key_prefix = prefix(&[tenant, repository]);
        let (from, to) = time_range(&key_prefix, since, deployment.time_ms);
        let mut suspects = Vec::new();
        for (_, raw) in self
            .store
            .range_rev(Table::Commits, &from, &to, MAX_SUSPECTS)?
        {
            let commit: CommitRecord = decode(&raw)?;
            let pull = self
                .store
                .get(Table::Pulls, &prefix(&[tenant, repository, &commit.sha]))?
                .map(|raw| decode::<PullRecord>(&raw))
                .transpose()?;
            suspects.push((commit, pull));
        }
        Ok(suspects)
    }

    /// The deployment before `deployment` (another deployment id) to the same service
    /// and environment, however long before.
    pub(super) fn previous(
        &self,
        tenant: &str,
        deployment: &DeliveryRecord,
        pending: &[&DeliveryRecord],
    ) -> Result<Option<DeliveryRecord>, CorrelationError> {
        let key_prefix = prefix(&[tenant, &deployment.service, &deployment.environment]);
        let (from, to) = newest_first_range(&key_prefix, 0, deployment.time_ms);
        let mut candidates: Vec<DeliveryRecord> = Vec::new();
        for entry in self
            .store
            .range_iter(Table::Deliveries, &from, &to)
            .take(64)
        {
            let (_, raw) = entry?;
            let record: DeliveryRecord = decode(&raw)?;
            if record.kind == "deployment" && record.deployment != deployment.deployment {
                candidates.push(record);
                break;
            }
        }
        candidates.extend(
            pending
                .iter()
                .filter(|d| {
                    d.kind == "deployment"
                        && d.service == deployment.service
                        && d.environment == deployment.environment
                        && d.time_ms < deployment.time_ms
                        && d.deployment != deployment.deployment
                })
                .map(|d| (*d).clone()),
        );
        Ok(candidates.into_iter().max_by_key(|d| d.time_ms))
    }

    /// [`Correlator::suspects`], reused for a realtime burst.
    pub(super) fn suspects_of(
        &self,
        tenant: &str,
        deployment: &DeliveryRecord,
        pending: &[&DeliveryRecord],
        time_ms: u64,
    ) -> Result<Suspects, CorrelationError> {
        let reusable = pending.is_empty() && is_realtime(time_ms);
        let key = (
            tenant.to_owned(),
            deployment
                .deployment
                .clone()
                .unwrap_or_else(|| deployment.id.clone()),
        );
        if reusable && let Some(suspects) = self.recent_suspects.get(&key) {
            return Ok(suspects);
        }
        let suspects = Arc::new(self.suspects(tenant, deployment, pending)?);
        if reusable {
            self.recent_suspects.put(key, suspects.clone());
        }
        Ok(suspects)
    }

    /// The alarms of `service` whose last transition at or before `time_ms` is ALARM.
    pub(super) fn firing(
        &self,
        tenant: &str,
        service: &str,
        time_ms: u64,
    ) -> Result<Vec<AlarmRecord>, CorrelationError> {
        let key = (tenant.to_owned(), service.to_owned());
        let reusable = is_realtime(time_ms);
        let transitions = match self.recent_alarms.get(&key).filter(|_| reusable) {
            Some(transitions) => transitions,
            None => {
                let mut read = Vec::new();
                for (_, raw) in self
                    .store
                    .scan(Table::AlarmStates, &prefix(&[tenant, service]))?
                {
                    read.push(decode::<AlarmRecord>(&raw)?);
                }
                let read = Arc::new(read);
                if reusable {
                    self.recent_alarms.put(key, read.clone());
                }
                read
            }
        };
        let mut last: BTreeMap<&str, &AlarmRecord> = BTreeMap::new();
        for record in transitions.iter().filter(|r| r.time_ms <= time_ms) {
            match last.get(record.arn.as_str()) {
                Some(seen) if seen.time_ms > record.time_ms => {}
                _ => {
                    last.insert(&record.arn, record);
                }
            }
        }
        Ok(last
            .into_values()
            .filter(|a| a.state == "ALARM")
            .cloned()
            .collect())
    }

    /// Each deployment of `tenant` (to `service`, if given) with the failures that
    /// list it as the newest deployment before them, newest deployment first.
    pub fn deployments(
        &self,
        tenant: &str,
        service: Option<&str>,
    ) -> Result<Vec<DeploymentView>, CorrelationError> {
        let scope: Vec<&str> = match service {
            Some(service) => vec![tenant, service],
            None => vec![tenant],
        };
        let mut views: Vec<DeploymentView> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut found = Vec::new();
        for (_, raw) in self.store.scan(Table::Deliveries, &prefix(&scope))? {
            let record: DeliveryRecord = decode(&raw)?;
            if record.kind == "deployment" {
                found.push(record);
            }
        }
        for record in newest_per_deployment(found, usize::MAX) {
            let key = record
                .deployment
                .clone()
                .unwrap_or_else(|| record.id.clone());
            index.insert(key, views.len());
            views.push(DeploymentView {
                service: record.service,
                environment: record.environment,
                time_ms: record.time_ms,
                deployment: record.deployment,
                revision: record.revision,
                url: record.url,
                commit_url: record.commit_url,
                failures: Vec::new(),
                evidence: Vec::new(),
                time_to_restore_ms: None,
            });
        }
        for (_, raw) in self.store.scan(Table::Failures, &prefix(&scope))? {
            let failure: Value = decode(&raw)?;
            let newest = failure["data"]["enrichments"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|e| e["kind"] == "deployment" && e["data"]["newest"] == true);
            if let Some(newest) = newest {
                let key = newest["data"]["deployment"]
                    .as_str()
                    .or_else(|| newest["data"]["event_id"].as_str())
                    .unwrap_or_default();
                if let Some(&at) = index.get(key) {
                    let mut evidence = evidence_of(&failure);
                    evidence.resolved = self
                        .resolved_after(tenant, &failure)?
                        .map(plugin_kit::clock::rfc3339_ms);
                    views[at].failures.push(evidence.id.clone());
                    views[at].evidence.push(evidence);
                }
            }
        }
        for view in &mut views {
            view.time_to_restore_ms = time_to_restore(&view.evidence);
        }
        Ok(views)
    }

    /// When the incident or alarm of `failure` (its correlation id) was resolved, if at
    /// or after the failure.
    fn resolved_after(
        &self,
        tenant: &str,
        failure: &Value,
    ) -> Result<Option<u64>, CorrelationError> {
        let Some(correlation) = failure["correlationid"].as_str() else {
            return Ok(None);
        };
        if correlation.contains('\0') {
            return Ok(None);
        }
        let failed_ms = failure["time"]
            .as_str()
            .and_then(plugin_protocol::event_time_ms)
            .unwrap_or(u64::MAX);
        let Some(raw) = self
            .store
            .get(Table::Resolutions, &prefix(&[tenant, correlation]))?
        else {
            return Ok(None);
        };
        let record: super::records::ResolutionRecord = decode(&raw)?;
        Ok((record.time_ms >= failed_ms).then_some(record.time_ms))
    }
}

/// From the first failure to the last resolution, once every failure is resolved.
fn time_to_restore(evidence: &[super::FailureEvidence]) -> Option<u64> {
    let mut first_failure = u64::MAX;
    let mut last_resolution = 0;
    for failure in evidence {
        let failed = plugin_protocol::event_time_ms(&failure.time)?;
        let resolved = plugin_protocol::event_time_ms(failure.resolved.as_deref()?)?;
        first_failure = first_failure.min(failed);
        last_resolution = last_resolution.max(resolved);
    }
    (!evidence.is_empty()).then(|| last_resolution.saturating_sub(first_failure))
}

/// A stored failure event's id, type, time and subject, and every link its
/// enrichments carry, each once.
fn evidence_of(failure: &Value) -> super::FailureEvidence {
    let text = |field: &str| failure[field].as_str().unwrap_or_default().to_owned();
    let mut links: Vec<super::EvidenceLink> = Vec::new();
    let enrichments = failure["data"]["enrichments"]
        .as_array()
        .into_iter()
        .flatten();
    for link in enrichments.flat_map(|e| e["links"].as_array().into_iter().flatten()) {
        let (Some(rel), Some(url)) = (link["rel"].as_str(), link["url"].as_str()) else {
            continue;
        };
        if !links.iter().any(|l| l.url == url && l.rel == rel) {
            links.push(super::EvidenceLink {
                rel: rel.to_owned(),
                url: url.to_owned(),
            });
        }
    }
    super::FailureEvidence {
        id: text("id"),
        kind: text("type"),
        time: text("time"),
        subject: failure["subject"].as_str().map(str::to_owned),
        links,
        resolved: None,
    }
}

/// One record per deployment (its earliest), newest first, at most `limit`.
pub(super) fn newest_per_deployment(
    mut found: Vec<DeliveryRecord>,
    limit: usize,
) -> Vec<DeliveryRecord> {
    found.sort_by_key(|d| d.time_ms);
    let mut seen = std::collections::HashSet::new();
    let mut unique: Vec<DeliveryRecord> = found
        .into_iter()
        .filter(|d| seen.insert(d.deployment.clone().unwrap_or_else(|| d.id.clone())))
        .collect();
    unique.reverse();
    unique.truncate(limit);
    unique
}
