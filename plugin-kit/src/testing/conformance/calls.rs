//! The checks made through calls: one session on a plugin started as integrationd
//! would (describe, configure, check, collect, webhook, shutdown), and the token rule on
//! a process of its own (a plugin that ignores the token may also obey a stranger's
//! `Shutdown`).

use std::collections::HashSet;
use std::future::Future;
use std::time::Instant;

use plugin_protocol::{Capability, ErrorClass, v1};
use serde_json::{Value, json};
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;

use super::{Check, Findings, INTEGRATION, Options, Package, TENANT, Verdict, excerpt, process};
use crate::signature::Scheme;
use crate::testing::{HarnessError, PluginUnderTest};

/// `call` within the kit's call timeout.
async fn within<T>(
    options: &Options,
    call: impl Future<Output = Result<T, HarnessError>>,
) -> Result<T, String> {
    match tokio::time::timeout(options.call_timeout, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err(format!("no answer within {:?}", options.call_timeout)),
    }
}

/// The checks that run on one plugin process, in the order a host makes the calls.
pub(super) async fn session(package: &Package, options: &Options, findings: &mut Findings) {
    let mut plugin = match process::start(package, options).await {
        Ok(plugin) => plugin,
        Err(err) => {
            findings.record(Check::Handshake, Verdict::Fail(err));
            findings.not_run(
                &[
                    Check::SocketMode,
                    Check::HostProcessOnly,
                    Check::DescribeMatchesManifest,
                    Check::Configure,
                    Check::InvalidConfiguration,
                    Check::CheckAnswer,
                    Check::CollectCanonical,
                    Check::CollectResumes,
                    Check::WebhookBadSignature,
                    Check::WebhookSigned,
                    Check::Shutdown,
                    Check::QuietStdout,
                ],
                "the plugin did not start (see handshake)",
            );
            return;
        }
    };
    findings.record(
        Check::Handshake,
        Verdict::Pass(format!("`{}`", plugin.handshake())),
    );
    findings.record(Check::SocketMode, process::socket_mode(plugin.socket()));
    findings.record(
        Check::HostProcessOnly,
        host_process_only(&plugin, options).await,
    );
    configured_calls(&mut plugin, package, options, findings).await;
    findings.record(Check::Shutdown, shutdown(&mut plugin, options).await);
    findings.record(Check::QuietStdout, quiet_stdout(&plugin).await);
}

/// Describe, then Configure (refused, then accepted), then what a configured plugin does.
async fn configured_calls(
    plugin: &mut PluginUnderTest,
    package: &Package,
    options: &Options,
    findings: &mut Findings,
) {
    let later = [
        Check::Configure,
        Check::InvalidConfiguration,
        Check::CheckAnswer,
        Check::CollectCanonical,
        Check::CollectResumes,
        Check::WebhookBadSignature,
        Check::WebhookSigned,
    ];
    let described = match within(options, plugin.describe()).await {
        Ok(described) => described,
        Err(err) => {
            findings.record(
                Check::DescribeMatchesManifest,
                Verdict::Fail(format!("Describe failed: {err}")),
            );
            findings.not_run(&later, "Describe failed");
            return;
        }
    };
    let schema = match describe_matches(package, &described, plugin.handshake().app) {
        Ok((schema, seen)) => {
            findings.record(Check::DescribeMatchesManifest, Verdict::Pass(seen));
            schema
        }
        Err(reason) => {
            findings.record(Check::DescribeMatchesManifest, Verdict::Fail(reason));
            None
        }
    };
    findings.record(
        Check::InvalidConfiguration,
        invalid_configuration(plugin, schema.as_ref(), options).await,
    );
    let configure = plugin.configure(
        TENANT,
        INTEGRATION,
        options.config.clone(),
        options.credentials.clone(),
    );
    if let Err(err) = within(options, configure).await {
        findings.record(
            Check::Configure,
            Verdict::Fail(format!("refused the configuration given to the kit: {err}")),
        );
        findings.not_run(&later, "the configuration was refused (see configure)");
        return;
    }
    findings.record(
        Check::Configure,
        Verdict::Pass(format!(
            "accepted the configuration given, with {} credential(s)",
            options.credentials.len()
        )),
    );
    let capabilities = package.manifest.capabilities;
    let undeclared = |name: &str| Verdict::Skip(format!("the manifest declares no `{name}`"));
    if capabilities.contains(Capability::Check) {
        findings.record(Check::CheckAnswer, check_answer(plugin, options).await);
    } else {
        findings.record(Check::CheckAnswer, undeclared("check"));
    }
    if capabilities.contains(Capability::Collect) {
        let (canonical, resumes) = collect(plugin, options).await;
        findings.record(Check::CollectCanonical, canonical);
        findings.record(Check::CollectResumes, resumes);
    } else {
        findings.record(Check::CollectCanonical, undeclared("collect"));
        findings.record(Check::CollectResumes, undeclared("collect"));
    }
    if capabilities.contains(Capability::Webhook) {
        findings.record(
            Check::WebhookBadSignature,
            webhook_bad_signature(plugin, package, options).await,
        );
        findings.record(
            Check::WebhookSigned,
            webhook_signed(plugin, package, options).await,
        );
    } else {
        findings.record(Check::WebhookBadSignature, undeclared("webhook"));
        findings.record(Check::WebhookSigned, undeclared("webhook"));
    }
}

async fn host_process_only(plugin: &PluginUnderTest, options: &Options) -> Verdict {
    let socket = plugin.socket().to_path_buf();
    let probe = {
        let socket = socket.clone();
        tokio::task::spawn_blocking(move || process::connect_from_another_process(&socket))
    };
    let (stream, pid) = match probe.await {
        Ok(Ok(connected)) => connected,
        Ok(Err(err)) => {
            return Verdict::Pass(format!(
                "a connection from another process did not get through: {err}"
            ));
        }
        Err(err) => return Verdict::Skip(format!("not run: {err}")),
    };
    let stream = match stream
        .set_nonblocking(true)
        .and_then(|()| tokio::net::UnixStream::from_std(stream))
    {
        Ok(stream) => stream,
        Err(err) => return Verdict::Skip(format!("not run: {err}")),
    };
    let token = plugin.token().to_owned();
    let call = async {
        let mut connection = crate::host::connect_stream(stream, &socket, &token)
            .await
            .map_err(|err| err.to_string())?;
        connection
            .plugin
            .describe(v1::DescribeRequest {})
            .await
            .map_err(|status| status.message().to_owned())
    };
    match tokio::time::timeout(options.call_timeout, call).await {
        Ok(Ok(_)) => Verdict::Fail(format!(
            "answered Describe on a connection from pid {pid}, which is not its host; refuse \
             a peer (SO_PEERCRED) whose pid is not {}",
            plugin_protocol::ENV_HOST_PID
        )),
        Ok(Err(err)) => Verdict::Pass(format!(
            "refused a connection from pid {pid}, not its host ({})",
            excerpt(&err)
        )),
        Err(_) => Verdict::Pass(format!(
            "did not answer a connection from pid {pid}, not its host, within {:?}",
            options.call_timeout
        )),
    }
}

/// `Describe` against the manifest; on success, the config schema (if any) and what was
/// seen.
fn describe_matches(
    package: &Package,
    described: &v1::DescribeResponse,
    negotiated: u32,
) -> Result<(Option<Value>, String), String> {
    crate::manifest::check_description(&package.manifest, described, negotiated)?;
    let seen = format!(
        "name `{}`, version {}, protocol {negotiated}, capabilities [{}] as in plugin.toml",
        described.name,
        described.version,
        described.capabilities.join(", ")
    );
    if described.config_schema_json.trim().is_empty() {
        return Ok((None, format!("{seen}; no config schema")));
    }
    let schema: Value = serde_json::from_str(&described.config_schema_json)
        .map_err(|err| format!("config_schema_json is not JSON: {err}"))?;
    jsonschema::validator_for(&schema)
        .map_err(|err| format!("config_schema_json is not a JSON Schema: {err}"))?;
    Ok((Some(schema), format!("{seen}; its config schema compiles")))
}

/// The JSON types `value` has (an integer is a number too).
fn fits(value: &Value, types: &[&str]) -> bool {
    let names: &[&str] = match value {
        Value::Null => &["null"],
        Value::Bool(_) => &["boolean"],
        Value::Number(n) if n.is_i64() || n.is_u64() => &["integer", "number"],
        Value::Number(_) => &["number"],
        Value::String(_) => &["string"],
        Value::Array(_) => &["array"],
        Value::Object(_) => &["object"],
    };
    names.iter().any(|name| types.contains(name))
}

/// A configuration that the schema refuses, and the field it gets wrong: one typed
/// property of the given configuration set to a value of another type, or (for a schema
/// closed to other properties) an unknown one added.
fn invalid_probe(schema: &Value, config: &Value) -> Option<(String, Value)> {
    let mut probe = config.as_object().cloned().unwrap_or_default();
    let properties = schema.get("properties").and_then(Value::as_object);
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|list| list.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut candidates: Vec<(&String, Vec<&str>)> = properties
        .into_iter()
        .flatten()
        .filter(|(name, _)| !crate::config::HOST_KEYS.contains(&name.as_str()))
        .filter_map(|(name, property)| {
            let types = match property.get("type")? {
                Value::String(one) => vec![one.as_str()],
                Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
                _ => return None,
            };
            Some((name, types))
        })
        .collect();
    // Required ones first, then those the given configuration sets.
    candidates.sort_by_key(|(name, _)| {
        (
            !required.contains(&name.as_str()),
            !probe.contains_key(name.as_str()),
        )
    });
    let wrong_values = [
        json!(12345),
        json!("not a valid value"),
        json!(true),
        json!([]),
        json!({}),
    ];
    for (name, types) in candidates {
        if let Some(wrong) = wrong_values.iter().find(|v| !fits(v, &types)) {
            probe.insert(name.clone(), wrong.clone());
            return Some((name.clone(), Value::Object(probe)));
        }
    }
    if schema.get("additionalProperties") == Some(&json!(false)) {
        let name = "conformance_unknown_field".to_owned();
        probe.insert(name.clone(), json!(1));
        return Some((name, Value::Object(probe)));
    }
    None
}

async fn invalid_configuration(
    plugin: &mut PluginUnderTest,
    schema: Option<&Value>,
    options: &Options,
) -> Verdict {
    let Some(schema) = schema else {
        return Verdict::Skip("the plugin declares no config schema to violate".to_owned());
    };
    let Some((field, probe)) = invalid_probe(schema, &options.config) else {
        return Verdict::Skip(
            "its config schema has no typed property and admits any other: no \
             configuration is invalid"
                .to_owned(),
        );
    };
    let value = probe.get(&field).map(Value::to_string).unwrap_or_default();
    // With the credentials given, so that only the field is wrong.
    let mut request = crate::testing::configure_request(TENANT, INTEGRATION, &probe, &[]);
    request.credentials = options.credentials.clone();
    let mut client = plugin.connection().plugin.clone();
    let configure = client.configure(request);
    match tokio::time::timeout(options.call_timeout, configure).await {
        Err(_) => Verdict::Fail(format!(
            "no answer within {:?} to a configuration with `{field}` = {value}",
            options.call_timeout
        )),
        Ok(Ok(_)) => Verdict::Fail(format!(
            "accepted `{field}` = {value}, which its schema refuses; refuse it with \
             INVALID_ARGUMENT naming the field"
        )),
        Ok(Err(status)) if status.code() != Code::InvalidArgument => Verdict::Fail(format!(
            "answered `{field}` = {value} with {:?} ({}), not INVALID_ARGUMENT",
            status.code(),
            excerpt(status.message())
        )),
        Ok(Err(status)) if !status.message().contains(field.as_str()) => Verdict::Fail(format!(
            "refused `{field}` = {value} with INVALID_ARGUMENT, but the message does not \
                 name `{field}`: {}",
            excerpt(status.message())
        )),
        Ok(Err(status)) => Verdict::Pass(format!(
            "refused `{field}` = {value}: {}",
            excerpt(status.message())
        )),
    }
}

async fn check_answer(plugin: &mut PluginUnderTest, options: &Options) -> Verdict {
    let answer = match within(options, plugin.check()).await {
        Ok(answer) => answer,
        Err(err) => {
            return Verdict::Fail(format!(
                "Check failed: {err}; report what fails as results with an error class"
            ));
        }
    };
    let failed = answer.results.iter().filter(|r| !r.ok).count();
    if answer.ok != (failed == 0) {
        return Verdict::Fail(format!(
            "ok is {} but {failed} of {} results failed",
            answer.ok,
            answer.results.len()
        ));
    }
    for result in &answer.results {
        if result.resource.trim().is_empty() {
            return Verdict::Fail("a result names no resource".to_owned());
        }
        if result.ok {
            continue;
        }
        if result.message.trim().is_empty() {
            return Verdict::Fail(format!(
                "result `{}` failed without a message",
                result.resource
            ));
        }
        if !result.error_class.is_empty() && ErrorClass::parse(&result.error_class).is_none() {
            let known: Vec<&str> = ErrorClass::ALL.iter().map(|c| c.as_str()).collect();
            return Verdict::Fail(format!(
                "result `{}`: error class `{}` is unknown; known: {}",
                result.resource,
                result.error_class,
                known.join(", ")
            ));
        }
    }
    Verdict::Pass(format!(
        "ok = {} with {} result(s), {failed} failed",
        answer.ok,
        answer.results.len()
    ))
}

/// The canonical event schema, compiled.
fn canonical_schema() -> Result<jsonschema::Validator, String> {
    let schema: Value = serde_json::from_str(plugin_protocol::CANONICAL_EVENT_SCHEMA_V1)
        .map_err(|err| format!("the canonical schema: {err}"))?;
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .map_err(|err| format!("the canonical schema: {err}"))
}

/// What is wrong with one collected event, if anything.
fn event_problems(schema: &jsonschema::Validator, raw: &str) -> Vec<String> {
    let value: Value = match serde_json::from_str(raw) {
        Ok(value) => value,
        Err(err) => return vec![format!("not JSON: {err}")],
    };
    let mut problems: Vec<String> = schema
        .iter_errors(&value)
        .map(|error| {
            let path = error.instance_path().as_str().to_owned();
            format!("{}: {error}", if path.is_empty() { "/" } else { &path })
        })
        .collect();
    for (member, expected) in [("tenant", TENANT), ("integration", INTEGRATION)] {
        let found = value
            .get(member)
            .and_then(Value::as_str)
            .unwrap_or_default();
        if found != expected {
            problems.push(format!(
                "/{member}: `{found}`, but it was configured as {member} `{expected}`"
            ));
        }
    }
    problems
}

fn event_id(raw: &str) -> Option<String> {
    serde_json::from_str::<Value>(raw)
        .ok()?
        .get("id")?
        .as_str()
        .map(str::to_owned)
}

/// The two collect checks: canonical events, and a cursor that resumes without repeats.
async fn collect(plugin: &mut PluginUnderTest, options: &Options) -> (Verdict, Verdict) {
    let not_run = || Verdict::Skip("not run: the first collection failed".to_owned());
    let batches = match within(options, plugin.collect("")).await {
        Ok(batches) => batches,
        Err(err) => return (Verdict::Fail(format!("Collect failed: {err}")), not_run()),
    };
    let total: usize = batches.iter().map(|b| b.events_json.len()).sum();
    if total == 0 {
        let none = || {
            Verdict::Skip(
                "collected no events under the configuration given: give one under which \
                 it collects some"
                    .to_owned(),
            )
        };
        return (none(), none());
    }
    let schema = match canonical_schema() {
        Ok(schema) => schema,
        Err(err) => return (Verdict::Skip(format!("not run: {err}")), not_run()),
    };
    let mut bad = Vec::new();
    for (b, batch) in batches.iter().enumerate() {
        for (e, raw) in batch.events_json.iter().enumerate() {
            let problems = event_problems(&schema, raw);
            if !problems.is_empty() {
                let id = event_id(raw).unwrap_or_else(|| "?".to_owned());
                bad.push(format!(
                    "batch {}, event {} (id `{id}`): {}",
                    b + 1,
                    e + 1,
                    problems.join("; ")
                ));
            }
        }
    }
    let canonical = match bad.first() {
        None => Verdict::Pass(format!(
            "{total} event(s) in {} batch(es), all canonical",
            batches.len()
        )),
        Some(first) => Verdict::Fail(format!(
            "{} of {total} events are not canonical; {}",
            bad.len(),
            excerpt(first)
        )),
    };
    (canonical, resumes(plugin, options, &batches).await)
}

async fn resumes(
    plugin: &mut PluginUnderTest,
    options: &Options,
    batches: &[v1::EventBatch],
) -> Verdict {
    let Some(at) = batches.iter().position(|b| !b.events_json.is_empty()) else {
        return Verdict::Skip("not run: no batch with events".to_owned());
    };
    let cursor = &batches[at].cursor;
    if cursor.is_empty() {
        return Verdict::Fail(format!(
            "batch {} has events but no cursor: there is nothing to resume from",
            at + 1
        ));
    }
    let seen: HashSet<String> = batches[..=at]
        .iter()
        .flat_map(|b| b.events_json.iter())
        .filter_map(|raw| event_id(raw))
        .collect();
    let again = match within(options, plugin.collect(cursor)).await {
        Ok(again) => again,
        Err(err) => return Verdict::Fail(format!("Collect from cursor `{cursor}` failed: {err}")),
    };
    let events: Vec<String> = again
        .iter()
        .flat_map(|b| b.events_json.iter())
        .filter_map(|raw| event_id(raw))
        .collect();
    let repeated: Vec<&String> = events.iter().filter(|id| seen.contains(*id)).collect();
    match repeated.first() {
        None => Verdict::Pass(format!(
            "from batch {}'s cursor `{}`: {} event(s), none repeated",
            at + 1,
            excerpt(cursor),
            events.len()
        )),
        Some(first) => Verdict::Fail(format!(
            "collecting again from batch {}'s cursor `{}` repeated {} event(s) it had \
             yielded, e.g. `{first}`",
            at + 1,
            excerpt(cursor),
            repeated.len()
        )),
    }
}

async fn webhook_bad_signature(
    plugin: &mut PluginUnderTest,
    package: &Package,
    options: &Options,
) -> Verdict {
    let mut deliveries: Vec<(&str, Vec<(String, String)>)> = vec![("no signature", Vec::new())];
    match &package.manifest.webhook {
        Some(Scheme::HmacSha256 { header }) => deliveries.push((
            "a wrong signature",
            vec![(header.clone(), format!("sha256={}", "0".repeat(64)))],
        )),
        Some(Scheme::SharedSecret { header, .. }) => deliveries.push((
            "a wrong secret",
            vec![(header.clone(), "not the secret".to_owned())],
        )),
        None => {}
    }
    let body = br#"{"conformance": "a delivery nobody signed"}"#;
    let mut answers = Vec::new();
    for (what, mut headers) in deliveries {
        headers.push(("content-type".to_owned(), "application/json".to_owned()));
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let answer = match within(options, plugin.webhook(&headers, body.to_vec())).await {
            Ok(answer) => answer,
            Err(err) => {
                return Verdict::Fail(format!(
                    "with {what}: {err}; answer a delivery that fails verification with \
                     status 401, not an error"
                ));
            }
        };
        if !matches!(answer.status, 401 | 403) {
            return Verdict::Fail(format!(
                "with {what}: answered {} with {} event(s); it must be 401 or 403",
                answer.status,
                answer.events_json.len()
            ));
        }
        if !answer.events_json.is_empty() {
            return Verdict::Fail(format!(
                "with {what}: answered {} but produced {} event(s)",
                answer.status,
                answer.events_json.len()
            ));
        }
        answers.push(format!("{} to {what}", answer.status));
    }
    Verdict::Pass(format!("answered {}", answers.join(", ")))
}

/// The headers that authenticate `body` as the manifest's `[webhook]` table says, with
/// the current secret of the `webhook-secret` credential given to the kit.
fn signed_headers(
    package: &Package,
    options: &Options,
    body: &[u8],
) -> Result<Vec<(String, String)>, String> {
    use secrecy::ExposeSecret;
    let scheme = package.manifest.webhook.as_ref().ok_or_else(|| {
        "the manifest has no `[webhook]` table, so the kit cannot sign the sample".to_owned()
    })?;
    let credential = options
        .credentials
        .iter()
        .find(|c| c.kind == "webhook-secret")
        .ok_or_else(|| {
            "no `webhook-secret` credential was given to sign the sample with".to_owned()
        })?;
    let secrets = crate::signature::WebhookSecrets::from_credential(credential)
        .map_err(|err| format!("the `{}` credential: {err}", credential.name))?;
    let secret = secrets.current.expose_secret();
    Ok(match scheme {
        Scheme::HmacSha256 { header } => vec![(
            header.clone(),
            crate::signature::sign_sha256(secret.as_bytes(), body),
        )],
        Scheme::SharedSecret { header, .. } => vec![(header.clone(), secret.to_owned())],
    })
}

/// A correctly signed sample delivery yields canonical events: what the daemon would
/// otherwise dead-letter is caught here.
async fn webhook_signed(
    plugin: &mut PluginUnderTest,
    package: &Package,
    options: &Options,
) -> Verdict {
    let Some(body) = &options.webhook_sample else {
        return Verdict::Skip(
            "no sample delivery given (`--webhook-sample FILE`, a body in the service's format)"
                .to_owned(),
        );
    };
    let mut headers = match signed_headers(package, options, body) {
        Ok(headers) => headers,
        Err(why) => return Verdict::Skip(format!("not run: {why}")),
    };
    headers.push(("content-type".to_owned(), "application/json".to_owned()));
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let answer = match within(options, plugin.webhook(&headers, body.clone())).await {
        Ok(answer) => answer,
        Err(err) => return Verdict::Fail(format!("the signed sample: {err}")),
    };
    if !(200..300).contains(&answer.status) {
        return Verdict::Fail(format!(
            "the signed sample was answered {}{}; it must be accepted (2xx)",
            answer.status,
            if answer.message.is_empty() {
                String::new()
            } else {
                format!(" ({})", excerpt(&answer.message))
            }
        ));
    }
    if answer.events_json.is_empty() {
        return Verdict::Fail(format!(
            "the signed sample was answered {} with no events; a sample the plugin maps must yield at least one",
            answer.status
        ));
    }
    let schema = match canonical_schema() {
        Ok(schema) => schema,
        Err(err) => return Verdict::Skip(format!("not run: {err}")),
    };
    for (index, raw) in answer.events_json.iter().enumerate() {
        let problems = event_problems(&schema, raw);
        if !problems.is_empty() {
            return Verdict::Fail(format!(
                "event {index} of the signed sample is not canonical: {}",
                excerpt(&problems.join("; "))
            ));
        }
    }
    Verdict::Pass(format!(
        "answered {} with {} event(s), all canonical",
        answer.status,
        answer.events_json.len()
    ))
}

async fn shutdown(plugin: &mut PluginUnderTest, options: &Options) -> Verdict {
    let started = Instant::now();
    let mut client = plugin.connection().plugin.clone();
    let call = client.shutdown(v1::ShutdownRequest {
        reason: "conformance".to_owned(),
    });
    match tokio::time::timeout(options.call_timeout, call).await {
        Ok(Ok(_)) => {}
        Ok(Err(status)) => {
            return Verdict::Fail(format!(
                "Shutdown failed: {:?} {}",
                status.code(),
                excerpt(status.message())
            ));
        }
        Err(_) => {
            return Verdict::Fail(format!(
                "Shutdown not answered within {:?}",
                options.call_timeout
            ));
        }
    }
    match plugin.wait_exit_within(options.grace).await {
        Ok(status) => Verdict::Pass(format!(
            "exited ({status}) {} ms after Shutdown",
            started.elapsed().as_millis()
        )),
        Err(_) => Verdict::Fail(format!(
            "still running {:?} after Shutdown answered",
            options.grace
        )),
    }
}

async fn quiet_stdout(plugin: &PluginUnderTest) -> Verdict {
    let written = plugin.stdout_after_handshake().await;
    if written.is_empty() {
        Verdict::Pass("nothing after the handshake line".to_owned())
    } else {
        Verdict::Fail(format!(
            "wrote {} byte(s) to stdout after the handshake, starting `{}`; stdout is the \
             host's: log to stderr",
            written.len(),
            excerpt(&String::from_utf8_lossy(&written))
        ))
    }
}

/// The token rule, on a process of its own: every call with a wrong token, and the
/// cheapest ones with none, must be refused UNAUTHENTICATED.
pub(super) async fn token_required(package: &Package, options: &Options) -> Verdict {
    let plugin = match process::start(package, options).await {
        Ok(plugin) => plugin,
        Err(err) => return Verdict::Skip(format!("not run: it did not start: {err}")),
    };
    let socket = plugin.socket().to_path_buf();
    let mut accepted = Vec::new();
    let mut wrong_code = Vec::new();
    // Without a token first: the calls with a wrong one end with `Shutdown`.
    for (token, label) in [
        (String::new(), "no token"),
        (crate::token::generate(), "a wrong token"),
    ] {
        let connection = match crate::host::connect(&socket, &token).await {
            Ok(connection) => connection,
            Err(err) => return Verdict::Skip(format!("not run: cannot connect: {err}")),
        };
        let answers = tokio::time::timeout(
            options.call_timeout,
            every_call(connection, options, label == "a wrong token"),
        )
        .await;
        let Ok(answers) = answers else {
            return Verdict::Fail(format!(
                "calls with {label} were not answered within {:?}",
                options.call_timeout
            ));
        };
        for (call, answer) in answers {
            match answer {
                Ok(()) => accepted.push(format!("{call} with {label}")),
                Err(Code::Unauthenticated) => {}
                Err(code) => wrong_code.push(format!("{call} with {label} ({code:?})")),
            }
        }
    }
    drop(plugin);
    if !accepted.is_empty() {
        Verdict::Fail(format!(
            "answered {}; every call, health included, needs the token",
            accepted.join(", ")
        ))
    } else if !wrong_code.is_empty() {
        Verdict::Fail(format!(
            "refused {} with the wrong code; use UNAUTHENTICATED",
            wrong_code.join(", ")
        ))
    } else {
        Verdict::Pass(
            "every call (health and Shutdown included) UNAUTHENTICATED with a wrong token; \
             Describe and health with none"
                .to_owned(),
        )
    }
}

type Answer = Result<(), Code>;

fn answer<T>(result: Result<T, tonic::Status>) -> Answer {
    result.map(drop).map_err(|status| status.code())
}

/// Each call's answer on `connection`: all of them (`Shutdown` last) when `all`, else
/// `Describe` and health.
async fn every_call(
    connection: crate::host::Connection,
    options: &Options,
    all: bool,
) -> Vec<(&'static str, Answer)> {
    let crate::host::Connection {
        mut plugin,
        mut health,
    } = connection;
    let mut answers = vec![
        (
            "Describe",
            answer(plugin.describe(v1::DescribeRequest {}).await),
        ),
        (
            "health",
            answer(
                health
                    .check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await,
            ),
        ),
    ];
    if !all {
        return answers;
    }
    let configure = crate::testing::configure_request(TENANT, INTEGRATION, &options.config, &[]);
    answers.push(("Configure", answer(plugin.configure(configure).await)));
    answers.push(("Check", answer(plugin.check(v1::CheckRequest {}).await)));
    answers.push((
        "Collect",
        answer(
            plugin
                .collect(v1::CollectRequest {
                    cursor: String::new(),
                })
                .await,
        ),
    ));
    answers.push((
        "HandleWebhook",
        answer(plugin.handle_webhook(v1::WebhookRequest::default()).await),
    ));
    answers.push((
        "Enrich",
        answer(
            plugin
                .enrich(v1::EnrichRequest {
                    event_json: "{}".to_owned(),
                })
                .await,
        ),
    ));
    answers.push((
        "RenewCredential",
        answer(
            plugin
                .renew_credential(v1::RenewCredentialRequest::default())
                .await,
        ),
    ));
    answers.push(("Status", answer(plugin.status(v1::StatusRequest {}).await)));
    answers.push((
        "Shutdown",
        answer(
            plugin
                .shutdown(v1::ShutdownRequest {
                    reason: "conformance: a call with a wrong token".to_owned(),
                })
                .await,
        ),
    ));
    answers
}
