//! A short-lived plugin process used to admit a configuration: `Describe` for the config
//! schema, then `Configure` and `Check` with the candidate, then a clean stop. It runs
//! beside the integration's real instance, which keeps running its current version.

use plugin_protocol::v1;
use tonic::Status;

use super::spawn::Running;

/// A started probe.
#[derive(Debug)]
pub struct Probe {
    pub(super) running: Running,
}

impl Probe {
    /// What the plugin said in `Describe` (its config schema among it).
    pub fn description(&self) -> &v1::DescribeResponse {
        &self.running.description
    }

    /// Configures the probe with the candidate and runs `Check`. `Ok(None)`: the plugin
    /// offers no check (it answered UNIMPLEMENTED).
    pub async fn configure_and_check(
        &mut self,
        request: v1::ConfigureRequest,
    ) -> Result<Option<v1::CheckResponse>, Status> {
        self.running.connection.plugin.configure(request).await?;
        match self
            .running
            .connection
            .plugin
            .check(v1::CheckRequest {})
            .await
        {
            Ok(response) => Ok(Some(response.into_inner())),
            Err(status) if status.code() == tonic::Code::Unimplemented => Ok(None),
            Err(status) => Err(status),
        }
    }

    /// Asks the plugin to renew a credential it owns.
    pub async fn renew(
        &mut self,
        request: v1::RenewCredentialRequest,
    ) -> Result<v1::RenewCredentialResponse, Status> {
        Ok(self
            .running
            .connection
            .plugin
            .renew_credential(request)
            .await?
            .into_inner())
    }

    /// Stops the probe: `Shutdown`, then SIGKILL of its group.
    pub async fn stop(mut self) {
        let request = v1::ShutdownRequest {
            reason: "configuration probe done".to_owned(),
        };
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            self.running.connection.plugin.shutdown(request),
        )
        .await;
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            self.running.launched.child.wait(),
        )
        .await;
        plugin_kit::host::kill_group(self.running.launched.pid);
        let _ = self.running.launched.child.wait().await;
    }
}
