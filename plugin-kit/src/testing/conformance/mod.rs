//! The protocol contract as checks that any plugin executable can be run against,
//! whatever language it is written in. `integrationctl plugin conformance PACKAGE_DIR`
//! prints this module's [`Report`]; a plugin's own tests can call [`run`].
//!
//! Each [`Check`] is one rule of the contract (README, "Writing a plugin in any
//! language"). The kit starts the package's executable as integrationd would, several
//! times (a fresh process for each rule that ends it), and reports every check as
//! passed, failed with the reason, or skipped with the reason (a capability the manifest
//! does not declare, or a check that could not run because an earlier one failed).
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use plugin_kit::testing::conformance::{Options, Package, run};
//! let package = Package::load("target/package/example")?;
//! let report = run(&package, &Options::default()).await;
//! assert!(report.passed(), "{report}");
//! # Ok(()) }
//! ```

mod calls;
mod process;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use plugin_protocol::v1;
use serde::Serialize;

use crate::manifest::Manifest;

/// One rule of the protocol contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Check {
    /// Run by hand (no magic cookie), it explains itself on stderr and exits non-zero.
    RefusesWithoutCookie,
    /// It answers with the highest protocol both sides speak, and exits when there is none.
    NegotiatesVersion,
    /// Its first stdout line is `CORE|APP|unix|PATH|grpc` with the assigned socket.
    Handshake,
    /// Its socket is closed to other users (no permission bits for others).
    SocketMode,
    /// Every call, health included, without the right token is UNAUTHENTICATED.
    TokenRequired,
    /// A connection from a process other than the host is refused.
    HostProcessOnly,
    /// `Describe` agrees with `plugin.toml`, and its config schema compiles.
    DescribeMatchesManifest,
    /// The configuration given to the kit is accepted.
    Configure,
    /// A configuration that does not fit the schema is INVALID_ARGUMENT naming the field.
    InvalidConfiguration,
    /// `Check`'s answer is consistent: `ok` is the results', a failure has a message and a
    /// known error class.
    CheckAnswer,
    /// `Collect` yields events valid against the canonical schema, bound to the
    /// configured tenant and integration.
    CollectCanonical,
    /// Collecting again from a batch's cursor repeats none of that batch's events.
    CollectResumes,
    /// A webhook with a bad or missing signature is answered 401 or 403, with no events.
    WebhookBadSignature,
    /// A sample delivery signed as the manifest's `[webhook]` table says is accepted (2xx)
    /// with at least one event, each valid against the canonical schema.
    WebhookSigned,
    /// After `Shutdown` the process exits within the grace period.
    Shutdown,
    /// After SIGTERM the process exits within the grace period.
    Sigterm,
    /// When its host dies the process exits within the grace period.
    HostDeath,
    /// Nothing is written to stdout after the handshake line.
    QuietStdout,
}

impl Check {
    /// Every check, in the order of the report.
    pub const ALL: [Check; 18] = [
        Check::RefusesWithoutCookie,
        Check::NegotiatesVersion,
        Check::Handshake,
        Check::SocketMode,
        Check::TokenRequired,
        Check::HostProcessOnly,
        Check::DescribeMatchesManifest,
        Check::Configure,
        Check::InvalidConfiguration,
        Check::CheckAnswer,
        Check::CollectCanonical,
        Check::CollectResumes,
        Check::WebhookBadSignature,
        Check::WebhookSigned,
        Check::Shutdown,
        Check::Sigterm,
        Check::HostDeath,
        Check::QuietStdout,
    ];

    /// The check's name in reports (`token-required`).
    pub fn name(self) -> &'static str {
        match self {
            Check::RefusesWithoutCookie => "refuses-without-cookie",
            Check::NegotiatesVersion => "negotiates-version",
            Check::Handshake => "handshake",
            Check::SocketMode => "socket-mode",
            Check::TokenRequired => "token-required",
            Check::HostProcessOnly => "host-process-only",
            Check::DescribeMatchesManifest => "describe-matches-manifest",
            Check::Configure => "configure",
            Check::InvalidConfiguration => "invalid-configuration",
            Check::CheckAnswer => "check-answer",
            Check::CollectCanonical => "collect-canonical",
            Check::CollectResumes => "collect-resumes",
            Check::WebhookBadSignature => "webhook-bad-signature",
            Check::WebhookSigned => "webhook-signed",
            Check::Shutdown => "shutdown",
            Check::Sigterm => "sigterm",
            Check::HostDeath => "host-death",
            Check::QuietStdout => "quiet-stdout",
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

/// How a check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Pass,
    Fail,
    /// Not applicable (a capability the manifest does not declare) or not run (an
    /// earlier check it needs failed); the reason says which.
    Skip,
}

/// One check's outcome and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub check: Check,
    pub outcome: Outcome,
    pub reason: String,
}

/// Every check's finding, in the order of [`Check::ALL`].
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The package's name (from its manifest).
    pub plugin: String,
    pub executable: PathBuf,
    pub findings: Vec<Finding>,
}

impl Report {
    /// No check failed.
    pub fn passed(&self) -> bool {
        self.failures().next().is_none()
    }

    /// The checks that failed.
    pub fn failures(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.outcome == Outcome::Fail)
    }

    /// The finding of `check`.
    pub fn finding(&self, check: Check) -> Option<&Finding> {
        self.findings.iter().find(|f| f.check == check)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "conformance of `{}` ({}):",
            self.plugin,
            self.executable.display()
        )?;
        for finding in &self.findings {
            let mark = match finding.outcome {
                Outcome::Pass => "PASS",
                Outcome::Fail => "FAIL",
                Outcome::Skip => "SKIP",
            };
            writeln!(f, "{mark}  {:<26} {}", finding.check, finding.reason)?;
        }
        let failed = self.failures().count();
        if failed == 0 {
            write!(f, "all checks passed")
        } else {
            write!(f, "{failed} of {} checks failed", self.findings.len())
        }
    }
}

/// A package directory: `plugin.toml` and the executable it names.
#[derive(Debug, Clone)]
pub struct Package {
    pub dir: PathBuf,
    pub manifest: Manifest,
    /// The manifest's text, as `check_manifest` takes it.
    pub manifest_text: String,
}

/// Why a package directory cannot be checked at all.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("cannot read {path}: {cause}")]
    Read { path: String, cause: std::io::Error },
    #[error("{path}: {reason}")]
    Manifest { path: String, reason: String },
    #[error("{path}: the executable the manifest names is not there")]
    NoExecutable { path: String },
}

impl Package {
    /// Reads `dir/plugin.toml` and finds its executable.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self, PackageError> {
        // Absolute, so that the executable can be started from any directory.
        let dir = std::path::absolute(dir.as_ref()).map_err(|cause| PackageError::Read {
            path: dir.as_ref().display().to_string(),
            cause,
        })?;
        let path = dir.join("plugin.toml");
        let shown = path.display().to_string();
        let manifest_text = std::fs::read_to_string(&path).map_err(|cause| PackageError::Read {
            path: shown.clone(),
            cause,
        })?;
        let manifest =
            Manifest::parse(&manifest_text).map_err(|reason| PackageError::Manifest {
                path: shown.clone(),
                reason,
            })?;
        let executable = manifest.executable_in(&dir);
        if !executable.is_file() {
            return Err(PackageError::NoExecutable {
                path: executable.display().to_string(),
            });
        }
        Ok(Self {
            dir,
            manifest,
            manifest_text,
        })
    }

    /// The executable's path.
    pub fn executable(&self) -> PathBuf {
        self.manifest.executable_in(&self.dir)
    }
}

/// What the kit configures the plugin with, and how long it waits.
#[derive(Debug, Clone)]
pub struct Options {
    /// A configuration the plugin accepts (and, for the collect checks, one under which
    /// it collects something). The invalid one is derived from it.
    pub config: serde_json::Value,
    /// The credentials `Configure` carries, as the supervisor sends them.
    pub credentials: Vec<v1::Credential>,
    /// How long the process may take to exit after a stop request, and to start.
    pub grace: Duration,
    /// How long one call may take (a whole `Collect` stream counts as one).
    pub call_timeout: Duration,
    /// A delivery body in the service's own format, for `webhook-signed`: the kit signs
    /// it with the `webhook-secret` credential as the manifest's `[webhook]` table says.
    pub webhook_sample: Option<Vec<u8>>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            config: serde_json::json!({}),
            credentials: Vec::new(),
            grace: Duration::from_secs(5),
            call_timeout: Duration::from_secs(30),
            webhook_sample: None,
        }
    }
}

/// The tenant and integration the kit configures the plugin as.
pub const TENANT: &str = "conformance";
pub const INTEGRATION: &str = "conformance";

/// Runs every check against the package. Never fails as a whole: a check that cannot
/// run is a finding too.
pub async fn run(package: &Package, options: &Options) -> Report {
    let mut findings = Findings::default();
    findings.record(
        Check::RefusesWithoutCookie,
        process::refuses_without_cookie(package, options).await,
    );
    findings.record(
        Check::NegotiatesVersion,
        process::negotiates_version(package, options).await,
    );
    calls::session(package, options, &mut findings).await;
    findings.record(
        Check::TokenRequired,
        calls::token_required(package, options).await,
    );
    findings.record(Check::Sigterm, process::sigterm(package, options).await);
    findings.record(
        Check::HostDeath,
        process::host_death(package, options).await,
    );
    Report {
        plugin: package.manifest.name.clone(),
        executable: package.executable(),
        findings: findings.in_order(),
    }
}

/// A check's result and its reason.
#[derive(Debug)]
enum Verdict {
    /// What was seen.
    Pass(String),
    /// What was wrong, and where.
    Fail(String),
    /// Why it does not apply, or could not run.
    Skip(String),
}

/// The findings so far; a check not recorded is reported skipped, with the reason
/// [`Findings::not_run`] gave.
#[derive(Debug, Default)]
struct Findings {
    found: Vec<Finding>,
    not_run: Vec<(Check, String)>,
}

impl Findings {
    fn record(&mut self, check: Check, verdict: Verdict) {
        let (outcome, reason) = match verdict {
            Verdict::Pass(reason) => (Outcome::Pass, reason),
            Verdict::Fail(reason) => (Outcome::Fail, reason),
            Verdict::Skip(reason) => (Outcome::Skip, reason),
        };
        self.found.push(Finding {
            check,
            outcome,
            reason,
        });
    }

    /// Marks `checks` as not run because of `why`, unless recorded after all.
    fn not_run(&mut self, checks: &[Check], why: &str) {
        for check in checks {
            self.not_run.push((*check, format!("not run: {why}")));
        }
    }

    fn in_order(mut self) -> Vec<Finding> {
        Check::ALL
            .iter()
            .map(|check| {
                if let Some(at) = self.found.iter().position(|f| f.check == *check) {
                    self.found.swap_remove(at)
                } else {
                    let reason = self
                        .not_run
                        .iter()
                        .find(|(c, _)| c == check)
                        .map_or_else(|| "not run".to_owned(), |(_, why)| why.clone());
                    Finding {
                        check: *check,
                        outcome: Outcome::Skip,
                        reason,
                    }
                }
            })
            .collect()
    }
}

/// `text` shortened to one line of at most 200 characters, for a reason.
fn excerpt(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default().trim();
    if line.chars().count() > 200 {
        format!("{}…", line.chars().take(200).collect::<String>())
    } else {
        line.to_owned()
    }
}
