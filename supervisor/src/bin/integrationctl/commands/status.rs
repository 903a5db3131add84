//! The daemon and every instance.

use crate::render::{print_status, show};
use crate::session::{Answer, Session, with_token};
use supervisor::admin::proto;

/// `integrationctl status`.
pub async fn run(session: &mut Session) -> anyhow::Result<()> {
    let (client, token, output) = session.parts();
    {
        let status = client
            .status(with_token(proto::StatusRequest {}, token)?)
            .await
            .answer()?;
        show(output, &status, || print_status(&status))?
    };
    Ok(())
}
