//! Compiles the admin API with `protox` (pure Rust): no system `protoc` needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/betalogs/admin/v1/admin.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        .type_attribute(".betalogs.admin.v1", "#[derive(serde::Serialize)]")
        // Messages that carry secrets get a redacting Debug (admin/redact.rs) instead.
        .skip_debug([
            ".betalogs.admin.v1.SetCredentialRequest",
            ".betalogs.admin.v1.CreateTokenResponse",
        ])
        .compile_fds(descriptors)?;
    Ok(())
}
