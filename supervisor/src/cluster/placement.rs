//! What the placement bucket says, as this node last heard it: which node serves each
//! tenant, and where each node is and when it was last heard from. No I/O: the
//! watcher in [`super`] feeds it entries, the ingress and the admin calls read it.
//!
//! Keys: `tenants.<tenant>` → [`TenantPlacement`], `nodes.<node>` → [`NodeRecord`],
//! `tokens.<token id>` → [`TokenPlacement`] (whose tenant a token is, so that a node
//! can relay a call authenticated by a token it does not hold; never the secret).
//! Tenant and node names are [`crate::names::is_name`] names, which are valid key
//! tokens.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

const TENANTS: &str = "tenants.";
const NODES: &str = "nodes.";
const TOKENS: &str = "tokens.";

/// The value of `tenants.<tenant>`: the node serving it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantPlacement {
    pub node: String,
}

/// The value of `tokens.<id>`: the tenant the token belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenPlacement {
    pub tenant: String,
}

/// The value of `nodes.<node>`, rewritten at every heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Where peers forward this node's tenants' requests.
    pub address: String,
    pub started_ms: u64,
    /// The public key (age X25519) of the node's master key: a tenant moved to it has
    /// its key wrapped for this. `None` on a node without a master key.
    #[serde(default)]
    pub recipient: Option<String>,
}

/// A bucket key, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key<'a> {
    Tenant(&'a str),
    Node(&'a str),
    Token(&'a str),
}

impl<'a> Key<'a> {
    pub fn parse(key: &'a str) -> Option<Self> {
        if let Some(name) = key.strip_prefix(TENANTS) {
            return crate::names::is_name(name).then_some(Key::Tenant(name));
        }
        if let Some(id) = key.strip_prefix(TOKENS) {
            let hex = id.len() == 12 && id.bytes().all(|b| b.is_ascii_hexdigit());
            return hex.then_some(Key::Token(id));
        }
        let name = key.strip_prefix(NODES)?;
        crate::names::is_name(name).then_some(Key::Node(name))
    }
}

pub fn tenant_key(tenant: &str) -> String {
    format!("{TENANTS}{tenant}")
}

pub fn node_key(node: &str) -> String {
    format!("{NODES}{node}")
}

pub fn token_key(id: &str) -> String {
    format!("{TOKENS}{id}")
}

/// Why an entry of the bucket was not taken.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EntryError {
    #[error("placement key {key:?} is not `tenants.<name>`, `nodes.<name>` or `tokens.<id>`")]
    UnknownKey { key: String },
    #[error("placement key {key:?}: its value is not {expected}: {why}")]
    BadValue {
        key: String,
        expected: &'static str,
        why: String,
    },
}

#[derive(Debug, Clone)]
struct NodeSeen {
    record: NodeRecord,
    heard: Instant,
}

/// Where a tenant's requests go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// This node serves it.
    Here,
    /// Another node does, reached at `address` (`None` while that node has not said
    /// where it is).
    Elsewhere {
        node: String,
        address: Option<String>,
    },
    /// No node does: the tenant does not exist.
    Nowhere,
}

/// A node as `cluster status` and health show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeStatus {
    pub name: String,
    pub address: Option<String>,
    /// `alive`, or `lost` once not heard from for the node timeout.
    pub state: &'static str,
    /// Seconds since it was last heard from (`None`: never, only named by a tenant).
    pub silent_seconds: Option<u64>,
    pub tenants: Vec<String>,
}

/// The bucket as this node last heard it.
#[derive(Debug, Default)]
pub struct Placement {
    tenants: BTreeMap<String, String>,
    nodes: BTreeMap<String, NodeSeen>,
    tokens: BTreeMap<String, String>,
}

impl Placement {
    /// Takes one entry: `value` is `None` for a deletion. `heard` is when its node
    /// last wrote it, on this node's clock.
    pub fn apply(
        &mut self,
        key: &str,
        value: Option<&[u8]>,
        heard: Instant,
    ) -> Result<(), EntryError> {
        let parsed = Key::parse(key).ok_or_else(|| EntryError::UnknownKey {
            key: key.to_owned(),
        })?;
        let bad = |expected: &'static str, err: serde_json::Error| EntryError::BadValue {
            key: key.to_owned(),
            expected,
            why: err.to_string(),
        };
        match (parsed, value) {
            (Key::Tenant(tenant), None) => {
                self.tenants.remove(tenant);
            }
            (Key::Node(node), None) => {
                self.nodes.remove(node);
            }
            (Key::Token(id), None) => {
                self.tokens.remove(id);
            }
            (Key::Token(id), Some(raw)) => {
                let placement: TokenPlacement =
                    serde_json::from_slice(raw).map_err(|err| bad("{\"tenant\": NAME}", err))?;
                self.tokens.insert(id.to_owned(), placement.tenant);
            }
            (Key::Tenant(tenant), Some(raw)) => {
                let placement: TenantPlacement =
                    serde_json::from_slice(raw).map_err(|err| bad("{\"node\": NAME}", err))?;
                self.tenants.insert(tenant.to_owned(), placement.node);
            }
            (Key::Node(node), Some(raw)) => {
                let record: NodeRecord = serde_json::from_slice(raw)
                    .map_err(|err| bad("{\"address\": URL, \"started_ms\": N}", err))?;
                self.nodes
                    .insert(node.to_owned(), NodeSeen { record, heard });
            }
        }
        Ok(())
    }

    /// Records that this node placed `tenant` on `node` (before the watch echoes it).
    pub fn place(&mut self, tenant: &str, node: &str) {
        self.tenants.insert(tenant.to_owned(), node.to_owned());
    }

    /// Forgets `tenant` (before the watch echoes its deletion).
    pub fn unplace(&mut self, tenant: &str) {
        self.tenants.remove(tenant);
    }

    /// The node serving `tenant`, judged from node `me`.
    pub fn owner(&self, tenant: &str, me: &str) -> Owner {
        match self.tenants.get(tenant) {
            None => Owner::Nowhere,
            Some(node) if node == me => Owner::Here,
            Some(node) => Owner::Elsewhere {
                node: node.clone(),
                address: self.nodes.get(node).map(|seen| seen.record.address.clone()),
            },
        }
    }

    /// The tenant of token `id`.
    pub fn tenant_of_token(&self, id: &str) -> Option<&str> {
        self.tokens.get(id).map(String::as_str)
    }

    /// The addresses nodes said they are at.
    pub fn addresses(&self) -> impl Iterator<Item = &str> {
        self.nodes.values().map(|seen| seen.record.address.as_str())
    }

    /// The master key's public key of `node`, as it said it.
    pub fn recipient_of(&self, node: &str) -> Option<&str> {
        self.nodes.get(node)?.record.recipient.as_deref()
    }

    /// Every node heard of (by its record or named by a tenant), alive or lost, with
    /// its tenants.
    pub fn nodes(&self, now: Instant, timeout: Duration) -> Vec<NodeStatus> {
        let mut out: BTreeMap<&str, NodeStatus> = BTreeMap::new();
        for (name, seen) in &self.nodes {
            let silent = now.saturating_duration_since(seen.heard);
            out.insert(
                name,
                NodeStatus {
                    name: name.clone(),
                    address: Some(seen.record.address.clone()),
                    state: if silent < timeout { "alive" } else { "lost" },
                    silent_seconds: Some(silent.as_secs()),
                    tenants: Vec::new(),
                },
            );
        }
        for (tenant, node) in &self.tenants {
            out.entry(node)
                .or_insert_with(|| NodeStatus {
                    name: node.clone(),
                    address: None,
                    state: "lost",
                    silent_seconds: None,
                    tenants: Vec::new(),
                })
                .tenants
                .push(tenant.clone());
        }
        out.into_values().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(address: &str) -> Vec<u8> {
        serde_json::to_vec(&NodeRecord {
            address: address.to_owned(),
            started_ms: 1,
            recipient: None,
        })
        .expect("json")
    }

    fn on(node: &str) -> Vec<u8> {
        serde_json::to_vec(&TenantPlacement {
            node: node.to_owned(),
        })
        .expect("json")
    }

    #[test]
    fn a_tenant_is_served_here_elsewhere_or_nowhere() {
        let now = Instant::now();
        let mut placement = Placement::default();
        placement
            .apply("nodes.b", Some(&node("http://10.0.0.2:8080")), now)
            .expect("node");
        placement
            .apply("tenants.acme", Some(&on("a")), now)
            .expect("tenant");
        placement
            .apply("tenants.globex", Some(&on("b")), now)
            .expect("tenant");
        placement
            .apply("tenants.initech", Some(&on("c")), now)
            .expect("tenant");
        assert_eq!(placement.owner("acme", "a"), Owner::Here);
        assert_eq!(
            placement.owner("globex", "a"),
            Owner::Elsewhere {
                node: "b".into(),
                address: Some("http://10.0.0.2:8080".into())
            }
        );
        assert_eq!(
            placement.owner("initech", "a"),
            Owner::Elsewhere {
                node: "c".into(),
                address: None
            }
        );
        assert_eq!(placement.owner("hooli", "a"), Owner::Nowhere);
        placement
            .apply("tenants.globex", None, now)
            .expect("delete");
        assert_eq!(placement.owner("globex", "a"), Owner::Nowhere);
    }

    #[test]
    fn a_node_not_heard_from_for_the_timeout_is_lost_with_its_tenants() {
        let start = Instant::now();
        let timeout = Duration::from_secs(30);
        let mut placement = Placement::default();
        placement
            .apply("nodes.a", Some(&node("http://a")), start)
            .expect("node");
        placement
            .apply("nodes.b", Some(&node("http://b")), start)
            .expect("node");
        placement
            .apply("tenants.acme", Some(&on("b")), start)
            .expect("tenant");
        placement
            .apply("tenants.ghost", Some(&on("gone")), start)
            .expect("tenant");
        let later = start + Duration::from_secs(31);
        placement
            .apply("nodes.a", Some(&node("http://a")), later)
            .expect("heartbeat");
        let nodes = placement.nodes(later, timeout);
        let states: Vec<_> = nodes
            .iter()
            .map(|n| (n.name.as_str(), n.state, n.tenants.clone()))
            .collect();
        assert_eq!(
            states,
            [
                ("a", "alive", vec![]),
                ("b", "lost", vec!["acme".to_owned()]),
                ("gone", "lost", vec!["ghost".to_owned()]),
            ]
        );
        assert_eq!(nodes[1].silent_seconds, Some(31));
        assert_eq!(nodes[2].silent_seconds, None);
    }

    #[test]
    fn hostile_entries_are_refused_naming_the_key_and_change_nothing() {
        let now = Instant::now();
        let mut placement = Placement::default();
        placement
            .apply("tenants.acme", Some(&on("a")), now)
            .expect("tenant");
        for (key, value) in [
            ("tenants.acme", b"not json".as_slice()),
            ("tenants.acme", br#"{"node": 7}"#.as_slice()),
            ("nodes.a", br#"{"address": "x"}"#.as_slice()),
        ] {
            let err = placement.apply(key, Some(value), now).expect_err("refused");
            assert!(err.to_string().contains(key), "{err}");
        }
        for key in [
            "tenants.",
            "tenants.a.b",
            "nodes.x y",
            "other.acme",
            "",
            "tokens.xyz",
            "tokens.0123456789abc",
        ] {
            assert_eq!(
                placement.apply(key, Some(&on("a")), now),
                Err(EntryError::UnknownKey { key: key.into() })
            );
        }
        assert_eq!(placement.owner("acme", "a"), Owner::Here);
    }
}
