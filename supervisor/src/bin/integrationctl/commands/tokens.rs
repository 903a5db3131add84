//! Tenant tokens (operators).

use crate::args::TokensCommand;
use crate::render::{print_table, show};
use crate::session::{Answer, Session, with_token};
use supervisor::admin::proto;

/// `integrationctl tokens`.
pub async fn run(session: &mut Session, command: TokensCommand) -> anyhow::Result<()> {
    let (client, token, output) = session.parts();
    match command {
        TokensCommand::Create {
            tenant,
            scope,
            all_tenants,
        } => {
            let issued = client
                .create_token(with_token(
                    proto::CreateTokenRequest {
                        tenant: tenant.unwrap_or_default(),
                        scope,
                        all_tenants,
                    },
                    token,
                )?)
                .await
                .answer()?;
            show(
                output,
                &serde_json::json!({ "tenant": issued.tenant, "token": issued.token, "id": issued.id, "scope": issued.scope }),
                || {
                    println!("{}", issued.token);
                    eprintln!(
                        "token {} ({} scope) for tenant {}: shown only now",
                        issued.id, issued.scope, issued.tenant
                    );
                },
            )?
        }
        TokensCommand::List { tenant } => {
            let list = client
                .list_tokens(with_token(proto::ListTokensRequest { tenant }, token)?)
                .await
                .answer()?;
            show(output, &list.tokens, || {
                print_table(
                    &["ID", "TENANT", "SCOPE", "CREATED (UNIX MS)"],
                    list.tokens
                        .iter()
                        .map(|t| {
                            vec![
                                t.id.clone(),
                                t.tenant.clone(),
                                t.scope.clone(),
                                t.created_unix_ms.to_string(),
                            ]
                        })
                        .collect(),
                )
            })?
        }
        TokensCommand::Revoke { id } => {
            let info = client
                .revoke_token(with_token(proto::RevokeTokenRequest { id }, token)?)
                .await
                .answer()?;
            show(output, &info, || {
                println!("revoked token {} of tenant {}", info.id, info.tenant)
            })?
        }
    };
    Ok(())
}
