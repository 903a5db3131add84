//! The audit trail.

use crate::args::AuditCommand;
use crate::render::{Output, print_json, print_table, show};
use crate::session::{Answer, Session, with_token};
use supervisor::admin::proto;

/// `integrationctl audit`.
pub async fn run(session: &mut Session, command: AuditCommand) -> anyhow::Result<()> {
    let (client, token, output) = session.parts();
    match command {
        AuditCommand::List {
            tenant,
            kind,
            since_ms,
            until_ms,
            limit,
        } => {
            let request = proto::ListAuditRequest {
                tenant: tenant.unwrap_or_default(),
                action_prefix: kind.unwrap_or_default(),
                since_unix_ms: since_ms,
                until_unix_ms: until_ms,
                limit,
            };
            let list = client
                .list_audit(with_token(request, token)?)
                .await
                .answer()?;
            show(output, &list.records, || {
                print_table(
                    &[
                        "SEQ",
                        "TIME (UNIX MS)",
                        "TENANT",
                        "ACTOR",
                        "ACTION",
                        "TARGET",
                        "OUTCOME",
                        "DETAIL",
                    ],
                    list.records
                        .iter()
                        .map(|r| {
                            vec![
                                r.seq.to_string(),
                                r.time_unix_ms.to_string(),
                                r.tenant.clone(),
                                r.actor.clone(),
                                r.action.clone(),
                                r.target.clone(),
                                r.outcome.clone(),
                                r.detail.chars().take(60).collect(),
                            ]
                        })
                        .collect(),
                )
            })?
        }
        AuditCommand::Verify { anchor } => {
            let request = proto::VerifyAuditRequest {
                anchor: anchor.unwrap_or_default(),
            };
            let verdict = client
                .verify_audit(with_token(request, token)?)
                .await
                .answer()?;
            match output {
                Output::Json => print_json(&verdict)?,
                Output::Table if verdict.ok => {
                    println!("audit chain intact: {} records", verdict.records);
                    if !verdict.head.is_empty() {
                        println!("head (keep it off this host): {}", verdict.head);
                    }
                }
                Output::Table => {}
            }
            if !verdict.ok {
                anyhow::bail!("audit chain broken: {}", verdict.error);
            }
        }
    };
    Ok(())
}
