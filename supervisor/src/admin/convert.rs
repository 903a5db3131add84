//! The admin API's conversions, in one place: domain records to their proto messages,
//! and each component's errors to the gRPC status a caller sees (not found, invalid
//! argument, failed precondition, internal), so that every call maps them alike.

use plugin_kit::clock::unix_ms;
use tonic::Status;

use super::proto;
use crate::correlation::batch::Progress;
use crate::credentials::{CredentialError, CredentialInfo};
use crate::integrations::IntegrationError;
use crate::pipeline::{DeadLetter, DeadLetterError};
use crate::process::InstanceStatus;
use crate::registry::{InstalledPlugin, Refusal, RegistryError};
use crate::store::AuditRecord;
use crate::tenants::{FlagError, TenantError, TokenInfo};

impl From<InstanceStatus> for proto::InstanceStatus {
    fn from(status: InstanceStatus) -> Self {
        proto::InstanceStatus {
            plugin: status.plugin,
            tenant: status.tenant,
            integration: status.integration,
            state: status.state.as_str().to_owned(),
            pid: status.pid.unwrap_or_default(),
            version: status.version.unwrap_or_default(),
            protocol_version: status.protocol_version.unwrap_or_default(),
            restarts: status.restarts,
            last_error: status.last_error.unwrap_or_default(),
            since_unix_ms: unix_ms(status.since),
            next_restart_unix_ms: status.next_restart_at.map(unix_ms).unwrap_or_default(),
            dependencies: status
                .dependencies
                .into_iter()
                .map(|d| proto::Dependency {
                    name: d.name,
                    breaker: d.breaker,
                    detail: d.detail,
                })
                .collect(),
            health: String::new(),
            health_reason: String::new(),
            error_class: String::new(),
        }
    }
}

impl From<InstalledPlugin> for proto::PluginInfo {
    fn from(plugin: InstalledPlugin) -> Self {
        let manifest = plugin.package.manifest;
        proto::PluginInfo {
            name: manifest.name,
            version: manifest.version.to_string(),
            description: manifest.description,
            directory: plugin.package.dir.display().to_string(),
            executable: plugin.executable.display().to_string(),
            protocol_versions: manifest.protocol_versions,
            capabilities: manifest.capabilities.names(),
            framework: manifest.framework.to_string(),
            selected: plugin.selected,
            trusted_sha256: plugin
                .pin
                .as_ref()
                .map(|p| p.sha256.clone())
                .unwrap_or_default(),
            trusted_by: plugin.pin.map(|p| p.pinned_by).unwrap_or_default(),
            refusal: plugin.refusal.unwrap_or_default(),
            executable_owner_uid: plugin.owner,
        }
    }
}

impl From<Refusal> for proto::PluginRefusal {
    fn from(refusal: Refusal) -> Self {
        proto::PluginRefusal {
            plugin: refusal.plugin,
            version: refusal.version.map(|v| v.to_string()).unwrap_or_default(),
            reason: refusal.reason,
        }
    }
}

impl From<TokenInfo> for proto::TokenInfo {
    fn from(info: TokenInfo) -> Self {
        proto::TokenInfo {
            id: info.id,
            tenant: info.tenant,
            scope: info.scope.as_str().to_owned(),
            created_unix_ms: info.created_ms,
        }
    }
}

impl From<AuditRecord> for proto::AuditRecord {
    fn from(record: AuditRecord) -> Self {
        proto::AuditRecord {
            seq: record.seq,
            time_unix_ms: record.time_ms,
            tenant: record.tenant.unwrap_or_default(),
            actor: record.actor,
            action: record.action,
            target: record.target,
            outcome: record.outcome,
            detail: record.detail,
            prev_sha256: record.prev,
        }
    }
}

impl From<CredentialInfo> for proto::CredentialInfo {
    fn from(info: CredentialInfo) -> Self {
        proto::CredentialInfo {
            tenant: info.tenant,
            name: info.name,
            kind: info.kind,
            created_unix_ms: info.created_ms,
            updated_unix_ms: info.updated_ms,
            expires_unix_ms: info.expires_ms.unwrap_or(0),
            last_used_unix_ms: info.last_used_ms.unwrap_or(0),
            key_version: info.key_version,
        }
    }
}

impl From<RegistryError> for Status {
    fn from(err: RegistryError) -> Self {
        match err {
            RegistryError::Unknown(_) | RegistryError::UnknownVersion { .. } => {
                Status::not_found(err.to_string())
            }
            RegistryError::BadChecksum(_) | RegistryError::Checksum(_) => {
                Status::failed_precondition(err.to_string())
            }
            RegistryError::PluginDir { .. } | RegistryError::Store(_) => {
                Status::internal(err.to_string())
            }
        }
    }
}

impl From<TenantError> for Status {
    fn from(err: TenantError) -> Self {
        match err {
            TenantError::Exists(_) => Status::already_exists(err.to_string()),
            TenantError::Unknown(_) | TenantError::UnknownToken(_) => {
                Status::not_found(err.to_string())
            }
            TenantError::BadName(_) | TenantError::Reserved(_) | TenantError::AllTenantsScope => {
                Status::invalid_argument(err.to_string())
            }
            TenantError::Store(_) => Status::internal(err.to_string()),
        }
    }
}

impl From<CredentialError> for Status {
    fn from(err: CredentialError) -> Self {
        match &err {
            CredentialError::Unknown { .. } => Status::not_found(err.to_string()),
            CredentialError::UnknownKind { .. }
            | CredentialError::BadName(_)
            | CredentialError::Secret(_) => Status::invalid_argument(err.to_string()),
            CredentialError::NoMasterKey
            | CredentialError::MasterKey(_)
            | CredentialError::WrongMasterKey { .. }
            | CredentialError::WrongPassphrase => Status::failed_precondition(err.to_string()),
            CredentialError::Undecryptable { .. }
            | CredentialError::TenantKey(_)
            | CredentialError::Encrypt(_)
            | CredentialError::Store(_) => Status::internal(err.to_string()),
        }
    }
}

impl From<IntegrationError> for Status {
    fn from(err: IntegrationError) -> Self {
        match &err {
            IntegrationError::Exists { .. } => Status::already_exists(err.to_string()),
            IntegrationError::Unknown { .. } | IntegrationError::UnknownVersion { .. } => {
                Status::not_found(err.to_string())
            }
            IntegrationError::Credential(_) | IntegrationError::Store(_) => {
                Status::internal(err.to_string())
            }
            _ => Status::invalid_argument(err.to_string()),
        }
    }
}

impl From<FlagError> for Status {
    fn from(err: FlagError) -> Self {
        match err {
            FlagError::Tenant(inner) => Status::internal(inner.to_string()),
            other => Status::invalid_argument(other.to_string()),
        }
    }
}

impl From<DeadLetterError> for Status {
    fn from(err: DeadLetterError) -> Self {
        match err {
            DeadLetterError::Unknown { .. } => Status::not_found(err.to_string()),
            other => Status::internal(other.to_string()),
        }
    }
}

impl From<&Progress> for proto::EnrichProgress {
    fn from(progress: &Progress) -> Self {
        proto::EnrichProgress {
            total: progress.total,
            scanned: progress.scanned,
            enriched: progress.enriched,
            unchanged: progress.unchanged,
            done: progress.done,
        }
    }
}

/// A dead letter for the wire, its payload cut to `payload_chars` characters if given.
pub(super) fn dead_letter(letter: DeadLetter, payload_chars: Option<usize>) -> proto::DeadLetter {
    let payload = match payload_chars {
        Some(max) if letter.payload.chars().count() > max => {
            let mut cut: String = letter.payload.chars().take(max).collect();
            cut.push('…');
            cut
        }
        _ => letter.payload,
    };
    proto::DeadLetter {
        id: letter.id,
        tenant: letter.tenant,
        integration: letter.integration,
        stage: letter.stage,
        reason: letter.reason,
        time_unix_ms: letter.time_ms,
        payload,
    }
}
