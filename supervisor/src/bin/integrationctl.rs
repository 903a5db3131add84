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
    /// Tenants (operators).
    Tenants {
        #[command(subcommand)]
        command: TenantsCommand,
    },
    /// Tenant tokens (operators). A token is printed once, when created.
    Tokens {
        #[command(subcommand)]
        command: TokensCommand,
    },
    /// Encrypted credentials. Secrets are read from stdin (or --from-file), never argv,
    /// and never printed.
    Credentials {
        #[command(subcommand)]
        command: CredentialsCommand,
    },
    /// Integrations: a configured plugin instance of a tenant, versioned.
    Integrations {
        #[command(subcommand)]
        command: IntegrationsCommand,
    },
    /// Feature flags: `plugin.<name>` and `realtime_enrichment`.
    Flags {
        #[command(subcommand)]
        command: FlagsCommand,
    },
    /// The audit trail.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// A tenant's stored events.
    Events {
        #[command(subcommand)]
        command: EventsCommand,
    },
    /// A tenant's dead-letter queue: events and deliveries that could not be accepted.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Enriches a tenant's stored failures in a time range again, from the correlation
    /// index as it is now (after adding an integration, say). Failures whose
    /// enrichments change get a new revision, delivered to the sinks. An interrupted run
    /// continues where it stopped when run again with the same range.
    Enrich {
        #[arg(long)]
        tenant: String,
        /// RFC 3339, `now`, or a duration meaning that long ago (`24h`).
        #[arg(long)]
        from: String,
        /// RFC 3339, `now`, or a duration meaning that long ago.
        #[arg(long, default_value = "now")]
        to: String,
        /// Count what would change; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Each deployment with the failures that followed it, and each service's
    /// change-failure rate.
    Deployments {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        service: Option<String>,
    },
    /// The correlation index of deployments, commits and alarms.
    Index {
        #[command(subcommand)]
        command: IndexCommand,
    },
}

#[derive(Debug, Subcommand)]
enum IndexCommand {
    /// Drops a tenant's correlation index and builds it again from the stored events
    /// (the JSONL sink's files and the event log): after the index was lost or damaged,
    /// or kept while enrichment was off.
    Rebuild {
        #[arg(long)]
        tenant: String,
    },
}

/// `--from`/`--to`: RFC 3339, `now`, or a duration ago; Unix milliseconds.
fn parse_time(text: &str, now_ms: u64) -> anyhow::Result<u64> {
    if text == "now" {
        return Ok(now_ms);
    }
    if let Some(ms) = plugin_protocol::event_time_ms(text) {
        return Ok(ms);
    }
    let ago = humantime::parse_duration(text).map_err(|_| {
        anyhow::anyhow!("`{text}` is not a time: use RFC 3339, `now`, or a duration ago like `24h`")
    })?;
    Ok(now_ms.saturating_sub(u64::try_from(ago.as_millis()).unwrap_or(u64::MAX)))
}

use plugin_kit::clock::now_ms as unix_ms_now;

fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
        .to_string()
}

/// `[#####.....]  45%  45000/100000` on one line of stderr.
fn progress_line(progress: &proto::EnrichProgress) -> String {
    let total = progress.total.max(1);
    let done = progress.scanned.min(total);
    let filled = usize::try_from(done * 30 / total).unwrap_or(30);
    format!(
        "\r[{}{}] {:3}%  {}/{}  enriched {}",
        "#".repeat(filled),
        ".".repeat(30 - filled),
        done * 100 / total,
        progress.scanned,
        progress.total,
        progress.enriched
    )
}

async fn run_enrich(
    client: &mut AdminClient<tonic::transport::Channel>,
    token: Option<&str>,
    output: Output,
    (tenant, from, to, dry_run): (String, String, String, bool),
) -> anyhow::Result<()> {
    use std::io::{IsTerminal, Write};
    let now = unix_ms_now();
    let request = proto::EnrichRequest {
        tenant,
        from_unix_ms: parse_time(&from, now)?,
        to_unix_ms: parse_time(&to, now)?,
        dry_run,
    };
    let mut progress = client
        .enrich(with_token(request, token)?)
        .await
        .map_err(status_error)?
        .into_inner();
    let terminal = std::io::stderr().is_terminal();
    let mut last = proto::EnrichProgress::default();
    while let Some(update) = progress.message().await.map_err(|status| {
        if terminal {
            eprintln!();
        }
        status_error(status)
    })? {
        if terminal {
            eprint!("{}", progress_line(&update));
            let _ = std::io::stderr().flush();
        }
        last = update;
    }
    if terminal {
        eprintln!();
    }
    match output {
        Output::Json => print_json(&serde_json::json!({
            "total": last.total,
            "scanned": last.scanned,
            "enriched": last.enriched,
            "unchanged": last.unchanged,
            "dry_run": dry_run,
            "done": last.done,
        }))?,
        Output::Table => println!(
            "{}scanned {} failures, enriched {}, unchanged {}",
            if dry_run { "dry run: " } else { "" },
            last.scanned,
            last.enriched,
            last.unchanged
        ),
    }
    Ok(())
}

async fn run_deployments(
    client: &mut AdminClient<tonic::transport::Channel>,
    token: Option<&str>,
    output: Output,
    (tenant, service): (String, Option<String>),
) -> anyhow::Result<()> {
    let request = proto::ListDeploymentsRequest {
        tenant,
        service: service.unwrap_or_default(),
    };
    let list = client
        .list_deployments(with_token(request, token)?)
        .await
        .map_err(status_error)?
        .into_inner();
    // Per service: deployments, those followed by failures, the rate.
    let mut services: std::collections::BTreeMap<&str, (u64, u64)> =
        std::collections::BTreeMap::new();
    for deployment in &list.deployments {
        let entry = services.entry(deployment.service.as_str()).or_default();
        entry.0 += 1;
        entry.1 += u64::from(!deployment.failures.is_empty());
    }
    let rates: Vec<serde_json::Value> = services
        .iter()
        .map(|(service, (deployments, failed))| {
            serde_json::json!({
                "service": service,
                "deployments": deployments,
                "failed": failed,
                "change_failure_rate": *failed as f64 / (*deployments).max(1) as f64,
            })
        })
        .collect();
    match output {
        Output::Json => print_json(&serde_json::json!({
            "deployments": list.deployments,
            "services": rates,
        }))?,
        Output::Table => {
            print_table(
                &[
                    "TIME",
                    "SERVICE",
                    "ENVIRONMENT",
                    "REVISION",
                    "FAILURES",
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
                            d.url.clone(),
                        ]
                    })
                    .collect(),
            );
            println!();
            for (service, (deployments, failed)) in &services {
                println!(
                    "{service}: {failed} of {deployments} deployment(s) followed by failures (change-failure rate {:.0}%)",
                    *failed as f64 * 100.0 / (*deployments).max(1) as f64
                );
            }
        }
    }
    Ok(())
}

#[derive(Debug, Subcommand)]
enum EventsCommand {
    /// The tenant's latest events, one canonical JSON event a line (whatever `-o`);
    /// with `--follow`, then each new one as it is committed, until interrupted.
    Tail {
        #[arg(long)]
        tenant: String,
        #[arg(long, default_value_t = 10)]
        last: u32,
        #[arg(short, long)]
        follow: bool,
    },
}

#[derive(Debug, Subcommand)]
enum DlqCommand {
    /// Dead letters, oldest first (payloads cut at 200 characters; `show` has them whole).
    List {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        integration: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// One dead letter, with its whole payload.
    Show {
        #[arg(long)]
        tenant: String,
        id: String,
    },
    /// Send dead letters through validation again: the valid ones are stored and leave
    /// the queue, the others stay with the new reason.
    Replay(DeadLetterSelection),
    /// Delete dead letters for good.
    Purge(DeadLetterSelection),
}

/// Which dead letters a change applies to: named ones, or `--all`.
#[derive(Debug, clap::Args)]
struct DeadLetterSelection {
    #[arg(long)]
    tenant: String,
    #[arg(required_unless_present = "all")]
    ids: Vec<String>,
    #[arg(long, conflicts_with = "ids")]
    all: bool,
}

impl DeadLetterSelection {
    fn query(self) -> proto::DeadLetterQuery {
        proto::DeadLetterQuery {
            tenant: self.tenant,
            ids: self.ids,
            all: self.all,
            ..Default::default()
        }
    }
}

#[derive(Debug, Subcommand)]
enum TenantsCommand {
    Create {
        name: String,
    },
    List,
    /// Delete a tenant with its tokens and data.
    Delete {
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum TokensCommand {
    /// Issue a token; it is shown only now.
    Create {
        #[arg(long)]
        tenant: String,
        #[arg(long, value_parser = ["admin", "ingest"], default_value = "admin")]
        scope: String,
    },
    List {
        #[arg(long)]
        tenant: String,
    },
    Revoke {
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum CredentialsCommand {
    /// Store a credential: api-key and webhook-secret as the raw value, the other kinds
    /// as a JSON object.
    Set(SecretTarget),
    /// Name, kind, created, expires, last used: never the secret.
    List {
        #[arg(long)]
        tenant: String,
    },
    /// Replace a credential's secret (a webhook secret keeps the old one as `previous`).
    Rotate(SecretTarget),
    Delete {
        #[arg(long)]
        tenant: String,
        name: String,
    },
    /// Give the tenant a new key and re-encrypt its credentials.
    RotateKey {
        #[arg(long)]
        tenant: String,
    },
    /// Re-wrap every tenant key for a new master key (operators), e.g. `file:/etc/integrationd/master-2.key`.
    RotateMaster {
        #[arg(long, value_name = "SOURCE")]
        new_master_key: String,
    },
}

#[derive(Debug, Subcommand)]
enum IntegrationsCommand {
    /// Add an integration: the config (TOML or JSON) is checked against the plugin's
    /// schema and by the plugin's Check before it is accepted.
    Add {
        #[arg(long)]
        tenant: String,
        name: String,
        #[arg(long)]
        plugin: String,
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// A new version of the config; restarts only this integration's instance.
    Update {
        #[arg(long)]
        tenant: String,
        name: String,
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    Enable {
        #[arg(long)]
        tenant: String,
        name: String,
    },
    Disable {
        #[arg(long)]
        tenant: String,
        name: String,
    },
    Remove {
        #[arg(long)]
        tenant: String,
        name: String,
    },
    List {
        #[arg(long)]
        tenant: String,
    },
    Show {
        #[arg(long)]
        tenant: String,
        name: String,
    },
    /// Every version with author, time and diff.
    History {
        #[arg(long)]
        tenant: String,
        name: String,
    },
    /// A new version equal to version N.
    Rollback {
        #[arg(long)]
        tenant: String,
        name: String,
        #[arg(long)]
        to: u32,
    },
}

#[derive(Debug, Subcommand)]
enum FlagsCommand {
    List {
        #[arg(long)]
        tenant: Option<String>,
    },
    /// `KEY=VALUE`, e.g. `plugin.github=off` or `realtime_enrichment=on`.
    Set {
        #[arg(long)]
        tenant: Option<String>,
        assignment: String,
    },
}

/// Reads an integration config file: JSON, or TOML when it does not parse as JSON.
fn read_config(path: &std::path::Path) -> anyhow::Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(&text) {
        return Ok(value.to_string());
    }
    let value: serde_json::Value = toml::from_str(&text)
        .with_context(|| format!("{} is neither JSON nor TOML", path.display()))?;
    Ok(value.to_string())
}

fn print_integrations(
    output: Output,
    integrations: &[proto::IntegrationInfo],
    single: bool,
) -> anyhow::Result<()> {
    match output {
        Output::Json if single => print_json(&integrations[0]),
        Output::Json => print_json(&integrations),
        Output::Table => {
            let rows = integrations
                .iter()
                .map(|i| {
                    vec![
                        i.name.clone(),
                        i.plugin.clone(),
                        if i.enabled {
                            "enabled".into()
                        } else {
                            format!("disabled: {}", i.disabled_reason)
                        },
                        i.version.to_string(),
                        i.state.clone(),
                        i.author.clone(),
                    ]
                })
                .collect();
            print_table(
                &["NAME", "PLUGIN", "ENABLED", "VERSION", "STATE", "AUTHOR"],
                rows,
            );
            for check in integrations.iter().flat_map(|i| &i.check) {
                println!(
                    "check {}: {} {}",
                    if check.ok { "ok" } else { "FAILED" },
                    check.resource,
                    check.permission
                );
            }
            Ok(())
        }
    }
}

/// Which credential, of what kind, and where its secret comes from.
#[derive(Debug, clap::Args)]
struct SecretTarget {
    #[arg(long)]
    tenant: String,
    name: String,
    #[arg(long, value_parser = ["api-key", "oauth2", "github-app", "aws", "webhook-secret", "basic"])]
    kind: String,
    #[command(flatten)]
    input: SecretInput,
}

impl SecretTarget {
    fn request(self, rotate: bool) -> anyhow::Result<proto::SetCredentialRequest> {
        let (secret, expires_unix_ms) = self.input.read()?;
        Ok(proto::SetCredentialRequest {
            tenant: self.tenant,
            name: self.name,
            kind: self.kind,
            secret,
            expires_unix_ms,
            rotate,
        })
    }
}

#[derive(Debug, clap::Args)]
struct SecretInput {
    /// Read the secret from this file instead of stdin.
    #[arg(long, value_name = "PATH")]
    from_file: Option<PathBuf>,
    /// When the credential expires (RFC 3339, e.g. 2026-12-31T00:00:00Z).
    #[arg(long, value_name = "TIME")]
    expires_at: Option<String>,
}

impl SecretInput {
    fn read(&self) -> anyhow::Result<(Vec<u8>, u64)> {
        use std::io::Read;
        let secret = match &self.from_file {
            Some(path) => std::fs::read(path)
                .with_context(|| format!("cannot read the secret from {}", path.display()))?,
            None => {
                let mut buffer = Vec::new();
                std::io::stdin()
                    .take(supervisor::credentials::MAX_SECRET_BYTES as u64 + 1)
                    .read_to_end(&mut buffer)
                    .context("cannot read the secret from stdin")?;
                buffer
            }
        };
        let expires = match &self.expires_at {
            None => 0,
            Some(text) => {
                supervisor::credentials::parse_time_ms(&serde_json::Value::String(text.clone()))
                    .with_context(|| format!("--expires-at `{text}` is not an RFC 3339 time"))?
            }
        };
        Ok((secret, expires))
    }
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Records, newest first (a tenant token sees its own tenant's only).
    List {
        #[arg(long)]
        tenant: Option<String>,
        /// Only actions starting with this, e.g. `credential.` or `tenant.create`.
        #[arg(long)]
        kind: Option<String>,
        /// Only records at or after this Unix time in milliseconds.
        #[arg(long, default_value_t = 0)]
        since_ms: u64,
        /// Only records at or before this Unix time in milliseconds.
        #[arg(long, default_value_t = 0)]
        until_ms: u64,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Walk the whole hash chain; fails if a record was modified, removed or reordered,
    /// or if the chain ends before an anchor (the file beside the database, or
    /// `--anchor`). Prints the head to keep off the host.
    Verify {
        /// `SEQ:SHA256` kept off the host (an `audit.anchor` event, an earlier verify).
        #[arg(long)]
        anchor: Option<String>,
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
                        println!("trusted {} {} sha256={}", pin.name, pin.version, pin.sha256);
                        if !pin.executable.is_empty() {
                            let owner = pin
                                .executable_owner_uid
                                .map_or("unknown".to_owned(), |uid| format!("uid {uid}"));
                            println!("executable {} (owner {owner})", pin.executable);
                        }
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
        Command::Tenants { command } => match command {
            TenantsCommand::Create { name } => {
                let tenant = client
                    .create_tenant(with_token(proto::CreateTenantRequest { name }, token)?)
                    .await
                    .map_err(status_error)?
                    .into_inner();
                match cli.output {
                    Output::Json => print_json(&tenant)?,
                    Output::Table => println!("created tenant {}", tenant.name),
                }
            }
            TenantsCommand::List => {
                let list = client
                    .list_tenants(with_token(proto::ListTenantsRequest {}, token)?)
                    .await
                    .map_err(status_error)?
                    .into_inner();
                match cli.output {
                    Output::Json => print_json(&list.tenants)?,
                    Output::Table => print_table(
                        &["NAME", "CREATED (UNIX MS)"],
                        list.tenants
                            .iter()
                            .map(|t| vec![t.name.clone(), t.created_unix_ms.to_string()])
                            .collect(),
                    ),
                }
            }
            TenantsCommand::Delete { name } => {
                let done = client
                    .delete_tenant(with_token(proto::DeleteTenantRequest { name }, token)?)
                    .await
                    .map_err(status_error)?
                    .into_inner();
                match cli.output {
                    Output::Json => print_json(&done)?,
                    Output::Table => println!(
                        "deleted tenant {} ({} token(s) revoked)",
                        done.name, done.tokens_revoked
                    ),
                }
            }
        },
        Command::Tokens { command } => match command {
            TokensCommand::Create { tenant, scope } => {
                let issued = client
                    .create_token(with_token(
                        proto::CreateTokenRequest { tenant, scope },
                        token,
                    )?)
                    .await
                    .map_err(status_error)?
                    .into_inner();
                match cli.output {
                    Output::Json => print_json(
                        &serde_json::json!({ "tenant": issued.tenant, "token": issued.token, "id": issued.id, "scope": issued.scope }),
                    )?,
                    Output::Table => {
                        println!("{}", issued.token);
                        eprintln!(
                            "token {} ({} scope) for tenant {}: shown only now",
                            issued.id, issued.scope, issued.tenant
                        );
                    }
                }
            }
            TokensCommand::List { tenant } => {
                let list = client
                    .list_tokens(with_token(proto::ListTokensRequest { tenant }, token)?)
                    .await
                    .map_err(status_error)?
                    .into_inner();
                match cli.output {
                    Output::Json => print_json(&list.tokens)?,
                    Output::Table => print_table(
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
                    ),
                }
            }
            TokensCommand::Revoke { id } => {
                let info = client
                    .revoke_token(with_token(proto::RevokeTokenRequest { id }, token)?)
                    .await
                    .map_err(status_error)?
                    .into_inner();
                match cli.output {
                    Output::Json => print_json(&info)?,
                    Output::Table => {
                        println!("revoked token {} of tenant {}", info.id, info.tenant)
                    }
                }
            }
        },
        Command::Credentials { command } => match command {
            CredentialsCommand::Set(target) => {
                store_credential(&mut client, target.request(false)?, token, cli.output).await?;
            }
            CredentialsCommand::Rotate(target) => {
                store_credential(&mut client, target.request(true)?, token, cli.output).await?;
            }
            CredentialsCommand::List { tenant } => {
                let list = client
                    .list_credentials(with_token(proto::ListCredentialsRequest { tenant }, token)?)
                    .await
                    .map_err(status_error)?
                    .into_inner();
                print_credentials(cli.output, &list.credentials, false)?;
            }
            CredentialsCommand::Delete { tenant, name } => {
                let info = client
                    .delete_credential(with_token(
                        proto::DeleteCredentialRequest { tenant, name },
                        token,
                    )?)
                    .await
                    .map_err(status_error)?
                    .into_inner();
                match cli.output {
                    Output::Json => print_json(&info)?,
                    Output::Table => {
                        println!("deleted credential {} of tenant {}", info.name, info.tenant)
                    }
                }
            }
            CredentialsCommand::RotateKey { tenant } => {
                let done = client
                    .rotate_tenant_key(with_token(proto::RotateTenantKeyRequest { tenant }, token)?)
                    .await
                    .map_err(status_error)?
                    .into_inner();
                match cli.output {
                    Output::Json => print_json(&done)?,
                    Output::Table => println!(
                        "new tenant key; {} credential(s) re-encrypted",
                        done.reencrypted
                    ),
                }
            }
            CredentialsCommand::RotateMaster { new_master_key } => {
                let done = client
                    .rotate_master_key(with_token(
                        proto::RotateMasterKeyRequest { new_master_key },
                        token,
                    )?)
                    .await
                    .map_err(status_error)?
                    .into_inner();
                match cli.output {
                    Output::Json => print_json(&done)?,
                    Output::Table => println!(
                        "tenant keys re-wrapped for {}; set credentials.master_key to the new key before the next restart",
                        done.recipient
                    ),
                }
            }
        },
        Command::Integrations { command } => {
            let one = |info: proto::IntegrationInfo| print_integrations(cli.output, &[info], true);
            let enabled = matches!(command, IntegrationsCommand::Enable { .. });
            match command {
                IntegrationsCommand::Add {
                    tenant,
                    name,
                    plugin,
                    config,
                } => {
                    let request = proto::AddIntegrationRequest {
                        tenant,
                        name,
                        plugin,
                        config_json: read_config(&config)?,
                    };
                    one(client
                        .add_integration(with_token(request, token)?)
                        .await
                        .map_err(status_error)?
                        .into_inner())?;
                }
                IntegrationsCommand::Update {
                    tenant,
                    name,
                    config,
                } => {
                    let request = proto::UpdateIntegrationRequest {
                        tenant,
                        name,
                        config_json: read_config(&config)?,
                    };
                    one(client
                        .update_integration(with_token(request, token)?)
                        .await
                        .map_err(status_error)?
                        .into_inner())?;
                }
                IntegrationsCommand::Enable { tenant, name }
                | IntegrationsCommand::Disable { tenant, name } => {
                    let request = proto::SetIntegrationEnabledRequest {
                        tenant,
                        name,
                        enabled,
                    };
                    one(client
                        .set_integration_enabled(with_token(request, token)?)
                        .await
                        .map_err(status_error)?
                        .into_inner())?;
                }
                IntegrationsCommand::Remove { tenant, name } => {
                    one(client
                        .remove_integration(with_token(
                            proto::IntegrationRef { tenant, name },
                            token,
                        )?)
                        .await
                        .map_err(status_error)?
                        .into_inner())?;
                }
                IntegrationsCommand::List { tenant } => {
                    let list = client
                        .list_integrations(with_token(
                            proto::ListIntegrationsRequest { tenant },
                            token,
                        )?)
                        .await
                        .map_err(status_error)?
                        .into_inner();
                    print_integrations(cli.output, &list.integrations, false)?;
                }
                IntegrationsCommand::Show { tenant, name } => {
                    let shown = client
                        .show_integration(with_token(
                            proto::IntegrationRef { tenant, name },
                            token,
                        )?)
                        .await
                        .map_err(status_error)?
                        .into_inner();
                    match cli.output {
                        Output::Json => print_json(&shown)?,
                        Output::Table => {
                            let config: serde_json::Value =
                                serde_json::from_str(&shown.config_json).unwrap_or_default();
                            print_integrations(cli.output, std::slice::from_ref(&shown), true)?;
                            println!("{}", serde_json::to_string_pretty(&config)?);
                        }
                    }
                }
                IntegrationsCommand::History { tenant, name } => {
                    let history = client
                        .integration_history(with_token(
                            proto::IntegrationRef { tenant, name },
                            token,
                        )?)
                        .await
                        .map_err(status_error)?
                        .into_inner();
                    match cli.output {
                        Output::Json => print_json(&history.versions)?,
                        Output::Table => {
                            for v in &history.versions {
                                println!(
                                    "version {} by {} at {} ({})",
                                    v.version, v.author, v.time_unix_ms, v.change
                                );
                                for line in v.diff.lines() {
                                    println!("    {line}");
                                }
                            }
                        }
                    }
                }
                IntegrationsCommand::Rollback { tenant, name, to } => {
                    let request = proto::RollbackIntegrationRequest { tenant, name, to };
                    one(client
                        .rollback_integration(with_token(request, token)?)
                        .await
                        .map_err(status_error)?
                        .into_inner())?;
                }
            }
        }
        Command::Flags { command } => match command {
            FlagsCommand::List { tenant } => {
                let list = client
                    .list_flags(with_token(
                        proto::ListFlagsRequest {
                            tenant: tenant.unwrap_or_default(),
                        },
                        token,
                    )?)
                    .await
                    .map_err(status_error)?
                    .into_inner();
                match cli.output {
                    Output::Json => print_json(&list.flags)?,
                    Output::Table => print_table(
                        &["KEY", "VALUE", "SOURCE"],
                        list.flags
                            .iter()
                            .map(|f| vec![f.key.clone(), f.value.to_string(), f.source.clone()])
                            .collect(),
                    ),
                }
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
                    .map_err(status_error)?
                    .into_inner();
                match cli.output {
                    Output::Json => print_json(&flag)?,
                    Output::Table => println!("{}={} ({})", flag.key, flag.value, flag.source),
                }
            }
        },
        Command::Audit { command } => match command {
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
                    .map_err(status_error)?
                    .into_inner();
                match cli.output {
                    Output::Json => print_json(&list.records)?,
                    Output::Table => print_table(
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
                    ),
                }
            }
            AuditCommand::Verify { anchor } => {
                let request = proto::VerifyAuditRequest {
                    anchor: anchor.unwrap_or_default(),
                };
                let verdict = client
                    .verify_audit(with_token(request, token)?)
                    .await
                    .map_err(status_error)?
                    .into_inner();
                match cli.output {
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
        },
        Command::Events {
            command:
                EventsCommand::Tail {
                    tenant,
                    last,
                    follow,
                },
        } => {
            let request = proto::TailEventsRequest {
                tenant,
                last,
                follow,
            };
            let mut lines = client
                .tail_events(with_token(request, token)?)
                .await
                .map_err(status_error)?
                .into_inner();
            while let Some(line) = lines.message().await.map_err(status_error)? {
                println!("{}", line.json);
            }
        }
        Command::Dlq { command } => run_dlq(&mut client, token, cli.output, command).await?,
        Command::Enrich {
            tenant,
            from,
            to,
            dry_run,
        } => run_enrich(&mut client, token, cli.output, (tenant, from, to, dry_run)).await?,
        Command::Deployments { tenant, service } => {
            run_deployments(&mut client, token, cli.output, (tenant, service)).await?;
        }
        Command::Index {
            command: IndexCommand::Rebuild { tenant },
        } => {
            let summary = client
                .rebuild_index(with_token(proto::RebuildIndexRequest { tenant }, token)?)
                .await
                .map_err(status_error)?
                .into_inner();
            match cli.output {
                Output::Json => print_json(&serde_json::json!({
                    "events": summary.events,
                    "entries": summary.entries,
                    "failures": summary.failures,
                    "skipped": summary.skipped,
                    "files": summary.files,
                }))?,
                Output::Table => {
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
                }
            }
        }
    }
    Ok(())
}

/// A refused call, as its message says it.
fn status_error(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}", status.message())
}

async fn run_dlq(
    client: &mut AdminClient<tonic::transport::Channel>,
    token: Option<&str>,
    output: Output,
    command: DlqCommand,
) -> anyhow::Result<()> {
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
                .map_err(status_error)?
                .into_inner();
            match output {
                Output::Json => print_json(&list.letters)?,
                Output::Table => print_table(
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
                ),
            }
        }
        DlqCommand::Show { tenant, id } => {
            let letter = client
                .show_dead_letter(with_token(proto::DeadLetterRef { tenant, id }, token)?)
                .await
                .map_err(status_error)?
                .into_inner();
            match output {
                Output::Json => print_json(&letter)?,
                Output::Table => {
                    println!("id:          {}", letter.id);
                    println!("integration: {}", letter.integration);
                    println!("stage:       {}", letter.stage);
                    println!("time:        {} (unix ms)", letter.time_unix_ms);
                    println!("reason:      {}", letter.reason);
                    println!("payload:\n{}", letter.payload);
                }
            }
        }
        DlqCommand::Replay(selection) => {
            let outcome = client
                .replay_dead_letters(with_token(selection.query(), token)?)
                .await
                .map_err(status_error)?
                .into_inner();
            match output {
                Output::Json => print_json(&outcome)?,
                Output::Table => {
                    println!(
                        "{} stored, {} already stored, {} still invalid",
                        outcome.stored,
                        outcome.duplicates,
                        outcome.still_invalid.len()
                    );
                    for line in &outcome.still_invalid {
                        println!("  {line}");
                    }
                }
            }
        }
        DlqCommand::Purge(selection) => {
            let outcome = client
                .purge_dead_letters(with_token(selection.query(), token)?)
                .await
                .map_err(status_error)?
                .into_inner();
            match output {
                Output::Json => print_json(&outcome)?,
                Output::Table => println!("{} purged", outcome.purged),
            }
        }
    }
    Ok(())
}

async fn store_credential(
    client: &mut AdminClient<Channel>,
    request: proto::SetCredentialRequest,
    token: Option<&str>,
    output: Output,
) -> anyhow::Result<()> {
    let info = client
        .set_credential(with_token(request, token)?)
        .await
        .map_err(|status| anyhow::anyhow!("{}", status.message()))?
        .into_inner();
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
                {
                    let open: Vec<String> = i
                        .dependencies
                        .iter()
                        .filter(|d| d.breaker != "closed")
                        .map(|d| format!("{} {}", d.name, d.breaker))
                        .collect();
                    if open.is_empty() {
                        "-".into()
                    } else {
                        open.join(", ")
                    }
                },
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
            "BREAKERS",
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
                p.executable.clone(),
                p.executable_owner_uid
                    .map_or("-".to_owned(), |uid| format!("uid {uid}")),
            ]
        })
        .collect();
    print_table(
        &["NAME", "VERSION", "STATUS", "SHA256", "EXECUTABLE", "OWNER"],
        rows,
    );
    for p in plugins.iter().filter(|p| !p.refusal.is_empty()) {
        println!("refused: {}", p.refusal);
    }
    for refusal in refused.iter().filter(|r| r.version.is_empty()) {
        println!("refused: {}", refusal.reason);
    }
}
