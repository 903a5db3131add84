//! The JSONL file sink: one canonical event per line, in outbox order, rotated by size.
//! Lines are written and synced before the sink's offset is committed; after a crash
//! between the two, the ids in the file's tail tell which entries were already written,
//! so no line is ever written twice. A torn last line is cut off first.

use std::collections::HashSet;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::pipeline::{Pipeline, ReadError};
use crate::store::StoreError;

/// How much of the file's end is read, at least, to recognise already-written events.
const TAIL_BYTES: u64 = 4 * 1024 * 1024;
/// Commits written per step at most; the offset is committed after each step.
const COMMITS_PER_STEP: usize = 1024;
/// The lines of one step at most (a single larger commit is a step of its own).
const STEP_BYTES: u64 = 8 * 1024 * 1024;
/// The least time between two deliveries. Each step costs a `fdatasync` and a durable
/// offset write whatever its size; under many small commits (webhook deliveries, a
/// handful of events each) delivering after every one, 16 commits a step, cost the
/// daemon about 7% more CPU on the push path (`webhook-bench`). A line reaches the file
/// at most this much later; the events are durable in the log meanwhile.
const WRITE_SPACING: Duration = Duration::from_millis(20);
/// The sink's name for its offset.
const SINK_NAME: &str = "jsonl";

/// Sink errors.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("JSONL sink {path}: {cause}")]
    Io { path: String, cause: std::io::Error },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Read(#[from] ReadError),
}

/// The JSONL sink.
#[derive(Debug)]
pub struct JsonlSink {
    path: PathBuf,
    max_bytes: u64,
    pipeline: Arc<Pipeline>,
}

#[derive(serde::Deserialize)]
struct IdOnly {
    id: String,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> SinkError + '_ {
    move |source| SinkError::Io {
        path: path.display().to_string(),
        cause: source,
    }
}

impl JsonlSink {
    pub fn new(path: PathBuf, max_bytes: u64, pipeline: Arc<Pipeline>) -> Self {
        Self {
            path,
            max_bytes,
            pipeline,
        }
    }

    fn offset(&self) -> Result<u64, SinkError> {
        Ok(self.pipeline.sink_offset(SINK_NAME)?)
    }

    /// Cuts a torn last line and returns the ids of the complete lines in the tail. The
    /// tail read covers the step after the committed offset, whatever its size: those
    /// are the only lines a crash can have left written but not committed.
    fn recover(&self) -> Result<HashSet<String>, SinkError> {
        let offset = self.offset()?;
        let pending: u64 = self
            .step_after(offset)?
            .iter()
            .map(|(_, lines)| lines.len() as u64)
            .sum();
        let window = TAIL_BYTES.max(pending);
        let mut ids = HashSet::new();
        let Ok(mut file) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.path)
        else {
            return Ok(ids);
        };
        let length = file.metadata().map_err(io(&self.path))?.len();
        let start = length.saturating_sub(window);
        file.seek(SeekFrom::Start(start)).map_err(io(&self.path))?;
        let mut tail = Vec::new();
        file.read_to_end(&mut tail).map_err(io(&self.path))?;
        let complete = tail.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
        if complete < tail.len() {
            file.set_len(start + complete as u64)
                .map_err(io(&self.path))?;
            file.sync_all().map_err(io(&self.path))?;
            tracing::warn!(path = %self.path.display(), "cut a torn last line from the JSONL sink");
        }
        for line in tail[..complete].split(|b| *b == b'\n') {
            if let Ok(event) = serde_json::from_slice::<IdOnly>(line) {
                ids.insert(event.id);
            }
        }
        Ok(ids)
    }

    /// Delivers until `stop` turns true, at most once every [`WRITE_SPACING`].
    pub async fn run(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let committed = self.pipeline.committed();
        // Only the lines written before a crash can repeat: read the tail once, at start.
        let mut already = match tokio::task::block_in_place(|| self.recover()) {
            Ok(ids) => ids,
            Err(err) => {
                tracing::error!(error = %err, "cannot read the JSONL sink's tail");
                HashSet::new()
            }
        };
        // Ready at once when the last delivery is older than the spacing.
        let mut spacing = tokio::time::interval(WRITE_SPACING);
        spacing.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = spacing.tick() => {}
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        return;
                    }
                }
            }
            // Listening before reading: a commit made during the read wakes the wait.
            let notified = committed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let sink = &self;
            let written = tokio::task::block_in_place(|| sink.deliver(&mut already));
            match written {
                Ok(0) => {}
                Ok(events) => {
                    self.pipeline.sink_health().delivered(SINK_NAME, events);
                    continue;
                }
                Err(err) => {
                    self.pipeline
                        .sink_health()
                        .failed(SINK_NAME, &err.to_string());
                    tracing::error!(error = %err, "JSONL sink failed; retrying");
                }
            }
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        return;
                    }
                }
            }
        }
    }

    /// The commits of the step after `offset`.
    fn step_after(&self, offset: u64) -> Result<Vec<(u64, Vec<u8>)>, SinkError> {
        Ok(self
            .pipeline
            .outbox_within(offset, COMMITS_PER_STEP, STEP_BYTES)?)
    }

    /// Recovers the file's tail, then writes everything committed since the offset.
    pub fn deliver_available(&self) -> Result<usize, SinkError> {
        let mut already = self.recover()?;
        self.deliver(&mut already)
    }

    /// Writes everything committed since the offset, skipping `already` written ids;
    /// returns how many events it passed.
    fn deliver(&self, already: &mut HashSet<String>) -> Result<usize, SinkError> {
        let mut offset = self.offset()?;
        let mut total = 0;
        // Opened at the first step with lines, kept for the next ones until a rotation.
        let mut file = None;
        loop {
            let entries = self.step_after(offset)?;
            let Some(&(last, _)) = entries.last() else {
                return Ok(total);
            };
            let out = match &mut file {
                Some(open) => open,
                None => file.insert(self.open()?),
            };
            let mut buffer = Vec::with_capacity(entries.iter().map(|(_, lines)| lines.len()).sum());
            for (_, lines) in &entries {
                if already.is_empty() {
                    buffer.extend_from_slice(lines);
                    continue;
                }
                for line in lines.split_inclusive(|b| *b == b'\n') {
                    let id = serde_json::from_slice::<IdOnly>(line)
                        .map(|e| e.id)
                        .unwrap_or_default();
                    if !already.remove(&id) {
                        buffer.extend_from_slice(line);
                    }
                }
            }
            out.write_all(&buffer).map_err(io(&self.path))?;
            out.sync_data().map_err(io(&self.path))?;
            self.pipeline.advance_sink(SINK_NAME, last)?;
            offset = last;
            total += entries
                .iter()
                .map(|(_, lines)| lines.iter().filter(|b| **b == b'\n').count())
                .sum::<usize>();
            already.clear();
            if out.metadata().map_err(io(&self.path))?.len() >= self.max_bytes {
                file = None;
                self.rotate()?;
            }
        }
    }

    /// The file, for appending (its folder made if missing).
    fn open(&self) -> Result<std::fs::File, SinkError> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(io(&self.path))?;
        }
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(io(&self.path))
    }

    fn rotate(&self) -> Result<(), SinkError> {
        let stamp = plugin_kit::clock::now_ms();
        let rotated = self.path.with_extension(format!("jsonl.{stamp}"));
        std::fs::rename(&self.path, &rotated).map_err(io(&self.path))?;
        tracing::info!(path = %rotated.display(), "rotated the JSONL sink");
        Ok(())
    }
}

impl super::Sink for JsonlSink {
    fn name(&self) -> &str {
        SINK_NAME
    }

    fn run(self: Box<Self>, stop: tokio::sync::watch::Receiver<bool>) -> super::SinkRun {
        Box::pin(JsonlSink::run(*self, stop))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::commit::tests_support::event;
    use crate::store::Store;

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn a_crash_after_a_step_larger_than_the_usual_tail_repeats_no_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pipeline =
            Arc::new(Pipeline::open(Store::open(dir.path()).expect("store")).expect("pipeline"));
        let path = dir.path().join("sinks/events.jsonl");
        JsonlSink::new(path.clone(), u64::MAX, pipeline.clone())
            .deliver_available()
            .expect("deliver");
        // One commit bigger than TAIL_BYTES (a platform client's 10,000-event post, say),
        // written whole, then a crash before the offset moved.
        let big: Vec<String> = (0..30_000).map(event).collect();
        pipeline
            .commit_batch("acme", "gh", &big, "big")
            .expect("commit");
        std::fs::create_dir_all(dir.path().join("sinks")).expect("sinks dir");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .expect("open");
        let mut written = 0u64;
        for (_, lines) in pipeline.outbox_after(0, 10).expect("outbox") {
            written += lines.len() as u64;
            file.write_all(&lines).expect("write");
        }
        drop(file);
        assert!(
            written > TAIL_BYTES,
            "{written} bytes: more than the usual tail"
        );

        JsonlSink::new(path.clone(), u64::MAX, pipeline)
            .deliver_available()
            .expect("deliver");
        assert_eq!(lines(&path).len(), 30_000, "every line once");
    }

    #[test]
    fn writes_each_event_once_even_after_a_crash_between_write_and_offset() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pipeline =
            Arc::new(Pipeline::open(Store::open(dir.path()).expect("store")).expect("pipeline"));
        let path = dir.path().join("sinks/events.jsonl");
        let sink = JsonlSink::new(path.clone(), u64::MAX, pipeline.clone());
        pipeline
            .commit_batch("acme", "gh", &[event(1), event(2)], "2")
            .expect("commit");
        assert_eq!(sink.deliver_available().expect("deliver"), 2);
        assert_eq!(lines(&path).len(), 2);

        // Lines 3 and 4 written, then a crash before the offset moved, and a torn line.
        pipeline
            .commit_batch("acme", "gh", &[event(3), event(4)], "4")
            .expect("commit");
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open");
        for (_, lines) in pipeline.outbox_after(1, 10).expect("outbox") {
            file.write_all(&lines).expect("write");
        }
        write!(file, "{{\"id\":\"torn").expect("torn");
        drop(file);
        pipeline
            .commit_batch("acme", "gh", &[event(5)], "5")
            .expect("commit");

        let sink = JsonlSink::new(path.clone(), u64::MAX, pipeline);
        sink.deliver_available().expect("deliver");
        let written = lines(&path);
        let ids: Vec<String> = written
            .iter()
            .map(|l| {
                serde_json::from_str::<IdOnly>(l)
                    .expect("a complete JSON line")
                    .id
            })
            .collect();
        let unique: HashSet<&String> = ids.iter().collect();
        assert_eq!(ids.len(), 5, "{written:?}");
        assert_eq!(unique.len(), 5, "no event twice");
    }

    #[test]
    fn rotates_by_size() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pipeline =
            Arc::new(Pipeline::open(Store::open(dir.path()).expect("store")).expect("pipeline"));
        let path = dir.path().join("events.jsonl");
        let sink = JsonlSink::new(path.clone(), 10, pipeline.clone());
        pipeline
            .commit_batch("acme", "gh", &[event(1)], "1")
            .expect("commit");
        sink.deliver_available().expect("deliver");
        pipeline
            .commit_batch("acme", "gh", &[event(2)], "2")
            .expect("commit");
        sink.deliver_available().expect("deliver");
        let rotated = std::fs::read_dir(dir.path())
            .expect("dir")
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with("events.jsonl."))
            .count();
        assert_eq!(rotated, 2);
    }
}
