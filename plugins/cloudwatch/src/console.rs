//! Evidence links into the AWS console, and the fields every event of an account and
//! region carries.

use std::fmt::Write;

use plugin_kit::EventBuilder;

/// Percent-encodes everything but unreserved characters.
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// The console's own escaping inside `#logsV2:` fragments: percent-encoded, then `%`
/// written as `$25`.
fn console_fragment(text: &str) -> String {
    encode(text).replace('%', "$25")
}

fn home(region: &str) -> String {
    format!("https://{region}.console.aws.amazon.com/cloudwatch/home?region={region}")
}

/// A log stream's events, starting at the line's time.
pub fn log_stream(region: &str, group: &str, stream: &str, time_ms: i64) -> String {
    format!(
        "{}#logsV2:log-groups/log-group/{}/log-events/{}$3Fstart$3D{time_ms}",
        home(region),
        console_fragment(group),
        console_fragment(stream)
    )
}

/// A metric's graph.
pub fn metric(
    region: &str,
    namespace: &str,
    metric: &str,
    dimensions: &[(String, String)],
    stat: &str,
    period: u32,
) -> String {
    let mut spec = format!("~'{}~'{}", encode(namespace), encode(metric));
    for (name, value) in dimensions {
        let _ = write!(spec, "~'{}~'{}", encode(name), encode(value));
    }
    format!(
        "{}#metricsV2:graph=~(metrics~(~({spec}))~period~{period}~stat~'{}~region~'{region})",
        home(region),
        encode(stat)
    )
}

/// An alarm's page.
pub fn alarm(region: &str, name: &str) -> String {
    format!("{}#alarmsV2:alarm/{}", home(region), encode(name))
}

/// `aws://<account>/<region>/<service>`: where an event came from.
pub fn source(account: &str, region: &str, service: &str) -> String {
    format!("aws://{account}/{region}/{service}")
}

/// The account and region fields of every event.
pub fn cloud_fields<'a>(
    builder: EventBuilder<'a>,
    account: &'a str,
    region: &'a str,
) -> EventBuilder<'a> {
    builder
        .field("cloud.provider", "aws")
        .field("cloud.account.id", account)
        .field("cloud.region", region)
}

/// Unix milliseconds as RFC 3339 with milliseconds.
pub fn rfc3339_ms(ms: i64) -> String {
    let ms = u64::try_from(ms).unwrap_or(0);
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_escape_names_as_the_console_expects() {
        assert_eq!(
            log_stream("eu-west-1", "/ecs/checkout", "web/1 a", 5),
            "https://eu-west-1.console.aws.amazon.com/cloudwatch/home?region=eu-west-1#logsV2:log-groups/log-group/$252Fecs$252Fcheckout/log-events/web$252F1$2520a$3Fstart$3D5"
        );
        let link = metric(
            "us-east-1",
            "AWS/EC2",
            "CPUUtilization",
            &[("InstanceId".into(), "i-1".into())],
            "Average",
            60,
        );
        assert!(
            link.contains("~'AWS%2FEC2~'CPUUtilization~'InstanceId~'i-1"),
            "{link}"
        );
        assert_eq!(rfc3339_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }
}
