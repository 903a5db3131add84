//! Health and alerts: `health`, `integrations check`'s report, `alerts list`,
//! `alerts channels`, `alerts test`.

use std::io::Read;

use anyhow::Context;
use serde_json::Value;

use crate::args::{AlertsCommand, ChannelsCommand};
use crate::render::{Output, print_table, show};
use crate::session::{Answer, Session, with_token};
use supervisor::admin::proto;

fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(s) if s.is_empty() => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn age(value: &Value) -> String {
    value
        .get("age_seconds")
        .and_then(Value::as_u64)
        .map_or_else(|| "-".to_owned(), |s| format!("{s}s ago"))
}

fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max).collect();
    cut.push('…');
    cut
}

/// `integrationctl health [--tenant T]`.
pub async fn run_health(session: &mut Session, tenant: Option<String>) -> anyhow::Result<()> {
    let (client, token, output) = session.parts();
    let document = client
        .health(with_token(
            proto::HealthRequest {
                tenant: tenant.unwrap_or_default(),
            },
            token,
        )?)
        .await
        .answer()?;
    let value: Value =
        serde_json::from_str(&document.json).context("the daemon's answer is not JSON")?;
    show(output, &value, || {
        let empty = Vec::new();
        let alerts = value["alerts"].as_array().unwrap_or(&empty);
        if !alerts.is_empty() {
            println!("FIRING ALERTS");
            print_alerts(alerts);
            println!();
        }
        let rows = value["integrations"]
            .as_array()
            .unwrap_or(&empty)
            .iter()
            .map(|i| {
                let error = &i["last_error"];
                vec![
                    text(&i["tenant"]),
                    text(&i["integration"]),
                    text(&i["plugin"]),
                    text(&i["state"]),
                    age(&i["last_success"]),
                    text(&i["freshness"]),
                    format!("{}/{}", i["errors_5m"], i["errors_1h"]),
                    text(&error["class"]),
                    i["dead_letters_24h"].to_string(),
                    i["process"]["restarts"].to_string(),
                    cut(
                        &if i["reason"].as_str().is_some_and(|r| !r.is_empty()) {
                            text(&i["reason"])
                        } else {
                            text(&error["message"])
                        },
                        100,
                    ),
                ]
            })
            .collect();
        print_table(
            &[
                "TENANT",
                "INTEGRATION",
                "PLUGIN",
                "STATE",
                "LAST SUCCESS",
                "FRESHNESS",
                "ERRORS 5M/1H",
                "CLASS",
                "DLQ 24H",
                "RESTARTS",
                "WHY",
            ],
            rows,
        );
    })
}

fn print_alerts(alerts: &[Value]) {
    print_table(
        &[
            "ID",
            "STATE",
            "SEVERITY",
            "RULE",
            "TENANT",
            "INTEGRATION",
            "STARTED",
            "RESOLVED",
            "SUMMARY",
        ],
        alerts
            .iter()
            .map(|a| {
                vec![
                    text(&a["id"]),
                    text(&a["state"]),
                    text(&a["severity"]),
                    text(&a["rule"]),
                    text(&a["tenant"]),
                    text(&a["integration"]),
                    text(&a["started_at"]),
                    text(&a["resolved_at"]),
                    cut(&text(&a["summary"]), 100),
                ]
            })
            .collect(),
    );
}

/// The report of `integrations check`.
pub fn print_check(
    output: Output,
    checked: &proto::CheckIntegrationResponse,
) -> anyhow::Result<()> {
    show(output, checked, || {
        print_table(
            &["RESOURCE", "PERMISSION", "OK", "CLASS", "MESSAGE"],
            checked
                .results
                .iter()
                .map(|r| {
                    vec![
                        r.resource.clone(),
                        r.permission.clone(),
                        if r.ok { "yes" } else { "NO" }.to_owned(),
                        if r.error_class.is_empty() {
                            "-".to_owned()
                        } else {
                            r.error_class.clone()
                        },
                        r.message.clone(),
                    ]
                })
                .collect(),
        );
        println!();
        println!(
            "{}; the integration is now {}",
            if checked.ok {
                "check passed".to_owned()
            } else {
                format!(
                    "check FAILED ({}): {}",
                    checked.error_class, checked.message
                )
            },
            checked.state
        );
    })
}

/// `integrationctl alerts …`.
pub async fn run_alerts(session: &mut Session, command: AlertsCommand) -> anyhow::Result<()> {
    let (client, token, output) = session.parts();
    match command {
        AlertsCommand::List { tenant, state } => {
            let document = client
                .list_alerts(with_token(
                    proto::ListAlertsRequest {
                        tenant: tenant.unwrap_or_default(),
                        state: state.unwrap_or_default(),
                    },
                    token,
                )?)
                .await
                .answer()?;
            let value: Value =
                serde_json::from_str(&document.json).context("the daemon's answer is not JSON")?;
            show(output, &value, || {
                print_alerts(value["alerts"].as_array().map_or(&[], Vec::as_slice));
            })
        }
        AlertsCommand::Test { tenant, channel } => {
            let answer = client
                .test_alert_channel(with_token(
                    proto::AlertChannelRef {
                        tenant: tenant.unwrap_or_default(),
                        name: channel,
                    },
                    token,
                )?)
                .await
                .answer()?;
            show(output, &answer, || println!("{}", answer.message))?;
            if !answer.delivered {
                anyhow::bail!("the test notification was not delivered");
            }
            Ok(())
        }
        AlertsCommand::Channels { command } => match command {
            ChannelsCommand::Add {
                tenant,
                name,
                url,
                format,
                min_severity,
                secret_file,
            } => {
                let secret = match (&secret_file, format.as_str()) {
                    (Some(path), _) => std::fs::read(path).with_context(|| {
                        format!("cannot read the secret from {}", path.display())
                    })?,
                    (None, "betalogs") => {
                        let mut buffer = Vec::new();
                        std::io::stdin()
                            .take(supervisor::credentials::MAX_SECRET_BYTES as u64 + 1)
                            .read_to_end(&mut buffer)
                            .context("cannot read the secret from stdin")?;
                        buffer
                    }
                    (None, _) => Vec::new(),
                };
                let info = client
                    .add_alert_channel(with_token(
                        proto::AddAlertChannelRequest {
                            tenant,
                            name,
                            url,
                            format,
                            min_severity,
                            secret,
                        },
                        token,
                    )?)
                    .await
                    .answer()?;
                show(output, &info, || {
                    print_channels(std::slice::from_ref(&info))
                })
            }
            ChannelsCommand::List { tenant } => {
                let list = client
                    .list_alert_channels(with_token(
                        proto::ListAlertChannelsRequest {
                            tenant: tenant.unwrap_or_default(),
                        },
                        token,
                    )?)
                    .await
                    .answer()?;
                show(output, &list.channels, || print_channels(&list.channels))
            }
            ChannelsCommand::Remove { tenant, name } => {
                let info = client
                    .remove_alert_channel(with_token(
                        proto::AlertChannelRef { tenant, name },
                        token,
                    )?)
                    .await
                    .answer()?;
                show(output, &info, || {
                    println!("removed alert channel {}", info.name)
                })
            }
        },
    }
}

fn print_channels(channels: &[proto::AlertChannelInfo]) {
    print_table(
        &[
            "TENANT",
            "NAME",
            "FORMAT",
            "ENDPOINT",
            "MIN SEVERITY",
            "SIGNED",
            "QUEUED",
            "DELIVERED",
            "FAILURES",
            "LAST ERROR",
        ],
        channels
            .iter()
            .map(|c| {
                vec![
                    if c.tenant.is_empty() {
                        "(operator)".to_owned()
                    } else {
                        c.tenant.clone()
                    },
                    c.name.clone(),
                    c.format.clone(),
                    c.endpoint.clone(),
                    c.min_severity.clone(),
                    if c.signed { "yes" } else { "no" }.to_owned(),
                    c.queued.to_string(),
                    c.delivered.to_string(),
                    c.failures.to_string(),
                    if c.last_error.is_empty() {
                        "-".to_owned()
                    } else {
                        c.last_error.clone()
                    },
                ]
            })
            .collect(),
    );
}
