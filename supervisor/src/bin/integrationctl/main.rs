//! `integrationctl`: the admin CLI. Talks gRPC to the daemon's admin socket.
//!
//! `args` is the command line, `session` the connection (the token on every request,
//! refusals as errors), `render` the table-or-JSON output, and `commands/` one file per
//! command group; this file only dispatches.

mod args;
mod commands;
mod progress;
mod render;
mod session;

use std::process::ExitCode;

use clap::Parser;
use supervisor::admin::proto::admin_client::AdminClient;

use args::{Cli, Command};
use session::Session;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("integrationctl: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("integrationctl: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    // The plugin author's commands need no daemon.
    if let Command::Plugin { command } = cli.command {
        return commands::plugin_author::run(command, cli.output).await;
    }
    let mut session = Session {
        client: AdminClient::new(session::connect(cli.socket).await?),
        token: cli.token,
        output: cli.output,
    };
    let session = &mut session;
    match cli.command {
        Command::Status => commands::status::run(session).await,
        Command::Plugins { command } => commands::plugins::run(session, command).await,
        Command::Plugin { .. } => unreachable!("handled before connecting"),
        Command::Tenants { command } => commands::tenants::run(session, command).await,
        Command::Tokens { command } => commands::tokens::run(session, command).await,
        Command::Credentials { command } => commands::credentials::run(session, command).await,
        Command::Integrations { command } => commands::integrations::run(session, command).await,
        Command::Flags { command } => commands::flags::run(session, command).await,
        Command::Audit { command } => commands::audit::run(session, command).await,
        Command::Events { command } => commands::events::run_events(session, command).await,
        Command::Dlq { command } => commands::events::run_dlq(session, command).await,
        Command::Enrich {
            tenant,
            from,
            to,
            dry_run,
        } => commands::enrichment::run_enrich(session, (tenant, from, to, dry_run)).await,
        Command::Deployments { tenant, service } => {
            commands::enrichment::run_deployments(session, (tenant, service)).await
        }
        Command::Index { command } => commands::enrichment::run_index(session, command).await,
        Command::Health { tenant } => commands::health::run_health(session, tenant).await,
        Command::Alerts { command } => commands::health::run_alerts(session, command).await,
        Command::Backup { to } => commands::backup::run(session, &to).await,
        Command::Cluster { command } => commands::cluster::run(session, command).await,
        Command::Demo {
            tenant,
            http,
            clean,
        } => commands::demo::run(session, (tenant, http, clean)).await,
    }
}
