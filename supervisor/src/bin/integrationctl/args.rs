//! The command line: every command and its arguments (clap).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use supervisor::admin::proto;

use crate::render::Output;

/// Manage a running integrationd.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    /// The daemon's admin socket.
    #[arg(
        long,
        env = "INTEGRATIONCTL_SOCKET",
        default_value = "/run/integrationd/admin.sock"
    )]
    pub socket: PathBuf,
    /// A tenant token; without one, the caller's uid is checked.
    #[arg(long, env = "INTEGRATIONCTL_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Table)]
    pub output: Output,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The daemon and every plugin instance.
    Status,
    /// Installed plugins.
    Plugins {
        #[command(subcommand)]
        command: PluginsCommand,
    },
    /// For plugin authors: a new plugin crate from the template, a package of it. No
    /// daemon is needed.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
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
    /// Every integration's health, worst first, and the firing alerts (`-o json`: the
    /// `/v1/health` document).
    Health {
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Alerts and where they are sent.
    Alerts {
        #[command(subcommand)]
        command: AlertsCommand,
    },
    /// Operators, with a `[cluster]` section: the nodes and where tenants are placed.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Operators: a backup of the whole state as of one moment (the daemon keeps
    /// running), written to FILE (0600, never over an existing file). Credentials stay
    /// encrypted in it; the master key is not in it. `integrationd restore` reads it.
    Backup {
        #[arg(long, value_name = "FILE")]
        to: std::path::PathBuf,
    },
    /// The product at work: a demo tenant with GitHub and PagerDuty integrations, signed
    /// sample deliveries, and the incident linked to the deployment before it. Safe to
    /// run again; `--clean` removes the tenant.
    Demo {
        #[arg(long, default_value = "demo")]
        tenant: String,
        /// The daemon's HTTP listener (`http_listen`).
        #[arg(long, default_value = "127.0.0.1:8787")]
        http: String,
        /// Delete the demo tenant and everything of it instead.
        #[arg(long)]
        clean: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AlertsCommand {
    /// Alerts, newest first.
    List {
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long, value_parser = ["pending", "firing", "resolved"])]
        state: Option<String>,
    },
    /// Tenants' notification channels (operators' come from [[alerts.channels]]).
    Channels {
        #[command(subcommand)]
        command: ChannelsCommand,
    },
    /// Send a test notification to a channel now.
    Test {
        /// A tenant's channel; without it, an operator's.
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        channel: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ChannelsCommand {
    /// Add a tenant's channel. The `betalogs` format is signed: its HMAC secret is read
    /// from stdin (or --secret-file) and stored as credential `alert-channel-NAME`.
    Add {
        #[arg(long)]
        tenant: String,
        name: String,
        #[arg(long)]
        url: String,
        #[arg(long, value_parser = ["betalogs", "slack", "teams"], default_value = "betalogs")]
        format: String,
        #[arg(long, value_parser = ["debug", "info", "warning", "error", "critical"], default_value = "warning")]
        min_severity: String,
        /// Read the secret from this file instead of stdin.
        #[arg(long, value_name = "PATH")]
        secret_file: Option<PathBuf>,
    },
    List {
        #[arg(long)]
        tenant: Option<String>,
    },
    Remove {
        #[arg(long)]
        tenant: String,
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum IndexCommand {
    /// Drops a tenant's correlation index and builds it again from the stored events
    /// (the JSONL sink's files and the event log): after the index was lost or damaged,
    /// or kept while enrichment was off.
    Rebuild {
        #[arg(long)]
        tenant: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
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
pub enum DlqCommand {
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
pub struct DeadLetterSelection {
    #[arg(long)]
    pub tenant: String,
    #[arg(required_unless_present = "all")]
    pub ids: Vec<String>,
    #[arg(long, conflicts_with = "ids")]
    pub all: bool,
}

impl DeadLetterSelection {
    pub fn query(self) -> proto::DeadLetterQuery {
        proto::DeadLetterQuery {
            tenant: self.tenant,
            ids: self.ids,
            all: self.all,
            ..Default::default()
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum TenantsCommand {
    Create {
        name: String,
    },
    List,
    /// Delete a tenant with its tokens and data.
    Delete {
        name: String,
    },
    /// With a `[cluster]` section, on the node serving the tenant: moves it with its
    /// whole state (configuration, credentials, tokens, flags, audit, cursors, dead
    /// letters, inbox, correlation index) to node NODE, where its integrations then
    /// run. Webhooks arriving meanwhile are kept.
    Move {
        name: String,
        #[arg(long, value_name = "NODE")]
        to: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Every node (alive, or lost once not heard from for `cluster.node_timeout`) with
    /// its address and tenants.
    Status,
}

#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Issue a token; it is shown only now. `--scope monitor` reads health only;
    /// `--scope monitor --all-tenants` is an operator's monitoring token for every tenant.
    Create {
        #[arg(long, required_unless_present = "all_tenants")]
        tenant: Option<String>,
        #[arg(long, value_parser = ["admin", "ingest", "monitor"], default_value = "admin")]
        scope: String,
        #[arg(long, conflicts_with = "tenant")]
        all_tenants: bool,
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
pub enum CredentialsCommand {
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
pub enum IntegrationsCommand {
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
    /// Run the integration's Check now: credentials and permissions, each failure named.
    Check {
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
pub enum FlagsCommand {
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

/// Which credential, of what kind, and where its secret comes from.
#[derive(Debug, clap::Args)]
pub struct SecretTarget {
    #[arg(long)]
    pub tenant: String,
    pub name: String,
    /// api-key, oauth2, github-app, aws, webhook-secret, basic, or a kind an installed
    /// plugin declares (`PLUGIN/KIND`); the daemon checks the secret against it.
    #[arg(long)]
    pub kind: String,
    #[command(flatten)]
    pub input: SecretInput,
}

impl SecretTarget {
    pub fn request(self, rotate: bool) -> anyhow::Result<proto::SetCredentialRequest> {
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
pub struct SecretInput {
    /// Read the secret from this file instead of stdin.
    #[arg(long, value_name = "PATH")]
    pub from_file: Option<PathBuf>,
    /// When the credential expires (RFC 3339, e.g. 2026-12-31T00:00:00Z).
    #[arg(long, value_name = "TIME")]
    pub expires_at: Option<String>,
}

impl SecretInput {
    pub fn read(&self) -> anyhow::Result<(Vec<u8>, u64)> {
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
pub enum AuditCommand {
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
pub enum PluginCommand {
    /// Render the template plugin into a new crate: Cargo.toml, plugin.toml, README,
    /// src/, tests/. It builds and passes its tests as generated.
    New {
        /// The plugin's name (the crate is `integration-NAME`).
        name: String,
        /// Where (default: ./integration-NAME); must be empty or absent.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The plugin-kit crate to depend on (default: the checkout this integrationctl
        /// was built from).
        #[arg(long)]
        plugin_kit: Option<PathBuf>,
    },
    /// `cargo build --release` a plugin crate, then lay out its package directory
    /// (plugin.toml + executable) and print the executable's SHA-256 for `plugins trust`.
    Package {
        /// The plugin crate (with its plugin.toml).
        dir: PathBuf,
        /// The package directory (default: DIR/package/NAME).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Build without optimizations (faster, for trying it out).
        #[arg(long)]
        debug: bool,
    },
    /// Run the protocol contract against a package (plugin.toml + executable), in any
    /// language: each check with its reason; exit status 1 when one fails.
    Conformance {
        /// The package directory.
        dir: PathBuf,
        /// A configuration the plugin accepts (a JSON file); the invalid one is derived
        /// from it. Default: `{}`.
        #[arg(long)]
        config: Option<PathBuf>,
        /// A credential for Configure, `ROLE:KIND:FILE` (the secret is read from FILE,
        /// never from the command line). Repeatable.
        #[arg(long = "credential", value_name = "ROLE:KIND:FILE")]
        credentials: Vec<String>,
        /// A delivery body in the service's format: the kit signs it with the
        /// `webhook-secret` credential as the manifest's `[webhook]` says and checks that
        /// it yields canonical events (`webhook-signed`).
        #[arg(long, value_name = "FILE")]
        webhook_sample: Option<PathBuf>,
        /// How long the plugin may take to start, and to exit when told to.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        grace: std::time::Duration,
    },
}

#[derive(Debug, Subcommand)]
pub enum PluginsCommand {
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
