//! What two nodes say during a tenant's move: JSON steps over NATS request/reply, each
//! answered with a [`Reply`]. No I/O here: the steps, how a tenant's entries are cut
//! into pieces that fit a message, and how the receiving side puts pieces together
//! and checks that each entry is the tenant's own.

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};

use crate::store::{AuditRecord, Table};

/// Raw bytes of values in one message at most (base64 and JSON add about a third;
/// NATS's default message limit is 1 MiB).
pub const PIECE_BUDGET: usize = 256 * 1024;

/// The largest value a move takes (a webhook body kept in the inbox is at most 32 MiB).
pub const MAX_VALUE_BYTES: u64 = 64 * 1024 * 1024;

/// Audit records per message at most.
pub const AUDIT_PER_MESSAGE: usize = 200;

/// One step of a move, from the node the tenant leaves to the node it moves to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// The tenant is coming: hold its requests until `Finish` or `Abort`.
    Begin { tenant: String, from: String },
    /// Some of its entries (or parts of one).
    Pieces { tenant: String, pieces: Vec<Piece> },
    /// Some of its audit records, oldest first.
    Audit {
        tenant: String,
        records: Vec<AuditRecord>,
    },
    /// Everything was sent: the tenant exists here from now on.
    Finish {
        tenant: String,
        created_ms: u64,
        incarnation: u64,
        /// Its key record wrapped for this node's master key (base64), if it has one.
        tenant_key: Option<String>,
    },
    /// The move is off: forget what was sent.
    Abort { tenant: String },
}

impl Step {
    pub fn tenant(&self) -> &str {
        match self {
            Step::Begin { tenant, .. }
            | Step::Pieces { tenant, .. }
            | Step::Audit { tenant, .. }
            | Step::Finish { tenant, .. }
            | Step::Abort { tenant } => tenant,
        }
    }
}

/// The answer to a step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    #[serde(default)]
    pub error: Option<String>,
}

impl Reply {
    pub fn ok() -> Self {
        Self {
            ok: true,
            error: None,
        }
    }

    pub fn refused(why: impl Into<String>) -> Self {
        Self {
            ok: false,
            error: Some(why.into()),
        }
    }
}

/// Bytes `offset..offset + bytes.len()` of the value of `key` in `table`, whose
/// whole value is `total` bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Piece {
    pub table: String,
    /// Base64.
    pub key: String,
    pub offset: u64,
    pub total: u64,
    /// Base64.
    pub bytes: String,
}

/// The tables whose keys start with `tenant \0` and hold only that tenant's
/// entries, moved as they are.
pub fn prefixed_tables() -> impl Iterator<Item = Table> {
    crate::pipeline::TENANT_TABLES.into_iter().chain([
        Table::Integrations,
        Table::Credentials,
        Table::Flags,
        Table::AlertChannels,
    ])
}

/// The tables a move writes: the prefixed ones and the tokens.
fn movable(name: &str) -> Option<Table> {
    prefixed_tables()
        .chain([Table::Tokens])
        .find(|table| table.tree_name() == name)
}

/// Cuts entries into messages of about [`PIECE_BUDGET`] bytes of values each; a value
/// larger than that goes in several pieces.
#[derive(Debug, Default)]
pub struct Cutter {
    ready: Vec<Vec<Piece>>,
    current: Vec<Piece>,
    bytes: usize,
}

impl Cutter {
    pub fn push(&mut self, table: Table, key: &[u8], value: &[u8]) {
        let total = value.len() as u64;
        let mut offset = 0;
        loop {
            let room = PIECE_BUDGET.saturating_sub(self.bytes).max(1);
            let end = (offset + room).min(value.len());
            self.current.push(Piece {
                table: table.tree_name().to_owned(),
                key: BASE64.encode(key),
                offset: offset as u64,
                total,
                bytes: BASE64.encode(&value[offset..end]),
            });
            self.bytes += end - offset + key.len();
            if self.bytes >= PIECE_BUDGET {
                self.ready.push(std::mem::take(&mut self.current));
                self.bytes = 0;
            }
            offset = end;
            if offset >= value.len() {
                return;
            }
        }
    }

    /// Messages that are full.
    pub fn take_ready(&mut self) -> Vec<Vec<Piece>> {
        std::mem::take(&mut self.ready)
    }

    /// Every message left, the last one partly full.
    pub fn finish(mut self) -> Vec<Vec<Piece>> {
        if !self.current.is_empty() {
            self.ready.push(self.current);
        }
        self.ready
    }
}

/// An entry, put together from its pieces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Whole {
    pub table: Table,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

/// Why a piece was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PieceError {
    #[error("table `{0}` is not one a move writes")]
    Table(String),
    #[error("a key or value of table `{table}` is not base64")]
    Encoding { table: String },
    #[error("a key of table `{table}` is not tenant `{tenant}`'s")]
    NotTheTenants { table: String, tenant: String },
    #[error("a value of table `{table}` is {total} bytes, over the {MAX_VALUE_BYTES} a move takes")]
    TooLarge { table: String, total: u64 },
    #[error("a piece of table `{table}` starts at {offset}, not where the value stands ({at})")]
    OutOfOrder { table: String, offset: u64, at: u64 },
    #[error("a piece of table `{table}` runs past the value's {total} bytes")]
    Overrun { table: String, total: u64 },
}

/// Puts one tenant's pieces together, checking each is its own.
#[derive(Debug)]
pub struct Assembler {
    tenant: String,
    partial: HashMap<(Table, Vec<u8>), Vec<u8>>,
}

impl Assembler {
    pub fn new(tenant: &str) -> Self {
        Self {
            tenant: tenant.to_owned(),
            partial: HashMap::new(),
        }
    }

    /// Takes a piece; returns the entry when it is whole.
    pub fn take(&mut self, piece: &Piece) -> Result<Option<Whole>, PieceError> {
        let table = movable(&piece.table).ok_or_else(|| PieceError::Table(piece.table.clone()))?;
        let encoding = || PieceError::Encoding {
            table: piece.table.clone(),
        };
        let key = BASE64.decode(&piece.key).map_err(|_| encoding())?;
        let bytes = BASE64.decode(&piece.bytes).map_err(|_| encoding())?;
        if table != Table::Tokens && !key.starts_with(format!("{}\0", self.tenant).as_bytes()) {
            return Err(PieceError::NotTheTenants {
                table: piece.table.clone(),
                tenant: self.tenant.clone(),
            });
        }
        if piece.total > MAX_VALUE_BYTES {
            return Err(PieceError::TooLarge {
                table: piece.table.clone(),
                total: piece.total,
            });
        }
        let slot = (table, key);
        let at = self.partial.get(&slot).map_or(0, |v| v.len() as u64);
        if piece.offset != at {
            return Err(PieceError::OutOfOrder {
                table: piece.table.clone(),
                offset: piece.offset,
                at,
            });
        }
        if at + bytes.len() as u64 > piece.total {
            return Err(PieceError::Overrun {
                table: piece.table.clone(),
                total: piece.total,
            });
        }
        if at + bytes.len() as u64 == piece.total {
            let mut value = self.partial.remove(&slot).unwrap_or_default();
            value.extend_from_slice(&bytes);
            let (table, key) = slot;
            return Ok(Some(Whole { table, key, value }));
        }
        self.partial
            .entry(slot)
            .or_default()
            .extend_from_slice(&bytes);
        Ok(None)
    }

    /// Whether a value is still missing pieces.
    pub fn incomplete(&self) -> bool {
        !self.partial.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assemble(tenant: &str, messages: &[Vec<Piece>]) -> Result<Vec<Whole>, PieceError> {
        let mut assembler = Assembler::new(tenant);
        let mut out = Vec::new();
        for message in messages {
            for piece in message {
                out.extend(assembler.take(piece)?);
            }
        }
        assert!(!assembler.incomplete());
        Ok(out)
    }

    #[test]
    fn entries_small_and_larger_than_a_message_arrive_whole() {
        let big: Vec<u8> = (0..PIECE_BUDGET * 2 + 17)
            .map(|i| (i % 251) as u8)
            .collect();
        let mut cutter = Cutter::default();
        cutter.push(Table::DeadLetters, b"acme\0one", b"small");
        cutter.push(Table::Inbox, b"acme\0gh\0big", &big);
        cutter.push(Table::Tokens, b"0123456789ab", b"{}");
        cutter.push(Table::Flags, b"acme\0", b"");
        let mut messages = cutter.take_ready();
        messages.extend(cutter.finish());
        assert!(messages.len() >= 3, "the big value spans messages");
        for message in &messages {
            let raw: usize = message
                .iter()
                .map(|p| BASE64.decode(&p.bytes).expect("b64").len())
                .sum();
            assert!(raw <= PIECE_BUDGET, "{raw}");
        }
        let wholes = assemble("acme", &messages).expect("assembled");
        let values: Vec<_> = wholes.iter().map(|w| (w.table, w.value.len())).collect();
        assert_eq!(
            values,
            [
                (Table::DeadLetters, 5),
                (Table::Inbox, big.len()),
                (Table::Tokens, 2),
                (Table::Flags, 0)
            ]
        );
        assert_eq!(wholes[1].value, big);
    }

    fn piece(table: &str, key: &[u8], offset: u64, total: u64, bytes: &[u8]) -> Piece {
        Piece {
            table: table.to_owned(),
            key: BASE64.encode(key),
            offset,
            total,
            bytes: BASE64.encode(bytes),
        }
    }

    #[test]
    fn pieces_that_are_not_the_tenants_or_do_not_fit_are_refused_naming_why() {
        let mut assembler = Assembler::new("acme");
        let cases = [
            (
                piece("tenants", b"acme", 0, 1, b"x"),
                PieceError::Table("tenants".into()),
            ),
            (
                piece("credentials.tenant_keys", b"tenant\0acme", 0, 1, b"x"),
                PieceError::Table("credentials.tenant_keys".into()),
            ),
            (
                piece("pipeline.dlq", b"globex\0x", 0, 1, b"x"),
                PieceError::NotTheTenants {
                    table: "pipeline.dlq".into(),
                    tenant: "acme".into(),
                },
            ),
            (
                piece("pipeline.dlq", b"acmeco\0x", 0, 1, b"x"),
                PieceError::NotTheTenants {
                    table: "pipeline.dlq".into(),
                    tenant: "acme".into(),
                },
            ),
            (
                piece("pipeline.inbox", b"acme\0x", 0, MAX_VALUE_BYTES + 1, b"x"),
                PieceError::TooLarge {
                    table: "pipeline.inbox".into(),
                    total: MAX_VALUE_BYTES + 1,
                },
            ),
            (
                piece("pipeline.inbox", b"acme\0x", 5, 10, b"x"),
                PieceError::OutOfOrder {
                    table: "pipeline.inbox".into(),
                    offset: 5,
                    at: 0,
                },
            ),
            (
                piece("pipeline.inbox", b"acme\0x", 0, 1, b"xy"),
                PieceError::Overrun {
                    table: "pipeline.inbox".into(),
                    total: 1,
                },
            ),
        ];
        for (piece, expected) in cases {
            assert_eq!(assembler.take(&piece), Err(expected));
        }
        let mut bad = piece("pipeline.dlq", b"acme\0x", 0, 1, b"x");
        bad.bytes = "not base64!".into();
        assert_eq!(
            assembler.take(&bad),
            Err(PieceError::Encoding {
                table: "pipeline.dlq".into()
            })
        );
        assert!(!assembler.incomplete());
    }

    #[test]
    fn steps_round_trip_as_tagged_json() {
        let step = Step::Begin {
            tenant: "acme".into(),
            from: "a".into(),
        };
        let text = serde_json::to_string(&step).expect("json");
        assert_eq!(text, r#"{"step":"begin","tenant":"acme","from":"a"}"#);
        assert_eq!(serde_json::from_str::<Step>(&text).expect("step"), step);
        assert!(serde_json::from_str::<Step>(r#"{"step":"explode"}"#).is_err());
    }
}
