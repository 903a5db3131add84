//! The HTTP sink end to end: a real daemon posts NDJSON batches to a real HTTP endpoint
//! (a small receiver in this test). The endpoint down for a minute, then back: the
//! backlog drains in order and nothing is lost, while the JSONL sink kept flowing. A
//! 429 with Retry-After is waited out; a 400 sends the batch to the dead-letter queue.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use e2e_tests::{DaemonSetup, PluginPackage, World, wait_for};

fn emitter(total: u64) -> PluginPackage {
    let total = total.to_string();
    PluginPackage::collector("emitter", &["--emit", &total])
}

/// What the receiver saw: each request's authorization and body lines.
#[derive(Debug, Default)]
struct Received {
    authorizations: Vec<String>,
    lines: Vec<String>,
    requests: usize,
}

/// Serves `listener`, answering with `script` in turn (then 200s).
fn serve(listener: TcpListener, script: Vec<&'static str>, received: Arc<Mutex<Received>>) {
    std::thread::spawn(move || {
        let mut script = script.into_iter();
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut length = 0usize;
            let mut authorization = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(value) = lower.strip_prefix("content-length:") {
                    length = value.trim().parse().unwrap_or(0);
                }
                if lower.starts_with("authorization:") {
                    authorization = line["authorization:".len()..].trim().to_owned();
                }
            }
            let mut body = vec![0u8; length];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            let answer = script
                .next()
                .unwrap_or("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            {
                let mut received = received.lock().expect("received");
                received.requests += 1;
                received.authorizations.push(authorization);
                if answer.starts_with("HTTP/1.1 200") {
                    received
                        .lines
                        .extend(String::from_utf8_lossy(&body).lines().map(str::to_owned));
                }
            }
            let _ = stream.write_all(answer.as_bytes());
        }
    });
}

fn ids_of(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .map(|line| {
            let event: serde_json::Value = serde_json::from_str(line).expect("a JSON event");
            event["id"].as_str().expect("id").to_owned()
        })
        .collect()
}

fn setup(world: &World, port: u16, batch: usize) -> DaemonSetup {
    let token = world.root.path().join("sink-token");
    std::fs::write(&token, "s3cret-sink-token\n").expect("token");
    DaemonSetup::default()
        .instance("emitter")
        .process("collect_interval = \"100ms\"")
        .extra(&format!(
            "[[sinks.http]]\nname = \"platform\"\nurl = \"http://127.0.0.1:{port}/ingest\"\ntoken_file = {:?}\nbatch_events = {batch}\nretry_min = \"100ms\"\nretry_max = \"2s\"\n",
            token.display().to_string()
        ))
}

#[test]
fn an_endpoint_down_for_a_minute_gets_the_whole_backlog_in_order_and_jsonl_keeps_flowing() {
    const EVENTS: usize = 20_000;
    // A port nobody listens on yet: the endpoint is down.
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let world = World::new();
    world.install(&emitter(EVENTS as u64));
    let daemon = world.start(&setup(&world, port, 1000));
    let started = std::time::Instant::now();
    // The other sink flows all the while.
    let jsonl = wait_for(
        "the JSONL sink to have every event",
        Duration::from_secs(60),
        || {
            let lines = world.sink_lines();
            (lines.len() >= EVENTS).then_some(lines)
        },
    );
    wait_for(
        "the HTTP sink to report failures",
        Duration::from_secs(10),
        || {
            daemon
                .log_text()
                .contains("sink endpoint failed; retrying")
                .then_some(())
        },
    );
    // Down for a minute in all.
    std::thread::sleep(Duration::from_secs(60).saturating_sub(started.elapsed()));

    let listener = TcpListener::bind(("127.0.0.1", port)).expect("the endpoint comes back");
    let received = Arc::new(Mutex::new(Received::default()));
    serve(listener, Vec::new(), received.clone());
    let lines = wait_for("the backlog delivered", Duration::from_secs(60), || {
        let received = received.lock().expect("received");
        (received.lines.len() >= EVENTS).then(|| received.lines.clone())
    });
    assert_eq!(
        ids_of(&lines),
        ids_of(&jsonl),
        "everything, once, in commit order"
    );
    let received = received.lock().expect("received");
    assert!(
        received
            .authorizations
            .iter()
            .all(|a| a == "Bearer s3cret-sink-token")
    );
    assert!(
        !daemon.log_text().contains("s3cret-sink-token"),
        "the token never reaches the logs"
    );
}

#[test]
fn retry_after_is_honoured_and_a_refused_batch_is_dead_lettered() {
    const EVENTS: usize = 1_000;
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let received = Arc::new(Mutex::new(Received::default()));
    serve(
        listener,
        vec![
            "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            "HTTP/1.1 400 Bad Request\r\nContent-Length: 11\r\nConnection: close\r\n\r\nbad payload",
        ],
        received.clone(),
    );
    let world = World::new();
    world.install(&emitter(EVENTS as u64));
    let daemon = world.start(&setup(&world, port, 100));
    let lines = wait_for("900 events delivered", Duration::from_secs(60), || {
        let received = received.lock().expect("received");
        (received.lines.len() >= EVENTS - 100).then(|| received.lines.clone())
    });
    let jsonl = wait_for("the JSONL sink complete", Duration::from_secs(10), || {
        let lines = world.sink_lines();
        (lines.len() >= EVENTS).then_some(lines)
    });
    assert_eq!(jsonl.len(), EVENTS);
    // The first batch met the 429, then the 400: its 100 events are dead letters.
    assert_eq!(ids_of(&lines), ids_of(&jsonl[100..]));
    let letters = wait_for(
        "the refused batch in the DLQ",
        Duration::from_secs(10),
        || {
            let letters =
                daemon.ctl_json(&["dlq", "list", "--tenant", "system", "--limit", "1000"]);
            let letters = letters.as_array().cloned().unwrap_or_default();
            (letters.len() == 100).then_some(letters)
        },
    );
    assert!(letters.iter().all(|l| {
        l["stage"] == "sink"
            && l["reason"]
                .as_str()
                .unwrap_or_default()
                .contains("HTTP 400: bad payload")
    }));
    assert_eq!(received.lock().expect("received").requests, 2 + 9);
}
