//! Wires the components into the running daemon: open state, discover plugins, start
//! instances, serve the admin socket and HTTP, and handle SIGTERM/SIGINT (graceful stop)
//! and SIGHUP (reload the config file).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::signal::unix::{SignalKind, signal};
use tokio_stream::wrappers::UnixListenerStream;

mod systemd;
mod wiring;

use crate::admin::{self, AdminService};
use crate::config::{Config, ConfigError};
use crate::health::Metrics;
use crate::process::{InstanceObserver, Manager, ManagerSettings, Observers};
use crate::registry::{Registry, RegistryError};
use crate::store::{Store, StoreError};

/// Why the daemon could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot create state directory {path}: {cause}")]
    StateDir { path: String, cause: std::io::Error },
    #[error(transparent)]
    StateDirectory(#[from] crate::state_dir::StateDirError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("pipeline: {0}")]
    Pipeline(crate::pipeline::OpenError),
    #[error(transparent)]
    Sink(#[from] crate::pipeline::sinks::SinkSetupError),
    #[error("credentials: {0}")]
    Credentials(crate::credentials::CredentialError),
    #[error("credentials: {0}")]
    MasterKey(crate::credentials::MasterKeyError),
    #[error(transparent)]
    Manager(#[from] crate::process::ManagerError),
    #[error(transparent)]
    AdminSocket(#[from] admin::AdminSocketError),
    #[error("cannot listen on {addr}: {cause}")]
    Http { addr: String, cause: std::io::Error },
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    #[error(transparent)]
    Monitoring(#[from] crate::monitoring::MonitoringError),
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error("cluster: cannot build the client that forwards requests to other nodes: {0}")]
    Forwarding(reqwest::Error),
    #[error("source `{name}`: its subject {cause}")]
    Source {
        name: String,
        cause: crate::nats::TemplateError,
    },
}

impl From<crate::credentials::MasterKeyError> for DaemonError {
    fn from(error: crate::credentials::MasterKeyError) -> Self {
        Self::MasterKey(error)
    }
}

impl From<crate::credentials::CredentialError> for DaemonError {
    fn from(error: crate::credentials::CredentialError) -> Self {
        Self::Credentials(error)
    }
}

impl From<crate::pipeline::OpenError> for DaemonError {
    fn from(error: crate::pipeline::OpenError) -> Self {
        Self::Pipeline(error)
    }
}

/// The test hook's variable: while the file it names exists, the committer takes no
/// work (see `PipelineSettings::wedge_while`). Tests set it; nothing else should.
const WEDGE_HOOK: &str = "INTEGRATIOND_TEST_WEDGE_FILE";

/// Command-line values that override the config file (kept across SIGHUP reloads).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub state_dir: Option<PathBuf>,
    pub plugin_dir: Option<PathBuf>,
    pub admin_socket: Option<PathBuf>,
    pub http_listen: Option<std::net::SocketAddr>,
}

impl Overrides {
    pub fn apply(&self, config: &mut Config) {
        if let Some(dir) = &self.state_dir {
            config.state_dir.clone_from(dir);
        }
        if let Some(dir) = &self.plugin_dir {
            config.plugin_dir.clone_from(dir);
        }
        if let Some(path) = &self.admin_socket {
            config.admin_socket.clone_from(path);
        }
        if let Some(addr) = self.http_listen {
            config.http_listen = addr;
        }
    }
}

/// Loads the config (the file if given, else the defaults) with the overrides applied.
pub fn load_config(path: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
    let mut config = match path {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    overrides.apply(&mut config);
    config.resolve_paths()?;
    Ok(config)
}

/// Runs until SIGTERM or SIGINT, then stops every plugin gracefully.
pub async fn run(
    mut config: Config,
    config_path: Option<PathBuf>,
    overrides: Overrides,
) -> Result<(), DaemonError> {
    let mut sigterm = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;
    let mut sighup = signal(SignalKind::hangup()).map_err(DaemonError::Signals)?;

    // The master key first: a missing or unreadable key stops the daemon before the
    // state directory or database is created.
    let master = load_master_key(&config)?;
    crate::state_dir::prepare(&config.state_dir)?;
    let store = Store::open_with_cache(&config.state_dir, config.pipeline.store_cache_mb)?;
    let registry = Arc::new(Registry::new(
        config.plugin_dir.clone(),
        config.registry.pins.clone(),
        config.registry.trust_build_output,
        store.clone(),
    ));
    if config.registry.trust_build_output {
        tracing::warn!(
            "registry.trust_build_output is on: every discovered plugin is trusted as found (development only)"
        );
    }
    log_refusals(&registry.rescan()?);
    let credentials = master
        .map(|secret| {
            crate::credentials::Credentials::open_with_secret(store.clone(), secret)
                .map(|credentials| credentials.with_plugin_kinds(registry.plugin_kinds()))
        })
        .transpose()?
        .map(Arc::new);
    let integrations = crate::integrations::Integrations::new(store.clone(), credentials.clone());
    let flags = crate::tenants::Flags::new(store.clone(), config.flags.clone());
    let jsonl_path = config
        .sinks
        .jsonl_path
        .clone()
        .unwrap_or_else(|| config.state_dir.join("sinks/events.jsonl"));
    // Enrichment first, complete: the pipeline calls it for every event from its
    // first commit, and the completer (started below) takes what the index lacks.
    let (completions, completions_rx) = if config.enrichment.enabled {
        let (sender, receiver) = tokio::sync::mpsc::channel(crate::correlation::completion::QUEUE);
        (Some(sender), Some(receiver))
    } else {
        (None, None)
    };
    let correlator = Arc::new(crate::correlation::Correlator::new(
        store.clone(),
        config.enrichment.clone(),
        Some(flags.clone()),
        completions,
    ));
    let pipeline = Arc::new(crate::pipeline::Pipeline::open_with(
        store.clone(),
        crate::pipeline::PipelineSettings {
            dedup_window: config.pipeline.dedup_window,
            backlog_quota_bytes: config.pipeline.backlog_quota_bytes,
            inbox_max_entries: config.ingress.inbox_max_entries,
            dead_letters_per_tenant: config.pipeline.dead_letters_per_tenant,
            archive: Some(jsonl_path.clone()),
            wedge_while: std::env::var_os(WEDGE_HOOK).map(PathBuf::from),
            ..crate::pipeline::PipelineSettings::default()
        },
        correlator.clone(),
    )?);
    let metrics = Arc::new(Metrics::new());
    metrics.register_dead_letter_evictions(pipeline.dead_letter_evictions());
    let metrics_observer: Arc<dyn InstanceObserver> =
        Arc::new(wiring::MetricsObserver(metrics.clone()));
    let book = Arc::new(crate::health::HealthBook::recording_data_path(
        config.health.record_data_path,
    ));
    metrics.record_data_path(config.health.record_data_path);
    let responder = Arc::new(wiring::HealthResponder {
        integrations: integrations.clone(),
        desired: std::sync::OnceLock::new(),
    });
    let health_observer: Arc<dyn InstanceObserver> = Arc::new(wiring::HealthObserver {
        book: book.clone(),
        config: config.health.clone(),
        poll_interval: config.process.collect_interval,
        responder: responder.clone(),
    });
    // Collect results go to health first: a refusal it answers by disabling must not
    // wait behind the metrics.
    let collect_observers: Arc<dyn InstanceObserver> = Arc::new(Observers::new(vec![
        health_observer.clone(),
        metrics_observer.clone(),
    ]));
    let data_path = Arc::new(wiring::DataPath {
        pipeline: pipeline.clone(),
        correlator: correlator.clone(),
        pacing: crate::pipeline::sources::collect::Pacing {
            interval: config.process.collect_interval,
            backoff_max: config.health.collect_backoff_max,
            stall_timeout: config.health.collect_stall_timeout,
        },
        webhook_timeout: config.ingress.webhook_timeout,
        downstream: collect_observers,
    });
    let manager = Arc::new(Manager::new(
        registry.clone(),
        metrics.clone(),
        ManagerSettings {
            process: config.process.clone(),
            runtime_dir: config.runtime_dir(),
            configurer: Some(Arc::new(integrations.clone())),
            observer: Arc::new(Observers::new(vec![
                data_path,
                metrics_observer,
                health_observer,
            ])),
        },
    )?);
    let desired = Arc::new(crate::desired::Desired::new(
        config.instances.clone(),
        integrations.clone(),
        flags.clone(),
        manager.clone(),
    ));
    let _ = responder.desired.set(desired.clone());

    let admin_listener = admin::bind(&config.admin_socket)?;
    let http_listener = tokio::net::TcpListener::bind(config.http_listen)
        .await
        .map_err(|source| DaemonError::Http {
            addr: config.http_listen.to_string(),
            cause: source,
        })?;
    let http_addr = http_listener
        .local_addr()
        .map_err(|source| DaemonError::Http {
            addr: config.http_listen.to_string(),
            cause: source,
        })?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let cluster = join_cluster(&config, http_addr, &store, credentials.as_deref()).await?;
    if let Some(cluster) = &cluster {
        desired.set_cluster(cluster.clone());
    }
    // A tenant placed back here (a move given up) or away runs, or stops, at once.
    let placement_task = cluster.clone().map(|cluster| {
        let (desired, mut stop) = (desired.clone(), stop_rx.clone());
        let mut changed = cluster.placements_changed();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    stopped = stop.changed() => if stopped.is_err() || *stop.borrow() { return },
                    changed = changed.changed() => {
                        if changed.is_err() { return }
                        desired.apply().await;
                    }
                }
            }
        })
    });
    let cluster_task = cluster
        .clone()
        .map(|cluster| tokio::spawn(cluster.run(stop_rx.clone())));
    if let Some(completions) = completions_rx {
        tokio::spawn(
            crate::correlation::completion::Completer::new(
                pipeline.clone(),
                correlator.clone(),
                Arc::new(wiring::ManagerClients(manager.clone())),
                config.enrichment.plugin_deadline,
            )
            .run(completions, stop_rx.clone()),
        );
    }
    let monitoring = Arc::new(crate::monitoring::Monitoring::new(
        crate::monitoring::Sources {
            book: book.clone(),
            desired: desired.clone(),
            integrations: integrations.clone(),
            flags: flags.clone(),
            credentials: credentials.clone(),
            pipeline: pipeline.clone(),
            cluster: cluster.clone(),
        },
        config.health.clone(),
        config.alerts.clone(),
        config.pipeline.backlog_quota_bytes,
        stop_rx.clone(),
    )?);
    let monitor_task = tokio::spawn(monitoring.clone().run(stop_rx.clone()));
    let retention = config.enrichment.enabled.then(|| {
        let counters = crate::correlation::retention::RetentionMetrics::default();
        metrics.register(
            "correlation_pruned",
            "Correlation index entries and failures deleted past enrichment.retention, per table",
            counters.pruned.clone(),
        );
        metrics.register(
            "correlation_retention_failures",
            "Retention sweeps of the correlation index that failed (each is logged)",
            counters.failures.clone(),
        );
        metrics.register(
            "correlation_retention_last_success_timestamp_seconds",
            "When a retention sweep of the correlation index last completed",
            counters.last_success.clone(),
        );
        tokio::spawn(crate::correlation::retention::run(
            correlator.clone(),
            pipeline.clone(),
            config.enrichment.retention,
            counters,
            stop_rx.clone(),
        ))
    });
    let anchoring = tokio::spawn(crate::audit_anchoring::run(
        pipeline.clone(),
        config.admin.audit_anchor_interval,
        stop_rx.clone(),
    ));
    let sinks: Vec<_> = crate::pipeline::sinks::configured(&config.sinks, jsonl_path, &pipeline)?
        .into_iter()
        .map(|sink| tokio::spawn(sink.run(stop_rx.clone())))
        .collect();
    let renewer = credentials.clone().map(|credentials| {
        let renewer = Arc::new(crate::renewal::Renewer::new(
            credentials,
            integrations.clone(),
            desired.clone(),
            store.clone(),
        ));
        tokio::spawn(renewer.run(config.credentials.renewal_interval, stop_rx.clone()))
    });
    let handover = cluster.clone().map(|cluster| {
        Arc::new(crate::handover::Handover {
            cluster,
            state: crate::tenant_removal::TenantState {
                store: store.clone(),
                tenants: crate::tenants::Tenants::new(store.clone()),
                integrations: integrations.clone(),
                credentials: credentials.clone(),
                pipeline: pipeline.clone(),
            },
            desired: desired.clone(),
        })
    });
    let handover_task = match &handover {
        Some(handover) => {
            let requests = handover
                .cluster
                .listen(crate::cluster::Channel::Handover)
                .await?;
            Some(tokio::spawn(
                handover.clone().serve(requests, stop_rx.clone()),
            ))
        }
        None => None,
    };
    let admin_service = AdminService::new(
        crate::admin::Components {
            registry: registry.clone(),
            desired: desired.clone(),
            store: store.clone(),
            credentials: credentials.clone(),
            integrations: integrations.clone(),
            flags,
            pipeline: pipeline.clone(),
            correlator: correlator.clone(),
            allowed_endpoints: config.integrations.allowed_endpoints.clone(),
            monitoring: monitoring.clone(),
            book: book.clone(),
            cluster: cluster.clone(),
            handover: handover.clone(),
        },
        config.admin.clone(),
    );
    let admin_service = Arc::new(admin_service);
    let relayed_task = match &cluster {
        Some(cluster) => {
            let calls = cluster.listen(crate::cluster::Channel::Admin).await?;
            Some(tokio::spawn(admin::serve_relayed(
                cluster.clone(),
                admin::proto::admin_server::AdminServer::from_arc(admin_service.clone()),
                calls,
                stop_rx.clone(),
            )))
        }
        None => None,
    };
    let mut admin_stop = stop_rx.clone();
    let admin_task = tokio::spawn(
        tonic::transport::Server::builder()
            .layer(admin::RelayLayer {
                cluster: cluster.clone(),
                tenants: crate::tenants::Tenants::new(store.clone()),
            })
            .add_service(admin::proto::admin_server::AdminServer::from_arc(
                admin_service,
            ))
            .serve_with_incoming_shutdown(UnixListenerStream::new(admin_listener), async move {
                let _ = admin_stop.wait_for(|stop| *stop).await;
            }),
    );
    let ingress = Arc::new(
        crate::ingress::Ingress::new(
            crate::ingress::IngressParts {
                metrics: metrics.clone(),
                pipeline: pipeline.clone(),
                manager: manager.clone(),
                tenants: crate::tenants::Tenants::new(store.clone()),
                verifier: crate::ingress::HostVerifier {
                    integrations: integrations.clone(),
                    credentials: credentials.clone(),
                },
                book: book.clone(),
                monitoring: monitoring.clone(),
                integrations: integrations.clone(),
                correlator: correlator.clone(),
                cluster: cluster.clone(),
            },
            config.ingress.clone(),
        )
        .map_err(DaemonError::Forwarding)?,
    );
    let mut sources = Vec::new();
    for source in &config.sources.nats {
        let source = crate::ingress::JetStreamSource::new(source.clone(), ingress.clone())
            .map_err(|cause| DaemonError::Source {
                name: source.name.clone(),
                cause,
            })?;
        sources.push(tokio::spawn(source.run(stop_rx.clone())));
    }
    let http_task = tokio::spawn(crate::ingress::serve(
        http_listener,
        ingress,
        stop_rx.clone(),
    ));
    tracing::info!(
        admin_socket = %config.admin_socket.display(), http = %http_addr,
        plugin_dir = %config.plugin_dir.display(), "integrationd ready"
    );
    systemd::notify("READY=1");
    let watchdog = systemd::watchdog_timeout().map(|timeout| {
        tracing::info!(?timeout, "systemd's watchdog is on");
        tokio::spawn(systemd::run_watchdog(
            systemd::Core {
                pipeline: pipeline.clone(),
                monitoring: monitoring.clone(),
            },
            timeout,
            stop_rx.clone(),
        ))
    });

    desired.apply().await;

    loop {
        tokio::select! {
            _ = sigterm.recv() => { tracing::info!("SIGTERM: stopping"); break; }
            _ = sigint.recv() => { tracing::info!("SIGINT: stopping"); break; }
            _ = sighup.recv() => {
                systemd::notify("RELOADING=1");
                match load_config(config_path.as_deref(), &overrides) {
                    Ok(new) => {
                        warn_about_restart_only_changes(&config, &new);
                        log_refusals(&registry.rescan().unwrap_or_default());
                        desired.set_config_instances(new.instances.clone());
                        desired.apply().await;
                        manager.retry_refused().await;
                        tracing::info!(instances = new.instances.len(), "configuration reloaded");
                        config = new;
                    }
                    Err(err) => tracing::error!(error = %err, "reload failed; keeping the running configuration"),
                }
                systemd::notify("READY=1");
            }
        }
    }
    systemd::notify("STOPPING=1");
    manager.stop_all().await;
    let _ = stop_tx.send(true);
    let _ = admin_task.await;
    let _ = anchoring.await;
    if let Some(retention) = retention {
        let _ = retention.await;
    }
    if let Some(watchdog) = watchdog {
        let _ = watchdog.await;
    }
    let _ = monitor_task.await;
    for source in sources {
        let _ = source.await;
    }
    for sink in sinks {
        let _ = sink.await;
    }
    if let Some(renewer) = renewer {
        let _ = renewer.await;
    }
    let _ = http_task.await;
    if let Some(relayed_task) = relayed_task {
        let _ = relayed_task.await;
    }
    if let Some(handover_task) = handover_task {
        let _ = handover_task.await;
    }
    if let Some(placement_task) = placement_task {
        let _ = placement_task.await;
    }
    if let Some(cluster_task) = cluster_task {
        let _ = cluster_task.await;
    }
    let _ = std::fs::remove_file(&config.admin_socket);
    tracing::info!("integrationd stopped");
    Ok(())
}

/// Joins the cluster when `[cluster]` says to, and places this node's tenants on it. A
/// tenant another node already serves is logged and left to it: its requests are
/// forwarded there.
async fn join_cluster(
    config: &Config,
    http_addr: std::net::SocketAddr,
    store: &Store,
    credentials: Option<&crate::credentials::Credentials>,
) -> Result<Option<Arc<crate::cluster::Cluster>>, DaemonError> {
    let Some(section) = &config.cluster else {
        return Ok(None);
    };
    let address = section.advertised(http_addr);
    let recipient = credentials.map(|credentials| credentials.master_recipient());
    let cluster = crate::cluster::Cluster::join(section.clone(), address, recipient).await?;
    let mut tenants: std::collections::BTreeSet<String> =
        crate::tenants::Tenants::new(store.clone())
            .list()
            .map_err(|err| crate::cluster::ClusterError::Bucket {
                bucket: section.bucket.clone(),
                why: format!("cannot list this node's tenants to place them: {err}"),
            })?
            .into_iter()
            .map(|tenant| tenant.name)
            .collect();
    // The tenants of the configuration's instances run here too.
    tenants.extend(
        config
            .instances
            .iter()
            .map(|instance| instance.tenant.as_str().to_owned()),
    );
    for tenant in tenants {
        match cluster.claim(&tenant).await {
            Ok(()) => {}
            Err(err @ crate::cluster::ClusterError::PlacedElsewhere { .. }) => {
                tracing::error!(error = %err, "this node holds state of a tenant placed on another; its requests go there");
            }
            Err(err) => return Err(err.into()),
        }
    }
    let tenants = crate::tenants::Tenants::new(store.clone());
    for local in tenants.list().unwrap_or_default() {
        if cluster.owner(&local.name) != crate::cluster::Owner::Here {
            continue;
        }
        for token in tenants.tokens(&local.name).unwrap_or_default() {
            cluster.register_token(&token.id, &local.name).await?;
        }
    }
    tracing::info!(node = %cluster.node(), address = %cluster.address(), "joined the cluster");
    Ok(Some(cluster))
}

/// Reads the master key when one is configured. A missing or unreadable key stops the
/// daemon before anything is written; a key that is not the database's is found when the
/// credential manager opens, still before any write.
fn load_master_key(
    config: &Config,
) -> Result<Option<crate::credentials::MasterSecret>, DaemonError> {
    let Some(source) = &config.credentials.master_key else {
        tracing::warn!("no credentials.master_key: credentials cannot be stored");
        return Ok(None);
    };
    let source = crate::credentials::MasterKeySource::parse(source)?;
    let source = source.resolve().map_err(|source| DaemonError::StateDir {
        path: "credentials.master_key".to_owned(),
        cause: source,
    })?;
    if config.credentials.generate_missing_key {
        tracing::warn!(
            "credentials.generate_missing_key is on: a missing master key file is created (development only)"
        );
    }
    let secret =
        crate::credentials::load_master_secret(&source, config.credentials.generate_missing_key)?;
    Ok(Some(secret))
}

fn log_refusals(refusals: &[crate::registry::Refusal]) {
    for refusal in refusals {
        tracing::error!(plugin = %refusal.plugin, error = %refusal.reason, "plugin refused");
    }
}

fn warn_about_restart_only_changes(old: &Config, new: &Config) {
    let changed = [
        ("state_dir", old.state_dir != new.state_dir),
        ("plugin_dir", old.plugin_dir != new.plugin_dir),
        ("admin_socket", old.admin_socket != new.admin_socket),
        ("http_listen", old.http_listen != new.http_listen),
        ("process", old.process != new.process),
        ("registry", old.registry != new.registry),
        ("admin", old.admin != new.admin),
        ("sinks", old.sinks != new.sinks),
        ("sources", old.sources != new.sources),
        ("cluster", old.cluster != new.cluster),
    ];
    for (key, differs) in changed {
        if differs {
            tracing::warn!(
                key,
                "this setting changed but takes effect only after a restart"
            );
        }
    }
}
