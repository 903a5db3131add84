//! Subject templates: `betalogs.events.{tenant}.{category}` for the sink (each
//! placeholder one whole token, filled from the event), `betalogs.platform.{tenant}` for
//! the source (the tenant read back from the subject a message came on).

/// The placeholders a template may use; each fills one whole token.
pub const PLACEHOLDERS: &[&str] = &["tenant", "integration", "category", "severity"];

/// One token of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(String),
    Field(&'static str),
}

/// A parsed subject template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectTemplate {
    tokens: Vec<Token>,
}

/// Why a template was refused; names the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("is empty or has an empty token (`a..b`, a leading or trailing `.`)")]
    EmptyToken,
    #[error(
        "token `{0}` names no known placeholder (use {{tenant}}, {{integration}}, {{category}} or {{severity}}, each as a whole token)"
    )]
    Unknown(String),
    #[error(
        "token `{0}` holds a wildcard, a space or a control character, which a subject to publish on cannot"
    )]
    Wildcard(String),
    #[error("needs `{{tenant}}` exactly once, as a whole token, and no other placeholder")]
    TenantOnce,
}

/// Whether `c` may stand in a subject token: no separator, wildcard or space.
fn is_token_char(c: char) -> bool {
    !c.is_whitespace() && !c.is_control() && !matches!(c, '*' | '>' | '.')
}

/// Whether `token` may stand in a subject as it is.
fn is_plain_token(token: &str) -> bool {
    !token.is_empty() && token.chars().all(is_token_char)
}

impl SubjectTemplate {
    /// Parses a template whose placeholders are among [`PLACEHOLDERS`].
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let tokens = text
            .split('.')
            .map(|token| {
                if token.is_empty() {
                    return Err(TemplateError::EmptyToken);
                }
                if let Some(name) = token.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
                    return PLACEHOLDERS
                        .iter()
                        .find(|known| **known == name)
                        .map(|known| Token::Field(known))
                        .ok_or_else(|| TemplateError::Unknown(token.to_owned()));
                }
                if token.contains(['{', '}']) {
                    return Err(TemplateError::Unknown(token.to_owned()));
                }
                if !is_plain_token(token) {
                    return Err(TemplateError::Wildcard(token.to_owned()));
                }
                Ok(Token::Literal(token.to_owned()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { tokens })
    }

    /// Parses a source's template: `{tenant}` once, no other placeholder.
    pub fn parse_tenant_subject(text: &str) -> Result<Self, TemplateError> {
        let template = Self::parse(text)?;
        let fields: Vec<&str> = template
            .tokens
            .iter()
            .filter_map(|token| match token {
                Token::Field(name) => Some(*name),
                Token::Literal(_) => None,
            })
            .collect();
        if fields != ["tenant"] {
            return Err(TemplateError::TenantOnce);
        }
        Ok(template)
    }

    /// The subject for an event whose placeholders `value` gives. A value that cannot
    /// be one token (empty, or holding `.`, a wildcard or a space) is written with `_`
    /// in place of each such character, so that an odd category cannot move an event
    /// to another tenant's subject.
    pub fn render<'v>(&self, value: impl Fn(&str) -> Option<&'v str>) -> String {
        let mut subject = String::with_capacity(64);
        for (index, token) in self.tokens.iter().enumerate() {
            if index > 0 {
                subject.push('.');
            }
            match token {
                Token::Literal(text) => subject.push_str(text),
                Token::Field(name) => match value(name).filter(|v| !v.is_empty()) {
                    Some(v) => {
                        subject.extend(v.chars().map(|c| if is_token_char(c) { c } else { '_' }))
                    }
                    None => subject.push('_'),
                },
            }
        }
        subject
    }

    /// The subjects the template can produce, as a filter: each placeholder a `*`.
    pub fn filter(&self) -> String {
        self.tokens
            .iter()
            .map(|token| match token {
                Token::Literal(text) => text.as_str(),
                Token::Field(_) => "*",
            })
            .collect::<Vec<_>>()
            .join(".")
    }

    /// The tenant of a subject this (source) template matches, or `None` when the
    /// subject does not match it.
    pub fn tenant_of<'s>(&self, subject: &'s str) -> Option<&'s str> {
        let parts: Vec<&str> = subject.split('.').collect();
        if parts.len() != self.tokens.len() {
            return None;
        }
        let mut tenant = None;
        for (part, token) in parts.into_iter().zip(&self.tokens) {
            match token {
                Token::Literal(text) if text != part => return None,
                Token::Literal(_) => {}
                Token::Field(_) => tenant = Some(part),
            }
        }
        tenant
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_fills_each_placeholder_token() {
        let template = SubjectTemplate::parse("betalogs.events.{tenant}.{category}").expect("ok");
        let subject = template.render(|name| match name {
            "tenant" => Some("acme"),
            "category" => Some("deployment"),
            _ => None,
        });
        assert_eq!(subject, "betalogs.events.acme.deployment");
        assert_eq!(template.filter(), "betalogs.events.*.*");
    }

    #[test]
    fn a_value_cannot_add_tokens_or_wildcards() {
        let template = SubjectTemplate::parse("e.{tenant}.{category}").expect("ok");
        let subject = template.render(|name| match name {
            "tenant" => Some("acme"),
            "category" => Some("x.other-tenant.>"),
            _ => Some(""),
        });
        assert_eq!(subject, "e.acme.x_other-tenant__");
        assert_eq!(template.render(|_| None), "e._._");
    }

    #[test]
    fn bad_templates_are_refused_naming_the_token() {
        assert_eq!(
            SubjectTemplate::parse("a.{tenat}"),
            Err(TemplateError::Unknown("{tenat}".into()))
        );
        assert_eq!(
            SubjectTemplate::parse("a..b"),
            Err(TemplateError::EmptyToken)
        );
        assert_eq!(
            SubjectTemplate::parse("a.>"),
            Err(TemplateError::Wildcard(">".into()))
        );
        assert_eq!(
            SubjectTemplate::parse("a.x{tenant}"),
            Err(TemplateError::Unknown("x{tenant}".into()))
        );
        assert_eq!(
            SubjectTemplate::parse_tenant_subject("a.{tenant}.{category}"),
            Err(TemplateError::TenantOnce)
        );
        assert_eq!(
            SubjectTemplate::parse_tenant_subject("a.b"),
            Err(TemplateError::TenantOnce)
        );
    }

    #[test]
    fn the_tenant_is_read_back_from_a_matching_subject_only() {
        let template =
            SubjectTemplate::parse_tenant_subject("betalogs.platform.{tenant}").expect("ok");
        assert_eq!(template.tenant_of("betalogs.platform.acme"), Some("acme"));
        assert_eq!(template.tenant_of("betalogs.platform.acme.x"), None);
        assert_eq!(template.tenant_of("betalogs.other.acme"), None);
        assert_eq!(template.filter(), "betalogs.platform.*");
    }
}
