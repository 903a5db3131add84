//! The audit trail: append-only, sequence-numbered, hash-chained records.
//!
//! Record `n` is stored as JSON under its big-endian sequence number and carries the
//! SHA-256 of record `n-1`'s stored bytes; the head (last sequence number and the hash
//! of its bytes) is kept beside it and written in the same transaction. `verify` walks
//! the chain: a modified record breaks the next link, a removed one leaves a gap or a
//! broken link, a reordered pair breaks both, and a truncated tail disagrees with the head.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::StoreError;

/// One audit record as stored and listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub seq: u64,
    pub time_ms: u64,
    /// The tenant concerned; `None` for operator-wide changes.
    pub tenant: Option<String>,
    /// Who: `uid:N`, `token:ID`, `plugin:NAME/TENANT/INTEGRATION`, `daemon`.
    pub actor: String,
    /// What, e.g. `credential.create`, `credential.read`, `tenant.delete`.
    pub action: String,
    /// On what, e.g. `credential:github-token`.
    pub target: String,
    /// `ok`, `denied` or `failed`.
    pub outcome: String,
    /// A readable detail (why, a diff); never a secret.
    pub detail: String,
    /// Hex SHA-256 of the previous record's stored bytes (64 zeros for the first).
    pub prev: String,
}

/// What a caller says about a change; sequence, time and link are added on append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditDraft {
    pub tenant: Option<String>,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub outcome: String,
    pub detail: String,
}

impl AuditDraft {
    /// A successful action.
    pub fn ok(
        tenant: Option<&str>,
        actor: &str,
        action: &str,
        target: &str,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            tenant: tenant.map(str::to_owned),
            actor: actor.to_owned(),
            action: action.to_owned(),
            target: target.to_owned(),
            outcome: "ok".to_owned(),
            detail: detail.into(),
        }
    }

    /// The same draft with another outcome (`denied`, `failed`).
    pub fn with_outcome(mut self, outcome: &str) -> Self {
        self.outcome = outcome.to_owned();
        self
    }
}

/// Where the chain ends: written with every record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Head {
    pub seq: u64,
    pub hash: [u8; 32],
}

pub(super) const HEAD_KEY: &[u8] = b"head";

impl Head {
    pub(super) const GENESIS: Head = Head {
        seq: 0,
        hash: [0; 32],
    };

    pub(super) fn decode(raw: &[u8]) -> Option<Head> {
        let (seq, hash) = raw.split_at_checked(8)?;
        Some(Head {
            seq: u64::from_be_bytes(seq.try_into().ok()?),
            hash: hash.try_into().ok()?,
        })
    }

    pub(super) fn encode(&self) -> [u8; 40] {
        let mut out = [0u8; 40];
        out[..8].copy_from_slice(&self.seq.to_be_bytes());
        out[8..].copy_from_slice(&self.hash);
        out
    }
}

/// Builds the next record after `head`; returns it, its stored bytes and the new head.
pub(super) fn next_record(
    head: Head,
    draft: &AuditDraft,
    time_ms: u64,
) -> Result<(AuditRecord, Vec<u8>, Head), StoreError> {
    let record = AuditRecord {
        seq: head.seq + 1,
        time_ms,
        tenant: draft.tenant.clone(),
        actor: draft.actor.clone(),
        action: draft.action.clone(),
        target: draft.target.clone(),
        outcome: draft.outcome.clone(),
        detail: draft.detail.clone(),
        prev: hex::encode(head.hash),
    };
    let bytes = serde_json::to_vec(&record).map_err(|err| StoreError::Corrupt {
        key: format!("audit {}", record.seq),
        reason: err.to_string(),
    })?;
    let hash = Sha256::digest(&bytes).into();
    let head = Head {
        seq: record.seq,
        hash,
    };
    Ok((record, bytes, head))
}

/// Why the chain does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("audit record {seq} is not readable: {reason}")]
    Unreadable { seq: u64, reason: String },
    #[error(
        "audit record at position {expected} has sequence number {found}: a record was removed or reordered"
    )]
    Gap { expected: u64, found: u64 },
    #[error(
        "audit record {seq} does not link to record {previous}: one of them was modified, or records were reordered"
    )]
    BrokenLink { seq: u64, previous: u64 },
    #[error(
        "the audit chain ends at record {last}, but its head says {head}: records at the end were removed"
    )]
    Truncated { last: u64, head: u64 },
    #[error("the last audit record {seq} does not match the head: it was modified")]
    HeadMismatch { seq: u64 },
    #[error(
        "the audit chain ends at record {last}, but {anchor} records {anchored}: the database lost records or was rolled back"
    )]
    BehindAnchor {
        last: u64,
        anchored: u64,
        anchor: &'static str,
    },
    #[error(
        "audit record {seq} is not the one {anchor} records: the database was rolled back or rewritten"
    )]
    AnchorMismatch { seq: u64, anchor: &'static str },
}

/// An anchor to check the chain against, and where it came from (for the message).
pub(super) type Anchored<'a> = (&'a super::AuditAnchor, &'static str);

/// Only what verification reads.
#[derive(Deserialize)]
struct Link {
    seq: u64,
    prev: String,
}

/// Walks `records` (key, stored bytes) in key order against `head` and `anchors`;
/// returns how many.
pub(super) fn verify_chain(
    records: impl Iterator<Item = Result<(sled::IVec, sled::IVec), sled::Error>>,
    head: Head,
    anchors: &[Anchored<'_>],
) -> Result<Result<u64, ChainError>, StoreError> {
    let mut previous = Head::GENESIS;
    let mut expected_prev = hex::encode(previous.hash);
    for entry in records {
        let (key, value) = entry?;
        let expected = previous.seq + 1;
        let link: Link = match serde_json::from_slice(&value) {
            Ok(link) => link,
            Err(err) => {
                return Ok(Err(ChainError::Unreadable {
                    seq: expected,
                    reason: err.to_string(),
                }));
            }
        };
        let key_seq = <[u8; 8]>::try_from(key.as_ref())
            .map(u64::from_be_bytes)
            .unwrap_or(0);
        if link.seq != expected || key_seq != expected {
            return Ok(Err(ChainError::Gap {
                expected,
                found: link.seq,
            }));
        }
        if link.prev != expected_prev {
            return Ok(Err(ChainError::BrokenLink {
                seq: link.seq,
                previous: previous.seq,
            }));
        }
        previous = Head {
            seq: link.seq,
            hash: Sha256::digest(&value).into(),
        };
        expected_prev = hex::encode(previous.hash);
        if let Some((_, anchor)) = anchors
            .iter()
            .find(|(a, _)| a.seq == link.seq && a.sha256 != expected_prev)
        {
            return Ok(Err(ChainError::AnchorMismatch {
                seq: link.seq,
                anchor,
            }));
        }
    }
    if previous.seq != head.seq {
        return Ok(Err(ChainError::Truncated {
            last: previous.seq,
            head: head.seq,
        }));
    }
    if previous.hash != head.hash {
        return Ok(Err(ChainError::HeadMismatch { seq: previous.seq }));
    }
    // A chain consistent with its head can still be shorter than it was: the anchors
    // outside the database say how far it reached.
    if let Some((ahead, anchor)) = anchors
        .iter()
        .filter(|(a, _)| a.seq > previous.seq)
        .max_by_key(|(a, _)| a.seq)
    {
        return Ok(Err(ChainError::BehindAnchor {
            last: previous.seq,
            anchored: ahead.seq,
            anchor,
        }));
    }
    Ok(Ok(previous.seq))
}
