//! An integration's configuration, as the operator writes it (TOML or JSON): how its
//! deliveries are authenticated, where the event type and the delivery id are, and the
//! routes that turn a delivery of each type into canonical events. A `preset` supplies
//! all of it for a known service; every key the configuration sets overrides the
//! preset's, and a route for an event type replaces the preset's routes for that type.

use std::collections::BTreeMap;

use plugin_kit::Severity;
use plugin_kit::signature::Authentication;
use serde::Deserialize;

/// An integration's configuration.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Webhook integration")]
pub struct Settings {
    /// A mapping shipped with the plugin (`gitlab`, `jira`, `pagerduty`, `slack`,
    /// `standard-webhooks`), overridable.
    pub preset: Option<String>,
    /// How deliveries are authenticated, with the `webhook_secret` credential.
    pub authentication: Option<Authentication>,
    /// Where a delivery says its event type.
    pub event_type: Option<ValueSource>,
    /// Where a delivery says its own id (the default event id is made from it).
    pub delivery_id: Option<ValueSource>,
    /// The canonical `source` of the events (a URI-reference); a route may set its own.
    pub source: Option<String>,
    /// `service.name` of every event (over what the routes map).
    pub service: Option<String>,
    /// `deployment.environment` of every event (over what the routes map).
    pub environment: Option<String>,
    /// How a delivery of each event type becomes events.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// Event types that are a sender's handshake, answered with a body of their own and
    /// making no events (Slack's `url_verification` wants its `challenge` back).
    #[serde(default)]
    pub replies: Vec<Reply>,
}

/// The answer to a handshake: `body`, a template over the delivery, as `text/plain`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Reply {
    /// The event type answered so.
    pub when: String,
    /// The answer's body (`{/challenge}`); at most 4 KiB once rendered.
    pub body: String,
}

/// Where a value is: a header, or a JSON Pointer into the payload.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum ValueSource {
    Header(String),
    Pointer(String),
}

/// How deliveries of one event type become events: one per delivery, or one per element
/// of the array at `each`. Values are templates: `{/pointer}` into the payload, and
/// `{./pointer}` into the element.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// The event type this route maps (`*`: any type no other route maps).
    pub when: String,
    /// Only deliveries whose values at these JSON Pointers are among the listed ones.
    #[serde(default, rename = "if")]
    pub only_if: BTreeMap<String, Vec<String>>,
    /// The canonical type, `com.betalogs.{system|security|delivery}.…` (a template); its
    /// second part is the event's category.
    #[serde(rename = "type")]
    pub event_type: String,
    /// `info` unless said: a level, or a lookup.
    pub severity: Option<SeverityRule>,
    /// RFC 3339 (or `YYYY-MM-DD HH:MM:SS ±HHMM`/`UTC`); the receipt time if unset or absent.
    pub time: Option<String>,
    pub subject: Option<String>,
    /// The source's identity of this fact (it makes the event id); default: the
    /// delivery id, with the element's index under `each`.
    pub id: Option<String>,
    pub correlation: Option<String>,
    pub source: Option<String>,
    /// A JSON Pointer to an array: one event per element.
    pub each: Option<String>,
    /// Standard fields (`service.name`, `vcs.ref.head.revision`, …) → templates. A field
    /// whose template refers to something absent is left out.
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
    /// Evidence links; one whose template refers to something absent is left out.
    #[serde(default)]
    pub links: Vec<LinkRule>,
    /// Where the route was written (`routes[2]`, or the preset's), for messages.
    #[serde(skip)]
    pub origin: Option<String>,
}

/// A level, or the level looked up from a value in the payload.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum SeverityRule {
    Fixed(#[schemars(with = "SeverityName")] Severity),
    Lookup {
        /// A template (`{/incident/urgency}`), or several tried in order: the first whose
        /// value is in `values` decides.
        from: Templates,
        /// Value → level.
        #[schemars(with = "BTreeMap<String, SeverityName>")]
        values: BTreeMap<String, Severity>,
        /// The level of any other value, or of none (`info` unless said).
        #[schemars(with = "Option<SeverityName>")]
        default: Option<Severity>,
    },
}

/// One template, or a list of them.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum Templates {
    One(String),
    Many(Vec<String>),
}

impl Templates {
    pub fn as_slice(&self) -> &[String] {
        match self {
            Templates::One(one) => std::slice::from_ref(one),
            Templates::Many(many) => many,
        }
    }
}

/// A severity level, for the schema.
#[derive(schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
enum SeverityName {
    Debug,
    Info,
    Warning,
    Error,
    Critical,
}

/// `{rel, url}`: a relation (`commit`, `deployment`) and a URL template.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkRule {
    pub rel: String,
    pub url: String,
}

impl Settings {
    /// This configuration over `preset`: each key set here wins; routes (and replies)
    /// here replace the preset's for the same `when`.
    pub fn over(self, preset: Settings) -> Settings {
        let name = self.preset.clone().unwrap_or_default();
        let replaced: Vec<&str> = self.routes.iter().map(|r| r.when.as_str()).collect();
        let mut routes: Vec<Route> = preset
            .routes
            .into_iter()
            .enumerate()
            .filter(|(_, route)| !replaced.contains(&route.when.as_str()))
            .map(|(index, route)| Route {
                origin: Some(format!("preset `{name}` routes[{index}]")),
                ..route
            })
            .collect();
        routes.extend(
            self.routes
                .into_iter()
                .enumerate()
                .map(|(index, route)| Route {
                    origin: Some(format!("routes[{index}]")),
                    ..route
                }),
        );
        let mut replies: Vec<Reply> = preset
            .replies
            .into_iter()
            .filter(|reply| !self.replies.iter().any(|ours| ours.when == reply.when))
            .collect();
        replies.extend(self.replies);
        Settings {
            preset: self.preset,
            authentication: self.authentication.or(preset.authentication),
            event_type: self.event_type.or(preset.event_type),
            delivery_id: self.delivery_id.or(preset.delivery_id),
            source: self.source.or(preset.source),
            service: self.service.or(preset.service),
            environment: self.environment.or(preset.environment),
            routes,
            replies,
        }
    }
}
