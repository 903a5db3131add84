//! The admin calls on a tenant's dead letters and events. Every call is tenant-scoped:
//! operators name any tenant, a tenant token only its own. Replays and purges are
//! audited; reads are not.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::convert;
use super::peer::Authenticator;
use super::proto;
use crate::correlation::Correlator;
use crate::pipeline::{DeadLetterError, Pipeline};
use crate::store::AuditDraft;
use crate::tenants::Tenants;

/// The stream `Enrich` answers with.
pub type EnrichProgressStream =
    Pin<Box<dyn Stream<Item = Result<proto::EnrichProgress, Status>> + Send>>;

/// The stream `TailEvents` answers with.
pub type EventLines = Pin<Box<dyn Stream<Item = Result<proto::EventLine, Status>> + Send>>;

/// Runs blocking pipeline work off the async threads.
async fn blocking<T: Send + 'static>(
    pipeline: &Arc<Pipeline>,
    work: impl FnOnce(&Pipeline) -> Result<T, Status> + Send + 'static,
) -> Result<T, Status> {
    let pipeline = pipeline.clone();
    tokio::task::spawn_blocking(move || work(&pipeline))
        .await
        .map_err(|e| Status::internal(e.to_string()))?
}

/// The pipeline calls (dead letters, events, enrichment, the index), with the components
/// they need.
#[derive(Debug, Clone)]
pub(super) struct PipelineCalls {
    pub(super) auth: Authenticator,
    pub(super) tenants: Tenants,
    pub(super) pipeline: Arc<Pipeline>,
    pub(super) correlator: Arc<Correlator>,
}

impl PipelineCalls {
    fn require_selection(query: &proto::DeadLetterQuery) -> Result<(), Status> {
        if query.ids.is_empty() && !query.all {
            return Err(Status::invalid_argument(
                "name the dead letters (ids) or ask for all of them (--all)",
            ));
        }
        Ok(())
    }

    pub(super) async fn list_dead_letters(
        &self,
        request: Request<proto::DeadLetterQuery>,
    ) -> Result<Response<proto::ListDeadLettersResponse>, Status> {
        self.auth.for_tenant(&request, &request.get_ref().tenant)?;
        let query = request.into_inner();
        let limit = if query.limit == 0 {
            100
        } else {
            query.limit as usize
        };
        let letters = blocking(&self.pipeline, move |pipeline| {
            pipeline
                .dead_letters(&query.tenant)
                .map_err(|e| Status::internal(e.to_string()))
                .map(|letters| {
                    letters
                        .into_iter()
                        .filter(|l| {
                            query.integration.is_empty() || l.integration == query.integration
                        })
                        .take(limit)
                        .map(|l| convert::dead_letter(l, Some(200)))
                        .collect()
                })
        })
        .await?;
        Ok(Response::new(proto::ListDeadLettersResponse { letters }))
    }

    pub(super) async fn show_dead_letter(
        &self,
        request: Request<proto::DeadLetterRef>,
    ) -> Result<Response<proto::DeadLetter>, Status> {
        self.auth.for_tenant(&request, &request.get_ref().tenant)?;
        let query = request.into_inner();
        let letter = blocking(&self.pipeline, move |pipeline| {
            pipeline
                .dead_letter(&query.tenant, &query.id)
                .map_err(Status::from)
        })
        .await?;
        Ok(Response::new(convert::dead_letter(letter, None)))
    }

    /// A change to selected dead letters (replay, purge): authorized for the tenant,
    /// explicit about what it selects, run off the async threads, audited.
    async fn change_dead_letters<T: Send + 'static>(
        &self,
        request: Request<proto::DeadLetterQuery>,
        action: &str,
        work: impl FnOnce(&Pipeline, &str, &[String]) -> Result<T, DeadLetterError> + Send + 'static,
        summary: impl FnOnce(&T) -> String,
    ) -> Result<T, Status> {
        let principal = self.auth.for_tenant(&request, &request.get_ref().tenant)?;
        let query = request.into_inner();
        Self::require_selection(&query)?;
        let tenant = query.tenant.clone();
        let outcome = blocking(&self.pipeline, move |pipeline| {
            work(pipeline, &query.tenant, &query.ids).map_err(Status::from)
        })
        .await?;
        self.audit_pipeline(&tenant, &principal.label(), action, &summary(&outcome));
        Ok(outcome)
    }

    pub(super) async fn replay_dead_letters(
        &self,
        request: Request<proto::DeadLetterQuery>,
    ) -> Result<Response<proto::ReplayDeadLettersResponse>, Status> {
        let outcome = self
            .change_dead_letters(
                request,
                "dlq.replay",
                |pipeline, tenant, ids| pipeline.replay_dead_letters(tenant, ids),
                |outcome| {
                    format!(
                        "{} stored, {} already stored, {} still invalid",
                        outcome.stored,
                        outcome.duplicates,
                        outcome.still_invalid.len()
                    )
                },
            )
            .await?;
        Ok(Response::new(proto::ReplayDeadLettersResponse {
            stored: u32::try_from(outcome.stored).unwrap_or(u32::MAX),
            duplicates: u32::try_from(outcome.duplicates).unwrap_or(u32::MAX),
            still_invalid: outcome
                .still_invalid
                .into_iter()
                .map(|(id, reason)| format!("{id}: {reason}"))
                .collect(),
        }))
    }

    pub(super) async fn purge_dead_letters(
        &self,
        request: Request<proto::DeadLetterQuery>,
    ) -> Result<Response<proto::PurgeDeadLettersResponse>, Status> {
        let purged = self
            .change_dead_letters(
                request,
                "dlq.purge",
                |pipeline, tenant, ids| pipeline.purge_dead_letters(tenant, ids),
                |purged| format!("{purged} purged"),
            )
            .await?;
        Ok(Response::new(proto::PurgeDeadLettersResponse {
            purged: u32::try_from(purged).unwrap_or(u32::MAX),
        }))
    }

    pub(super) async fn list_deployments(
        &self,
        request: Request<proto::ListDeploymentsRequest>,
    ) -> Result<Response<proto::ListDeploymentsResponse>, Status> {
        self.auth.for_tenant(&request, &request.get_ref().tenant)?;
        let query = request.into_inner();
        let correlator = self.correlator.clone();
        let deployments = blocking(&self.pipeline, move |_| {
            let service = (!query.service.is_empty()).then_some(query.service.as_str());
            correlator
                .deployments(&query.tenant, service)
                .map_err(|e| Status::internal(e.to_string()))
        })
        .await?;
        Ok(Response::new(proto::ListDeploymentsResponse {
            deployments: deployments
                .into_iter()
                .map(|d| proto::DeploymentInfo {
                    service: d.service,
                    environment: d.environment,
                    time_unix_ms: d.time_ms,
                    deployment: d.deployment.unwrap_or_default(),
                    revision: d.revision.unwrap_or_default(),
                    url: d.url.unwrap_or_default(),
                    failures: d.failures,
                    time_to_restore_ms: d.time_to_restore_ms.unwrap_or_default(),
                })
                .collect(),
        }))
    }

    pub(super) async fn rebuild_index(
        &self,
        request: Request<proto::RebuildIndexRequest>,
    ) -> Result<Response<proto::RebuildIndexResponse>, Status> {
        let principal = self.auth.for_tenant(&request, &request.get_ref().tenant)?;
        let tenant = request.into_inner().tenant;
        let for_rebuild = tenant.clone();
        let correlator = self.correlator.clone();
        let summary = blocking(&self.pipeline, move |pipeline| {
            let archives = match pipeline.archive() {
                Some(path) => crate::correlation::rebuild::archive_files(path),
                None => Ok(Vec::new()),
            }
            .map_err(|e| Status::internal(e.to_string()))?;
            crate::correlation::rebuild::rebuild(pipeline, &correlator, &for_rebuild, &archives)
                .map_err(|e| Status::internal(e.to_string()))
        })
        .await?;
        self.audit_pipeline(
            &tenant,
            &principal.label(),
            "index.rebuild",
            &format!(
                "{} events, {} entries, {} failures",
                summary.events, summary.entries, summary.failures
            ),
        );
        Ok(Response::new(proto::RebuildIndexResponse {
            events: summary.events,
            entries: summary.entries,
            failures: summary.failures,
            skipped: summary.skipped,
            files: summary
                .files
                .iter()
                .map(|f| f.display().to_string())
                .collect(),
        }))
    }

    /// Runs batch enrichment on a blocking thread; a client that goes away interrupts
    /// it between chunks (it resumes when asked again).
    pub(super) async fn enrich(
        &self,
        request: Request<proto::EnrichRequest>,
    ) -> Result<Response<EnrichProgressStream>, Status> {
        let principal = self.auth.for_tenant(&request, &request.get_ref().tenant)?;
        let query = request.into_inner();
        if query.to_unix_ms < query.from_unix_ms {
            return Err(Status::invalid_argument(format!(
                "the range ends ({}) before it starts ({})",
                query.to_unix_ms, query.from_unix_ms
            )));
        }
        if !query.dry_run {
            self.audit_pipeline(
                &query.tenant,
                &principal.label(),
                "enrich.batch",
                &format!("from {} to {}", query.from_unix_ms, query.to_unix_ms),
            );
        }
        let (sender, receiver) = tokio::sync::mpsc::channel(16);
        let (pipeline, correlator) = (self.pipeline.clone(), self.correlator.clone());
        tokio::task::spawn_blocking(move || {
            let cancel = std::sync::atomic::AtomicBool::new(false);
            let result = crate::correlation::batch::run(
                &pipeline,
                &correlator,
                crate::correlation::batch::Scope {
                    tenant: &query.tenant,
                    from_ms: query.from_unix_ms,
                    to_ms: query.to_unix_ms,
                    dry_run: query.dry_run,
                },
                &cancel,
                |progress| {
                    if sender
                        .blocking_send(Ok(proto::EnrichProgress::from(progress)))
                        .is_err()
                    {
                        cancel.store(true, std::sync::atomic::Ordering::SeqCst);
                    }
                },
            );
            if let Err(err) = result {
                let _ = sender.blocking_send(Err(Status::aborted(err.to_string())));
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(receiver),
        )))
    }

    pub(super) async fn tail_events(
        &self,
        request: Request<proto::TailEventsRequest>,
    ) -> Result<Response<EventLines>, Status> {
        let principal = self.auth.for_tenant(&request, &request.get_ref().tenant)?;
        let query = request.into_inner();
        let last = if query.last == 0 {
            10
        } else {
            query.last as usize
        };
        let tenant = query.tenant.clone();
        let since = self
            .tenants
            .incarnation(&tenant)
            .map_err(|e| Status::internal(e.to_string()))?
            .since_event_seq;
        let (recent, position) = blocking(&self.pipeline, move |pipeline| {
            pipeline
                .recent_events(&tenant, since, last)
                .map_err(|e| Status::internal(e.to_string()))
        })
        .await?;
        // A tenant's stream lives no longer than its token.
        let token = match principal {
            super::peer::Principal::Tenant(token) => Some(token.id),
            super::peer::Principal::Operator(_) => None,
        };
        let tenants = self.tenants.clone();
        let (sender, receiver) = tokio::sync::mpsc::channel(256);
        let pipeline = self.pipeline.clone();
        let tenant = query.tenant;
        let follow = query.follow;
        tokio::spawn(async move {
            for json in recent {
                if sender.send(Ok(proto::EventLine { json })).await.is_err() {
                    return;
                }
            }
            if !follow {
                return;
            }
            let committed = pipeline.committed();
            let mut position = position;
            loop {
                if let Some(id) = &token
                    && !matches!(tenants.token(id), Ok(Some(_)))
                {
                    let _ = sender
                        .send(Err(Status::unauthenticated(
                            "the token was revoked; the stream ends",
                        )))
                        .await;
                    return;
                }
                let notified = committed.notified();
                let (pipeline2, tenant2) = (pipeline.clone(), tenant.clone());
                let read = tokio::task::spawn_blocking(move || {
                    pipeline2.events_after(&tenant2, position, 64)
                })
                .await;
                let (lines, reached) = match read {
                    Ok(Ok(found)) => found,
                    Ok(Err(err)) => {
                        let _ = sender.send(Err(Status::internal(err.to_string()))).await;
                        return;
                    }
                    Err(_) => return,
                };
                for json in lines {
                    if sender.send(Ok(proto::EventLine { json })).await.is_err() {
                        return;
                    }
                }
                if reached == position {
                    tokio::select! {
                        () = notified => {}
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        () = sender.closed() => return,
                    }
                }
                position = reached;
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(receiver),
        )))
    }

    fn audit_pipeline(&self, tenant: &str, actor: &str, action: &str, detail: &str) {
        let draft = AuditDraft {
            tenant: Some(tenant.to_owned()),
            actor: actor.to_owned(),
            action: action.to_owned(),
            target: tenant.to_owned(),
            outcome: "ok".to_owned(),
            detail: detail.to_owned(),
        };
        if let Err(err) = self.pipeline.store().audit(&draft) {
            tracing::error!(error = %err, action, "cannot audit a pipeline change");
        }
    }
}
