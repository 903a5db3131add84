//! Many plugin instances on one small machine.

use std::time::{Duration, Instant};

use e2e_tests::{DaemonSetup, PluginPackage, World, pid_of, process_alive, state_of, wait_for};

#[test]
fn two_hundred_idle_plugin_instances_are_supervised_at_once() {
    let world = World::new();
    world.install(&PluginPackage::testfault("idle", &[]));
    let mut setup = DaemonSetup::default()
        .process("heartbeat_interval = \"2s\"")
        .process("heartbeat_timeout = \"1s\"");
    for index in 0..200 {
        setup
            .instances
            .push(("idle".to_owned(), format!("idle-{index}")));
    }
    let started = Instant::now();
    let mut daemon = world.start(&setup);
    let instances = wait_for("200 healthy instances", Duration::from_secs(180), || {
        let instances = daemon.instances();
        let healthy = instances
            .iter()
            .filter(|i| state_of(i) == "healthy")
            .count();
        (healthy == 200).then_some(instances)
    });
    eprintln!("200 instances healthy after {:?}", started.elapsed());
    let pids: Vec<u32> = instances.iter().map(pid_of).collect();
    assert!(pids.iter().all(|pid| process_alive(*pid)));
    let mut unique = pids.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), 200, "one process per instance");

    // Still all healthy after two heartbeat rounds each, none restarted.
    wait_for(
        "two heartbeats per instance",
        Duration::from_secs(60),
        || {
            let metrics = daemon.metrics();
            let answered = metrics
                .lines()
                .filter(|l| l.starts_with("integrationd_plugin_heartbeat_seconds_count"))
                .filter(|l| l.rsplit(' ').next().and_then(|n| n.parse::<u64>().ok()) >= Some(2))
                .count();
            (answered == 200).then_some(())
        },
    );
    let round = daemon.instances();
    assert!(
        round
            .iter()
            .all(|i| i["restarts"] == 0 && state_of(i) == "healthy")
    );

    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    let (status, took) = daemon.wait_exit(Duration::from_secs(30));
    assert!(status.success());
    eprintln!("200 instances stopped in {took:?}");
    for pid in pids {
        assert!(!process_alive(pid), "plugin {pid} survived the daemon");
    }
}
