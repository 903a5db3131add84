//! Starting one plugin process: verify the executable's checksum, execute the sealed
//! copy of the verified bytes, read the handshake, connect, and check `Describe` against the manifest.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use plugin_kit::host::{Connection, LaunchSpec, Launched, ResourceLimits};
use plugin_protocol::v1;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::health::InstanceLabels;
use crate::registry::{Package, Registry, VerifiedExecutable};

/// Everything needed to start one instance's process.
#[derive(Debug, Clone)]
pub struct SpawnSettings {
    pub socket: PathBuf,
    pub env: Vec<(OsString, OsString)>,
    pub limits: ResourceLimits,
    pub start_timeout: Duration,
}

/// A started, handshaken, described and healthy plugin process.
#[derive(Debug)]
pub struct Running {
    pub launched: Launched,
    pub connection: Connection,
    pub description: v1::DescribeResponse,
    /// What it can do: what `Describe` offered, which is what the manifest declares.
    pub capabilities: plugin_protocol::Capabilities,
}

/// Why a start failed. `Refused` will fail the same way until an operator acts
/// (trust, rescan, reinstall); `Failed` may succeed on retry.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Failed(String),
}

/// Verifies and starts `package`, then checks its `Describe` against the manifest.
pub async fn start(
    registry: &Registry,
    package: &Package,
    settings: &SpawnSettings,
    labels: &InstanceLabels,
) -> Result<Running, StartError> {
    let label = format!(
        "plugin `{}` {}",
        package.manifest.name, package.manifest.version
    );
    let verified = registry
        .verify(package)
        .map_err(|err| StartError::Refused(format!("{label}: {err}")))?;
    let protocols: Vec<u32> = package
        .manifest
        .protocol_versions
        .iter()
        .copied()
        .filter(|v| plugin_protocol::SUPPORTED_PROTOCOL_VERSIONS.contains(v))
        .collect();
    let (launched, mut connection) = launch_verified(
        verified,
        &package.manifest.args,
        protocols,
        settings,
        labels,
    )
    .await
    .map_err(|err| StartError::Failed(format!("{label}: {err}")))?;
    let pid = launched.pid;
    let fail = |message: String| {
        plugin_kit::host::kill_group(pid);
        StartError::Failed(format!("{label}: {message}"))
    };
    let description = match tokio::time::timeout(
        settings.start_timeout,
        connection.plugin.describe(v1::DescribeRequest {}),
    )
    .await
    {
        Ok(Ok(response)) => response.into_inner(),
        Ok(Err(status)) => return Err(fail(format!("Describe failed: {}", status.message()))),
        Err(_) => return Err(fail("Describe timed out".to_owned())),
    };
    if let Err(mismatch) =
        crate::registry::check_description(&package.manifest, &description, launched.handshake.app)
    {
        plugin_kit::host::kill_group(pid);
        return Err(StartError::Refused(format!("{label}: {mismatch}")));
    }
    Ok(Running {
        launched,
        connection,
        description,
        capabilities: package.manifest.capabilities,
    })
}

/// Executes an already-verified file through its descriptor, so the bytes that were
/// hashed are the bytes that run; waits for the handshake, connects and makes the first
/// health check. On failure the process group is gone.
pub async fn launch_verified(
    verified: VerifiedExecutable,
    args: &[String],
    protocol_versions: Vec<u32>,
    settings: &SpawnSettings,
    labels: &InstanceLabels,
) -> Result<(Launched, Connection), String> {
    match std::fs::remove_file(&settings.socket) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => {
            return Err(format!(
                "cannot remove stale socket {}: {err}",
                settings.socket.display()
            ));
        }
    }
    let mut spec = LaunchSpec::new(verified.exec_path(), &settings.socket);
    spec.arg0 = Some(verified.path.clone().into_os_string());
    spec.keep_open = Some(verified.exec_fd());
    spec.args = args.iter().map(OsString::from).collect();
    spec.env = settings.env.clone();
    spec.limits = settings.limits;
    spec.start_timeout = settings.start_timeout;
    spec.protocol_versions = protocol_versions;
    let mut launched = plugin_kit::host::launch(&spec)
        .await
        .map_err(|err| err.to_string())?;
    // Drain its output from now on: a plugin blocked on a full pipe answers no call.
    if let Some(stderr) = launched.stderr.take() {
        tokio::spawn(super::plugin_logs::relay(stderr, labels.clone(), "stderr"));
    }
    if let Some(stdout) = launched.stdout.take() {
        tokio::spawn(super::plugin_logs::relay(stdout, labels.clone(), "stdout"));
    }
    // Executed: this spawn's handle on the sealed copy is no longer needed.
    drop(verified);
    let pid = launched.pid;
    let fail = |message: String| {
        plugin_kit::host::kill_group(pid);
        message
    };
    let mut connection = match tokio::time::timeout(
        settings.start_timeout,
        plugin_kit::host::connect(&launched.handshake.socket, &launched.token),
    )
    .await
    {
        Ok(Ok(connection)) => connection,
        Ok(Err(err)) => return Err(fail(err.to_string())),
        Err(_) => {
            return Err(fail(
                "socket did not accept a connection in time".to_owned(),
            ));
        }
    };
    let health = tokio::time::timeout(
        settings.start_timeout,
        connection.health.check(HealthCheckRequest {
            service: String::new(),
        }),
    )
    .await;
    match health {
        Ok(Ok(response)) if response.get_ref().status == ServingStatus::Serving as i32 => {
            Ok((launched, connection))
        }
        Ok(Ok(response)) => Err(fail(format!(
            "first health check answered {:?}",
            response.get_ref().status
        ))),
        Ok(Err(status)) => Err(fail(format!(
            "first health check failed: {}",
            status.message()
        ))),
        Err(_) => Err(fail("first health check timed out".to_owned())),
    }
}
