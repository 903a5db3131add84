use std::os::unix::fs::PermissionsExt;

use super::*;

struct Fixture {
    dir: tempfile::TempDir,
    credentials: Credentials,
}

fn key_file(dir: &std::path::Path, name: &str) -> MasterKeySource {
    let path = dir.join(name);
    if !path.exists() {
        generate_master_key_file(&path).expect("key file");
    }
    MasterKeySource::File(path)
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("store");
    let credentials =
        Credentials::open(store, &key_file(dir.path(), "master.key"), false).expect("open");
    Fixture { dir, credentials }
}

fn secret(kind: &str, raw: &str) -> NewSecret {
    NewSecret {
        kind: kind.to_owned(),
        raw: SecretBytes::new(raw.as_bytes().to_vec()),
        expires_ms: None,
        rotate: false,
    }
}

const AWS: &str = r#"{"access_key_id":"AKIAEXAMPLEKEY","secret_access_key":"wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY"}"#;

#[test]
fn stores_lists_and_reads_back_with_an_audit_record() {
    let f = fixture();
    let info = f
        .credentials
        .set("acme", "prod-aws", &secret("aws", AWS), "uid:0")
        .expect("set");
    assert_eq!(info.kind, "aws");
    assert_eq!(f.credentials.list("acme").expect("list"), vec![info]);
    assert!(f.credentials.list("globex").expect("list").is_empty());
    let read = f
        .credentials
        .read(
            "acme",
            "prod-aws",
            "plugin:cloudwatch/acme/main",
            "Configure",
        )
        .expect("read");
    assert!(
        read.secret
            .expose_secret()
            .contains("wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY")
    );
    assert!(!format!("{read:?}").contains("wJalr"));
    let records = f
        .credentials
        .store
        .audit_records(10, |r| r.action == "credential.read")
        .expect("audit");
    assert_eq!(records[0].actor, "plugin:cloudwatch/acme/main");
    assert_eq!(records[0].detail, "Configure");
    assert!(
        f.credentials.list("acme").expect("list")[0]
            .last_used_ms
            .is_some()
    );
}

#[test]
fn a_ciphertext_moved_to_another_tenant_or_name_does_not_decrypt() {
    let f = fixture();
    f.credentials
        .set("acme", "a", &secret("api-key", "acme-secret"), "uid:0")
        .expect("set");
    f.credentials
        .set("globex", "a", &secret("api-key", "globex-secret"), "uid:0")
        .expect("set");
    f.credentials
        .set("acme", "b", &secret("api-key", "other"), "uid:0")
        .expect("set");
    let stolen = f
        .credentials
        .store
        .get(Table::Credentials, &credential_key("acme", "a"))
        .expect("get")
        .expect("record");
    let mut record: CredentialRecord = serde_json::from_slice(&stolen).expect("json");
    for (tenant, name) in [("globex", "a"), ("acme", "b")] {
        record.info.tenant = tenant.to_owned();
        record.info.name = name.to_owned();
        let moved = Batch::new().put(
            Table::Credentials,
            credential_key(tenant, name),
            serde_json::to_vec(&record).expect("json"),
        );
        f.credentials
            .store
            .commit(
                &moved,
                &AuditDraft::ok(None, "attacker", "test.move", "", ""),
            )
            .expect("move");
        let err = f
            .credentials
            .read(tenant, name, "uid:0", "test")
            .expect_err("moved")
            .to_string();
        assert!(err.contains("cannot be decrypted"), "{err}");
        assert!(!err.contains("acme-secret"));
    }
    let failed = f
        .credentials
        .store
        .audit_records(10, |r| {
            r.action == "credential.read" && r.outcome == "failed"
        })
        .expect("audit");
    assert_eq!(failed.len(), 2, "failed accesses are audited");
}

#[test]
fn corrupt_ciphertext_is_an_error_not_a_crash() {
    let f = fixture();
    f.credentials
        .set("acme", "a", &secret("api-key", "x"), "uid:0")
        .expect("set");
    let raw = f
        .credentials
        .store
        .get(Table::Credentials, &credential_key("acme", "a"))
        .expect("get")
        .expect("record");
    let mut record: CredentialRecord = serde_json::from_slice(&raw).expect("json");
    for garbage in [
        "!!!not base64!!!".to_owned(),
        BASE64.encode(b"age-encryption.org/v1\ngarbage"),
    ] {
        record.ciphertext = garbage;
        let batch = Batch::new().put(
            Table::Credentials,
            credential_key("acme", "a"),
            serde_json::to_vec(&record).expect("json"),
        );
        f.credentials
            .store
            .commit(
                &batch,
                &AuditDraft::ok(None, "test", "test.corrupt", "", ""),
            )
            .expect("corrupt");
        let err = f
            .credentials
            .read("acme", "a", "uid:0", "test")
            .expect_err("corrupt");
        assert!(
            matches!(err, CredentialError::Undecryptable { .. }),
            "{err}"
        );
    }
}

#[test]
fn a_wrong_or_missing_or_loose_master_key_is_refused_and_touches_nothing() {
    let f = fixture();
    f.credentials
        .set("acme", "a", &secret("api-key", "x"), "uid:0")
        .expect("set");
    let store = f.credentials.store.clone();
    drop(f.credentials);
    let before = store.audit_verify(None).expect("verify");
    let other = key_file(f.dir.path(), "other.key");
    let err = Credentials::open(store.clone(), &other, false).expect_err("wrong key");
    assert!(
        matches!(err, CredentialError::WrongMasterKey { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("refusing to start"));
    let missing = MasterKeySource::File(f.dir.path().join("nope.key"));
    assert!(
        Credentials::open(store.clone(), &missing, false)
            .expect_err("missing")
            .to_string()
            .contains("does not exist")
    );
    let loose = f.dir.path().join("master.key");
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    assert!(
        Credentials::open(store.clone(), &MasterKeySource::File(loose.clone()), false)
            .expect_err("loose")
            .to_string()
            .contains("chmod 600")
    );
    assert_eq!(
        store.audit_verify(None).expect("verify"),
        before,
        "nothing was written"
    );
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let reopened =
        Credentials::open(store, &MasterKeySource::File(loose), false).expect("right key");
    assert!(reopened.read("acme", "a", "uid:0", "test").is_ok());
}

#[test]
fn a_passphrase_unlocks_and_a_wrong_one_does_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("store");
    let pass = dir.path().join("pass");
    std::fs::write(&pass, "correct horse\n").expect("write");
    std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let source = MasterKeySource::PassphraseFile(pass.clone());
    let credentials = Credentials::open(store.clone(), &source, false).expect("first open");
    credentials
        .set(
            "acme",
            "a",
            &secret("basic", r#"{"username":"u","password":"p"}"#),
            "uid:0",
        )
        .expect("set");
    drop(credentials);
    std::fs::write(&pass, "wrong horse\n").expect("write");
    assert!(matches!(
        Credentials::open(store.clone(), &source, false),
        Err(CredentialError::WrongPassphrase)
    ));
    std::fs::write(&pass, "correct horse\n").expect("write");
    let credentials = Credentials::open(store, &source, false).expect("reopen");
    assert!(credentials.read("acme", "a", "uid:0", "test").is_ok());
}

#[test]
fn tenant_and_master_key_rotations_keep_every_credential_readable() {
    let f = fixture();
    f.credentials
        .set("acme", "a", &secret("api-key", "one"), "uid:0")
        .expect("set");
    f.credentials
        .set("acme", "b", &secret("aws", AWS), "uid:0")
        .expect("set");
    f.credentials
        .set("globex", "c", &secret("api-key", "three"), "uid:0")
        .expect("set");
    assert_eq!(
        f.credentials
            .rotate_tenant_key("acme", "uid:0")
            .expect("rotate"),
        2
    );
    assert!(
        f.credentials
            .list("acme")
            .expect("list")
            .iter()
            .all(|c| c.key_version == 2)
    );
    assert_eq!(
        f.credentials
            .read("acme", "a", "uid:0", "t")
            .expect("read")
            .secret
            .expose_secret(),
        "\"one\""
    );

    let new_master = key_file(f.dir.path(), "new.key");
    f.credentials
        .rotate_master(&new_master, "uid:0")
        .expect("rotate master");
    assert!(f.credentials.read("globex", "c", "uid:0", "t").is_ok());
    let store = f.credentials.store.clone();
    drop(f.credentials);
    let old = MasterKeySource::File(f.dir.path().join("master.key"));
    assert!(matches!(
        Credentials::open(store.clone(), &old, false),
        Err(CredentialError::WrongMasterKey { .. })
    ));
    let reopened = Credentials::open(store.clone(), &new_master, false).expect("new master");
    assert!(
        reopened
            .read("acme", "b", "uid:0", "t")
            .expect("read")
            .secret
            .expose_secret()
            .contains("AKIAEXAMPLEKEY")
    );
    assert_eq!(
        store.audit_verify(None).expect("verify").map(|n| n > 0),
        Ok(true)
    );
}

#[test]
fn a_rotated_webhook_secret_keeps_its_previous_value() {
    let f = fixture();
    f.credentials
        .set(
            "acme",
            "hook",
            &secret("webhook-secret", "old-secret"),
            "uid:0",
        )
        .expect("set");
    let mut rotation = secret("webhook-secret", "new-secret");
    rotation.rotate = true;
    f.credentials
        .set("acme", "hook", &rotation, "uid:0")
        .expect("rotate");
    let value: serde_json::Value = serde_json::from_str(
        f.credentials
            .read("acme", "hook", "uid:0", "t")
            .expect("read")
            .secret
            .expose_secret(),
    )
    .expect("json");
    assert_eq!(
        value,
        serde_json::json!({"current": "new-secret", "previous": "old-secret"})
    );
    let mut missing = secret("api-key", "x");
    missing.rotate = true;
    assert!(matches!(
        f.credentials.set("acme", "nope", &missing, "uid:0"),
        Err(CredentialError::Unknown { .. })
    ));
}

#[test]
fn a_plugin_declared_kind_is_checked_stored_and_rotated() {
    let f = fixture();
    let kinds = Arc::new(PluginKinds::default());
    let schema = serde_json::json!({
        "type": "object",
        "required": ["account", "token"],
        "additionalProperties": false,
        "properties": {
            "account": { "type": "string" },
            "token": { "type": "string", "minLength": 12 },
        },
    });
    kinds.replace(std::collections::BTreeMap::from([(
        "reports/api-token".to_owned(),
        SecretSchema::compile(&schema).expect("schema"),
    )]));
    let credentials = f.credentials.with_plugin_kinds(kinds.clone());
    let kind = "reports/api-token";
    let info = credentials
        .set(
            "acme",
            "reports",
            &secret(kind, r#"{"account":"acme","token":"first-token-123"}"#),
            "uid:0",
        )
        .expect("set");
    assert_eq!(info.kind, kind);
    let mut rotation = secret(kind, r#"{"account":"acme","token":"second-token-456"}"#);
    rotation.rotate = true;
    credentials
        .set("acme", "reports", &rotation, "uid:0")
        .expect("rotate");
    let read = credentials
        .read("acme", "reports", "uid:0", "t")
        .expect("read");
    assert!(read.secret.expose_secret().contains("second-token-456"));
    assert!(!read.secret.expose_secret().contains("first-token-123"));

    let err = credentials
        .set(
            "acme",
            "reports",
            &secret(kind, r#"{"account":"acme","token":"short-tok"}"#),
            "uid:0",
        )
        .expect_err("too short")
        .to_string();
    assert!(
        err.contains("`/token`") && err.contains("minLength"),
        "{err}"
    );
    assert!(!err.contains("short-tok"), "leaked: {err}");
    // The refused secret left the stored one alone.
    let read = credentials
        .read("acme", "reports", "uid:0", "t")
        .expect("read");
    assert!(read.secret.expose_secret().contains("second-token-456"));

    // Unknown kinds name the declared ones too; a kind no longer declared is refused.
    let err = credentials
        .set("acme", "x", &secret("reports/other", "{}"), "uid:0")
        .expect_err("undeclared")
        .to_string();
    assert!(
        err.contains("`reports/other` is not a credential kind")
            && err.contains("basic, reports/api-token"),
        "{err}"
    );
    kinds.replace(std::collections::BTreeMap::new());
    assert!(matches!(
        credentials.set("acme", "reports", &rotation, "uid:0"),
        Err(CredentialError::UnknownKind { .. })
    ));
}

#[test]
fn deleting_a_tenant_shreds_its_key_and_ciphertexts_only() {
    let f = fixture();
    f.credentials
        .set("acme", "a", &secret("api-key", "x"), "uid:0")
        .expect("set");
    f.credentials
        .set("globex", "a", &secret("api-key", "y"), "uid:0")
        .expect("set");
    let batch = f.credentials.delete_tenant_batch("acme").expect("batch");
    f.credentials
        .store
        .commit(
            &batch,
            &AuditDraft::ok(Some("acme"), "uid:0", "tenant.delete", "", ""),
        )
        .expect("commit");
    f.credentials.forget_tenant("acme");
    assert!(
        f.credentials
            .store
            .get(Table::TenantKeys, &tenant_key_key("acme"))
            .expect("get")
            .is_none()
    );
    assert!(matches!(
        f.credentials.read("acme", "a", "uid:0", "t"),
        Err(CredentialError::Unknown { .. })
    ));
    assert!(f.credentials.read("globex", "a", "uid:0", "t").is_ok());
}

#[test]
fn no_plaintext_reaches_the_database_files() {
    let f = fixture();
    f.credentials
        .set("acme", "a", &secret("aws", AWS), "uid:0")
        .expect("set");
    f.credentials.read("acme", "a", "uid:0", "t").expect("read");
    f.credentials
        .rotate_tenant_key("acme", "uid:0")
        .expect("rotate");
    let needle = b"wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY";
    let mut stack = vec![f.dir.path().join("db")];
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            stack.extend(
                std::fs::read_dir(&path)
                    .expect("dir")
                    .flatten()
                    .map(|e| e.path()),
            );
        } else {
            let bytes = std::fs::read(&path).expect("read");
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "{} holds plaintext",
                path.display()
            );
            assert!(
                !bytes.windows(15).any(|w| w == b"AGE-SECRET-KEY-"),
                "{} holds a bare age key",
                path.display()
            );
        }
    }
}
