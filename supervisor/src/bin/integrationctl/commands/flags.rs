//! Feature flags.

use crate::args::FlagsCommand;
use crate::render::{print_table, show};
use crate::session::{Answer, Session, with_token};
use supervisor::admin::proto;

/// `integrationctl flags`.
pub async fn run(session: &mut Session, command: FlagsCommand) -> anyhow::Result<()> {
    let (client, token, output) = session.parts();
    match command {
        FlagsCommand::List { tenant } => {
            let list = client
                .list_flags(with_token(
                    proto::ListFlagsRequest {
                        tenant: tenant.unwrap_or_default(),
                    },
                    token,
                )?)
                .await
                .answer()?;
            show(output, &list.flags, || {
                print_table(
                    &["KEY", "VALUE", "SOURCE"],
                    list.flags
                        .iter()
                        .map(|f| vec![f.key.clone(), f.value.to_string(), f.source.clone()])
                        .collect(),
                )
            })?
        }
        FlagsCommand::Set { tenant, assignment } => {
            let flag = client
                .set_flag(with_token(
                    proto::SetFlagRequest {
                        tenant: tenant.unwrap_or_default(),
                        assignment,
                    },
                    token,
                )?)
                .await
                .answer()?;
            show(output, &flag, || {
                println!("{}={} ({})", flag.key, flag.value, flag.source)
            })?
        }
    };
    Ok(())
}
