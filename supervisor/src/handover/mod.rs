//! Moving a tenant to another node of the cluster (`integrationctl tenants move NAME
//! --to NODE`), with its whole state: configuration and its history, credentials (the
//! tenant's key wrapped again for the new node's master key; the ciphertexts, encrypted
//! to that key, travel as they are), tokens, flags, alert channels, audit records,
//! cursors, dead letters, the inbox and the correlation index.
//!
//! The order keeps every webhook that arrives meanwhile:
//! 1. the leaving node stops the tenant's integrations (deliveries it can verify wait
//!    in its inbox);
//! 2. `Begin`: the new node holds the tenant's requests from now on;
//! 3. placement points to the new node (compare-and-set), so every node relays there;
//! 4. the leaving node waits for the requests it was handling (the tenant's gate);
//! 5. it sends everything (`Pieces`, `Audit`) and `Finish`: the new node creates the
//!    tenant, lets the held requests through and starts its integrations;
//! 6. the leaving node removes its copy.
//!
//! A failure before 5 ends puts placement back and `Abort`s, and the tenant runs on
//! the leaving node again. A new node that hears nothing for [`IDLE_LIMIT`] during a
//! move aborts it itself and gives placement back. What a move does not take: alerts
//! (each node raises its own) and the deduplication window (a delivery repeated after
//! the move is stored again; the JetStream sink's duplicate window drops the event).

pub mod protocol;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures_util::StreamExt;
use protocol::{AUDIT_PER_MESSAGE, Assembler, Cutter, Reply, Step};

use crate::cluster::{Channel, Cluster, ClusterError, Owner};
use crate::desired::Desired;
use crate::store::{AuditDraft, Batch, Table};
use crate::tenant_removal::{RemovalError, TenantState};
use crate::tenants::TokenInfo;

/// How long the new node waits for the next step before it aborts a move.
pub const IDLE_LIMIT: Duration = Duration::from_secs(60);

/// How long one step may take at the other node.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a move did not happen (the tenant still runs where it ran).
#[derive(Debug, thiserror::Error)]
pub enum MoveError {
    #[error("tenant `{tenant}` is not served by this node: {why}")]
    NotHere { tenant: String, why: String },
    #[error("node `{0}` is this node")]
    SameNode(String),
    #[error("node `{0}` is not alive in the cluster")]
    NodeNotAlive(String),
    #[error("node `{0}` has no master key, so tenant `{1}`'s credentials cannot be moved to it")]
    NoKeyThere(String, String),
    #[error(
        "tenant `{0}` has integrations in this node's configuration file ([[instances]]); configure them on the other node instead"
    )]
    ConfiguredHere(String),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("node `{node}` refused the move: {why}")]
    Peer { node: String, why: String },
    #[error("reading tenant `{tenant}`'s state: {why}")]
    Export { tenant: String, why: String },
    #[error("the tenant moved, but removing this node's copy failed: {0}")]
    Removal(#[from] RemovalError),
}

/// What a move handed over.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct MoveReport {
    pub entries: usize,
    pub bytes: u64,
    pub audit_records: usize,
    pub milliseconds: u64,
}

/// Both sides of moves, on one node.
#[derive(Debug)]
pub struct Handover {
    pub cluster: Arc<Cluster>,
    pub state: TenantState,
    pub desired: Arc<Desired>,
}

/// A tenant arriving here.
#[derive(Debug)]
struct Arrival {
    from: String,
    assembler: Assembler,
    since_audit_seq: u64,
    last_heard: Instant,
    tokens: Vec<Vec<u8>>,
}

impl Handover {
    /// Moves `tenant` to node `to`; audited here as `actor`.
    pub async fn move_out(
        &self,
        tenant: &str,
        to: &str,
        actor: &str,
    ) -> Result<MoveReport, MoveError> {
        let started = Instant::now();
        let me = self.cluster.node().to_owned();
        if to == me {
            return Err(MoveError::SameNode(to.to_owned()));
        }
        if self.cluster.owner(tenant) != Owner::Here {
            return Err(MoveError::NotHere {
                tenant: tenant.to_owned(),
                why: "it is placed elsewhere or nowhere".into(),
            });
        }
        if self.state.tenants.get(tenant).ok().flatten().is_none() {
            return Err(MoveError::NotHere {
                tenant: tenant.to_owned(),
                why: "it has no record here (created by the configuration file only)".into(),
            });
        }
        if self
            .desired
            .config_instances()
            .iter()
            .any(|instance| instance.tenant.as_str() == tenant)
        {
            return Err(MoveError::ConfiguredHere(tenant.to_owned()));
        }
        if !self.cluster.is_alive(to) {
            return Err(MoveError::NodeNotAlive(to.to_owned()));
        }
        let recipient = self.cluster.recipient_of(to);
        // Unreadable counts as having one: better refused than moved without it.
        let has_key = self
            .state
            .credentials
            .as_ref()
            .is_some_and(|credentials| credentials.has_tenant_key(tenant).unwrap_or(true));
        if has_key && recipient.is_none() {
            return Err(MoveError::NoKeyThere(to.to_owned(), tenant.to_owned()));
        }
        self.cluster.begin_move(tenant, false)?;
        self.desired.apply().await;
        let begun = self
            .ask(
                to,
                &Step::Begin {
                    tenant: tenant.to_owned(),
                    from: me.clone(),
                },
            )
            .await;
        if let Err(err) = begun {
            self.resume(tenant).await;
            return Err(err);
        }
        if let Err(err) = self.cluster.replace_owner(tenant, &me, to).await {
            self.abort(tenant, to).await;
            self.resume(tenant).await;
            return Err(err.into());
        }
        // Every request this node took for it is done before its state is read.
        let gate = self.cluster.gate(tenant);
        let drained = gate.write().await;
        let sent = self.send_state(tenant, to, recipient.as_deref()).await;
        drop(drained);
        let mut report = match sent {
            Ok(report) => report,
            Err(err) => {
                if let Err(back) = self.cluster.replace_owner(tenant, to, &me).await {
                    tracing::error!(tenant, error = %back, "a failed move could not put placement back; `cluster status` shows where the tenant is");
                }
                self.abort(tenant, to).await;
                self.resume(tenant).await;
                return Err(err);
            }
        };
        let state = self.state.clone();
        let (name, actor) = (tenant.to_owned(), actor.to_owned());
        let removed =
            tokio::task::block_in_place(move || state.remove(&name, &actor, "tenant.move_out"));
        self.cluster.end_move(tenant);
        removed?;
        report.milliseconds = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        tracing::info!(
            tenant,
            to,
            entries = report.entries,
            bytes = report.bytes,
            ms = report.milliseconds,
            "tenant moved"
        );
        Ok(report)
    }

    /// The tenant runs here again after a failed move.
    async fn resume(&self, tenant: &str) {
        self.cluster.end_move(tenant);
        self.desired.apply().await;
    }

    async fn abort(&self, tenant: &str, to: &str) {
        let step = Step::Abort {
            tenant: tenant.to_owned(),
        };
        if let Err(err) = self.ask(to, &step).await {
            tracing::warn!(tenant, node = to, error = %err, "could not tell the other node the move is off; it gives up by itself");
        }
    }

    /// Sends the tenant's entries, audit records and `Finish`.
    async fn send_state(
        &self,
        tenant: &str,
        to: &str,
        recipient: Option<&str>,
    ) -> Result<MoveReport, MoveError> {
        let export = |why: String| MoveError::Export {
            tenant: tenant.to_owned(),
            why,
        };
        let record = self
            .state
            .tenants
            .get(tenant)
            .map_err(|err| export(err.to_string()))?
            .ok_or_else(|| export("its record is gone".into()))?;
        let mut report = MoveReport::default();
        let prefix = format!("{tenant}\0").into_bytes();
        let mut cutter = Cutter::default();
        for table in protocol::prefixed_tables() {
            for entry in self
                .state
                .store
                .range_iter(table, &prefix, &prefix_end(&prefix))
            {
                let (key, value) = entry.map_err(|err| export(err.to_string()))?;
                report.entries += 1;
                report.bytes += value.len() as u64;
                cutter.push(table, &key, &value);
                for pieces in cutter.take_ready() {
                    self.send_pieces(tenant, to, pieces).await?;
                }
            }
        }
        for token in self
            .state
            .tenants
            .tokens(tenant)
            .map_err(|err| export(err.to_string()))?
        {
            let value = serde_json::to_vec(&token).map_err(|err| export(err.to_string()))?;
            report.entries += 1;
            cutter.push(Table::Tokens, token.id.as_bytes(), &value);
        }
        for pieces in cutter.finish() {
            self.send_pieces(tenant, to, pieces).await?;
        }
        let mut records = self
            .state
            .store
            .audit_records(usize::MAX, |r| {
                r.tenant.as_deref() == Some(tenant) && r.seq >= record.since_audit_seq
            })
            .map_err(|err| export(err.to_string()))?;
        records.reverse();
        report.audit_records = records.len();
        for chunk in records.chunks(AUDIT_PER_MESSAGE) {
            let step = Step::Audit {
                tenant: tenant.to_owned(),
                records: chunk.to_vec(),
            };
            self.ask(to, &step).await?;
        }
        let tenant_key = match (&self.state.credentials, recipient) {
            (Some(credentials), Some(recipient)) => credentials
                .tenant_key_for(tenant, recipient)
                .map_err(|err| export(err.to_string()))?
                .map(|raw| BASE64.encode(raw)),
            _ => None,
        };
        let finish = Step::Finish {
            tenant: tenant.to_owned(),
            created_ms: record.created_ms,
            incarnation: record.incarnation,
            tenant_key,
        };
        self.ask(to, &finish).await?;
        Ok(report)
    }

    async fn send_pieces(
        &self,
        tenant: &str,
        to: &str,
        pieces: Vec<protocol::Piece>,
    ) -> Result<(), MoveError> {
        let step = Step::Pieces {
            tenant: tenant.to_owned(),
            pieces,
        };
        self.ask(to, &step).await
    }

    /// One step to node `to`, answered.
    async fn ask(&self, to: &str, step: &Step) -> Result<(), MoveError> {
        let peer = |why: String| MoveError::Peer {
            node: to.to_owned(),
            why,
        };
        let payload = serde_json::to_vec(step).map_err(|err| peer(err.to_string()))?;
        let request = async_nats::Request::new()
            .payload(payload.into())
            .timeout(Some(STEP_TIMEOUT));
        let answer = self
            .cluster
            .client()
            .send_request(self.cluster.subject(Channel::Handover, to), request)
            .await
            .map_err(|err| peer(format!("no answer: {err}")))?;
        let reply: Reply = serde_json::from_slice(&answer.payload)
            .map_err(|err| peer(format!("an answer that is not a reply: {err}")))?;
        if reply.ok {
            Ok(())
        } else {
            Err(peer(reply.error.unwrap_or_default()))
        }
    }

    /// Takes tenants moved here, from `requests` (this node's handover subject), until
    /// `stop`.
    pub async fn serve(
        self: Arc<Self>,
        mut requests: async_nats::Subscriber,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut arrivals: HashMap<String, Arrival> = HashMap::new();
        let mut sweep = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                () = stopped(&mut stop) => return,
                _ = sweep.tick() => self.give_up_idle(&mut arrivals).await,
                message = requests.next() => {
                    let Some(message) = message else {
                        tracing::error!("the NATS client closed: this node takes no more tenant handovers");
                        return;
                    };
                    let reply = match serde_json::from_slice::<Step>(&message.payload) {
                        Ok(step) => self.take(step, &mut arrivals).await,
                        Err(err) => Reply::refused(format!("not a handover step: {err}")),
                    };
                    if let (Some(inbox), Ok(answer)) = (message.reply, serde_json::to_vec(&reply))
                        && let Err(err) = self.cluster.client().publish(inbox, answer.into()).await
                    {
                        tracing::warn!(error = %err, "cannot answer a handover step");
                    }
                }
            }
        }
    }

    async fn take(&self, step: Step, arrivals: &mut HashMap<String, Arrival>) -> Reply {
        let tenant = step.tenant().to_owned();
        if !crate::names::is_name(&tenant) || crate::tenants::is_reserved(&tenant) {
            return Reply::refused(format!("`{tenant}` is not a tenant name"));
        }
        let result = match step {
            Step::Begin { from, .. } => self.begin(&tenant, from, arrivals),
            Step::Pieces { pieces, .. } => match arrivals.get_mut(&tenant) {
                Some(arrival) => self.write_pieces(&tenant, arrival, &pieces),
                None => Err(format!("no move of `{tenant}` is under way")),
            },
            Step::Audit { records, .. } => match arrivals.get_mut(&tenant) {
                Some(arrival) => self.write_audit(&tenant, arrival, records),
                None => Err(format!("no move of `{tenant}` is under way")),
            },
            Step::Finish {
                created_ms,
                incarnation,
                tenant_key,
                ..
            } => match arrivals.remove(&tenant) {
                Some(arrival) => {
                    let finished =
                        self.finish(&tenant, &arrival, created_ms, incarnation, tenant_key);
                    if finished.is_err() {
                        self.discard(&tenant, &arrival);
                    }
                    self.cluster.end_move(&tenant);
                    self.desired.apply().await;
                    finished
                }
                None => Err(format!("no move of `{tenant}` is under way")),
            },
            Step::Abort { .. } => {
                if let Some(arrival) = arrivals.remove(&tenant) {
                    self.discard(&tenant, &arrival);
                    self.cluster.end_move(&tenant);
                }
                Ok(())
            }
        };
        match result {
            Ok(()) => Reply::ok(),
            Err(why) => {
                tracing::warn!(tenant, reason = %why, "a tenant handover step was refused");
                Reply::refused(why)
            }
        }
    }

    fn begin(
        &self,
        tenant: &str,
        from: String,
        arrivals: &mut HashMap<String, Arrival>,
    ) -> Result<(), String> {
        if arrivals.contains_key(tenant) {
            return Err(format!("tenant `{tenant}` is being moved here already"));
        }
        if matches!(self.state.tenants.get(tenant), Ok(Some(_))) {
            return Err(format!("tenant `{tenant}` exists on this node already"));
        }
        if self.cluster.node_of(tenant).as_deref() != Some(from.as_str()) {
            return Err(format!("tenant `{tenant}` is not placed on node `{from}`"));
        }
        let since_audit_seq = self
            .state
            .store
            .audit_seq()
            .map_err(|err| err.to_string())?
            + 1;
        self.cluster
            .begin_move(tenant, true)
            .map_err(|err| err.to_string())?;
        tracing::info!(tenant, from, "a tenant is moving here");
        arrivals.insert(
            tenant.to_owned(),
            Arrival {
                from,
                assembler: Assembler::new(tenant),
                since_audit_seq,
                last_heard: Instant::now(),
                tokens: Vec::new(),
            },
        );
        Ok(())
    }

    fn write_pieces(
        &self,
        tenant: &str,
        arrival: &mut Arrival,
        pieces: &[protocol::Piece],
    ) -> Result<(), String> {
        arrival.last_heard = Instant::now();
        let mut batch = Batch::new();
        for piece in pieces {
            let Some(whole) = arrival
                .assembler
                .take(piece)
                .map_err(|err| err.to_string())?
            else {
                continue;
            };
            if whole.table == Table::Tokens {
                let token: TokenInfo = serde_json::from_slice(&whole.value)
                    .map_err(|err| format!("a token record is not one: {err}"))?;
                if token.tenant != tenant || token.id.as_bytes() != whole.key.as_slice() {
                    return Err(format!("a token record is not tenant `{tenant}`'s"));
                }
                if self
                    .state
                    .store
                    .contains(Table::Tokens, &whole.key)
                    .map_err(|err| err.to_string())?
                {
                    return Err(format!("token `{}` exists on this node already", token.id));
                }
                arrival.tokens.push(whole.key.clone());
            }
            batch = batch.put(whole.table, whole.key, whole.value);
        }
        self.state
            .store
            .apply(&batch)
            .map_err(|err| err.to_string())
    }

    fn write_audit(
        &self,
        tenant: &str,
        arrival: &mut Arrival,
        records: Vec<crate::store::AuditRecord>,
    ) -> Result<(), String> {
        arrival.last_heard = Instant::now();
        let drafts: Vec<AuditDraft> = records
            .into_iter()
            .map(|record| AuditDraft {
                tenant: Some(tenant.to_owned()),
                actor: record.actor,
                action: record.action,
                target: record.target,
                outcome: record.outcome,
                detail: format!(
                    "[moved from node {}, its record {} of {}] {}",
                    arrival.from,
                    record.seq,
                    plugin_kit::clock::rfc3339_ms(record.time_ms),
                    record.detail
                ),
            })
            .collect();
        self.state
            .store
            .audit_many(&drafts)
            .map(|_| ())
            .map_err(|err| err.to_string())
    }

    fn finish(
        &self,
        tenant: &str,
        arrival: &Arrival,
        created_ms: u64,
        incarnation: u64,
        tenant_key: Option<String>,
    ) -> Result<(), String> {
        if arrival.assembler.incomplete() {
            return Err("a value is missing pieces".into());
        }
        let _turn = self.state.store.writer();
        let mut batch = self
            .state
            .tenants
            .adoption(tenant, created_ms, incarnation, arrival.since_audit_seq)
            .map_err(|err| err.to_string())?;
        match (tenant_key, &self.state.credentials) {
            (None, _) => {}
            (Some(raw), Some(credentials)) => {
                let raw = BASE64
                    .decode(raw)
                    .map_err(|_| "the tenant key is not base64".to_owned())?;
                batch.extend(
                    credentials
                        .adopt_tenant_key(tenant, &raw)
                        .map_err(|err| format!("the tenant key does not open here: {err}"))?,
                );
            }
            (Some(_), None) => return Err("this node has no master key".into()),
        }
        let audit = AuditDraft::ok(
            Some(tenant),
            "daemon",
            "tenant.move_in",
            &format!("tenant:{tenant}"),
            format!("moved from node {}", arrival.from),
        );
        self.state
            .store
            .commit(&batch, &audit)
            .map_err(|err| err.to_string())?;
        self.state
            .pipeline
            .adopt_tenant(tenant)
            .map_err(|err| err.to_string())?;
        tracing::info!(tenant, from = %arrival.from, "a tenant moved here");
        Ok(())
    }

    /// Removes what a move that did not finish wrote.
    fn discard(&self, tenant: &str, arrival: &Arrival) {
        let prefix = format!("{tenant}\0").into_bytes();
        for table in protocol::prefixed_tables() {
            if let Err(err) = self.state.store.delete_prefix(table, &prefix, 10_000) {
                tracing::error!(tenant, table = table.tree_name(), error = %err, "cannot remove what an aborted move wrote");
            }
        }
        let mut tokens = Batch::new();
        for key in &arrival.tokens {
            tokens = tokens.delete(Table::Tokens, key.clone());
        }
        if let Err(err) = self.state.store.apply(&tokens) {
            tracing::error!(tenant, error = %err, "cannot remove the tokens an aborted move wrote");
        }
        if let Err(err) = self.state.pipeline.forget_tenant(tenant) {
            tracing::error!(tenant, error = %err, "cannot forget an aborted move's pipeline state");
        }
    }

    /// Aborts moves here whose leaving node has gone silent, giving placement back.
    async fn give_up_idle(&self, arrivals: &mut HashMap<String, Arrival>) {
        let idle: Vec<String> = arrivals
            .iter()
            .filter(|(_, arrival)| arrival.last_heard.elapsed() >= IDLE_LIMIT)
            .map(|(tenant, _)| tenant.clone())
            .collect();
        for tenant in idle {
            let Some(arrival) = arrivals.remove(&tenant) else {
                continue;
            };
            tracing::error!(tenant, from = %arrival.from, "a move here stalled; it is aborted and the tenant placed back");
            self.discard(&tenant, &arrival);
            if self.cluster.owner(&tenant) == Owner::Here
                && let Err(err) = self
                    .cluster
                    .replace_owner(&tenant, self.cluster.node(), &arrival.from)
                    .await
            {
                tracing::error!(tenant, error = %err, "cannot place a tenant back after a stalled move");
            }
            self.cluster.end_move(&tenant);
        }
    }
}

/// Resolves once `stop` turns true (holding nothing across awaits).
async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// The bound after every key starting with `prefix` (`tenant \0`): `tenant \x01`, which
/// no key of a tenant table is (tenant names hold no control characters).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}
