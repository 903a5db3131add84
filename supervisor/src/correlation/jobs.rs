//! Batch jobs of the correlation index (enrichment runs, rebuilds): one run of a job
//! at a time, however many callers ask.

use std::time::Duration;

use super::Correlator;

impl Correlator {
    /// Marks batch job `key` running until the guard drops, once an earlier run of it
    /// has stopped (an interrupted run finishes its chunk first); `None` when that
    /// takes longer than `wait`.
    pub fn start_job(&self, key: &[u8], wait: Duration) -> Option<JobGuard<'_>> {
        let (running, stopped) = &self.jobs;
        let deadline = std::time::Instant::now() + wait;
        let mut jobs = running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while jobs.contains(key) {
            let left = deadline.checked_duration_since(std::time::Instant::now())?;
            jobs = stopped
                .wait_timeout(jobs, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
        jobs.insert(key.to_vec());
        Some(JobGuard {
            correlator: self,
            key: key.to_vec(),
        })
    }
}

/// A running batch job; dropping it lets the next run of the job start.
#[derive(Debug)]
pub struct JobGuard<'c> {
    correlator: &'c Correlator,
    key: Vec<u8>,
}

impl Drop for JobGuard<'_> {
    fn drop(&mut self) {
        let (running, stopped) = &self.correlator.jobs;
        running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.key);
        stopped.notify_all();
    }
}
