//! A configuration compiled into what maps deliveries: every template parsed, every
//! field name and link relation checked, at `Configure`. Mapping a delivery then finds
//! its event type, the routes for it, and renders their events; a delivery the routes
//! cannot map is answered 422 naming the route and the pointer, and nothing of it is
//! kept.

use std::borrow::Cow;

use crate::config::{LinkRule, Reply, Route, Settings, SeverityRule, ValueSource};
use crate::payload::Json;
use crate::template::{Pointer, RenderError, Scope, Template};
use plugin_kit::config::ConfigError;
use plugin_kit::signature::Authentication;
use plugin_kit::{
    Category, EventBuilder, MAX_WEBHOOK_REPLY_BYTES as MAX_REPLY_BYTES, MapContext, Severity,
    is_field_name, v1,
};

/// The most events one delivery may yield (an array under `each` is cut there).
pub const MAX_EVENTS_PER_DELIVERY: usize = 1000;

/// What maps one integration's deliveries.
#[derive(Debug)]
pub struct Mapping {
    pub authentication: Authentication,
    event_type: Source,
    delivery_id: Option<Source>,
    source: Template,
    service: Option<String>,
    environment: Option<String>,
    routes: Vec<CompiledRoute>,
    replies: Vec<CompiledReply>,
}

/// Where a delivery says a value: a header, or a compiled pointer into its body.
#[derive(Debug)]
enum Source {
    Header(String),
    Pointer(Pointer),
}

impl From<ValueSource> for Source {
    fn from(source: ValueSource) -> Self {
        match source {
            ValueSource::Header(name) => Source::Header(name),
            ValueSource::Pointer(pointer) => Source::Pointer(Pointer::new(&pointer)),
        }
    }
}

#[derive(Debug)]
struct CompiledReply {
    when: String,
    body: Template,
}

#[derive(Debug)]
struct CompiledRoute {
    /// `routes[i] (when = "…")`, for messages.
    name: String,
    when: String,
    only_if: Vec<(Pointer, Vec<String>)>,
    event_type: Template,
    severity: CompiledSeverity,
    time: Option<Template>,
    subject: Option<Template>,
    id: Option<Template>,
    correlation: Option<Template>,
    source: Option<Template>,
    each: Option<Pointer>,
    fields: Vec<(String, Template)>,
    links: Vec<(String, Template)>,
}

#[derive(Debug)]
enum CompiledSeverity {
    Fixed(Severity),
    Lookup {
        from: Vec<Template>,
        values: Vec<(String, Severity)>,
        default: Severity,
    },
}

/// What became of a delivery.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// Canonical events, as JSON.
    Events(Vec<String>),
    /// No route maps it: acknowledged, recorded as ignored.
    Ignored(String),
    /// A handshake: answered with this text.
    Reply(String),
}

/// Why a delivery could not be mapped: the HTTP status its sender hears and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refused {
    pub status: u32,
    pub message: String,
}

fn refused(status: u32, message: impl Into<String>) -> Refused {
    Refused {
        status,
        message: message.into(),
    }
}

fn field_error(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Field {
        path: path.into(),
        message: message.into(),
    }
}

/// A link relation, as the canonical schema requires (`commit`, `merge_request`).
fn is_link_rel(rel: &str) -> bool {
    rel.len() <= 64
        && rel.starts_with(|c: char| c.is_ascii_lowercase())
        && rel
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c))
}

/// A canonical type: `com.betalogs.{system|security|delivery}.name` with the category.
fn canonical_type(text: &str) -> Option<Category> {
    let rest = text.strip_prefix("com.betalogs.")?;
    let (category, name) = rest.split_once('.')?;
    let category = match category {
        "system" => Category::System,
        "security" => Category::Security,
        "delivery" => Category::Delivery,
        _ => return None,
    };
    let valid = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.');
    valid.then_some(category)
}

/// A value for a message: escaped, and cut short.
fn shown(text: &str) -> String {
    let escaped: String = text.escape_debug().take(80).collect();
    format!("\"{escaped}\"")
}

impl Mapping {
    /// Compiles `settings` (already over its preset); errors name the key.
    pub fn compile(settings: Settings) -> Result<Self, ConfigError> {
        let authentication = settings.authentication.ok_or_else(|| {
            field_error(
                "authentication",
                "missing: say how deliveries are authenticated (or choose a `preset`)",
            )
        })?;
        let event_type = settings.event_type.ok_or_else(|| {
            field_error(
                "event_type",
                "missing: a `header` or a `pointer` that names each delivery's event type",
            )
        })?;
        if let ValueSource::Pointer(pointer) | ValueSource::Header(pointer) = &event_type
            && pointer.is_empty()
        {
            return Err(field_error("event_type", "is empty"));
        }
        let source = Template::compile(
            settings.source.as_deref().unwrap_or("urn:betalogs:webhook"),
            false,
        )
        .map_err(|why| field_error("source", why))?;
        if settings.routes.is_empty() {
            return Err(field_error(
                "routes",
                "none: add a `[[routes]]` for each event type to map (or choose a `preset`)",
            ));
        }
        let routes = settings
            .routes
            .into_iter()
            .enumerate()
            .map(|(index, route)| compile_route(index, route, settings.delivery_id.is_some()))
            .collect::<Result<Vec<_>, _>>()?;
        let replies = settings
            .replies
            .into_iter()
            .enumerate()
            .map(|(index, reply)| compile_reply(index, reply))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            authentication,
            event_type: event_type.into(),
            delivery_id: settings.delivery_id.map(Source::from),
            source,
            service: settings.service,
            environment: settings.environment,
            routes,
            replies,
        })
    }

    /// How many routes map deliveries.
    pub fn route_count(&self) -> usize {
        self.routes.len()
    }

    /// Maps a verified delivery, parsed as `body`, received at `received` (RFC 3339).
    pub fn map(
        &self,
        request: &v1::WebhookRequest,
        body: &Json<'_>,
        body_text: &str,
        context: &MapContext,
        received: &str,
    ) -> Result<Outcome, Refused> {
        let event_type = Self::read(&self.event_type, request, body, "event type")?;
        // A handshake has no delivery id of its own (Slack's `url_verification`).
        if let Some(reply) = self.replies.iter().find(|r| r.when == event_type) {
            return reply.answer(body);
        }
        let delivery = match &self.delivery_id {
            Some(source) => Some(Self::read(source, request, body, "delivery id")?),
            None => None,
        };
        let mut candidates: Vec<&CompiledRoute> = self
            .routes
            .iter()
            .filter(|r| r.when == event_type)
            .collect();
        if candidates.is_empty() {
            candidates = self.routes.iter().filter(|r| r.when == "*").collect();
        }
        if candidates.is_empty() {
            return Ok(Outcome::Ignored(format!(
                "event type {} has no route",
                shown(&event_type)
            )));
        }
        let matching: Vec<&CompiledRoute> = candidates
            .into_iter()
            .filter(|route| route.applies(body))
            .collect();
        if matching.is_empty() {
            return Ok(Outcome::Ignored(format!(
                "no route for event type {} applies to this delivery",
                shown(&event_type)
            )));
        }
        let mut events = Vec::new();
        for route in matching {
            route.emit(
                self,
                body,
                body_text,
                delivery.as_deref(),
                context,
                received,
                &mut events,
            )?;
        }
        Ok(Outcome::Events(events))
    }

    /// A header's or a pointer's value, as text.
    fn read(
        source: &Source,
        request: &v1::WebhookRequest,
        body: &Json<'_>,
        what: &str,
    ) -> Result<String, Refused> {
        let value = match source {
            Source::Header(name) => request.header(name).map(str::to_owned).ok_or_else(|| {
                refused(400, format!("the delivery has no `{name}` header ({what})"))
            })?,
            Source::Pointer(pointer) => match pointer.find(body) {
                Some(found @ (Json::String(_) | Json::Number(_))) => {
                    found.as_text().map(Cow::into_owned).unwrap_or_default()
                }
                _ => {
                    return Err(refused(
                        400,
                        format!(
                            "the delivery has no text at `{}` ({what})",
                            pointer.as_str()
                        ),
                    ));
                }
            },
        };
        if value.is_empty() || value.len() > 256 || value.chars().any(char::is_control) {
            return Err(refused(
                400,
                format!(
                    "the delivery's {what} {} is empty, too long or holds control characters",
                    shown(&value)
                ),
            ));
        }
        Ok(value)
    }
}

impl CompiledReply {
    fn answer(&self, body: &Json<'_>) -> Result<Outcome, Refused> {
        let scope = Scope {
            root: body,
            element: None,
        };
        let text = self
            .body
            .render(scope)
            .map_err(|err| refused(422, format!("the reply to {}: {err}", shown(&self.when))))?;
        if text.len() > MAX_REPLY_BYTES {
            return Err(refused(
                422,
                format!(
                    "the reply to {} would be {} bytes, more than {MAX_REPLY_BYTES}",
                    shown(&self.when),
                    text.len()
                ),
            ));
        }
        Ok(Outcome::Reply(text.into_owned()))
    }
}

fn compile_reply(index: usize, reply: Reply) -> Result<CompiledReply, ConfigError> {
    let at = |key: &str| format!("replies[{index}].{key}");
    if reply.when.is_empty() {
        return Err(field_error(at("when"), "is empty"));
    }
    Ok(CompiledReply {
        body: Template::compile(&reply.body, false).map_err(|why| field_error(at("body"), why))?,
        when: reply.when,
    })
}

fn compile_route(
    index: usize,
    route: Route,
    has_delivery_id: bool,
) -> Result<CompiledRoute, ConfigError> {
    let origin = route
        .origin
        .clone()
        .unwrap_or_else(|| format!("routes[{index}]"));
    let at = |key: &str| format!("{origin}.{key}");
    let in_each = route.each.is_some();
    let template = |key: &str, text: &str| {
        Template::compile(text, in_each).map_err(|why| field_error(at(key), why))
    };
    let optional = |key: &str, text: &Option<String>| {
        text.as_deref().map(|text| template(key, text)).transpose()
    };
    if route.when.is_empty() {
        return Err(field_error(at("when"), "is empty"));
    }
    if let Some(each) = &route.each
        && !each.starts_with('/')
    {
        return Err(field_error(
            at("each"),
            "is not a JSON Pointer (`/commits`)",
        ));
    }
    if route.id.is_none() && !has_delivery_id {
        return Err(field_error(
            at("id"),
            "missing, and the configuration has no `delivery_id`: events need an identity to be deduplicated",
        ));
    }
    for pointer in route.only_if.keys() {
        if !pointer.starts_with('/') {
            return Err(field_error(
                at(&format!("if.{pointer}")),
                "is not a JSON Pointer",
            ));
        }
    }
    let severity = match &route.severity {
        None => CompiledSeverity::Fixed(Severity::Info),
        Some(SeverityRule::Fixed(level)) => CompiledSeverity::Fixed(*level),
        Some(SeverityRule::Lookup {
            from,
            values,
            default,
        }) => CompiledSeverity::Lookup {
            from: from
                .as_slice()
                .iter()
                .map(|text| template("severity.from", text))
                .collect::<Result<_, _>>()?,
            values: values.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            default: default.unwrap_or(Severity::Info),
        },
    };
    let mut fields = Vec::with_capacity(route.fields.len());
    for (name, text) in &route.fields {
        if !is_field_name(name) {
            return Err(field_error(
                at(&format!("fields.{name}")),
                "is not a dotted standard name (`service.name`, `vcs.ref.head.revision`)",
            ));
        }
        fields.push((name.clone(), template(&format!("fields.{name}"), text)?));
    }
    let mut links = Vec::with_capacity(route.links.len());
    for (position, LinkRule { rel, url }) in route.links.iter().enumerate() {
        let key = format!("links[{position}]");
        if !is_link_rel(rel) {
            return Err(field_error(
                at(&format!("{key}.rel")),
                "is not a link relation (lowercase letters, digits, `_`, `.`, `-`)",
            ));
        }
        links.push((rel.clone(), template(&format!("{key}.url"), url)?));
    }
    Ok(CompiledRoute {
        name: format!("{origin} (when = {})", shown(&route.when)),
        event_type: template("type", &route.event_type)?,
        time: optional("time", &route.time)?,
        subject: optional("subject", &route.subject)?,
        id: optional("id", &route.id)?,
        correlation: optional("correlation", &route.correlation)?,
        source: optional("source", &route.source)?,
        only_if: route
            .only_if
            .into_iter()
            .map(|(pointer, allowed)| (Pointer::new(&pointer), allowed))
            .collect(),
        when: route.when,
        each: route.each.as_deref().map(Pointer::new),
        severity,
        fields,
        links,
    })
}

impl CompiledRoute {
    fn applies(&self, body: &Json<'_>) -> bool {
        self.only_if.iter().all(|(pointer, allowed)| {
            pointer
                .find(body)
                .and_then(Json::as_text)
                .is_some_and(|found| allowed.iter().any(|a| *a == found))
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn emit(
        &self,
        mapping: &Mapping,
        body: &Json<'_>,
        body_text: &str,
        delivery: Option<&str>,
        context: &MapContext,
        received: &str,
        out: &mut Vec<String>,
    ) -> Result<(), Refused> {
        let failed =
            |what: &str, err: RenderError| refused(422, format!("{}: {what}: {err}", self.name));
        let elements: Vec<Option<&Json<'_>>> = match &self.each {
            None => vec![None],
            Some(pointer) => match pointer.find(body) {
                Some(Json::Array(items)) => items
                    .iter()
                    .take(MAX_EVENTS_PER_DELIVERY)
                    .map(Some)
                    .collect(),
                Some(_) => {
                    return Err(refused(
                        422,
                        format!(
                            "{}: `each` `{}` is not an array",
                            self.name,
                            pointer.as_str()
                        ),
                    ));
                }
                // No array, no events: a push without commits.
                None => Vec::new(),
            },
        };
        // An element's original, written back from the tree (its strings are slices of
        // the body: this copies them, it does not parse the body again).
        let mut original = String::new();
        for (index, element) in elements.into_iter().enumerate() {
            if out.len() >= MAX_EVENTS_PER_DELIVERY {
                break;
            }
            let scope = Scope {
                root: body,
                element,
            };
            let event_type = self
                .event_type
                .render(scope)
                .map_err(|e| failed("type", e))?;
            let category = canonical_type(&event_type).ok_or_else(|| {
                refused(
                    422,
                    format!(
                        "{}: the mapped type {} is not `com.betalogs.{{system|security|delivery}}.name`",
                        self.name,
                        shown(&event_type)
                    ),
                )
            })?;
            let source_id = match (&self.id, delivery) {
                (Some(id), _) => id.render(scope).map_err(|e| failed("id", e))?,
                (None, Some(delivery)) if self.each.is_some() => {
                    Cow::Owned(format!("{delivery}:{index}"))
                }
                (None, Some(delivery)) => Cow::Borrowed(delivery),
                // Refused at compile time; answered rather than assumed.
                (None, None) => {
                    return Err(refused(
                        422,
                        format!("{}: the event has no identity", self.name),
                    ));
                }
            };
            let time = match &self.time {
                None => Cow::Borrowed(received),
                Some(time) => match time.render(scope) {
                    Err(RenderError::Missing(_)) => Cow::Borrowed(received),
                    Err(err) => return Err(failed("time", err)),
                    Ok(text) => {
                        let message = || {
                            refused(
                                422,
                                format!(
                                    "{}: time: {} is not an RFC 3339 time",
                                    self.name,
                                    shown(&text)
                                ),
                            )
                        };
                        normalize_time(text.clone()).ok_or_else(message)?
                    }
                },
            };
            let source = match &self.source {
                Some(source) => source.render(scope),
                None => mapping.source.render(scope),
            }
            .map_err(|e| failed("source", e))?;
            if source.is_empty() || source.len() > 1024 || source.chars().any(char::is_control) {
                return Err(refused(
                    422,
                    format!(
                        "{}: the source {} is not a URI-reference",
                        self.name,
                        shown(&source)
                    ),
                ));
            }
            let mut event = EventBuilder::new(event_type, category, source, source_id, time)
                .severity(self.severity(scope));
            if let Some(subject) = optional_text(&self.subject, scope) {
                event = event.subject(cut(subject, 1024));
            }
            if let Some(correlation) = optional_text(&self.correlation, scope) {
                event = event.correlation(cut(correlation, 256));
            }
            for (name, template) in &self.fields {
                if let Ok(value) = template.render_value(scope) {
                    event = event.field(name.as_str(), value);
                }
            }
            // The integration's own word on what it covers wins over the routes'.
            if let Some(service) = &mapping.service {
                event = event.field("service.name", service.as_str());
            }
            if let Some(environment) = &mapping.environment {
                event = event.field("deployment.environment", environment.as_str());
            }
            for (rel, url) in &self.links {
                if let Ok(url) = url.render(scope)
                    && (url.starts_with("https://") || url.starts_with("http://"))
                    && url.len() <= 2048
                    && !url.chars().any(char::is_control)
                {
                    event = event.link(rel.as_str(), url);
                }
            }
            event = match element {
                Some(element) => {
                    original.clear();
                    element.write_to(&mut original);
                    event.original_json_text(&original)
                }
                None => event.original_json_text(body_text),
            };
            let json = event
                .to_json(context)
                .map_err(|e| refused(422, format!("{}: {e}", self.name)))?;
            out.push(json);
        }
        Ok(())
    }

    fn severity(&self, scope: Scope<'_>) -> Severity {
        match &self.severity {
            CompiledSeverity::Fixed(level) => *level,
            CompiledSeverity::Lookup {
                from,
                values,
                default,
            } => from
                .iter()
                .filter_map(|template| template.render(scope).ok())
                .find_map(|value| values.iter().find(|(k, _)| *k == value).map(|(_, v)| *v))
                .unwrap_or(*default),
        }
    }
}

fn optional_text<'t>(template: &'t Option<Template>, scope: Scope<'t>) -> Option<Cow<'t, str>> {
    template.as_ref().and_then(|t| t.render(scope).ok())
}

fn cut(text: Cow<'_, str>, max: usize) -> Cow<'_, str> {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    match text {
        Cow::Borrowed(text) => Cow::Borrowed(&text[..end]),
        Cow::Owned(mut text) => {
            text.truncate(end);
            Cow::Owned(text)
        }
    }
}

/// RFC 3339 as it is; `YYYY-MM-DD HH:MM:SS UTC` and `YYYY-MM-DD HH:MM:SS ±HHMM` (as
/// GitLab writes some times) and `YYYY-MM-DDTHH:MM:SS.sss±HHMM` (as Jira writes them)
/// rewritten as RFC 3339.
pub fn normalize_time(text: Cow<'_, str>) -> Option<Cow<'_, str>> {
    let trimmed = text.trim();
    if plugin_kit::event_time_ms(trimmed).is_some() {
        return Some(match text {
            Cow::Borrowed(text) => Cow::Borrowed(text.trim()),
            Cow::Owned(ref owned) if owned.len() == trimmed.len() => text,
            Cow::Owned(_) => Cow::Owned(trimmed.to_owned()),
        });
    }
    let text = trimmed;
    if let Some(split) = text.len().checked_sub(5)
        && text.is_char_boundary(split)
        && text.contains('T')
    {
        let (date_time, zone) = text.split_at(split);
        if zone.starts_with(['+', '-']) && zone[1..].bytes().all(|b| b.is_ascii_digit()) {
            let rewritten = format!("{date_time}{}:{}", &zone[..3], &zone[3..]);
            return plugin_kit::event_time_ms(&rewritten).map(|_| Cow::Owned(rewritten));
        }
    }
    let (date_time, zone) = text.rsplit_once(' ')?;
    let (date, time) = date_time.split_once(' ')?;
    let offset = match zone {
        "UTC" | "Z" => "Z".to_owned(),
        _ if zone.len() == 5 && zone.starts_with(['+', '-']) => {
            format!("{}:{}", &zone[..3], &zone[3..])
        }
        _ => return None,
    };
    let rewritten = format!("{date}T{time}{offset}");
    plugin_kit::event_time_ms(&rewritten).map(|_| Cow::Owned(rewritten))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_types_and_times_are_checked_as_the_canonical_schema_would() {
        assert!(is_field_name("vcs.ref.head.revision"));
        assert!(!is_field_name("service"));
        assert!(!is_field_name("Service.name"));
        assert!(!is_field_name("a..b"));
        assert_eq!(
            canonical_type("com.betalogs.delivery.push"),
            Some(Category::Delivery)
        );
        assert_eq!(canonical_type("com.betalogs.finance.push"), None);
        assert_eq!(canonical_type("com.betalogs.system.bad\u{7}type"), None);
        assert_eq!(
            normalize_time("2021-04-28 21:50:00 +0200".into()).as_deref(),
            Some("2021-04-28T21:50:00+02:00")
        );
        assert_eq!(
            normalize_time("2021-04-28 19:50:00 UTC".into()).as_deref(),
            Some("2021-04-28T19:50:00Z")
        );
        assert_eq!(
            normalize_time("2024-12-02T13:00:00.000+0100".into()).as_deref(),
            Some("2024-12-02T13:00:00.000+01:00")
        );
        assert_eq!(normalize_time("2024-12-02T13:00:00.000+01x0".into()), None);
        assert_eq!(normalize_time("2024-12-02T25:00:00.000+0100".into()), None);
        assert_eq!(normalize_time("yesterday".into()), None);
    }
}
