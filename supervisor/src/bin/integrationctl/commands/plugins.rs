//! Installed plugins: list, show, trust, restart, rescan.

use crate::args::PluginsCommand;
use crate::render::{print_instances, print_plugins, show};
use crate::session::{Answer, Session, with_token};
use supervisor::admin::proto;

/// `integrationctl plugins`.
pub async fn run(session: &mut Session, command: PluginsCommand) -> anyhow::Result<()> {
    let (client, token, output) = session.parts();
    match command {
        PluginsCommand::List => {
            let list = client
                .list_plugins(with_token(proto::ListPluginsRequest {}, token)?)
                .await
                .answer()?;
            show(output, &list, || {
                print_plugins(&list.plugins, &list.unreadable)
            })?
        }
        PluginsCommand::Show { name } => {
            let shown = client
                .show_plugin(with_token(proto::ShowPluginRequest { name }, token)?)
                .await
                .answer()?;
            show(output, &shown, || {
                print_plugins(&shown.versions, &[]);
                println!();
                print_instances(&shown.instances);
            })?
        }
        PluginsCommand::Trust {
            name,
            version,
            sha256,
        } => {
            let request = proto::TrustPluginRequest {
                name,
                version: version.unwrap_or_default(),
                sha256: sha256.unwrap_or_default(),
            };
            let pin = client
                .trust_plugin(with_token(request, token)?)
                .await
                .answer()?;
            show(output, &pin, || {
                println!("trusted {} {} sha256={}", pin.name, pin.version, pin.sha256);
                if !pin.executable.is_empty() {
                    let owner = pin
                        .executable_owner_uid
                        .map_or("unknown".to_owned(), |uid| format!("uid {uid}"));
                    println!("executable {} (owner {owner})", pin.executable);
                }
            })?
        }
        PluginsCommand::Restart { name, tenant } => {
            let request = proto::RestartPluginRequest {
                name: name.clone(),
                tenant: tenant.unwrap_or_default(),
            };
            let done = client
                .restart_plugin(with_token(request, token)?)
                .await
                .answer()?;
            show(output, &done, || {
                println!("restarting {} instance(s) of {name}", done.restarted)
            })?
        }
        PluginsCommand::Rescan => {
            let scan = client
                .rescan_plugins(with_token(proto::RescanPluginsRequest {}, token)?)
                .await
                .answer()?;
            show(output, &scan, || {
                print_plugins(&scan.plugins, &scan.refused)
            })?
        }
    };
    Ok(())
}
