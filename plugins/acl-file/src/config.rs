//! The plugin's configuration.

use serde::Deserialize;

/// `[plugins.config]` of the acl-file plugin.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Path of the ACL file inside the directory granted to the plugin.
    pub file: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects_unknown_keys() {
        let c: Config = toml::from_str(r#"file = "acl""#).unwrap();
        assert_eq!(c.file, "acl");
        assert!(toml::from_str::<Config>("file = \"acl\"\nmode = 1").is_err());
        assert!(toml::from_str::<Config>("").is_err());
    }
}
