//! `[cluster]`: this daemon as one node of several, tenants placed on nodes through a
//! JetStream key-value bucket. Without the section the daemon runs alone.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::duration;
use crate::nats::Connection;

/// One node's place in a cluster of daemons.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// This node's name, unique in the cluster; placement maps tenants to it.
    pub node: String,
    /// The URL other nodes forward this node's tenants' requests to: its HTTP
    /// listener as they reach it (`http://10.0.0.5:8080`). By default
    /// `http://` + `http_listen`, which only suits nodes on one host.
    #[serde(default)]
    pub advertise: Option<String>,
    /// The NATS servers holding the placement bucket.
    pub servers: Vec<String>,
    #[serde(default)]
    pub creds_file: Option<PathBuf>,
    #[serde(default)]
    pub nkey_file: Option<PathBuf>,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub tls_ca: Option<PathBuf>,
    /// The key-value bucket of placement (created when missing).
    #[serde(default = "default_bucket")]
    pub bucket: String,
    /// The bucket's replicas when it is created (1, or 3 or 5 in a JetStream cluster).
    #[serde(default = "default_replicas")]
    pub replicas: usize,
    /// How often this node says it is alive.
    #[serde(default = "default_heartbeat_interval", deserialize_with = "duration")]
    pub heartbeat_interval: Duration,
    /// A node not heard from for this long is lost: shown in `cluster status` and in
    /// health, and alerted on (`node_lost`).
    #[serde(default = "default_node_timeout", deserialize_with = "duration")]
    pub node_timeout: Duration,
    /// How long a forwarded request may take at its owner.
    #[serde(default = "default_forward_timeout", deserialize_with = "duration")]
    pub forward_timeout: Duration,
}

impl ClusterConfig {
    pub fn connection(&self) -> Connection<'_> {
        Connection {
            name: "cluster",
            servers: &self.servers,
            creds_file: self.creds_file.as_deref(),
            nkey_file: self.nkey_file.as_deref(),
            token_file: self.token_file.as_deref(),
            user: self.user.as_deref(),
            password_file: self.password_file.as_deref(),
            tls_ca: self.tls_ca.as_deref(),
        }
    }

    /// The URL peers reach this node at.
    pub fn advertised(&self, http_listen: std::net::SocketAddr) -> String {
        self.advertise
            .clone()
            .unwrap_or_else(|| format!("http://{http_listen}"))
    }

    /// What is wrong with the section, key first.
    pub(super) fn check(&self) -> Result<(), String> {
        if !crate::names::is_name(&self.node) {
            return Err(format!(
                "node = {:?}: use 1-64 letters, digits, `-` or `_`",
                self.node
            ));
        }
        if let Some(url) = &self.advertise {
            let parsed = reqwest::Url::parse(url)
                .map_err(|err| format!("advertise = {url:?}: not a URL: {err}"))?;
            if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
                return Err(format!(
                    "advertise = {url:?}: an http:// or https:// URL with a host"
                ));
            }
        }
        crate::nats::check_servers(&self.servers)?;
        let bucket_ok = !self.bucket.is_empty()
            && self.bucket.len() <= 64
            && self
                .bucket
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !bucket_ok {
            return Err(format!(
                "bucket = {:?}: a key-value bucket name (letters, digits, `-`, `_`)",
                self.bucket
            ));
        }
        if !matches!(self.replicas, 1..=5) {
            return Err(format!("replicas = {}: from 1 to 5", self.replicas));
        }
        if self.heartbeat_interval.is_zero() || self.forward_timeout.is_zero() {
            return Err("heartbeat_interval and forward_timeout above zero".into());
        }
        if self.node_timeout < self.heartbeat_interval * 2 {
            return Err(format!(
                "node_timeout ({:?}) must be at least twice heartbeat_interval ({:?}), or one late heartbeat loses a node",
                self.node_timeout, self.heartbeat_interval
            ));
        }
        Ok(())
    }
}

fn default_bucket() -> String {
    "betalogs_placement".into()
}
fn default_replicas() -> usize {
    1
}
fn default_heartbeat_interval() -> Duration {
    Duration::from_secs(5)
}
fn default_node_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_forward_timeout() -> Duration {
    Duration::from_secs(10)
}
