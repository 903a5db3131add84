//! `Check`: for each account and region, the credentials are this account's
//! (`sts:GetCallerIdentity`), and the configured log groups, metrics and alarms can be
//! read. Each failure names the account, region, resource and action.

use plugin_kit::{ErrorClass, v1};

use crate::settings::Settings;
use crate::targets::{AwsError, Target};

/// A failed check: its class and what to tell the person who must act.
type Failure = (ErrorClass, String);

fn failed(err: AwsError) -> Failure {
    (err.class, err.to_string())
}

fn result(resource: String, permission: &str, outcome: Result<(), Failure>) -> v1::CheckResult {
    let (error_class, message) = match outcome {
        Ok(()) => (String::new(), String::new()),
        Err((class, message)) => (class.as_str().to_owned(), message),
    };
    v1::CheckResult {
        ok: error_class.is_empty(),
        message,
        error_class,
        resource,
        permission: permission.to_owned(),
    }
}

/// Checks every target.
pub async fn check(targets: &[Target], settings: &Settings) -> v1::CheckResponse {
    let mut results = Vec::new();
    for target in targets {
        let key = target.key();
        let identity = target
            .call("sts:GetCallerIdentity", || {
                target.sts.get_caller_identity().send()
            })
            .await;
        let identity = match identity {
            Ok(identity) if identity.account() == Some(target.account.as_str()) => Ok(()),
            Ok(identity) => Err((
                ErrorClass::Config,
                format!(
                    "the credentials belong to account {}, not {}",
                    identity.account().unwrap_or("(none)"),
                    target.account
                ),
            )),
            Err(err) => Err(failed(err)),
        };
        let denied = identity.is_err();
        results.push(result(
            format!("{key} account"),
            "sts:GetCallerIdentity",
            identity,
        ));
        if denied {
            // Nothing else can be read with credentials that do not work.
            continue;
        }
        for group in &settings.log_groups {
            let outcome = target
                .call("logs:DescribeLogGroups", || {
                    target
                        .logs
                        .describe_log_groups()
                        .log_group_name_prefix(group)
                        .limit(50)
                        .send()
                })
                .await
                .map_err(failed)
                .and_then(|page| {
                    if page
                        .log_groups()
                        .iter()
                        .any(|g| g.log_group_name() == Some(group.as_str()))
                    {
                        Ok(())
                    } else {
                        Err((
                            ErrorClass::Config,
                            format!("log group `{group}` does not exist"),
                        ))
                    }
                });
            results.push(result(
                format!("{key} log group {group}"),
                "logs:DescribeLogGroups",
                outcome,
            ));
            let outcome = target
                .call("logs:FilterLogEvents", || {
                    target
                        .logs
                        .filter_log_events()
                        .log_group_name(group)
                        .limit(1)
                        .send()
                })
                .await
                .map(|_| ())
                .map_err(failed);
            results.push(result(
                format!("{key} log group {group}"),
                "logs:FilterLogEvents",
                outcome,
            ));
        }
        for metric in &settings.metrics {
            let outcome = target
                .call("cloudwatch:ListMetrics", || {
                    target
                        .cloudwatch
                        .list_metrics()
                        .namespace(&metric.namespace)
                        .metric_name(&metric.metric)
                        .send()
                })
                .await
                .map(|_| ())
                .map_err(failed);
            results.push(result(
                format!("{key} metric {}/{}", metric.namespace, metric.metric),
                "cloudwatch:ListMetrics",
                outcome,
            ));
        }
        if settings.wants("alarm") {
            let outcome = target
                .call("cloudwatch:DescribeAlarms", || {
                    target.cloudwatch.describe_alarms().max_records(1).send()
                })
                .await
                .map(|_| ())
                .map_err(failed);
            results.push(result(
                format!("{key} alarms"),
                "cloudwatch:DescribeAlarms",
                outcome,
            ));
        }
    }
    if settings.webhook_secrets.is_none() {
        results.push(result(
            "webhook secret".to_owned(),
            "credentials.webhook_secret",
            Err((
                ErrorClass::Config,
                "not set: SNS and EventBridge deliveries are refused (polling still works)"
                    .to_owned(),
            )),
        ));
    }
    v1::CheckResponse {
        ok: results
            .iter()
            .all(|r| r.ok || r.permission == "credentials.webhook_secret"),
        results,
    }
}
