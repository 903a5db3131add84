//! `Backup`: the whole state, streamed to an operator as it is written.

use std::io::Write;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::peer::Authenticator;
use super::proto;
use crate::pipeline::Pipeline;
use crate::store::AuditDraft;

pub type BackupChunks = Pin<Box<dyn Stream<Item = Result<proto::BackupChunk, Status>> + Send>>;

/// The bytes per message: large enough to keep the socket busy, small enough to stay
/// well under gRPC's default 4 MiB message limit.
const CHUNK_BYTES: usize = 256 * 1024;

/// The backup call, with what it needs.
#[derive(Debug, Clone)]
pub(super) struct BackupCalls {
    pub(super) auth: Authenticator,
    pub(super) pipeline: Arc<Pipeline>,
}

impl BackupCalls {
    pub(super) async fn backup(
        &self,
        request: Request<proto::BackupRequest>,
    ) -> Result<Response<BackupChunks>, Status> {
        let principal = self.auth.operator(&request)?;
        let pipeline = self.pipeline.clone();
        // Recorded first, so the backup holds the record of its own taking.
        let store = pipeline.store().clone();
        let actor = principal.label();
        tokio::task::spawn_blocking(move || {
            store.audit(&AuditDraft::ok(None, &actor, "backup.take", "state", ""))
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| Status::internal(e.to_string()))?;
        let (sender, receiver) = mpsc::channel(4);
        tokio::task::spawn_blocking(move || {
            let mut out = ChunkSender {
                sender: &sender,
                pending: Vec::with_capacity(CHUNK_BYTES),
            };
            match crate::backup::take(&pipeline, &mut out) {
                Ok(summary) => {
                    let manifest_json =
                        serde_json::to_string(&summary.manifest).unwrap_or_default();
                    tracing::info!(
                        bytes = summary.bytes,
                        sha256 = %summary.sha256,
                        paused_ms = summary.manifest.paused_ms,
                        "backup taken"
                    );
                    let _ = sender.blocking_send(Ok(proto::BackupChunk {
                        data: Vec::new(),
                        summary: Some(proto::BackupSummary {
                            bytes: summary.bytes,
                            sha256: summary.sha256,
                            manifest_json,
                        }),
                    }));
                }
                Err(err) => {
                    tracing::error!(error = %err, "a backup failed");
                    let _ = sender
                        .blocking_send(Err(Status::internal(format!("the backup failed: {err}"))));
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(receiver),
        )))
    }
}

/// Sends what is written as chunk messages; fails once the client has gone away, which
/// ends the backup (its spool file goes with it).
struct ChunkSender<'a> {
    sender: &'a mpsc::Sender<Result<proto::BackupChunk, Status>>,
    pending: Vec<u8>,
}

impl ChunkSender<'_> {
    fn send_pending(&mut self) -> std::io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let data = std::mem::replace(&mut self.pending, Vec::with_capacity(CHUNK_BYTES));
        self.sender
            .blocking_send(Ok(proto::BackupChunk {
                data,
                summary: None,
            }))
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away")
            })
    }
}

impl Write for ChunkSender<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let room = CHUNK_BYTES - self.pending.len();
        let taken = buf.len().min(room);
        self.pending.extend_from_slice(&buf[..taken]);
        if self.pending.len() >= CHUNK_BYTES {
            self.send_pending()?;
        }
        Ok(taken)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send_pending()
    }
}
