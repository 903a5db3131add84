//! `integrationctl demo`: the product at work in the first five minutes. Against a
//! running daemon (the quickstart's), it sets up a demo tenant with a GitHub integration
//! and a PagerDuty one (the generic webhook plugin's preset), sends them signed sample
//! deliveries (a push, the pull request that merged it, a deployment and its success,
//! then an incident on the same service and its resolution), and shows what a person
//! wants to see: the incident linked to the deployment before it, the suspect commits,
//! the evidence links and the change-failure view. Run again, it changes nothing (every
//! sample has a fixed identity, so the daemon keeps each fact once); `--clean` removes
//! the tenant.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail};
use plugin_kit::signature::{Authentication, DigestEncoding};
use serde_json::{Value, json};
use supervisor::admin::proto;

use crate::progress::Progress;
use crate::render::Output;
use crate::session::{Answer, Session, with_token};

/// The demo's integrations, their plugins and their webhook-secret credentials.
const GITHUB: (&str, &str, &str) = ("github", "github", "demo-github-webhook");
const PAGERDUTY: (&str, &str, &str) = ("pagerduty", "webhook", "demo-pagerduty-webhook");
/// The secrets the samples are signed with: demo values, stored encrypted like any other.
const GITHUB_SECRET: &str = "demo-github-webhook-secret";
const PAGERDUTY_SECRET: &str = "demo-pagerduty-webhook-secret";

/// How long the demo waits for the integrations to run and the failure to be stored.
const PATIENCE: Duration = Duration::from_secs(60);

/// One sample delivery: where it goes, how it is named, and which of its times move to
/// "minutes ago" (so that the demo's facts are always recent).
struct Sample {
    integration: &'static str,
    event: &'static str,
    delivery: &'static str,
    body: &'static str,
    times: &'static [(&'static str, u64)],
}

const SAMPLES: &[Sample] = &[
    Sample {
        integration: GITHUB.0,
        event: "push",
        delivery: "demo-push-1",
        body: include_str!("../../../../../examples/demo/github/push.json"),
        times: &[
            ("/commits/0/timestamp", 40),
            ("/commits/1/timestamp", 30),
            ("/head_commit/timestamp", 30),
        ],
    },
    Sample {
        integration: GITHUB.0,
        event: "pull_request",
        delivery: "demo-pull-request-42",
        body: include_str!("../../../../../examples/demo/github/pull_request.json"),
        times: &[
            ("/pull_request/created_at", 60),
            ("/pull_request/merged_at", 25),
            ("/pull_request/closed_at", 25),
            ("/pull_request/updated_at", 25),
        ],
    },
    Sample {
        integration: GITHUB.0,
        event: "deployment",
        delivery: "demo-deployment-90017",
        body: include_str!("../../../../../examples/demo/github/deployment.json"),
        times: &[
            ("/deployment/created_at", 20),
            ("/deployment/updated_at", 20),
        ],
    },
    Sample {
        integration: GITHUB.0,
        event: "deployment_status",
        delivery: "demo-deployment-status-510021",
        body: include_str!("../../../../../examples/demo/github/deployment_status.json"),
        times: &[
            ("/deployment/created_at", 20),
            ("/deployment/updated_at", 18),
            ("/deployment_status/created_at", 18),
            ("/deployment_status/updated_at", 18),
        ],
    },
    Sample {
        integration: PAGERDUTY.0,
        event: "incident.triggered",
        delivery: "",
        body: include_str!("../../../../../examples/demo/pagerduty/incident.triggered.json"),
        times: &[("/event/occurred_at", 10), ("/event/data/created_at", 10)],
    },
    Sample {
        integration: PAGERDUTY.0,
        event: "incident.resolved",
        delivery: "",
        body: include_str!("../../../../../examples/demo/pagerduty/incident.resolved.json"),
        times: &[("/event/occurred_at", 2), ("/event/data/created_at", 10)],
    },
];

/// The failure the demo looks for.
const FAILURE_TYPE: &str = "com.betalogs.system.incident.triggered";

/// `integrationctl demo`.
pub async fn run(
    session: &mut Session,
    (tenant, http, clean): (String, String, bool),
) -> anyhow::Result<()> {
    if clean {
        return remove(session, &tenant).await;
    }
    let output = session.output;
    let say = |line: &str| {
        if output == Output::Table {
            println!("{line}");
        }
    };
    say(&format!("Setting up tenant `{tenant}` ..."));
    ensure_tenant(session, &tenant).await?;
    for (_, _, credential) in [GITHUB, PAGERDUTY] {
        let secret = if credential == GITHUB.2 {
            GITHUB_SECRET
        } else {
            PAGERDUTY_SECRET
        };
        ensure_credential(session, &tenant, credential, secret).await?;
    }
    ensure_integration(
        session,
        &tenant,
        GITHUB,
        json!({
            "repositories": ["demo-org/checkout"],
            "credentials": {"webhook_secret": GITHUB.2},
        }),
    )
    .await?;
    ensure_integration(
        session,
        &tenant,
        PAGERDUTY,
        json!({
            "preset": "pagerduty",
            "service": "checkout",
            "environment": "production",
            "credentials": {"webhook_secret": PAGERDUTY.2},
        }),
    )
    .await?;
    wait_healthy(session, &tenant).await?;

    say(
        "Sending signed sample deliveries: a push, its pull request, a deployment and its success, then an incident and its resolution ...",
    );
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .context("an HTTP client")?;
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default();
    for sample in SAMPLES {
        let answer = deliver(&client, &http, &tenant, sample, now_ms).await?;
        say(&format!(
            "  {:<20} {:<10} {}",
            sample.event, sample.integration, answer
        ));
    }

    let failure = wait_failure(session, &tenant).await?;
    let token = monitor_token(session, &tenant).await?;
    let dashboard = format!("http://{http}/");
    if output == Output::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "tenant": tenant,
                "failure": failure,
                "dashboard": dashboard,
                "monitor_token": token,
            }))?
        );
        return Ok(());
    }
    print_failure(&failure);
    println!();
    println!("The change-failure view (`integrationctl deployments --tenant {tenant}`):");
    super::enrichment::run_deployments(session, (tenant.clone(), None)).await?;
    println!();
    println!("Where to look next:");
    println!("  the dashboard      {dashboard}  (sign in with the monitoring token {token})");
    println!("  health             integrationctl health --tenant {tenant}");
    println!("  events as stored   integrationctl events tail --tenant {tenant} --follow");
    println!("  metrics            curl -s http://{http}/metrics");
    println!("  start over         integrationctl demo --clean");
    Ok(())
}

/// `demo --clean`: the demo tenant and everything of it, gone.
async fn remove(session: &mut Session, tenant: &str) -> anyhow::Result<()> {
    let output = session.output;
    if !tenant_exists(session, tenant).await? {
        if output == Output::Table {
            println!("no tenant `{tenant}`: nothing to clean");
        }
        return Ok(());
    }
    let (client, token, _) = session.parts();
    let done = client
        .delete_tenant(with_token(
            proto::DeleteTenantRequest {
                name: tenant.to_owned(),
            },
            token,
        )?)
        .await
        .answer()?;
    if output == Output::Json {
        println!(
            "{}",
            json!({"deleted": done.name, "tokens_revoked": done.tokens_revoked})
        );
    } else {
        println!(
            "deleted tenant {} with its integrations, credentials and events ({} token(s) revoked)",
            done.name, done.tokens_revoked
        );
    }
    Ok(())
}

async fn tenant_exists(session: &mut Session, tenant: &str) -> anyhow::Result<bool> {
    let (client, token, _) = session.parts();
    let list = client
        .list_tenants(with_token(proto::ListTenantsRequest {}, token)?)
        .await
        .answer()?;
    Ok(list.tenants.iter().any(|t| t.name == tenant))
}

async fn ensure_tenant(session: &mut Session, tenant: &str) -> anyhow::Result<()> {
    if tenant_exists(session, tenant).await? {
        return Ok(());
    }
    let (client, token, _) = session.parts();
    client
        .create_tenant(with_token(
            proto::CreateTenantRequest {
                name: tenant.to_owned(),
            },
            token,
        )?)
        .await
        .answer()?;
    Ok(())
}

/// Stores the demo secret `name` unless it is there already (storing it again would
/// reconfigure the integrations that use it).
async fn ensure_credential(
    session: &mut Session,
    tenant: &str,
    name: &str,
    secret: &str,
) -> anyhow::Result<()> {
    let (client, token, _) = session.parts();
    let list = client
        .list_credentials(with_token(
            proto::ListCredentialsRequest {
                tenant: tenant.to_owned(),
            },
            token,
        )?)
        .await
        .answer()?;
    if list.credentials.iter().any(|c| c.name == name) {
        return Ok(());
    }
    client
        .set_credential(with_token(
            proto::SetCredentialRequest {
                tenant: tenant.to_owned(),
                name: name.to_owned(),
                kind: "webhook-secret".to_owned(),
                secret: secret.as_bytes().to_vec(),
                expires_unix_ms: 0,
                rotate: false,
            },
            token,
        )?)
        .await
        .answer()
        .with_context(|| format!("storing the demo credential `{name}`"))?;
    Ok(())
}

/// Adds the integration unless the tenant has one of that name; one of another plugin
/// is an error (the demo does not overwrite what someone else made).
async fn ensure_integration(
    session: &mut Session,
    tenant: &str,
    (name, plugin, _): (&str, &str, &str),
    config: Value,
) -> anyhow::Result<()> {
    let (client, token, _) = session.parts();
    let list = client
        .list_integrations(with_token(
            proto::ListIntegrationsRequest {
                tenant: tenant.to_owned(),
            },
            token,
        )?)
        .await
        .answer()?;
    if let Some(existing) = list.integrations.iter().find(|i| i.name == name) {
        if existing.plugin != plugin {
            bail!(
                "tenant `{tenant}` has an integration `{name}` of plugin `{}`, not `{plugin}`; run `integrationctl demo --clean` or pass another --tenant",
                existing.plugin
            );
        }
        return Ok(());
    }
    client
        .add_integration(with_token(
            proto::AddIntegrationRequest {
                tenant: tenant.to_owned(),
                name: name.to_owned(),
                plugin: plugin.to_owned(),
                config_json: config.to_string(),
            },
            token,
        )?)
        .await
        .answer()
        .with_context(|| format!("adding the demo integration `{name}` (plugin `{plugin}`)"))?;
    Ok(())
}

/// Waits until both demo integrations' plugins run healthy. The admin API has no stream
/// of instance states, so this asks `status` until they are (or `PATIENCE` passes).
async fn wait_healthy(session: &mut Session, tenant: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut progress = Progress::new(session.output);
    loop {
        progress.working("waiting for the demo integrations to run");
        let (client, token, _) = session.parts();
        let status = client
            .status(with_token(proto::StatusRequest {}, token)?)
            .await
            .answer()?;
        let state = |name: &str| {
            status
                .instances
                .iter()
                .find(|i| i.tenant == tenant && i.integration == name)
                .map_or("not started", |i| i.state.as_str())
                .to_owned()
        };
        let states = [state(GITHUB.0), state(PAGERDUTY.0)];
        if states.iter().all(|s| s == "healthy") {
            return Ok(());
        }
        if started.elapsed() > PATIENCE {
            bail!(
                "the demo integrations did not become healthy within {} s (github: {}, pagerduty: {}); see `integrationctl status` and `integrationctl health --tenant {tenant}`",
                PATIENCE.as_secs(),
                states[0],
                states[1]
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The sample with its times moved to `now_ms` minus their minutes, signed as its
/// service signs it, posted; returns the daemon's word on it.
async fn deliver(
    client: &reqwest::Client,
    http: &str,
    tenant: &str,
    sample: &Sample,
    now_ms: u64,
) -> anyhow::Result<String> {
    let mut body: Value = serde_json::from_str(sample.body).context("a demo sample")?;
    for (pointer, minutes) in sample.times {
        let at = now_ms.saturating_sub(minutes * 60_000) / 1000 * 1000;
        if let Some(slot) = body.pointer_mut(pointer) {
            *slot = json!(plugin_kit::clock::rfc3339_ms(at));
        }
    }
    let body = body.to_string();
    let (scheme, secret, mut headers) = if sample.integration == GITHUB.0 {
        (
            Authentication::HmacSha256 {
                header: "x-hub-signature-256".to_owned(),
                prefix: "sha256=".to_owned(),
                encoding: DigestEncoding::Hex,
            },
            GITHUB_SECRET,
            vec![
                ("x-github-event".to_owned(), sample.event.to_owned()),
                ("x-github-delivery".to_owned(), sample.delivery.to_owned()),
            ],
        )
    } else {
        (
            Authentication::HmacSha256 {
                header: "x-pagerduty-signature".to_owned(),
                prefix: "v1=".to_owned(),
                encoding: DigestEncoding::Hex,
            },
            PAGERDUTY_SECRET,
            Vec::new(),
        )
    };
    headers.extend(scheme.sign(secret, body.as_bytes(), "", 0));
    let url = format!("http://{http}/v1/webhooks/{tenant}/{}", sample.integration);
    let mut request = client
        .post(&url)
        .header("content-type", "application/json")
        .body(body);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let response = request.send().await.with_context(|| {
        format!("cannot reach the daemon's HTTP listener at {http} (pass --http ADDR:PORT)")
    })?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    if !status.is_success() {
        bail!(
            "the daemon answered the {} sample with {status}: {text}",
            sample.event
        );
    }
    let answer: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let count = |key: &str| answer[key].as_u64().unwrap_or(0);
    Ok(
        match (count("events"), count("duplicates"), count("dead_lettered")) {
            (0, 0, 0) => answer["status"].as_str().unwrap_or("accepted").to_owned(),
            (0, duplicates, 0) => format!("{duplicates} event(s) already stored"),
            (stored, 0, 0) => format!("{stored} event(s) stored"),
            (stored, duplicates, dead) => format!(
                "{stored} event(s) stored, {duplicates} already stored, {dead} dead-lettered"
            ),
        },
    )
}

/// The incident as stored, once its enrichment is done: the tenant's events followed
/// as they are committed (the stored ones first) until it arrives, or `PATIENCE` passes.
async fn wait_failure(session: &mut Session, tenant: &str) -> anyhow::Result<Value> {
    let mut progress = Progress::new(session.output);
    progress.update("waiting for the incident to be stored, enriched");
    let (client, token, _) = session.parts();
    let mut lines = client
        .tail_events(with_token(
            proto::TailEventsRequest {
                tenant: tenant.to_owned(),
                last: 200,
                follow: true,
            },
            token,
        )?)
        .await
        .answer()?;
    let arrived = tokio::time::timeout(PATIENCE, async {
        while let Some(line) = lines
            .message()
            .await
            .map_err(crate::session::status_error)?
        {
            let event: Value = serde_json::from_str(&line.json)?;
            if event["type"] == FAILURE_TYPE
                && event["integration"] == PAGERDUTY.0
                && event["data"]["enrichment_status"] == "complete"
            {
                return Ok(Some(event));
            }
        }
        anyhow::Ok(None)
    })
    .await;
    progress.finish();
    let missing = || {
        anyhow!(
            "the incident was not stored enriched within {} s; see `integrationctl events tail --tenant {tenant}` and `integrationctl dlq list --tenant {tenant}`",
            PATIENCE.as_secs()
        )
    };
    match arrived {
        Ok(Ok(Some(event))) => Ok(event),
        Ok(Ok(None)) | Err(_) => Err(missing()),
        Ok(Err(err)) => Err(err),
    }
}

/// A fresh monitoring token for the dashboard; the demo's earlier ones are revoked.
async fn monitor_token(session: &mut Session, tenant: &str) -> anyhow::Result<String> {
    let (client, token, _) = session.parts();
    let list = client
        .list_tokens(with_token(
            proto::ListTokensRequest {
                tenant: tenant.to_owned(),
            },
            token,
        )?)
        .await
        .answer()?;
    for old in list.tokens.iter().filter(|t| t.scope == "monitor") {
        client
            .revoke_token(with_token(
                proto::RevokeTokenRequest { id: old.id.clone() },
                token,
            )?)
            .await
            .answer()?;
    }
    let created = client
        .create_token(with_token(
            proto::CreateTokenRequest {
                tenant: tenant.to_owned(),
                scope: "monitor".to_owned(),
                all_tenants: false,
            },
            token,
        )?)
        .await
        .answer()?;
    Ok(created.token)
}

/// The failure, what it was linked to and why, and the evidence.
fn print_failure(failure: &Value) {
    let data = &failure["data"];
    println!();
    println!(
        "The failure: {} ({}, {} in {}), at {}",
        failure["subject"].as_str().unwrap_or("?"),
        failure["severity"].as_str().unwrap_or("?"),
        data["service.name"].as_str().unwrap_or("?"),
        data["deployment.environment"].as_str().unwrap_or("?"),
        failure["time"].as_str().unwrap_or("?"),
    );
    let enrichments: Vec<&Value> = data["enrichments"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    for deployment in enrichments.iter().filter(|e| e["kind"] == "deployment") {
        println!(
            "  linked to deployment {} of {} ({}): {}",
            deployment["data"]["deployment"].as_str().unwrap_or("?"),
            deployment["data"]["environment"].as_str().unwrap_or("?"),
            deployment["data"]["revision"]
                .as_str()
                .map(|r| r.chars().take(12).collect::<String>())
                .unwrap_or_default(),
            deployment["reason"].as_str().unwrap_or(""),
        );
        print_links("    ", deployment);
    }
    let suspects: Vec<&&Value> = enrichments
        .iter()
        .filter(|e| e["kind"] == "suspect_commit")
        .collect();
    if !suspects.is_empty() {
        println!("  suspect commits:");
        for suspect in suspects {
            let sha: String = suspect["data"]["sha"]
                .as_str()
                .unwrap_or("?")
                .chars()
                .take(12)
                .collect();
            let pull = suspect["data"]["pull_request"]
                .as_u64()
                .map(|n| format!(" (pull request #{n})"))
                .unwrap_or_default();
            println!(
                "    {sha} {:?} by {}{pull}",
                suspect["data"]["message"].as_str().unwrap_or(""),
                suspect["data"]["author"].as_str().unwrap_or("?"),
            );
            print_links("      ", suspect);
        }
    }
    println!("  its own evidence:");
    print_links("    ", data);
}

fn print_links(indent: &str, holder: &Value) {
    for link in holder["links"].as_array().into_iter().flatten() {
        println!(
            "{indent}{:<13} {}",
            link["rel"].as_str().unwrap_or("?"),
            link["url"].as_str().unwrap_or("?")
        );
    }
}
