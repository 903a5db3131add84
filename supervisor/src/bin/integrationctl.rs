//! `integrationctl`: the admin CLI. Talks gRPC to the daemon's admin socket.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use hyper_util::rt::TokioIo;
use supervisor::admin::proto;
use supervisor::admin::proto::admin_client::AdminClient;
use tonic::transport::{Channel, Endpoint};

/// Manage a running integrationd.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// The daemon's admin socket.
    #[arg(
        long,
        env = "INTEGRATIONCTL_SOCKET",
        default_value = "/run/integrationd/admin.sock"
    )]
    socket: PathBuf,
    /// A tenant token; without one, the caller's uid is checked.
    #[arg(long, env = "INTEGRATIONCTL_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Table)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The daemon and every plugin instance.
    Status,
    /// Installed plugins.
    Plugins {
        #[command(subcommand)]
        command: PluginsCommand,
    },
}

#[derive(Debug, Subcommand)]
enum PluginsCommand {
    /// Every installed plugin version, trusted or not, and why any cannot run.
    List,
    /// One plugin's installed versions and instances.
    Show { name: String },
    /// Pin a plugin's checksum (its current SHA-256 unless --sha256 is given).
    Trust {
        name: String,
        /// The version to trust (default: the one that runs, else the newest).
        #[arg(long)]
        version: Option<String>,
        /// The expected SHA-256, from the plugin's release notes.
        #[arg(long)]
        sha256: Option<String>,
    },
    /// Restart a plugin's instances gracefully.
    Restart {
        name: String,
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Scan the plugin directory again.
    Rescan,
}

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

async fn connect(socket: PathBuf) -> anyhow::Result<Channel> {
    let shown = socket.display().to_string();
    Endpoint::from_static("http://admin.invalid")
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move {
                tokio::net::UnixStream::connect(socket)
                    .await
                    .map(TokioIo::new)
            }
        }))
        .await
        .with_context(|| {
            format!("cannot reach integrationd at {shown} (is it running? see --socket)")
        })
}

fn with_token<T>(message: T, token: Option<&str>) -> anyhow::Result<tonic::Request<T>> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        let value = format!("Bearer {token}")
            .parse()
            .context("the token contains characters not allowed in a header")?;
        request.metadata_mut().insert("authorization", value);
    }
    Ok(request)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut client = AdminClient::new(connect(cli.socket).await?);
    let token = cli.token.as_deref();
    let status_error = |status: tonic::Status| anyhow::anyhow!("{}", status.message());
    match cli.command {
        Command::Status => {
            let response = client
                .status(with_token(proto::StatusRequest {}, token)?)
                .await
                .map_err(status_error)?;
            let status = response.into_inner();
            match cli.output {
                Output::Json => print_json(&status)?,
                Output::Table => print_status(&status),
            }
        }
        Command::Plugins { command } => match command {
            PluginsCommand::List => {
                let list = client
                    .list_plugins(with_token(proto::ListPluginsRequest {}, token)?)
                    .await
                    .map_err(status_error)?;
                let list = list.into_inner();
                match cli.output {
                    Output::Json => print_json(&list)?,
                    Output::Table => print_plugins(&list.plugins, &list.unreadable),
                }
            }
            PluginsCommand::Show { name } => {
                let shown = client
                    .show_plugin(with_token(proto::ShowPluginRequest { name }, token)?)
                    .await
                    .map_err(status_error)?;
                let shown = shown.into_inner();
                match cli.output {
                    Output::Json => print_json(&shown)?,
                    Output::Table => {
                        print_plugins(&shown.versions, &[]);
                        println!();
                        print_instances(&shown.instances);
                    }
                }
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
                    .map_err(status_error)?
                    .into_inner();
                match cli.output {
                    Output::Json => print_json(&pin)?,
                    Output::Table => {
                        println!("trusted {} {} sha256={}", pin.name, pin.version, pin.sha256)
                    }
                }
            }
            PluginsCommand::Restart { name, tenant } => {
                let request = proto::RestartPluginRequest {
                    name: name.clone(),
                    tenant: tenant.unwrap_or_default(),
                };
                let done = client
                    .restart_plugin(with_token(request, token)?)
                    .await
                    .map_err(status_error)?
                    .into_inner();
                match cli.output {
                    Output::Json => print_json(&done)?,
                    Output::Table => {
                        println!("restarting {} instance(s) of {name}", done.restarted)
                    }
                }
            }
            PluginsCommand::Rescan => {
                let scan = client
                    .rescan_plugins(with_token(proto::RescanPluginsRequest {}, token)?)
                    .await
                    .map_err(status_error)?;
                let scan = scan.into_inner();
                match cli.output {
                    Output::Json => print_json(&scan)?,
                    Output::Table => print_plugins(&scan.plugins, &scan.refused),
                }
            }
        },
    }
    Ok(())
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Prints rows as left-aligned columns.
fn print_table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.iter().map(|h| (*h).to_owned()).collect());
    for row in rows {
        line(row);
    }
}

fn print_status(status: &proto::StatusResponse) {
    println!(
        "integrationd {} pid {} up {}s",
        status.version, status.pid, status.uptime_seconds
    );
    println!();
    print_instances(&status.instances);
    for refusal in &status.refused {
        println!("refused: {}", refusal.reason);
    }
}

fn print_instances(instances: &[proto::InstanceStatus]) {
    let rows = instances
        .iter()
        .map(|i| {
            vec![
                i.tenant.clone(),
                i.integration.clone(),
                i.plugin.clone(),
                i.state.clone(),
                if i.pid == 0 {
                    "-".into()
                } else {
                    i.pid.to_string()
                },
                if i.version.is_empty() {
                    "-".into()
                } else {
                    i.version.clone()
                },
                i.restarts.to_string(),
                i.last_error.chars().take(80).collect(),
            ]
        })
        .collect();
    print_table(
        &[
            "TENANT",
            "INTEGRATION",
            "PLUGIN",
            "STATE",
            "PID",
            "VERSION",
            "RESTARTS",
            "LAST ERROR",
        ],
        rows,
    );
}

fn print_plugins(plugins: &[proto::PluginInfo], refused: &[proto::PluginRefusal]) {
    let rows = plugins
        .iter()
        .map(|p| {
            let status = if !p.refusal.is_empty() {
                "refused"
            } else if p.trusted_sha256.is_empty() {
                "untrusted"
            } else if p.selected {
                "selected"
            } else {
                "installed"
            };
            vec![
                p.name.clone(),
                p.version.clone(),
                status.to_owned(),
                p.trusted_sha256.chars().take(12).collect(),
                p.directory.clone(),
            ]
        })
        .collect();
    print_table(&["NAME", "VERSION", "STATUS", "SHA256", "DIRECTORY"], rows);
    for p in plugins.iter().filter(|p| !p.refusal.is_empty()) {
        println!("refused: {}", p.refusal);
    }
    for refusal in refused.iter().filter(|r| r.version.is_empty()) {
        println!("refused: {}", refusal.reason);
    }
}
