//! What a plugin can do: each capability is a set of protocol calls it answers. A
//! manifest declares them, `Describe` offers them, and the host starts the work that
//! uses them (collect loops, webhook routes, enrichment asks) by this type, never by
//! comparing strings.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Capability {
    /// `Check`: permissions and reachability of a configuration.
    Check,
    /// `Collect`: pull events with a cursor.
    Collect,
    /// `HandleWebhook`: pushed deliveries.
    Webhook,
    /// `Enrich`: context about a failure.
    Enrich,
}

impl Capability {
    /// Every capability, in declaration order.
    pub const ALL: [Capability; 4] = [
        Capability::Check,
        Capability::Collect,
        Capability::Webhook,
        Capability::Enrich,
    ];

    /// Its name in manifests and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Capability::Check => "check",
            Capability::Collect => "collect",
            Capability::Webhook => "webhook",
            Capability::Enrich => "enrich",
        }
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A capability name that is none of [`Capability::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("capability `{0}` is unknown; known: check, collect, webhook, enrich")]
pub struct UnknownCapability(pub String);

impl FromStr for Capability {
    type Err = UnknownCapability;
    fn from_str(name: &str) -> Result<Self, UnknownCapability> {
        Capability::ALL
            .into_iter()
            .find(|c| c.as_str() == name)
            .ok_or_else(|| UnknownCapability(name.to_owned()))
    }
}

/// A set of capabilities; compared as sets, whatever order they were listed in.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Capabilities(u8);

impl Capabilities {
    pub fn contains(self, capability: Capability) -> bool {
        self.0 & capability.bit() != 0
    }

    pub fn insert(&mut self, capability: Capability) {
        self.0 |= capability.bit();
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The capabilities in the set, in [`Capability::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Capability> {
        Capability::ALL
            .into_iter()
            .filter(move |c| self.contains(*c))
    }

    /// The set of `names` (as `Describe` sends them).
    pub fn parse<S: AsRef<str>>(names: &[S]) -> Result<Self, UnknownCapability> {
        names.iter().map(|name| name.as_ref().parse()).collect()
    }

    /// The names, as `Describe` sends them.
    pub fn names(self) -> Vec<String> {
        self.iter().map(|c| c.as_str().to_owned()).collect()
    }
}

impl fmt::Debug for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.iter().map(Capability::as_str))
            .finish()
    }
}

impl FromIterator<Capability> for Capabilities {
    fn from_iter<I: IntoIterator<Item = Capability>>(iter: I) -> Self {
        let mut set = Capabilities::default();
        iter.into_iter().for_each(|c| set.insert(c));
        set
    }
}

impl<const N: usize> From<[Capability; N]> for Capabilities {
    fn from(capabilities: [Capability; N]) -> Self {
        capabilities.into_iter().collect()
    }
}

impl Serialize for Capabilities {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter().map(Capability::as_str))
    }
}

impl<'de> Deserialize<'de> for Capabilities {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let names = Vec::<String>::deserialize(deserializer)?;
        Capabilities::parse(&names).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_compare_whatever_the_order_and_unknown_names_are_named() {
        let a = Capabilities::parse(&["webhook", "collect"]).expect("known");
        let b = Capabilities::from([Capability::Collect, Capability::Webhook]);
        assert_eq!(a, b);
        assert!(a.contains(Capability::Webhook) && !a.contains(Capability::Enrich));
        assert_eq!(a.names(), ["collect", "webhook"]);
        let err = Capabilities::parse(&["collect", "telepathy"]).expect_err("unknown");
        assert_eq!(err, UnknownCapability("telepathy".into()));
        assert!(
            err.to_string()
                .contains("capability `telepathy` is unknown")
        );
        assert!(Capabilities::default().is_empty());
    }
}
