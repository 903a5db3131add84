//! Moving a database written by an older build forward, one format at a time.
//!
//! Each step is idempotent (a crash after a step but before its format is recorded runs
//! it again) and records its format once done, so an interrupted upgrade resumes where
//! it stopped. A new database is written at [`super::FORMAT_VERSION`] directly by
//! [`initialize`]; every step must leave an old database exactly as `initialize` would
//! have made it. `backup/fixtures/state-format-1.backup` is a state written by the format-1
//! build, kept to prove that.

use super::{FORMAT_KEY, FORMAT_VERSION, StoreError};

/// The default tree's key of the state's id.
pub(super) const STATE_ID_KEY: &[u8] = b"state_id";

/// One format change.
struct Step {
    /// The format it starts from; it ends at `from + 1`.
    from: u32,
    /// What it does, for the log and the audit trail.
    what: &'static str,
    run: fn(&sled::Db) -> Result<(), StoreError>,
}

const STEPS: &[Step] = &[Step {
    from: 1,
    what: "give the state an id (kept by backups and restores)",
    run: add_state_id,
}];

/// What a database needs beyond its trees when it is created at the current format.
pub(super) fn initialize(db: &sled::Db) -> Result<(), StoreError> {
    add_state_id(db)?;
    db.insert(FORMAT_KEY, &FORMAT_VERSION.to_be_bytes())?;
    db.flush()?;
    Ok(())
}

/// Runs the steps from `found` up to [`FORMAT_VERSION`]; returns what each did, in order.
pub(super) fn migrate(db: &sled::Db, found: u32) -> Result<Vec<String>, StoreError> {
    let mut done = Vec::new();
    for version in found..FORMAT_VERSION {
        let step = STEPS
            .iter()
            .find(|step| step.from == version)
            .ok_or_else(|| StoreError::Corrupt {
                key: "format_version".to_owned(),
                reason: format!("no migration from format {version}"),
            })?;
        (step.run)(db)?;
        db.insert(FORMAT_KEY, &(version + 1).to_be_bytes())?;
        db.flush()?;
        tracing::info!(
            from = version,
            to = version + 1,
            step = step.what,
            "migrated the state database"
        );
        done.push(format!(
            "format {version} to {}: {}",
            version + 1,
            step.what
        ));
    }
    Ok(done)
}

/// Format 2: every state has a random id.
fn add_state_id(db: &sled::Db) -> Result<(), StoreError> {
    if db.get(STATE_ID_KEY)?.is_none() {
        let id: [u8; 16] = rand::random();
        db.insert(STATE_ID_KEY, hex::encode(id).as_bytes())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_format_below_the_current_one_has_a_step() {
        for version in 1..FORMAT_VERSION {
            assert!(
                STEPS.iter().any(|step| step.from == version),
                "no step from format {version}"
            );
        }
    }

    #[test]
    fn a_step_run_twice_changes_nothing_the_second_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = sled::Config::new()
            .path(dir.path().join("db"))
            .open()
            .expect("db");
        add_state_id(&db).expect("once");
        let first = db.get(STATE_ID_KEY).expect("get");
        add_state_id(&db).expect("twice");
        assert_eq!(db.get(STATE_ID_KEY).expect("get"), first);
        assert_eq!(first.map(|id| id.len()), Some(32));
    }
}
