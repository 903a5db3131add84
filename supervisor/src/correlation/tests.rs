//! The correlation index through the real pipeline (sled, the event log): events are
//! prepared and committed as plugins' events are, then read back from the outbox.

use plugin_kit::{Category, EventBuilder, MapContext, Severity};
use serde_json::Value;

use std::sync::Arc;

use super::Correlator;
use crate::names::InstanceKey;
use crate::pipeline::{Pipeline, PipelineSettings};
use crate::store::Store;

const MINUTE: u64 = 60_000;
const T: u64 = 1_796_000_000_000;

fn time(ms: u64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
        .to_string()
}

struct World {
    _dir: tempfile::TempDir,
    pipeline: Arc<Pipeline>,
    correlator: Arc<Correlator>,
}

impl World {
    fn new() -> Self {
        Self::build(false, false).0
    }

    /// With a completer's queue, as the daemon has.
    fn with_completions() -> (Self, tokio::sync::mpsc::Receiver<super::Completion>) {
        let (world, completions, _) = Self::build(true, false);
        (world, completions.expect("a queue"))
    }

    /// With the feature flags, as the daemon has.
    fn with_flags() -> (Self, crate::tenants::Flags) {
        let (world, _, flags) = Self::build(false, true);
        (world, flags.expect("flags"))
    }

    fn build(
        completions: bool,
        flags: bool,
    ) -> (
        Self,
        Option<tokio::sync::mpsc::Receiver<super::Completion>>,
        Option<crate::tenants::Flags>,
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let (sender, receiver) = if completions {
            let (sender, receiver) = tokio::sync::mpsc::channel(64);
            (Some(sender), Some(receiver))
        } else {
            (None, None)
        };
        let flags = flags.then(|| {
            crate::tenants::Flags::new(store.clone(), crate::config::FlagDefaults::default())
        });
        let correlator = Arc::new(Correlator::new(
            store.clone(),
            crate::config::EnrichmentConfig::default(),
            flags.clone(),
            sender,
        ));
        correlator.register(&InstanceKey::new("acme", "gh"), "github", true);
        correlator.register(&InstanceKey::new("acme", "cw"), "cloudwatch", true);
        let pipeline = Arc::new(
            Pipeline::open_with(store, PipelineSettings::default(), correlator.clone())
                .expect("pipeline"),
        );
        let world = Self {
            _dir: dir,
            pipeline,
            correlator,
        };
        (world, receiver, flags)
    }

    fn commit(&self, tenant: &str, integration: &str, events: Vec<String>) {
        let submission = self.pipeline.prepare(tenant, integration, &events);
        assert!(submission.dead.is_empty(), "{:?}", submission.dead);
        self.pipeline.commit_blocking(submission).expect("commit");
    }

    /// Every event in the outbox, in commit order.
    fn stored(&self) -> Vec<Value> {
        self.pipeline
            .outbox_after(0, 10_000)
            .expect("outbox")
            .iter()
            .flat_map(|(_, record)| {
                String::from_utf8_lossy(record)
                    .lines()
                    .map(|l| serde_json::from_str(l).expect("JSON"))
                    .collect::<Vec<Value>>()
            })
            .collect()
    }

    fn failure(&self, id: &str) -> Value {
        self.stored()
            .into_iter()
            .rev()
            .find(|e| e["data"]["log.message"] == id)
            .expect("the failure is stored")
    }
}

fn context(tenant: &str, integration: &str) -> MapContext {
    MapContext {
        tenant: tenant.into(),
        integration: integration.into(),
    }
}

fn deployment(
    tenant: &str,
    service: &str,
    environment: &str,
    id: u64,
    sha: &str,
    at: u64,
) -> String {
    EventBuilder::new(
        "com.betalogs.delivery.deployment",
        Category::Delivery,
        "https://github.com/acme/checkout",
        format!("deployment:{id}:{environment}"),
        time(at),
    )
    .field("service.name", service.to_owned())
    .field("deployment.environment", environment.to_owned())
    .field("deployment.id", id)
    .field("vcs.repository.name", "acme/checkout")
    .field("vcs.ref.head.revision", sha.to_owned())
    .link(
        "commit",
        format!("https://github.com/acme/checkout/commit/{sha}"),
    )
    .link(
        "deployments",
        "https://github.com/acme/checkout/deployments",
    )
    .to_json(&context(tenant, "gh"))
    .expect("json")
}

fn commit(sha: &str, at: u64) -> String {
    EventBuilder::new(
        "com.betalogs.delivery.commit",
        Category::Delivery,
        "https://github.com/acme/checkout",
        format!("commit:{sha}"),
        time(at),
    )
    .field("service.name", "checkout")
    .field("vcs.repository.name", "acme/checkout")
    .field("vcs.ref.head.revision", sha.to_owned())
    .field("vcs.commit.message", format!("change {sha}"))
    .link(
        "commit",
        format!("https://github.com/acme/checkout/commit/{sha}"),
    )
    .to_json(&context("acme", "gh"))
    .expect("json")
}

fn merged(number: u64, merge_sha: &str, at: u64) -> String {
    EventBuilder::new(
        "com.betalogs.delivery.pull_request.merged",
        Category::Delivery,
        "https://github.com/acme/checkout",
        format!("pull:{number}"),
        time(at),
    )
    .subject(format!("Fix checkout #{number}"))
    .field("service.name", "checkout")
    .field("vcs.repository.name", "acme/checkout")
    .field("vcs.change.id", number)
    .field("vcs.change.merge_commit", merge_sha.to_owned())
    .link(
        "pull_request",
        format!("https://github.com/acme/checkout/pull/{number}"),
    )
    .to_json(&context("acme", "gh"))
    .expect("json")
}

fn failure(tenant: &str, name: &str, service: &str, environment: &str, at: u64) -> String {
    EventBuilder::new(
        "com.betalogs.system.log",
        Category::System,
        "aws://123456789012/us-east-1/logs",
        format!("failure:{name}"),
        time(at),
    )
    .severity(Severity::Error)
    .field("service.name", service.to_owned())
    .field("deployment.environment", environment.to_owned())
    .field("log.message", name.to_owned())
    .to_json(&context(tenant, "cw"))
    .expect("json")
}

fn alarm(state: &str, at: u64) -> String {
    let kind = if state == "ALARM" {
        "raised"
    } else {
        "resolved"
    };
    EventBuilder::new(
        format!("com.betalogs.system.alarm.{kind}"),
        Category::System,
        "aws://123456789012/us-east-1/cloudwatch",
        format!("alarm:{state}:{at}"),
        time(at),
    )
    .severity(if state == "ALARM" { Severity::Error } else { Severity::Info })
    .correlation("arn:aws:cloudwatch:us-east-1:123456789012:alarm:checkout-5xx")
    .field("service.name", "checkout")
    .field("alarm.name", "checkout-5xx")
    .field("deployment.environment", "production")
    .link("alarm", "https://us-east-1.console.aws.amazon.com/cloudwatch/home?region=us-east-1#alarmsV2:alarm/checkout-5xx")
    .to_json(&context("acme", "cw"))
    .expect("json")
}

fn kinds(event: &Value) -> Vec<String> {
    event["data"]["enrichments"]
        .as_array()
        .expect("enrichments")
        .iter()
        .map(|e| e["kind"].as_str().expect("kind").to_owned())
        .collect()
}

#[test]
fn a_failure_after_a_deployment_is_linked_with_its_url_and_suspect_commits() {
    let world = World::new();
    world.commit(
        "acme",
        "gh",
        vec![deployment(
            "acme",
            "checkout",
            "production",
            1,
            "aaa",
            T - 60 * MINUTE,
        )],
    );
    world.commit(
        "acme",
        "gh",
        vec![
            commit("bbb", T - 30 * MINUTE),
            commit("ccc", T - 20 * MINUTE),
            merged(7, "ccc", T - 19 * MINUTE),
        ],
    );
    world.commit(
        "acme",
        "gh",
        vec![deployment("acme", "checkout", "production", 2, "ccc", T)],
    );
    world.commit(
        "acme",
        "cw",
        vec![failure(
            "acme",
            "boom",
            "checkout",
            "production",
            T + 10 * MINUTE,
        )],
    );

    let stored = world.failure("boom");
    assert_eq!(stored["data"]["enrichment_status"], "complete");
    let enrichments = stored["data"]["enrichments"].as_array().expect("array");
    let newest = &enrichments[0];
    assert_eq!(newest["kind"], "deployment");
    assert_eq!(
        newest["reason"],
        "deployed 10 min before, same service and environment"
    );
    assert_eq!(
        newest["source"],
        serde_json::json!({"plugin": "github", "integration": "gh", "tenant": "acme"})
    );
    assert_eq!(
        newest["links"][0]["url"],
        "https://github.com/acme/checkout/deployments"
    );
    assert_eq!(newest["data"]["revision"], "ccc");
    let suspects: Vec<&Value> = enrichments
        .iter()
        .filter(|e| e["kind"] == "suspect_commit")
        .collect();
    let shas: Vec<&str> = suspects
        .iter()
        .map(|e| e["data"]["sha"].as_str().expect("sha"))
        .collect();
    assert_eq!(
        shas,
        ["ccc", "bbb"],
        "the commits since the previous deployment, newest first"
    );
    assert_eq!(suspects[0]["data"]["pull_request"], 7);
    assert_eq!(
        suspects[0]["links"][1]["url"],
        "https://github.com/acme/checkout/pull/7"
    );
    // The older deployment in the window is listed too, after the newest.
    assert_eq!(
        kinds(&stored).iter().filter(|k| *k == "deployment").count(),
        2
    );
}

#[test]
fn other_environments_services_times_and_tenants_are_not_linked() {
    let world = World::new();
    world.commit(
        "acme",
        "gh",
        vec![deployment("acme", "checkout", "production", 1, "aaa", T)],
    );
    world.commit(
        "other",
        "gh",
        vec![deployment("other", "checkout", "production", 1, "aaa", T)],
    );
    world.commit(
        "acme",
        "cw",
        vec![
            failure("acme", "staging", "checkout", "staging", T + 10 * MINUTE),
            failure(
                "acme",
                "other-service",
                "payments",
                "production",
                T + 10 * MINUTE,
            ),
            failure("acme", "before", "checkout", "production", T - MINUTE),
            failure(
                "acme",
                "outside",
                "checkout",
                "production",
                T + 3 * 60 * MINUTE,
            ),
        ],
    );
    for name in ["staging", "other-service", "before", "outside"] {
        assert_eq!(kinds(&world.failure(name)), Vec::<String>::new(), "{name}");
    }
    // The other tenant's identical deployment is never linked to acme's failure.
    world.commit(
        "acme",
        "cw",
        vec![failure(
            "acme",
            "linked",
            "checkout",
            "production",
            T + MINUTE,
        )],
    );
    let linked = world.failure("linked");
    let tenants: Vec<&str> = linked["data"]["enrichments"]
        .as_array()
        .expect("array")
        .iter()
        .map(|e| e["source"]["tenant"].as_str().expect("tenant"))
        .collect();
    assert_eq!(tenants, ["acme"]);
}

#[test]
fn an_alarm_in_alarm_is_attached_and_one_resolved_before_is_not() {
    let world = World::new();
    world.commit("acme", "cw", vec![alarm("ALARM", T - 5 * MINUTE)]);
    world.commit(
        "acme",
        "cw",
        vec![failure("acme", "during", "checkout", "production", T)],
    );
    world.commit("acme", "cw", vec![alarm("OK", T + MINUTE)]);
    world.commit(
        "acme",
        "cw",
        vec![failure(
            "acme",
            "after",
            "checkout",
            "production",
            T + 2 * MINUTE,
        )],
    );
    let during = world.failure("during");
    let alarm = during["data"]["enrichments"]
        .as_array()
        .expect("array")
        .iter()
        .find(|e| e["kind"] == "alarm")
        .expect("the alarm is attached")
        .clone();
    assert_eq!(alarm["source"]["plugin"], "cloudwatch");
    assert!(
        alarm["reason"]
            .as_str()
            .expect("reason")
            .starts_with("alarm checkout-5xx was in ALARM for 5 min")
    );
    assert!(!kinds(&world.failure("after")).contains(&"alarm".to_owned()));
}

#[test]
fn a_deployment_arriving_after_the_failure_revises_it() {
    let world = World::new();
    world.commit(
        "acme",
        "cw",
        vec![failure(
            "acme",
            "early",
            "checkout",
            "production",
            T + 10 * MINUTE,
        )],
    );
    assert_eq!(kinds(&world.failure("early")), Vec::<String>::new());
    world.commit(
        "acme",
        "gh",
        vec![deployment("acme", "checkout", "production", 3, "ddd", T)],
    );
    let all: Vec<Value> = world
        .stored()
        .into_iter()
        .filter(|e| e["data"]["log.message"] == "early")
        .collect();
    assert_eq!(all.len(), 2, "the first revision and the revised one");
    assert_eq!(all[0]["id"], all[1]["id"]);
    assert_eq!(all[1]["revision"], 2);
    assert_eq!(kinds(&all[1]), ["deployment"]);
    // The same deployment again (a redelivery) changes nothing: no third revision.
    world.commit(
        "acme",
        "gh",
        vec![deployment("acme", "checkout", "production", 3, "ddd", T)],
    );
    assert_eq!(
        world
            .stored()
            .iter()
            .filter(|e| e["data"]["log.message"] == "early")
            .count(),
        2
    );
}

#[test]
fn the_change_failure_view_lists_each_deployment_with_its_failures() {
    let world = World::new();
    world.commit(
        "acme",
        "gh",
        vec![deployment("acme", "checkout", "production", 1, "aaa", T)],
    );
    world.commit(
        "acme",
        "gh",
        vec![deployment(
            "acme",
            "checkout",
            "production",
            2,
            "bbb",
            T + 60 * MINUTE,
        )],
    );
    world.commit(
        "acme",
        "cw",
        vec![
            failure("acme", "f1", "checkout", "production", T + 61 * MINUTE),
            failure("acme", "f2", "checkout", "production", T + 62 * MINUTE),
        ],
    );
    let views = world
        .correlator
        .deployments("acme", Some("checkout"))
        .expect("view");
    let counts: Vec<(Option<String>, usize)> = views
        .iter()
        .map(|v| (v.revision.clone(), v.failures.len()))
        .collect();
    assert_eq!(
        counts,
        [(Some("bbb".to_owned()), 2), (Some("aaa".to_owned()), 0)]
    );
    assert!(
        world
            .correlator
            .deployments("other", None)
            .expect("view")
            .is_empty()
    );
}

fn failures_table(world: &World) -> Vec<(Vec<u8>, Vec<u8>)> {
    world
        .pipeline
        .store()
        .scan(crate::store::Table::Failures, b"acme\0")
        .expect("scan")
}

#[test]
fn batch_enrichment_interrupted_and_resumed_equals_one_run() {
    use std::sync::atomic::{AtomicBool, Ordering};
    const FAILURES: u64 = 100_000;
    let build = || {
        let world = World::new();
        // Failures first, then the deployments (as when a new GitHub integration
        // backfills): only the batch brings the deployments to most of them.
        let failures: Vec<String> = (0..FAILURES)
            .map(|i| {
                failure(
                    "acme",
                    &format!("f{i}"),
                    "checkout",
                    "production",
                    T + i * 50,
                )
            })
            .collect();
        for chunk in failures.chunks(1_000) {
            world.commit("acme", "cw", chunk.to_vec());
        }
        world
    };
    let deploy = |world: &World| {
        // Written to the index directly: no late-data revisions, so the batch has the
        // whole range to do.
        let event: Value = serde_json::from_str(&deployment(
            "acme",
            "checkout",
            "production",
            9,
            "fff",
            T - MINUTE,
        ))
        .expect("json");
        let mut batch = crate::store::Batch::new();
        for entry in super::records::index_entries(&event, T - MINUTE) {
            let (table, key, value) = entry.write("acme");
            batch = batch.put(table, key, value);
        }
        world.pipeline.store().apply(&batch).expect("index");
    };
    let whole = build();
    deploy(&whole);
    let never = AtomicBool::new(false);
    let done = super::batch::run(
        &whole.pipeline,
        &whole.correlator,
        super::batch::Scope {
            tenant: "acme",
            from_ms: 0,
            to_ms: u64::MAX,
            dry_run: false,
        },
        &never,
        |_| {},
    )
    .expect("batch");
    assert_eq!(
        (done.scanned, done.enriched, done.unchanged),
        (FAILURES, FAILURES, 0)
    );

    let interrupted = build();
    deploy(&interrupted);
    let cancel = AtomicBool::new(false);
    let stopped = super::batch::run(
        &interrupted.pipeline,
        &interrupted.correlator,
        super::batch::Scope {
            tenant: "acme",
            from_ms: 0,
            to_ms: u64::MAX,
            dry_run: false,
        },
        &cancel,
        |p| {
            if p.scanned >= 2 * super::batch::CHUNK as u64 {
                cancel.store(true, Ordering::SeqCst);
            }
        },
    );
    assert!(
        matches!(
            stopped,
            Err(super::batch::BatchError::Interrupted {
                scanned: 2_000,
                total: FAILURES
            })
        ),
        "{stopped:?}"
    );
    let resumed = super::batch::run(
        &interrupted.pipeline,
        &interrupted.correlator,
        super::batch::Scope {
            tenant: "acme",
            from_ms: 0,
            to_ms: u64::MAX,
            dry_run: false,
        },
        &never,
        |_| {},
    )
    .expect("resumed");
    assert_eq!(
        (resumed.scanned, resumed.enriched, resumed.unchanged),
        (FAILURES, FAILURES, 0)
    );

    // The same stored failures, byte for byte, and the same revisions delivered.
    let (a, b) = (failures_table(&whole), failures_table(&interrupted));
    assert_eq!(a.len() as u64, FAILURES);
    assert!(a == b, "the resumed run stored what one run stored");
    let revisions = |world: &World| world.stored().iter().filter(|e| e["revision"] == 2).count();
    assert_eq!(revisions(&whole), FAILURES as usize);
    assert_eq!(revisions(&interrupted), FAILURES as usize);

    // A dry run counts without changing anything; a second run finds nothing new.
    let dry = super::batch::run(
        &whole.pipeline,
        &whole.correlator,
        super::batch::Scope {
            tenant: "acme",
            from_ms: 0,
            to_ms: u64::MAX,
            dry_run: true,
        },
        &never,
        |_| {},
    )
    .expect("dry run");
    assert_eq!((dry.enriched, dry.unchanged), (0, FAILURES));
}

/// Every index entry of `tenant`, table by table.
fn index_of(pipeline: &Pipeline, tenant: &str) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
    use crate::store::Table;
    [
        Table::Deliveries,
        Table::Commits,
        Table::Pulls,
        Table::AlarmStates,
        Table::Failures,
    ]
    .into_iter()
    .map(|table| {
        pipeline
            .store()
            .scan(table, format!("{tenant}\0").as_bytes())
            .expect("scan")
    })
    .collect()
}

#[test]
fn the_index_is_rebuilt_from_the_archive_and_the_log_as_it_was() {
    use super::rebuild::{archive_files, rebuild};
    let world = World::new();
    world.commit(
        "acme",
        "gh",
        vec![
            commit("c1", T - 20 * MINUTE),
            merged(7, "c1", T - 19 * MINUTE),
            deployment("acme", "checkout", "production", 1, "c1", T),
        ],
    );
    world.commit("acme", "cw", vec![alarm("ALARM", T + 2 * MINUTE)]);
    world.commit(
        "acme",
        "cw",
        vec![failure(
            "acme",
            "f1",
            "checkout",
            "production",
            T + 5 * MINUTE,
        )],
    );
    // A late deployment revises f2: the rebuild keeps its highest revision.
    world.commit(
        "acme",
        "cw",
        vec![failure("acme", "f2", "checkout", "staging", T + 9 * MINUTE)],
    );
    world.commit(
        "acme",
        "gh",
        vec![deployment(
            "acme",
            "checkout",
            "staging",
            2,
            "c1",
            T + MINUTE,
        )],
    );
    world.commit(
        "other",
        "gh",
        vec![deployment("other", "checkout", "production", 9, "c9", T)],
    );
    let acme = index_of(&world.pipeline, "acme");
    let other = index_of(&world.pipeline, "other");
    assert!(acme.iter().all(|entries| !entries.is_empty()), "{acme:?}");

    // The JSONL sink's files: a rotation with the first half, the current file with
    // the rest, a torn last line.
    let lines: Vec<String> = world.stored().iter().map(Value::to_string).collect();
    let sinks = tempfile::tempdir().expect("tempdir");
    let current = sinks.path().join("events.jsonl");
    let (old, new) = lines.split_at(lines.len() / 2);
    std::fs::write(
        sinks.path().join("events.jsonl.1796000000000"),
        old.join("\n") + "\n",
    )
    .expect("write");
    std::fs::write(&current, new.join("\n") + "\n{\"tenant\":\"acme\",\"tim").expect("write");
    std::fs::write(sinks.path().join("unrelated.jsonl.1"), "x").expect("write");
    let archives = archive_files(&current).expect("archives");
    assert_eq!(archives.len(), 2, "{archives:?}");
    assert!(archives[0].ends_with("events.jsonl.1796000000000"));

    // Damage: an entry lost, a stray one.
    let store = world.pipeline.store();
    let lost = acme[0][0].0.clone();
    store
        .apply(
            &crate::store::Batch::new()
                .delete(crate::store::Table::Deliveries, lost)
                .put(
                    crate::store::Table::AlarmStates,
                    b"acme\0checkout\0stray".to_vec(),
                    b"{}".to_vec(),
                ),
        )
        .expect("damage");
    assert_ne!(index_of(&world.pipeline, "acme"), acme);

    let summary = rebuild(&world.pipeline, &world.correlator, "acme", &archives).expect("rebuild");
    assert_eq!(index_of(&world.pipeline, "acme"), acme);
    assert_eq!(
        index_of(&world.pipeline, "other"),
        other,
        "another tenant's index is untouched"
    );
    assert_eq!(
        summary.failures, 3,
        "f1, f2 and the ALARM event, each once: {summary:?}"
    );
    assert_eq!(summary.skipped, 1, "the torn line");
    assert_eq!(summary.files, archives);

    // A store that lost its index entirely (a new one) gets it back from the files alone.
    let fresh = World::new();
    let summary = rebuild(&fresh.pipeline, &fresh.correlator, "acme", &archives).expect("rebuild");
    assert_eq!(index_of(&fresh.pipeline, "acme"), acme);
    assert_eq!(
        summary.events,
        lines.len() as u64 - 1,
        "every acme line, none of other's: {summary:?}"
    );
}

fn note(event: &Value) -> &str {
    event["data"]["enrichment_note"]
        .as_str()
        .unwrap_or_default()
}

/// The failure's entry in the index, as a completion reads it.
fn stored_failure(world: &World, completion: &super::Completion) -> Value {
    let raw = world
        .pipeline
        .store()
        .get(crate::store::Table::Failures, &completion.key)
        .expect("read")
        .expect("stored");
    serde_json::from_slice(&raw).expect("JSON")
}

#[test]
fn suspect_commits_missing_from_the_index_are_asked_for_and_the_answer_revises_the_failure() {
    use super::completion::revise;
    let (world, mut completions) = World::with_completions();
    world.commit(
        "acme",
        "gh",
        vec![
            deployment(
                "acme",
                "checkout",
                "production",
                1,
                "aaa",
                T - 3 * 60 * MINUTE,
            ),
            deployment("acme", "checkout", "production", 2, "bbb", T),
        ],
    );
    world.commit(
        "acme",
        "cw",
        vec![failure(
            "acme",
            "f1",
            "checkout",
            "production",
            T + 10 * MINUTE,
        )],
    );
    let first = world.failure("f1");
    assert_eq!(first["data"]["enrichment_status"], "partial");
    assert!(
        note(&first).contains(
            "asked for the suspect commits of deployment acme/checkout#2 of integration `gh` (github): a revision follows"
        ),
        "{first}"
    );
    assert_eq!(kinds(&first), ["deployment"]);
    let completion = completions.try_recv().expect("an ask");
    assert_eq!(completion.tenant, "acme");
    assert_eq!(completion.revision, 1);
    let [ask] = completion.asks.as_slice() else {
        panic!("one ask: {:?}", completion.asks);
    };
    assert_eq!(ask.integration, "gh");
    assert_eq!(ask.query["tenant"], "acme");
    assert_eq!(ask.query["data"]["enrichment.want"], "suspect_commits");
    assert_eq!(ask.query["data"]["vcs.ref.head.revision"], "bbb");
    assert_eq!(
        ask.query["data"]["vcs.ref.base.revision"], "aaa",
        "the previous deployment's revision"
    );

    // The plugin's answer revises the failure: revision 2, complete.
    world.correlator.remember(
        "acme",
        &ask.key,
        Ok(vec![serde_json::json!({
            "source": {"plugin": "github", "integration": "gh", "tenant": "acme"},
            "kind": "suspect_commit",
            "reason": "commit abc was shipped",
            "score": 0.5,
            "links": [{"rel": "commit", "url": "https://github.com/acme/checkout/commit/abc"}],
            "data": {"sha": "abc"}
        })]),
    );
    let stored = stored_failure(&world, &completion);
    assert!(revise(&world.pipeline, &world.correlator, &completion, &stored).expect("revise"));
    let revised = world.failure("f1");
    assert_eq!(revised["revision"], 2);
    assert_eq!(revised["id"], first["id"]);
    assert_eq!(
        revised["data"]["enrichment_status"], "complete",
        "{revised}"
    );
    assert_eq!(kinds(&revised), ["deployment", "suspect_commit"]);
    // Nothing more to say: no third revision.
    let stored = stored_failure(&world, &completion);
    assert!(!revise(&world.pipeline, &world.correlator, &completion, &stored).expect("revise"));

    // The next failure after the same deployment has the answer at once: no ask.
    world.commit(
        "acme",
        "cw",
        vec![failure(
            "acme",
            "f2",
            "checkout",
            "production",
            T + 11 * MINUTE,
        )],
    );
    let second = world.failure("f2");
    assert_eq!(second["data"]["enrichment_status"], "complete", "{second}");
    assert_eq!(kinds(&second), ["deployment", "suspect_commit"]);
    assert!(
        completions.try_recv().is_err(),
        "answered from the last answer"
    );

    // An ask that goes unanswered leaves the failure partial, saying why.
    world.commit(
        "acme",
        "gh",
        vec![deployment(
            "acme",
            "checkout",
            "production",
            3,
            "ccc",
            T + 20 * MINUTE,
        )],
    );
    world.commit(
        "acme",
        "cw",
        vec![failure(
            "acme",
            "f3",
            "checkout",
            "production",
            T + 25 * MINUTE,
        )],
    );
    let completion = completions.try_recv().expect("an ask");
    assert_eq!(
        completion.asks[0].query["data"]["vcs.ref.base.revision"],
        "bbb"
    );
    let stored = stored_failure(&world, &completion);
    let problem = "integration `gh` (github) is not running".to_owned();
    world
        .correlator
        .remember("acme", &completion.asks[0].key, Err(problem));
    assert!(revise(&world.pipeline, &world.correlator, &completion, &stored).expect("revise"));
    let unanswered = world.failure("f3");
    assert_eq!(unanswered["revision"], 2);
    assert_eq!(unanswered["data"]["enrichment_status"], "partial");
    assert!(note(&unanswered).contains("is not running"), "{unanswered}");
    assert!(!note(&unanswered).contains("a revision follows"));
    // While that reason is fresh, the next failure says it at once, asking nothing.
    world.commit(
        "acme",
        "cw",
        vec![failure(
            "acme",
            "f4",
            "checkout",
            "production",
            T + 26 * MINUTE,
        )],
    );
    let f4 = world.failure("f4");
    assert_eq!(f4["data"]["enrichment_status"], "partial");
    assert!(note(&f4).contains("is not running"), "{f4}");
    assert!(completions.try_recv().is_err(), "not asked again");

    // Another tenant's failure after its own deployment asks about its own tenant only.
    world
        .correlator
        .register(&InstanceKey::new("other", "gh"), "github", true);
    world.commit(
        "other",
        "gh",
        vec![deployment("other", "checkout", "production", 2, "bbb", T)],
    );
    world.commit(
        "other",
        "cw",
        vec![failure(
            "other",
            "o1",
            "checkout",
            "production",
            T + 10 * MINUTE,
        )],
    );
    let completion = completions.try_recv().expect("an ask");
    assert_eq!(completion.tenant, "other");
    assert_eq!(completion.asks[0].query["tenant"], "other");
    assert!(
        completion.asks[0].query["data"]
            .get("vcs.ref.base.revision")
            .is_none()
    );
}

#[test]
fn an_integration_that_cannot_enrich_or_is_down_is_not_asked() {
    let (world, mut completions) = World::with_completions();
    world
        .correlator
        .register(&InstanceKey::new("acme", "gh"), "github", false);
    world.commit(
        "acme",
        "gh",
        vec![deployment("acme", "checkout", "production", 2, "bbb", T)],
    );
    world.commit(
        "acme",
        "cw",
        vec![failure("acme", "f1", "checkout", "production", T + MINUTE)],
    );
    assert_eq!(world.failure("f1")["data"]["enrichment_status"], "complete");
    assert!(completions.try_recv().is_err());
    world
        .correlator
        .register(&InstanceKey::new("acme", "gh"), "github", true);
    world
        .correlator
        .set_running(&InstanceKey::new("acme", "gh"), false);
    world.commit(
        "acme",
        "cw",
        vec![failure(
            "acme",
            "f2",
            "checkout",
            "production",
            T + 2 * MINUTE,
        )],
    );
    let f2 = world.failure("f2");
    assert_eq!(f2["data"]["enrichment_status"], "partial");
    assert!(note(&f2).contains("not running"), "{f2}");
    assert!(
        completions.try_recv().is_err(),
        "a stopped plugin is not asked"
    );
}

#[test]
fn one_run_of_a_batch_job_at_a_time() {
    let world = World::new();
    let correlator = world.correlator;
    let first = correlator
        .start_job(b"acme\0job", std::time::Duration::ZERO)
        .expect("free");
    assert!(
        correlator
            .start_job(b"acme\0job", std::time::Duration::from_millis(20))
            .is_none(),
        "the same job is running"
    );
    assert!(
        correlator
            .start_job(b"acme\0other", std::time::Duration::ZERO)
            .is_some(),
        "another job is not held up"
    );
    std::thread::scope(|scope| {
        let waiting = scope.spawn(|| {
            correlator
                .start_job(b"acme\0job", std::time::Duration::from_secs(10))
                .is_some()
        });
        drop(first);
        assert!(
            waiting.join().expect("join"),
            "started once the first stopped"
        );
    });
}

#[test]
fn enrichments_name_the_configured_plugin_before_its_instance_started() {
    let world = World::new();
    // Named from the configuration at the daemon's start; never configured yet.
    world
        .correlator
        .name_plugin(&InstanceKey::new("other", "deploys"), "github");
    world.commit(
        "other",
        "deploys",
        vec![
            deployment("other", "checkout", "production", 1, "aaa", T)
                .replace("\"integration\":\"gh\"", "\"integration\":\"deploys\""),
        ],
    );
    world.commit(
        "other",
        "cw",
        vec![failure("other", "o1", "checkout", "production", T + MINUTE)],
    );
    let failure = world.failure("o1");
    assert_eq!(
        failure["data"]["enrichments"][0]["source"],
        serde_json::json!({"plugin": "github", "integration": "deploys", "tenant": "other"}),
        "{failure}"
    );
}

#[test]
fn a_tenant_with_realtime_enrichment_off_keeps_its_failures_as_they_came() {
    let (world, flags) = World::with_flags();
    flags
        .set(Some("acme"), "realtime_enrichment=false", "uid:0")
        .expect("flag");
    world.commit(
        "acme",
        "gh",
        vec![deployment("acme", "checkout", "production", 1, "aaa", T)],
    );
    world.commit(
        "acme",
        "cw",
        vec![failure("acme", "f1", "checkout", "production", T + MINUTE)],
    );
    let stored = world.failure("f1");
    assert!(
        stored["data"]
            .get("enrichments")
            .is_none_or(|e| e == &serde_json::json!([])),
        "{stored}"
    );
    assert!(
        stored["data"].get("enrichment_status").is_none(),
        "{stored}"
    );
    // Still indexed: a batch run enriches it later.
    let never = std::sync::atomic::AtomicBool::new(false);
    flags
        .set(Some("acme"), "realtime_enrichment=true", "uid:0")
        .expect("flag");
    let done = super::batch::run(
        &world.pipeline,
        &world.correlator,
        super::batch::Scope {
            tenant: "acme",
            from_ms: 0,
            to_ms: u64::MAX,
            dry_run: false,
        },
        &never,
        |_| {},
    )
    .expect("batch");
    assert_eq!(done.enriched, 1);
    assert_eq!(kinds(&world.failure("f1")), ["deployment"]);
}

/// The reasons of a failure's deployment enrichments, newest deployment first.
fn deployment_reasons(event: &Value) -> Vec<String> {
    event["data"]["enrichments"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["kind"] == "deployment")
        .map(|e| e["reason"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn two_revisions_made_from_the_same_stored_one_lose_nothing() {
    use super::completion::revise;
    let (world, mut completions) = World::with_completions();
    world.commit(
        "acme",
        "cw",
        vec![failure(
            "acme",
            "f1",
            "checkout",
            "production",
            T + 10 * MINUTE,
        )],
    );
    // Two late deployments come in at once (two webhooks): each is prepared while the
    // failure is at revision 1, so each makes it revision 2.
    let first = world.pipeline.prepare(
        "acme",
        "gh",
        &[deployment("acme", "checkout", "production", 1, "aaa", T)],
    );
    let second = world.pipeline.prepare(
        "acme",
        "gh",
        &[deployment(
            "acme",
            "checkout",
            "production",
            0,
            "zzz",
            T - 5 * MINUTE,
        )],
    );
    for submission in [&first, &second] {
        assert_eq!(
            submission
                .accepted
                .iter()
                .filter_map(|e| e.revision)
                .collect::<Vec<_>>(),
            [2]
        );
    }
    world.pipeline.commit_blocking(second).expect("commit");
    let outcome = world.pipeline.commit_blocking(first).expect("commit");
    assert_eq!(
        (outcome.stored, outcome.duplicates),
        (1, 1),
        "the deployment is stored; its revision 2 came second and is not"
    );
    let versions = |world: &World| -> Vec<Value> {
        world
            .stored()
            .into_iter()
            .filter(|e| e["data"]["log.message"] == "f1")
            .collect()
    };
    assert_eq!(versions(&world).len(), 2, "revision 1 and one revision 2");
    assert_eq!(
        deployment_reasons(&versions(&world)[1]),
        ["deployed 15 min before, same service and environment"]
    );
    // The losing revision is handed to the completer, which enriches the failure again
    // from what is stored now: both deployments, in a revision 3.
    let redo = std::iter::from_fn(|| completions.try_recv().ok())
        .find(|c| c.asks.is_empty())
        .expect("the superseded revision is redone");
    assert_eq!((redo.tenant.as_str(), redo.revision), ("acme", 2));
    let stored = stored_failure(&world, &redo);
    assert_eq!(stored["revision"], 2);
    assert!(revise(&world.pipeline, &world.correlator, &redo, &stored).expect("revise"));
    let all = versions(&world);
    assert_eq!(all.len(), 3, "{all:?}");
    assert_eq!(all[2]["revision"], 3);
    assert_eq!(all[2]["id"], all[0]["id"]);
    assert_eq!(
        deployment_reasons(&all[2]),
        [
            "deployed 10 min before, same service and environment",
            "deployed 15 min before, same service and environment"
        ]
    );
    assert_eq!(
        stored_failure(&world, &redo),
        all[2],
        "the index holds the last"
    );
}

/// A table's entries.
type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// Every entry of every index table, per table.
fn whole_index(world: &World) -> Vec<(crate::store::Table, Entries)> {
    super::records::INDEX_TABLES
        .into_iter()
        .map(|table| {
            let entries = world.pipeline.store().scan(table, b"").expect("scan");
            (table, entries)
        })
        .collect()
}

/// Two of everything the index keeps, one old and one recent, in two tenants.
fn old_and_recent(world: &World, old: u64, recent: u64) {
    for tenant in ["acme", "globex"] {
        for (at, id) in [(old, 1), (recent, 2)] {
            world.commit(
                tenant,
                "gh",
                vec![
                    deployment(tenant, "checkout", "production", id, "aaa", at),
                    deployment(tenant, "checkout", "staging", id, "aaa", at),
                ],
            );
        }
    }
    world.commit(
        "acme",
        "gh",
        vec![
            commit("old1", old),
            commit("new1", recent),
            merged(1, "old1", old),
            merged(2, "new1", recent),
        ],
    );
    world.commit(
        "acme",
        "cw",
        vec![alarm("ALARM", old), alarm("OK", old + MINUTE)],
    );
    world.commit(
        "acme",
        "cw",
        vec![alarm("ALARM", recent), alarm("OK", recent + MINUTE)],
    );
    world.commit(
        "acme",
        "cw",
        vec![
            failure(
                "acme",
                "old-boom",
                "checkout",
                "production",
                old + 2 * MINUTE,
            ),
            failure(
                "acme",
                "new-boom",
                "checkout",
                "production",
                recent + 2 * MINUTE,
            ),
        ],
    );
}

#[test]
fn retention_deletes_every_entry_older_than_the_horizon_and_keeps_the_rest() {
    use crate::store::Table;
    let world = World::new();
    old_and_recent(&world, T - 100 * MINUTE, T);
    let before = whole_index(&world);
    // One alarm, resolved long ago and again lately: its latest resolution is kept.
    let resolutions = |index: &[(Table, Entries)]| {
        index
            .iter()
            .find(|(table, _)| *table == Table::Resolutions)
            .map(|(_, entries)| entries.len())
    };
    assert_eq!(resolutions(&before), Some(1));

    let pruned = world
        .correlator
        .prune_before(T - 50 * MINUTE, T + 60 * MINUTE)
        .expect("prune");

    let after = whole_index(&world);
    for ((table, was), (_, is)) in before.iter().zip(&after) {
        let deleted = pruned
            .deleted
            .iter()
            .find(|(t, _)| t == table)
            .map(|(_, n)| *n)
            .expect("every table is reported");
        assert_eq!(
            is.len() as u64,
            was.len() as u64 - deleted,
            "{table:?}: what is left is what was not deleted"
        );
        if *table == Table::Resolutions {
            continue;
        }
        // Exactly the recent half stays: what was kept is every entry whose time is
        // at or after the horizon.
        assert_eq!(is.len() * 2, was.len(), "{table:?}: {pruned:?}");
        for (key, value) in is {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(key),
                String::from_utf8_lossy(value)
            );
            assert!(!text.contains("old"), "{table:?} kept an old entry: {text}");
        }
    }
    assert_eq!(resolutions(&after), Some(1));
    assert_eq!(pruned.stamped, 0, "every pull request has its time");
    assert!(
        pruned
            .deleted
            .iter()
            .any(|(table, n)| *table == Table::Deliveries && *n == 5),
        "two tenants' old deployments in two environments, and the old merge: {pruned:?}"
    );

    // A sweep again finds nothing, and the index still enriches with what it kept.
    let again = world
        .correlator
        .prune_before(T - 50 * MINUTE, T + 60 * MINUTE)
        .expect("prune");
    assert_eq!(again.total(), 0);
    world.commit(
        "acme",
        "cw",
        vec![failure(
            "acme",
            "later",
            "checkout",
            "production",
            T + 5 * MINUTE,
        )],
    );
    let later = world.failure("later");
    assert!(kinds(&later).contains(&"deployment".to_owned()), "{later}");
}

#[test]
fn retention_deletes_a_large_group_in_batches() {
    use crate::store::Table;
    let world = World::new();
    let many = super::retention::KEYS_PER_BATCH * 2 + 17;
    for chunk in (0..many).collect::<Vec<_>>().chunks(500) {
        let events = chunk
            .iter()
            .map(|n| commit(&format!("sha{n:05}"), T - 100 * MINUTE + *n as u64))
            .collect();
        world.commit("acme", "gh", events);
    }
    world.commit("acme", "gh", vec![commit("fresh", T)]);
    let pruned = world.correlator.prune_before(T - MINUTE, T).expect("prune");
    assert!(
        pruned.deleted.contains(&(Table::Commits, many as u64)),
        "{pruned:?}"
    );
    let left = world
        .pipeline
        .store()
        .scan(Table::Commits, b"")
        .expect("scan");
    assert_eq!(left.len(), 1);
    assert!(String::from_utf8_lossy(&left[0].0).ends_with("fresh"));
}

#[test]
fn a_pull_request_recorded_without_a_time_is_stamped_and_pruned_one_retention_later() {
    use crate::store::{Batch, Table};
    let world = World::new();
    // As indexed before pull requests kept their merge time.
    let key = super::records::prefix(&["acme", "acme/checkout", "abc"]);
    let legacy = br#"{"number":7,"title":"Fix","url":"https://github.com/acme/checkout/pull/7"}"#;
    world
        .pipeline
        .store()
        .apply(&Batch::new().put(Table::Pulls, key.clone(), legacy.to_vec()))
        .expect("put");

    let first = world.correlator.prune_before(T, T).expect("prune");
    assert_eq!(first.stamped, 1);
    assert_eq!(first.total(), 0, "kept: its time is unknown");
    let stamped: super::records::PullRecord = serde_json::from_slice(
        &world
            .pipeline
            .store()
            .get(Table::Pulls, &key)
            .expect("get")
            .expect("kept"),
    )
    .expect("json");
    assert_eq!(stamped.time_ms, Some(T));
    assert_eq!(stamped.number, Some(7));

    let kept = world.correlator.prune_before(T, T + MINUTE).expect("prune");
    assert_eq!((kept.total(), kept.stamped), (0, 0));
    let gone = world
        .correlator
        .prune_before(T + 1, T + MINUTE)
        .expect("prune");
    assert!(gone.deleted.contains(&(Table::Pulls, 1)), "{gone:?}");
}

#[test]
fn a_sweep_reports_to_metrics_and_upkeep_health_and_the_loop_stops_when_told() {
    let world = World::new();
    // An hour before now: past a retention of four seconds (swept every second).
    let an_hour_ago = plugin_kit::clock::now_ms() - 60 * MINUTE;
    world.commit("acme", "gh", vec![commit("ancient", an_hour_ago)]);
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(sweep_and_report(&world));
}

async fn sweep_and_report(world: &World) {
    use super::retention::{RetentionMetrics, TableLabel, UPKEEP_NAME, run, sweep};
    let metrics = RetentionMetrics::default();
    let retention = std::time::Duration::from_secs(4);
    sweep(&world.correlator, &world.pipeline, retention, &metrics).await;
    let commits = TableLabel {
        table: "correlation.commits".to_owned(),
    };
    assert_eq!(metrics.pruned.get_or_create(&commits).get(), 1);
    assert_eq!(metrics.failures.get(), 0);
    assert!(metrics.last_success.get() > 0);
    let upkeep = world.pipeline.upkeep_health().all();
    assert_eq!(upkeep.len(), 1);
    assert_eq!(upkeep[0].name, UPKEEP_NAME);
    assert_eq!(upkeep[0].failing_since_ms, None);
    assert!(
        world
            .pipeline
            .store()
            .scan(crate::store::Table::Commits, b"")
            .expect("scan")
            .is_empty()
    );
    // The loop sweeps every second for this retention, and ends when told.
    assert_eq!(
        super::retention::sweep_interval(retention),
        std::time::Duration::from_secs(1)
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let sweeps = tokio::spawn(run(
        world.correlator.clone(),
        world.pipeline.clone(),
        retention,
        metrics.clone(),
        stopped,
    ));
    stop.send(true).expect("stop");
    tokio::time::timeout(std::time::Duration::from_secs(10), sweeps)
        .await
        .expect("the sweeps stop when told")
        .expect("no panic");
}
