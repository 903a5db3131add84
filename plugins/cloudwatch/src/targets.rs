//! One [`Target`] per configured (account, region): its SDK clients, signed with that
//! account's credentials only, and its [`Resilience`] (retries with jitter, a request
//! budget, a circuit breaker), so that one broken or throttled account never slows
//! the others.
//!
//! The SDK's own retries are off: every call goes through [`Target::call`], which
//! classifies AWS errors ([`aws_verdict`]) for plugin-kit's retry loop. The host's
//! AWS identity is never loaded unless the operator allowed it
//! ([`crate::settings::DEFAULT_CHAIN_ENV`]): credentials are given explicitly, and
//! roles are assumed through STS with them (the assumed session is cached and renewed
//! by the SDK before it expires).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sdk_cloudwatch::error::{ProvideErrorMetadata, SdkError};
use plugin_kit::ErrorClass;
use plugin_kit::resilience::{
    BreakerSettings, CallError, RateBudget, Resilience, RetryPolicy, Verdict, aws_class,
    rate_budget,
};
use secrecy::ExposeSecret;

use crate::settings::{Account, AccountCredentials, Endpoints};

/// Requests per second per account and region, all APIs together (FilterLogEvents'
/// own quota is 5 per second per account and region).
pub const REQUESTS_PER_SECOND: u32 = 5;

/// Error codes AWS uses for throttling and momentary unavailability.
const TRANSIENT_CODES: [&str; 9] = [
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "LimitExceededException",
    "ServiceUnavailable",
    "InternalFailure",
];

/// An AWS error as the plugin reports it: the operation, the code and AWS's message
/// (never a credential).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{operation}: {detail}")]
pub struct AwsError {
    pub operation: &'static str,
    pub detail: String,
    /// The error code AWS answered with, if it answered.
    pub code: Option<String>,
    /// What kind of failure it is (plugin-kit's classification of AWS errors).
    pub class: ErrorClass,
}

/// The retry verdict on an SDK result: throttling, 5xx, timeouts and connection
/// failures are transient; everything else (access denied, not found, validation) is
/// permanent.
pub fn aws_verdict<T, E: ProvideErrorMetadata, R: HasStatus>(
    result: &Result<T, SdkError<E, R>>,
) -> Verdict {
    match result {
        Ok(_) => Verdict::Success,
        Err(SdkError::DispatchFailure(_) | SdkError::TimeoutError(_)) => {
            Verdict::Transient { after: None }
        }
        Err(SdkError::ResponseError(context)) if context.raw().status_code() >= 500 => {
            Verdict::Transient { after: None }
        }
        Err(SdkError::ServiceError(context)) => {
            let code = context.err().code().unwrap_or("");
            if TRANSIENT_CODES.contains(&code) || context.raw().status_code() >= 500 {
                Verdict::Transient { after: None }
            } else {
                Verdict::Permanent
            }
        }
        Err(_) => Verdict::Permanent,
    }
}

/// The HTTP status and body of a raw response (the SDKs share one response type).
pub trait HasStatus {
    fn status_code(&self) -> u16;
    /// The body, when it is in memory.
    fn body_bytes(&self) -> Option<&[u8]> {
        None
    }
}

impl HasStatus for aws_sdk_cloudwatch::config::http::HttpResponse {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }

    fn body_bytes(&self) -> Option<&[u8]> {
        self.body().bytes()
    }
}

/// The text between `<tag>` and `</tag>` in an XML error body.
fn xml_element<'a>(body: &'a str, tag: &str) -> Option<&'a str> {
    let start = body.find(&format!("<{tag}>"))? + tag.len() + 2;
    let end = start + body[start..].find(&format!("</{tag}>"))?;
    Some(body[start..end].trim()).filter(|text| !text.is_empty())
}

/// Longest excerpt of an unparsed answer put in a message.
const EXCERPT_CHARS: usize = 200;

/// The code and message of an error the SDK could not parse: an AWS XML error body
/// (`<Code>`, `<Message>`, as the query protocol and some front ends answer), or else
/// the HTTP status and the start of the body.
fn unparsed_error(status: u16, body: Option<&[u8]>) -> (Option<String>, String) {
    let text = body.map(String::from_utf8_lossy).unwrap_or_default();
    let code = xml_element(&text, "Code").map(str::to_owned);
    let message = match xml_element(&text, "Message") {
        Some(message) => message.to_owned(),
        None if text.trim().is_empty() => format!("HTTP {status} with no message"),
        None => format!(
            "HTTP {status}: {}",
            text.trim().chars().take(EXCERPT_CHARS).collect::<String>()
        ),
    };
    (code, message)
}

/// Describes an SDK error for messages: the code and message AWS sent, or what went
/// wrong on the way.
pub fn describe<E: ProvideErrorMetadata + std::error::Error, R: HasStatus>(
    operation: &'static str,
    err: &SdkError<E, R>,
) -> AwsError {
    let (code, class, detail) = match err {
        SdkError::ServiceError(context) => {
            let e = context.err();
            let status = context.raw().status_code();
            let (code, message) = match (e.code(), e.message()) {
                (Some(code), Some(message)) => (Some(code.to_owned()), message.to_owned()),
                (code, message) => {
                    let (found, described) = unparsed_error(status, context.raw().body_bytes());
                    (
                        code.map(str::to_owned).or(found),
                        message.map_or(described, str::to_owned),
                    )
                }
            };
            (
                code.clone(),
                aws_class(code.as_deref(), Some(status)),
                format!("{}: {message}", code.as_deref().unwrap_or("error")),
            )
        }
        SdkError::DispatchFailure(_) => (
            None,
            ErrorClass::Unavailable,
            "the endpoint could not be reached".to_owned(),
        ),
        SdkError::TimeoutError(_) => (
            None,
            ErrorClass::Timeout,
            "the request timed out".to_owned(),
        ),
        SdkError::ResponseError(_) => (
            None,
            ErrorClass::InvalidData,
            "the response could not be read".to_owned(),
        ),
        _ => (
            None,
            ErrorClass::Internal,
            "the request could not be built".to_owned(),
        ),
    };
    AwsError {
        operation,
        detail,
        code,
        class,
    }
}

/// One account in one region.
#[derive(Debug)]
pub struct Target {
    pub account: String,
    pub region: String,
    pub cloudwatch: aws_sdk_cloudwatch::Client,
    pub logs: aws_sdk_cloudwatchlogs::Client,
    pub sts: aws_sdk_sts::Client,
    resilience: Resilience,
}

impl Target {
    /// `account/region`, as cursors and messages name it.
    pub fn key(&self) -> String {
        format!("{}/{}", self.account, self.region)
    }

    pub fn resilience(&self) -> &Resilience {
        &self.resilience
    }

    /// Runs one AWS call with retries, the budget and the breaker.
    pub async fn call<T, E, R, F, Fut>(
        &self,
        operation: &'static str,
        call: F,
    ) -> Result<T, AwsError>
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: HasStatus + std::fmt::Debug + 'static,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, SdkError<E, R>>>,
    {
        self.resilience
            .run(call, aws_verdict)
            .await
            .map_err(|err| match err {
                CallError::BreakerOpen { retry_in, .. } => AwsError {
                    operation,
                    detail: format!(
                        "{}: circuit open after repeated failures; next try in {}s",
                        self.key(),
                        retry_in.as_secs()
                    ),
                    code: None,
                    class: ErrorClass::Unavailable,
                },
                CallError::Failed {
                    attempts,
                    cause: source,
                    ..
                } => {
                    let mut described = describe(operation, &source);
                    described.detail = format!(
                        "{} ({attempts} attempt(s)): {}",
                        self.key(),
                        described.detail
                    );
                    described
                }
            })
    }
}

/// Retry and breaker settings for every target (tests shorten them).
#[derive(Debug, Clone, Copy)]
pub struct Tuning {
    pub retry: RetryPolicy,
    pub breaker: BreakerSettings,
    pub requests_per_second: u32,
    pub timeout: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            retry: RetryPolicy::default(),
            breaker: BreakerSettings::default(),
            requests_per_second: REQUESTS_PER_SECOND,
            timeout: Duration::from_secs(30),
        }
    }
}

impl Tuning {
    /// Read from the environment for tests and operators:
    /// `INTEGRATION_CLOUDWATCH_RETRY_BASE_MS`, `INTEGRATION_CLOUDWATCH_BREAKER_COOL_DOWN_MS`.
    pub fn from_env() -> Self {
        let mut tuning = Self::default();
        let millis = |name: &str| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .map(Duration::from_millis)
        };
        if let Some(base) = millis("INTEGRATION_CLOUDWATCH_RETRY_BASE_MS") {
            tuning.retry.base = base;
            tuning.retry.cap = base * 8;
        }
        if let Some(cool_down) = millis("INTEGRATION_CLOUDWATCH_BREAKER_COOL_DOWN_MS") {
            tuning.breaker.cool_down = cool_down;
        }
        tuning
    }
}

/// Builds the targets of every account and region.
pub async fn build(accounts: &[Account], endpoints: &Endpoints, tuning: Tuning) -> Vec<Target> {
    let mut targets = Vec::new();
    for account in accounts {
        for region in &account.regions {
            let budget = rate_budget(tuning.requests_per_second, tuning.requests_per_second);
            targets.push(target(account, region, endpoints, tuning, budget).await);
        }
    }
    targets
}

async fn target(
    account: &Account,
    region: &str,
    endpoints: &Endpoints,
    tuning: Tuning,
    budget: Arc<RateBudget>,
) -> Target {
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .operation_attempt_timeout(tuning.timeout)
        .connect_timeout(Duration::from_secs(5))
        .build();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(region.to_owned()))
        .retry_config(RetryConfig::disabled())
        .timeout_config(timeouts);
    if let Some(sts) = &endpoints.sts {
        loader = loader.endpoint_url(sts);
    }
    loader = match &account.credentials {
        AccountCredentials::Keys {
            access_key_id,
            secret_access_key,
            session_token,
        } => loader.credentials_provider(Credentials::new(
            access_key_id,
            secret_access_key.expose_secret(),
            session_token.as_ref().map(|t| t.expose_secret().to_owned()),
            None,
            "integration-configuration",
        )),
        // The operator allowed the host's chain for this integration: the loader's
        // default credential chain.
        AccountCredentials::HostDefaultChain => loader,
    };
    let base = loader.load().await;
    let config = match &account.assume_role {
        None => base,
        Some(role) => {
            let mut builder = aws_config::sts::AssumeRoleProvider::builder(&role.role_arn)
                .session_name(format!("betalogs-{}", account.id))
                .region(Region::new(region.to_owned()))
                .configure(&base);
            if let Some(external_id) = &role.external_id {
                builder = builder.external_id(external_id.expose_secret());
            }
            let provider = builder.build().await;
            with_credentials(&base, SharedCredentialsProvider::new(provider))
        }
    };
    let cloudwatch = {
        let mut builder = aws_sdk_cloudwatch::config::Builder::from(&config);
        builder.set_endpoint_url(endpoints.cloudwatch.clone());
        aws_sdk_cloudwatch::Client::from_conf(builder.build())
    };
    let logs = {
        let mut builder = aws_sdk_cloudwatchlogs::config::Builder::from(&config);
        builder.set_endpoint_url(endpoints.logs.clone());
        aws_sdk_cloudwatchlogs::Client::from_conf(builder.build())
    };
    let sts = aws_sdk_sts::Client::new(&config);
    let name = format!("aws:{}/{}", account.id, region);
    Target {
        account: account.id.clone(),
        region: region.to_owned(),
        cloudwatch,
        logs,
        sts,
        resilience: Resilience::new(name, tuning.retry, tuning.breaker).with_budget(budget),
    }
}

fn with_credentials(base: &SdkConfig, provider: SharedCredentialsProvider) -> SdkConfig {
    base.to_builder().credentials_provider(provider).build()
}

#[cfg(test)]
mod unparsed_error_tests {
    use super::*;

    #[test]
    fn an_xml_error_body_gives_its_code_and_message() {
        // The shape of an AWS query-protocol error (as moto answers a JSON-protocol
        // call it refuses).
        let body = br#"<?xml version="1.0" encoding="utf-8"?>
<ErrorResponse><Errors><Error><Code>AccessDenied</Code><Message>User: arn:aws:iam::123456789012:user/reader is not authorized to perform: logs:FilterLogEvents</Message><Type>Sender</Type></Error></Errors></ErrorResponse>"#;
        let (code, message) = unparsed_error(403, Some(body));
        assert_eq!(code.as_deref(), Some("AccessDenied"));
        assert!(
            message.starts_with("User: arn:aws:iam::123456789012:user/reader is not authorized")
        );
        assert_eq!(
            aws_class(code.as_deref(), Some(403)),
            ErrorClass::Permission
        );
    }

    #[test]
    fn anything_else_gives_the_status_and_a_bounded_excerpt() {
        assert_eq!(
            unparsed_error(502, None),
            (None, "HTTP 502 with no message".to_owned())
        );
        let (code, message) = unparsed_error(500, Some("x".repeat(10_000).as_bytes()));
        assert_eq!(code, None);
        assert_eq!(message.len(), "HTTP 500: ".len() + EXCERPT_CHARS);
        let (_, message) = unparsed_error(400, Some(b"<Code></Code><Message>"));
        assert!(message.starts_with("HTTP 400: "), "{message}");
    }
}
