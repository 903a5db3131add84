//! An integration's settings, read once from `Configure`: the configuration keys of
//! INTERFACE.md (cloudwatch section) and the credentials they name. Secrets go straight
//! into `secrecy` types; no error message quotes one.

use std::collections::BTreeMap;
use std::time::Duration;

use plugin_kit::signature::WebhookSecrets;
use plugin_kit::{Severity, v1};
use secrecy::SecretString;
use serde::Deserialize;

/// The environment variable through which the operator (never a tenant) lets named
/// integrations use the host's own AWS identity: `tenant/integration` entries,
/// comma-separated. The daemon passes it to plugins only when its `pass_env` lists it.
pub const DEFAULT_CHAIN_ENV: &str = "INTEGRATION_CLOUDWATCH_DEFAULT_CHAIN";

/// Why `Configure` was refused.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("the configuration is not valid: {0}")]
    Config(String),
    #[error("`accounts[{index}]` (account {account}): {why}")]
    Account {
        index: usize,
        account: String,
        why: String,
    },
    #[error("credential `{name}` is named but its secret was not sent")]
    MissingCredential { name: String },
    #[error("credential `{name}` (kind {kind}) is not usable: {why}")]
    BadCredential {
        name: String,
        kind: String,
        why: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    accounts: Vec<RawAccount>,
    #[serde(default)]
    metrics: Vec<MetricQuery>,
    #[serde(default)]
    metric_discovery: Vec<MetricDiscovery>,
    metric_delay: Option<String>,
    #[serde(default)]
    log_groups: Vec<String>,
    #[serde(default)]
    log_group_prefixes: Vec<String>,
    log_filter_pattern: Option<String>,
    log_lookback: Option<String>,
    log_page_size: Option<i32>,
    #[serde(default)]
    alarms: Vec<AlarmRule>,
    #[serde(default)]
    endpoint_url: Endpoints,
    poll_interval: Option<String>,
    backfill: Option<String>,
    #[serde(default)]
    service_map: BTreeMap<String, String>,
    #[serde(default)]
    credentials: RawRoles,
    enabled_event_types: Option<Vec<String>>,
    /// Applied by the supervisor's pipeline, not here.
    #[serde(default)]
    #[allow(dead_code)]
    mappings: Option<serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoles {
    webhook_secret: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccount {
    id: String,
    credentials: Option<String>,
    role_arn: Option<String>,
    external_id: Option<String>,
    #[serde(default)]
    use_default_chain: bool,
    regions: Vec<String>,
}

/// One configured metric: a `GetMetricData` query.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MetricQuery {
    pub namespace: String,
    pub metric: String,
    #[serde(default)]
    pub dimensions: BTreeMap<String, String>,
    pub stat: String,
    /// Seconds.
    pub period: u32,
    /// `service.name` of its events.
    pub service: Option<String>,
}

/// Metrics found with `ListMetrics`: every metric matching the filters is queried with
/// `stat` and `period`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MetricDiscovery {
    pub namespace: String,
    pub metric: Option<String>,
    /// Dimension names, each with a value or `""` for any value.
    #[serde(default)]
    pub dimensions: BTreeMap<String, String>,
    pub stat: String,
    pub period: u32,
    pub service: Option<String>,
}

/// Per-service endpoint overrides (VPC endpoints, tests).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Endpoints {
    pub cloudwatch: Option<String>,
    pub logs: Option<String>,
    pub sts: Option<String>,
    /// Where SNS subscription confirmations may point besides `sns.<region>.amazonaws.com`.
    pub sns: Option<String>,
}

/// How an account's requests are signed.
#[derive(Debug)]
pub enum AccountCredentials {
    /// An access key pair (and session token) from an `aws` credential.
    Keys {
        access_key_id: String,
        secret_access_key: SecretString,
        session_token: Option<SecretString>,
    },
    /// The host's default chain; only when the operator allowed it
    /// ([`DEFAULT_CHAIN_ENV`]).
    HostDefaultChain,
}

/// A role assumed with the account's credentials.
#[derive(Debug, Clone)]
pub struct AssumeRole {
    pub role_arn: String,
    pub external_id: Option<SecretString>,
}

/// One AWS account and the regions read in it.
#[derive(Debug)]
pub struct Account {
    pub id: String,
    pub credentials: AccountCredentials,
    pub assume_role: Option<AssumeRole>,
    pub regions: Vec<String>,
}

/// Event types the plugin produces, for `enabled_event_types`.
pub const EVENT_TYPES: [&str; 3] = ["metric", "log", "alarm"];

/// Everything the plugin needs about one integration.
#[derive(Debug)]
pub struct Settings {
    pub tenant: String,
    pub integration: String,
    pub accounts: Vec<Account>,
    pub metrics: Vec<MetricQuery>,
    pub metric_discovery: Vec<MetricDiscovery>,
    /// How long after a period ends its datapoint is read (CloudWatch aggregates late).
    pub metric_delay: Duration,
    pub log_groups: Vec<String>,
    pub log_group_prefixes: Vec<String>,
    pub log_filter_pattern: Option<String>,
    /// Read again on every poll, deduplicated by event id: late-ingested lines.
    pub log_lookback: Duration,
    /// Lines per `FilterLogEvents` page (AWS's default, 10,000, when unset); smaller
    /// pages make smaller batches.
    pub log_page_size: Option<i32>,
    pub alarm_rules: Vec<AlarmRule>,
    pub endpoints: Endpoints,
    /// Minimum time between two polls of the same integration.
    pub poll_interval: Duration,
    /// History read on the first poll.
    pub backfill: Duration,
    /// Log group, alarm name or `namespace/metric` → `service.name`.
    pub service_map: BTreeMap<String, String>,
    pub event_types: Vec<String>,
    pub webhook_secrets: Option<WebhookSecrets>,
}

fn duration(key: &str, text: Option<&str>, default: Duration) -> Result<Duration, SettingsError> {
    match text {
        None => Ok(default),
        Some(text) => humantime::parse_duration(text)
            .map_err(|e| SettingsError::Config(format!("`{key}` = `{text}`: {e}"))),
    }
}

fn valid_region(region: &str) -> bool {
    let mut parts = region.split('-');
    let first = parts.next().unwrap_or("");
    let rest: Vec<&str> = parts.collect();
    first.len() == 2
        && first.bytes().all(|b| b.is_ascii_lowercase())
        && rest.len() >= 2
        && rest
            .last()
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        && rest[..rest.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
}

impl Settings {
    /// `None` for a configuration without accounts: the instance the daemon's own
    /// config file starts, which stays idle.
    pub fn from_configure(request: &v1::ConfigureRequest) -> Result<Option<Self>, SettingsError> {
        Self::from_configure_with(request, std::env::var(DEFAULT_CHAIN_ENV).ok().as_deref())
    }

    /// As [`Settings::from_configure`], with the operator's default-chain allow list given.
    pub fn from_configure_with(
        request: &v1::ConfigureRequest,
        default_chain_allowed: Option<&str>,
    ) -> Result<Option<Self>, SettingsError> {
        let raw: RawConfig = serde_json::from_str(&request.config_json)
            .map_err(|e| SettingsError::Config(e.to_string()))?;
        if raw.accounts.is_empty() {
            return Ok(None);
        }
        let credential = |name: &str| {
            request
                .credentials
                .iter()
                .find(|c| c.name == name)
                .ok_or_else(|| SettingsError::MissingCredential {
                    name: name.to_owned(),
                })
        };
        let this_integration = format!("{}/{}", request.tenant, request.integration);
        let default_chain_allowed = default_chain_allowed
            .unwrap_or("")
            .split(',')
            .any(|entry| entry.trim() == this_integration);
        let mut accounts = Vec::with_capacity(raw.accounts.len());
        for (index, account) in raw.accounts.into_iter().enumerate() {
            let refuse = |why: String| SettingsError::Account {
                index,
                account: account.id.clone(),
                why,
            };
            if account.id.len() != 12 || !account.id.bytes().all(|b| b.is_ascii_digit()) {
                return Err(refuse("`id` must be a 12-digit AWS account id".to_owned()));
            }
            if account.regions.is_empty() {
                return Err(refuse("`regions` is empty".to_owned()));
            }
            if let Some(region) = account.regions.iter().find(|r| !valid_region(r)) {
                return Err(refuse(format!("`{region}` is not an AWS region name")));
            }
            if accounts.iter().any(|a: &Account| a.id == account.id) {
                return Err(refuse("the account is listed twice".to_owned()));
            }
            let credentials = match (&account.credentials, account.use_default_chain) {
                (Some(_), true) => {
                    return Err(refuse(
                        "`credentials` and `use_default_chain` are exclusive".to_owned(),
                    ));
                }
                (None, false) => {
                    return Err(refuse(
                        "`credentials` must name an `aws` credential".to_owned(),
                    ));
                }
                (None, true) if !default_chain_allowed => {
                    return Err(refuse(format!(
                        "`use_default_chain` needs the operator's permission: {this_integration} is not in {DEFAULT_CHAIN_ENV}"
                    )));
                }
                (None, true) => AccountCredentials::HostDefaultChain,
                (Some(name), false) => parse_keys(credential(name)?)?,
            };
            let assume_role = match account.role_arn {
                None => {
                    if account.external_id.is_some() {
                        return Err(refuse("`external_id` needs `role_arn`".to_owned()));
                    }
                    None
                }
                Some(role_arn) => {
                    if !role_arn.starts_with("arn:aws") || !role_arn.contains(":role/") {
                        return Err(refuse(format!("`{role_arn}` is not an IAM role ARN")));
                    }
                    Some(AssumeRole {
                        role_arn,
                        external_id: account.external_id.map(SecretString::from),
                    })
                }
            };
            accounts.push(Account {
                id: account.id,
                credentials,
                assume_role,
                regions: account.regions,
            });
        }
        for query in &raw.metrics {
            validate_period(query.period).map_err(|why| {
                SettingsError::Config(format!(
                    "metric {}/{}: {why}",
                    query.namespace, query.metric
                ))
            })?;
        }
        for discovery in &raw.metric_discovery {
            validate_period(discovery.period).map_err(|why| {
                SettingsError::Config(format!(
                    "metric discovery in {}: {why}",
                    discovery.namespace
                ))
            })?;
        }
        for (key, url) in [
            ("cloudwatch", &raw.endpoint_url.cloudwatch),
            ("logs", &raw.endpoint_url.logs),
            ("sts", &raw.endpoint_url.sts),
            ("sns", &raw.endpoint_url.sns),
        ] {
            if let Some(url) = url
                && !(url.starts_with("https://") || url.starts_with("http://"))
            {
                return Err(SettingsError::Config(format!(
                    "`endpoint_url.{key}` must be an http(s) URL, not `{url}`"
                )));
            }
        }
        for rule in &raw.alarms {
            rule.validate().map_err(SettingsError::Config)?;
        }
        let event_types = match raw.enabled_event_types {
            None => EVENT_TYPES.map(str::to_owned).to_vec(),
            Some(list) => {
                if let Some(unknown) = list.iter().find(|t| !EVENT_TYPES.contains(&t.as_str())) {
                    return Err(SettingsError::Config(format!(
                        "`enabled_event_types` names `{unknown}`; this plugin produces: {}",
                        EVENT_TYPES.join(", ")
                    )));
                }
                list
            }
        };
        let webhook_secrets = match &raw.credentials.webhook_secret {
            None => None,
            Some(name) => {
                // Top-level roles arrive under the role's name.
                let credential = credential("webhook_secret")?;
                Some(WebhookSecrets::from_credential(credential).map_err(|e| {
                    SettingsError::BadCredential {
                        name: name.clone(),
                        kind: credential.kind.clone(),
                        why: e.to_string(),
                    }
                })?)
            }
        };
        Ok(Some(Self {
            tenant: request.tenant.clone(),
            integration: request.integration.clone(),
            accounts,
            metrics: raw.metrics,
            metric_discovery: raw.metric_discovery,
            metric_delay: duration(
                "metric_delay",
                raw.metric_delay.as_deref(),
                Duration::from_secs(120),
            )?,
            log_groups: raw.log_groups,
            log_group_prefixes: raw.log_group_prefixes,
            log_filter_pattern: raw.log_filter_pattern.filter(|p| !p.is_empty()),
            log_lookback: duration(
                "log_lookback",
                raw.log_lookback.as_deref(),
                Duration::from_secs(300),
            )?,
            log_page_size: match raw.log_page_size {
                None => None,
                Some(size @ 1..=10_000) => Some(size),
                Some(size) => {
                    return Err(SettingsError::Config(format!(
                        "`log_page_size` = {size}: FilterLogEvents takes 1 to 10000 lines per page"
                    )));
                }
            },
            alarm_rules: raw.alarms,
            endpoints: raw.endpoint_url,
            poll_interval: duration(
                "poll_interval",
                raw.poll_interval.as_deref(),
                Duration::from_secs(60),
            )?,
            backfill: duration(
                "backfill",
                raw.backfill.as_deref(),
                Duration::from_secs(3600),
            )?,
            service_map: raw.service_map,
            event_types,
            webhook_secrets,
        }))
    }

    pub fn wants(&self, event_type: &str) -> bool {
        self.event_types.iter().any(|t| t == event_type)
    }

    /// `service.name` for a log group, an alarm or a metric, when the configuration
    /// names one.
    pub fn service_for(&self, key: &str) -> Option<&str> {
        self.service_map.get(key).map(String::as_str)
    }
}

/// An `aws` credential: `{"access_key_id", "secret_access_key", "session_token"?}`.
fn parse_keys(credential: &v1::Credential) -> Result<AccountCredentials, SettingsError> {
    let bad = |why: &str| SettingsError::BadCredential {
        name: credential.name.clone(),
        kind: credential.kind.clone(),
        why: why.to_owned(),
    };
    if credential.kind != "aws" {
        return Err(bad("an account's credentials must be an `aws` credential"));
    }
    let object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&credential.secret)
            .map_err(|_| bad("the secret is not a JSON object"))?;
    let text = |key: &str| {
        object
            .get(key)
            .and_then(serde_json::Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let (Some(access_key_id), Some(secret_access_key)) =
        (text("access_key_id"), text("secret_access_key"))
    else {
        return Err(bad(
            "it needs `access_key_id` and `secret_access_key` (a role goes in the account's `role_arn`)",
        ));
    };
    Ok(AccountCredentials::Keys {
        access_key_id: access_key_id.to_owned(),
        secret_access_key: SecretString::from(secret_access_key.to_owned()),
        session_token: text("session_token").map(|t| SecretString::from(t.to_owned())),
    })
}

/// A severity by name, as configuration files write it.
pub fn severity_by_name(name: &str) -> Option<Severity> {
    Some(match name {
        "debug" => Severity::Debug,
        "info" => Severity::Info,
        "warning" => Severity::Warning,
        "error" => Severity::Error,
        "critical" => Severity::Critical,
        _ => return None,
    })
}

/// One rule of `alarms = [...]`; the first that matches an alarm decides.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AlarmRule {
    /// A name pattern (`*` for any run of characters).
    pub name: Option<String>,
    pub namespace: Option<String>,
    /// Tags the alarm must carry (read with `ListTagsForResource` when polling).
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// `system` (the default) or `security`.
    pub category: Option<String>,
    /// Severity of the ALARM state (default `error`).
    pub severity: Option<String>,
    /// `service.name` of the alarm's events.
    pub service: Option<String>,
}

impl AlarmRule {
    pub fn validate(&self) -> Result<(), String> {
        if let Some(category) = &self.category
            && category != "system"
            && category != "security"
        {
            return Err(format!(
                "alarm rule category `{category}` is neither `system` nor `security`"
            ));
        }
        if let Some(severity) = &self.severity
            && severity_by_name(severity).is_none()
        {
            return Err(format!(
                "alarm rule severity `{severity}` is not debug, info, warning, error or critical"
            ));
        }
        Ok(())
    }
}

/// Periods CloudWatch accepts: high resolution (1, 5, 10, 20, 30 s) or multiples of a
/// minute.
pub fn validate_period(period: u32) -> Result<(), String> {
    if matches!(period, 1 | 5 | 10 | 20 | 30) || (period >= 60 && period.is_multiple_of(60)) {
        Ok(())
    } else {
        Err(format!(
            "period {period} is not 1, 5, 10, 20, 30 or a multiple of 60 seconds"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(
        config: serde_json::Value,
        credentials: &[(&str, &str, &str)],
    ) -> v1::ConfigureRequest {
        plugin_kit::testing::configure_request("acme", "cw", &config, credentials)
    }

    const KEYS: &str = r#"{"access_key_id":"AKIDEXAMPLE","secret_access_key":"hunter2"}"#;

    #[test]
    fn reads_accounts_roles_and_keys() {
        let settings = Settings::from_configure_with(
            &request(
                serde_json::json!({
                    "accounts": [
                        {"id": "123456789012", "credentials": "prod", "regions": ["us-east-1", "eu-west-1"]},
                        {"id": "210987654321", "credentials": "prod", "role_arn": "arn:aws:iam::210987654321:role/reader", "external_id": "x-1", "regions": ["us-gov-west-1"]}
                    ],
                    "metrics": [{"namespace": "AWS/EC2", "metric": "CPUUtilization", "stat": "Average", "period": 60}],
                    "log_group_prefixes": ["/ecs/"],
                    "poll_interval": "30s",
                    "credentials": {"webhook_secret": "hook"}
                }),
                &[("prod", "aws", KEYS), ("webhook_secret", "webhook-secret", r#""s""#)],
            ),
            None,
        )
        .expect("valid")
        .expect("accounts");
        assert_eq!(settings.accounts.len(), 2);
        assert!(settings.accounts[1].assume_role.is_some());
        assert_eq!(settings.poll_interval, Duration::from_secs(30));
        assert!(settings.webhook_secrets.is_some());
        assert!(settings.wants("log"));
    }

    #[test]
    fn a_configuration_without_accounts_is_idle() {
        for config in [
            serde_json::json!({}),
            serde_json::json!({"poll_interval": "30s"}),
        ] {
            assert!(
                Settings::from_configure_with(&request(config, &[]), None)
                    .expect("accepted")
                    .is_none()
            );
        }
    }

    #[test]
    fn the_host_identity_needs_the_operators_permission() {
        let config = serde_json::json!({
            "accounts": [{"id": "123456789012", "use_default_chain": true, "regions": ["us-east-1"]}]
        });
        let err = Settings::from_configure_with(&request(config.clone(), &[]), Some("other/cw"))
            .expect_err("not allowed");
        assert!(err.to_string().contains("operator"), "{err}");
        let allowed = Settings::from_configure_with(&request(config, &[]), Some("x/y, acme/cw"))
            .expect("allowed")
            .expect("accounts");
        assert!(matches!(
            allowed.accounts[0].credentials,
            AccountCredentials::HostDefaultChain
        ));
    }

    #[test]
    fn refusals_name_the_account_and_never_the_secret() {
        let account = |extra: serde_json::Value| {
            let mut a = serde_json::json!({"id": "123456789012", "credentials": "prod", "regions": ["us-east-1"]});
            for (k, v) in extra.as_object().expect("object") {
                a[k] = v.clone();
            }
            serde_json::json!({"accounts": [a]})
        };
        let cases = [
            (account(serde_json::json!({"id": "12345"})), "12-digit"),
            (
                account(serde_json::json!({"regions": ["mars-1"]})),
                "`mars-1`",
            ),
            (
                account(serde_json::json!({"regions": []})),
                "`regions` is empty",
            ),
            (
                account(serde_json::json!({"role_arn": "arn:aws:s3:::bucket"})),
                "IAM role",
            ),
            (
                account(serde_json::json!({"external_id": "x"})),
                "needs `role_arn`",
            ),
            (
                account(serde_json::json!({"credentials": "missing"})),
                "`missing`",
            ),
            (account(serde_json::json!({"colour": 1})), "colour"),
            (
                serde_json::json!({"accounts": [{"id": "123456789012", "credentials": "prod", "regions": ["us-east-1"]}], "metrics": [{"namespace": "N", "metric": "M", "stat": "Sum", "period": 7}]}),
                "period",
            ),
            (
                serde_json::json!({"accounts": [{"id": "123456789012", "credentials": "prod", "regions": ["us-east-1"]}], "endpoint_url": {"logs": "file:///etc"}}),
                "endpoint_url.logs",
            ),
        ];
        for (config, expected) in cases {
            let err = Settings::from_configure_with(
                &request(config.clone(), &[("prod", "aws", KEYS)]),
                None,
            )
            .expect_err(&config.to_string());
            let text = err.to_string();
            assert!(text.contains(expected), "{config}: {text}");
            assert!(!text.contains("hunter2"), "{text}");
        }
        let err = Settings::from_configure_with(
            &request(
                account(serde_json::json!({})),
                &[("prod", "aws", r#"{"role_arn":"hunter2"}"#)],
            ),
            None,
        )
        .expect_err("no keys");
        assert!(err.to_string().contains("access_key_id"), "{err}");
        assert!(!err.to_string().contains("hunter2"));
    }
}
