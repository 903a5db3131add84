//! `integration-testfault`: a test-only plugin with controllable faults, for the
//! supervisor's end-to-end tests. Never installed as a product plugin.
//!
//! Faults are chosen with arguments (a package's manifest passes them through `args`):
//!
//! | argument | behaviour |
//! | --- | --- |
//! | `--name N`, `--version V`, `--capabilities a,b` | what `Describe` says (defaults: testfault, 0.1.0, none) |
//! | `--crash-on-start` | exit 3 before the handshake |
//! | `--crash-file PATH` | exit 3 before the handshake while PATH exists (a crash loop a test can end) |
//! | `--crash-after-calls N` | exit 4 on the N-th plugin call (`Describe` counts) |
//! | `--hang-after-ms N` | block its only runtime thread after N ms: health stops answering |
//! | `--bad-handshake` | print a malformed handshake line, then wait |
//! | `--no-handshake` | print nothing, wait forever |
//! | `--claim-protocol N` | print a well-formed handshake offering protocol N |
//! | `--flood-stderr` | write to stderr as fast as it can, while serving normally |
//! | `--allocate-mb N` | allocate and touch N MiB at start (to hit the memory limit) |
//! | (credential `revoked`) | `Configure` answers UNAUTHENTICATED |
//! | `--reject-credentials-file PATH` | `Configure` answers UNAUTHENTICATED while PATH exists |
//! | `--emit N` | `Collect` streams events N in total, 500 a batch, resuming at the cursor |
//! | `--invalid-every K` | every K-th emitted event is schema-invalid |
//! | `--failure-every K` | event 0 is a deployment of `testfault` to production ten minutes ago, and every K-th after it an error log line (a failure to enrich) |
//! | `--collect-error-file PATH` | while PATH exists, `Collect` fails with the error class its first line holds (`auth`, `permission`, `unavailable`, ...) and the message its next lines hold, if any |
//! | `--collect-stall-file PATH` | while PATH exists, `Collect` opens its stream and yields nothing (heartbeats still answer) |
//! | `--renew-fails` | `RenewCredential` answers UNAVAILABLE; otherwise it renews for an hour |
//! | `--probe-url URL` | once configured, GETs URL every 200 ms through plugin-kit's resilient client (breaker: 2 failures, 1 s cool-down) and reports it as dependency `probe` |
//! | `--no-token-check` | serves without checking the token (its own server; the peer check stays) |
//! | `--ignore-sigterm` | blocks SIGTERM, so it never arrives |
//! | `--ignore-host-death` | blocks SIGHUP, plugin-kit's parent-death signal |
//! | `--stdout-after-handshake` | writes a line to the real stdout on every `Configure` |
//! | `--accept-any-config` | `Configure` takes any JSON, whatever its schema says |
//! | `--ignore-cursor` | `Collect` starts from the beginning whatever the cursor |
//! | `--accept-unsigned-webhooks` | `HandleWebhook` skips the `x-testfault-token` check |
//! | (configuration) | typed: `repositories`, `poll` (>= 1), `forbidden`; anything else is INVALID_ARGUMENT naming the field |
//! | (webhooks) | `HandleWebhook` wants header `x-testfault-token: good` (or `--webhook-token T`; not for a delivery marked `host_verified`; else 401) and a JSON body `{"id": "d-1", "events": N}`: N events with ids from `id`; `"forbidden": true` answers 403, `"invalid": true` makes the last event schema-invalid, `"ping": true` answers 200 with no events |

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use plugin_kit::{Description, Plugin, Status, v1};

#[derive(Debug, Default)]
struct Faults {
    name: Option<String>,
    version: Option<String>,
    capabilities: plugin_kit::Capabilities,
    crash_on_start: bool,
    crash_file: Option<String>,
    crash_after_calls: Option<u64>,
    hang_after_ms: Option<u64>,
    bad_handshake: bool,
    no_handshake: bool,
    claim_protocol: Option<u32>,
    flood_stderr: bool,
    allocate_mb: Option<usize>,
    renew_fails: bool,
    emit: Option<u64>,
    invalid_every: Option<u64>,
    failure_every: Option<u64>,
    reject_credentials_file: Option<String>,
    collect_error_file: Option<String>,
    collect_stall_file: Option<String>,
    probe_url: Option<String>,
    webhook_token: Option<String>,
    no_token_check: bool,
    ignore_sigterm: bool,
    ignore_host_death: bool,
    stdout_after_handshake: bool,
    accept_any_config: bool,
    /// Every webhook event non-canonical (the conformance kit's `webhook-signed`).
    invalid_webhook_events: bool,
    ignore_cursor: bool,
    accept_unsigned_webhooks: bool,
}

/// The configuration testfault takes.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // Read as JSON by `check`; the type is its schema and its parser.
struct FaultConfig {
    /// Repositories `Check` reports on.
    #[serde(default)]
    repositories: Vec<String>,
    /// Seconds between collections (read by the supervisor's schedule).
    #[schemars(range(min = 1))]
    poll: Option<u64>,
    /// Repositories `Check` reports as lacking `contents:read`.
    #[serde(default)]
    forbidden: Vec<String>,
}

fn parse_faults() -> Result<Faults, String> {
    let mut faults = Faults::default();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--name" => faults.name = Some(value()?),
            "--version" => faults.version = Some(value()?),
            "--capabilities" => {
                let names: Vec<String> = value()?.split(',').map(str::to_owned).collect();
                faults.capabilities =
                    plugin_kit::Capabilities::parse(&names).map_err(|e| e.to_string())?;
            }
            "--crash-on-start" => faults.crash_on_start = true,
            "--crash-file" => faults.crash_file = Some(value()?),
            "--crash-after-calls" => faults.crash_after_calls = Some(number(&value()?)?),
            "--hang-after-ms" => faults.hang_after_ms = Some(number(&value()?)?),
            "--bad-handshake" => faults.bad_handshake = true,
            "--no-handshake" => faults.no_handshake = true,
            "--claim-protocol" => faults.claim_protocol = Some(number(&value()?)?),
            "--flood-stderr" => faults.flood_stderr = true,
            "--allocate-mb" => faults.allocate_mb = Some(number(&value()?)?),
            "--renew-fails" => faults.renew_fails = true,
            "--emit" => faults.emit = Some(number(&value()?)?),
            "--invalid-every" => faults.invalid_every = Some(number(&value()?)?),
            "--failure-every" => faults.failure_every = Some(number(&value()?)?),
            "--reject-credentials-file" => faults.reject_credentials_file = Some(value()?),
            "--collect-error-file" => faults.collect_error_file = Some(value()?),
            "--collect-stall-file" => faults.collect_stall_file = Some(value()?),
            "--probe-url" => faults.probe_url = Some(value()?),
            "--webhook-token" => faults.webhook_token = Some(value()?),
            "--no-token-check" => faults.no_token_check = true,
            "--ignore-sigterm" => faults.ignore_sigterm = true,
            "--ignore-host-death" => faults.ignore_host_death = true,
            "--stdout-after-handshake" => faults.stdout_after_handshake = true,
            "--accept-any-config" => faults.accept_any_config = true,
            "--ignore-cursor" => faults.ignore_cursor = true,
            "--accept-unsigned-webhooks" => faults.accept_unsigned_webhooks = true,
            "--invalid-webhook-events" => faults.invalid_webhook_events = true,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(faults)
}

fn number<T: std::str::FromStr>(text: &str) -> Result<T, String> {
    text.parse()
        .map_err(|_| format!("`{text}` is not a number"))
}

fn wait_forever() -> ! {
    loop {
        std::thread::park();
    }
}

fn main() -> std::process::ExitCode {
    let faults = match parse_faults() {
        Ok(faults) => faults,
        Err(err) => {
            eprintln!("testfault: {err}");
            return std::process::ExitCode::from(2);
        }
    };
    if faults.crash_on_start {
        eprintln!("testfault: crashing on start as configured");
        std::process::exit(3);
    }
    if let Some(path) = &faults.crash_file
        && std::path::Path::new(path).exists()
    {
        eprintln!("testfault: crashing on start while {path} exists");
        std::process::exit(3);
    }
    if let Some(mb) = faults.allocate_mb {
        let mut block: Vec<u8> = Vec::with_capacity(mb * 1024 * 1024);
        block.resize(mb * 1024 * 1024, 1);
        eprintln!("testfault: allocated {} bytes", block.len());
    }
    if faults.bad_handshake {
        println!("hello, I am not a handshake line");
        let _ = std::io::stdout().flush();
        wait_forever();
    }
    if faults.no_handshake {
        wait_forever();
    }
    if let Some(protocol) = faults.claim_protocol {
        let socket = std::env::var(plugin_protocol::ENV_SOCKET_PATH).unwrap_or_default();
        println!("{}", plugin_protocol::HandshakeLine::new(protocol, socket));
        let _ = std::io::stdout().flush();
        wait_forever();
    }
    if faults.flood_stderr {
        std::thread::spawn(|| {
            let line = format!(
                "{{\"level\":\"INFO\",\"fields\":{{\"message\":\"flood {}\"}}}}\n",
                "x".repeat(200)
            );
            let mut stderr = std::io::stderr();
            // Yield between lines: the lock on stderr is not fair, and the plugin's own
            // logging (on Configure, say) must still get its turn.
            while stderr.write_all(line.as_bytes()).is_ok() {
                std::thread::yield_now();
            }
        });
    }
    let blocked: Vec<nix::sys::signal::Signal> = [
        (faults.ignore_sigterm, nix::sys::signal::Signal::SIGTERM),
        (faults.ignore_host_death, nix::sys::signal::Signal::SIGHUP),
    ]
    .into_iter()
    .filter_map(|(on, signal)| on.then_some(signal))
    .collect();
    if !blocked.is_empty() {
        // Blocked before any thread starts, so no thread ever takes them.
        let mut set = nix::sys::signal::SigSet::empty();
        for signal in blocked {
            set.add(signal);
        }
        let _ = set.thread_block();
    }
    // The real stdout, kept before plugin-kit points fd 1 at stderr.
    let stdout = faults
        .stdout_after_handshake
        .then(|| nix::unistd::dup(std::io::stdout()).ok())
        .flatten()
        .map(std::fs::File::from);
    let hang_after = faults.hang_after_ms.map(Duration::from_millis);
    let probe = faults.probe_url.as_ref().and_then(|_| {
        let resilience = plugin_kit::resilience::Resilience::new(
            "probe",
            plugin_kit::resilience::RetryPolicy {
                max_attempts: 1,
                ..Default::default()
            },
            plugin_kit::resilience::BreakerSettings {
                failure_threshold: 2,
                cool_down: Duration::from_secs(1),
            },
        );
        plugin_kit::resilience::ResilientHttp::new(resilience, Duration::from_secs(1))
            .ok()
            .map(std::sync::Arc::new)
    });
    let no_token_check = faults.no_token_check;
    let plugin = TestFault {
        probe,
        probing: std::sync::atomic::AtomicBool::new(false),
        faults,
        calls: AtomicU64::new(0),
        config: std::sync::Mutex::default(),
        context: std::sync::Mutex::default(),
        hang_after,
        stdout: std::sync::Mutex::new(stdout),
    };
    if no_token_check {
        return without_token::serve(plugin);
    }
    plugin_kit::serve(plugin)
}

struct TestFault {
    faults: Faults,
    probe: Option<std::sync::Arc<plugin_kit::resilience::ResilientHttp>>,
    probing: std::sync::atomic::AtomicBool,
    /// Tenant and integration, from Configure.
    context: std::sync::Mutex<Option<plugin_kit::MapContext>>,
    calls: AtomicU64,
    config: std::sync::Mutex<Option<serde_json::Value>>,
    hang_after: Option<Duration>,
    /// `--stdout-after-handshake`: the real stdout.
    stdout: std::sync::Mutex<Option<std::fs::File>>,
}

impl TestFault {
    fn count_call(&self) {
        let calls = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if self
            .faults
            .crash_after_calls
            .is_some_and(|limit| calls >= limit)
        {
            eprintln!("testfault: crashing after {calls} calls as configured");
            std::process::exit(4);
        }
    }
}

impl Plugin for TestFault {
    fn describe(&self) -> Description {
        self.count_call();
        if let Some(after) = self.hang_after {
            // Block the plugin's single runtime thread: nothing answers any more.
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                eprintln!("testfault: hanging as configured");
                wait_forever();
            });
        }
        Description {
            name: self
                .faults
                .name
                .clone()
                .unwrap_or_else(|| "testfault".to_owned()),
            version: self
                .faults
                .version
                .clone()
                .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_owned()),
            description: "test plugin with controllable faults".to_owned(),
            capabilities: self.faults.capabilities,
            config_schema: plugin_kit::config::schema_of::<FaultConfig>(),
            credential_kinds: Vec::new(),
        }
    }

    fn dependencies(&self) -> Vec<v1::DependencyStatus> {
        self.probe
            .iter()
            .map(|probe| probe.resilience().status())
            .collect()
    }

    async fn configure(&self, request: v1::ConfigureRequest) -> Result<(), Status> {
        self.count_call();
        if let Some(stdout) = self
            .stdout
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_mut()
        {
            let _ = writeln!(stdout, "testfault: hello on stdout");
        }
        if let (Some(probe), Some(url)) = (&self.probe, &self.faults.probe_url)
            && !self.probing.swap(true, Ordering::SeqCst)
        {
            let (probe, url) = (probe.clone(), url.clone());
            tokio::spawn(async move {
                loop {
                    let _ = probe.send(|client| client.get(&url)).await;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            });
        }
        let config: serde_json::Value = serde_json::from_str(&request.config_json)
            .map_err(|e| Status::invalid_argument(format!("config is not JSON: {e}")))?;
        if !self.faults.accept_any_config {
            plugin_kit::config::Configured::<FaultConfig>::parse(&request)?;
        }
        // Credentials revoked upstream, as a real API would answer.
        if self
            .faults
            .reject_credentials_file
            .as_ref()
            .is_some_and(|path| std::path::Path::new(path).exists())
        {
            return Err(Status::unauthenticated(
                "401 Bad credentials (revoked upstream)",
            ));
        }
        // A credential whose value is `revoked` is refused like a real API would.
        if request
            .credentials
            .iter()
            .any(|c| c.secret.as_slice() == b"\"revoked\"")
        {
            return Err(Status::unauthenticated("401 Bad credentials"));
        }
        let roles: Vec<&str> = request
            .credentials
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        eprintln!(
            "{{\"level\":\"INFO\",\"fields\":{{\"message\":\"configured\",\"tenant\":\"{}\",\"poll\":\"{}\",\"credential_roles\":\"{}\"}}}}",
            request.tenant,
            config
                .get("poll")
                .map(ToString::to_string)
                .unwrap_or_default(),
            roles.join(",")
        );
        *self
            .context
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(plugin_kit::MapContext {
            tenant: request.tenant.clone(),
            integration: request.integration.clone(),
        });
        *self
            .config
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(config);
        Ok(())
    }

    /// Synthetic metric events from the cursor to `--emit`, 500 a batch.
    async fn collect(&self, cursor: String) -> Result<plugin_kit::EventStream, Status> {
        let Some(total) = self.faults.emit else {
            return Err(Status::unimplemented("start with --emit N to collect"));
        };
        if let Some(path) = &self.faults.collect_error_file
            && let Ok(text) = std::fs::read_to_string(path)
        {
            let (class, message) = text.split_once('\n').unwrap_or((&text, ""));
            let class = plugin_kit::ErrorClass::parse(class.trim())
                .unwrap_or(plugin_kit::ErrorClass::Internal);
            let message = message.trim();
            return Err(class.status(if message.is_empty() {
                format!("testfault: collect fails with {class} (while {path} exists)")
            } else {
                format!("testfault: {message}")
            }));
        }
        if let Some(path) = &self.faults.collect_stall_file
            && std::path::Path::new(path).exists()
        {
            return Ok(Box::pin(tokio_stream::pending()));
        }
        let start: u64 = if cursor.is_empty() || self.faults.ignore_cursor {
            0
        } else {
            cursor
                .parse()
                .map_err(|_| Status::invalid_argument(format!("cursor `{cursor}`")))?
        };
        let context = self
            .context
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .ok_or_else(|| Status::failed_precondition("not configured"))?;
        let invalid_every = self.faults.invalid_every;
        let failure_every = self.faults.failure_every;
        let batches = (start..total).step_by(500).map(move |first| {
            let last = (first + 500).min(total);
            let events_json = (first..last)
                .map(|i| match failure_every {
                    Some(k) if i == 0 || (k > 0 && i.is_multiple_of(k)) => {
                        failure_or_deployment(&context, i)
                    }
                    _ => synthetic_event(&context, i, invalid_every),
                })
                .collect();
            Ok(v1::EventBatch {
                events_json,
                cursor: last.to_string(),
            })
        });
        Ok(Box::pin(tokio_stream::iter(batches)))
    }

    /// A renewed OAuth2-style secret valid for an hour, unless told to fail.
    async fn renew_credential(
        &self,
        request: v1::RenewCredentialRequest,
    ) -> Result<v1::RenewCredentialResponse, Status> {
        if self.faults.renew_fails {
            return Err(Status::unavailable(
                "token endpoint refused the refresh token",
            ));
        }
        let now_ms = plugin_kit::clock::now_ms();
        let expires = now_ms + 3_600_000;
        let name = request.credential.map(|c| c.name).unwrap_or_default();
        let secret = serde_json::json!({ "access_token": format!("renewed-{name}-{now_ms}"), "expires_at": expires / 1000 });
        Ok(v1::RenewCredentialResponse {
            secret: secret.to_string().into_bytes(),
            expires_unix_ms: expires,
        })
    }

    /// Every repository in `forbidden` fails with a missing `contents:read`.
    async fn check(&self) -> Result<v1::CheckResponse, Status> {
        self.count_call();
        let config = self
            .config
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .unwrap_or_default();
        let forbidden: Vec<String> = config
            .get("forbidden")
            .and_then(|f| f.as_array())
            .map(|list| {
                list.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let results: Vec<v1::CheckResult> = config
            .get("repositories")
            .and_then(|r| r.as_array())
            .map(|list| {
                list.iter()
                    .filter_map(|v| v.as_str())
                    .map(|repo| {
                        let ok = !forbidden.iter().any(|f| f == repo);
                        v1::CheckResult {
                            resource: repo.to_owned(),
                            permission: "contents:read".to_owned(),
                            ok,
                            message: if ok {
                                "readable".to_owned()
                            } else {
                                "403 Resource not accessible by integration".to_owned()
                            },
                            error_class: if ok {
                                String::new()
                            } else {
                                "permission".to_owned()
                            },
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(v1::CheckResponse {
            ok: results.iter().all(|r| r.ok),
            results,
        })
    }

    async fn handle_webhook(
        &self,
        request: v1::WebhookRequest,
    ) -> Result<v1::WebhookResponse, Status> {
        self.count_call();
        let refuse = |status: u32, message: &str| v1::WebhookResponse::answer(status, message);
        let token = request
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("x-testfault-token"))
            .map(|h| h.value.as_str());
        let expected = self.faults.webhook_token.as_deref().unwrap_or("good");
        // A delivery the host verified (kept while this plugin was down) has no token.
        if !request.host_verified
            && token != Some(expected)
            && !self.faults.accept_unsigned_webhooks
        {
            return Ok(refuse(401, "x-testfault-token is missing or wrong"));
        }
        let body: serde_json::Value = match serde_json::from_slice(&request.body) {
            Ok(body) => body,
            Err(err) => return Ok(refuse(400, &format!("body is not JSON: {err}"))),
        };
        if body["forbidden"] == serde_json::json!(true) {
            return Ok(refuse(403, "repository not covered by this integration"));
        }
        if body["ping"] == serde_json::json!(true) {
            return Ok(refuse(200, "pong"));
        }
        let context = self
            .context
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .ok_or_else(|| Status::failed_precondition("not configured"))?;
        let id = body["id"].as_str().unwrap_or("delivery");
        let count = body["events"].as_u64().unwrap_or(1).min(1000);
        let invalid =
            body["invalid"] == serde_json::json!(true) || self.faults.invalid_webhook_events;
        let events_json = (0..count)
            .map(|k| {
                let event = plugin_kit::EventBuilder::new(
                    "com.betalogs.delivery.push",
                    plugin_kit::Category::Delivery,
                    "https://testfault.invalid/webhooks",
                    format!("{id}-{k}"),
                    "2026-11-25T10:00:00Z",
                )
                .field("service.name", "testfault")
                .original(body.clone())
                .build(&context);
                let mut json = serde_json::to_value(event).unwrap_or_default();
                if invalid && k + 1 == count {
                    json["category"] = serde_json::json!("finance");
                }
                json.to_string()
            })
            .collect();
        Ok(v1::WebhookResponse::accepted(events_json))
    }
}

/// Event 0: a deployment of `testfault` to production ten minutes ago; event `i`: an
/// error log line of `testfault` in production, now.
fn failure_or_deployment(context: &plugin_kit::MapContext, i: u64) -> String {
    let now = std::time::SystemTime::now();
    let at = |ago: u64| {
        humantime::format_rfc3339_millis(now - std::time::Duration::from_secs(ago)).to_string()
    };
    let builder = if i == 0 {
        plugin_kit::EventBuilder::new(
            "com.betalogs.delivery.deployment",
            plugin_kit::Category::Delivery,
            "https://testfault.invalid/deployments",
            "deployment-1".to_owned(),
            at(600),
        )
        .field("deployment.id", 1)
        .field("vcs.repository.name", "acme/testfault")
        .field(
            "vcs.ref.head.revision",
            "1111111111111111111111111111111111111111",
        )
        .link("deployments", "https://testfault.invalid/deployments/1")
    } else {
        plugin_kit::EventBuilder::new(
            "com.betalogs.system.log",
            plugin_kit::Category::System,
            "https://testfault.invalid/logs",
            format!("e-{i}"),
            at(0),
        )
        .severity(plugin_kit::Severity::Error)
        .field("log.message", format!("request {i} failed"))
    };
    builder
        .field("service.name", "testfault")
        .field("deployment.environment", "production")
        .original(serde_json::json!({ "i": i }))
        .to_json(context)
        .unwrap_or_default()
}

/// Event `i`: valid, or (every `invalid_every`-th) with a category the schema refuses.
fn synthetic_event(context: &plugin_kit::MapContext, i: u64, invalid_every: Option<u64>) -> String {
    let event = plugin_kit::EventBuilder::new(
        "com.betalogs.system.metric",
        plugin_kit::Category::System,
        "https://testfault.invalid/metrics",
        format!("e-{i}"),
        "2026-11-25T10:00:00Z",
    )
    .field("service.name", "testfault")
    .field("metric.value", i)
    .original(serde_json::json!({ "i": i }))
    .build(context);
    let mut json = serde_json::to_value(event).unwrap_or_default();
    if invalid_every.is_some_and(|k| k > 0 && (i + 1).is_multiple_of(k)) {
        json["category"] = serde_json::json!("finance");
    }
    json.to_string()
}

/// `--no-token-check`: plugin-kit's service on a server of testfault's own, which keeps
/// the rest of the transport's rules (socket mode, the host's pid only, the handshake,
/// stdout) and breaks only the token check.
mod without_token {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    use std::process::ExitCode;

    use plugin_protocol::v1::plugin_server::PluginServer;
    use plugin_protocol::{ENV_HOST_PID, ENV_SOCKET_PATH, HandshakeLine};
    use tokio_stream::StreamExt;

    pub(super) fn serve(plugin: super::TestFault) -> ExitCode {
        let cookie = std::env::var(plugin_protocol::ENV_MAGIC_COOKIE).ok();
        let offered = std::env::var(plugin_protocol::ENV_PROTOCOL_VERSIONS).unwrap_or_default();
        let protocol = plugin_protocol::parse_version_list(&offered)
            .ok()
            .and_then(|host| {
                plugin_protocol::negotiate(&host, plugin_protocol::SUPPORTED_PROTOCOL_VERSIONS)
            });
        let (Some(protocol), true, Ok(socket), Ok(host)) = (
            protocol,
            cookie.as_deref() == Some(plugin_protocol::MAGIC_COOKIE_VALUE),
            std::env::var(ENV_SOCKET_PATH),
            std::env::var(ENV_HOST_PID).map(|pid| pid.parse::<i32>().unwrap_or_default()),
        ) else {
            eprintln!("testfault: not started by a host that speaks its protocol");
            return ExitCode::FAILURE;
        };
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(err) => {
                eprintln!("testfault: {err}");
                return ExitCode::FAILURE;
            }
        };
        match runtime.block_on(run(plugin, protocol, socket, host)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("testfault: {err}");
                ExitCode::FAILURE
            }
        }
    }

    async fn run(
        plugin: super::TestFault,
        protocol: u32,
        socket: String,
        host: i32,
    ) -> Result<(), Box<dyn std::error::Error>> {
        let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGHUP);
        let listener = tokio::net::UnixListener::bind(&socket)?;
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))?;
        let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener).filter(
            move |conn| match conn {
                Ok(stream) => stream
                    .peer_cred()
                    .ok()
                    .and_then(|cred| cred.pid())
                    .is_some_and(|pid| pid == host),
                Err(_) => true,
            },
        );
        let service = plugin_kit::PluginService::new(plugin, protocol);
        let stop = service.stop_requests();
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        let router = tonic::transport::Server::builder()
            .add_service(health)
            .add_service(PluginServer::new(service));
        {
            let mut stdout = std::io::stdout().lock();
            writeln!(stdout, "{}", HandshakeLine::new(protocol, &socket))?;
            stdout.flush()?;
        }
        nix::unistd::dup2_stdout(std::io::stderr())?;
        let mut sigterm =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        router
            .serve_with_incoming_shutdown(incoming, async move {
                tokio::select! {
                    _ = stop.notified() => {}
                    _ = sigterm.recv() => {}
                    _ = hangup.recv() => {}
                }
            })
            .await?;
        Ok(())
    }
}
