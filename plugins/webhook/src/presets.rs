//! The mappings shipped with the plugin, selected by `preset = "NAME"`: TOML files in
//! `presets/`, compiled into the binary and read like an operator's configuration.

use plugin_kit::config::ConfigError;

use crate::config::Settings;

/// Every preset, by name.
pub const PRESETS: [(&str, &str); 5] = [
    ("gitlab", include_str!("../presets/gitlab.toml")),
    ("jira", include_str!("../presets/jira.toml")),
    ("pagerduty", include_str!("../presets/pagerduty.toml")),
    ("slack", include_str!("../presets/slack.toml")),
    (
        "standard-webhooks",
        include_str!("../presets/standard-webhooks.toml"),
    ),
];

/// The preset `name`, parsed.
pub fn preset(name: &str) -> Result<Settings, ConfigError> {
    let (_, text) = PRESETS
        .iter()
        .find(|(known, _)| *known == name)
        .ok_or_else(|| ConfigError::Field {
            path: "preset".to_owned(),
            message: format!(
                "`{name}` is not a preset of this plugin (presets: {})",
                PRESETS.map(|(known, _)| known).join(", ")
            ),
        })?;
    toml::from_str(text).map_err(|err| ConfigError::Field {
        path: "preset".to_owned(),
        message: format!("the shipped preset `{name}` does not parse: {err}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_parses_and_an_unknown_one_is_named() {
        for (name, _) in PRESETS {
            let settings = preset(name).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(settings.authentication.is_some(), "{name}");
        }
        let err = preset("teams").expect_err("unknown").to_string();
        assert!(
            err.contains("`teams` is not a preset") && err.contains("gitlab"),
            "{err}"
        );
    }
}
