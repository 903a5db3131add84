//! Tenants (operators).

use crate::args::TenantsCommand;
use crate::render::{print_table, show};
use crate::session::{Answer, Session, with_token};
use supervisor::admin::proto;

/// `integrationctl tenants`.
pub async fn run(session: &mut Session, command: TenantsCommand) -> anyhow::Result<()> {
    let (client, token, output) = session.parts();
    match command {
        TenantsCommand::Create { name } => {
            let tenant = client
                .create_tenant(with_token(proto::CreateTenantRequest { name }, token)?)
                .await
                .answer()?;
            show(output, &tenant, || {
                println!("created tenant {}", tenant.name)
            })?
        }
        TenantsCommand::List => {
            let list = client
                .list_tenants(with_token(proto::ListTenantsRequest {}, token)?)
                .await
                .answer()?;
            show(output, &list.tenants, || {
                print_table(
                    &["NAME", "CREATED (UNIX MS)"],
                    list.tenants
                        .iter()
                        .map(|t| vec![t.name.clone(), t.created_unix_ms.to_string()])
                        .collect(),
                )
            })?
        }
        TenantsCommand::Delete { name } => {
            let done = client
                .delete_tenant(with_token(proto::DeleteTenantRequest { name }, token)?)
                .await
                .answer()?;
            show(output, &done, || {
                println!(
                    "deleted tenant {} ({} token(s) revoked)",
                    done.name, done.tokens_revoked
                )
            })?
        }
        TenantsCommand::Move { name, to } => {
            let moved = client
                .move_tenant(with_token(proto::MoveTenantRequest { name, to }, token)?)
                .await
                .answer()?;
            show(output, &moved, || {
                println!(
                    "moved tenant {} to node {}: {} entries ({} bytes) and {} audit records in {} ms",
                    moved.name,
                    moved.to,
                    moved.entries,
                    moved.bytes,
                    moved.audit_records,
                    moved.milliseconds
                )
            })?
        }
    };
    Ok(())
}
