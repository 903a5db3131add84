//! The cluster (operators, with a `[cluster]` section): `cluster status`.

use anyhow::Context;
use serde_json::Value;

use crate::args::ClusterCommand;
use crate::render::{print_table, show};
use crate::session::{Answer, Session, with_token};
use supervisor::admin::proto;

/// `integrationctl cluster`.
pub async fn run(session: &mut Session, command: ClusterCommand) -> anyhow::Result<()> {
    let (client, token, output) = session.parts();
    match command {
        ClusterCommand::Status => {
            let document = client
                .cluster_status(with_token(proto::ClusterStatusRequest {}, token)?)
                .await
                .answer()?;
            let value: Value =
                serde_json::from_str(&document.json).context("the daemon's answer is not JSON")?;
            show(output, &value, || print_nodes(&value))?;
        }
    }
    Ok(())
}

fn print_nodes(value: &Value) {
    let me = value["node"].as_str().unwrap_or_default();
    let empty = Vec::new();
    let rows = value["nodes"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .map(|node| {
            let name = node["name"].as_str().unwrap_or_default();
            let tenants: Vec<&str> = node["tenants"]
                .as_array()
                .unwrap_or(&empty)
                .iter()
                .filter_map(Value::as_str)
                .collect();
            vec![
                if name == me {
                    format!("{name} (this node)")
                } else {
                    name.to_owned()
                },
                node["address"].as_str().unwrap_or("-").to_owned(),
                node["state"].as_str().unwrap_or("-").to_owned(),
                node["silent_seconds"]
                    .as_u64()
                    .map_or_else(|| "never".to_owned(), |s| format!("{s}s ago")),
                tenants.len().to_string(),
                tenants.join(", "),
            ]
        })
        .collect();
    print_table(
        &["NODE", "ADDRESS", "STATE", "LAST HEARD", "TENANTS", "NAMES"],
        rows,
    );
}
