//! The plugin tested as integrationd would run it, through plugin-kit's harness.

use plugin_kit::testing::{HarnessError, PluginUnderTest};

const BINARY: &str = env!("CARGO_BIN_EXE_integration-example");

#[tokio::test]
async fn describes_itself_like_its_manifest() {
    let mut plugin = PluginUnderTest::start(BINARY).await.expect("start");
    // The host's own check: name, version, protocol, capabilities.
    assert_eq!(
        plugin.check_manifest(include_str!("../plugin.toml")).await,
        Ok(())
    );
    assert!(plugin.shutdown().await.expect("shutdown").success());
}

#[tokio::test]
async fn collect_resumes_after_the_cursor() {
    let mut plugin = PluginUnderTest::start(BINARY).await.expect("start");
    let first = plugin.collect("").await.expect("collect");
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].cursor, "1");
    let next = plugin.collect(&first[0].cursor).await.expect("collect");
    assert!(next[0].events_json[0].contains("example-1"));
    match plugin.collect("garbage").await {
        Err(HarnessError::Call(status)) => assert!(status.message().contains("`garbage`")),
        other => panic!("expected an invalid cursor error, got {other:?}"),
    }
}
