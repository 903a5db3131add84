//! `integrationctl plugin new|package|conformance`: the plugin author's commands. They
//! need no daemon.
//!
//! `new` renders `templates/plugin` (embedded in this binary) into a crate of its own
//! that depends on this checkout's plugin-kit by path; `package` builds it in release
//! and lays out the package directory `integrationd` installs from (`plugin.toml` beside
//! the executable), printing the executable's SHA-256 for `plugins trust`.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use sha2::Digest;

/// Runs a plugin author's command, printing what it made.
pub async fn run(
    command: crate::args::PluginCommand,
    output: crate::render::Output,
) -> anyhow::Result<()> {
    use crate::args::PluginCommand;
    match command {
        PluginCommand::New {
            name,
            dir,
            plugin_kit,
        } => {
            let dir = new(&name, dir, plugin_kit)?;
            println!(
                "created {}: `cargo test` there, then `integrationctl plugin package {}`",
                dir.display(),
                dir.display()
            );
        }
        PluginCommand::Conformance {
            dir,
            config,
            credentials,
            webhook_sample,
            grace,
        } => {
            let webhook_sample = webhook_sample
                .map(|path| {
                    std::fs::read(&path).with_context(|| {
                        format!("--webhook-sample: cannot read {}", path.display())
                    })
                })
                .transpose()?;
            conformance(&dir, config, &credentials, webhook_sample, grace, output).await?;
        }
        PluginCommand::Package { dir, out, debug } => {
            let packaged = package(&dir, out, debug)?;
            if matches!(output, crate::render::Output::Json) {
                println!("{}", serde_json::to_string_pretty(&packaged)?);
            } else {
                println!(
                    "package {} (executable sha256 {}); install it into plugin_dir and run                      `integrationctl plugins trust <name> --sha256 {}`",
                    packaged.package.display(),
                    packaged.sha256,
                    packaged.sha256
                );
            }
        }
    }
    Ok(())
}

/// Runs the conformance kit and prints its report; an error when a check failed.
async fn conformance(
    dir: &Path,
    config: Option<PathBuf>,
    credentials: &[String],
    webhook_sample: Option<Vec<u8>>,
    grace: std::time::Duration,
    output: crate::render::Output,
) -> anyhow::Result<()> {
    use plugin_kit::testing::conformance::{Options, Package, run};
    let package = Package::load(dir)?;
    let config = match config {
        Some(path) => {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", path.display()))?
        }
        None => serde_json::json!({}),
    };
    let credentials = credentials
        .iter()
        .map(|spec| credential(spec))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let options = Options {
        config,
        credentials,
        grace,
        webhook_sample,
        ..Options::default()
    };
    let report = run(&package, &options).await;
    if matches!(output, crate::render::Output::Json) {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{report}");
    }
    let failed = report.failures().count();
    if failed > 0 {
        bail!(
            "{failed} of {} conformance checks failed",
            report.findings.len()
        );
    }
    Ok(())
}

/// `ROLE:KIND:FILE` as the credential Configure carries (the secret read from FILE).
fn credential(spec: &str) -> anyhow::Result<plugin_kit::v1::Credential> {
    let mut parts = spec.splitn(3, ':');
    let (Some(role), Some(kind), Some(file)) = (parts.next(), parts.next(), parts.next()) else {
        bail!("--credential `{spec}`: expected ROLE:KIND:FILE");
    };
    let secret =
        std::fs::read(file).with_context(|| format!("--credential {role}: cannot read {file}"))?;
    Ok(plugin_kit::v1::Credential {
        name: role.to_owned(),
        kind: kind.to_owned(),
        secret,
    })
}

/// The template's files, as this binary was built with them.
const LIB: &str = include_str!("../../../../../templates/plugin/src/lib.rs");
const MAIN: &str = include_str!("../../../../../templates/plugin/src/main.rs");
const TESTS: &str = include_str!("../../../../../templates/plugin/tests/plugin.rs");
const MANIFEST: &str = include_str!("../../../../../templates/plugin/plugin.toml");

/// Where plugin-kit is, unless `--plugin-kit` says: this checkout's.
fn default_kit() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugin-kit")
}

/// The template's text with the example's names replaced by `name`'s.
fn rename(text: &str, name: &str) -> String {
    let snake = name.replace('-', "_");
    text.replace("integration_example", &format!("integration_{snake}"))
        .replace("integration-example", &format!("integration-{name}"))
        .replace(
            "pub const NAME: &str = \"example\";",
            &format!("pub const NAME: &str = \"{name}\";"),
        )
        .replace("name = \"example\"", &format!("name = \"{name}\""))
        .replace("<plugin_dir>/example/", &format!("<plugin_dir>/{name}/"))
        .replace("example/reports-token", &format!("{name}/reports-token"))
}

fn cargo_toml(name: &str, kit: &Path) -> String {
    let kit = kit.display();
    format!(
        r#"[package]
name = "integration-{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
name = "integration_{snake}"

[dependencies]
plugin-kit = {{ path = "{kit}" }}
serde = {{ version = "1", features = ["derive"] }}
serde_json = "1"
schemars = "1"
tokio-stream = "0.1"

[dev-dependencies]
tokio = {{ version = "1", features = ["rt-multi-thread", "macros", "net", "io-util"] }}
tonic = "0.14"

# A crate of its own, even when created inside another workspace.
[workspace]
"#,
        snake = name.replace('-', "_"),
    )
}

fn readme(name: &str) -> String {
    format!(
        "# integration-{name}\n\n\
         An integrationd plugin, generated by `integrationctl plugin new {name}` from the \
         template: job status reports by signed webhook (`x-signature-256: sha256=<hex>`) \
         or by polling `reports_url`. Change `Settings` and `map_report` in `src/lib.rs` for \
         your service.\n\n\
         ```sh\n\
         cargo test                                   # unit tests and the binary under plugin-kit's harness\n\
         integrationctl plugin package .              # package/{name}/: plugin.toml + executable, and its SHA-256\n\
         ```\n\n\
         Install `package/{name}` into the daemon's `plugin_dir`, trust it \
         (`integrationctl plugins trust {name} --sha256 <hex>`), store a `webhook-secret` \
         credential, and add an integration:\n\n\
         ```toml\n\
         service = \"billing\"\n\
         credentials = {{ webhook_secret = \"<credential name>\" }}\n\
         ```\n"
    )
}

/// `plugin new NAME [--dir DIR] [--plugin-kit PATH]`.
pub fn new(name: &str, dir: Option<PathBuf>, kit: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if !plugin_protocol::is_name(name) {
        bail!(
            "`{name}` is not a valid plugin name: {}",
            plugin_protocol::NAME_RULE
        );
    }
    let dir = dir.unwrap_or_else(|| PathBuf::from(format!("integration-{name}")));
    if dir.exists()
        && std::fs::read_dir(&dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        bail!(
            "{} exists and is not empty; nothing was written",
            dir.display()
        );
    }
    let kit = kit.unwrap_or_else(default_kit);
    let kit = kit.canonicalize().with_context(|| {
        format!(
            "plugin-kit is not at {} (give --plugin-kit PATH)",
            kit.display()
        )
    })?;
    let files = [
        ("Cargo.toml", cargo_toml(name, &kit)),
        ("plugin.toml", rename(MANIFEST, name)),
        ("README.md", readme(name)),
        ("src/lib.rs", rename(LIB, name)),
        ("src/main.rs", rename(MAIN, name)),
        ("tests/plugin.rs", rename(TESTS, name)),
        (".gitignore", "/target\n/package\n".to_owned()),
    ];
    // The checkout's lock file, so the new crate builds with the versions plugin-kit is
    // tested with (cargo drops what it does not use).
    if let Some(lock) = kit.parent().map(|root| root.join("Cargo.lock"))
        && lock.is_file()
    {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        std::fs::copy(&lock, dir.join("Cargo.lock"))
            .with_context(|| format!("cannot copy {}", lock.display()))?;
    }
    for (path, text) in files {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(dir)
}

/// What `package` made.
#[derive(Debug, serde::Serialize)]
pub struct Packaged {
    pub package: PathBuf,
    pub executable: PathBuf,
    pub sha256: String,
}

/// `plugin package DIR [--out OUT] [--debug]`: `cargo build --release` (or a debug
/// build) in DIR, then OUT (default `DIR/package/NAME`) with the manifest and the
/// executable.
pub fn package(dir: &Path, out: Option<PathBuf>, debug: bool) -> anyhow::Result<Packaged> {
    let manifest_path = dir.join("plugin.toml");
    let manifest_text = std::fs::read_to_string(&manifest_path)
        .with_context(|| format!("cannot read {}", manifest_path.display()))?;
    let manifest = plugin_kit::manifest::Manifest::parse(&manifest_text).map_err(|why| {
        anyhow::anyhow!(
            "{} is not a plugin manifest: {why}",
            manifest_path.display()
        )
    })?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let profile = if debug { "debug" } else { "release" };
    let mut build = std::process::Command::new(&cargo);
    build.arg("build");
    if !debug {
        build.arg("--release");
    }
    let built = build
        .arg("--manifest-path")
        .arg(dir.join("Cargo.toml"))
        .status()
        .context("cannot run cargo")?;
    if !built.success() {
        bail!("cargo build ({profile}) failed in {}", dir.display());
    }
    let metadata = std::process::Command::new(&cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--manifest-path",
        ])
        .arg(dir.join("Cargo.toml"))
        .output()
        .context("cannot run cargo metadata")?;
    let metadata: serde_json::Value =
        serde_json::from_slice(&metadata.stdout).context("cargo metadata is not JSON")?;
    let target = metadata["target_directory"]
        .as_str()
        .context("cargo metadata names no target directory")?;
    let file = manifest
        .executable
        .file_name()
        .context("the manifest's executable names no file")?;
    let built = Path::new(target).join(profile).join(file);
    let out = out.unwrap_or_else(|| dir.join("package").join(&manifest.name));
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let executable = out.join(file);
    std::fs::copy(&built, &executable)
        .with_context(|| format!("cannot copy {} (was it built?)", built.display()))?;
    std::fs::write(out.join("plugin.toml"), &manifest_text)
        .with_context(|| format!("cannot write {}", out.join("plugin.toml").display()))?;
    let bytes = std::fs::read(&executable)
        .with_context(|| format!("cannot read {}", executable.display()))?;
    Ok(Packaged {
        package: out,
        executable,
        sha256: hex::encode(sha2::Sha256::digest(&bytes)),
    })
}
