//! This daemon as one node of several (`[cluster]`): tenants are placed on nodes in a
//! JetStream key-value bucket that every node watches ([`placement`] holds what it
//! says). A node claims a tenant when it is created there, and the tenants already in
//! its state when it starts; it says it is alive every `heartbeat_interval`, and a node
//! not heard from for `node_timeout` is lost (in `cluster status`, in health, and the
//! `node_lost` alert). The ingress forwards a request for a tenant placed elsewhere to
//! its owner (`ingress::forward`).
//!
//! A leaf beside `nats`: it knows the bucket, not the pipeline or the ingress.

pub mod placement;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use async_nats::jetstream::{kv, stream};
use futures_util::StreamExt;

use crate::config::ClusterConfig;
use crate::nats::NatsError;
use placement::{NodeRecord, Placement, TenantPlacement};
pub use placement::{NodeStatus, Owner};

/// Why the cluster could not be joined, or a tenant not placed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cluster: {0}")]
    Connect(#[from] NatsError),
    #[error("cluster: the placement bucket `{bucket}`: {why}")]
    Bucket { bucket: String, why: String },
    #[error("tenant `{tenant}` is being moved already")]
    Moving { tenant: String },
    #[error("tenant `{tenant}` is placed on node `{node}`, not on this node (`{me}`)")]
    PlacedElsewhere {
        tenant: String,
        node: String,
        me: String,
    },
}

/// One node's view of the cluster, kept current by [`Cluster::run`].
#[derive(Debug)]
pub struct Cluster {
    config: ClusterConfig,
    address: String,
    /// This node's master key's public key, for tenants moved here.
    recipient: Option<String>,
    started_ms: u64,
    client: async_nats::Client,
    kv: kv::Store,
    placement: RwLock<Placement>,
    /// Tenants moving out of or into this node.
    moves: Mutex<HashMap<String, Moving>>,
    /// Per tenant served here: requests being handled hold it shared; a move takes it
    /// exclusively once placement points elsewhere, so none is left behind.
    gates: Mutex<HashMap<String, Arc<tokio::sync::RwLock<()>>>>,
    /// Ticks when a tenant's placement changes (which tenants run here may have).
    placements_changed: tokio::sync::watch::Sender<u64>,
}

/// A tenant in the middle of a move.
#[derive(Debug)]
enum Moving {
    /// Leaving: its integrations do not run here.
    Out,
    /// Arriving: its requests wait until the handover ends (`true` when it does).
    In(tokio::sync::watch::Sender<bool>),
}

impl Cluster {
    /// Connects, opens (or creates) the bucket, says where this node is and reads the
    /// placement as it stands. `address` is the URL peers forward to.
    pub async fn join(
        config: ClusterConfig,
        address: String,
        recipient: Option<String>,
    ) -> Result<Arc<Self>, ClusterError> {
        let client = config.connection().connect().await?;
        let jetstream = async_nats::jetstream::new(client.clone());
        let bucket = config.bucket.clone();
        let bucket_error = |why: String| ClusterError::Bucket {
            bucket: bucket.clone(),
            why,
        };
        // The bucket's stream as `create_key_value` makes it; that call first asks for
        // the account's limits, whose answer from nats-server 2.9 the client cannot read.
        jetstream
            .get_or_create_stream(stream::Config {
                name: format!("KV_{}", config.bucket),
                description: Some("integrationd: tenant -> node placement".into()),
                subjects: vec![format!("$KV.{}.>", config.bucket)],
                max_messages_per_subject: 1,
                num_replicas: config.replicas,
                allow_rollup: true,
                deny_delete: true,
                allow_direct: true,
                discard: stream::DiscardPolicy::New,
                ..Default::default()
            })
            .await
            .map_err(|err| bucket_error(format!("cannot open or create it: {err}")))?;
        let kv = jetstream
            .get_key_value(&config.bucket)
            .await
            .map_err(|err| bucket_error(format!("cannot open it: {err}")))?;
        let cluster = Arc::new(Self {
            address,
            recipient,
            client,
            moves: Mutex::default(),
            gates: Mutex::default(),
            placements_changed: tokio::sync::watch::channel(0).0,
            started_ms: plugin_kit::clock::now_ms(),
            kv,
            placement: RwLock::new(Placement::default()),
            config,
        });
        cluster.beat().await.map_err(bucket_error)?;
        let keys: Vec<String> = cluster
            .kv
            .keys()
            .await
            .map_err(|err| bucket_error(format!("cannot list its keys: {err}")))?
            .filter_map(|key| async move { key.ok() })
            .collect()
            .await;
        for key in keys {
            if let Ok(Some(entry)) = cluster.kv.entry(key).await {
                cluster.take(&entry);
            }
        }
        Ok(cluster)
    }

    pub fn node(&self) -> &str {
        &self.config.node
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    pub fn forward_timeout(&self) -> Duration {
        self.config.forward_timeout
    }

    fn placement(&self) -> std::sync::RwLockReadGuard<'_, Placement> {
        self.placement
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn placement_mut(&self) -> std::sync::RwLockWriteGuard<'_, Placement> {
        self.placement
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Where `tenant`'s requests go.
    pub fn owner(&self, tenant: &str) -> Owner {
        self.placement().owner(tenant, &self.config.node)
    }

    /// The node `tenant` is placed on.
    pub fn node_of(&self, tenant: &str) -> Option<String> {
        match self.owner(tenant) {
            Owner::Here => Some(self.config.node.clone()),
            Owner::Elsewhere { node, .. } => Some(node),
            Owner::Nowhere => None,
        }
    }

    /// Every node with its state and tenants.
    pub fn nodes(&self) -> Vec<NodeStatus> {
        self.placement()
            .nodes(Instant::now(), self.config.node_timeout)
    }

    /// The client the handover between nodes speaks over.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// The subject node `node` takes requests of `channel` on.
    pub fn subject(&self, channel: Channel, node: &str) -> String {
        format!(
            "integrationd.{}.{}.{node}",
            self.config.bucket,
            channel.as_str()
        )
    }

    /// Subscribes to this node's subject of `channel`. Done at start: a node that cannot
    /// take handovers or relayed calls does not run as one that can.
    pub async fn listen(&self, channel: Channel) -> Result<async_nats::Subscriber, ClusterError> {
        let subject = self.subject(channel, &self.config.node);
        self.client
            .subscribe(subject.clone())
            .await
            .map_err(|err| self.bucket_error(format!("cannot subscribe to {subject}: {err}")))
    }

    /// Whether `ip` is the address of a node of the cluster (one advertised by an IP
    /// literal; host names are not resolved).
    pub fn is_peer(&self, ip: std::net::IpAddr) -> bool {
        self.placement()
            .addresses()
            .any(|address| host_ip(address) == Some(ip))
    }

    /// Node `node`'s master key's public key, when it is alive and has one.
    pub fn recipient_of(&self, node: &str) -> Option<String> {
        self.placement().recipient_of(node).map(str::to_owned)
    }

    /// Whether `node` is alive now.
    pub fn is_alive(&self, node: &str) -> bool {
        self.nodes()
            .iter()
            .any(|status| status.name == node && status.state == "alive")
    }

    fn moves(&self) -> std::sync::MutexGuard<'_, HashMap<String, Moving>> {
        self.moves
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether `tenant`'s integrations run on this node: not placed elsewhere, not
    /// moving.
    pub fn runs_here(&self, tenant: &str) -> bool {
        !matches!(self.owner(tenant), Owner::Elsewhere { .. }) && !self.moves().contains_key(tenant)
    }

    /// Marks `tenant` as leaving (or arriving, `arriving`); refused while it moves.
    pub fn begin_move(&self, tenant: &str, arriving: bool) -> Result<(), ClusterError> {
        let mut moves = self.moves();
        if moves.contains_key(tenant) {
            return Err(ClusterError::Moving {
                tenant: tenant.to_owned(),
            });
        }
        let state = if arriving {
            Moving::In(tokio::sync::watch::channel(false).0)
        } else {
            Moving::Out
        };
        moves.insert(tenant.to_owned(), state);
        Ok(())
    }

    /// Ends `tenant`'s move, either way; requests waiting for its arrival go on.
    pub fn end_move(&self, tenant: &str) {
        if let Some(Moving::In(arrived)) = self.moves().remove(tenant) {
            let _ = arrived.send(true);
        }
    }

    /// While `tenant` is arriving: what turns `true` when its handover ends.
    pub fn arrival(&self, tenant: &str) -> Option<tokio::sync::watch::Receiver<bool>> {
        match self.moves().get(tenant) {
            Some(Moving::In(arrived)) => Some(arrived.subscribe()),
            _ => None,
        }
    }

    /// `tenant`'s request gate (see [`Cluster`]'s `gates`).
    pub fn gate(&self, tenant: &str) -> Arc<tokio::sync::RwLock<()>> {
        self.gates
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(tenant.to_owned())
            .or_default()
            .clone()
    }

    /// Moves `tenant`'s placement from node `from` to node `to`, only if it is on
    /// `from` now (compare-and-set on the entry's revision).
    pub async fn replace_owner(
        &self,
        tenant: &str,
        from: &str,
        to: &str,
    ) -> Result<(), ClusterError> {
        let key = placement::tenant_key(tenant);
        let entry = self
            .kv
            .entry(&key)
            .await
            .map_err(|err| self.bucket_error(format!("cannot read {key}: {err}")))?;
        let current = entry
            .as_ref()
            .filter(|entry| entry.operation == kv::Operation::Put)
            .and_then(|entry| serde_json::from_slice::<TenantPlacement>(&entry.value).ok());
        let (Some(entry), Some(current)) = (entry, current) else {
            return Err(self.bucket_error(format!("{key} is not placed")));
        };
        if current.node != from {
            return Err(ClusterError::PlacedElsewhere {
                tenant: tenant.to_owned(),
                node: current.node,
                me: from.to_owned(),
            });
        }
        let value = serde_json::to_vec(&TenantPlacement {
            node: to.to_owned(),
        })
        .map_err(|err| self.bucket_error(err.to_string()))?;
        self.kv
            .update(&key, value.into(), entry.revision)
            .await
            .map_err(|err| self.bucket_error(format!("cannot move {key}: {err}")))?;
        self.placement_mut().place(tenant, to);
        Ok(())
    }

    /// Places `tenant` on this node, unless another node has it (refused, naming it).
    pub async fn claim(&self, tenant: &str) -> Result<(), ClusterError> {
        let key = placement::tenant_key(tenant);
        let value = serde_json::to_vec(&TenantPlacement {
            node: self.config.node.clone(),
        })
        .map_err(|err| self.bucket_error(err.to_string()))?;
        match self.kv.create(&key, value.into()).await {
            Ok(_) => {}
            Err(err) if err.kind() == kv::CreateErrorKind::AlreadyExists => {
                let entry = self
                    .kv
                    .get(&key)
                    .await
                    .map_err(|err| self.bucket_error(format!("cannot read {key}: {err}")))?;
                let node = entry
                    .and_then(|raw| serde_json::from_slice::<TenantPlacement>(raw.as_ref()).ok())
                    .map(|placement| placement.node)
                    .unwrap_or_default();
                if node != self.config.node {
                    return Err(ClusterError::PlacedElsewhere {
                        tenant: tenant.to_owned(),
                        node,
                        me: self.config.node.clone(),
                    });
                }
            }
            Err(err) => return Err(self.bucket_error(format!("cannot place {key}: {err}"))),
        }
        self.placement_mut().place(tenant, &self.config.node);
        Ok(())
    }

    /// The tenant of token `id`, as placement says.
    pub fn tenant_of_token(&self, id: &str) -> Option<String> {
        self.placement().tenant_of_token(id).map(str::to_owned)
    }

    /// Says whose token `id` is, so that other nodes can relay calls it authenticates.
    pub async fn register_token(&self, id: &str, tenant: &str) -> Result<(), ClusterError> {
        let key = placement::token_key(id);
        let value = serde_json::to_vec(&placement::TokenPlacement {
            tenant: tenant.to_owned(),
        })
        .map_err(|err| self.bucket_error(err.to_string()))?;
        self.kv
            .put(&key, value.clone().into())
            .await
            .map_err(|err| self.bucket_error(format!("cannot write {key}: {err}")))?;
        let _ = self
            .placement_mut()
            .apply(&key, Some(&value), Instant::now());
        Ok(())
    }

    /// Forgets token `id` (revoked, or its tenant deleted).
    pub async fn forget_token(&self, id: &str) -> Result<(), ClusterError> {
        let key = placement::token_key(id);
        self.kv
            .delete(&key)
            .await
            .map_err(|err| self.bucket_error(format!("cannot delete {key}: {err}")))?;
        let _ = self.placement_mut().apply(&key, None, Instant::now());
        Ok(())
    }

    /// Removes `tenant`'s placement if it is this node's (after the tenant is deleted).
    pub async fn release(&self, tenant: &str) -> Result<(), ClusterError> {
        if self.owner(tenant) != Owner::Here {
            return Ok(());
        }
        let key = placement::tenant_key(tenant);
        self.kv
            .delete(&key)
            .await
            .map_err(|err| self.bucket_error(format!("cannot delete {key}: {err}")))?;
        self.placement_mut().unplace(tenant);
        Ok(())
    }

    fn bucket_error(&self, why: String) -> ClusterError {
        ClusterError::Bucket {
            bucket: self.config.bucket.clone(),
            why,
        }
    }

    /// Rewrites this node's record: its heartbeat.
    async fn beat(&self) -> Result<(), String> {
        let record = serde_json::to_vec(&NodeRecord {
            address: self.address.clone(),
            started_ms: self.started_ms,
            recipient: self.recipient.clone(),
        })
        .map_err(|err| err.to_string())?;
        self.kv
            .put(placement::node_key(&self.config.node), record.into())
            .await
            .map_err(|err| format!("cannot write this node's heartbeat: {err}"))?;
        Ok(())
    }

    /// Ticks when a tenant's placement changed: the daemon applies what should run.
    pub fn placements_changed(&self) -> tokio::sync::watch::Receiver<u64> {
        self.placements_changed.subscribe()
    }

    /// Takes one entry of the bucket; a hostile one is logged and changes nothing.
    fn take(&self, entry: &kv::Entry) {
        let tenant = matches!(
            placement::Key::parse(&entry.key),
            Some(placement::Key::Tenant(_))
        );
        let value = match entry.operation {
            kv::Operation::Put => Some(entry.value.as_ref()),
            kv::Operation::Delete | kv::Operation::Purge => None,
        };
        let heard = heard_at(entry.created.unix_timestamp_nanos());
        if let Err(err) = self.placement_mut().apply(&entry.key, value, heard) {
            tracing::warn!(error = %err, "placement entry ignored");
            return;
        }
        if tenant {
            self.placements_changed.send_modify(|ticks| *ticks += 1);
        }
    }

    /// Heartbeats and watching the bucket until `stop`. A broken watch is reopened
    /// (it replays the current values first).
    pub async fn run(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut beats = tokio::time::interval(self.config.heartbeat_interval);
        beats.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut watch = None;
        let mut rewatch_at = tokio::time::Instant::now();
        loop {
            if watch.is_none() && tokio::time::Instant::now() >= rewatch_at {
                match self.kv.watch_with_history(">").await {
                    Ok(opened) => watch = Some(opened),
                    Err(err) => {
                        tracing::warn!(error = %err, "cannot watch the placement bucket; retrying");
                        rewatch_at = tokio::time::Instant::now() + self.config.heartbeat_interval;
                    }
                }
            }
            let next_entry = async {
                match watch.as_mut() {
                    Some(watch) => watch.next().await,
                    None => std::future::pending().await,
                }
            };
            let step = tokio::select! {
                _ = stop.wait_for(|stop| *stop) => Step::Stop,
                _ = beats.tick() => Step::Beat,
                entry = next_entry => Step::Entry(entry),
            };
            match step {
                Step::Stop => break,
                Step::Beat => {
                    if let Err(err) = self.beat().await {
                        tracing::warn!(error = %err, node = %self.config.node, "cluster heartbeat failed");
                    }
                }
                Step::Entry(Some(Ok(entry))) => self.take(&entry),
                Step::Entry(ended) => {
                    if let Some(Err(err)) = ended {
                        tracing::warn!(error = %err, "the placement watch failed; reopening it");
                    }
                    watch = None;
                    rewatch_at = tokio::time::Instant::now() + self.config.heartbeat_interval;
                }
            }
        }
    }
}

/// What nodes ask each other, each on its own subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// Tenants moved to the node (`handover`).
    Handover,
    /// Tenant admin calls relayed to the node (`admin::relay`).
    Admin,
}

impl Channel {
    fn as_str(self) -> &'static str {
        match self {
            Channel::Handover => "handover",
            Channel::Admin => "admin",
        }
    }
}

/// The IP address of an `http://IP:PORT` URL (a host name gives `None`).
fn host_ip(address: &str) -> Option<std::net::IpAddr> {
    let url = reqwest::Url::parse(address).ok()?;
    let host = url.host_str()?;
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// One turn of [`Cluster::run`].
enum Step<E> {
    Stop,
    Beat,
    Entry(Option<E>),
}

/// When an entry written at `written_ns` (the server's clock, Unix ns) was written,
/// on this node's monotonic clock. Clocks of nodes and servers are assumed to agree
/// within seconds; a write "from the future" counts as now.
fn heard_at(written_ns: i128) -> Instant {
    let now_ns = i128::from(plugin_kit::clock::now_ms()) * 1_000_000;
    let age_ns = (now_ns - written_ns).max(0);
    let age = Duration::from_nanos(u64::try_from(age_ns).unwrap_or(u64::MAX));
    let now = Instant::now();
    now.checked_sub(age).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ip_literal_addresses_name_a_peer() {
        assert_eq!(
            host_ip("http://127.0.0.1:8080"),
            Some(std::net::IpAddr::from([127, 0, 0, 1]))
        );
        assert_eq!(
            host_ip("https://[::1]:8443/"),
            Some(std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST))
        );
        assert_eq!(host_ip("http://node-b.internal:8080"), None);
        assert_eq!(host_ip("not a url"), None);
    }
}
