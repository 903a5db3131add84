//! Reading a tenant's recent events back from the event log (`integrationctl events
//! tail`): the last few still in the log, then each new commit as it lands.

use super::facade::Pipeline;
use super::keys::ReadError;
use crate::store::Table;

#[derive(serde::Deserialize)]
struct TenantOnly<'a> {
    #[serde(borrow)]
    tenant: std::borrow::Cow<'a, str>,
}

/// The lines of `record` that belong to `tenant`.
fn lines_of<'r>(record: &'r [u8], tenant: &'r str) -> impl Iterator<Item = String> + 'r {
    record
        .split(|b| *b == b'\n')
        .filter(move |line| {
            serde_json::from_slice::<TenantOnly>(line).is_ok_and(|event| event.tenant == tenant)
        })
        .map(|line| String::from_utf8_lossy(line).into_owned())
}

impl Pipeline {
    /// Up to `last` of the tenant's latest events still in the log, oldest first, and
    /// the sequence to follow from.
    /// Commits before `since` (the tenant's first sequence: an earlier tenant of the same
    /// name owned what came before) are not read.
    pub fn recent_events(
        &self,
        tenant: &str,
        since: u64,
        last: usize,
    ) -> Result<(Vec<String>, u64), ReadError> {
        let mut newest_first = Vec::new();
        let mut position = 0;
        for entry in self.store().iter_rev(Table::Outbox) {
            let (key, _) = entry?;
            let Some(seq) = <[u8; 8]>::try_from(key.as_slice())
                .ok()
                .map(u64::from_be_bytes)
            else {
                continue;
            };
            position = position.max(seq);
            if newest_first.len() >= last || seq < since {
                break;
            }
            for (_, record) in self.outbox_after(seq - 1, 1)? {
                let lines: Vec<String> = lines_of(&record, tenant).collect();
                newest_first.extend(lines.into_iter().rev());
            }
        }
        newest_first.truncate(last);
        newest_first.reverse();
        Ok((newest_first, position))
    }

    /// The tenant's events committed after sequence `after` (up to `limit` commits),
    /// and the sequence reached.
    pub fn events_after(
        &self,
        tenant: &str,
        after: u64,
        limit: usize,
    ) -> Result<(Vec<String>, u64), ReadError> {
        let mut lines = Vec::new();
        let mut position = after;
        for (seq, record) in self.outbox_after(after, limit)? {
            lines.extend(lines_of(&record, tenant));
            position = seq;
        }
        Ok((lines, position))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[test]
    fn a_tenant_sees_only_its_own_events_latest_last() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pipeline = Pipeline::open(Store::open(dir.path()).expect("store")).expect("pipeline");
        let event = super::super::commit::tests_support::event;
        for n in 1..=3 {
            pipeline
                .commit_batch("acme", "gh", &[event(n)], &n.to_string())
                .expect("commit");
        }
        let (recent, position) = pipeline.recent_events("acme", 0, 2).expect("recent");
        assert_eq!(recent.len(), 2);
        assert!(recent[1].contains("\"n\":3"), "{recent:?}");
        assert!(
            pipeline
                .recent_events("globex", 0, 10)
                .expect("recent")
                .0
                .is_empty()
        );
        pipeline
            .commit_batch("acme", "gh", &[event(4)], "4")
            .expect("commit");
        let (new, reached) = pipeline.events_after("acme", position, 10).expect("after");
        assert_eq!(new.len(), 1);
        assert!(new[0].contains("\"n\":4"));
        assert!(
            pipeline
                .events_after("globex", position, 10)
                .expect("after")
                .0
                .is_empty()
        );
        assert_eq!(
            pipeline
                .events_after("acme", reached, 10)
                .expect("after")
                .0
                .len(),
            0
        );
    }

    #[test]
    fn commits_before_a_tenants_first_sequence_are_not_its_own() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pipeline = Pipeline::open(Store::open(dir.path()).expect("store")).expect("pipeline");
        let event = super::super::commit::tests_support::event;
        pipeline
            .commit_batch("acme", "gh", &[event(1)], "1")
            .expect("commit");
        // `acme` deleted and created again: it starts after the last commit.
        let (recent, position) = pipeline.recent_events("acme", 2, 10).expect("recent");
        assert!(recent.is_empty(), "the old tenant's events: {recent:?}");
        pipeline
            .commit_batch("acme", "gh", &[event(2)], "2")
            .expect("commit");
        let (recent, _) = pipeline.recent_events("acme", 2, 10).expect("recent");
        assert_eq!(recent.len(), 1);
        assert!(recent[0].contains("\"n\":2"), "{recent:?}");
        let (new, _) = pipeline.events_after("acme", position, 10).expect("after");
        assert_eq!(new.len(), 1);
    }
}
