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

use std::sync::{Arc, RwLock};
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
    started_ms: u64,
    kv: kv::Store,
    placement: RwLock<Placement>,
}

impl Cluster {
    /// Connects, opens (or creates) the bucket, says where this node is and reads the
    /// placement as it stands. `address` is the URL peers forward to.
    pub async fn join(config: ClusterConfig, address: String) -> Result<Arc<Self>, ClusterError> {
        let client = config.connection().connect().await?;
        let jetstream = async_nats::jetstream::new(client);
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

    /// Every node with its state and tenants.
    pub fn nodes(&self) -> Vec<NodeStatus> {
        self.placement()
            .nodes(Instant::now(), self.config.node_timeout)
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
        })
        .map_err(|err| err.to_string())?;
        self.kv
            .put(placement::node_key(&self.config.node), record.into())
            .await
            .map_err(|err| format!("cannot write this node's heartbeat: {err}"))?;
        Ok(())
    }

    /// Takes one entry of the bucket; a hostile one is logged and changes nothing.
    fn take(&self, entry: &kv::Entry) {
        let value = match entry.operation {
            kv::Operation::Put => Some(entry.value.as_ref()),
            kv::Operation::Delete | kv::Operation::Purge => None,
        };
        let heard = heard_at(entry.created.unix_timestamp_nanos());
        if let Err(err) = self.placement_mut().apply(&entry.key, value, heard) {
            tracing::warn!(error = %err, "placement entry ignored");
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
