//! Version constants and the environment contract between supervisor and plugin.

/// Version of the handshake format itself (the `CORE` field of the handshake line).
/// Only changes if the line's layout changes.
pub const CORE_PROTOCOL_VERSION: u32 = 1;

/// Plugin protocol majors this build speaks, oldest first. A v2 is appended here when
/// its proto package exists; v1 stays for as long as v1 plugins are supported.
pub const SUPPORTED_PROTOCOL_VERSIONS: &[u32] = &[1];

/// Environment variable carrying the magic cookie. Its only purpose is to tell a plugin
/// that it was started by integrationd and not by hand; it is not a secret.
pub const ENV_MAGIC_COOKIE: &str = "BETALOGS_PLUGIN_MAGIC_COOKIE";
/// The cookie value.
pub const MAGIC_COOKIE_VALUE: &str =
    "b3f1c0a7d2e94e6b8a51f0c3d7e2a9b4c6d8e0f1a2b3c4d5e6f708192a3b4c5d";
/// Comma-separated protocol majors the host speaks, e.g. `1,2`.
pub const ENV_PROTOCOL_VERSIONS: &str = "BETALOGS_PLUGIN_PROTOCOL_VERSIONS";
/// Absolute path of the Unix socket the plugin must bind.
pub const ENV_SOCKET_PATH: &str = "BETALOGS_PLUGIN_SOCKET";
/// Process id of the host that started the plugin: the only process allowed to connect,
/// and the one whose death stops the plugin.
pub const ENV_HOST_PID: &str = "BETALOGS_PLUGIN_HOST_PID";
/// One-time token every call must carry in [`TOKEN_METADATA_KEY`].
pub const ENV_TOKEN: &str = "BETALOGS_PLUGIN_TOKEN";
/// gRPC metadata key for the token.
pub const TOKEN_METADATA_KEY: &str = "x-betalogs-plugin-token";
/// A handshake line longer than this is refused without reading further.
pub const MAX_HANDSHAKE_LINE_BYTES: usize = 4096;

/// The largest gRPC message either side accepts: above the HTTP ingress's largest body
/// (32 MiB), so a webhook the daemon accepted always reaches its plugin, with room for
/// the events made of it.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Parses the host's version list (`"1,2"`). Returns the offending item on error.
pub fn parse_version_list(list: &str) -> Result<Vec<u32>, String> {
    list.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| item.parse::<u32>().map_err(|_| item.to_owned()))
        .collect()
}

/// The highest protocol major both sides speak, if any.
pub fn negotiate(host: &[u32], plugin: &[u32]) -> Option<u32> {
    host.iter().filter(|v| plugin.contains(v)).max().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiates_highest_common_version() {
        assert_eq!(negotiate(&[1, 2, 3], &[2, 1]), Some(2));
        assert_eq!(negotiate(&[1], &[2, 3]), None);
        assert_eq!(negotiate(&[], &[1]), None);
    }

    #[test]
    fn version_list_rejects_garbage_and_names_it() {
        assert_eq!(parse_version_list("1, 2"), Ok(vec![1, 2]));
        assert_eq!(parse_version_list("1,x"), Err("x".to_owned()));
        assert_eq!(parse_version_list("-1"), Err("-1".to_owned()));
        assert_eq!(parse_version_list(""), Ok(vec![]));
    }
}
