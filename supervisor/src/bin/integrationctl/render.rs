//! The one rendering layer: every command's answer as a table for people or as JSON
//! (`-o json`) for scripts, chosen here once.

use clap::ValueEnum;
use supervisor::admin::proto;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

pub fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Prints rows as left-aligned columns.
pub fn print_table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.iter().map(|h| (*h).to_owned()).collect());
    for row in rows {
        line(row);
    }
}

pub fn print_status(status: &proto::StatusResponse) {
    println!(
        "integrationd {} pid {} up {}s",
        status.version, status.pid, status.uptime_seconds
    );
    println!();
    print_instances(&status.instances);
    for refusal in &status.refused {
        println!("refused: {}", refusal.reason);
    }
}

pub fn print_instances(instances: &[proto::InstanceStatus]) {
    let rows = instances
        .iter()
        .map(|i| {
            vec![
                i.tenant.clone(),
                i.integration.clone(),
                i.plugin.clone(),
                i.state.clone(),
                if i.health.is_empty() {
                    "-".into()
                } else {
                    i.health.clone()
                },
                if i.pid == 0 {
                    "-".into()
                } else {
                    i.pid.to_string()
                },
                if i.version.is_empty() {
                    "-".into()
                } else {
                    i.version.clone()
                },
                i.restarts.to_string(),
                {
                    let open: Vec<String> = i
                        .dependencies
                        .iter()
                        .filter(|d| d.breaker != "closed")
                        .map(|d| format!("{} {}", d.name, d.breaker))
                        .collect();
                    if open.is_empty() {
                        "-".into()
                    } else {
                        open.join(", ")
                    }
                },
                i.last_error.chars().take(80).collect(),
            ]
        })
        .collect();
    print_table(
        &[
            "TENANT",
            "INTEGRATION",
            "PLUGIN",
            "STATE",
            "HEALTH",
            "PID",
            "VERSION",
            "RESTARTS",
            "BREAKERS",
            "LAST ERROR",
        ],
        rows,
    );
}

pub fn print_plugins(plugins: &[proto::PluginInfo], refused: &[proto::PluginRefusal]) {
    let rows = plugins
        .iter()
        .map(|p| {
            let status = if !p.refusal.is_empty() {
                "refused"
            } else if p.trusted_sha256.is_empty() {
                "untrusted"
            } else if p.selected {
                "selected"
            } else {
                "installed"
            };
            vec![
                p.name.clone(),
                p.version.clone(),
                status.to_owned(),
                p.trusted_sha256.chars().take(12).collect(),
                p.executable.clone(),
                p.executable_owner_uid
                    .map_or("-".to_owned(), |uid| format!("uid {uid}")),
            ]
        })
        .collect();
    print_table(
        &["NAME", "VERSION", "STATUS", "SHA256", "EXECUTABLE", "OWNER"],
        rows,
    );
    for p in plugins.iter().filter(|p| !p.refusal.is_empty()) {
        println!("refused: {}", p.refusal);
    }
    for refusal in refused.iter().filter(|r| r.version.is_empty()) {
        println!("refused: {}", refusal.reason);
    }
}

pub fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
        .to_string()
}

/// `--from`/`--to`: RFC 3339, `now`, or a duration ago; Unix milliseconds.
pub fn parse_time(text: &str, now_ms: u64) -> anyhow::Result<u64> {
    if text == "now" {
        return Ok(now_ms);
    }
    if let Some(ms) = plugin_protocol::event_time_ms(text) {
        return Ok(ms);
    }
    let ago = humantime::parse_duration(text).map_err(|_| {
        anyhow::anyhow!("`{text}` is not a time: use RFC 3339, `now`, or a duration ago like `24h`")
    })?;
    Ok(now_ms.saturating_sub(u64::try_from(ago.as_millis()).unwrap_or(u64::MAX)))
}

/// Prints `json` as JSON, or runs `table` to print it for people.
pub fn show<T: serde::Serialize>(
    output: Output,
    json: &T,
    table: impl FnOnce(),
) -> anyhow::Result<()> {
    match output {
        Output::Json => print_json(json),
        Output::Table => {
            table();
            Ok(())
        }
    }
}
