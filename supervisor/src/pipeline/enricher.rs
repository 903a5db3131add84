//! What the pipeline asks of enrichment. The pipeline defines this port and calls it;
//! the correlation index implements it, and the daemon hands the pipeline one, built
//! complete, when it opens it. So the pipeline never imports enrichment, and a pipeline
//! without enrichment (tests, benchmarks, `enrichment.enabled = false`) is the same code
//! with [`NoEnrichment`].

use serde_json::Value;

use crate::store::Table;

/// One write to the correlation index: table, key, value. Written in the transaction
/// that stores the event it came from.
pub type IndexWrite = (Table, Vec<u8>, Vec<u8>);

/// What enriching one valid event produced.
#[derive(Debug, Default)]
pub struct Correlated {
    /// Index writes to commit with the event.
    pub writes: Vec<IndexWrite>,
    /// The event as it is to be stored, when enrichment changed it.
    pub enriched: Option<String>,
    /// Earlier failures this event revises (a late deployment), to store and deliver.
    pub revisions: Vec<Revision>,
}

/// A new revision of a stored event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revision {
    pub id: String,
    pub revision: u64,
    pub time_ms: u64,
    pub json: String,
    /// The failure's key in [`Table::Failures`]: written with the revision, only if
    /// the revision is stored.
    pub key: Vec<u8>,
}

/// A revision the committer did not store because another one of the same failure was
/// stored first: the failure is to be enriched again from what is stored now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superseded {
    pub tenant: String,
    /// The failure's key in [`Table::Failures`].
    pub key: Vec<u8>,
    /// The revision that is stored.
    pub revision: u64,
    pub time_ms: u64,
}

/// Enrichment, as the pipeline sees it.
pub trait Enricher: Send + Sync + std::fmt::Debug {
    /// Looks at one valid event of `tenant` while its submission is prepared (any
    /// thread, before the commit): what to index with it and how to store it.
    fn correlate(&self, tenant: &str, event: &Value, time_ms: u64) -> Correlated;

    /// A revision lost a race (see [`Superseded`]). Must not block.
    fn superseded(&self, revision: Superseded);

    /// `tenant` was deleted: forget what was read of its entries.
    fn forget_tenant(&self, tenant: &str);
}

/// No enrichment: events are stored as they came and nothing is indexed.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoEnrichment;

impl Enricher for NoEnrichment {
    fn correlate(&self, _: &str, _: &Value, _: u64) -> Correlated {
        Correlated::default()
    }

    fn superseded(&self, _: Superseded) {}

    fn forget_tenant(&self, _: &str) {}
}
