//! The WebAssembly glue: the [`Plugin`] the broker loads, over [`Reloader`] and [`decide`].
//!
//! The password file is read with `std::fs` from the directory the broker grants to the plugin (for
//! example host `passwords/` at guest `/etc/wasp`, with `file = "/etc/wasp/passwd"`). Each instance of
//! the component keeps its own table and checks the file's modification time at most every
//! `reload_secs`, by the host's clock.

use std::cell::RefCell;
use std::time::SystemTime;

use wasp_plugin_sdk::{AuthRequest, AuthVerdict, Hooks, Interests, Plugin, clock, log};

use crate::{AuthOutcome, BAD_USERNAME_OR_PASSWORD, Config, ReloadOutcome, Reloader, decide};

/// The reason string of every refusal: it does not tell an unknown user from a wrong password.
const REFUSED: &str = "bad user name or password";

/// Authenticates clients against a Mosquitto-compatible password file.
pub struct PasswordFilePlugin {
    config: Config,
    reloader: RefCell<Reloader<SystemTime>>,
}

fn modified(path: &str) -> std::io::Result<SystemTime> {
    std::fs::metadata(path)?.modified()
}

impl Plugin for PasswordFilePlugin {
    fn init(config: wasp_plugin_sdk::Config) -> Result<Self, String> {
        let config: Config = config.parse()?;
        let path = config.file.as_str();
        // Modification time first: a change between the two calls is seen at the next check.
        let mtime = modified(path).map_err(|e| {
            format!(
                "cannot read the password file {path}: {e} (is its directory granted to the plugin?)"
            )
        })?;
        let content = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the password file {path}: {e}"))?;
        let reloader = Reloader::new(config.reload_secs, clock::now_seconds(), mtime, &content)
            .map_err(|e| format!("password file {path}: {e}"))?;
        let users = reloader.table().len().to_string();
        log::info("password file loaded", &[("file", path), ("users", &users)]);
        Ok(Self {
            config,
            reloader: RefCell::new(reloader),
        })
    }

    fn interests(&self) -> Interests {
        Interests::hooks(Hooks::AUTHENTICATE)
    }

    fn authenticate(&self, request: &AuthRequest) -> AuthVerdict {
        let mut reloader = self.reloader.borrow_mut();
        let path = self.config.file.as_str();
        match reloader.poll(
            clock::now_seconds(),
            || modified(path),
            || std::fs::read_to_string(path),
        ) {
            ReloadOutcome::NotDue | ReloadOutcome::Unchanged => {}
            ReloadOutcome::Reloaded { users } => {
                log::info(
                    "password file reloaded",
                    &[("file", path), ("users", &users.to_string())],
                );
            }
            ReloadOutcome::Failed(message) => log::warn(&message, &[("file", path)]),
        }
        let username = request.client.username.as_deref();
        match decide(
            reloader.table(),
            &self.config,
            username,
            request.password.as_deref(),
        ) {
            AuthOutcome::Allow => {
                AuthVerdict::allow_with([("username", username.unwrap_or_default())])
            }
            AuthOutcome::Deny { why } => {
                log::info(
                    "authentication refused",
                    &[
                        ("client_id", &request.client.client_id),
                        ("username", username.unwrap_or_default()),
                        ("why", why),
                    ],
                );
                AuthVerdict::deny(BAD_USERNAME_OR_PASSWORD, REFUSED)
            }
            AuthOutcome::Defer => AuthVerdict::Defer,
        }
    }
}
