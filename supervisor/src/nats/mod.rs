//! Reaching NATS: the connection the JetStream sink (`pipeline::sinks::nats`) and the
//! JetStream source (`ingress::jetstream`) share, and their subject templates
//! ([`subject`]). A leaf: it knows nothing of the pipeline, only how to connect and
//! authenticate, so that both sides connect alike and name a failure alike.
//!
//! Secrets (a token, a password, an NKey seed, a `.creds` file) are read from files
//! named in the configuration, never written in it, and kept in `secrecy` types until
//! the client takes them.

pub mod subject;

use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

pub use subject::{SubjectTemplate, TemplateError};

/// How to reach and authenticate to a NATS cluster: a view of a sink's or a source's
/// configuration.
#[derive(Debug, Clone, Copy)]
pub struct Connection<'a> {
    /// What the connection is for, in errors and in the server's connection list.
    pub name: &'a str,
    pub servers: &'a [String],
    /// A `.creds` file (a user JWT and its NKey seed), as `nsc` writes it.
    pub creds_file: Option<&'a Path>,
    /// A file holding an NKey user seed (`SU…`).
    pub nkey_file: Option<&'a Path>,
    /// A file holding the server's authorization token.
    pub token_file: Option<&'a Path>,
    pub user: Option<&'a str>,
    /// A file holding `user`'s password.
    pub password_file: Option<&'a Path>,
    /// A PEM file of the CA that signed the servers' certificates; TLS is then required.
    pub tls_ca: Option<&'a Path>,
}

/// Why a connection could not be made ready.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error("`{name}`: cannot read {what} {path}: {cause}")]
    SecretFile {
        name: String,
        what: &'static str,
        path: String,
        cause: std::io::Error,
    },
    #[error("`{name}`: {why}")]
    Options { name: String, why: String },
    #[error("`{name}`: cannot connect to {servers}: {why}")]
    Connect {
        name: String,
        servers: String,
        why: String,
    },
}

impl Connection<'_> {
    fn read_secret(&self, what: &'static str, path: &Path) -> Result<SecretString, NatsError> {
        std::fs::read_to_string(path)
            .map(|text| SecretString::from(text.trim().to_owned()))
            .map_err(|cause| NatsError::SecretFile {
                name: self.name.to_owned(),
                what,
                path: path.display().to_string(),
                cause,
            })
    }

    /// The client's options: authentication, TLS, and reconnecting forever with a
    /// capped backoff (the event log keeps the backlog meanwhile).
    async fn options(&self) -> Result<async_nats::ConnectOptions, NatsError> {
        let mut options = match self.creds_file {
            Some(path) => async_nats::ConnectOptions::with_credentials_file(path)
                .await
                .map_err(|cause| NatsError::SecretFile {
                    name: self.name.to_owned(),
                    what: "its credentials file",
                    path: path.display().to_string(),
                    cause,
                })?,
            None => async_nats::ConnectOptions::new(),
        };
        if let Some(path) = self.nkey_file {
            let seed = self.read_secret("its NKey seed file", path)?;
            options = options.nkey(seed.expose_secret().to_owned());
        }
        if let Some(path) = self.token_file {
            let token = self.read_secret("its token file", path)?;
            options = options.token(token.expose_secret().to_owned());
        }
        match (self.user, self.password_file) {
            (Some(user), Some(path)) => {
                let password = self.read_secret("its password file", path)?;
                options =
                    options.user_and_password(user.to_owned(), password.expose_secret().to_owned());
            }
            (None, None) => {}
            _ => {
                return Err(NatsError::Options {
                    name: self.name.to_owned(),
                    why: "`user` and `password_file` go together".into(),
                });
            }
        }
        if let Some(ca) = self.tls_ca {
            options = options
                .add_root_certificates(PathBuf::from(ca))
                .require_tls(true);
        }
        Ok(options
            .name(format!("integrationd/{}", self.name))
            .connection_timeout(Duration::from_secs(5))
            .max_reconnects(None)
            .reconnect_delay_callback(reconnect_delay))
    }

    /// Connects. The first connection is awaited (so a wrong address or credential is
    /// reported as such); after it, the client reconnects by itself.
    pub async fn connect(&self) -> Result<async_nats::Client, NatsError> {
        let options = self.options().await?;
        options
            .connect(self.servers.to_vec())
            .await
            .map_err(|err| NatsError::Connect {
                name: self.name.to_owned(),
                servers: self.servers.join(", "),
                why: err.to_string(),
            })
    }
}

/// Waits between reconnection attempts: 100 ms doubling to 5 s, with up to 20% jitter
/// so that daemons do not reconnect in step after a server restart.
fn reconnect_delay(attempts: usize) -> Duration {
    let base = 100u64.saturating_mul(1 << attempts.min(6)).min(5_000);
    let jitter = rand::random::<u64>() % (base / 5 + 1);
    Duration::from_millis(base + jitter)
}

/// The servers' URLs, checked: `nats://`, `tls://` or a bare `host:port`.
pub fn check_servers(servers: &[String]) -> Result<(), String> {
    if servers.is_empty() {
        return Err("`servers` names no server (for example \"nats://127.0.0.1:4222\")".into());
    }
    for server in servers {
        server
            .parse::<async_nats::ServerAddr>()
            .map_err(|err| format!("`servers`: {server:?} is not a NATS address: {err}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnects_back_off_to_five_seconds_with_jitter() {
        assert!(reconnect_delay(0) >= Duration::from_millis(100));
        assert!(reconnect_delay(0) <= Duration::from_millis(120));
        for attempts in [10, 1_000, usize::MAX] {
            let delay = reconnect_delay(attempts);
            assert!(delay >= Duration::from_secs(5) && delay <= Duration::from_secs(6));
        }
    }

    #[test]
    fn server_addresses_are_checked() {
        assert!(check_servers(&["nats://127.0.0.1:4222".into()]).is_ok());
        assert!(check_servers(&["tls://bus.example:4222".into()]).is_ok());
        assert!(
            check_servers(&[])
                .expect_err("refused")
                .contains("names no server")
        );
        let err = check_servers(&["http://bus:80".into()]).expect_err("refused");
        assert!(err.contains("http://bus:80"), "{err}");
    }

    /// A connection to a port nobody listens on, with no credentials.
    fn nowhere(servers: &[String]) -> Connection<'_> {
        Connection {
            name: "bus",
            servers,
            creds_file: None,
            nkey_file: None,
            token_file: None,
            user: None,
            password_file: None,
            tls_ca: None,
        }
    }

    #[tokio::test]
    async fn a_user_without_a_password_file_is_refused_naming_both() {
        let servers = ["nats://127.0.0.1:1".to_owned()];
        let connection = Connection {
            user: Some("integrationd"),
            ..nowhere(&servers)
        };
        let err = connection.connect().await.expect_err("refused").to_string();
        assert_eq!(err, "`bus`: `user` and `password_file` go together");
    }

    #[tokio::test]
    async fn a_missing_token_file_is_named_without_its_content() {
        let servers = ["nats://127.0.0.1:1".to_owned()];
        let connection = Connection {
            token_file: Some(Path::new("/nonexistent/nats-token")),
            ..nowhere(&servers)
        };
        let err = connection.connect().await.expect_err("refused").to_string();
        assert!(
            err.starts_with("`bus`: cannot read its token file /nonexistent/nats-token:"),
            "{err}"
        );
    }
}
