//! Entry points for the fuzz targets in `fuzz/` and for the property tests that feed the
//! same parsers on stable. Each takes bytes from outside and asserts what must hold
//! whatever they are: no panic, a refusal that says where it is about, and nothing
//! written outside its place. Not an API.

use std::path::Path;

use prost::Message;

use crate::admin::proto;

/// The configuration file: parsed, or refused naming the file.
pub fn config_file(bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    let path = Path::new("/etc/integrationd/integrationd.toml");
    if let Err(err) = crate::config::Config::parse(text, path) {
        let message = err.to_string();
        assert!(message.contains("integrationd.toml"), "{message}");
    }
}

/// A body of any ingress route (webhooks, platform events, CloudEvents, OTLP).
pub fn ingress_body(bytes: &[u8]) {
    crate::ingress::untrusted_bodies::check_body(bytes);
}

/// A backup file, as it is and with its SHA-256 trailer made to match (so the bytes get
/// past the checksum to the frame reader): restored or refused, a refused restore
/// leaves nothing, and nothing is ever written beside the state directory.
pub fn backup_file(bytes: &[u8]) {
    restore_untrusted(bytes);
    if bytes.len() > 32 {
        use sha2::Digest;
        let body = &bytes[..bytes.len() - 32];
        let mut fixed = body.to_vec();
        fixed.extend_from_slice(&sha2::Sha256::digest(body));
        restore_untrusted(&fixed);
    }
}

fn restore_untrusted(bytes: &[u8]) {
    let Ok(dir) = tempfile::tempdir() else {
        return;
    };
    let file = dir.path().join("in.backup");
    if std::fs::write(&file, bytes).is_err() {
        return;
    }
    let state = dir.path().join("state");
    if crate::backup::restore(&file, &state).is_err() {
        assert!(
            !state.exists(),
            "a refused restore left {}",
            state.display()
        );
    }
    let mut beside: Vec<String> = std::fs::read_dir(dir.path())
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    beside.sort();
    beside.retain(|name| name != "in.backup" && name != "state");
    assert!(
        beside.is_empty(),
        "a restore wrote beside its directory: {beside:?}"
    );
}

/// Admin requests as the admin socket decodes them, and the parts of them the daemon
/// parses before anything else: names, integration configurations, secrets.
pub fn admin_request(bytes: &[u8]) {
    if let Ok(request) = proto::AddIntegrationRequest::decode(bytes) {
        for name in [&request.tenant, &request.name, &request.plugin] {
            if let Err(err) = crate::names::Name::new(name.as_str()) {
                assert!(err.to_string().contains("is not a valid name"));
            }
        }
        let _ = crate::admin::integration_calls::parse_config(&request.config_json);
    }
    if let Ok(request) = proto::SetCredentialRequest::decode(bytes) {
        let _ = crate::credentials::Kind::parse(&request.kind);
        crate::credentials::check_untrusted_secret(&request.secret);
    }
    crate::credentials::check_untrusted_secret(bytes);
    let _ = proto::DeadLetterQuery::decode(bytes);
    let _ = proto::SetFlagRequest::decode(bytes);
    let _ = proto::VerifyAuditRequest::decode(bytes)
        .map(|request| crate::store::AuditAnchor::parse(&request.anchor));
}
