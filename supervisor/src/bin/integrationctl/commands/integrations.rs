//! Integrations: versioned plugin configurations of a tenant.

use crate::args::IntegrationsCommand;
use crate::render::{Output, print_json, print_table, show};
use crate::session::{Answer, Session, with_token};
use anyhow::Context;
use supervisor::admin::proto;

/// `integrationctl integrations`.
pub async fn run(session: &mut Session, command: IntegrationsCommand) -> anyhow::Result<()> {
    let (client, token, output) = session.parts();
    {
        let one = |info: proto::IntegrationInfo| print_integrations(output, &[info], true);
        let enabled = matches!(command, IntegrationsCommand::Enable { .. });
        match command {
            IntegrationsCommand::Add {
                tenant,
                name,
                plugin,
                config,
            } => {
                let request = proto::AddIntegrationRequest {
                    tenant,
                    name,
                    plugin,
                    config_json: read_config(&config)?,
                };
                one(client
                    .add_integration(with_token(request, token)?)
                    .await
                    .answer()?)?;
            }
            IntegrationsCommand::Update {
                tenant,
                name,
                config,
            } => {
                let request = proto::UpdateIntegrationRequest {
                    tenant,
                    name,
                    config_json: read_config(&config)?,
                };
                one(client
                    .update_integration(with_token(request, token)?)
                    .await
                    .answer()?)?;
            }
            IntegrationsCommand::Enable { tenant, name }
            | IntegrationsCommand::Disable { tenant, name } => {
                let request = proto::SetIntegrationEnabledRequest {
                    tenant,
                    name,
                    enabled,
                };
                one(client
                    .set_integration_enabled(with_token(request, token)?)
                    .await
                    .answer()?)?;
            }
            IntegrationsCommand::Remove { tenant, name } => {
                one(client
                    .remove_integration(with_token(proto::IntegrationRef { tenant, name }, token)?)
                    .await
                    .answer()?)?;
            }
            IntegrationsCommand::List { tenant } => {
                let list = client
                    .list_integrations(with_token(
                        proto::ListIntegrationsRequest { tenant },
                        token,
                    )?)
                    .await
                    .answer()?;
                print_integrations(output, &list.integrations, false)?;
            }
            IntegrationsCommand::Show { tenant, name } => {
                let shown = client
                    .show_integration(with_token(proto::IntegrationRef { tenant, name }, token)?)
                    .await
                    .answer()?;
                match output {
                    Output::Json => print_json(&shown)?,
                    Output::Table => {
                        let config: serde_json::Value =
                            serde_json::from_str(&shown.config_json).unwrap_or_default();
                        print_integrations(output, std::slice::from_ref(&shown), true)?;
                        println!("{}", serde_json::to_string_pretty(&config)?);
                    }
                }
            }
            IntegrationsCommand::History { tenant, name } => {
                let history = client
                    .integration_history(with_token(proto::IntegrationRef { tenant, name }, token)?)
                    .await
                    .answer()?;
                show(output, &history.versions, || {
                    for v in &history.versions {
                        println!(
                            "version {} by {} at {} ({})",
                            v.version, v.author, v.time_unix_ms, v.change
                        );
                        for line in v.diff.lines() {
                            println!("    {line}");
                        }
                    }
                })?
            }
            IntegrationsCommand::Check { tenant, name } => {
                let checked = client
                    .check_integration(with_token(proto::IntegrationRef { tenant, name }, token)?)
                    .await
                    .answer()?;
                super::health::print_check(output, &checked)?;
                if !checked.ok {
                    anyhow::bail!(
                        "the check failed ({}): {}",
                        checked.error_class,
                        checked.message
                    );
                }
            }
            IntegrationsCommand::Rollback { tenant, name, to } => {
                let request = proto::RollbackIntegrationRequest { tenant, name, to };
                one(client
                    .rollback_integration(with_token(request, token)?)
                    .await
                    .answer()?)?;
            }
        }
    };
    Ok(())
}

/// Reads an integration config file: JSON, or TOML when it does not parse as JSON.
fn read_config(path: &std::path::Path) -> anyhow::Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(&text) {
        return Ok(value.to_string());
    }
    let value: serde_json::Value = toml::from_str(&text)
        .with_context(|| format!("{} is neither JSON nor TOML", path.display()))?;
    Ok(value.to_string())
}

fn print_integrations(
    output: Output,
    integrations: &[proto::IntegrationInfo],
    single: bool,
) -> anyhow::Result<()> {
    match output {
        Output::Json if single => print_json(&integrations[0]),
        Output::Json => print_json(&integrations),
        Output::Table => {
            let rows = integrations
                .iter()
                .map(|i| {
                    vec![
                        i.name.clone(),
                        i.plugin.clone(),
                        if i.enabled {
                            "enabled".into()
                        } else {
                            format!("disabled: {}", i.disabled_reason)
                        },
                        i.version.to_string(),
                        i.state.clone(),
                        i.author.clone(),
                    ]
                })
                .collect();
            print_table(
                &["NAME", "PLUGIN", "ENABLED", "VERSION", "STATE", "AUTHOR"],
                rows,
            );
            for check in integrations.iter().flat_map(|i| &i.check) {
                println!(
                    "check {}: {} {}",
                    if check.ok { "ok" } else { "FAILED" },
                    check.resource,
                    check.permission
                );
            }
            Ok(())
        }
    }
}
