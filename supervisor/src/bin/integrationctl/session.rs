//! The connection to the daemon: the admin socket, the caller's token on every
//! request, and the daemon's refusals as errors (mapped here, once).

use std::path::PathBuf;

use anyhow::Context;
use hyper_util::rt::TokioIo;
use supervisor::admin::proto::admin_client::AdminClient;
use tonic::transport::{Channel, Endpoint};

use crate::render::Output;

/// What every command works with.
#[derive(Debug)]
pub struct Session {
    pub client: AdminClient<Channel>,
    pub token: Option<String>,
    pub output: Output,
}

impl Session {
    /// The client, the token for each request, and the output format: what a command
    /// works with.
    pub fn parts(&mut self) -> (&mut AdminClient<Channel>, Option<&str>, Output) {
        (&mut self.client, self.token.as_deref(), self.output)
    }
}

/// The daemon's answer, or its refusal (its message, as the error).
pub trait Answer<T> {
    fn answer(self) -> anyhow::Result<T>;
}

impl<T> Answer<T> for Result<tonic::Response<T>, tonic::Status> {
    fn answer(self) -> anyhow::Result<T> {
        self.map(tonic::Response::into_inner).map_err(status_error)
    }
}

pub async fn connect(socket: PathBuf) -> anyhow::Result<Channel> {
    let shown = socket.display().to_string();
    Endpoint::from_static("http://admin.invalid")
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move {
                tokio::net::UnixStream::connect(socket)
                    .await
                    .map(TokioIo::new)
            }
        }))
        .await
        .with_context(|| {
            format!("cannot reach integrationd at {shown} (is it running? see --socket)")
        })
}

pub fn with_token<T>(message: T, token: Option<&str>) -> anyhow::Result<tonic::Request<T>> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        let value = format!("Bearer {token}")
            .parse()
            .context("the token contains characters not allowed in a header")?;
        request.metadata_mut().insert("authorization", value);
    }
    Ok(request)
}

/// A refused call, as its message says it.
pub fn status_error(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}", status.message())
}
