//! A tenant's stored events and dead letters.

use crate::args::{DlqCommand, EventsCommand};
use crate::render::{print_table, show};
use crate::session::{Answer, Session, status_error, with_token};
use supervisor::admin::proto;

/// `integrationctl events`.
pub async fn run_events(session: &mut Session, command: EventsCommand) -> anyhow::Result<()> {
    let EventsCommand::Tail {
        tenant,
        last,
        follow,
    } = command;
    let (client, token, _) = session.parts();
    {
        let request = proto::TailEventsRequest {
            tenant,
            last,
            follow,
        };
        let mut lines = client
            .tail_events(with_token(request, token)?)
            .await
            .answer()?;
        while let Some(line) = lines.message().await.map_err(status_error)? {
            println!("{}", line.json);
        }
    };
    Ok(())
}

/// `integrationctl dlq`.
pub async fn run_dlq(session: &mut Session, command: DlqCommand) -> anyhow::Result<()> {
    let (client, token, output) = session.parts();
    match command {
        DlqCommand::List {
            tenant,
            integration,
            limit,
        } => {
            let request = proto::DeadLetterQuery {
                tenant,
                integration: integration.unwrap_or_default(),
                limit,
                ..Default::default()
            };
            let list = client
                .list_dead_letters(with_token(request, token)?)
                .await
                .answer()?;
            show(output, &list.letters, || {
                print_table(
                    &["ID", "TIME (UNIX MS)", "INTEGRATION", "STAGE", "REASON"],
                    list.letters
                        .iter()
                        .map(|l| {
                            vec![
                                l.id.clone(),
                                l.time_unix_ms.to_string(),
                                l.integration.clone(),
                                l.stage.clone(),
                                l.reason.chars().take(80).collect(),
                            ]
                        })
                        .collect(),
                )
            })?
        }
        DlqCommand::Show { tenant, id } => {
            let letter = client
                .show_dead_letter(with_token(proto::DeadLetterRef { tenant, id }, token)?)
                .await
                .answer()?;
            show(output, &letter, || {
                println!("id:          {}", letter.id);
                println!("integration: {}", letter.integration);
                println!("stage:       {}", letter.stage);
                println!("time:        {} (unix ms)", letter.time_unix_ms);
                println!("reason:      {}", letter.reason);
                println!("payload:\n{}", letter.payload);
            })?
        }
        DlqCommand::Replay(selection) => {
            let outcome = client
                .replay_dead_letters(with_token(selection.query(), token)?)
                .await
                .answer()?;
            show(output, &outcome, || {
                println!(
                    "{} stored, {} already stored, {} still invalid",
                    outcome.stored,
                    outcome.duplicates,
                    outcome.still_invalid.len()
                );
                for line in &outcome.still_invalid {
                    println!("  {line}");
                }
            })?
        }
        DlqCommand::Purge(selection) => {
            let outcome = client
                .purge_dead_letters(with_token(selection.query(), token)?)
                .await
                .answer()?;
            show(output, &outcome, || println!("{} purged", outcome.purged))?
        }
    }
    Ok(())
}
