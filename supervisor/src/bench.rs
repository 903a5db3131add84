//! `integrationd bench heartbeat`: spawns a plugin exactly as the supervisor does
//! (checksum verified, executed through the verified descriptor, handshake, token) and
//! times `grpc.health.v1` Check round trips, like `etcdctl check perf` for operators.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tonic_health::pb::HealthCheckRequest;

use crate::process::spawn::{SpawnSettings, launch_verified};
use crate::registry::{self, ChecksumError};

/// The measured figures.
#[derive(Debug, Clone, PartialEq)]
pub struct HeartbeatReport {
    /// Median of the spawns: checksum verification to first successful health check.
    pub spawn_ms: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub calls_per_s: f64,
}

impl std::fmt::Display for HeartbeatReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "spawn_ms={:.3} p50_us={:.1} p99_us={:.1} calls_per_s={:.0}",
            self.spawn_ms, self.p50_us, self.p99_us, self.calls_per_s
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Checksum(#[from] ChecksumError),
    #[error("cannot prepare a socket directory: {0}")]
    Io(std::io::Error),
    #[error("plugin {plugin}: {message}")]
    Plugin { plugin: String, message: String },
    #[error("--calls and --spawns must be at least 1")]
    NothingToMeasure,
}

impl From<std::io::Error> for BenchError {
    fn from(error: std::io::Error) -> Self {
        Self::Io(error)
    }
}

/// Spawns `plugin` `spawns` times (median start-up), then makes `calls` health checks
/// on one instance after a short warm-up.
pub async fn heartbeat(
    plugin: &Path,
    calls: usize,
    spawns: usize,
) -> Result<HeartbeatReport, BenchError> {
    if calls == 0 || spawns == 0 {
        return Err(BenchError::NothingToMeasure);
    }
    let trusted = registry::sha256_of(plugin)?;
    let socket_dir = tempfile_dir()?;
    let settings = SpawnSettings {
        socket: socket_dir.join("bench.sock"),
        env: Vec::new(),
        limits: Default::default(),
        start_timeout: Duration::from_secs(10),
    };
    let fail = |message: String| BenchError::Plugin {
        plugin: plugin.display().to_string(),
        message,
    };
    let labels = crate::health::InstanceLabels {
        plugin: "bench".to_owned(),
        tenant: "-".to_owned(),
        integration: "bench".to_owned(),
    };
    let mut spawn_times = Vec::with_capacity(spawns);
    let mut kept = None;
    // As the supervisor keeps them: the first spawn hashes, the later ones reuse the
    // sealed copy of the unchanged file.
    let copies = registry::SealedCopies::default();
    for round in 0..spawns {
        let begin = Instant::now();
        let verified = copies.verify(plugin, Some(&trusted))?;
        let protocols = plugin_protocol::SUPPORTED_PROTOCOL_VERSIONS.to_vec();
        let (mut launched, connection) =
            launch_verified(verified, &[], protocols, &settings, &labels)
                .await
                .map_err(fail)?;
        spawn_times.push(begin.elapsed());
        if round + 1 == spawns {
            kept = Some((launched, connection));
        } else {
            plugin_kit::host::kill_group(launched.pid);
            let _ = launched.child.wait().await;
        }
    }
    let Some((mut launched, mut connection)) = kept else {
        return Err(BenchError::NothingToMeasure);
    };
    let request = HealthCheckRequest {
        service: String::new(),
    };
    for _ in 0..calls.min(1000) {
        connection
            .health
            .check(request.clone())
            .await
            .map_err(|s| fail(s.message().to_owned()))?;
    }
    let mut latencies = Vec::with_capacity(calls);
    let all = Instant::now();
    for _ in 0..calls {
        let sent = Instant::now();
        connection
            .health
            .check(request.clone())
            .await
            .map_err(|s| fail(s.message().to_owned()))?;
        latencies.push(sent.elapsed());
    }
    let total = all.elapsed();
    plugin_kit::host::kill_group(launched.pid);
    let _ = launched.child.wait().await;
    let _ = std::fs::remove_dir_all(&socket_dir);
    spawn_times.sort();
    latencies.sort();
    Ok(HeartbeatReport {
        spawn_ms: percentile(&spawn_times, 0.5).as_secs_f64() * 1e3,
        p50_us: percentile(&latencies, 0.5).as_secs_f64() * 1e6,
        p99_us: percentile(&latencies, 0.99).as_secs_f64() * 1e6,
        calls_per_s: calls as f64 / total.as_secs_f64(),
    })
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn tempfile_dir() -> Result<PathBuf, std::io::Error> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = std::env::temp_dir().join(format!("integrationd-bench-{}", std::process::id()));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_micros).collect();
        assert_eq!(percentile(&samples, 0.5), Duration::from_micros(50));
        assert_eq!(percentile(&samples, 0.99), Duration::from_micros(99));
        assert_eq!(percentile(&samples[..1], 0.99), Duration::from_micros(1));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }
}
