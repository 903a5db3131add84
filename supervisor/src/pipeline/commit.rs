//! Committing events: each submission's valid events (deduplicated by id), its dead
//! letters, its cursor and any writes that must land with them are written in one
//! transaction and flushed before the submitter hears back. Submissions that arrive
//! while a flush is under way are committed together in the next one (group commit), so
//! a flush's cost is shared by every plugin and webhook waiting on it.
//!
//! Validation is the caller's work (`prepare`), on its own thread; the committer only
//! checks ids, assigns the outbox sequence and writes.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use serde::Deserialize;
use tokio::sync::{Notify, oneshot};

use super::dead_letter::DeadLetter;
use super::dedup::{self, DedupWindow};
use super::enricher::{Enricher, Superseded};
use super::keys::cursor_key;
use super::log::EventLog;
use super::validate::Validated;
use crate::store::{Batch, Store, Table};

/// Events committed together at most (more wait for the next flush).
const GROUP_EVENTS: usize = 50_000;

/// What became of a submission.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    pub stored: usize,
    pub duplicates: usize,
    pub dead_lettered: usize,
}

/// Why a submission was not committed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommitError {
    #[error("cannot commit events: {0}")]
    Store(String),
    #[error("the pipeline is shutting down")]
    Stopped,
    #[error(
        "the event log is at its disk quota ({quota} bytes): a sink is not keeping up; nothing was stored"
    )]
    BacklogFull { quota: u64 },
}

/// One unit of work for the committer.
#[derive(Debug, Default)]
pub struct Submission {
    pub tenant: String,
    pub integration: String,
    /// The integration's new collect cursor, if this submission moves it.
    pub cursor: Option<String>,
    pub accepted: Vec<Validated>,
    pub dead: Vec<DeadLetter>,
    /// Other writes that must land with these events (an inbox entry removed, say).
    pub extra: Batch,
}

pub(super) struct Job {
    pub(super) submission: Submission,
    pub(super) reply: oneshot::Sender<Result<BatchOutcome, CommitError>>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").finish_non_exhaustive()
    }
}

/// The revision of the failure stored under `key` in the correlation index, if any (a
/// record that does not say is revision 1; one that cannot be read is taken as absent).
fn stored_revision(store: &Store, key: &[u8]) -> Result<Option<u64>, CommitError> {
    #[derive(Deserialize)]
    struct RevisionOf {
        revision: Option<u64>,
    }
    let raw = store
        .get(Table::Failures, key)
        .map_err(|e| CommitError::Store(e.to_string()))?;
    Ok(raw
        .and_then(|raw| serde_json::from_slice::<RevisionOf>(&raw).ok())
        .map(|of| of.revision.unwrap_or(1)))
}

/// The single writer of events.
pub(super) struct Committer {
    pub(super) store: Store,
    pub(super) log: Arc<EventLog>,
    pub(super) quota: u64,
    pub(super) alerted: std::sync::atomic::AtomicBool,
    pub(super) next_seq: AtomicU64,
    pub(super) committed: Arc<Notify>,
    pub(super) window: Mutex<DedupWindow>,
    pub(super) incarnations: super::incarnation::Incarnations,
    pub(super) dead_letters: Arc<super::dead_letter_bound::DeadLetterBound>,
    /// Where a revision that lost a race goes to be redone (see `commit_group`).
    pub(in crate::pipeline) enricher: Arc<dyn Enricher>,
    /// `PipelineSettings::wedge_while`, the test hook.
    pub(super) wedge_while: Option<std::path::PathBuf>,
}

impl Committer {
    /// Refuses a record that would take the log past its quota; alerts at 80%.
    fn check_quota(&self, adding: u64) -> Result<(), CommitError> {
        let after = self.log.bytes() + adding;
        let near = after >= self.quota / 5 * 4;
        if near != self.alerted.swap(near, Ordering::Relaxed) {
            if near {
                tracing::error!(
                    alert = true,
                    log_bytes = after,
                    quota = self.quota,
                    "the event log is above 80% of its disk quota: a sink is not keeping up"
                );
            } else {
                tracing::info!(
                    log_bytes = after,
                    quota = self.quota,
                    "the event log is back below 80% of its disk quota"
                );
            }
        }
        if after > self.quota {
            return Err(CommitError::BacklogFull { quota: self.quota });
        }
        Ok(())
    }

    pub(super) fn run(&self, jobs: &mpsc::Receiver<Job>) {
        while let Ok(first) = jobs.recv() {
            if let Some(wedge) = &self.wedge_while {
                while wedge.exists() {
                    // The wedge itself: nothing is awaited, the thread is held.
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
            }
            let mut group = vec![first];
            let mut events = group[0].submission.accepted.len();
            while events < GROUP_EVENTS {
                match jobs.try_recv() {
                    Ok(job) => {
                        events += job.submission.accepted.len();
                        group.push(job);
                    }
                    Err(_) => break,
                }
            }
            match self.commit_group(&group) {
                Ok(outcomes) => {
                    self.committed.notify_waiters();
                    for (job, outcome) in group.into_iter().zip(outcomes) {
                        let _ = job.reply.send(Ok(outcome));
                    }
                }
                Err(err) => {
                    if !matches!(err, CommitError::BacklogFull { .. }) {
                        tracing::error!(error = %err, "cannot commit events");
                    }
                    for job in group {
                        let _ = job.reply.send(Err(err.clone()));
                    }
                }
            }
        }
    }

    fn commit_group(&self, group: &[Job]) -> Result<Vec<BatchOutcome>, CommitError> {
        let seq = self.next_seq.load(Ordering::SeqCst);
        let mut window = self
            .window
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut batch = Batch::new();
        let mut lines = Vec::new();
        let mut digests = Vec::new();
        let mut seen = HashSet::new();
        // Revisions of failures taken in this group: failure key → revision.
        let mut revised: HashMap<Vec<u8>, u64> = HashMap::new();
        let mut superseded = Vec::new();
        let mut letters_plan = super::dead_letter_bound::GroupPlan::default();
        let mut outcomes = Vec::with_capacity(group.len());
        for job in group {
            let submission = &job.submission;
            let incarnation = self.incarnations.of(&submission.tenant);
            let mut outcome = BatchOutcome::default();
            for event in &submission.accepted {
                // Revisions are numbered from the stored failure by whoever makes one (a
                // late deployment, the completer, a batch run), each on its own: two made
                // from the same stored revision take the same number, and the later one
                // would be lost with what it added. It is not stored; the completer
                // enriches the failure again from what is stored now.
                let revises = event.revision.zip(event.revised_failure());
                if let Some((revision, key)) = revises {
                    let current = match revised.get(key) {
                        Some(taken) => Some(*taken),
                        None => stored_revision(&self.store, key)?,
                    };
                    if let Some(current) = current.filter(|current| *current >= revision) {
                        outcome.duplicates += 1;
                        superseded.push(Superseded {
                            tenant: submission.tenant.clone(),
                            key: key.to_vec(),
                            revision: current,
                            time_ms: event.time_ms,
                        });
                        continue;
                    }
                }
                let digest = dedup::id_digest(
                    &submission.tenant,
                    incarnation,
                    &submission.integration,
                    &event.dedup_id(),
                );
                if window.contains(digest) || !seen.insert(digest) {
                    outcome.duplicates += 1;
                    continue;
                }
                if let Some((revision, key)) = revises {
                    revised.insert(key.to_vec(), revision);
                }
                for (table, key, value) in &event.writes {
                    batch = batch.put(*table, key.clone(), value.clone());
                }
                lines.extend_from_slice(event.json.as_bytes());
                lines.push(b'\n');
                digests.push(digest);
                outcome.stored += 1;
            }
            let (room, not_kept) = self
                .dead_letters
                .make_room(
                    &self.store,
                    &submission.tenant,
                    submission.dead.len(),
                    &mut letters_plan,
                )
                .map_err(|e| CommitError::Store(e.to_string()))?;
            batch.extend(room);
            // Invalid all the same: reported as dead-lettered, counted as dropped.
            outcome.dead_lettered += not_kept;
            for letter in submission.dead.iter().skip(not_kept) {
                let value = serde_json::to_vec(letter)
                    .map_err(|e| CommitError::Store(format!("dead letter {}: {e}", letter.id)))?;
                batch = batch.put(
                    Table::DeadLetters,
                    format!("{}\0{}", submission.tenant, letter.id),
                    value,
                );
                outcome.dead_lettered += 1;
            }
            if let Some(cursor) = &submission.cursor {
                batch = batch.put(
                    Table::Cursors,
                    cursor_key(&submission.tenant, &submission.integration),
                    cursor.as_bytes().to_vec(),
                );
            }
            batch.extend(submission.extra.clone());
            outcomes.push(outcome);
        }
        let stored = !lines.is_empty();
        let mut location = None;
        if stored {
            self.check_quota(lines.len() as u64)?;
            let appended = self
                .log
                .append(seq, &lines)
                .map_err(|e| CommitError::Store(e.to_string()))?;
            let key = seq.to_be_bytes().to_vec();
            batch = batch
                .put(Table::Events, key.clone(), dedup::encode(&digests))
                .put(Table::Outbox, key, appended.encode());
            location = Some(appended);
        }
        if stored {
            // Ids that leave the window leave the store with this commit.
            for forgotten in window.push(seq, digests) {
                batch = batch.delete(Table::Events, forgotten.to_be_bytes().to_vec());
            }
        }
        if !batch.is_empty()
            && let Err(err) = self.store.apply(&batch)
        {
            if let Some(location) = location {
                if let Err(undo) = self.log.undo(location) {
                    tracing::error!(error = %undo, "cannot take back an uncommitted log record; it is cut at the next start");
                }
                // The window remembered ids that were not stored.
                window.forget_last();
            }
            return Err(CommitError::Store(err.to_string()));
        }
        if stored {
            self.next_seq.store(seq + 1, Ordering::SeqCst);
        }
        self.dead_letters.committed(letters_plan);
        for revision in superseded {
            self.enricher.superseded(revision);
        }
        Ok(outcomes)
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::event;
    use super::*;
    use crate::pipeline::Pipeline;
    use crate::store::Store;

    #[test]
    fn valid_events_flow_invalid_ones_are_dead_lettered_and_repeats_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pipeline = Pipeline::open(Store::open(dir.path()).expect("store")).expect("pipeline");
        let batch = vec![
            event(1),
            "{\"broken\": true}".to_owned(),
            event(2),
            event(2),
        ];
        let outcome = pipeline
            .commit_batch("acme", "gh", &batch, "2")
            .expect("commit");
        assert_eq!(
            outcome,
            BatchOutcome {
                stored: 2,
                duplicates: 1,
                dead_lettered: 1
            }
        );
        assert_eq!(
            pipeline
                .cursor(&crate::names::InstanceKey::new("acme", "gh"))
                .expect("cursor"),
            "2"
        );
        let again = pipeline
            .commit_batch("acme", "gh", &[event(1), event(3)], "3")
            .expect("commit");
        assert_eq!(
            again,
            BatchOutcome {
                stored: 1,
                duplicates: 1,
                dead_lettered: 0
            }
        );
        let outbox = pipeline.outbox_after(0, 10).expect("outbox");
        assert_eq!(
            outbox.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            vec![1, 2],
            "one outbox entry per commit"
        );
        let lines: usize = outbox
            .iter()
            .map(|(_, blob)| blob.iter().filter(|b| **b == b'\n').count())
            .sum();
        assert_eq!(lines, 3);
        let letters = pipeline.dead_letters("acme").expect("dlq");
        assert_eq!(letters.len(), 1);
        assert_eq!(letters[0].stage, "schema");
        assert!(letters[0].payload.contains("broken"));
        assert!(pipeline.dead_letters("globex").expect("dlq").is_empty());
        // Reopened, sequence numbers continue.
        drop(pipeline);
        let pipeline = Pipeline::open(Store::open(dir.path()).expect("store")).expect("pipeline");
        pipeline
            .commit_batch("acme", "gh", &[event(4)], "4")
            .expect("commit");
        assert_eq!(pipeline.outbox_after(2, 10).expect("outbox")[0].0, 3);
    }
}

#[cfg(test)]
mod log_tests {
    use super::tests_support::event;
    use super::*;
    use crate::pipeline::{PLATFORM_INTEGRATION, Pipeline, PipelineSettings};
    use crate::store::Store;

    fn lines(pipeline: &Pipeline, after: u64) -> usize {
        pipeline
            .outbox_after(after, 1000)
            .expect("outbox")
            .iter()
            .map(|(_, record)| record.iter().filter(|b| **b == b'\n').count())
            .sum()
    }

    #[test]
    fn delivered_commits_are_pruned_and_the_sequence_carries_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        let small_segments = PipelineSettings {
            segment_bytes: 1,
            ..PipelineSettings::default()
        };
        let open = || {
            Pipeline::open_with(
                Store::open(dir.path()).expect("store"),
                small_segments.clone(),
                Arc::new(crate::pipeline::NoEnrichment),
            )
            .expect("pipeline")
        };
        let pipeline = open();
        for n in 1..=3 {
            pipeline
                .commit_batch("acme", "gh", &[event(n)], &n.to_string())
                .expect("commit");
        }
        let segments = || {
            std::fs::read_dir(dir.path().join("pipeline/log"))
                .expect("log")
                .count()
        };
        assert_eq!(segments(), 3, "one commit a segment");
        assert_eq!(pipeline.sink_offset("a").expect("offset"), 0);
        assert_eq!(pipeline.sink_offset("b").expect("offset"), 0);
        pipeline.advance_sink("a", 3).expect("advance");
        assert_eq!(lines(&pipeline, 0), 3, "sink b has delivered nothing yet");
        pipeline.advance_sink("b", 2).expect("advance");
        assert_eq!(
            pipeline
                .outbox_after(0, 10)
                .expect("outbox")
                .iter()
                .map(|(seq, _)| *seq)
                .collect::<Vec<_>>(),
            vec![3],
            "what both delivered is gone, the active segment stays"
        );
        assert_eq!(segments(), 1);
        drop(pipeline);
        let pipeline = open();
        assert_eq!(pipeline.sink_offset("b").expect("offset"), 2);
        pipeline
            .commit_batch("acme", "gh", &[event(3), event(4)], "4")
            .expect("commit");
        assert_eq!(pipeline.outbox_after(3, 10).expect("outbox")[0].0, 4);
        assert_eq!(
            lines(&pipeline, 3),
            1,
            "event 3 is still known after a restart"
        );
    }

    #[test]
    fn field_mappings_apply_before_validation_and_their_errors_are_dead_lettered() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pipeline = Pipeline::open(Store::open(dir.path()).expect("store")).expect("pipeline");
        let compile = |rules: serde_json::Value| {
            Arc::new(plugin_kit::FieldMappings::compile(Some(&rules)).expect("rules"))
        };
        pipeline.set_mappings(
            &crate::names::InstanceKey::new("acme", "gh"),
            compile(serde_json::json!([
                {"set": "service.name", "template": "svc-{/n}"},
                {"set": "x", "from": "/absent", "required": true}
            ])),
        );
        let outcome = pipeline
            .commit_batch("acme", "gh", &[event(1)], "1")
            .expect("commit");
        assert_eq!(outcome.dead_lettered, 1);
        let letter = &pipeline.dead_letters("acme").expect("dlq")[0];
        assert_eq!(letter.stage, "mapping");
        assert!(
            letter
                .reason
                .contains("mapping rule 1 (set x from /absent) on event `ev_"),
            "{}",
            letter.reason
        );

        // The mapping fixed, the dead letter replays into a mapped event.
        pipeline.set_mappings(
            &crate::names::InstanceKey::new("acme", "gh"),
            compile(serde_json::json!([{"set": "service.name", "template": "svc-{/n}"}])),
        );
        let replayed = pipeline.replay_dead_letters("acme", &[]).expect("replay");
        assert_eq!(replayed.stored, 1);
        let record = &pipeline.outbox_after(0, 10).expect("outbox")[0].1;
        let stored: serde_json::Value =
            serde_json::from_slice(record.strip_suffix(b"\n").expect("a line")).expect("json");
        assert_eq!(stored["data"]["service.name"], "svc-1");
    }

    #[test]
    fn a_full_log_refuses_commits_and_keeps_what_it_has() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pipeline = Pipeline::open_with(
            Store::open(dir.path()).expect("store"),
            PipelineSettings {
                backlog_quota_bytes: 2000,
                ..PipelineSettings::default()
            },
            Arc::new(crate::pipeline::NoEnrichment),
        )
        .expect("pipeline");
        pipeline
            .commit_batch("acme", "gh", &[event(1)], "1")
            .expect("commit");
        let refused = pipeline
            .commit_batch("acme", "gh", &(2..10).map(event).collect::<Vec<_>>(), "9")
            .expect_err("over quota");
        assert!(matches!(refused, CommitError::BacklogFull { quota: 2000 }));
        assert_eq!(
            pipeline
                .cursor(&crate::names::InstanceKey::new("acme", "gh"))
                .expect("cursor"),
            "1"
        );
        assert_eq!(lines(&pipeline, 0), 1);
    }

    #[test]
    fn a_platform_event_is_the_platform_integrations_and_never_suppresses_another_sources() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pipeline = Pipeline::open(Store::open(dir.path()).expect("store")).expect("pipeline");
        let of = super::tests_support::event_of;
        // A forged event naming the plugin's integration is refused as a platform event.
        let forged: serde_json::Value = serde_json::from_str(&of("gh", 1)).expect("json");
        let submission = pipeline.prepare_platform("acme", &[forged]);
        assert!(submission.accepted.is_empty());
        assert_eq!(submission.dead.len(), 1);
        assert_eq!(submission.dead[0].integration, PLATFORM_INTEGRATION);
        // One posted as the platform's, first, with the very id the plugin's will have.
        let posted: serde_json::Value =
            serde_json::from_str(&of(PLATFORM_INTEGRATION, 1)).expect("json");
        let first = pipeline
            .commit_blocking(pipeline.prepare_platform("acme", &[posted]))
            .expect("commit");
        assert_eq!(first.stored, 1);
        // The plugin's real event is stored all the same: another source, not a repeat.
        let real = pipeline
            .commit_batch("acme", "gh", &[of("gh", 1)], "1")
            .expect("commit");
        assert_eq!((real.stored, real.duplicates), (1, 0));
        let again = pipeline
            .commit_batch("acme", "gh", &[of("gh", 1)], "1")
            .expect("commit");
        assert_eq!(again.duplicates, 1, "a real repeat is still one");
    }

    #[test]
    fn outbox_entries_of_the_format_before_the_log_are_moved_into_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let old = event(1);
        let id = serde_json::from_str::<serde_json::Value>(&old).expect("json")["id"]
            .as_str()
            .expect("id")
            .to_owned();
        store
            .apply(
                &Batch::new()
                    .put(Table::Outbox, 1u64.to_be_bytes().to_vec(), old.clone())
                    .put(
                        Table::Events,
                        format!("acme\0{id}").into_bytes(),
                        1u64.to_be_bytes().to_vec(),
                    ),
            )
            .expect("old format");
        let pipeline = Pipeline::open(store).expect("migrated");
        let records = pipeline.outbox_after(0, 10).expect("outbox");
        assert_eq!(records, vec![(1, format!("{old}\n").into_bytes())]);
        let again = pipeline
            .commit_batch("acme", "gh", &[event(1), event(2)], "2")
            .expect("commit");
        assert_eq!((again.stored, again.duplicates), (1, 1));
    }
}

#[cfg(test)]
pub(crate) mod tests_support {
    use plugin_kit::{Category, EventBuilder, MapContext};

    pub fn event(n: u32) -> String {
        event_of("gh", n)
    }

    /// Event `n` as `integration` of `acme` sends it (the same id whatever the source).
    pub fn event_of(integration: &str, n: u32) -> String {
        let context = MapContext {
            tenant: "acme".into(),
            integration: integration.into(),
        };
        let event = EventBuilder::new(
            "com.betalogs.system.metric",
            Category::System,
            "https://example.com",
            format!("m-{n}"),
            "2026-11-25T10:00:00Z",
        )
        .original(serde_json::json!({"n": n}))
        .build(&context);
        serde_json::to_string(&event).expect("json")
    }
}
