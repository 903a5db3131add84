//! The fuzz targets' checks (`fuzz/`), run on stable as property tests: each starts from
//! its target's corpus (`fuzz/corpus/TARGET/`: valid inputs, published example payloads)
//! and feeds the check the seeds, then seeds mutated as a fuzzer would (bytes flipped,
//! inserted, removed, runs repeated, cut short) and bytes of no shape at all. The cases
//! per target are bounded so the suite stays quick; `cargo +nightly fuzz run TARGET`
//! explores far more of the same space.

use std::path::Path;

use proptest::prelude::*;

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("the corpus {}: {err}", dir.display()))
        .map(|entry| std::fs::read(entry.expect("entry").path()).expect("seed"))
        .collect();
    seeds.sort();
    assert!(!seeds.is_empty(), "{} has no seeds", dir.display());
    seeds
}

/// One edit a fuzzer makes.
#[derive(Debug, Clone)]
enum Edit {
    Flip { at: usize, bit: u8 },
    Insert { at: usize, bytes: Vec<u8> },
    Remove { at: usize, len: usize },
    Repeat { at: usize, len: usize, times: usize },
    Cut { at: usize },
}

fn edit() -> impl Strategy<Value = Edit> {
    let at = any::<usize>();
    prop_oneof![
        (at, 0u8..8).prop_map(|(at, bit)| Edit::Flip { at, bit }),
        (
            at,
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 1..8),
                Just(b"{".to_vec()),
                Just(b"\"".to_vec()),
                Just(b"\0".to_vec()),
                Just(b"\xff\xfe".to_vec()),
                Just(b"[[[[[[[[".to_vec()),
                Just(b"\"\\u0000\"".to_vec()),
            ]
        )
            .prop_map(|(at, bytes)| Edit::Insert { at, bytes }),
        (at, 1usize..64).prop_map(|(at, len)| Edit::Remove { at, len }),
        (at, 1usize..16, 2usize..64).prop_map(|(at, len, times)| Edit::Repeat { at, len, times }),
        at.prop_map(|at| Edit::Cut { at }),
    ]
}

fn apply(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for edit in edits {
        let len = bytes.len();
        let place = |at: usize| if len == 0 { 0 } else { at % (len + 1) };
        match edit {
            Edit::Flip { at, bit } if len > 0 => bytes[at % len] ^= 1 << bit,
            Edit::Flip { .. } => {}
            Edit::Insert { at, bytes: new } => {
                let at = place(*at);
                bytes.splice(at..at, new.iter().copied());
            }
            Edit::Remove { at, len: n } => {
                let at = place(*at);
                let end = (at + n).min(len);
                bytes.drain(at..end);
            }
            Edit::Repeat { at, len: n, times } => {
                let at = place(*at);
                let end = (at + n).min(len);
                let run = bytes[at..end].repeat(*times);
                bytes.splice(at..at, run);
            }
            Edit::Cut { at } => bytes.truncate(place(*at)),
        }
    }
    bytes
}

/// A seed of `target`'s corpus with a few edits, or bytes of no shape.
fn input(target: &'static str) -> impl Strategy<Value = Vec<u8>> {
    let seeds = corpus(target);
    prop_oneof![
        4 => (0..seeds.len(), proptest::collection::vec(edit(), 0..6))
            .prop_map(move |(pick, edits)| apply(seeds[pick].clone(), &edits)),
        1 => proptest::collection::vec(any::<u8>(), 0..512),
    ]
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

#[test]
fn every_seed_passes_its_check_unedited() {
    for line in corpus("handshake_line") {
        plugin_protocol::check_untrusted_line(std::str::from_utf8(&line).expect("utf8"));
    }
    for seed in corpus("config_file") {
        supervisor::fuzzing::config_file(&seed);
    }
    for seed in corpus("ingress_body") {
        supervisor::fuzzing::ingress_body(&seed);
    }
    for seed in corpus("backup_file") {
        supervisor::fuzzing::backup_file(&seed);
    }
    for seed in corpus("admin_request") {
        supervisor::fuzzing::admin_request(&seed);
    }
    // The published examples are mapped (a ping is answered 200).
    for seed in corpus("github_webhook") {
        let (event, content_type) = integration_github::fuzzing::pick(seed[0]);
        let status = integration_github::fuzzing::delivery(event, content_type, &seed[1..]);
        let expected = if event == "ping" { 200 } else { 202 };
        assert_eq!(status, expected, "the {event} example");
    }
    for seed in corpus("cloudwatch_webhook") {
        assert_eq!(
            integration_cloudwatch::fuzzing::delivery(&seed),
            202,
            "a documented example"
        );
    }
    for seed in corpus("generic_webhook") {
        let (preset, event) = integration_webhook::fuzzing::pick(seed[0]);
        let status = integration_webhook::fuzzing::delivery(preset, event, &seed[1..]);
        assert!(
            [200, 202].contains(&status),
            "the {preset} example ({event}): {status}"
        );
    }
    for seed in corpus("field_mapping") {
        let split = seed.iter().position(|b| *b == 0).expect("rules NUL event");
        plugin_kit::check_untrusted_rules(&seed[..split], &seed[split + 1..]);
    }
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn handshake_lines(bytes in input("handshake_line")) {
        plugin_protocol::check_untrusted_line(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn config_files(bytes in input("config_file")) {
        supervisor::fuzzing::config_file(&bytes);
    }

    #[test]
    fn ingress_bodies(bytes in input("ingress_body")) {
        supervisor::fuzzing::ingress_body(&bytes);
    }

    #[test]
    fn admin_requests(bytes in input("admin_request")) {
        supervisor::fuzzing::admin_request(&bytes);
    }

    #[test]
    fn field_mapping_rules(bytes in input("field_mapping")) {
        let split = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
        plugin_kit::check_untrusted_rules(&bytes[..split], bytes.get(split + 1..).unwrap_or_default());
    }
}

proptest! {
    // Each case maps a whole GitHub payload or restores a backup: fewer cases.
    #![proptest_config(config(128))]

    #[test]
    fn github_webhooks(pick in any::<u8>(), body in input("github_webhook")) {
        let (event, content_type) = integration_github::fuzzing::pick(pick);
        integration_github::fuzzing::delivery(event, content_type, body.get(1..).unwrap_or_default());
    }

    #[test]
    fn cloudwatch_webhooks(body in input("cloudwatch_webhook")) {
        integration_cloudwatch::fuzzing::delivery(&body);
    }

    #[test]
    fn generic_webhooks(pick in any::<u8>(), body in input("generic_webhook")) {
        let (preset, event) = integration_webhook::fuzzing::pick(pick);
        integration_webhook::fuzzing::delivery(preset, event, body.get(1..).unwrap_or_default());
    }

    #[test]
    fn backup_files(bytes in input("backup_file")) {
        supervisor::fuzzing::backup_file(&bytes);
    }
}
