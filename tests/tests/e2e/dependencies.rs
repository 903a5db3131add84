//! A plugin's circuit breakers reach the supervisor: the testfault plugin probes a URL
//! through plugin-kit's resilient client; with the URL down its breaker opens and
//! `status`, the metrics and the log say so; with the URL back it closes again.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use e2e_tests::{DaemonSetup, PluginPackage, World, wait_for};

#[test]
fn an_open_breaker_shows_in_status_and_metrics_and_closes_when_the_service_is_back() {
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let url = format!("http://127.0.0.1:{port}/health");
    let world = World::new();
    world.install(&PluginPackage::testfault("prober", &["--probe-url", &url]));
    let daemon = world.start(&DaemonSetup::default().instance("prober"));
    let breaker = |daemon: &e2e_tests::Daemon| {
        daemon.instance("prober").and_then(|i| {
            i["dependencies"]
                .as_array()
                .and_then(|d| d.first())
                .map(|d| {
                    (
                        d["name"].clone(),
                        d["breaker"].as_str().unwrap_or_default().to_owned(),
                    )
                })
        })
    };
    wait_for("the breaker open", Duration::from_secs(30), || {
        breaker(&daemon).filter(|(_, state)| state == "open")
    });
    assert_eq!(breaker(&daemon).expect("dependency").0, "probe");
    let metrics = daemon.metrics();
    assert!(
        metrics.lines().any(
            |l| l.starts_with("integrationd_plugin_dependency_breaker_open")
                && l.contains("dependency=\"probe\"")
                && l.ends_with(" 1")
        ),
        "{metrics}"
    );
    assert!(daemon.log_text().contains("circuit breaker changed"));

    // The service comes back: the next probe after the cool-down closes the breaker.
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("the service comes back");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request);
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    });
    wait_for("the breaker closed", Duration::from_secs(30), || {
        breaker(&daemon).filter(|(_, state)| state == "closed")
    });
    wait_for("the gauge back at 0", Duration::from_secs(10), || {
        daemon
            .metrics()
            .lines()
            .any(|l| {
                l.starts_with("integrationd_plugin_dependency_breaker_open") && l.ends_with(" 0")
            })
            .then_some(())
    });
}
