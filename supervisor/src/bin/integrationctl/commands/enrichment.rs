//! Enrichment: batch runs, the change-failure view, the correlation index.

use crate::args::IndexCommand;
use crate::progress::{Progress, while_working};
use crate::render::{parse_time, print_table, rfc3339, show};
use crate::session::{Answer, Session, status_error, with_token};
use plugin_kit::clock::now_ms as unix_ms_now;
use supervisor::admin::proto;

/// `integrationctl index`.
pub async fn run_index(session: &mut Session, command: IndexCommand) -> anyhow::Result<()> {
    let IndexCommand::Rebuild { tenant } = command;
    let (client, token, output) = session.parts();
    {
        let mut progress = Progress::new(output);
        let call = client.rebuild_index(with_token(proto::RebuildIndexRequest { tenant }, token)?);
        let summary = while_working(&mut progress, "rebuilding the correlation index", call)
            .await
            .answer()?;
        show(
            output,
            &serde_json::json!({
                "events": summary.events,
                "entries": summary.entries,
                "failures": summary.failures,
                "skipped": summary.skipped,
                "files": summary.files,
            }),
            || {
                println!(
                    "rebuilt: {} events read, {} index entries, {} failures",
                    summary.events, summary.entries, summary.failures
                );
                if summary.skipped > 0 {
                    println!("skipped {} unreadable lines", summary.skipped);
                }
                for file in &summary.files {
                    println!("read {file}");
                }
            },
        )?
    };
    Ok(())
}

/// `integrationctl enrich`: the run's progress on a terminal, its outcome at the end.
pub async fn run_enrich(
    session: &mut Session,
    (tenant, from, to, dry_run): (String, String, String, bool),
) -> anyhow::Result<()> {
    let (client, token, output) = session.parts();
    let now = unix_ms_now();
    let request = proto::EnrichRequest {
        tenant,
        from_unix_ms: parse_time(&from, now)?,
        to_unix_ms: parse_time(&to, now)?,
        dry_run,
    };
    let mut updates = client.enrich(with_token(request, token)?).await.answer()?;
    let mut progress = Progress::new(output);
    let mut last = proto::EnrichProgress::default();
    while let Some(update) = updates.message().await.map_err(status_error)? {
        progress.update(&progress_line(&update));
        last = update;
    }
    progress.finish();
    show(
        output,
        &serde_json::json!({
            "total": last.total,
            "scanned": last.scanned,
            "enriched": last.enriched,
            "unchanged": last.unchanged,
            "dry_run": dry_run,
            "done": last.done,
        }),
        || {
            println!(
                "{}scanned {} failures, enriched {}, unchanged {}",
                if dry_run { "dry run: " } else { "" },
                last.scanned,
                last.enriched,
                last.unchanged
            )
        },
    )?;
    Ok(())
}

/// `integrationctl deployments`: each deployment and each service's change-failure rate.
pub async fn run_deployments(
    session: &mut Session,
    (tenant, service): (String, Option<String>),
) -> anyhow::Result<()> {
    let (client, token, output) = session.parts();
    let request = proto::ListDeploymentsRequest {
        tenant,
        service: service.unwrap_or_default(),
    };
    let list = client
        .list_deployments(with_token(request, token)?)
        .await
        .answer()?;
    let rates = supervisor::correlation::change_failure_rates(list.deployments.iter().map(|d| {
        let restored = (d.time_to_restore_ms > 0).then_some(d.time_to_restore_ms);
        (d.service.as_str(), !d.failures.is_empty(), restored)
    }));
    show(
        output,
        &serde_json::json!({
            "deployments": list.deployments,
            "services": rates,
        }),
        || {
            print_table(
                &[
                    "TIME",
                    "SERVICE",
                    "ENVIRONMENT",
                    "REVISION",
                    "FAILURES",
                    "RESTORED IN",
                    "URL",
                ],
                list.deployments
                    .iter()
                    .map(|d| {
                        vec![
                            rfc3339(d.time_unix_ms),
                            d.service.clone(),
                            d.environment.clone(),
                            d.revision.chars().take(12).collect(),
                            d.failures.len().to_string(),
                            restored_in(d),
                            d.url.clone(),
                        ]
                    })
                    .collect(),
            );
            println!();
            for rate in &rates {
                let restore = match rate.mean_time_to_restore_ms {
                    Some(ms) => format!(
                        ", mean time to restore {} over {} restored",
                        minutes(ms),
                        rate.restored
                    ),
                    None => String::new(),
                };
                println!(
                    "{}: {} of {} deployment(s) followed by failures (change-failure rate {:.0}%){restore}",
                    rate.service,
                    rate.failed,
                    rate.deployments,
                    rate.change_failure_rate * 100.0
                );
            }
        },
    )?;
    Ok(())
}

/// How long the deployment's failures took to resolve: `-` without failures, `open`
/// while any is unresolved.
fn restored_in(deployment: &proto::DeploymentInfo) -> String {
    match (
        deployment.failures.is_empty(),
        deployment.time_to_restore_ms,
    ) {
        (true, _) => "-".to_owned(),
        (false, 0) => "open".to_owned(),
        (false, ms) => minutes(ms),
    }
}

/// `32m`, `1h 05m`, or seconds under a minute.
fn minutes(ms: u64) -> String {
    let seconds = ms / 1000;
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3600 => format!("{}m", seconds / 60),
        _ => format!("{}h {:02}m", seconds / 3600, seconds % 3600 / 60),
    }
}

/// `[#####.....]  45%  45000/100000` on one line of stderr.
fn progress_line(progress: &proto::EnrichProgress) -> String {
    let total = progress.total.max(1);
    let done = progress.scanned.min(total);
    let filled = usize::try_from(done * 30 / total).unwrap_or(30);
    format!(
        "[{}{}] {:3}%  {}/{}  enriched {}",
        "#".repeat(filled),
        ".".repeat(30 - filled),
        done * 100 / total,
        progress.scanned,
        progress.total,
        progress.enriched
    )
}
