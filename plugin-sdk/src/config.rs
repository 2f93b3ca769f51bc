//! The plugin's `config` table.

use serde::de::DeserializeOwned;

/// The plugin's `config` table from the broker configuration (`[plugins.config]`), as the JSON text the
/// broker passes to `init`.
///
/// ```
/// use wasp_plugin_sdk::Config;
///
/// #[derive(serde::Deserialize)]
/// #[serde(deny_unknown_fields)]
/// struct Settings {
///     users: Vec<String>,
///     #[serde(default)]
///     cache_seconds: u32,
/// }
///
/// let settings: Settings = Config::new(r#"{"users": ["alice"]}"#).parse().unwrap();
/// assert_eq!((settings.users.len(), settings.cache_seconds), (1, 0));
///
/// let err = Config::new(r#"{"users": [7]}"#).parse::<Settings>().err().unwrap();
/// assert!(err.starts_with("plugin config: users[0]: invalid type"), "{err}");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    json: String,
}

impl Config {
    /// Wraps the JSON text of a configuration table; handy to build a plugin natively in unit tests.
    pub fn new(json: impl Into<String>) -> Self {
        Self { json: json.into() }
    }

    /// The JSON text as the broker sent it.
    pub fn as_str(&self) -> &str {
        &self.json
    }

    /// Deserializes the table into `T`. A blank text (no table) reads as `{}`, so a struct whose fields all
    /// have defaults accepts a missing table. The error names the offending key, e.g.
    /// `plugin config: users[0]: invalid type: integer `7`, expected a string at line 1 column 12`.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, String> {
        let json = if self.json.trim().is_empty() {
            "{}"
        } else {
            self.json.as_str()
        };
        let mut deserializer = serde_json::Deserializer::from_str(json);
        let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
            // The path means something for data errors only (a syntax error has none: `?`).
            let path = e.path().to_string();
            if e.inner().is_data() && path != "." {
                format!("plugin config: {path}: {}", e.inner())
            } else {
                format!("plugin config: {}", e.inner())
            }
        })?;
        deserializer
            .end()
            .map_err(|e| format!("plugin config: {e}"))?;
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Settings {
        #[serde(default)]
        username: Option<String>,
        #[serde(default)]
        limits: Limits,
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Limits {
        #[serde(default)]
        per_minute: u32,
    }

    #[test]
    fn blank_config_reads_as_an_empty_table() {
        let expected = Settings {
            username: None,
            limits: Limits::default(),
        };
        assert_eq!(Config::new("").parse::<Settings>(), Ok(expected));
    }

    #[test]
    fn errors_name_the_key() {
        let err = Config::new(r#"{"limits": {"per_minute": "ten"}}"#)
            .parse::<Settings>()
            .unwrap_err();
        assert!(
            err.starts_with("plugin config: limits.per_minute: invalid type"),
            "{err}"
        );
        let err = Config::new(r#"{"limits": {"per_hour": 1}}"#)
            .parse::<Settings>()
            .unwrap_err();
        assert!(
            err.starts_with("plugin config: limits.per_hour: unknown field `per_hour`"),
            "{err}"
        );
        let err = Config::new("{").parse::<Settings>().unwrap_err();
        assert!(err.starts_with("plugin config: EOF"), "{err}");
    }

    #[test]
    fn trailing_text_is_refused() {
        assert!(
            Config::new(r#"{"username": "a"} x"#)
                .parse::<Settings>()
                .is_err()
        );
    }
}
