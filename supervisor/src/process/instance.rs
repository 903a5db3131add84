//! The task that keeps one plugin instance alive: start, watch (exit and heartbeats),
//! stop gracefully, and restart after the policy's delay. Decisions are made by the
//! policies in `restart` and `heartbeat`; this loop only waits and dispatches.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use plugin_kit::signature::Authentication;
use plugin_protocol::{Capabilities, Capability, v1};
use tokio::sync::{mpsc, oneshot};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;

use super::heartbeat::{HeartbeatPolicy, Verdict};
use super::restart::{RestartPolicy, RestartSettings};
use super::spawn::{Running, SpawnSettings, StartError};
use super::state::{InstanceState, InstanceStatus};
use crate::health::{InstanceLabels, Metrics};
use crate::registry::Registry;

/// Requests to an instance task.
#[derive(Debug)]
pub enum Control {
    /// Stop gracefully (if running) and start again without backoff.
    Restart,
    /// Stop gracefully and end the task; the sender learns when it is done.
    Stop(oneshot::Sender<()>),
}

/// Everything an instance task needs, shared with the manager.
#[derive(Debug)]
pub struct InstanceContext {
    pub labels: InstanceLabels,
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    pub spawn: SpawnSettings,
    pub restart: RestartSettings,
    pub heartbeat_interval: Duration,
    pub heartbeat_timeout: Duration,
    pub heartbeat_misses: u32,
    pub grace_period: Duration,
    pub status: Arc<Mutex<InstanceStatus>>,
    pub configurer: Option<Arc<dyn super::InstanceConfigurer>>,
    /// Told what happens to the instance.
    pub observer: Arc<dyn super::InstanceObserver>,
    /// Where the HTTP ingress and enrichment find the running plugin.
    pub slot: Arc<PluginSlot>,
}

/// The running plugin's client and what it can do (known once it has started), for
/// the calls made from outside its task: webhooks from the HTTP ingress, `Enrich` from
/// enrichment.
#[derive(Debug, Default)]
pub struct PluginSlot {
    client: Mutex<Option<plugin_kit::host::PluginRpcClient>>,
    /// `None` until the plugin has described itself.
    capabilities: Mutex<Option<Capabilities>>,
    /// How the integration's deliveries are authenticated, as the plugin reported at its
    /// last successful `Configure`; kept while it is down, which is when it is needed.
    reported_authentication: Mutex<Option<Authentication>>,
}

impl PluginSlot {
    /// The client, while the plugin runs and has `capability`.
    pub fn client_for(&self, capability: Capability) -> Option<plugin_kit::host::PluginRpcClient> {
        if self.has(capability) != Some(true) {
            return None;
        }
        self.client
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The client, while the plugin runs (for calls every plugin answers: `Check`).
    pub fn client(&self) -> Option<plugin_kit::host::PluginRpcClient> {
        self.client
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Whether the plugin has `capability` (`None` before it first started).
    pub fn has(&self, capability: Capability) -> Option<bool> {
        self.capabilities
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .map(|all| all.contains(capability))
    }

    /// The webhook authentication the plugin last reported for this integration.
    pub fn reported_authentication(&self) -> Option<Authentication> {
        self.reported_authentication
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set_reported_authentication(&self, authentication: Option<Authentication>) {
        *self
            .reported_authentication
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = authentication;
    }

    fn set(&self, client: Option<plugin_kit::host::PluginRpcClient>) {
        *self
            .client
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = client;
    }
}

/// Heartbeats between two `Status` calls.
const STATUS_EVERY_TICKS: u64 = 5;

/// Asks the plugin for its dependencies' states; false when it does not report them.
async fn poll_status(
    ctx: &InstanceContext,
    client: &mut plugin_kit::host::PluginRpcClient,
) -> bool {
    let answer =
        tokio::time::timeout(ctx.heartbeat_timeout, client.status(v1::StatusRequest {})).await;
    match answer {
        Ok(Ok(response)) => {
            let dependencies = response.into_inner().dependencies;
            let before: Vec<(String, String)> = ctx
                .status
                .lock()
                .expect("status lock poisoned")
                .dependencies
                .iter()
                .map(|d| (d.name.clone(), d.breaker.clone()))
                .collect();
            for dependency in &dependencies {
                let was = before
                    .iter()
                    .find(|(name, _)| *name == dependency.name)
                    .map(|(_, state)| state.as_str());
                if was != Some(dependency.breaker.as_str())
                    && (dependency.breaker != "closed" || was.is_some())
                {
                    tracing::warn!(
                        plugin = %ctx.labels.plugin, tenant = %ctx.labels.tenant, integration = %ctx.labels.integration,
                        dependency = %dependency.name, breaker = %dependency.breaker, detail = %dependency.detail,
                        "a plugin dependency's circuit breaker changed"
                    );
                }
            }
            ctx.metrics.dependencies(&ctx.labels, &dependencies);
            ctx.observer.dependencies(&ctx.labels, &dependencies);
            ctx.update(|status| status.dependencies = dependencies);
            true
        }
        Ok(Err(status)) if status.code() == tonic::Code::Unimplemented => false,
        // A slow or failed answer: the heartbeats judge the plugin's health.
        _ => true,
    }
}

/// Takes the client out of the slot when the run ends, however it ends.
struct ClearOnDrop(Arc<PluginSlot>);

impl Drop for ClearOnDrop {
    fn drop(&mut self) {
        self.0.set(None);
    }
}

/// How one run of the process ended.
enum RunEnd {
    /// Exited, hung, or failed to start: restart after the backoff.
    Crashed(String),
    Refused(String),
    RestartRequested,
    Stopped(Option<oneshot::Sender<()>>),
}

impl InstanceContext {
    fn update(&self, change: impl FnOnce(&mut InstanceStatus)) {
        let mut status = self.status.lock().expect("status lock poisoned");
        let before = status.state;
        change(&mut status);
        if status.state != before {
            status.since = SystemTime::now();
            self.metrics
                .state_changed(&self.labels, before.as_str(), status.state.as_str());
            self.observer
                .state_changed(&self.labels, before, status.state);
        }
    }

    fn set_state(&self, state: InstanceState) {
        self.update(|status| status.state = state);
    }

    fn plugin_fields(&self) -> (&str, &str, &str) {
        (
            &self.labels.plugin,
            &self.labels.tenant,
            &self.labels.integration,
        )
    }
}

/// Runs until told to stop.
pub async fn run(ctx: Arc<InstanceContext>, mut control: mpsc::Receiver<Control>) {
    let mut policy = RestartPolicy::new(ctx.restart);
    let (plugin, tenant, integration) = ctx.plugin_fields();
    loop {
        ctx.update(|status| {
            status.state = InstanceState::Starting;
            status.next_restart_at = None;
        });
        let end = match start(&ctx).await {
            Ok(running) => {
                policy.on_healthy(Instant::now());
                supervise(&ctx, running, &mut control).await
            }
            Err(StartError::Refused(reason)) => RunEnd::Refused(reason),
            Err(StartError::Failed(reason)) => RunEnd::Crashed(reason),
        };
        ctx.update(|status| {
            status.pid = None;
        });
        match end {
            RunEnd::Stopped(ack) => {
                ctx.set_state(InstanceState::Stopped);
                if let Some(ack) = ack {
                    let _ = ack.send(());
                }
                return;
            }
            RunEnd::RestartRequested => {
                policy.reset();
                continue;
            }
            RunEnd::Refused(reason) => {
                tracing::error!(plugin, tenant, integration, error = %reason, "plugin refused");
                ctx.update(|status| {
                    status.state = InstanceState::Refused;
                    status.last_error = Some(reason);
                });
                // Nothing changes until an operator acts.
                match control.recv().await {
                    Some(Control::Restart) => {
                        policy.reset();
                        continue;
                    }
                    Some(Control::Stop(ack)) => {
                        ctx.set_state(InstanceState::Stopped);
                        let _ = ack.send(());
                        return;
                    }
                    None => return,
                }
            }
            RunEnd::Crashed(reason) => {
                let decision = policy.on_exit(Instant::now(), rand::random::<f64>());
                ctx.metrics.restarted(&ctx.labels);
                ctx.observer.exited(&ctx.labels, &reason, decision.delay);
                let state = if decision.crash_loop {
                    InstanceState::CrashLoop
                } else {
                    InstanceState::Backoff
                };
                tracing::warn!(
                    plugin, tenant, integration, error = %reason, state = %state,
                    restart_in = ?decision.delay, "plugin instance down; restarting after backoff"
                );
                ctx.update(|status| {
                    status.state = state;
                    status.restarts += 1;
                    status.last_error = Some(reason);
                    status.next_restart_at = Some(SystemTime::now() + decision.delay);
                });
                tokio::select! {
                    () = tokio::time::sleep(decision.delay) => {}
                    message = control.recv() => match message {
                        Some(Control::Restart) => policy.reset(),
                        Some(Control::Stop(ack)) => {
                            ctx.set_state(InstanceState::Stopped);
                            let _ = ack.send(());
                            return;
                        }
                        None => return,
                    }
                }
            }
        }
    }
}

async fn start(ctx: &InstanceContext) -> Result<Running, StartError> {
    let Some(package) = ctx.registry.selected(&ctx.labels.plugin) else {
        let why = ctx
            .registry
            .refusal(&ctx.labels.plugin)
            .unwrap_or_else(|| format!("plugin `{}` is not installed", ctx.labels.plugin));
        return Err(StartError::Refused(why));
    };
    let mut running = super::spawn::start(&ctx.registry, &package, &ctx.spawn, &ctx.labels).await?;
    if let Err(err) = configure(ctx, &mut running).await {
        plugin_kit::host::kill_group(running.launched.pid);
        let _ = running.launched.child.wait().await;
        return Err(err);
    }
    let (plugin, tenant, integration) = ctx.plugin_fields();
    tracing::info!(
        plugin, tenant, integration, pid = running.launched.pid, version = %running.description.version,
        protocol = running.launched.handshake.app, "plugin instance healthy"
    );
    ctx.update(|status| {
        status.state = InstanceState::Healthy;
        status.pid = Some(running.launched.pid);
        status.version = Some(running.description.version.clone());
        status.protocol_version = Some(running.launched.handshake.app);
    });
    Ok(running)
}

/// Sends the instance's configuration, if it has one.
async fn configure(ctx: &InstanceContext, running: &mut Running) -> Result<(), StartError> {
    let Some(configurer) = ctx.configurer.clone() else {
        return Ok(());
    };
    let labels = ctx.labels.clone();
    let reader = format!(
        "plugin:{}/{}/{}",
        labels.plugin, labels.tenant, labels.integration
    );
    let source = configurer.clone();
    let request = tokio::task::spawn_blocking(move || {
        source.configure_request(&labels.tenant, &labels.integration, &reader)
    })
    .await
    .map_err(|err| StartError::Failed(err.to_string()))?
    .map_err(|why| {
        StartError::Refused(format!(
            "integration `{}` cannot be configured: {why}",
            ctx.labels.integration
        ))
    })?;
    let Some(super::Configuration { request, mappings }) = request else {
        return Ok(());
    };
    ctx.observer
        .configuring(&ctx.labels, &mappings, running.capabilities);
    match tokio::time::timeout(
        ctx.spawn.start_timeout,
        running.connection.plugin.configure(request),
    )
    .await
    {
        Ok(Ok(response)) => {
            let reported = response.into_inner().webhook_authentication_json;
            let authentication = if reported.is_empty() {
                None
            } else {
                Some(
                    serde_json::from_str::<Authentication>(&reported).map_err(|err| {
                        StartError::Failed(format!(
                            "plugin `{}` reported a webhook authentication the daemon cannot read: {err}",
                            ctx.labels.plugin
                        ))
                    })?,
                )
            };
            ctx.slot.set_reported_authentication(authentication);
            Ok(())
        }
        Ok(Err(status))
            if matches!(
                status.code(),
                tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
            ) =>
        {
            let reason = format!(
                "plugin `{}` rejected the credentials: {}",
                ctx.labels.plugin,
                status.message()
            );
            let (configurer, labels, why) =
                (configurer.clone(), ctx.labels.clone(), reason.clone());
            let _ = tokio::task::spawn_blocking(move || {
                configurer.credentials_rejected(&labels.tenant, &labels.integration, &why)
            })
            .await;
            tracing::error!(alert = true, plugin = %ctx.labels.plugin, tenant = %ctx.labels.tenant, integration = %ctx.labels.integration, "{reason}; integration disabled");
            Err(StartError::Refused(reason))
        }
        Ok(Err(status)) => Err(StartError::Failed(format!(
            "plugin `{}` refused Configure: {}",
            ctx.labels.plugin,
            status.message()
        ))),
        Err(_) => Err(StartError::Failed(format!(
            "plugin `{}`: Configure timed out",
            ctx.labels.plugin
        ))),
    }
}

/// Watches a running process until it exits, hangs, or the manager asks for a stop.
async fn supervise(
    ctx: &InstanceContext,
    running: Running,
    control: &mut mpsc::Receiver<Control>,
) -> RunEnd {
    let Running {
        launched,
        mut connection,
        capabilities,
        ..
    } = running;
    *ctx.slot
        .capabilities
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(capabilities);
    // The observers' tasks (the pipeline's sources) run while the process does.
    let _attached = AbortOnDrop(ctx.observer.running(
        &ctx.labels,
        &connection.plugin,
        capabilities,
    ));
    ctx.slot.set(Some(connection.plugin.clone()));
    let _clear_slot = ClearOnDrop(ctx.slot.clone());
    let pid = launched.pid;
    let mut child = launched.child;
    let mut heartbeat = HeartbeatPolicy::new(ctx.heartbeat_misses);
    // The plugin's dependencies are asked after every few healthy heartbeats, until it
    // says it does not report them.
    let (mut ticks, mut polls_status) = (0u64, true);
    let mut ticker = tokio::time::interval_at(
        tokio::time::Instant::now() + ctx.heartbeat_interval,
        ctx.heartbeat_interval,
    );
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            exit = child.wait() => {
                // The group may hold children of the plugin: they go with it.
                plugin_kit::host::kill_group(pid);
                let how = exit.map_or_else(|err| format!("wait failed: {err}"), |status| status.to_string());
                return RunEnd::Crashed(format!("plugin process {pid} exited ({how})"));
            }
            _ = ticker.tick() => {
                let sent = Instant::now();
                let answer = tokio::time::timeout(
                    ctx.heartbeat_timeout,
                    connection.health.check(HealthCheckRequest { service: String::new() }),
                ).await;
                let answered = matches!(&answer, Ok(Ok(r)) if r.get_ref().status == ServingStatus::Serving as i32);
                ctx.metrics.heartbeat(&ctx.labels, answered.then(|| sent.elapsed().as_secs_f64()));
                match heartbeat.on_result(answered) {
                    Verdict::Healthy => {
                        ctx.set_state(InstanceState::Healthy);
                        ticks += 1;
                        if polls_status && ticks % STATUS_EVERY_TICKS == 1 {
                            polls_status = poll_status(ctx, &mut connection.plugin).await;
                        }
                    }
                    Verdict::Degraded { missed } => {
                        if let Ok(Some(_)) = child.try_wait() {
                            continue; // the exit branch reports it
                        }
                        tracing::warn!(plugin = %ctx.labels.plugin, tenant = %ctx.labels.tenant, missed, "plugin missed a heartbeat");
                        ctx.set_state(InstanceState::Degraded);
                    }
                    Verdict::Hung { missed } => {
                        if let Ok(Some(_)) = child.try_wait() {
                            continue;
                        }
                        plugin_kit::host::kill_group(pid);
                        let _ = child.wait().await;
                        return RunEnd::Crashed(format!(
                            "plugin process {pid} hung: {missed} heartbeats unanswered within {:?}; killed",
                            ctx.heartbeat_timeout
                        ));
                    }
                }
            }
            message = control.recv() => {
                ctx.set_state(InstanceState::Stopping);
                stop_gracefully(ctx, &mut connection, &mut child, pid).await;
                return match message {
                    Some(Control::Restart) => RunEnd::RestartRequested,
                    Some(Control::Stop(ack)) => RunEnd::Stopped(Some(ack)),
                    None => RunEnd::Stopped(None),
                };
            }
        }
    }
}

/// `Shutdown` call, then SIGTERM, then SIGKILL of the process group: the whole stop
/// takes at most the grace period (half for `Shutdown`, the rest after SIGTERM).
async fn stop_gracefully(
    ctx: &InstanceContext,
    connection: &mut plugin_kit::host::Connection,
    child: &mut tokio::process::Child,
    pid: u32,
) {
    let start = tokio::time::Instant::now();
    let sigterm_at = start + ctx.grace_period / 2;
    let sigkill_at = start + ctx.grace_period;
    let request = v1::ShutdownRequest {
        reason: "supervisor stopping this instance".to_owned(),
    };
    let polite = async {
        let _ = connection.plugin.shutdown(request).await;
        child.wait().await
    };
    if tokio::time::timeout_at(sigterm_at, polite).await.is_err() {
        tracing::warn!(plugin = %ctx.labels.plugin, pid, "plugin did not exit after Shutdown; sending SIGTERM");
        plugin_kit::host::signal_group(pid, nix::sys::signal::Signal::SIGTERM);
        if tokio::time::timeout_at(sigkill_at, child.wait())
            .await
            .is_err()
        {
            tracing::warn!(plugin = %ctx.labels.plugin, pid, "plugin did not exit after SIGTERM; sending SIGKILL");
        }
    }
    plugin_kit::host::kill_group(pid);
    let _ = child.wait().await;
}

/// Stops the tasks attached to a run when it ends, however it ends.
struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}
