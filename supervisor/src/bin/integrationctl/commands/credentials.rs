//! Encrypted credentials.

use crate::args::CredentialsCommand;
use crate::render::{Output, print_json, print_table, show};
use crate::session::{Answer, Session, with_token};
use supervisor::admin::proto;

/// `integrationctl credentials`.
pub async fn run(session: &mut Session, command: CredentialsCommand) -> anyhow::Result<()> {
    let (client, token, output) = session.parts();
    match command {
        CredentialsCommand::Set(target) => {
            store_credential(client, target.request(false)?, token, output).await?;
        }
        CredentialsCommand::Rotate(target) => {
            store_credential(client, target.request(true)?, token, output).await?;
        }
        CredentialsCommand::List { tenant } => {
            let list = client
                .list_credentials(with_token(proto::ListCredentialsRequest { tenant }, token)?)
                .await
                .answer()?;
            print_credentials(output, &list.credentials, false)?;
        }
        CredentialsCommand::Delete { tenant, name } => {
            let info = client
                .delete_credential(with_token(
                    proto::DeleteCredentialRequest { tenant, name },
                    token,
                )?)
                .await
                .answer()?;
            show(output, &info, || {
                println!("deleted credential {} of tenant {}", info.name, info.tenant)
            })?
        }
        CredentialsCommand::RotateKey { tenant } => {
            let done = client
                .rotate_tenant_key(with_token(proto::RotateTenantKeyRequest { tenant }, token)?)
                .await
                .answer()?;
            show(output, &done, || {
                println!(
                    "new tenant key; {} credential(s) re-encrypted",
                    done.reencrypted
                )
            })?
        }
        CredentialsCommand::RotateMaster { new_master_key } => {
            let done = client
                .rotate_master_key(with_token(
                    proto::RotateMasterKeyRequest { new_master_key },
                    token,
                )?)
                .await
                .answer()?;
            show(output, &done, || {
                println!(
                    "tenant keys re-wrapped for {}; set credentials.master_key to the new key before the next restart",
                    done.recipient
                )
            })?
        }
    };
    Ok(())
}

async fn store_credential(
    client: &mut supervisor::admin::proto::admin_client::AdminClient<tonic::transport::Channel>,
    request: proto::SetCredentialRequest,
    token: Option<&str>,
    output: Output,
) -> anyhow::Result<()> {
    let info = client
        .set_credential(with_token(request, token)?)
        .await
        .answer()?;
    print_credentials(output, &[info], true)
}

/// Credential metadata; a single one (after set/rotate) as an object in JSON.
fn print_credentials(
    output: Output,
    credentials: &[proto::CredentialInfo],
    single: bool,
) -> anyhow::Result<()> {
    match output {
        Output::Json if single => print_json(&credentials[0]),
        Output::Json => print_json(&credentials),
        Output::Table => {
            let time = |ms: u64| {
                if ms == 0 {
                    "-".to_owned()
                } else {
                    ms.to_string()
                }
            };
            let rows = credentials
                .iter()
                .map(|c| {
                    vec![
                        c.name.clone(),
                        c.kind.clone(),
                        time(c.created_unix_ms),
                        time(c.expires_unix_ms),
                        time(c.last_used_unix_ms),
                        c.key_version.to_string(),
                    ]
                })
                .collect();
            print_table(
                &[
                    "NAME",
                    "KIND",
                    "CREATED (UNIX MS)",
                    "EXPIRES",
                    "LAST USED",
                    "KEY",
                ],
                rows,
            );
            Ok(())
        }
    }
}
