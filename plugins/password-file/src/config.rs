//! The plugin's configuration and its authentication decision.

use serde::Deserialize;

use crate::file::{PasswordFile, Verify};

fn default_reload_secs() -> u64 {
    5
}

/// `[plugins.config]` of the password-file plugin.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Path of the password file inside the directory granted to the plugin.
    pub file: String,
    /// Seconds between checks of the file's modification time; 0 checks on every authentication.
    #[serde(default = "default_reload_secs")]
    pub reload_secs: u64,
    /// `false` (default): a username not in the file is refused. `true`: the next plugin decides.
    #[serde(default)]
    pub allow_unknown_users_to_defer: bool,
}

/// What the authenticator answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthOutcome {
    Allow,
    /// Refuse with MQTT 5 reason 0x86 (Bad User Name or Password); `why` is for the log only.
    Deny {
        why: &'static str,
    },
    /// No opinion: the next plugin in the chain decides.
    Defer,
}

/// MQTT 5 reason code "Bad User Name or Password".
pub const BAD_USERNAME_OR_PASSWORD: u8 = 0x86;

/// The decision for a CONNECT: clients without a username are left to the next plugin (mosquitto's
/// password file does the same and lets `allow_anonymous` decide); a known user needs the right
/// password; an unknown user is refused unless the configuration lets it defer.
pub fn decide(
    table: &PasswordFile,
    config: &Config,
    username: Option<&str>,
    password: Option<&[u8]>,
) -> AuthOutcome {
    let Some(username) = username else {
        return AuthOutcome::Defer;
    };
    if !table.contains(username) {
        return if config.allow_unknown_users_to_defer {
            AuthOutcome::Defer
        } else {
            AuthOutcome::Deny {
                why: "unknown user",
            }
        };
    }
    let Some(password) = password else {
        return AuthOutcome::Deny { why: "no password" };
    };
    match table.verify(username, password) {
        Verify::Ok => AuthOutcome::Allow,
        Verify::BadPassword => AuthOutcome::Deny {
            why: "wrong password",
        },
        Verify::UnknownUser => AuthOutcome::Deny {
            why: "unknown user",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Format, hash_entry_with_salt};

    #[test]
    fn defaults_and_unknown_keys() {
        let c: Config = toml::from_str(r#"file = "passwd""#).unwrap();
        assert_eq!(
            c,
            Config {
                file: "passwd".into(),
                reload_secs: 5,
                allow_unknown_users_to_defer: false
            }
        );
        let c: Config =
            toml::from_str("file = \"p\"\nreload_secs = 0\nallow_unknown_users_to_defer = true")
                .unwrap();
        assert_eq!(c.reload_secs, 0);
        assert!(c.allow_unknown_users_to_defer);
        assert!(toml::from_str::<Config>("file = \"p\"\nreload = 3").is_err());
        assert!(toml::from_str::<Config>("reload_secs = 3").is_err());
    }

    #[test]
    fn decisions() {
        let line = hash_entry_with_salt("alice", b"pw", Format::Sha512, b"0123456789ab").unwrap();
        let table = PasswordFile::parse(&line).unwrap();
        let mut cfg = Config {
            file: "p".into(),
            reload_secs: 5,
            allow_unknown_users_to_defer: false,
        };
        assert_eq!(
            decide(&table, &cfg, Some("alice"), Some(b"pw")),
            AuthOutcome::Allow
        );
        assert!(matches!(
            decide(&table, &cfg, Some("alice"), Some(b"px")),
            AuthOutcome::Deny { .. }
        ));
        assert!(matches!(
            decide(&table, &cfg, Some("alice"), None),
            AuthOutcome::Deny { why: "no password" }
        ));
        assert!(matches!(
            decide(&table, &cfg, Some("bob"), Some(b"pw")),
            AuthOutcome::Deny {
                why: "unknown user"
            }
        ));
        assert_eq!(decide(&table, &cfg, None, Some(b"pw")), AuthOutcome::Defer);
        cfg.allow_unknown_users_to_defer = true;
        assert_eq!(
            decide(&table, &cfg, Some("bob"), Some(b"pw")),
            AuthOutcome::Defer
        );
        // Known users are still checked.
        assert!(matches!(
            decide(&table, &cfg, Some("alice"), Some(b"px")),
            AuthOutcome::Deny { .. }
        ));
    }
}
