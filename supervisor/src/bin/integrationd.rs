//! `integrationd`: the supervisor daemon.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use supervisor::config::LogFormat;
use supervisor::daemon::{self, Overrides};

/// sled allocates and frees keys and values on every read and write; mimalloc keeps that
/// fast and its tail short where glibc's malloc fragments (see ARCHITECTURE.md,
/// "Allocator").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Supervises Betalogs integration plugins.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// TOML configuration file.
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Directory of the state database (overrides `state_dir`).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Directory of installed plugin packages (overrides `plugin_dir`).
    #[arg(long, value_name = "DIR")]
    plugin_dir: Option<PathBuf>,
    /// Admin socket path (overrides `admin_socket`).
    #[arg(long, value_name = "PATH")]
    admin_socket: Option<PathBuf>,
    /// HTTP listen address (overrides `http_listen`).
    #[arg(long, value_name = "ADDR:PORT")]
    http_listen: Option<SocketAddr>,
    /// Log format on stderr (overrides `log_format`).
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Writes a new master key (an age identity, mode 0600) to a file that must not
    /// exist yet: what `credentials.master_key` reads. The package runs it once.
    GenerateMasterKey {
        #[arg(long, value_name = "PATH")]
        to: PathBuf,
    },
    /// Rebuilds a state directory (new, or empty) from a backup that `integrationctl
    /// backup` wrote, offline; checks that it opens and that its audit trail verifies.
    /// Start the daemon on it with the same master key.
    Restore {
        /// The backup file.
        #[arg(long, value_name = "FILE")]
        from: PathBuf,
        /// The state directory to rebuild: new, or empty.
        #[arg(long, value_name = "DIR")]
        state_dir: PathBuf,
    },
    /// Operator benchmarks.
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
    },
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Spawn a plugin as the supervisor does and time grpc.health.v1 round trips.
    Heartbeat {
        /// The plugin executable.
        #[arg(long, value_name = "PATH")]
        plugin: PathBuf,
        /// Timed health checks.
        #[arg(long, default_value_t = 10_000)]
        calls: usize,
        /// Spawns timed (the median is reported).
        #[arg(long, default_value_t = 20)]
        spawns: usize,
        /// The host's runtime: `daemon` is the daemon's (`worker_threads` of the
        /// `--config` file, one by default, the checks in a spawned task), `current`
        /// a current-thread runtime, for comparison.
        #[arg(long, value_enum, default_value_t = BenchRuntime::Daemon)]
        runtime: BenchRuntime,
    },
}

/// The runtime `bench heartbeat` measures on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum BenchRuntime {
    Daemon,
    Current,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("integrationd: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    if let Some(Command::GenerateMasterKey { to }) = &cli.command {
        supervisor::credentials::generate_master_key_file(to)?;
        println!("{}", to.display());
        return Ok(());
    }
    if let Some(Command::Restore { from, state_dir }) = &cli.command {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(
            supervisor::state_dir::UMASK,
        ));
        let summary = supervisor::backup::restore(from, state_dir)?;
        println!(
            "restored {} (state {}) into {}: {} tenants, {} integrations, {} credentials, {} dead letters, {} cursors, {} commits in the event log; audit trail intact ({} records, head {})",
            from.display(),
            if summary.manifest.state_id.is_empty() {
                "of format 1"
            } else {
                &summary.manifest.state_id
            },
            state_dir.display(),
            summary.tenants,
            summary.integrations,
            summary.credentials,
            summary.dead_letters,
            summary.cursors,
            summary.commits,
            summary.audit_records,
            if summary.manifest.audit_head.is_empty() {
                "none"
            } else {
                &summary.manifest.audit_head
            },
        );
        return Ok(());
    }
    if let Some(Command::Bench {
        what:
            BenchCommand::Heartbeat {
                plugin,
                calls,
                spawns,
                runtime,
            },
    }) = cli.command
    {
        let runtime = match runtime {
            BenchRuntime::Daemon => daemon_runtime(
                daemon::load_config(cli.config.as_deref(), &Overrides::default())?.worker_threads,
            )?,
            BenchRuntime::Current => tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
        };
        // In a spawned task, as the daemon's heartbeats run: `block_on`'s thread is not
        // one of the runtime's workers, and every reply would cross to it.
        let measured = runtime.block_on(async move {
            tokio::spawn(async move { supervisor::bench::heartbeat(&plugin, calls, spawns).await })
                .await
        })?;
        let report = measured?;
        println!("{report}");
        return Ok(());
    }
    let overrides = Overrides {
        state_dir: cli.state_dir,
        plugin_dir: cli.plugin_dir,
        admin_socket: cli.admin_socket,
        http_listen: cli.http_listen,
    };
    let config = daemon::load_config(cli.config.as_deref(), &overrides)?;
    init_logging(cli.log_format.unwrap_or(config.log_format));
    // Every file the daemon (and its plugins) create is private unless made wider on
    // purpose: the database, the event log, sink files and key files.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(
        supervisor::state_dir::UMASK,
    ));
    let runtime = daemon_runtime(config.worker_threads)?;
    runtime.block_on(daemon::run(config, cli.config, overrides))?;
    Ok(())
}

/// The daemon's runtime with `workers` worker threads (and `bench heartbeat`'s by
/// default, so that it measures what the daemon's heartbeats cost).
fn daemon_runtime(workers: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
